"""The text engine's loader on checkpoints laid out as the hub's are: FP8 (the Instruct sibling), tied
embeddings (the 3B stores no lm_head.weight), and the refusals that keep a load from serving garbage.

Each checkpoint is made in the test's tmp dir from the tiny Ministral-3 stand-in (its tokenizer files are
kept); references are computed from the checkpoint's tensors by hand, not through the loader under test.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import grpc
import openai
import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoConfig, Mistral3ForConditionalGeneration
from transformers.models.ministral3 import Ministral3ForCausalLM

from services.common.hf_models import TEXT_ONLY_KEY_MAPPING, ModelLoadError
from services.common.pb.proxyvision.v1 import common_pb2, text_engine_pb2 as pb, text_engine_pb2_grpc
from services.model_builder.fp8_model import FP8, FP8_HUB_ID, dequantize_fp8, write_fp8_copy
from services.text_engine.engine.loader import load_text_model
from tests.support.fake_text_engine import STAND_IN
from tests.support.models_yaml import TEXT_MODEL, ModelsYaml, tiny
from tests.support.processes import wait_grpc_serving
from tests.support.stack import gateway_in_process, start_text_engine

IDS = torch.tensor([[1, 3, 40, 41, 42, 300, 7, 4, 500, 2]])


def _text_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A Mistral3 checkpoint's language-model tensors under Ministral3ForCausalLM's names."""
    out = {}
    for key, value in state.items():
        for pattern, repl in TEXT_ONLY_KEY_MAPPING.items():
            if re.match(pattern, key):
                out[re.sub(pattern, repl, key)] = value
                break
    return out


def _logits(model, ids=IDS) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids).logits.float()


def _rebuild(tiny: Path, out: Path, *, top_tied: bool, text_tied: bool) -> Path:
    """The stand-in's files with fresh weights of the same shapes and the given tie flags (seeded)."""
    shutil.copytree(tiny, out)
    for shard in out.glob("*.safetensors"):
        shard.unlink()
    config = AutoConfig.from_pretrained(tiny)
    config.tie_word_embeddings = top_tied
    config.text_config.tie_word_embeddings = text_tied
    torch.manual_seed(3)
    Mistral3ForConditionalGeneration(config).save_pretrained(out)
    return out


# FP8 ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fp8_checkpoint(tiny_models, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("fp8") / "ministral-3-fp8"
    info = write_fp8_copy(tiny_models["text"], out)
    assert info["quantized_linear_layers"] == 7 * AutoConfig.from_pretrained(out).text_config.num_hidden_layers
    return out


def test_fp8_checkpoint_has_the_hub_layout(fp8_checkpoint):
    state = load_file(fp8_checkpoint / "model.safetensors")
    q_proj = next(k for k in state if k.endswith("layers.0.self_attn.q_proj.weight"))
    stem = q_proj.removesuffix("weight")
    assert state[q_proj].dtype == FP8
    assert state[stem + "weight_scale_inv"].shape == () and state[stem + "activation_scale"].shape == ()
    embed = next(k for k in state if k.endswith("embed_tokens.weight"))
    assert state[embed].dtype == torch.float32  # embeddings, norms, vision tower and lm_head stay unquantized
    assert all(v.dtype != FP8 for k, v in state.items() if "vision_tower" in k or "lm_head" in k)
    config = json.loads((fp8_checkpoint / "config.json").read_text())
    assert config["quantization_config"]["quant_method"] == "fp8" and "quantization_config" not in config["text_config"]


def test_fp8_on_cpu_is_dequantized_exactly(fp8_checkpoint):
    loaded = load_text_model(str(fp8_checkpoint), dtype="f32", device="cpu")
    assert loaded.quantization == "fp8, dequantized to float32 (no FP8 kernel on cpu)"
    assert loaded.stand_in_for == FP8_HUB_ID
    # The reference: the checkpoint's FP8 values times their scales, put into a plain model by hand.
    reference = Ministral3ForCausalLM(loaded.text_config)
    state = _text_state(dequantize_fp8(load_file(fp8_checkpoint / "model.safetensors")))
    if "lm_head.weight" not in state:
        state["lm_head.weight"] = state["model.embed_tokens.weight"]
    reference.load_state_dict(state, strict=True)
    reference.eval()
    served = _logits(loaded.model)
    torch.testing.assert_close(served, _logits(reference), rtol=1e-5, atol=1e-5)


def test_fp8_logits_stay_near_the_unquantized_model(fp8_checkpoint, tiny_models):
    """Not garbage either: FP8 rounding is all that separates it from the model it was quantized from."""
    fp8 = _logits(load_text_model(str(fp8_checkpoint), dtype="f32", device="cpu").model)
    full = _logits(load_text_model(str(tiny_models["text"]), dtype="f32", device="cpu").model)
    assert not torch.equal(fp8, full)
    assert (fp8 - full).abs().max() < 0.1 * full.abs().max()


def test_fp8_weights_without_their_quantization_config_are_refused(fp8_checkpoint, tmp_path):
    """The failure the text-only path used to hide: FP8 values read as numbers, scales skipped, nothing missing."""
    stripped = tmp_path / "no-quantization-config"
    shutil.copytree(fp8_checkpoint, stripped)
    config = json.loads((stripped / "config.json").read_text())
    del config["quantization_config"]
    (stripped / "config.json").write_text(json.dumps(config))
    with pytest.raises(
        ModelLoadError,
        match=r"quantization scale\(s\) of the text model were not loaded.*"
        r"no quantization_config.*unscaled weights",
    ):
        load_text_model(str(stripped), dtype="f32", device="cpu")


def test_fp8_without_accelerate_names_the_missing_package(fp8_checkpoint, monkeypatch):
    import transformers.quantizers.quantizer_finegrained_fp8 as fp8_quantizer

    monkeypatch.setattr(fp8_quantizer, "is_accelerate_available", lambda: False)
    with pytest.raises(ModelLoadError, match=r"pip install accelerate") as info:
        load_text_model(str(fp8_checkpoint), dtype="f32", device="cpu")
    assert isinstance(info.value.__cause__, ImportError) and "requires accelerate" in str(info.value)


@pytest.fixture(scope="module")
def dequantized_checkpoint(fp8_checkpoint, tmp_path_factory) -> Path:
    """The FP8 checkpoint's reference twin: weight x scale computed by hand, saved unquantized."""
    out = tmp_path_factory.mktemp("dequantized") / "ministral-3-dequantized"
    shutil.copytree(fp8_checkpoint, out)
    save_file(
        dequantize_fp8(load_file(fp8_checkpoint / "model.safetensors")),
        out / "model.safetensors",
        metadata={"format": "pt"},
    )
    config = json.loads((out / "config.json").read_text())
    del config["quantization_config"]
    (out / "config.json").write_text(json.dumps(config))
    return out


def _serve(checkpoint: Path, tmp: Path):
    path = tiny({"text": checkpoint}).write(tmp / "models.yaml")
    return start_text_engine(path, tmp, wait=False)


def _greedy(service, text: str) -> tuple[list[str], int, common_pb2.ModelInfo]:
    wait_grpc_serving(service)
    with grpc.insecure_channel(service.address) as channel:
        stub = text_engine_pb2_grpc.TextEngineStub(channel)
        request = pb.GenerateRequest(
            model=TEXT_MODEL,
            messages=[pb.ChatMessage(role="user", content=text)],
            sampling=pb.SamplingParams(max_tokens=24, temperature=0),
        )
        run = list(stub.Generate(request, timeout=60))
        info = stub.GetModelInfo(common_pb2.GetModelInfoRequest())
    # The text and the final event; not the deltas one by one: how tokens group into messages depends on timing.
    text = "".join(r.delta.text for r in run if r.HasField("delta"))
    return [str(run[0]), text, str(run[-1])], run[-1].finished.usage.completion_tokens, info


def test_the_served_fp8_model_answers_as_its_dequantized_twin(fp8_checkpoint, dequantized_checkpoint, tmp_path):
    outputs = []
    for name, checkpoint in (("fp8", fp8_checkpoint), ("twin", dequantized_checkpoint)):
        (tmp_path / name).mkdir()
        service = _serve(checkpoint, tmp_path / name)
        try:
            outputs.append(_greedy(service, "Tell me about FP8 please."))
        finally:
            assert service.stop() == 0, service.log_text()[-3000:]
        if name == "fp8":
            assert "dequantizing the weights at load" in service.log_text()
    (fp8_events, fp8_tokens, fp8_info), (twin_events, twin_tokens, twin_info) = outputs
    assert (
        fp8_info.quantization == "fp8, dequantized to float32 (no FP8 kernel on cpu)" and twin_info.quantization == ""
    )
    assert fp8_tokens > 0 and (fp8_events, fp8_tokens) == (twin_events, twin_tokens)


# Tied embeddings -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("text_tied", [True, False], ids=["both-flags", "top-level-flag-only"])
def test_tied_embeddings_use_the_embedding_matrix_as_output_projection(tiny_models, tmp_path, text_tied):
    tied = _rebuild(tiny_models["text"], tmp_path / "tied", top_tied=True, text_tied=text_tied)
    state = load_file(tied / "model.safetensors")
    assert not any("lm_head" in k for k in state)  # as in the hub's 3B: no lm_head.weight stored
    loaded = load_text_model(str(tied), dtype="f32", device="cpu")
    assert loaded.text_config.tie_word_embeddings is True
    # Reference with explicit weights: the full model's decoder states times the stored embedding matrix.
    embed = next(
        v
        for k, v in state.items()
        if k.endswith("language_model.model.embed_tokens.weight")
        or k.endswith("model.language_model.embed_tokens.weight")
    )
    full = Mistral3ForConditionalGeneration.from_pretrained(tied, dtype=torch.float32).eval()
    with torch.no_grad():
        hidden = full.model.language_model(input_ids=IDS).last_hidden_state
    torch.testing.assert_close(_logits(loaded.model), hidden @ embed.T, rtol=1e-5, atol=1e-5)


def test_untied_checkpoint_without_lm_head_is_refused(tiny_models, tmp_path):
    untied = _rebuild(tiny_models["text"], tmp_path / "untied", top_tied=False, text_tied=False)
    shard = untied / "model.safetensors"
    state = load_file(shard)
    assert any("lm_head" in k for k in state)
    save_file({k: v for k, v in state.items() if "lm_head" not in k}, shard, metadata={"format": "pt"})
    with pytest.raises(ModelLoadError, match=r"missing from the checkpoint.*lm_head\.weight"):
        load_text_model(str(untied), dtype="f32", device="cpu")


def test_a_text_only_load_of_a_multimodal_checkpoint_reports_nothing_unexpected(tiny_models, caplog):
    # The vision tower is left out on purpose; transformers' LOAD REPORT (a warning table of every skipped key)
    # would say otherwise at every normal start. The plain class, loaded the same way, shows the report is seen.
    source = str(tiny_models["text"])
    config = AutoConfig.from_pretrained(source).text_config
    with caplog.at_level("WARNING", logger="transformers"):
        Ministral3ForCausalLM.from_pretrained(source, config=config, key_mapping=TEXT_ONLY_KEY_MAPPING)
        assert "LOAD REPORT" in caplog.text and "vision_tower" in caplog.text
        caplog.clear()
        loaded = load_text_model(source, dtype="f32", device="cpu")
    assert not [r for r in caplog.records if r.levelname == "WARNING"], caplog.text
    assert type(loaded.model).__name__ == "Ministral3ForCausalLM"


# Sampling defaults through the real engine and gateway ---------------------------------------------------
CHECKPOINT_GENERATION = {
    "bos_token_id": 1,
    "eos_token_id": 2,
    "pad_token_id": 11,
    "do_sample": True,
    "temperature": 0.6,
    "top_p": 0.9,
    "top_k": 20,
    "max_new_tokens": 48,
}


@pytest.fixture(scope="module")
def engine_with_defaults(tiny_models, tmp_path_factory):
    """A text engine on a copy of the stand-in with its own generation_config.json; models.yaml sets only
    temperature (0: greedy, so the yaml default is visibly applied)."""
    tmp = tmp_path_factory.mktemp("sampling")
    checkpoint = tmp / "checkpoint"
    shutil.copytree(tiny_models["text"], checkpoint)
    (checkpoint / "generation_config.json").write_text(json.dumps(CHECKPOINT_GENERATION))
    config = tiny({**tiny_models, "text": checkpoint})
    config.entry(TEXT_MODEL)["sampling"] = {"temperature": 0.0}
    service = start_text_engine(config.write(tmp / "models.yaml"), tmp)
    try:
        yield service
    finally:
        assert service.stop() == 0, service.log_text()[-3000:]


EXPECTED_DEFAULTS = {
    "temperature": 0.0,
    "top_p": 0.9,
    "top_k": 20,
    "max_tokens": 48,
    "presence_penalty": 0.0,
    "frequency_penalty": 0.0,
    "repetition_penalty": 1.0,
    "min_p": 0.0,
}
EXPECTED_SOURCES = {
    "temperature": "models.yaml",
    "top_p": "generation_config.json",
    "top_k": "generation_config.json",
    "max_tokens": "generation_config.json",
    "presence_penalty": "default",
    "frequency_penalty": "default",
    "repetition_penalty": "default",
    "min_p": "default",
}


def test_get_model_info_shows_the_effective_defaults(engine_with_defaults):
    with grpc.insecure_channel(engine_with_defaults.address) as channel:
        stub = text_engine_pb2_grpc.TextEngineStub(channel)
        info = stub.GetModelInfo(common_pb2.GetModelInfoRequest())
        defaults = info.sampling_defaults
        assert defaults.temperature == 0.0 and defaults.HasField("temperature")  # set to 0, not unset
        assert defaults.top_p == pytest.approx(0.9) and (defaults.top_k, defaults.max_tokens) == (20, 48)
        assert dict(defaults.sources) == EXPECTED_SOURCES
        assert info.quantization == ""
        # A request without parameters gets them: greedy (same text twice) and at most 48 tokens.
        request = pb.GenerateRequest(model=TEXT_MODEL, messages=[pb.ChatMessage(role="user", content="Hello")])
        runs = [list(stub.Generate(request, timeout=60)) for _ in range(2)]
    texts = ["".join(r.delta.text for r in run if r.HasField("delta")) for run in runs]
    assert texts[0] == texts[1] and 0 < runs[0][-1].finished.usage.completion_tokens <= 48
    assert "top_p=0.9 (generation_config.json)" in engine_with_defaults.log_text()


async def test_v1_models_shows_the_effective_defaults(engine_with_defaults):
    config = ModelsYaml().model(TEXT_MODEL, hf_id=STAND_IN, endpoint=engine_with_defaults.address)
    async with gateway_in_process(config.gateway(request_timeout_secs=10.0)) as url:
        client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="unused")
        models = (await client.models.list()).data
        await client.close()
    model = next(m for m in models if m.id == TEXT_MODEL)
    assert model.object == "model" and model.owned_by == "proxyvision"  # still an OpenAI model object
    assert model.model_extra["sampling_defaults"] == {**EXPECTED_DEFAULTS, "sources": EXPECTED_SOURCES}
    assert "quantization" not in model.model_extra
