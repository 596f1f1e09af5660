"""Qwen2.5-VL: Qwen2-VL's image processor, placeholder and token count (one `<|image_pad|>` per 2x2 merged
14-pixel patch); what changed is inside the model (window attention in the vision tower, absolute-time
M-RoPE), which the adapter does not see. The hub repos name `Qwen2VLImageProcessor` themselves."""

from __future__ import annotations

from .qwen2_vl import Qwen2VLFamily


class Qwen25VLFamily(Qwen2VLFamily):
    """Qwen2.5-VL: a pixel budget per image, one token per 28x28 pixels."""

    name = "qwen2_5_vl"
    model_types = ("qwen2_5_vl",)
