"""Quantized checkpoints: keep their `quantization_config` on a text-only load, decide how FP8 runs here,
and refuse a load whose quantization scales were skipped.

The brief's sibling `mistralai/Ministral-3-3B-Instruct-2512` is FP8: `config.json` carries, at the top level,
`{"quant_method": "fp8", "activation_scheme": "static", "weight_block_size": null,
"modules_to_not_convert": ["model.vision_tower", "model.multi_modal_projector", "lm_head"]}`, and every
linear layer of the language model stores `weight` (float8_e4m3fn), a per-tensor `weight_scale_inv` (the
factor the FP8 values are multiplied by) and a static `activation_scale`. The text-only load builds the model
from `text_config`, which has no `quantization_config`: without it transformers would cast the FP8 values to
the model dtype, drop the scales as "unexpected" keys, and report nothing missing. So the top-level config is
copied onto the text config (`carry_quantization_config`) and scales that end up skipped fail the load
(`check_skipped_scales`).

How FP8 runs (transformers 5's FineGrainedFP8 quantizer, decided here rather than left to its fallbacks):
- CUDA with compute capability >= 8.9 and a working FP8 kernel: FP8 weights, FP8 matmuls.
- anywhere else (CPU, older GPUs, no kernel): `dequantize=True`, i.e. weight * weight_scale_inv in the model
  dtype at load time. Exact for the weights; activations then run unquantized (the static activation scales
  only matter to FP8 matmuls), and the weights take 2-4x the memory.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

import torch

from services.common.hf_models import NOT_TEXT_KEY, ModelLoadError

log = logging.getLogger(__name__)

FP8_MIN_CAPABILITY = (8, 9)

# The last component of a key that holds a quantization scale: weight_scale_inv, weight_scale, input_scale,
# activation_scale, qscale_weight, qscale_act, k_scale, ... (anything with "scale" in its name).
_SCALE_KEY = re.compile(r"(^|\.)[^.]*scale[^.]*$")


@dataclass(frozen=True)
class QuantizationPlan:
    """How a quantized checkpoint is loaded here; `describe()` is what GetModelInfo shows."""

    method: str  # the checkpoint's quant_method, e.g. "fp8"
    dequantize: bool = False
    reason: str = ""  # why it is dequantized

    def describe(self, dtype: torch.dtype) -> str:
        """E.g. 'fp8' or 'fp8, dequantized to bfloat16 (no FP8 kernel on cpu)'."""
        if not self.dequantize:
            return self.method
        return f"{self.method}, dequantized to {str(dtype).removeprefix('torch.')} ({self.reason})"


def quantization_config_of(config) -> dict | None:
    """The checkpoint's top-level `quantization_config` as a dict, or None for an unquantized checkpoint."""
    qc = getattr(config, "quantization_config", None)
    if qc is None:
        return None
    return dict(qc) if isinstance(qc, dict) else qc.to_dict()


def fp8_kernel_problem(device: torch.device) -> str:
    """Why FP8 matmuls cannot run on `device` ('' when they can): the device, then the kernel itself.

    transformers loads its FP8 kernel lazily at the first forward pass (the `kernels` package fetches
    `kernels-community/finegrained-fp8` from the hub); finding out there would fail requests, not the load.
    """
    if device.type != "cuda":
        return f"no FP8 kernel on {device.type}"
    capability = torch.cuda.get_device_capability(device)
    if capability < FP8_MIN_CAPABILITY:
        return f"FP8 matmuls need compute capability >= 8.9, {torch.cuda.get_device_name(device)} has {capability[0]}.{capability[1]}"
    try:
        from transformers.integrations.finegrained_fp8 import FP8Linear

        layer = FP8Linear(16, 16, block_size=None, activation_scheme="static").to(device)
        layer.weight.data = torch.zeros(16, 16, device=device).to(torch.float8_e4m3fn)
        with torch.no_grad():
            layer(torch.zeros(1, 16, dtype=torch.bfloat16, device=device))
    except Exception as exc:  # noqa: BLE001 - ImportError (no `kernels`), hub errors, kernel build errors alike
        return f"the FP8 kernel does not run here: {exc}; `pip install kernels` with hub access runs FP8 natively"
    return ""


def plan_quantization(
    qc: dict | None, device: torch.device, kernel_problem=fp8_kernel_problem
) -> QuantizationPlan | None:
    """Decide how a checkpoint with quantization config `qc` loads on `device` (None: not quantized)."""
    if qc is None:
        return None
    method = str(qc.get("quant_method", "unknown"))
    if method != "fp8":
        # Other methods (bitsandbytes, compressed-tensors, ...) go to transformers as they are: it runs them
        # or raises, and a missing package becomes a ModelLoadError naming it (see `import_error`).
        return QuantizationPlan(method)
    if qc.get("dequantize"):
        return QuantizationPlan(method, dequantize=True, reason="the checkpoint asks for it")
    problem = kernel_problem(device)
    return QuantizationPlan(method, dequantize=bool(problem), reason=problem)


def carry_quantization_config(text_config, qc: dict, plan: QuantizationPlan) -> None:
    """Give the text config the checkpoint's quantization config (with the plan's dequantize flag)."""
    text_config.quantization_config = {**qc, "dequantize": True} if plan.dequantize else dict(qc)
    if plan.dequantize:
        log.warning(
            "FP8 checkpoint: %s; dequantizing the weights at load (correct, but 2-4x the weight memory)", plan.reason
        )


def check_skipped_scales(source: str, unexpected_keys, plan: QuantizationPlan | None) -> None:
    """Refuse a load that skipped quantization scales of the text model: its weights would be unscaled."""
    skipped = sorted(k for k in unexpected_keys if _SCALE_KEY.search(k) and not NOT_TEXT_KEY.match(k))
    if not skipped:
        return
    how = (
        f"the checkpoint's quantization_config ({plan.method}) did not account for them"
        if plan
        else "config.json has no quantization_config, so the weights would be read without their scales"
    )
    raise ModelLoadError(
        f"{source!r}: {len(skipped)} quantization scale(s) of the text model were not loaded (e.g. "
        f"{', '.join(skipped[:3])}): {how}; refusing to serve unscaled weights"
    )


def import_error(source: str, exc: ImportError) -> ModelLoadError:
    """A load that needs a package that is not installed (FP8 needs accelerate; kernels need `kernels`)."""
    missing = getattr(exc, "name", None)
    package = f"the Python package {missing!r}" if missing else "a Python package that is not installed"
    return ModelLoadError(
        f"cannot load {source!r}: it needs {package}: {exc}. Install it into the engine's "
        "environment (e.g. `pip install accelerate` for FP8 checkpoints) and restart"
    )
