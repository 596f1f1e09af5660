"""tests/support/images.data_url: the media type comes from the image's own signature, or is said; never guessed."""

from __future__ import annotations

import base64

import pytest
from PIL import Image

from tests.support.images import data_url, encode, jpeg, png


@pytest.mark.parametrize(
    ("data", "media_type"),
    [
        (png(), "image/png"),
        (jpeg(), "image/jpeg"),
        (encode(Image.new("RGB", (4, 4)), "GIF"), "image/gif"),
        (encode(Image.new("RGB", (4, 4)), "WEBP"), "image/webp"),
    ],
    ids=["png", "jpeg", "gif", "webp"],
)
def test_the_media_type_is_read_from_the_bytes(data, media_type):
    assert data_url(data) == f"data:{media_type};base64,{base64.b64encode(data).decode()}"


def test_a_given_media_type_wins():
    assert data_url(png(), "image/jpeg").startswith("data:image/jpeg;base64,")
    assert data_url(b"\0\0\0", "image/png") == "data:image/png;base64,AAAA"


@pytest.mark.parametrize(
    "data", [b"", b"\0" * 300, b"not an image", b"RIFF\0\0\0\0WAVE"], ids=["empty", "zeros", "text", "wav"]
)
def test_bytes_without_an_image_signature_are_refused(data):
    with pytest.raises(ValueError, match="media_type"):
        data_url(data)
