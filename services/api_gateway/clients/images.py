"""An image as the gateway sends it to an engine (`ImageBytes`, services/common/generation.py): one proto form for
both the vision engine's Describe (proxy) and the text engine's ChatMessage.parts (native). Protobuf stays in here."""

from __future__ import annotations

from services.common.generation import Detail, ImageBytes
from services.common.pb.proxyvision.v1 import common_pb2

_DETAIL = {Detail.LOW: common_pb2.DETAIL_LOW, Detail.HIGH: common_pb2.DETAIL_HIGH, Detail.AUTO: common_pb2.DETAIL_AUTO}


def image_to_pb(image: ImageBytes) -> common_pb2.ImageInput:
    """The proto `ImageInput` of one image."""
    return common_pb2.ImageInput(
        data=image.data, mime_type=image.mime_type, detail=_DETAIL[image.detail], sha256=image.sha256
    )
