"""The interface of one VLM family's image handling.

A family turns one PIL image into (a) the tensors its vision encoder takes and (b) the token ids that stand
for the image in the prompt: the chat template writes one placeholder token per image (`placeholder`), and
`expand_placeholders` replaces each by its image's tokens. `collate` stacks the tensors of a batch's images,
in prompt order, into `generate()` keyword arguments. Nothing here runs a model.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
from PIL import Image


@dataclass(frozen=True)
class EncodedImage:
    """One image, preprocessed for a family's vision encoder."""

    tensors: dict[str, torch.Tensor]  # this image's encoder inputs (what the processor returns for it alone)
    tokens: tuple[int, ...]  # the prompt tokens that stand for it (its placeholder, expanded)
    image_tokens: int  # how many of those tokens the encoder's output fills
    # `handed_over`'s: the image at its encoded size, for another process's processor to encode (no tensors here).
    image: Image.Image | None = None


class VisionFamily(ABC):
    """How one family of checkpoints (by `config.model_type`) takes images.

    Built by `families.load_family` from a checkpoint's config, tokenizer and image processor."""

    name: str  # e.g. "qwen2_vl"
    model_types: tuple[str, ...]  # config.model_type values this adapter serves

    def __init__(self, config, tokenizer, image_processor) -> None:
        self.config = config
        self.tokenizer = tokenizer
        self.image_processor = image_processor

    @classmethod
    def load_image_processor(cls, source: str, **common):
        """The checkpoint's image processor (the PIL implementation where torchvision is missing)."""
        from transformers import AutoImageProcessor

        return AutoImageProcessor.from_pretrained(source, **common)

    @property
    @abstractmethod
    def placeholder(self) -> str:
        """The token the chat template writes where an image goes (`{"type": "image"}` content)."""

    @property
    def placeholder_id(self) -> int:
        """The placeholder's token id."""
        return self.tokenizer.convert_tokens_to_ids(self.placeholder)

    @abstractmethod
    def natural_tokens(self, width: int, height: int) -> int:
        """Image tokens of an image at its own size (what `detail: auto` compares with the budget)."""

    @abstractmethod
    def encode(self, image: Image.Image, max_image_tokens: int) -> EncodedImage:
        """Preprocess one image for at most `max_image_tokens` image tokens (families with a fixed cost per
        image or tile use their own and may exceed it; `EncodedImage.image_tokens` says what it costs)."""

    def handed_over(self, image: Image.Image, max_image_tokens: int) -> EncodedImage | None:
        """The image for a backend whose own processor encodes it (vLLM's): resized as `encode` resizes it for
        `max_image_tokens`, with the prompt tokens it will stand for, and no tensors. Given `kept_as_they_are`
        too, that processor encodes it to the grid `encode` gives, so `detail` and the budgets hold there as here,
        image by image. None: this family's processor sizes images itself (tiles, a fixed size)."""
        return None

    @property
    def hands_over(self) -> bool:
        """Whether `handed_over` sizes this family's images: true where the family implements it."""
        return type(self).handed_over is not VisionFamily.handed_over

    def kept_as_they_are(self, images: list[Image.Image]) -> dict:
        """The image processor's keyword arguments under which it keeps the size of each `handed_over` image."""
        return {}

    def collate(self, images: list[EncodedImage]) -> dict[str, torch.Tensor]:
        """`generate()` inputs for a batch's images, in prompt order (default: concatenate each tensor)."""
        keys = images[0].tensors.keys()
        return {key: torch.cat([image.tensors[key] for image in images]) for key in keys}

    def prompt_ids(self, prompt: str, images: list[EncodedImage]) -> list[int]:
        """The token ids of a chat-templated prompt with each placeholder replaced by its image's tokens.

        Default: tokenize, then expand the placeholder ids. A family whose processor expands the prompt's text
        (so the tokens around an image may merge with it) overrides this to do the same."""
        ids = self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        return expand_placeholders(ids, self.placeholder_id, images)

    def text_inputs(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """Extra per-token `generate()` inputs the family needs beside the image tensors (default: none)."""
        return {}

    def check(self) -> None:
        """Raise ValueError when the checkpoint's files disagree with what this adapter expects."""
        expected = getattr(self.config, "image_token_id", None) or getattr(self.config, "image_token_index", None)
        if expected is not None and self.placeholder_id != expected:
            raise ValueError(
                f"image token {self.placeholder!r} (id {self.placeholder_id}) does not match the "
                f"config's image token id {expected}"
            )


def resized_rgb(image: Image.Image, width: int, height: int) -> Image.Image:
    """`image` in RGB at `width` x `height`, resized (when it is not that size already) by bicubic resampling, as
    the PIL image processors resize; for a family's `handed_over`."""
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    return rgb if (width, height) == rgb.size else rgb.resize((width, height), Image.Resampling.BICUBIC)


def expand_placeholders(prompt_ids: list[int], placeholder_id: int, images: list[EncodedImage]) -> list[int]:
    """Replace the i-th placeholder token by the i-th image's tokens; the counts must agree."""
    positions = [i for i, token in enumerate(prompt_ids) if token == placeholder_id]
    if len(positions) != len(images):
        raise ValueError(f"the prompt has {len(positions)} image placeholder(s) for {len(images)} image(s)")
    out: list[int] = []
    start = 0
    for position, image in zip(positions, images):
        out += prompt_ids[start:position]
        out += image.tokens
        start = position + 1
    return out + prompt_ids[start:]


def collapse_placeholders(prompt_ids: list[int], placeholder_id: int, images: list[EncodedImage]) -> list[int]:
    """`expand_placeholders` undone: each image's tokens, in order, back to one placeholder token (what a backend
    whose own processor expands the images takes)."""
    out: list[int] = []
    start = 0
    for image in images:
        tokens, width = list(image.tokens), len(image.tokens)
        position = next(
            (
                i
                for i in range(start, len(prompt_ids) - width + 1)
                if prompt_ids[i] == tokens[0] and prompt_ids[i : i + width] == tokens
            ),
            None,
        )
        if position is None:
            raise ValueError("the prompt does not hold its images' tokens in order")
        out += prompt_ids[start:position] + [placeholder_id]
        start = position + width
    return out + prompt_ids[start:]
