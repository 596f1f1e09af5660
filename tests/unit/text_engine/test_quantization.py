"""How a quantized checkpoint is loaded: the FP8 decision per device, the refusal of skipped scales, and
missing packages named (the loading itself is tested in tests/integration/test_text_loading.py)."""

from __future__ import annotations

import pytest
import torch

from services.common.hf_models import ModelLoadError
from services.model_builder.fp8_model import QUANTIZATION_CONFIG, dequantize_fp8, quantize_fp8
from services.text_engine.engine.quantization import (
    QuantizationPlan,
    carry_quantization_config,
    check_skipped_scales,
    fp8_kernel_problem,
    import_error,
    plan_quantization,
)

CUDA = torch.device("cuda")


def test_unquantized_checkpoint_has_no_plan():
    assert plan_quantization(None, torch.device("cpu")) is None


def test_fp8_on_cpu_is_dequantized_with_the_reason():
    assert fp8_kernel_problem(torch.device("cpu")) == "no FP8 kernel on cpu"
    plan = plan_quantization(QUANTIZATION_CONFIG, torch.device("cpu"))
    assert plan == QuantizationPlan("fp8", dequantize=True, reason="no FP8 kernel on cpu")
    assert plan.describe(torch.bfloat16) == "fp8, dequantized to bfloat16 (no FP8 kernel on cpu)"


def test_fp8_on_a_gpu_that_runs_it_stays_fp8():
    plan = plan_quantization(QUANTIZATION_CONFIG, CUDA, kernel_problem=lambda device: "")
    assert plan == QuantizationPlan("fp8") and plan.describe(torch.bfloat16) == "fp8"


def test_fp8_on_a_gpu_without_a_working_kernel_is_dequantized():
    problem = "FP8 matmuls need compute capability >= 8.9, Tesla T4 has 7.5"
    plan = plan_quantization(QUANTIZATION_CONFIG, CUDA, kernel_problem=lambda device: problem)
    assert plan.dequantize and plan.reason == problem


def test_checkpoint_asking_for_dequantization_gets_it_without_probing():
    def probe(device):
        raise AssertionError("not probed")

    plan = plan_quantization({**QUANTIZATION_CONFIG, "dequantize": True}, CUDA, kernel_problem=probe)
    assert plan.dequantize


def test_other_methods_are_passed_through_to_transformers():
    plan = plan_quantization({"quant_method": "bitsandbytes", "load_in_4bit": True}, CUDA, kernel_problem=None)
    assert plan == QuantizationPlan("bitsandbytes") and not plan.dequantize


def test_carried_config_sets_the_dequantize_flag_only_when_planned():
    class TextConfig:
        pass

    text = TextConfig()
    carry_quantization_config(text, QUANTIZATION_CONFIG, QuantizationPlan("fp8", dequantize=True, reason="cpu"))
    assert text.quantization_config == {**QUANTIZATION_CONFIG, "dequantize": True}
    carry_quantization_config(text, QUANTIZATION_CONFIG, QuantizationPlan("fp8"))
    assert text.quantization_config == QUANTIZATION_CONFIG and "dequantize" not in QUANTIZATION_CONFIG


VISION_SKIPPED = [
    "vision_tower.transformer.layers.0.attention.q_proj.weight",
    "multi_modal_projector.linear_1.weight",
    "model.vision_tower.ln_pre.weight_scale_inv",
]


def test_skipped_vision_weights_and_their_scales_are_fine():
    check_skipped_scales("m", VISION_SKIPPED, None)


@pytest.mark.parametrize(
    "key",
    [
        "model.layers.0.self_attn.q_proj.weight_scale_inv",
        "model.layers.3.mlp.down_proj.activation_scale",
        "model.layers.1.self_attn.k_proj.input_scale",
        "lm_head.weight_scale",
        "layers.0.attention.wq.qscale_weight",
    ],
)
def test_a_skipped_text_scale_fails_the_load(key):
    with pytest.raises(ModelLoadError, match=r"'m': 1 quantization scale\(s\).*no quantization_config.*unscaled"):
        check_skipped_scales("m", [*VISION_SKIPPED, key], None)
    with pytest.raises(ModelLoadError, match=r"quantization_config \(fp8\) did not account for them"):
        check_skipped_scales("m", [key], QuantizationPlan("fp8"))


def test_import_error_names_the_package_and_the_fix():
    error = import_error("repo/x", ModuleNotFoundError("No module named 'accelerate'", name="accelerate"))
    assert "needs the Python package 'accelerate'" in str(error) and "pip install" in str(error)
    error = import_error(
        "repo/x", ImportError("Loading an FP8 quantized model requires accelerate (`pip install accelerate`)")
    )
    assert "requires accelerate (`pip install accelerate`)" in str(error) and "restart" in str(error)


def test_fp8_round_trip_is_the_weight_up_to_fp8_rounding():
    torch.manual_seed(0)
    weight = torch.randn(32, 16)
    values, scale = quantize_fp8(weight)
    assert values.dtype == torch.float8_e4m3fn and scale.shape == () and values.float().abs().max() <= 448
    restored = dequantize_fp8(
        {"a.weight": values, "a.weight_scale_inv": scale, "a.activation_scale": torch.tensor(1.0)}
    )
    assert set(restored) == {"a.weight"}
    # e4m3 keeps 3 mantissa bits: relative error at most 2**-4 per element (plus underflow near zero)
    assert torch.allclose(restored["a.weight"], weight, rtol=2**-4, atol=float(scale) * 2**-6)


def test_fp8_kernel_problem_on_an_old_gpu_names_the_capability(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 6))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA A10")
    assert fp8_kernel_problem(CUDA) == "FP8 matmuls need compute capability >= 8.9, NVIDIA A10 has 8.6"
