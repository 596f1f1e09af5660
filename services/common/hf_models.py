"""What both engines need to load Hugging Face checkpoints: device and dtype names, load errors, and
recognising the offline tiny stand-ins."""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from transformers import GenerationConfig

from .config import ModelEntry

MIB = 1024 * 1024

_DTYPES = {
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "f16": torch.float16,
    "fp16": torch.float16,
    "float16": torch.float16,
    "f32": torch.float32,
    "fp32": torch.float32,
    "float32": torch.float32,
}


# Checkpoint key prefix -> the text model's key prefix, for loading a multimodal checkpoint's language model
# alone (Mistral3 -> Ministral3ForCausalLM). The first two are what the hub's checkpoints hold; the third covers
# a checkpoint saved with transformers-5 module names.
TEXT_ONLY_KEY_MAPPING = {
    r"^language_model\.model\.": "model.",
    r"^language_model\.lm_head\.": "lm_head.",
    r"^model\.language_model\.": "model.",
}
# The keys of a multimodal checkpoint's vision part (tower and projector, as the families name them): what a
# text-only load leaves out on purpose.
NOT_TEXT_KEY = re.compile(r"^(model\.)?(vision_tower|multi_modal_projector|vision_model|visual)\.")


class ModelLoadError(RuntimeError):
    """The checkpoint cannot be served."""


def resolve_device(device: str) -> torch.device:
    """`auto` picks CUDA when there is one."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """Map the config's dtype names; `auto` is bf16 on GPU and f32 on CPU."""
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return _DTYPES[name]


# The file the offline model builder writes into every checkpoint it makes (services/model_builder).
TINY_MARKER = "proxyvision_tiny.json"


def read_tiny_marker(path: str | Path) -> dict | None:
    """The marker of an offline tiny checkpoint, or None for anything else (a real checkpoint)."""
    marker = Path(path) / TINY_MARKER
    if not marker.is_file():
        return None
    return json.loads(marker.read_text())


def stand_in_for(source: str) -> str:
    """The hub id an offline tiny checkpoint stands in for ('' for real checkpoints)."""
    marker = read_tiny_marker(source)
    return marker.get("stands_in_for", "") if marker else ""


def check_local_source(entry: ModelEntry) -> None:
    """A local checkpoint that is not there fails here, in one line naming the path and the fix. transformers
    would take the missing path for a hub repo id and answer "Repo id must be in the form 'repo_name' or
    'namespace/repo_name'", which names neither."""
    field = entry.source_field
    if not field.endswith("local_path"):
        return
    path = Path(entry.source)
    if path.is_dir():
        return
    what = "is not a directory" if path.exists() else "does not exist"
    raise ModelLoadError(
        f"{field} {path} {what} (model {entry.name!r}; a relative path is relative to models.yaml): point "
        f"{field} at a checkpoint directory on this machine, or set {field.replace('local_path', 'hf_id')} "
        "instead to download one from the Hugging Face hub"
    )


def head_dim(text_config) -> int:
    """Size of one attention head."""
    return getattr(text_config, "head_dim", None) or text_config.hidden_size // text_config.num_attention_heads


def kv_bytes_per_token(text_config, dtype: torch.dtype) -> int:
    """K and V of every layer for one token."""
    heads = getattr(text_config, "num_key_value_heads", None) or text_config.num_attention_heads
    element = torch.empty((), dtype=dtype).element_size()
    return 2 * text_config.num_hidden_layers * heads * head_dim(text_config) * element


def read_generation_config(source: str, common: dict) -> GenerationConfig | None:
    """The checkpoint's generation_config.json (stop tokens, sampling defaults), or None when it has none."""
    try:
        return GenerationConfig.from_pretrained(source, **common)
    except OSError:
        return None


def eos_token_ids(generation: GenerationConfig | None, tokenizer) -> list[int]:
    """End-of-sequence ids: the checkpoint's generation_config.json (often several) plus the tokenizer's
    (without a generation_config.json, the tokenizer's eos is the only stop token)."""
    ids: set[int] = set()
    eos = generation.eos_token_id if generation is not None else None
    ids.update(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return sorted(ids)
