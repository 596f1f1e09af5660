"""The offline checkpoints load through the same paths as hub checkpoints, with nothing left random."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModelForCausalLM,
    AutoModelForImageTextToText,
    AutoProcessor,
    GenerationConfig,
    Mistral3ForConditionalGeneration,
)
from transformers.models.ministral3 import Ministral3ForCausalLM

from services.common.tokenizers import load_tokenizer
from services.model_builder import build_all, build_text_model, is_tiny_stand_in, text_only_key_mapping
from services.model_builder.__main__ import main as cli_main
from services.model_builder.checkpoint import MARKER, build_atomically
from services.model_builder.vision_model import PREPROCESSOR_CONFIG

MINISTRAL = "mistralai/Ministral-3-3B-Reasoning-2512"
QWEN2_VL = "Qwen/Qwen2-VL-7B-Instruct"
# What each checkpoint holds: the hub repo's file set (tests/integration/test_stand_in_files.py says why) plus
# the builder's marker.
MINISTRAL_FILES = {
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "tekken.json",
    "chat_template.jinja",
    "SYSTEM_PROMPT.txt",
    "params.json",
    "consolidated.safetensors",
    "processor_config.json",
    MARKER,
}
FILES = {
    "text": MINISTRAL_FILES,
    "reasoning": MINISTRAL_FILES,
    "vision": {
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "vocab.json",
        "merges.txt",
        "chat_template.json",
        "preprocessor_config.json",
        MARKER,
    },
    "bench": {
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "chat_template.jinja",
        MARKER,
    },
}


@pytest.fixture(scope="session")
def built(tmp_path_factory) -> dict[str, Path]:
    """All four checkpoints, built once into a fresh directory (a few seconds)."""
    return build_all(tmp_path_factory.mktemp("models"))


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_layout_markers_and_permissions(built, tmp_path):
    assert {k: p.name for k, p in built.items()} == {
        "text": "ministral-3-tiny",
        "vision": "qwen2-vl-tiny",
        "reasoning": "ministral-3-reasoning-scripted",
        "bench": "bench-text",
    }
    for kind, path in built.items():
        assert {f.name for f in path.iterdir()} == FILES[kind]
        assert all(f.stat().st_mode & 0o777 == 0o644 for f in path.iterdir())
    dirs = sorted(p.name for p in built["text"].parent.iterdir() if p.is_dir())
    assert dirs == sorted(p.name for p in built.values())  # no temporary directories left behind
    assert is_tiny_stand_in(built["text"]) == is_tiny_stand_in(built["bench"]) == MINISTRAL
    assert is_tiny_stand_in(built["reasoning"]) == MINISTRAL
    assert is_tiny_stand_in(str(built["vision"])) == QWEN2_VL
    assert is_tiny_stand_in(tmp_path) is None
    marker = json.loads((built["bench"] / MARKER).read_text())
    assert marker["tiny_offline_stand_in"] is True and marker["variant"] == "bench"
    assert 50e6 < marker["parameters"] < 100e6


def test_second_build_is_a_no_op_and_a_forced_one_is_byte_identical(built):
    weights = built["text"] / "model.safetensors"
    before = (weights.stat().st_mtime_ns, digest(weights), digest(built["text"] / "tekken.json"))
    assert build_all(built["text"].parent, only={"text", "vision"}) == {k: built[k] for k in ("text", "vision")}
    assert weights.stat().st_mtime_ns == before[0]
    assert build_text_model(built["text"], force=True) == built["text"]
    assert weights.stat().st_mtime_ns != before[0]  # really rebuilt...
    assert (digest(weights), digest(built["text"] / "tekken.json")) == before[1:]  # ...from fixed seeds


def test_a_checkpoint_from_an_older_builder_is_rebuilt(built, tmp_path):
    target = build_text_model(tmp_path / "m")
    marker = json.loads((target / MARKER).read_text())
    (target / MARKER).write_text(json.dumps({**marker, "builder_version": marker["builder_version"] - 1}))
    (target / "stale.txt").write_text("from the old build")
    build_text_model(target)
    assert not (target / "stale.txt").exists()
    assert json.loads((target / MARKER).read_text()) == marker


def test_a_failed_build_leaves_no_checkpoint_and_no_debris(tmp_path):
    def write(out: Path) -> dict:
        (out / "model.safetensors").write_bytes(b"half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):
        build_atomically(tmp_path / "m", "x/y", write)
    assert [p.name for p in tmp_path.iterdir()] == [".m.lock"]


def test_unknown_kinds_are_refused(tmp_path, capsys):
    with pytest.raises(ValueError, match="nonsense"):
        build_all(tmp_path, only={"text", "nonsense"})
    assert cli_main(["--out", str(tmp_path), "--only", "nonsense"]) == 2
    assert "unknown checkpoint kind" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_cli_prints_each_checkpoint(built, capsys):
    assert cli_main(["--out", str(built["text"].parent), "--only", "text,vision"]) == 0
    assert capsys.readouterr().out.splitlines() == [f"text: {built['text']}", f"vision: {built['vision']}"]


def test_ministral3_has_the_real_architecture_and_hub_weight_names(built):
    config = AutoConfig.from_pretrained(built["text"])
    assert config.architectures == ["Mistral3ForConditionalGeneration"] and config.model_type == "mistral3"
    assert config.text_config.model_type == "ministral3" and config.vision_config.model_type == "pixtral"
    assert config.text_config.rope_parameters["rope_type"] == "yarn"
    assert config.text_config.rope_parameters["llama_4_scaling_beta"] == 0.1
    assert config.tie_word_embeddings is True and config.text_config.tie_word_embeddings is True
    with safe_open(built["text"] / "model.safetensors", "pt") as weights:
        prefixes = {".".join(k.split(".")[:2]) for k in weights.keys()}  # noqa: SIM118 - safe_open is not iterable
    assert prefixes == {
        "language_model.model",
        "vision_tower.ln_pre",
        "vision_tower.patch_conv",
        "vision_tower.transformer",
        "multi_modal_projector.linear_1",
        "multi_modal_projector.linear_2",
        "multi_modal_projector.norm",
        "multi_modal_projector.patch_merger",
    }
    _, info = Mistral3ForConditionalGeneration.from_pretrained(built["text"], output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]


def test_text_only_load_leaves_nothing_random_and_matches_the_full_model(built):
    config = AutoConfig.from_pretrained(built["text"])
    text, info = Ministral3ForCausalLM.from_pretrained(
        built["text"], config=config.text_config, key_mapping=text_only_key_mapping(), output_loading_info=True
    )
    assert not info["missing_keys"] and not info["mismatched_keys"]
    assert {k.split(".")[0] for k in info["unexpected_keys"]} == {"vision_tower", "multi_modal_projector"}
    full = Mistral3ForConditionalGeneration.from_pretrained(built["text"])
    ids = torch.tensor([[1, 3, 1300, 1400, 2500, 4]])
    with torch.no_grad():
        torch.testing.assert_close(text(ids).logits, full(input_ids=ids).logits)
    out = text.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=4, do_sample=False)
    assert out.shape == (1, 10)


def test_text_engine_loader_serves_it_and_refuses_missing_weights(built, tmp_path):
    from services.common.hf_models import ModelLoadError
    from services.text_engine.engine.loader import load_text_model

    loaded = load_text_model(str(built["text"]), dtype="f32", device="cpu")
    assert type(loaded.model).__name__ == "Ministral3ForCausalLM" and loaded.stand_in_for == MINISTRAL
    broken = tmp_path / "broken"
    shutil.copytree(built["text"], broken)
    weights = load_file(broken / "model.safetensors")
    del weights[next(k for k in weights if "layers.1.mlp.down_proj" in k)]
    save_file(weights, broken / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ModelLoadError, match="missing"):
        load_text_model(str(broken), dtype="f32", device="cpu")


@pytest.mark.parametrize("kind", ["text", "vision", "bench"])
@pytest.mark.parametrize("text", ["Hello, world", "café 東京 🙂 naïve 👨‍👩‍👧 مرحبا", "tabs\tand\nnewlines  \x00\x7f"])
def test_byte_level_tokenizers_round_trip_any_text(built, kind, text):
    tok = load_tokenizer(str(built[kind]))
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.unk_token_id not in ids
    assert tok.decode(ids) == text


def test_ministral3_special_tokens_and_stop_ids(built):
    tok = load_tokenizer(str(built["text"]))
    names = (
        "<unk>",
        "<s>",
        "</s>",
        "[INST]",
        "[/INST]",
        "[IMG]",
        "<pad>",
        "[SYSTEM_PROMPT]",
        "[/SYSTEM_PROMPT]",
        "[THINK]",
        "[/THINK]",
    )
    ids = {t: tok.convert_tokens_to_ids(t) for t in names}
    assert list(ids.values()) == [0, 1, 2, 3, 4, 10, 11, 17, 18, 34, 35]  # the real tekken ids
    config, generation = AutoConfig.from_pretrained(built["text"]), GenerationConfig.from_pretrained(built["text"])
    assert config.image_token_index == ids["[IMG]"] and config.text_config.vocab_size == len(tok) == 4096
    assert (tok.bos_token, tok.eos_token, tok.pad_token, tok.unk_token) == ("<s>", "</s>", "<pad>", "<unk>")
    assert (generation.bos_token_id, generation.eos_token_id, generation.pad_token_id) == (1, 2, 11)
    think = tok.tokenize("[THINK]ok[/THINK]")
    assert think[0] == "[THINK]" and think[-1] == "[/THINK]" and len(think) < 6  # never split into pieces


def test_ministral3_chat_template(built):
    # The template's rules in detail: tests/integration/test_stand_in_files.py. Here: it is the one loaded.
    tok = load_tokenizer(str(built["text"]))
    render = lambda messages, **kw: tok.apply_chat_template(messages, tokenize=False, **kw)  # noqa: E731
    system_user = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello, how are you?"}]
    assert render(system_user, add_generation_prompt=True) == (
        "<s>[SYSTEM_PROMPT]Be brief.[/SYSTEM_PROMPT][INST]Hello, how are you?[/INST]"
    )
    default = (built["text"] / "SYSTEM_PROMPT.txt").read_text()
    assert render([{"role": "user", "content": "Hi"}]) == f"<s>[SYSTEM_PROMPT]{default}[/SYSTEM_PROMPT][INST]Hi[/INST]"
    ids = tok.apply_chat_template(system_user, add_generation_prompt=True, return_dict=False)
    assert ids[:2] == [1, 17] and ids[-1] == 4 and ids.count(1) == 1
    with pytest.raises(Exception, match="roles are supported"):
        render([{"role": "user", "content": "x"}, {"role": "narrator", "content": "x"}])


def test_qwen2_vl_tokens_template_and_image_processor(built):
    path = built["vision"]
    tok, config = load_tokenizer(str(path)), AutoConfig.from_pretrained(path)
    assert type(tok).__name__ == "Qwen2Tokenizer"  # tokenizer_config.json's class, as in the 7B repo
    assert config.architectures == ["Qwen2VLForConditionalGeneration"] and config.model_type == "qwen2_vl"
    for token, key in [
        ("<|image_pad|>", "image_token_id"),
        ("<|video_pad|>", "video_token_id"),
        ("<|vision_start|>", "vision_start_token_id"),
        ("<|vision_end|>", "vision_end_token_id"),
    ]:
        assert tok.convert_tokens_to_ids(token) == getattr(config, key)
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>" and tok.bos_token is None
    assert GenerationConfig.from_pretrained(path).eos_token_id == [tok.eos_token_id, tok.pad_token_id]
    text = tok.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe"}]}],
        add_generation_prompt=True,
        tokenize=False,
    )
    assert text == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
        "<|vision_start|><|image_pad|><|vision_end|>Describe<|im_end|>\n<|im_start|>assistant\n"
    )
    assert json.loads((path / "preprocessor_config.json").read_text()) == PREPROCESSOR_CONFIG
    assert type(AutoImageProcessor.from_pretrained(path)).__name__.startswith("Qwen2VLImageProcessor")


def test_qwen2_vl_loads_and_generates_from_an_image(built):
    path = built["vision"]
    model, info = AutoModelForImageTextToText.from_pretrained(path, dtype=torch.float32, output_loading_info=True)
    assert type(model).__name__ == "Qwen2VLForConditionalGeneration"
    assert not info["missing_keys"] and not info["unexpected_keys"]
    tok, processor = load_tokenizer(str(path)), AutoImageProcessor.from_pretrained(path)
    pixels = processor(images=[Image.new("RGB", (64, 48), (200, 30, 30))], return_tensors="pt")
    image_tokens = int(pixels["image_grid_thw"].prod()) // 4  # one token per 2x2 merged patches
    prompt = tok.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Hi"}]}],
        add_generation_prompt=True,
        tokenize=False,
    )
    inputs = tok(prompt.replace("<|image_pad|>", "<|image_pad|>" * image_tokens), return_tensors="pt")
    out = model.generate(**inputs, **pixels, max_new_tokens=3, do_sample=False, min_new_tokens=3)
    assert out.shape == (1, inputs["input_ids"].shape[1] + 3)


def test_bench_model_is_a_plain_causal_lm_that_transformers_serve_can_load(built):
    model, info = AutoModelForCausalLM.from_pretrained(built["bench"], output_loading_info=True)
    assert type(model).__name__ == "Ministral3ForCausalLM" and not info["missing_keys"]
    assert 50e6 < sum(p.numel() for p in model.parameters()) < 100e6
    # `transformers serve` loads tokenizer and chat template through AutoProcessor.
    processor = AutoProcessor.from_pretrained(built["bench"])
    assert processor.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False) == "<s>[INST]Hi[/INST]"
    assert GenerationConfig.from_pretrained(built["bench"]).eos_token_id == processor.eos_token_id == 2
