"""Qwen3-VL: 16-pixel patches (one `<|image_pad|>` per 32x32 pixels after the 2x2 merge), its own pixel range.

The image processor is Qwen2-VL's with Qwen3-VL's preprocessor_config.json (patch_size 16, `size` 65,536 to
16,777,216 pixels: at least 64 image tokens), and the template writes the same
`<|vision_start|><|image_pad|><|vision_end|>` per image. DeepStack (features of intermediate vision layers
added to the first decoder layers' hidden states at the image positions) happens inside `generate()` from
`pixel_values` and `image_grid_thw`, so the adapter passes just those, like Qwen2-VL's.
"""

from __future__ import annotations

from .qwen2_vl import Qwen2VLFamily


class Qwen3VLFamily(Qwen2VLFamily):
    """Qwen3-VL: a pixel budget per image, one token per 32x32 pixels."""

    name = "qwen3_vl"
    model_types = ("qwen3_vl",)

    @property
    def min_pixels(self) -> int:
        # The repo's size.shortest_edge (65,536 pixels); Qwen2-VL's 56x56 floor would undercut it.
        return getattr(self.image_processor.size, "shortest_edge", None) or 65536
