"""An FP8 copy of a Ministral-3 checkpoint, laid out as `mistralai/Ministral-3-3B-Instruct-2512` is.

The hub's Instruct checkpoints are the same Mistral3 model with the language model's linear layers in FP8
(transformers' `convert_ministral3_weights_to_hf.py` maps Mistral's `qscale_weight` / `qscale_act` to):

    <prefix>.layers.N.self_attn.{q,k,v,o}_proj.weight         float8_e4m3fn, [out, in]
    <prefix>.layers.N.self_attn.{q,k,v,o}_proj.weight_scale_inv  per-tensor scale, 0-dim (weight = fp8 * scale)
    <prefix>.layers.N.self_attn.{q,k,v,o}_proj.activation_scale  static per-tensor input scale, 0-dim
    <prefix>.layers.N.mlp.{gate,up,down}_proj.{weight,weight_scale_inv,activation_scale}   likewise

with everything else (embeddings, norms, the vision tower, the projector, lm_head) unquantized, and a top-level
`quantization_config` in config.json:

    {"quant_method": "fp8", "activation_scheme": "static", "weight_block_size": null,
     "modules_to_not_convert": ["model.vision_tower", "model.multi_modal_projector", "lm_head"]}

`write_fp8_copy` turns any Mistral3 (or Ministral3) checkpoint directory into that layout. Differences from
the hub files that are known: the scales are float32 here (the hub's dtype is not known to us), and the
activation scales are a fixed value rather than calibrated ones (they only matter to FP8 matmul kernels).
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from services.common.hf_models import TINY_MARKER

FP8_HUB_ID = "mistralai/Ministral-3-3B-Instruct-2512"
FP8 = torch.float8_e4m3fn
FP8_MAX = torch.finfo(FP8).max  # 448

QUANTIZATION_CONFIG = {
    "activation_scheme": "static",
    "modules_to_not_convert": ["model.vision_tower", "model.multi_modal_projector", "lm_head"],
    "quant_method": "fp8",
    "weight_block_size": None,
}

# The decoder's linear layers; the pixtral tower's are named attention.*/feed_forward.* and stay unquantized.
_QUANTIZED = re.compile(r"(^|\.)layers\.\d+\.(self_attn\.[qkvo]_proj|mlp\.(gate|up|down)_proj)\.weight$")
_NOT_TEXT = re.compile(r"(^|\.)(vision_tower|multi_modal_projector)\.")
ACTIVATION_SCALE = 0.02


def quantize_fp8(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-tensor FP8: (fp8 values, scale) with weight ≈ fp8.float() * scale."""
    scale = weight.detach().abs().max().float().clamp(min=1e-12) / FP8_MAX
    return (weight.float() / scale).clamp(-FP8_MAX, FP8_MAX).to(FP8), scale.reshape(())


def dequantize_fp8(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The reference: every FP8 weight times its scale, scales dropped (what a correct load must compute)."""
    out = {}
    for key, value in state.items():
        if key.endswith((".weight_scale_inv", ".activation_scale")):
            continue
        if value.dtype == FP8:
            value = value.float() * state[key.removesuffix("weight") + "weight_scale_inv"].float()
        out[key] = value
    return out


def write_fp8_copy(src: Path, out: Path) -> dict:
    """Copy the checkpoint at `src` to `out` with its language model's linear layers in FP8 (hub layout)."""
    src, out = Path(src), Path(out)
    shutil.copytree(src, out, dirs_exist_ok=True)
    quantized = 0
    for shard in sorted(out.glob("model*.safetensors")):  # not consolidated.safetensors (Mistral names)
        state = load_file(shard)
        new: dict[str, torch.Tensor] = {}
        for key, value in state.items():
            if _QUANTIZED.search(key) and not _NOT_TEXT.search(key):
                stem = key.removesuffix("weight")
                new[key], new[stem + "weight_scale_inv"] = quantize_fp8(value)
                new[stem + "activation_scale"] = torch.tensor(ACTIVATION_SCALE, dtype=torch.float32)
                quantized += 1
            else:
                new[key] = value
        save_file(new, shard, metadata={"format": "pt"})
    config_path = out / "config.json"
    config = json.loads(config_path.read_text())
    config["quantization_config"] = dict(QUANTIZATION_CONFIG)
    config_path.write_text(json.dumps(config, indent=2) + "\n")
    marker = out / TINY_MARKER
    if marker.is_file():  # a copy of a tiny stand-in stands in for the FP8 sibling
        marker.write_text(json.dumps({**json.loads(marker.read_text()), "stands_in_for": FP8_HUB_ID}, indent=2) + "\n")
    return {"quantized_linear_layers": quantized}
