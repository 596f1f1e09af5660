"""Gemma 3: every image is one 896x896 view, 256 soft tokens between `<start_of_image>` and `<end_of_image>`.

The template writes `<start_of_image>` per image. Gemma3Processor replaces that text with
`\\n\\n<start_of_image>` + 256 x `<image_soft_token>` + `<end_of_image>\\n\\n` before tokenizing, so the
newlines can merge with the text around them: `prompt_ids` expands the text the same way. The image
processor resizes to 896x896 (pan & scan is off in the repos' preprocessor_config.json, and off here: one
view per image), so the cost is fixed whatever the detail. `token_type_ids` (1 at the soft tokens) let the
model attend bidirectionally within an image during prefill, as the processor's output does.
"""

from __future__ import annotations

import torch
from PIL import Image

from .family import EncodedImage, VisionFamily


class Gemma3Family(VisionFamily):
    """Gemma 3 (`Gemma3ForConditionalGeneration`): a fixed 256 image tokens per image."""

    name = "gemma3"
    model_types = ("gemma3",)

    @property
    def placeholder(self) -> str:
        return self.tokenizer.boi_token

    @property
    def image_token_id(self) -> int:
        return self.tokenizer.convert_tokens_to_ids(self.tokenizer.image_token)

    @property
    def seq_len(self) -> int:
        return self.config.mm_tokens_per_image

    @property
    def expansion(self) -> str:
        """What the processor writes for one image (its `full_image_sequence`)."""
        tok = self.tokenizer
        return f"\n\n{tok.boi_token}{tok.image_token * self.seq_len}{tok.eoi_token}\n\n"

    def natural_tokens(self, width: int, height: int) -> int:
        return self.seq_len

    def encode(self, image: Image.Image, max_image_tokens: int) -> EncodedImage:
        out = self.image_processor(images=[image], return_tensors="pt", do_pan_and_scan=False)
        tokens = tuple(self.tokenizer(self.expansion, add_special_tokens=False)["input_ids"])
        return EncodedImage({"pixel_values": out["pixel_values"]}, tokens, self.seq_len)

    def prompt_ids(self, prompt: str, images: list[EncodedImage]) -> list[int]:
        parts = prompt.split(self.placeholder)
        if len(parts) - 1 != len(images):
            raise ValueError(f"the prompt has {len(parts) - 1} image placeholder(s) for {len(images)} image(s)")
        return self.tokenizer(self.expansion.join(parts), add_special_tokens=False)["input_ids"]

    def text_inputs(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"token_type_ids": (input_ids == self.image_token_id).long()}

    def check(self) -> None:
        for name, token, expected in (
            ("boi_token_index", self.placeholder, self.config.boi_token_index),
            ("image_token_index", self.tokenizer.image_token, self.config.image_token_index),
        ):
            actual = self.tokenizer.convert_tokens_to_ids(token)
            if actual != expected:
                raise ValueError(f"{token!r} is id {actual} in the tokenizer but {name} is {expected}")
