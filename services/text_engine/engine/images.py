"""A request's images, for a `vision_mode: native` model: decoded, budgeted by `detail`, encoded by the family.

Runs at admission (a worker thread), so a bad image is a 400 naming its part before the request takes a slot,
and the prompt's length (image tokens included) is known for the context and KV checks.

`detail` follows the same rule as the proxy's captions (services/common/multimodal/detail.py), against
`native_vision.max_image_tokens`; every image also within its share of the image batches' memory
(`memory_tokens` / images in the request).
"""

from __future__ import annotations

from services.common.config import ModelEntry
from services.common.errors import InvalidRequestError
from services.common.generation import ImageBytes
from services.common.images import decode_image
from services.common.multimodal import EncodedImage
from services.common.multimodal.detail import MIN_IMAGE_TOKENS, image_token_budget
from services.common.multimodal.family import expand_placeholders

from .loader import LoadedModel
from .types import GenerationRequest

# Pixels an image may have before decoding; the gateway enforces its own (configurable) limit first.
MAX_DECODE_PIXELS = 100_000_000


def refuse_images(request: GenerationRequest, entry: ModelEntry) -> None:
    """A model that takes no images refuses a request that has one (never drops it silently)."""
    if request.has_images:
        raise InvalidRequestError(
            f"model {entry.name} does not take images (vision_mode {entry.capabilities.vision_mode!r}); images go to "
            "a model with vision_mode 'native', or through a 'proxy' vision model that captions them",
            param="messages",
        )


def encode_images(
    request: GenerationRequest, loaded: LoadedModel, entry: ModelEntry, memory_tokens: int
) -> list[EncodedImage]:
    """Every image part of the request, in message order, preprocessed for the model's vision encoder."""
    family = loaded.family
    if family is None:
        refuse_images(request, entry)
        return []
    parts = [
        (m, p, part)
        for m, turn in enumerate(request.messages)
        for p, part in enumerate(turn.parts)
        if isinstance(part, ImageBytes)
    ]
    share = max(MIN_IMAGE_TOKENS, memory_tokens // max(1, len(parts)))
    encoded = []
    for m, p, part in parts:
        param = f"messages[{m}].parts[{p}].image"
        image = decode_image(part.data, max_pixels=MAX_DECODE_PIXELS, param=param).image
        budget = image_token_budget(
            part.detail,
            family.natural_tokens(*image.size),
            max_image_tokens=entry.native_vision.max_image_tokens,
            memory_tokens=share,
        )
        try:
            # On vLLM its own processor encodes the image (in its engine core): we hand it over, sized here.
            encoded.append(
                family.handed_over(image, budget) if entry.backend == "vllm" else family.encode(image, budget)
            )
        except Exception as exc:  # noqa: BLE001 - the image processor's own errors: this image cannot be used
            raise InvalidRequestError(
                f"Invalid image: cannot preprocess it for this model: {exc}", param=param
            ) from exc
    return encoded


def expand(prompt_ids: list[int], loaded: LoadedModel, images: list[EncodedImage]) -> list[int]:
    """The prompt with each image placeholder replaced by its image's tokens. A placeholder count that differs
    from the images (a message's text spelling the placeholder token itself) is refused."""
    assert loaded.family is not None
    try:
        return expand_placeholders(prompt_ids, loaded.family.placeholder_id, images)
    except ValueError as exc:
        raise InvalidRequestError(f"The messages do not match their images: {exc}", param="messages") from exc
