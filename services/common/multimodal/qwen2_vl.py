"""Qwen2-VL (and the families that share its image processor and placeholder: Qwen2.5-VL, Qwen3-VL).

The template writes `<|vision_start|><|image_pad|><|vision_end|>` per image; the image processor resizes the
image to a multiple of `patch_size * merge_size` pixels within a pixel budget and cuts it into patches
(`pixel_values` [patches, C*T*P*P], `image_grid_thw` [1, 3]); every 2x2 merged patch is one `<|image_pad|>`.
`generate()` builds the M-RoPE positions from `image_grid_thw` and `mm_token_type_ids` (which prompt tokens are
image tokens: the processor returns it beside `input_ids`); without it transformers 5.24 falls back to plain
1-D positions for the image tokens, which a real checkpoint was never trained on.
"""

from __future__ import annotations

import torch
from PIL import Image

from .family import EncodedImage, VisionFamily, resized_rgb


class Qwen2VLFamily(VisionFamily):
    """Qwen2-VL: a pixel budget per image, one token per merged patch."""

    name = "qwen2_vl"
    model_types = ("qwen2_vl",)

    @property
    def placeholder(self) -> str:
        return getattr(self.tokenizer, "image_token", None) or "<|image_pad|>"

    @property
    def patch_factor(self) -> int:
        """Pixels per side of one image token."""
        return self.image_processor.patch_size * self.image_processor.merge_size

    @property
    def min_pixels(self) -> int:
        return getattr(self.image_processor.size, "shortest_edge", None) or 56 * 56

    def natural_tokens(self, width: int, height: int) -> int:
        return max(1, (width * height) // (self.patch_factor**2))

    def text_inputs(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """`mm_token_type_ids`: 1 at image tokens, 0 elsewhere (padding included), as the processor returns it."""
        return {"mm_token_type_ids": ((input_ids == self.placeholder_id) & (attention_mask == 1)).int()}

    def _pixel_range(self, max_image_tokens: int) -> dict[str, int]:
        # Qwen's processor reads `size` as a pixel range: shortest_edge = min pixels, longest_edge = max pixels.
        return {
            "shortest_edge": self.min_pixels,
            "longest_edge": max(self.min_pixels, max_image_tokens * self.patch_factor**2),
        }

    def handed_over(self, image: Image.Image, max_image_tokens: int) -> EncodedImage:
        # The processor's own arithmetic and resampling (smart_resize to whole merged patches within the pixel
        # range, then bicubic), so the pixels are the ones `encode` feeds the vision tower.
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

        pixels = self._pixel_range(max_image_tokens)
        height, width = smart_resize(
            image.height,
            image.width,
            factor=self.patch_factor,
            min_pixels=pixels["shortest_edge"],
            max_pixels=pixels["longest_edge"],
        )
        count = (width // self.patch_factor) * (height // self.patch_factor)
        return EncodedImage({}, (self.placeholder_id,) * count, count, resized_rgb(image, width, height))

    def kept_as_they_are(self, images: list[Image.Image]) -> dict:
        # A size of whole merged patches within the pixel range is smart_resize's fixed point.
        areas = [image.width * image.height for image in images]
        return {"size": {"shortest_edge": min(areas), "longest_edge": max(areas)}}

    def encode(self, image: Image.Image, max_image_tokens: int) -> EncodedImage:
        out = self.image_processor(images=[image], return_tensors="pt", size=self._pixel_range(max_image_tokens))
        grid = out["image_grid_thw"]
        count = int(grid.prod()) // (self.image_processor.merge_size**2)
        tensors = {"pixel_values": out["pixel_values"], "image_grid_thw": grid}
        return EncodedImage(tensors, (self.placeholder_id,) * count, count)
