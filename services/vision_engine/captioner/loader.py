"""Load a vision-language model (Qwen2-VL family first) for image-only captioning.

`AutoProcessor` cannot be used for Qwen2-VL here: `Qwen2VLProcessor` insists on building a video
processor, which needs torchvision (not installable beside our torch). Captioning needs only the three
parts it combines, and they all load from any Qwen2-VL checkpoint unchanged: the tokenizer (with its
chat template), the image processor (`AutoImageProcessor` falls back to the PIL implementation when
torchvision is missing) and the model. `prompts.py` does the one thing the processor would add:
expanding the image placeholder to one token per merged patch.

Captions decode greedily (the batcher passes `do_sample=False`: a cached caption must not depend on
chance) but keep the checkpoint's `repetition_penalty` (`generation_config.json`: 1.05 for Qwen2-VL),
which the batcher applies from `model.generation_config` over each row's own tokens (penalty.py). The hub config's own sampling (top_k 1) is greedy
too, so this is the decoding the model's authors chose, and the penalty keeps long captions from looping.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from transformers import AutoConfig, AutoImageProcessor, AutoModelForImageTextToText

from services.common.hf_models import (
    ModelLoadError,
    eos_token_ids,
    kv_bytes_per_token,
    read_generation_config,
    resolve_device,  # fmt: skip
    resolve_dtype,
    stand_in_for,
)
from services.common.tokenizers import load_tokenizer

log = logging.getLogger(__name__)


@dataclass
class LoadedVisionModel:
    """A VLM ready for captioning."""

    model: torch.nn.Module
    tokenizer: object
    image_processor: object
    image_token: str
    patch_factor: int  # pixels per side of one image token (patch_size * merge_size)
    min_pixels: int
    eos_token_ids: list[int]
    pad_token_id: int
    max_context: int
    dtype: torch.dtype
    device: torch.device
    stand_in_for: str
    kv_bytes_per_token: int


def load_vision_model(source: str, *, dtype: str, device: str, revision: str | None = None,
                      trust_remote_code: bool = False) -> LoadedVisionModel:  # fmt: skip
    """Load tokenizer, image processor and weights; fail loudly on missing weights."""
    torch_device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, torch_device)
    common = {"revision": revision, "trust_remote_code": trust_remote_code}
    try:
        config = AutoConfig.from_pretrained(source, **common)
        tokenizer = load_tokenizer(source, **common)  # one backend for every checkpoint: services/common/tokenizers.py
        image_processor = AutoImageProcessor.from_pretrained(source, **common)
        model, info = AutoModelForImageTextToText.from_pretrained(
            source, dtype=torch_dtype, output_loading_info=True, **common
        )
    except (OSError, ValueError, ImportError) as exc:
        raise ModelLoadError(f"cannot load vision model from {source!r}: {exc}") from exc
    if info.get("missing_keys"):
        raise ModelLoadError(f"{source!r}: weights missing from the checkpoint: {sorted(info['missing_keys'])[:5]}")
    tokenizer.padding_side = "left"  # batched generation appends to the right end of every row
    image_token = getattr(tokenizer, "image_token", None) or "<|image_pad|>"
    if tokenizer.convert_tokens_to_ids(image_token) != getattr(config, "image_token_id", None):
        raise ModelLoadError(f"{source!r}: image token {image_token!r} does not match config.image_token_id")
    text_config = config.get_text_config()
    eos_ids = eos_token_ids(read_generation_config(source, common), tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_ids[0]
    size = image_processor.size
    return LoadedVisionModel(
        model=model.to(torch_device).eval(),
        tokenizer=tokenizer,
        image_processor=image_processor,
        image_token=image_token,
        patch_factor=image_processor.patch_size * image_processor.merge_size,
        min_pixels=getattr(size, "shortest_edge", None) or 56 * 56,
        eos_token_ids=eos_ids,
        pad_token_id=pad,
        max_context=getattr(text_config, "max_position_embeddings", 32768),
        dtype=torch_dtype,
        device=torch_device,
        stand_in_for=stand_in_for(source),
        kv_bytes_per_token=kv_bytes_per_token(text_config, torch_dtype),
    )
