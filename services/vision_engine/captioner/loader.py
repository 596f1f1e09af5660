"""Load a vision-language model for image-only captioning, through its family's adapter.

`AutoProcessor` cannot be used here: several families' processors (Qwen2-VL's among them) insist on building
a video processor, which needs torchvision (not installable beside our torch). Captioning needs only the three
parts a processor combines, and they load from the checkpoint unchanged: the tokenizer (with its chat
template), the image processor (`AutoImageProcessor` falls back to the PIL implementation when torchvision is
missing) and the model. The family adapter (services/common/multimodal/) does what the processor would add:
the image's tensors and the expansion of its placeholder token.

Captions decode greedily (the batcher passes `do_sample=False`: a cached caption must not depend on
chance) but keep the checkpoint's `repetition_penalty` (`generation_config.json`: 1.05 for Qwen2-VL),
which the batcher applies from `model.generation_config` over each row's own tokens (penalty.py). The hub config's own sampling (top_k 1) is greedy
too, so this is the decoding the model's authors chose, and the penalty keeps long captions from looping.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from transformers import AutoConfig, AutoModelForImageTextToText

from services.common.hf_models import (
    ModelLoadError,
    eos_token_ids,
    kv_bytes_per_token,
    read_generation_config,
    resolve_device,
    resolve_dtype,
    stand_in_for,
)
from services.common.multimodal import VisionFamily, load_family
from services.common.tokenizers import load_tokenizer

log = logging.getLogger(__name__)


@dataclass
class LoadedVisionModel:
    """A VLM ready for captioning."""

    model: torch.nn.Module | None  # None when vLLM's engine core holds the weights (backend: vllm)
    tokenizer: object
    family: VisionFamily  # how this checkpoint's images become model inputs and prompt tokens
    eos_token_ids: list[int]
    pad_token_id: int
    max_context: int
    dtype: torch.dtype
    device: torch.device
    stand_in_for: str
    kv_bytes_per_token: int
    architectures: list[str]  # config.json's, for what checks a backend makes before it starts
    text_config: object
    repetition_penalty: float  # the checkpoint's (generation_config.json), 1.0 when it has none


def load_vision_model(source: str, *, dtype: str, device: str, weights: bool = True, **common) -> LoadedVisionModel:
    """Load tokenizer, image processor and (unless `weights` is False: vLLM loads them) weights; fail loudly on
    missing weights. `common`: how `source` is read (`revision`, `trust_remote_code`: ModelEntry.pretrained_options)."""
    torch_device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, torch_device)
    try:
        config = AutoConfig.from_pretrained(source, **common)
        tokenizer = load_tokenizer(source, **common)  # one backend for every checkpoint: services/common/tokenizers.py
        family = load_family(source, config, tokenizer, **common)
        model, info = (
            AutoModelForImageTextToText.from_pretrained(source, dtype=torch_dtype, output_loading_info=True, **common)
            if weights
            else (None, {})
        )
    except (OSError, ValueError, ImportError) as exc:
        raise ModelLoadError(f"cannot load vision model from {source!r}: {exc}") from exc
    if info.get("missing_keys"):
        raise ModelLoadError(f"{source!r}: weights missing from the checkpoint: {sorted(info['missing_keys'])[:5]}")
    tokenizer.padding_side = "left"  # batched generation appends to the right end of every row
    text_config = config.get_text_config()
    generation_config = read_generation_config(source, common)
    eos_ids = eos_token_ids(generation_config, tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_ids[0]
    return LoadedVisionModel(
        model=model.to(torch_device).eval() if model is not None else None,
        tokenizer=tokenizer,
        family=family,
        eos_token_ids=eos_ids,
        pad_token_id=pad,
        max_context=getattr(text_config, "max_position_embeddings", 32768),
        dtype=torch_dtype,
        device=torch_device,
        stand_in_for=stand_in_for(source),
        kv_bytes_per_token=kv_bytes_per_token(text_config, torch_dtype),
        architectures=list(getattr(config, "architectures", None) or []),
        text_config=text_config,
        repetition_penalty=float(getattr(generation_config, "repetition_penalty", None) or 1.0),
    )
