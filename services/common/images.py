"""Decode and normalise untrusted image bytes: one implementation for the gateway and the vision engine.

The gateway calls it to refuse bad images with a 400 before any model work; the vision engine calls it
again because engines are also called directly (grpcurl). Decompression bombs are refused from the
header, before any pixel is decoded, so a 20000x20000 PNG costs nothing.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import InvalidRequestError

ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP")
MIME_BY_FORMAT = {
    "JPEG": "image/jpeg",
    "PNG": "image/png",
    "WEBP": "image/webp",
    "GIF": "image/gif",
    "BMP": "image/bmp",
}
# Vision models want each side at least this long (Qwen2-VL: 28 = patch 14 x merge 2).
MIN_SIDE = 28
# Qwen2-VL refuses aspect ratios above 200; we pad well before that.
MAX_ASPECT = 100


class InvalidImageError(InvalidRequestError):
    """Bytes that are not an image we accept (the brief's "Invalid image")."""

    default_code = "invalid_image"


@dataclass(frozen=True)
class DecodedImage:
    """An upright RGB image and what it was."""

    image: Image.Image
    format: str
    original_size: tuple[int, int]


def decode_image(data: bytes, *, max_pixels: int, param: str | None = None) -> DecodedImage:
    """Decode, check and normalise: upright (EXIF), RGB (alpha over white), first frame, usable size."""
    if not data:
        raise InvalidImageError("Invalid image: empty data", param=param)
    try:
        image = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
    except UnidentifiedImageError:
        raise InvalidImageError(
            f"Invalid image: not a decodable image in a supported format ({', '.join(ALLOWED_FORMATS)})", param=param
        ) from None
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise InvalidImageError(f"Invalid image: {exc}", param=param) from None
    width, height = image.size
    if width * height > max_pixels:
        raise InvalidImageError(
            f"Invalid image: {width}x{height} is {width * height} pixels, more than the limit of {max_pixels}",
            param=param,
        )
    fmt = image.format or "unknown"
    try:
        image.seek(0)  # animated GIF/WEBP: the first frame
        image.load()
        image = ImageOps.exif_transpose(image)
        image = _to_rgb(image)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise InvalidImageError(f"Invalid image: {exc}", param=param) from None
    return DecodedImage(_usable_size(image), fmt, (width, height))


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, image.convert("RGBA")).convert("RGB")
    return image.convert("RGB")  # CMYK, L, I;16, YCbCr...


def _usable_size(image: Image.Image) -> Image.Image:
    """Upscale images smaller than the model's minimum and pad extreme aspect ratios, never crash on them."""
    width, height = image.size
    if min(width, height) < MIN_SIDE:
        scale = MIN_SIDE / min(width, height)
        width, height = max(MIN_SIDE, round(width * scale)), max(MIN_SIDE, round(height * scale))
        image = image.resize((width, height), Image.Resampling.BICUBIC)
    if max(width, height) > MAX_ASPECT * min(width, height):
        side = max(width, height) // MAX_ASPECT
        canvas = Image.new("RGB", (max(width, side), max(height, side)), (255, 255, 255))
        canvas.paste(image, (0, 0))
        image = canvas
    return image
