"""The stand-ins carry their hub repos' files and key layouts, and load through the engines' own loaders.

Hub file sets (from the public repos; docs/configuration.md "Real models" says what differs and why it does not matter):
- mistralai/Ministral-3-3B-Reasoning-2512: config.json, model.safetensors, generation_config.json,
  tekken.json (no tokenizer.json), chat_template.jinja, SYSTEM_PROMPT.txt, processor_config.json,
  params.json, consolidated.safetensors;
- Qwen/Qwen2-VL-7B-Instruct: config.json (flat), model weights with the pre-transformers-5 names,
  generation_config.json, tokenizer.json, tokenizer_config.json, vocab.json, merges.txt,
  chat_template.json, preprocessor_config.json;
- Qwen/Qwen3-0.6B: config.json (transformers 4.51 layout), model.safetensors (bf16, tied: no lm_head),
  generation_config.json, tokenizer.json, tokenizer_config.json (added tokens at 151643..151668, the
  real chat template), vocab.json, merges.txt.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file
from transformers import AutoImageProcessor, AutoModelForCausalLM, GenerationConfig, RepetitionPenaltyLogitsProcessor

from services.common.hf_models import TINY_MARKER
from services.model_builder import build_all
from services.model_builder.scripted import SCRIPTED_ANSWER, SCRIPTED_COMPLETION_IDS, SCRIPTED_REASONING
from services.text_engine.engine.loader import load_text_model
from services.text_engine.engine.output.parsers import parser_for
from services.vision_engine.captioner.loader import load_vision_model
from services.vision_engine.captioner.prompts import render_prompt
from tests.support.processes import REPO_ROOT


@pytest.fixture(scope="module")
def stand_ins() -> dict[str, Path]:
    return build_all(REPO_ROOT / "models" / "tiny", only={"text", "vision", "reasoning"})


@pytest.fixture(scope="module")
def ministral(stand_ins):
    return load_text_model(str(stand_ins["text"]), dtype="f32", device="cpu")


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


# --- Ministral-3 ------------------------------------------------------------------------------------------


def test_ministral3_config_weights_and_native_files(stand_ins):
    path = stand_ins["text"]
    config = read_json(path / "config.json")
    text = config["text_config"]
    assert (config["model_type"], text["model_type"], config["vision_config"]["model_type"]) == (
        "mistral3",
        "ministral3",
        "pixtral",
    )
    assert config["tie_word_embeddings"] is True and text["tie_word_embeddings"] is True
    rope = text["rope_parameters"]
    assert rope["rope_type"] == "yarn" and rope["factor"] == 16.0 and rope["llama_4_scaling_beta"] == 0.1
    with safe_open(path / "model.safetensors", "pt") as weights:
        names = set(weights.keys())
    assert not [n for n in names if "lm_head" in n]  # tied: the hub stores no lm_head.weight either
    assert "language_model.model.embed_tokens.weight" in names
    params = read_json(path / "params.json")
    assert params["tied_embeddings"] is True and params["llama_4_scaling"]["beta"] == 0.1
    assert (params["dim"], params["n_layers"], params["vocab_size"]) == (
        text["hidden_size"],
        text["num_hidden_layers"],
        text["vocab_size"],
    )
    native = load_file(path / "consolidated.safetensors")
    hf = load_file(path / "model.safetensors")
    assert torch.equal(native["tok_embeddings.weight"], hf["language_model.model.embed_tokens.weight"])
    assert torch.equal(
        native["layers.1.feed_forward.w2.weight"], hf["language_model.model.layers.1.mlp.down_proj.weight"]
    )
    assert len(native) == len(hf)
    # The tower and the projector under the names mistral-inference and vLLM's Pixtral read.
    for native_name, hf_name in (
        (
            "vision_encoder.transformer.layers.0.attention.wq.weight",
            "vision_tower.transformer.layers.0.attention.q_proj.weight",
        ),
        (
            "vision_encoder.transformer.layers.0.feed_forward.w1.weight",
            "vision_tower.transformer.layers.0.feed_forward.gate_proj.weight",
        ),
        ("pre_mm_projector_norm.weight", "multi_modal_projector.norm.weight"),
        ("patch_merger.merging_layer.weight", "multi_modal_projector.patch_merger.merging_layer.weight"),
        ("vision_language_adapter.w_in.weight", "multi_modal_projector.linear_1.weight"),
        ("vision_language_adapter.w_out.weight", "multi_modal_projector.linear_2.weight"),
    ):
        assert torch.equal(native[native_name], hf[hf_name]), native_name
    vision = params["vision_encoder"]
    assert vision["image_size"] == vision["max_image_size"] == config["vision_config"]["image_size"]
    assert (vision["mm_projector_id"], vision["add_pre_mm_projector_layer_norm"]) == ("patch_merge", True)
    assert (vision["image_token_id"], vision["image_break_token_id"], vision["image_end_token_id"]) == (10, 12, 13)


def test_ministral3_generation_config_is_the_cards(stand_ins):
    generation = GenerationConfig.from_pretrained(stand_ins["text"])
    assert (generation.bos_token_id, generation.eos_token_id, generation.pad_token_id) == (1, 2, 11)
    assert generation.do_sample is True and (generation.temperature, generation.top_p) == (0.7, 0.95)


def test_tied_embeddings_give_the_logits_of_explicit_weights(ministral, stand_ins):
    model = ministral.model
    embed = load_file(stand_ins["text"] / "model.safetensors")["language_model.model.embed_tokens.weight"]
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    ids = torch.tensor([[1, 3, 1300, 1400, 2500, 4]])
    with torch.no_grad():
        out = model(ids, output_hidden_states=True)
    final = out.hidden_states[-1]  # after the final norm
    torch.testing.assert_close(out.logits, final @ embed.T)


def test_the_loader_ignores_the_native_files(stand_ins, ministral, tmp_path):
    broken = tmp_path / "m"
    shutil.copytree(stand_ins["text"], broken)
    (broken / "consolidated.safetensors").write_bytes(b"not a safetensors file")
    (broken / "params.json").write_text("{not json")
    loaded = load_text_model(str(broken), dtype="f32", device="cpu")
    ids = torch.tensor([[1, 3, 1300, 4]])
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(ids).logits, ministral.model(ids).logits)


def render(tokenizer, messages, **kwargs) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, **kwargs)


def test_the_default_system_prompt_is_system_prompt_txt_and_a_system_message_replaces_it(ministral, stand_ins):
    tok, default = ministral.tokenizer, (stand_ins["text"] / "SYSTEM_PROMPT.txt").read_text()
    assert default.startswith("# HOW YOU SHOULD THINK AND ANSWER") and "[THINK]" in default
    user = [{"role": "user", "content": "Hi"}]
    assert render(tok, user) == f"<s>[SYSTEM_PROMPT]{default}[/SYSTEM_PROMPT][INST]Hi[/INST]"
    assert render(tok, user, add_generation_prompt=True) == render(tok, user)  # the model goes on after [/INST]
    own = [
        {"role": "system", "content": [{"type": "text", "text": "Be "}, {"type": "thinking", "thinking": "x"}]},
        *user,
    ]
    assert render(tok, own) == "<s>[SYSTEM_PROMPT]Be [THINK]x[/THINK][/SYSTEM_PROMPT][INST]Hi[/INST]"


def test_thinking_tools_tool_calls_and_tool_results_render_as_the_real_template(ministral):
    tools = [{"type": "function", "function": {"name": "add", "parameters": {"type": "object"}}}]
    messages = [
        {"role": "system", "content": "S"},
        {
            "role": "user",
            "content": [{"type": "text", "text": "Look"}, {"type": "image_url", "image_url": {"url": "u"}}],
        },
        {
            "role": "assistant",
            "content": [{"type": "thinking", "thinking": "hmm"}, {"type": "text", "text": "Ok"}],
            "tool_calls": [
                {"id": "1", "type": "function", "function": {"name": "add", "arguments": {"a": 1}}},
                {"id": "2", "type": "function", "function": {"name": "now", "arguments": ""}},
            ],
        },
        {"role": "tool", "tool_call_id": "1", "content": "2"},
        {"role": "assistant", "content": "Two"},
        {"role": "user", "content": "Thanks"},
    ]
    assert render(ministral.tokenizer, messages, tools=tools) == (
        '<s>[SYSTEM_PROMPT]S[/SYSTEM_PROMPT][AVAILABLE_TOOLS][{"type": "function", "function": {"name": "add", '
        '"parameters": {"type": "object"}}}][/AVAILABLE_TOOLS][INST][IMG]Look[/INST][THINK]hmm[/THINK]Ok'
        '[TOOL_CALLS]add[ARGS]{"a": 1}[TOOL_CALLS]now[ARGS]{}</s>[TOOL_RESULTS]2[/TOOL_RESULTS]Two</s>'
        "[INST]Thanks[/INST]"
    )


@pytest.mark.parametrize(
    ("messages", "error"),
    [
        ([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}], "must alternate"),
        ([{"role": "user", "content": "a"}, {"role": "system", "content": "b"}], "got system"),
        ([{"role": "user", "content": "a"}, {"role": "assistant", "content": ""}], "Assistant message must have"),
        ([{"role": "user", "content": [{"type": "video", "video": "v"}]}], "Only text, image, image_url chunks"),
    ],
)
def test_conversations_the_real_template_refuses(ministral, messages, error):
    with pytest.raises(Exception, match=error):
        render(ministral.tokenizer, messages)


@pytest.mark.parametrize(
    "messages",
    [
        [{"role": "user", "content": "What is two plus two?"}],
        [{"role": "system", "content": "Answer in one word."}, {"role": "user", "content": "Hello"}],
        [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello!"},
            {"role": "user", "content": "Sum?"},
        ],
    ],
)
def test_scripted_stand_in_greedily_writes_its_chain(stand_ins, messages):
    loaded = load_text_model(str(stand_ins["reasoning"]), dtype="f32", device="cpu")
    tok = loaded.tokenizer
    prompt = tok.apply_chat_template(messages, add_generation_prompt=True, return_dict=False)
    assert prompt[-1] == tok.convert_tokens_to_ids("[/INST]")
    ids = torch.tensor([prompt])
    out = loaded.model.generate(
        ids, attention_mask=torch.ones_like(ids), max_new_tokens=40, do_sample=False, eos_token_id=loaded.eos_token_ids
    )
    completion = out[0, len(prompt) :].tolist()
    assert completion == list(SCRIPTED_COMPLETION_IDS)
    assert tok.decode(completion) == f"[THINK]{SCRIPTED_REASONING}[/THINK]{SCRIPTED_ANSWER}</s>"
    assert "think" in SCRIPTED_REASONING and "think" not in SCRIPTED_ANSWER  # for stop-string tests
    assert "four" in SCRIPTED_ANSWER and "four" not in SCRIPTED_REASONING


# --- Qwen2-VL ---------------------------------------------------------------------------------------------


def test_qwen2_vl_has_the_7b_repos_flat_config_and_legacy_weight_names(stand_ins):
    path = stand_ins["vision"]
    config = read_json(path / "config.json")
    assert "text_config" not in config and config["hidden_size"] == 64 and config["rope_theta"] == 1000000.0
    assert config["rope_scaling"] == {"type": "mrope", "mrope_section": [4, 6, 6]}
    assert {"in_chans", "spatial_patch_size"} <= set(config["vision_config"])
    with safe_open(path / "model.safetensors", "pt") as weights:
        prefixes = {k.split(".")[0] + ("." + k.split(".")[1] if k.startswith("model.") else "") for k in weights.keys()}  # noqa: SIM118 - safe_open is not iterable
    assert prefixes == {"lm_head", "model.embed_tokens", "model.layers", "model.norm", "visual"}
    assert (
        read_json(path / "chat_template.json")["chat_template"]
        == read_json(path / "tokenizer_config.json")["chat_template"]
    )
    generation = read_json(path / "generation_config.json")
    assert {k: generation[k] for k in ("do_sample", "repetition_penalty", "temperature", "top_k", "top_p")} == {
        "do_sample": True,
        "repetition_penalty": 1.05,
        "temperature": 0.01,
        "top_k": 1,
        "top_p": 0.001,
    }


def test_qwen2_vl_loads_with_the_key_mapping_and_captions_honour_its_repetition_penalty(stand_ins):
    path = stand_ins["vision"]
    loaded = load_vision_model(str(path), dtype="f32", device="cpu")  # refuses any missing weight
    model, tok = loaded.model, loaded.tokenizer
    assert type(tok).__name__ == "Qwen2Tokenizer" and loaded.eos_token_ids == sorted(
        tok.convert_tokens_to_ids(["<|im_end|>", "<|endoftext|>"])
    )
    legacy = load_file(path / "model.safetensors")
    torch.testing.assert_close(
        model.model.language_model.layers[1].mlp.up_proj.weight, legacy["model.layers.1.mlp.up_proj.weight"]
    )
    torch.testing.assert_close(model.model.visual.merger.mlp[0].weight, legacy["visual.merger.mlp.0.weight"])
    # The checkpoint's generation_config makes generate penalize (1.05) every token already in the row; the
    # batcher applies the same penalty itself, over each row's own tokens (captioner/penalty.py).
    pixels = AutoImageProcessor.from_pretrained(path)(
        images=[Image.new("RGB", (56, 56), (9, 99, 199))], return_tensors="pt"
    )
    prompt = tok.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe"}]}],
        add_generation_prompt=True,
        tokenize=False,
    )
    n = int(pixels["image_grid_thw"].prod()) // 4
    inputs = tok(prompt.replace(loaded.family.placeholder, loaded.family.placeholder * n), return_tensors="pt")
    with torch.no_grad():
        out = model.generate(
            **inputs,
            **pixels,
            max_new_tokens=1,
            do_sample=False,
            output_logits=True,
            output_scores=True,
            return_dict_in_generate=True,
        )
    expected = RepetitionPenaltyLogitsProcessor(1.05)(inputs["input_ids"], out.logits[0].clone())
    torch.testing.assert_close(out.scores[0], expected)
    assert not torch.equal(out.scores[0], out.logits[0])


# --- Qwen3 ------------------------------------------------------------------------------------------------

# Qwen/Qwen3-0.6B's config.json keys (transformers 4.51 layout) and its added tokens, id -> (content, special).
QWEN3_CONFIG_KEYS = {
    "architectures",
    "attention_bias",
    "attention_dropout",
    "bos_token_id",
    "eos_token_id",
    "head_dim",
    "hidden_act",
    "hidden_size",
    "initializer_range",
    "intermediate_size",
    "max_position_embeddings",
    "max_window_layers",
    "model_type",
    "num_attention_heads",
    "num_hidden_layers",
    "num_key_value_heads",
    "rms_norm_eps",
    "rope_scaling",
    "rope_theta",
    "sliding_window",
    "tie_word_embeddings",
    "torch_dtype",
    "transformers_version",
    "use_cache",
    "use_sliding_window",
    "vocab_size",
}
QWEN3_ADDED_TOKENS = {
    151643: ("<|endoftext|>", True),
    151644: ("<|im_start|>", True),
    151645: ("<|im_end|>", True),
    151646: ("<|object_ref_start|>", True),
    151647: ("<|object_ref_end|>", True),
    151648: ("<|box_start|>", True),
    151649: ("<|box_end|>", True),
    151650: ("<|quad_start|>", True),
    151651: ("<|quad_end|>", True),
    151652: ("<|vision_start|>", True),
    151653: ("<|vision_end|>", True),
    151654: ("<|vision_pad|>", True),
    151655: ("<|image_pad|>", True),
    151656: ("<|video_pad|>", True),
    151657: ("<tool_call>", False),
    151658: ("</tool_call>", False),
    151659: ("<|fim_prefix|>", False),
    151660: ("<|fim_middle|>", False),
    151661: ("<|fim_suffix|>", False),
    151662: ("<|fim_pad|>", False),
    151663: ("<|repo_name|>", False),
    151664: ("<|file_sep|>", False),
    151665: ("<tool_response>", False),
    151666: ("</tool_response>", False),
    151667: ("<think>", False),
    151668: ("</think>", False),
}
QWEN3_FILES = {
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.json",
    "merges.txt",
    TINY_MARKER,
}


@pytest.fixture(scope="module")
def qwen3_path() -> Path:
    return build_all(REPO_ROOT / "models" / "tiny", only={"qwen3"})["qwen3"]


@pytest.fixture(scope="module")
def qwen3(qwen3_path):
    return load_text_model(str(qwen3_path), dtype="f32", device="cpu")


def test_qwen3_has_the_hub_repos_files_config_and_tied_bf16_weights(qwen3_path):
    assert {f.name for f in qwen3_path.iterdir()} == QWEN3_FILES
    assert read_json(qwen3_path / TINY_MARKER)["stands_in_for"] == "Qwen/Qwen3-0.6B"
    config = read_json(qwen3_path / "config.json")
    assert set(config) == QWEN3_CONFIG_KEYS  # no transformers-5 keys (dtype, rope_parameters, layer_types)
    assert {
        k: config[k]
        for k in (
            "architectures",
            "model_type",
            "tie_word_embeddings",
            "head_dim",
            "vocab_size",
            "rope_theta",
            "rope_scaling",
            "max_position_embeddings",
            "torch_dtype",
            "bos_token_id",
            "eos_token_id",
            "sliding_window",
            "use_sliding_window",
        )
    } == {
        "architectures": ["Qwen3ForCausalLM"],
        "model_type": "qwen3",
        "tie_word_embeddings": True,
        "head_dim": 128,
        "vocab_size": 151936,
        "rope_theta": 1000000,
        "rope_scaling": None,
        "max_position_embeddings": 40960,
        "torch_dtype": "bfloat16",
        "bos_token_id": 151643,
        "eos_token_id": 151645,
        "sliding_window": None,
        "use_sliding_window": False,
    }
    with safe_open(qwen3_path / "model.safetensors", "pt") as weights:
        names = set(weights.keys())
        embed = weights.get_tensor("model.embed_tokens.weight")
        dtypes = {weights.get_tensor(n).dtype for n in names}
    assert not [n for n in names if "lm_head" in n]  # tied, as the hub stores it
    assert {
        "model.layers.1.self_attn.q_norm.weight",
        "model.layers.1.self_attn.k_norm.weight",
        "model.norm.weight",
    } <= names
    assert dtypes == {torch.bfloat16} and embed.shape == (151936, config["hidden_size"])
    assert not embed[151669:].any() and embed[:151669].abs().sum(dim=1).min() > 0  # tokenless ids are zero rows


def test_qwen3_added_tokens_have_the_real_ids_and_special_flags(qwen3, qwen3_path):
    decoder = read_json(qwen3_path / "tokenizer_config.json")["added_tokens_decoder"]
    assert {int(i): (t["content"], t["special"]) for i, t in decoder.items()} == QWEN3_ADDED_TOKENS
    tok = qwen3.tokenizer
    assert type(tok).__name__ == "Qwen2Tokenizer" and len(tok) == 151669
    assert {i: tok.convert_ids_to_tokens(i) for i in QWEN3_ADDED_TOKENS} == {
        i: t for i, (t, _) in QWEN3_ADDED_TOKENS.items()
    }
    assert (tok.eos_token, tok.pad_token, tok.bos_token) == ("<|im_end|>", "<|endoftext|>", None)
    ids = tok.encode("<|im_start|><think>a</think><tool_call>b</tool_call><|im_end|>", add_special_tokens=False)
    assert [ids[0], ids[1], ids[3], ids[4], ids[6], ids[7]] == [151644, 151667, 151668, 151657, 151658, 151645]
    # Not special in the real tokenizer: skipping special tokens keeps them for the reasoning and tool parsers.
    assert tok.decode(ids, skip_special_tokens=True) == "<think>a</think><tool_call>b</tool_call>"
    # Qwen2's pre-tokenizer: digits one by one, NFC first.
    assert tok.tokenize("2024") == ["2", "0", "2", "4"]
    assert tok.encode("cafe\u0301", add_special_tokens=False) == tok.encode("caf\u00e9", add_special_tokens=False)


def test_qwen3_generation_config_is_the_repos_and_the_loader_reads_it(qwen3, qwen3_path):
    generation = GenerationConfig.from_pretrained(qwen3_path)
    assert (generation.bos_token_id, generation.eos_token_id, generation.pad_token_id) == (
        151643,
        [151645, 151643],
        151643,
    )
    assert generation.do_sample is True and (generation.temperature, generation.top_p, generation.top_k) == (
        0.6,
        0.95,
        20,
    )
    assert qwen3.eos_token_ids == [151643, 151645]
    values = qwen3.sampling.values
    assert (values.temperature, values.top_p, values.top_k) == (0.6, 0.95, 20)
    assert qwen3.max_context == 40960


def test_qwen3_loads_with_transformers_and_our_loader_alike(qwen3, qwen3_path):
    model, info = AutoModelForCausalLM.from_pretrained(qwen3_path, dtype=torch.float32, output_loading_info=True)
    assert type(model).__name__ == "Qwen3ForCausalLM" and not info["missing_keys"] and not info["unexpected_keys"]
    assert type(qwen3.model).__name__ == "Qwen3ForCausalLM"
    assert qwen3.model.lm_head.weight.data_ptr() == qwen3.model.model.embed_tokens.weight.data_ptr()
    assert model.config.head_dim == 128 and model.config.rope_parameters["rope_theta"] == 1000000
    ids = torch.tensor([[151644, 872, 198, 9707, 151645, 198, 151644, 77091, 198]])
    with torch.no_grad():
        torch.testing.assert_close(qwen3.model(ids).logits, model.eval()(ids).logits)


def test_qwen3_greedy_output_is_visible_text(qwen3):
    tok = qwen3.tokenizer
    prompt = tok.apply_chat_template([{"role": "user", "content": "Hi"}], add_generation_prompt=True, return_dict=False)
    ids = torch.tensor([prompt])
    out = qwen3.model.generate(
        ids, attention_mask=torch.ones_like(ids), max_new_tokens=8, do_sample=False, eos_token_id=qwen3.eos_token_ids
    )
    completion = out[0, len(prompt) :].tolist()
    assert max(completion) < 151669  # never an id without a token
    assert tok.decode(completion, skip_special_tokens=True).strip()


def test_qwen3_reasoning_parser_is_detected_as_deepseek_r1(qwen3):
    spec = parser_for("auto", qwen3.tokenizer)
    assert spec.reasoning == "deepseek_r1"
    assert [(m.token_id, m.token) for m in spec.markers] == [(151667, "<think>"), (151668, "</think>")]
    assert not spec.thinking_in_content_chunks  # Qwen3's template reads `reasoning_content`


CITY = {"type": "object", "properties": {"city": {"type": "string"}}}
QWEN3_TOOL = {
    "type": "function",
    "function": {"name": "get_weather", "description": "Weather in a city", "parameters": CITY},
}


def test_qwen3_template_renders_tools_and_a_tool_round_trip_as_hermes(qwen3):
    messages = [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": {"city": "Paris"}},
                },
                {
                    "id": "call_2",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": '{"temp": 21}'},
        {"role": "tool", "tool_call_id": "call_2", "content": '{"temp": 3}'},
    ]
    rendered = render(qwen3.tokenizer, messages, tools=[QWEN3_TOOL], add_generation_prompt=True)
    assert rendered == (
        "<|im_start|>system\nS\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
        "You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n"
        + json.dumps(QWEN3_TOOL)
        + "\n</tools>\n\nFor each function call, return a json object with function name and arguments within "
        '<tool_call></tool_call> XML tags:\n<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n'
        "</tool_call><|im_end|>\n"
        "<|im_start|>user\nWeather in Paris?<|im_end|>\n"
        '<|im_start|>assistant\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n'
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call><|im_end|>\n'
        '<|im_start|>user\n<tool_response>\n{"temp": 21}\n</tool_response>\n<tool_response>\n{"temp": 3}\n'
        "</tool_response><|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    ids = qwen3.tokenizer.encode(rendered, add_special_tokens=False)
    # Each marker is one token: two tool calls plus the two in the system prompt's format instructions.
    assert ids.count(151657) == ids.count(151658) == 4 and ids.count(151665) == ids.count(151666) == 2


def test_qwen3_template_thinking_rules(qwen3):
    tok = qwen3.tokenizer
    user = [{"role": "user", "content": "Hi"}]
    assert render(tok, user, add_generation_prompt=True) == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    assert render(tok, user, add_generation_prompt=True, enable_thinking=False).endswith(
        "<|im_start|>assistant\n<think>\n\n</think>\n\n"
    )
    history = [
        *user,
        {"role": "assistant", "content": "<think>\nold\n</think>\n\nHello"},
        {"role": "user", "content": "Sum?"},
        {"role": "assistant", "content": "4", "reasoning_content": "2+2"},
    ]
    # Reasoning before the last user query is dropped; the turn after it keeps its (reasoning_content) block.
    assert render(tok, history) == (
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello<|im_end|>\n"
        "<|im_start|>user\nSum?<|im_end|>\n<|im_start|>assistant\n<think>\n2+2\n</think>\n\n4<|im_end|>\n"
    )


# --- More captioning families: Qwen2.5-VL, Qwen3-VL, SmolVLM (Idefics3), Gemma 3 -------------------------------

_SHARDS = {"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors", "model.safetensors.index.json"}
_QWEN_TOKENIZER = {"tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt", "chat_template.json"}
# kind -> the hub repo's files (README, LICENSE and the like aside), as listed on each repo's page.
VISION_FILES = {
    "qwen25_vl": {"config.json", "generation_config.json", "preprocessor_config.json", *_SHARDS, *_QWEN_TOKENIZER},
    "qwen3_vl": {
        "config.json",
        "generation_config.json",
        "preprocessor_config.json",
        "video_preprocessor_config.json",
        "model.safetensors",
        *_QWEN_TOKENIZER,
    },
    "smolvlm": {
        "config.json",
        "generation_config.json",
        "preprocessor_config.json",
        "processor_config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "vocab.json",
        "merges.txt",
        "added_tokens.json",
        "special_tokens_map.json",
        "chat_template.json",
    },
    "gemma3": {
        "config.json",
        "generation_config.json",
        "preprocessor_config.json",
        "processor_config.json",
        *_SHARDS,
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "chat_template.json",
    },
}
# kind -> the top-level weight-name prefixes the repo stores (pre-transformers-5 names where the repo has them).
VISION_WEIGHT_PREFIXES = {
    "qwen25_vl": {
        "model.embed_tokens",
        "model.layers",
        "model.norm",
        "visual.blocks",
        "visual.merger",
        "visual.patch_embed",
    },
    "qwen3_vl": {"model.language_model", "model.visual"},
    "smolvlm": {"model.text_model", "model.vision_model", "model.connector", "lm_head.weight"},
    "gemma3": {
        "language_model.model",
        "vision_tower.vision_model",
        "multi_modal_projector.mm_input_projection_weight",
        "multi_modal_projector.mm_soft_emb_norm",
    },
}
# kind -> token -> the id the hub tokenizer gives it (and the config / generation_config names).
VISION_TOKEN_IDS = {
    "qwen25_vl": {
        "<|endoftext|>": 151643,
        "<|im_end|>": 151645,
        "<|vision_start|>": 151652,
        "<|image_pad|>": 151655,
        "<|file_sep|>": 151664,
    },
    "qwen3_vl": {
        "<|endoftext|>": 151643,
        "<|im_end|>": 151645,
        "<|vision_start|>": 151652,
        "<|image_pad|>": 151655,
        "</think>": 151668,
    },
    "smolvlm": {
        "<|endoftext|>": 0,
        "<|im_start|>": 1,
        "<|im_end|>": 2,
        "<global-img>": 49152,
        "<row_1_col_1>": 49153,
        "<row_6_col_6>": 49188,
        "<fake_token_around_image>": 49189,
        "<image>": 49190,
        "<end_of_utterance>": 49279,
    },
    "gemma3": {
        "<pad>": 0,
        "<eos>": 1,
        "<bos>": 2,
        "<unk>": 3,
        "<start_of_turn>": 105,
        "<end_of_turn>": 106,
        "<start_of_image>": 255999,
        "<end_of_image>": 256000,
        "<image_soft_token>": 262144,
    },
}
VISION_GENERATION = {
    "qwen25_vl": {"eos_token_id": [151645, 151643], "pad_token_id": 151643, "repetition_penalty": 1.05, "top_k": 1},
    "qwen3_vl": {"eos_token_id": [151645, 151643], "temperature": 0.7, "top_p": 0.8, "top_k": 20},
    "smolvlm": {"bos_token_id": 1, "eos_token_id": 49279, "pad_token_id": 2},
    "gemma3": {
        "eos_token_id": [1, 106],
        "pad_token_id": 0,
        "top_k": 64,
        "top_p": 0.95,
        "cache_implementation": "hybrid",
    },
}


@pytest.fixture(scope="module")
def vision_stand_ins() -> dict[str, Path]:
    return build_all(REPO_ROOT / "models" / "tiny", only=set(VISION_FILES))


def _weight_names(path: Path) -> set[str]:
    names: set[str] = set()
    for file in sorted(path.glob("*.safetensors")):
        with safe_open(file, "pt") as weights:
            names |= set(weights.keys())  # noqa: SIM118 - safe_open is not iterable
    return names


@pytest.mark.parametrize("kind", sorted(VISION_FILES))
def test_vision_stand_ins_have_their_repos_files_and_weight_names(vision_stand_ins, kind):
    path = vision_stand_ins[kind]
    assert {p.name for p in path.iterdir()} == VISION_FILES[kind] | {TINY_MARKER}
    names = _weight_names(path)
    assert {p for p in VISION_WEIGHT_PREFIXES[kind] if any(n.startswith(p) for n in names)} == VISION_WEIGHT_PREFIXES[
        kind
    ]
    assert all(any(n.startswith(p) for p in VISION_WEIGHT_PREFIXES[kind]) for n in names)  # nothing else
    index = path / "model.safetensors.index.json"
    if index.exists():  # sharded as the repo is: the index names every weight and only existing shards
        weight_map = read_json(index)["weight_map"]
        assert set(weight_map) == names and set(weight_map.values()) == {
            n for n in _SHARDS if n.endswith("safetensors")
        }
    with safe_open(next(path.glob("*.safetensors")), "pt") as weights:
        assert {weights.get_slice(k).get_dtype() for k in weights.keys()} == {"BF16"}  # noqa: SIM118 - as the repos


@pytest.mark.parametrize("kind", sorted(VISION_FILES))
def test_vision_stand_ins_special_tokens_and_configs_agree_with_the_repos(vision_stand_ins, kind):
    path = vision_stand_ins[kind]
    loaded = load_vision_model(str(path), dtype="f32", device="cpu")  # refuses any missing weight
    tok, config = loaded.tokenizer, loaded.model.config
    assert {t: tok.convert_tokens_to_ids(t) for t in VISION_TOKEN_IDS[kind]} == VISION_TOKEN_IDS[kind]
    image_id = getattr(config, "image_token_id", None) or config.image_token_index
    assert image_id == VISION_TOKEN_IDS[kind].get("<|image_pad|>", VISION_TOKEN_IDS[kind].get("<image>", 262144))
    generation = GenerationConfig.from_pretrained(path)
    assert {k: getattr(generation, k) for k in VISION_GENERATION[kind]} == VISION_GENERATION[kind]
    assert (
        read_json(path / "chat_template.json")["chat_template"]
        == read_json(path / "tokenizer_config.json")["chat_template"]
    )
    # Every id the tokenizer can produce has an embedding row, and the config's vocabulary covers the tokenizer.
    assert len(tok) <= config.get_text_config().vocab_size


def test_qwen25_vl_config_is_flat_with_the_old_vision_key_names(vision_stand_ins):
    config = read_json(vision_stand_ins["qwen25_vl"] / "config.json")
    assert "text_config" not in config and config["model_type"] == "qwen2_5_vl" and config["tie_word_embeddings"]
    assert config["rope_scaling"]["type"] == "mrope" and config["vocab_size"] == 151936
    vision = config["vision_config"]
    assert {"in_chans", "spatial_patch_size", "fullatt_block_indexes", "window_size", "out_hidden_size"} <= set(vision)
    assert read_json(vision_stand_ins["qwen25_vl"] / "preprocessor_config.json")["image_processor_type"] == (
        "Qwen2VLImageProcessor"
    )


def test_qwen3_vl_config_is_nested_with_interleaved_mrope_and_deepstack(vision_stand_ins):
    path = vision_stand_ins["qwen3_vl"]
    config = read_json(path / "config.json")
    text, vision = config["text_config"], config["vision_config"]
    assert text["model_type"] == "qwen3_vl_text" and text["head_dim"] == 128
    assert text["rope_scaling"] == {"mrope_interleaved": True, "mrope_section": [24, 20, 20], "rope_type": "default"}
    assert vision["patch_size"] == 16 and vision["deepstack_visual_indexes"] and "in_channels" in vision
    assert read_json(path / "preprocessor_config.json")["size"] == {"longest_edge": 16777216, "shortest_edge": 65536}
    loaded = load_vision_model(str(path), dtype="f32", device="cpu")
    assert len(loaded.model.model.visual.deepstack_merger_list) == len(vision["deepstack_visual_indexes"])
    prompt = render_prompt(loaded.tokenizer, "<|image_pad|>", "Describe")
    assert (
        prompt
        == "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Describe<|im_end|>\n<|im_start|>assistant\n"
    )


def test_smolvlm_and_gemma3_prompts_are_their_templates(vision_stand_ins):
    smol = load_vision_model(str(vision_stand_ins["smolvlm"]), dtype="f32", device="cpu")
    assert render_prompt(smol.tokenizer, "<image>", "Describe") == (
        "<|im_start|>User:<image>Describe<end_of_utterance>\nAssistant:"
    )
    gemma = load_vision_model(str(vision_stand_ins["gemma3"]), dtype="f32", device="cpu")
    assert render_prompt(gemma.tokenizer, "<start_of_image>", "Describe") == (
        "<bos><start_of_turn>user\n<start_of_image>Describe<end_of_turn>\n<start_of_turn>model\n"
    )
    text = read_json(vision_stand_ins["gemma3"] / "config.json")["text_config"]
    assert (
        set(text) >= {"hidden_size", "num_hidden_layers", "rope_scaling", "sliding_window"} and "vocab_size" not in text
    )
    assert gemma.model.config.text_config.vocab_size == 262208 and gemma.model.config.mm_tokens_per_image == 256
