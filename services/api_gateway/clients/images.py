"""An image as the gateway sends it to an engine: checked bytes from the request, one type for both the
vision engine's Describe (proxy) and the text engine's ChatMessage.parts (native). Protobuf stays in here."""

from __future__ import annotations

from dataclasses import dataclass

from services.common.pb.proxyvision.v1 import common_pb2

_DETAIL = {"low": common_pb2.DETAIL_LOW, "high": common_pb2.DETAIL_HIGH, "auto": common_pb2.DETAIL_AUTO}


@dataclass(frozen=True)
class ImageBytes:
    """Validated image bytes from the request (fetched or decoded from a data URL, sniffed, size-checked)."""

    data: bytes
    mime_type: str  # from the sniffed format, not from what the client declared
    detail: str  # "low" | "high" | "auto"
    sha256: str  # hex digest of `data`


def image_to_pb(image: ImageBytes) -> common_pb2.ImageInput:
    """The proto `ImageInput` of one image."""
    return common_pb2.ImageInput(
        data=image.data, mime_type=image.mime_type, detail=_DETAIL[image.detail], sha256=image.sha256
    )
