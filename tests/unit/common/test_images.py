"""Decoding untrusted image bytes: what is refused and how accepted images are normalised."""

from __future__ import annotations

import base64
import io
import os
import struct
import zlib

import pytest
from PIL import Image

from services.api_gateway.media.data_urls import decode_data_url
from services.common.errors import ImageTooLargeError
from services.common.images import MIN_SIDE, InvalidImageError, decode_image
from tests.support.images import data_url, encode, jpeg, png

LIMIT = 50_000_000


def png_header_bomb(width: int, height: int) -> bytes:
    """A tiny PNG that claims width x height pixels (a decompression bomb's header)."""

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    raw = zlib.compress(b"\x00" * 64)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", raw)
        + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize(
    "data",
    [
        png_header_bomb(20000, 20000),
        jpeg(size=(200, 200))[:300],  # truncated
        os.urandom(4096),
        b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect width="10" height="10"/></svg>',
        b"",
        encode(Image.new("RGB", (8, 8)), "TIFF"),  # decodable by Pillow, but not a format we accept
    ],
    ids=["bomb-20000x20000", "truncated-jpeg", "random-bytes", "svg", "empty", "tiff"],
)
def test_refused_with_invalid_image(data):
    with pytest.raises(InvalidImageError) as info:
        decode_image(data, max_pixels=LIMIT)
    assert info.value.message.startswith("Invalid image")
    assert info.value.http_status == 400


def test_exif_rotated_jpeg_comes_out_upright():
    image = Image.new("RGB", (80, 40), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 CW to display
    decoded = decode_image(encode(image, "JPEG", exif=exif), max_pixels=LIMIT)
    assert decoded.image.size == (40, 80)


def test_cmyk_and_rgba_become_rgb_with_alpha_over_white():
    cmyk = decode_image(encode(Image.new("CMYK", (32, 32), (0, 255, 255, 0)), "JPEG"), max_pixels=LIMIT)
    assert cmyk.image.mode == "RGB"
    transparent = decode_image(encode(Image.new("RGBA", (32, 32), (0, 0, 0, 0))), max_pixels=LIMIT)
    assert transparent.image.mode == "RGB" and transparent.image.getpixel((5, 5)) == (255, 255, 255)


def test_animated_gif_gives_first_frame():
    frames = [Image.new("RGB", (32, 32), c) for c in ((255, 0, 0), (0, 0, 255))]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    decoded = decode_image(buffer.getvalue(), max_pixels=LIMIT)
    red, green, blue = decoded.image.getpixel((10, 10))
    assert red > 200 and blue < 50 and decoded.format == "GIF"


def test_one_pixel_image_is_upscaled_not_a_crash():
    decoded = decode_image(png(size=(1, 1)), max_pixels=LIMIT)
    assert min(decoded.image.size) >= MIN_SIDE and decoded.original_size == (1, 1)


def test_extreme_aspect_ratio_is_padded():
    decoded = decode_image(png(size=(3000, 2)), max_pixels=LIMIT)
    width, height = decoded.image.size
    assert max(width, height) <= 100 * min(width, height)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "BMP", "GIF"])
def test_accepted_formats(fmt):
    assert decode_image(encode(Image.new("RGB", (30, 30), (1, 2, 3)), fmt), max_pixels=LIMIT).format == fmt


def test_data_url_decoding():
    data, mime = decode_data_url(data_url(png()), max_bytes=10_000, param="p")
    assert data == png() and mime == "image/png"
    with pytest.raises(InvalidImageError, match="invalid base64"):
        decode_data_url("data:image/png;base64,@@@notbase64@@@", max_bytes=10_000, param="p")
    with pytest.raises(InvalidImageError):
        decode_data_url("data:text/plain;base64,aGVsbG8=", max_bytes=10_000, param="p")


def test_oversized_data_url_is_refused_before_decoding(monkeypatch):
    decoded = []
    monkeypatch.setattr(base64, "b64decode", lambda *a, **k: decoded.append(1))
    with pytest.raises(ImageTooLargeError):
        decode_data_url("data:image/png;base64," + "A" * 40_000, max_bytes=10_000, param="p")
    assert decoded == []
