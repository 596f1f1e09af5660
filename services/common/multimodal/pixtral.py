"""Mistral3 (Ministral-3, Mistral-Small-3.x) with its Pixtral vision tower.

What the hub repos ship (mistralai/Ministral-3-3B-Instruct-2512 / -Reasoning-2512): a transformers-5
`processor_config.json` whose `image_processor` section is a `PixtralImageProcessorFast` (`patch_size` 14,
`size.longest_edge` 1540, CLIP mean/std, bicubic) beside PixtralProcessor's own keys (`patch_size` 14,
`spatial_merge_size` 2, `image_token` `[IMG]`, `image_break_token` `[IMG_BREAK]`, `image_end_token`
`[IMG_END]`); there is no `preprocessor_config.json`. `AutoImageProcessor` reads that section (the PIL
implementation here, as torchvision is missing).

The chat template writes one `[IMG]` per image. PixtralProcessor (transformers' processing_pixtral.py,
`replace_image_token`; mistral-common and vLLM's pixtral.py do the same) resizes the image so its longest
edge is at most `longest_edge` and each side a multiple of `patch_size * spatial_merge_size` (28 px), then
writes one `[IMG]` per 28x28 cell, row by row, each row closed by `[IMG_BREAK]` and the last one by
`[IMG_END]` instead. Only the `[IMG]` tokens are filled by the encoder; the breaks are ordinary embeddings.
`generate()` takes `pixel_values` [B, 3, H, W] (zero-padded to the batch's largest image, bottom/right, as the
processor pads) and `image_sizes` [B, 2] (each image's own height, width), from which the tower crops.
"""

from __future__ import annotations

import torch
from PIL import Image
from transformers.models.pixtral.image_processing_pil_pixtral import get_resize_output_image_size

from .family import EncodedImage, VisionFamily, resized_rgb

IMAGE_TOKEN = "[IMG]"
IMAGE_BREAK_TOKEN = "[IMG_BREAK]"
IMAGE_END_TOKEN = "[IMG_END]"


class PixtralFamily(VisionFamily):
    """Mistral3ForConditionalGeneration: a longest-edge budget per image, rows of `[IMG]` closed by breaks."""

    name = "pixtral"
    model_types = ("mistral3",)

    @property
    def placeholder(self) -> str:
        return IMAGE_TOKEN

    @property
    def cell(self) -> int:
        """Pixels per side of one image token: the tower's patch times the projector's spatial merge."""
        return self.config.vision_config.patch_size * self.config.spatial_merge_size

    @property
    def longest_edge(self) -> int:
        """The image processor's own cap on the longest side (1540 px on the hub checkpoints)."""
        return self.image_processor.size.longest_edge

    def grid(self, width: int, height: int, longest_edge: int) -> tuple[int, int]:
        """(rows, columns) of image tokens for an image resized to fit `longest_edge` (the processor's rule)."""
        h, w = get_resize_output_image_size(
            _Size(height, width),
            size=(longest_edge, longest_edge),
            patch_size=(self.cell, self.cell),
            input_data_format="channels_last",
        )
        return h // self.cell, w // self.cell

    def natural_tokens(self, width: int, height: int) -> int:
        rows, cols = self.grid(width, height, self.longest_edge)
        return rows * cols

    def edge_for(self, width: int, height: int, max_image_tokens: int) -> int:
        """The largest longest-edge (at most the processor's) whose grid has at most `max_image_tokens` cells;
        one cell's edge at the least (an image always costs at least one token)."""
        low, high = self.cell, self.longest_edge
        if self._cells(width, height, high) <= max_image_tokens:
            return high
        while low < high:  # cells grow with the edge: binary search the last edge that fits
            mid = (low + high + 1) // 2
            if self._cells(width, height, mid) <= max_image_tokens:
                low = mid
            else:
                high = mid - 1
        return low

    def _cells(self, width: int, height: int, edge: int) -> int:
        rows, cols = self.grid(width, height, edge)
        return rows * cols

    def encode(self, image: Image.Image, max_image_tokens: int) -> EncodedImage:
        edge = self.edge_for(image.width, image.height, max_image_tokens)
        # PixtralProcessor passes patch_size * spatial_merge_size to its image processor (`_process_images`).
        out = self.image_processor(
            images=[image],
            return_tensors="pt",
            size={"longest_edge": edge},
            patch_size={"height": self.cell, "width": self.cell},
        )
        height, width = (int(v) for v in out["image_sizes"][0])
        rows, cols = height // self.cell, width // self.cell
        tokens = self.expansion(rows, cols)
        tensors = {"pixel_values": out["pixel_values"], "image_sizes": out["image_sizes"]}
        return EncodedImage(tensors, tokens, rows * cols)

    def handed_over(self, image: Image.Image, max_image_tokens: int) -> EncodedImage:
        # The image processor's own size rule and resampling (bicubic, to whole cells within the edge `encode`
        # picks), so the pixels are the ones `encode` feeds the vision tower.
        rows, cols = self.grid(image.width, image.height, self.edge_for(image.width, image.height, max_image_tokens))
        fitted = resized_rgb(image, cols * self.cell, rows * self.cell)
        return EncodedImage({}, self.expansion(rows, cols), rows * cols, fitted)

    def kept_as_they_are(self, images: list[Image.Image]) -> dict:
        # Whole cells within the longest edge are the resize rule's fixed point: transformers' processor, and
        # mistral-common's image encoder (which vLLM runs for the native format, and which takes no arguments),
        # keep such an image as it is.
        return {"size": {"longest_edge": max(max(image.size) for image in images)}}

    def expansion(self, rows: int, cols: int) -> tuple[int, ...]:
        """`[IMG]` x cols + `[IMG_BREAK]` per row; the last row's break is `[IMG_END]`."""
        image, brk, end = (
            self.tokenizer.convert_tokens_to_ids(t) for t in (IMAGE_TOKEN, IMAGE_BREAK_TOKEN, IMAGE_END_TOKEN)
        )
        tokens = ([image] * cols + [brk]) * rows
        tokens[-1] = end
        return tuple(tokens)

    def collate(self, images: list[EncodedImage]) -> dict[str, torch.Tensor]:
        """Pad every image to the batch's tallest and widest (zeros, bottom and right), sizes kept per image."""
        pixels = [image.tensors["pixel_values"] for image in images]
        height, width = max(p.shape[-2] for p in pixels), max(p.shape[-1] for p in pixels)
        padded = [torch.nn.functional.pad(p, (0, width - p.shape[-1], 0, height - p.shape[-2])) for p in pixels]
        return {"pixel_values": torch.cat(padded), "image_sizes": torch.cat([i.tensors["image_sizes"] for i in images])}

    def check(self) -> None:
        super().check()
        unknown = self.tokenizer.unk_token_id
        for token in (IMAGE_TOKEN, IMAGE_BREAK_TOKEN, IMAGE_END_TOKEN):
            token_id = self.tokenizer.convert_tokens_to_ids(token)
            if token_id is None or (unknown is not None and token_id == unknown):
                raise ValueError(f"the tokenizer has no {token} token")
        patch = getattr(self.image_processor, "patch_size", None)
        patch = patch.height if hasattr(patch, "height") else patch
        if patch not in (None, self.config.vision_config.patch_size):
            raise ValueError(
                f"image processor patch_size {patch} != the vision tower's {self.config.vision_config.patch_size}"
            )


class _Size:
    """A stand-in for an image array: `get_resize_output_image_size` only reads its (height, width)."""

    def __init__(self, height: int, width: int) -> None:
        self.shape = (height, width, 3)
        self.ndim = 3
