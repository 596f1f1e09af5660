"""`data:image/...;base64,...` URLs: size-checked before decoding, strictly decoded."""

from __future__ import annotations

import base64
import binascii

from services.common.errors import ImageTooLargeError
from services.common.images import InvalidImageError

_FORM = "data:image/<type>;base64,<data>"


def decode_data_url(url: str, *, max_bytes: int, param: str) -> tuple[bytes, str]:
    """Return (bytes, declared MIME type). The size is checked on the encoded length first."""
    header, sep, payload = url.partition(",")
    if not sep or not header.startswith("data:"):
        raise InvalidImageError(f"Invalid image: malformed data URL (expected {_FORM})", param=param)
    media = header[len("data:") :].split(";")
    mime = media[0].strip().lower() or "text/plain"
    if "base64" not in (p.strip().lower() for p in media[1:]):
        raise InvalidImageError(f"Invalid image: data URLs must be base64-encoded ({_FORM})", param=param)
    if not mime.startswith("image/"):
        raise InvalidImageError(f"Invalid image: data URL type {mime[:60]!r} is not an image ({_FORM})", param=param)
    payload = "".join(payload.split())  # some clients wrap base64 lines
    size = len(payload) // 4 * 3 - payload[-2:].count("=")
    if size > max_bytes:
        raise ImageTooLargeError(
            f"Image is larger than the limit of {max_bytes} bytes: the data URL holds {size}", param=param
        )
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:  # binascii's reason: "Incorrect padding", "Only base64 data is allowed"
        raise InvalidImageError(f"Invalid image: invalid base64 in data URL ({exc})", param=param) from None
    return data, mime
