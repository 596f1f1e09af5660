"""Which adapter serves a checkpoint, by its config's `model_type`."""

from __future__ import annotations

from .family import VisionFamily
from .gemma3 import Gemma3Family
from .idefics3 import Idefics3Family
from .pixtral import PixtralFamily
from .qwen2_5_vl import Qwen25VLFamily
from .qwen2_vl import Qwen2VLFamily
from .qwen3_vl import Qwen3VLFamily

FAMILIES: tuple[type[VisionFamily], ...] = (
    Qwen2VLFamily,
    PixtralFamily,
    Qwen25VLFamily,
    Qwen3VLFamily,
    Idefics3Family,
    Gemma3Family,
)


def family_for(config) -> type[VisionFamily]:
    """The adapter class of a checkpoint's config; ValueError names the supported families."""
    model_type = getattr(config, "model_type", "")
    for family in FAMILIES:
        if model_type in family.model_types:
            return family
    known = ", ".join(t for family in FAMILIES for t in family.model_types)
    raise ValueError(f"no vision adapter for model_type {model_type!r} (supported: {known})")


def load_family(source: str, config, tokenizer, **common) -> VisionFamily:
    """The adapter of a checkpoint, with its image processor loaded and its files checked."""
    cls = family_for(config)
    family = cls(config, tokenizer, cls.load_image_processor(source, **common))
    family.check()
    return family
