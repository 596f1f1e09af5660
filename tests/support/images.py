"""Image bytes for tests, made with Pillow."""

from __future__ import annotations

import base64
import io

from PIL import Image


def encode(image: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kw)
    return buffer.getvalue()


def png(color=(200, 30, 30), size=(64, 48)) -> bytes:
    return encode(Image.new("RGB", size, color))


def jpeg(color=(30, 200, 30), size=(64, 48)) -> bytes:
    return encode(Image.new("RGB", size, color), "JPEG")


def data_url(data: bytes, media_type: str | None = None) -> str:
    """`data` as a base64 data: URL; the media type is read from the bytes (PNG, JPEG, GIF, WebP) unless given."""
    if media_type is None:
        if data.startswith(b"\x89PNG"):
            media_type = "image/png"
        elif data.startswith(b"\xff\xd8"):
            media_type = "image/jpeg"
        elif data.startswith(b"GIF8"):
            media_type = "image/gif"
        elif data.startswith(b"RIFF") and data[8:12] == b"WEBP":
            media_type = "image/webp"
        else:  # never guess: a test that means odd bytes says what to call them
            raise ValueError(f"no image signature in {data[:12]!r}: pass media_type")
    return f"data:{media_type};base64,{base64.b64encode(data).decode()}"
