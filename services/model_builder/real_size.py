"""Random-weight checkpoints with the real sizes of the brief's two models, for `make gpu-check`.

The tiny stand-ins (text_model.py, vision_model.py) carry the hub repos' files and key layouts at toy sizes;
these writers produce the same files at the sizes of the real models, built straight on the target device
in bf16 (a 3.9B-parameter model is a few seconds of `normal_` on a GPU) and saved with safetensors in the
hubs' sharded layout. `SMALL` writes the same files at the tiny stand-ins' sizes, so the whole path runs on
a CPU in seconds (tests/integration/test_gpu_check.py).

Where the real sizes come from:

* mistralai/Ministral-3-3B-{Instruct,Reasoning}-2512 (`Mistral3ForConditionalGeneration`):
  text (`ministral3`): vocab 131072, hidden 3072, ffn 9216, 26 layers, 32 heads, 8 KV heads, head_dim 128,
  rms_norm_eps 1e-5, tied embeddings. Layers/hidden/heads/KV heads: NVIDIA Megatron-Bridge's Ministral 3
  page ("3B: 26 layers, 3072 hidden size, 32 attention heads, 8 query groups"); ffn, head_dim, vocab and
  the tie: transformers' `VoxtralRealtimeConfig`, whose text config is this 3B backbone (131072 / 3072 /
  9216 / 26 / 32 / 8 / 128, `tie_word_embeddings: true`). Context 262144 with YaRN factor 16 over 16384,
  rope_theta 1e6, beta_fast 32, beta_slow 1, mscale 1, llama_4_scaling_beta 0.1: the model card's 256k
  window and the rope parameters the Ministral 3 configs carry (as mlx-vlm's port of the 3B reads them).
  Cross-check: 26 layers x 2 x 8 x 128 x 2 bytes = 104 KiB of bf16 KV cache per token, docs/operations.md's figure (Memory budget).
  Vision (`pixtral`): hidden 1024, ffn 4096, 24 layers, 16 heads, head_dim 64, image 1540, patch 14 —
  transformers' `Mistral3Config` vision defaults (the Mistral-Small-3.1 tower the Ministral 3 family reuses);
  spatial_merge_size 2, gelu projector without bias, image token 10: `Mistral3Config`'s defaults and the
  repo's processor_config.json (text_model.PROCESSOR_CONFIG).
* Qwen/Qwen2-VL-7B-Instruct's config.json: vocab 152064, hidden 3584, intermediate 18944, 28 layers,
  28 heads, 4 KV heads, max_position_embeddings 32768, sliding_window 32768 (off), max_window_layers 28,
  rms_norm_eps 1e-6, rope_theta 1e6, M-RoPE sections [16, 24, 24], untied lm_head; vision: depth 32,
  embed_dim 1280, mlp_ratio 4, 16 heads, patch 14, merge 2, temporal patch 2, hidden_size 3584 (the
  merger's output). The same values are transformers' `Qwen2VLVisionConfig` defaults (documented against
  that checkpoint) and Qwen2-7B's text shape.

What is not real:

* **The tokenizers are the tiny stand-ins'** (4,096-id tekken slice; 1,038-id Qwen BPE) while the configs
  carry the real vocabulary sizes and the embedding and output matrices are real-size: the compute per token
  is the real model's, the prompts are shorter than a real tokenizer's would be (more characters per token
  would need the real vocabulary file, which cannot be made offline). Qwen's special-token ids in config.json
  are the small tokenizer's (near 1,024), not 151643+.
* Rows the tokenizer cannot decode (ids past its vocabulary), the control tokens and the end-of-sequence
  tokens get small embeddings / output rows (x `QUIET_SCALE`): a random model's greedy pick then stays on
  decodable text and never ends a stream early, so every contender generates exactly `max_tokens` tokens
  and tok/s compares like with like. The matmuls keep their full size.
* No `consolidated.safetensors` (the tiny Ministral carries one: Mistral's native names, read only by
  mistral-inference / vLLM): at real size it would be a second 7.7 GB copy nothing here reads.

Besides the Mistral3 checkpoint, `write_ministral3` writes its text model alone as a `Ministral3ForCausalLM`
checkpoint (same tensors, tokenizer and template): `transformers serve --continuous-batching` batches only
models it classifies as text LLMs, so that is the copy it serves side by side with ours.

    python -m services.model_builder.real_size --out .gpu-check/models --size real --device cuda
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from transformers import (
    Mistral3ForConditionalGeneration,
    Qwen2VLForConditionalGeneration,
)
from transformers.models.ministral3 import Ministral3ForCausalLM

from services.common.tokenizers import load_tokenizer

from .checkpoint import build_atomically
from .hub_files import save_shards
from .tekken import NUM_SPECIAL_TOKENS
from .text_model import (
    EOS,
    MINISTRAL_HUB_ID,
    TINY_VOCAB,
    _generation_config,
    _text_config,
    mistral3_config,
    pixtral_config,
    write_mistral3_files,
)
from .vision_model import (
    CONTEXT as QWEN_TINY_CONTEXT,
    QWEN2_VL_HUB_ID,
    _flat_config,
    legacy_name,
    qwen2_vl_config,
    qwen2_vl_tokenizer,
    write_qwen2_vl_files,
)

QUIET_SCALE = 0.05  # how much smaller the rows a random model must not pick are (see the module docstring)


@dataclass(frozen=True)
class Ministral3Size:
    """The shape of a Ministral-3 checkpoint: its `ministral3` text model and `pixtral` tower."""

    vocab: int
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    ffn: int
    context: int
    vision_hidden: int
    vision_ffn: int
    vision_layers: int
    vision_heads: int
    vision_head_dim: int
    shards: int  # model-0000i-of-0000n.safetensors files, as the hub stores big checkpoints


@dataclass(frozen=True)
class Qwen2VLSize:
    """The shape of a Qwen2-VL checkpoint (config.json's flat keys and its vision_config)."""

    vocab: int
    hidden: int
    ffn: int
    layers: int
    heads: int
    kv_heads: int
    context: int
    mrope_section: tuple[int, int, int]  # sums to head_dim / 2
    vision_depth: int
    vision_embed: int
    vision_mlp_ratio: int
    vision_heads: int
    shards: int


@dataclass(frozen=True)
class Sizes:
    """One size of the pair the GPU check serves."""

    name: str
    ministral3: Ministral3Size
    qwen2_vl: Qwen2VLSize


REAL = Sizes(
    "real",
    Ministral3Size(
        vocab=131072,
        hidden=3072,
        layers=26,
        heads=32,
        kv_heads=8,
        head_dim=128,
        ffn=9216,
        context=262144,
        vision_hidden=1024,
        vision_ffn=4096,
        vision_layers=24,
        vision_heads=16,
        vision_head_dim=64,
        shards=2,
    ),
    Qwen2VLSize(
        vocab=152064,
        hidden=3584,
        ffn=18944,
        layers=28,
        heads=28,
        kv_heads=4,
        context=32768,
        mrope_section=(16, 24, 24),
        vision_depth=32,
        vision_embed=1280,
        vision_mlp_ratio=4,
        vision_heads=16,
        shards=4,
    ),
)

# Sizes like the tiny stand-ins' (with their first heads, 16 wide: this layout runs on transformers only), with
# vocabularies a little past the tokenizers' so the undecodable-rows path runs.
SMALL = Sizes(
    "small",
    Ministral3Size(
        vocab=2 * TINY_VOCAB,
        hidden=64,
        layers=2,
        heads=4,
        kv_heads=2,
        head_dim=16,
        ffn=256,
        context=4096,
        vision_hidden=32,
        vision_ffn=64,
        vision_layers=1,
        vision_heads=2,
        vision_head_dim=16,
        shards=2,
    ),
    Qwen2VLSize(
        vocab=2048,
        hidden=64,
        ffn=256,
        layers=2,
        heads=4,
        kv_heads=2,
        context=QWEN_TINY_CONTEXT,
        mrope_section=(2, 3, 3),
        vision_depth=2,
        vision_embed=32,
        vision_mlp_ratio=2,
        vision_heads=2,
        shards=2,
    ),
)

SIZES = {sizes.name: sizes for sizes in (REAL, SMALL)}


def checkpoint_dirs(out: Path, sizes: Sizes) -> dict[str, Path]:
    """Where each checkpoint of `sizes` goes under `out`: text (Mistral3), text_only (CausalLM), vision."""
    return {
        "text": out / f"ministral-3-3b-{sizes.name}",
        "text_only": out / f"ministral-3-3b-{sizes.name}-text-only",
        "vision": out / f"qwen2-vl-7b-{sizes.name}",
    }


@contextlib.contextmanager
def _building_on(device: str, dtype: torch.dtype) -> Iterator[None]:
    """Modules created inside get their parameters on `device` in `dtype` (initialised there, never copied)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device), torch.no_grad():
            yield
    finally:
        torch.set_default_dtype(previous)


@torch.no_grad()
def _quiet_rows(matrix: torch.Tensor, keep: range, also: tuple[int, ...] = ()) -> None:
    """Scale down every row of `matrix` outside `keep`, and the rows in `also`, in place."""
    scale = torch.full((matrix.shape[0], 1), QUIET_SCALE, dtype=matrix.dtype, device=matrix.device)
    scale[keep.start : keep.stop] = 1.0
    scale[list(also)] = QUIET_SCALE
    matrix.mul_(scale)


def _shard_limit(model: torch.nn.Module, shards: int) -> int:
    total = sum(p.numel() * p.element_size() for p in model.state_dict().values())
    return -(-total // shards) + 1  # bytes per file, so save_pretrained writes `shards` files


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def write_ministral3(out: Path, text_only: Path, size: Ministral3Size, device: str, dtype: torch.dtype) -> dict:
    """A random `Mistral3ForConditionalGeneration` of `size` in the hub repo's files at `out`, and its text
    model alone as `Ministral3ForCausalLM` at `text_only`. Returns details for the marker."""
    torch.manual_seed(0)
    started = time.monotonic()
    text = _text_config(
        size.vocab,
        hidden=size.hidden,
        layers=size.layers,
        heads=size.heads,
        kv_heads=size.kv_heads,
        head_dim=size.head_dim,
        ffn=size.ffn,
        context=size.context,
        tied=True,
    )
    vision = pixtral_config(
        hidden=size.vision_hidden,
        ffn=size.vision_ffn,
        layers=size.vision_layers,
        heads=size.vision_heads,
        head_dim=size.vision_head_dim,
    )
    config = mistral3_config(text, vision)
    with _building_on(device, dtype):
        model = Mistral3ForConditionalGeneration(config)
        embed = model.model.language_model.embed_tokens.weight  # also the output projection (tied)
        _quiet_rows(embed, range(NUM_SPECIAL_TOKENS, TINY_VOCAB), also=(EOS,))
    _sync(device)
    built = time.monotonic() - started
    model.generation_config = _generation_config()
    model.save_pretrained(out, max_shard_size=_shard_limit(model, size.shards))
    write_mistral3_files(out, config)

    # The text model alone: the same modules (no copy) under a CausalLM, saved with the same tokenizer.
    with torch.device("meta"):
        causal = Ministral3ForCausalLM(copy.deepcopy(model.config.text_config))
    causal.model, causal.lm_head = model.model.language_model, model.lm_head
    causal.config.architectures = ["Ministral3ForCausalLM"]
    causal.generation_config = _generation_config()
    # Written beside and renamed into place, before the Mistral3 checkpoint's marker: a complete Mistral3
    # checkpoint always has a complete copy (build() rebuilds both when the copy is missing).
    building = text_only.with_name(f".{text_only.name}.building")
    shutil.rmtree(building, ignore_errors=True)
    causal.save_pretrained(building, max_shard_size=_shard_limit(causal, size.shards))
    load_tokenizer(str(out)).save_pretrained(building)
    for file in building.iterdir():
        file.chmod(0o644)  # safetensors are written 0600; readable by all, as build_atomically does
    shutil.rmtree(text_only, ignore_errors=True)
    building.rename(text_only)
    language_model = sum(p.numel() for p in model.model.language_model.parameters())
    details = {
        "parameters": sum(p.numel() for p in model.parameters()),
        "language_model_parameters": language_model,
        "dtype": str(dtype).removeprefix("torch."),
        "built_on": device,
        "init_seconds": round(built, 2),
        "size": asdict(size),
        "tokenizer_vocab": TINY_VOCAB,
    }
    del model, causal
    return details


def _qwen_flat_config(ids: dict[str, int], size: Qwen2VLSize) -> dict:
    """The 7B repo's config.json layout (vision_model._flat_config) with `size`'s dimensions."""
    flat = _flat_config(ids, size.vocab)
    flat.update(
        {
            "hidden_size": size.hidden,
            "intermediate_size": size.ffn,
            "num_hidden_layers": size.layers,
            "max_window_layers": size.layers,
            "num_attention_heads": size.heads,
            "num_key_value_heads": size.kv_heads,
            "max_position_embeddings": size.context,
            "sliding_window": size.context,
            "torch_dtype": "bfloat16",
            "rope_scaling": {"type": "mrope", "mrope_section": list(size.mrope_section)},
        }
    )
    flat["vision_config"].update(
        {
            "depth": size.vision_depth,
            "embed_dim": size.vision_embed,
            "mlp_ratio": size.vision_mlp_ratio,
            "num_heads": size.vision_heads,
            "hidden_size": size.hidden,
        }
    )
    return flat


def write_qwen2_vl(out: Path, size: Qwen2VLSize, device: str, dtype: torch.dtype) -> dict:
    """A random `Qwen2VLForConditionalGeneration` of `size` in the 7B repo's (pre-transformers-5) layout."""
    torch.manual_seed(2)
    started = time.monotonic()
    tok, ids = qwen2_vl_tokenizer(size.context)
    flat = _qwen_flat_config(ids, size)
    with _building_on(device, dtype):
        model = Qwen2VLForConditionalGeneration(qwen2_vl_config(flat))
        # Untied: the output rows decide what is generated; captions then run to their max_tokens.
        _quiet_rows(model.lm_head.weight, range(0, len(tok)), also=(ids["<|endoftext|>"], ids["<|im_end|>"]))
    _sync(device)
    built = time.monotonic() - started
    save_shards({legacy_name(k): v for k, v in model.state_dict().items()}, out, size.shards)
    write_qwen2_vl_files(out, flat, tok, ids)
    details = {
        "parameters": sum(p.numel() for p in model.parameters()),
        "dtype": str(dtype).removeprefix("torch."),
        "built_on": device,
        "init_seconds": round(built, 2),
        "size": asdict(size),
        "tokenizer_vocab": len(tok),
    }
    del model
    return details


def build(out: Path, sizes: Sizes, device: str, dtype: torch.dtype = torch.bfloat16, force: bool = False) -> dict:
    """Build (or keep, when complete) the three checkpoints of `sizes` under `out`.

    Returns {"text": path, "text_only": path, "vision": path, "seconds": {...}}. The text-only copy is written
    with the Mistral3 checkpoint (it shares its tensors), so it is rebuilt whenever that one is."""
    dirs = checkpoint_dirs(Path(out), sizes)
    seconds: dict[str, float] = {}
    marker = (("variant", f"{sizes.name}-size"),)

    def text(tmp: Path) -> dict:
        return {**write_ministral3(tmp, dirs["text_only"], sizes.ministral3, device, dtype), **dict(marker)}

    def vision(tmp: Path) -> dict:
        return {**write_qwen2_vl(tmp, sizes.qwen2_vl, device, dtype), **dict(marker)}

    started = time.monotonic()
    if not (dirs["text_only"] / "config.json").exists():
        force = True  # the copy went missing: write both again
    build_atomically(dirs["text"], MINISTRAL_HUB_ID, text, force=force)
    seconds["text"] = time.monotonic() - started
    started = time.monotonic()
    build_atomically(dirs["vision"], QWEN2_VL_HUB_ID, vision, force=force)
    seconds["vision"] = time.monotonic() - started
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return {**{k: str(v) for k, v in dirs.items()}, "seconds": {k: round(v, 2) for k, v in seconds.items()}}


def main(argv: list[str] | None = None) -> int:
    """CLI: build, print one JSON line with the paths and seconds (what benchmarks/gpu_check.py reads)."""
    parser = argparse.ArgumentParser(
        prog="python -m services.model_builder.real_size", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--out", required=True, help="directory for the checkpoints")
    parser.add_argument("--size", choices=sorted(SIZES), default="real")
    parser.add_argument("--device", default="cuda", help="where the weights are initialised (cuda, cpu)")
    parser.add_argument("--force", action="store_true", help="rebuild even complete checkpoints")
    args = parser.parse_args(argv)
    import logging

    logging.getLogger("transformers").setLevel(logging.ERROR)  # random-init reports are expected here
    result = build(Path(args.out), SIZES[args.size], args.device, force=args.force)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
