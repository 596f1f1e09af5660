"""Ministral-3 stand-ins: the brief's text model in miniature (random, and scripted), and a bench-sized one.

The tiny ones carry mistralai/Ministral-3-3B-Reasoning-2512's file set and key layout::

    config.json               Mistral3ForConditionalGeneration: a `ministral3` text_config (YaRN
                              rope_parameters with llama_4_scaling_beta), a pixtral vision_config,
                              tie_word_embeddings true at both levels
    model.safetensors         the hub's weight names: language_model.model.*, vision_tower.*,
                              multi_modal_projector.*; tied, so no lm_head.weight is stored
    generation_config.json    bos 1, eos 2, pad 11, do_sample, temperature 0.7, top_p 0.95
    tekken.json               the only tokenizer file (tekken.py); no tokenizer.json / tokenizer_config.json;
                              its `image` section: patch 14, max_image_size 1540, spatial merge 2
    chat_template.jinja       the real template's behaviour (chat_templates.py)
    SYSTEM_PROMPT.txt         the default system prompt the template injects
    processor_config.json     PixtralProcessor's image tokens ([IMG], [IMG_BREAK], [IMG_END]), patch 14, merge 2,
                              and its `image_processor` section (PixtralImageProcessorFast, longest_edge 1540),
                              as the 2512 repos ship it: AutoImageProcessor loads it (native vision)
    params.json, consolidated.safetensors   Mistral's native format, for mistral-inference / vLLM's
                              `--load-format mistral`; transformers (and so our loaders) ignore them

A text-only load (what the text engine does) is::

    config = AutoConfig.from_pretrained(path)
    Ministral3ForCausalLM.from_pretrained(path, config=config.text_config, key_mapping=text_only_key_mapping())

which reports no missing keys: lm_head is tied to the embeddings. The mapping `{"^model.language_model.":
"model.", ...}` one might guess from the transformers-5 module names matches nothing in these files.

The bench model is a plain `Ministral3ForCausalLM` (~57M parameters): `transformers serve
--continuous-batching` only batches models it classifies as text-only LLMs, and a Mistral3 checkpoint is
loaded there as a multimodal model, so the bench could not compare like with like. It keeps its locally
trained tokenizer.json and a template without the default system prompt: its documented numbers were
measured with those prompt lengths (docs/benchmarks.md).
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformers import GenerationConfig, Mistral3Config, Mistral3ForConditionalGeneration
from transformers.models.ministral3 import Ministral3Config, Ministral3ForCausalLM
from transformers.models.pixtral import PixtralVisionConfig

from services.common.hf_models import TEXT_ONLY_KEY_MAPPING
from services.common.tokenizers import load_tokenizer

from . import scripted
from .chat_templates import (
    MINISTRAL3_CHAT_TEMPLATE,
    MINISTRAL3_REASONING_CHAT_TEMPLATE,
    MINISTRAL3_REASONING_SYSTEM_PROMPT,
)
from .hub_files import data_json, write_json
from .tekken import NAMED_SPECIAL_TOKENS, NUM_SPECIAL_TOKENS, write_tekken
from .tokenizer import train_tokenizer

MINISTRAL_HUB_ID = "mistralai/Ministral-3-3B-Reasoning-2512"
BOS, EOS, PAD, IMG, IMG_BREAK, IMG_END = 1, 2, 11, 10, 12, 13  # the real tekken ids
TINY_VOCAB = 4096  # 1,000 special tokens + 3,096 BPE ranks of the real vocabulary
TINY_CONTEXT = 4096

# processor_config.json as the hub repos ship it (transformers-5 layout: the image processor nested in the
# processor's config, no preprocessor_config.json): PixtralProcessor's image tokens and geometry, and the
# PixtralImageProcessorFast settings that `AutoImageProcessor` loads (native vision reads them).
PROCESSOR_CONFIG = data_json("ministral-3/processor_config.json")

# The bench tokenizer's leading special tokens: the first 36 ids of the real tekken vocabulary.
SPECIAL_TOKENS = [NAMED_SPECIAL_TOKENS.get(i, f"<SPECIAL_{i}>") for i in range(36)]

# transformers' Ministral3 names -> Mistral's native (consolidated.safetensors) names.
_NATIVE_NAMES = [
    ("language_model.model.embed_tokens.", "tok_embeddings."),
    ("language_model.model.norm.", "norm."),
    ("language_model.model.layers.", "layers."),
    (".self_attn.q_proj.", ".attention.wq."),
    (".self_attn.k_proj.", ".attention.wk."),
    (".self_attn.v_proj.", ".attention.wv."),
    (".self_attn.o_proj.", ".attention.wo."),
    (".mlp.gate_proj.", ".feed_forward.w1."),
    (".mlp.down_proj.", ".feed_forward.w2."),
    (".mlp.up_proj.", ".feed_forward.w3."),
    (".input_layernorm.", ".attention_norm."),
    (".post_attention_layernorm.", ".ffn_norm."),
    # The pixtral tower keeps its attention_norm / ffn_norm / patch_conv / ln_pre names.
    ("vision_tower.", "vision_encoder."),
    (".attention.q_proj.", ".attention.wq."),
    (".attention.k_proj.", ".attention.wk."),
    (".attention.v_proj.", ".attention.wv."),
    (".attention.o_proj.", ".attention.wo."),
    (".feed_forward.gate_proj.", ".feed_forward.w1."),
    (".feed_forward.down_proj.", ".feed_forward.w2."),
    (".feed_forward.up_proj.", ".feed_forward.w3."),
    # The projector is three native modules: a norm, the patch merger, the adapter MLP.
    ("multi_modal_projector.norm.", "pre_mm_projector_norm."),
    ("multi_modal_projector.patch_merger.", "patch_merger."),
    ("multi_modal_projector.linear_1.", "vision_language_adapter.w_in."),
    ("multi_modal_projector.linear_2.", "vision_language_adapter.w_out."),
]


def text_only_key_mapping() -> dict[str, str]:
    """`key_mapping` for loading a Mistral3 checkpoint's language model alone (see the module docstring)."""
    return dict(TEXT_ONLY_KEY_MAPPING)


def ministral3_tokenizer(vocab_size: int, context: int):
    """The bench's locally trained stand-in for the tekken tokenizer, with the Ministral-3 chat template."""
    tok = train_tokenizer(
        vocab_size,
        leading_specials=SPECIAL_TOKENS,
        bos="<s>",
        eos="</s>",
        unk="<unk>",
        pad="<pad>",
        model_max_length=context,
    )
    tok.chat_template = MINISTRAL3_CHAT_TEMPLATE
    return tok


def ministral3_rope(context: int) -> dict:
    """The real model's `rope_parameters` (YaRN: factor 16, theta 1e6; Llama-4 attention scaling), scaled to a
    model of `context` positions: the original context is 1/16 of it, as on the hub."""
    return {
        "rope_type": "yarn",
        "rope_theta": 1000000.0,
        "factor": 16.0,
        "original_max_position_embeddings": context // 16,
        "max_position_embeddings": context,
        "beta_fast": 32.0,
        "beta_slow": 1.0,
        "mscale_all_dim": 1.0,
        "mscale": 1.0,
        "llama_4_scaling_beta": 0.1,
    }


def _text_config(
    vocab_size: int,
    *,
    hidden: int,
    layers: int,
    heads: int,
    kv_heads: int,
    head_dim: int,
    ffn: int,
    context: int,
    tied: bool,
) -> Ministral3Config:
    return Ministral3Config(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=ffn,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        head_dim=head_dim,
        max_position_embeddings=context,
        bos_token_id=BOS,
        eos_token_id=EOS,
        pad_token_id=PAD,
        rms_norm_eps=1e-5,
        tie_word_embeddings=tied,
        rope_parameters=ministral3_rope(context),
    )


def _generation_config() -> GenerationConfig:
    # The card's recommended sampling, as the hub repo's generation_config.json carries it.
    return GenerationConfig(
        bos_token_id=BOS, eos_token_id=EOS, pad_token_id=PAD, do_sample=True, temperature=0.7, top_p=0.95
    )


def _params_json(text: Ministral3Config, vision: PixtralVisionConfig) -> dict:
    """params.json: the native format's view of the same model (what mistral-inference and vLLM read)."""
    original = text.rope_parameters["original_max_position_embeddings"]
    return {
        "dim": text.hidden_size,
        "n_layers": text.num_hidden_layers,
        "head_dim": text.head_dim,
        "hidden_dim": text.intermediate_size,
        "n_heads": text.num_attention_heads,
        "n_kv_heads": text.num_key_value_heads,
        "rope_theta": 1000000.0,
        "norm_eps": text.rms_norm_eps,
        "vocab_size": text.vocab_size,
        "tied_embeddings": True,
        "max_position_embeddings": text.max_position_embeddings,
        "llama_4_scaling": {"original_max_position_embeddings": original, "beta": 0.1},
        "yarn": {
            "original_max_position_embeddings": original,
            "factor": 16,
            "apply_scale": False,
            "beta": 32,
            "alpha": 1,
        },
        "vision_encoder": {
            "hidden_size": vision.hidden_size,
            "num_channels": 3,
            "image_size": vision.image_size,
            "max_image_size": vision.image_size,
            "patch_size": vision.patch_size,
            "rope_theta": 10000.0,
            "intermediate_size": vision.intermediate_size,
            "num_hidden_layers": vision.num_hidden_layers,
            "num_attention_heads": vision.num_attention_heads,
            "mm_projector_id": "patch_merge",
            "add_pre_mm_projector_layer_norm": True,
            "adapter_bias": False,
            "spatial_merge_size": 2,
            "image_token_id": IMG,
            "image_break_token_id": IMG_BREAK,
            "image_end_token_id": IMG_END,
        },
    }


def _native_name(name: str) -> str:
    for old, new in _NATIVE_NAMES:
        name = name.replace(old, new)
    return name


def pixtral_config(*, hidden: int, ffn: int, layers: int, heads: int, head_dim: int) -> PixtralVisionConfig:
    """A pixtral tower of these sizes with the real one's patch and image sizes."""
    return PixtralVisionConfig(
        hidden_size=hidden,
        intermediate_size=ffn,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        head_dim=head_dim,
        image_size=1540,
        patch_size=14,
    )


def mistral3_config(text: Ministral3Config, vision: PixtralVisionConfig) -> Mistral3Config:
    """The `Mistral3ForConditionalGeneration` config over these two, as the hub repo's config.json has it."""
    config = Mistral3Config(
        text_config=text,
        vision_config=vision,
        image_token_index=IMG,
        spatial_merge_size=2,
        projector_hidden_act="gelu",
        multimodal_projector_bias=False,
        vision_feature_layer=-1,
        tie_word_embeddings=text.tie_word_embeddings,
    )
    config.architectures = ["Mistral3ForConditionalGeneration"]
    return config


def write_mistral3_files(out: Path, config: Mistral3Config) -> None:
    """The hub repo's files besides the weights and config.json: the tekken tokenizer, the chat template and
    its default system prompt, params.json and processor_config.json."""
    vision = config.vision_config
    # The image section of the hub repos' tekken.json (v13 files name it "image"): what mistral-common's image
    # encoder, and so vLLM's Pixtral processor for the native format, sizes images by.
    image = {
        "image_patch_size": vision.patch_size,
        "max_image_size": vision.image_size,
        "spatial_merge_size": config.spatial_merge_size,
    }
    write_tekken(out, TINY_VOCAB, image)
    (out / "chat_template.jinja").write_text(MINISTRAL3_REASONING_CHAT_TEMPLATE)
    (out / "SYSTEM_PROMPT.txt").write_text(MINISTRAL3_REASONING_SYSTEM_PROMPT)
    params = _params_json(config.text_config, config.vision_config)
    write_json(out / "params.json", params)
    write_json(out / "processor_config.json", PROCESSOR_CONFIG)


def _write_ministral3(out: Path, arrange=None) -> dict:
    # Heads of 32, the least vLLM's CPU attention takes, sharing one KV head (the real 3B shares each among 4):
    # the projections have the shapes that 4 heads of 16 over 2 had.
    text = _text_config(
        TINY_VOCAB, hidden=64, layers=2, heads=2, kv_heads=1, head_dim=32, ffn=256, context=TINY_CONTEXT, tied=True
    )
    # The vision tower as small as it goes.
    config = mistral3_config(text, pixtral_config(hidden=32, ffn=64, layers=1, heads=2, head_dim=16))
    model = Mistral3ForConditionalGeneration(config)
    if arrange is not None:
        arrange(model.model.language_model)
    model.generation_config = _generation_config()
    model.save_pretrained(out)
    write_mistral3_files(out, config)
    # Written from the saved file, so its tensors are exactly model.safetensors' under the native names.
    native = {_native_name(k): v for k, v in load_file(out / "model.safetensors").items()}
    save_file(native, out / "consolidated.safetensors", metadata={"format": "pt"})
    language_model = sum(p.numel() for p in model.model.language_model.parameters())  # lm_head is these embeddings
    return {"parameters": sum(p.numel() for p in model.parameters()), "language_model_parameters": language_model}


# How much smaller the random stand-in's control-token embeddings are than the others'.
CONTROL_TOKEN_SCALE = 0.1


@torch.no_grad()
def quiet_control_tokens(language_model) -> None:
    """Shrink the embeddings of the control tokens (tekken ids below 1000, `</s>` excepted), in place.

    With tied embeddings a random model scores highest the token it was just fed, so after a prompt ending
    in `[/INST]` it would repeat `[/INST]` (a control token, which decodes to nothing) for ever: every
    answer empty. Trained models rarely emit control tokens; small rows give the stand-in that habit, so its
    (random) answers are visible text, and it can still stop with `</s>`."""
    embed = language_model.embed_tokens.weight
    rows = torch.arange(NUM_SPECIAL_TOKENS)
    embed[rows[rows != EOS]] *= CONTROL_TOKEN_SCALE


def write_tiny_ministral3(out: Path) -> dict:
    """Write a ~0.6M-parameter random `Mistral3ForConditionalGeneration` with the hub repo's files to `out`."""
    torch.manual_seed(0)
    return _write_ministral3(out, arrange=quiet_control_tokens)


def write_scripted_ministral3(out: Path) -> dict:
    """The same files, with weights whose greedy continuation of any chat prompt is the scripted chain."""
    torch.manual_seed(3)
    details = _write_ministral3(out, arrange=scripted.arrange_weights)
    scripted.check_token_ids(load_tokenizer(str(out)))
    return {**details, "scripted_completion": scripted.SCRIPTED_TEXT}


def write_bench_ministral3(out: Path) -> dict:
    """Write a ~57M-parameter `Ministral3ForCausalLM` for throughput benchmarks to `out`."""
    torch.manual_seed(1)
    context = 8192
    tok = ministral3_tokenizer(2048, context)
    config = _text_config(
        len(tok), hidden=768, layers=8, heads=12, kv_heads=4, head_dim=64, ffn=2304, context=context, tied=False
    )
    config.architectures = ["Ministral3ForCausalLM"]
    model = Ministral3ForCausalLM(config)
    model.generation_config = _generation_config()
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return {"parameters": sum(p.numel() for p in model.parameters())}
