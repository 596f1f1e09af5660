"""A random-weight Qwen2-VL checkpoint in the layout of Qwen/Qwen2-VL-7B-Instruct.

The hub repo's files, in its (pre-transformers-5) layout, so the vision engine loads it through exactly the
code path a real checkpoint takes, key conversion included:
- config.json flat, as the 7B repo has it: the text model's keys at the top level (`hidden_size`,
  `rope_theta`, `rope_scaling: {"type": "mrope", "mrope_section": ...}`, ...), the vision tower's under
  `vision_config` with the old key names (`in_chans`, `spatial_patch_size`);
- model.safetensors with the old weight names (`model.layers.*`, `model.embed_tokens.*`, `visual.*`,
  `lm_head.weight`), which transformers 5 maps to `model.language_model.*` / `model.visual.*` on load;
- generation_config.json with the repo's values (stop on `<|im_end|>` or `<|endoftext|>`, do_sample,
  temperature 0.01, top_k 1, top_p 0.001, repetition_penalty 1.05);
- the tokenizer as the repo ships it: tokenizer.json, vocab.json + merges.txt, tokenizer_config.json
  (`Qwen2Tokenizer`, the added tokens, the chat template) and chat_template.json (the same template, for
  the processor); preprocessor_config.json for `Qwen2VLImageProcessor`.

The special tokens come after the learned vocabulary in the real order (`<|endoftext|>`, `<|im_start|>`,
`<|im_end|>`, ..., `<|vision_start|>`, `<|vision_end|>`, `<|vision_pad|>`, `<|image_pad|>`, `<|video_pad|>`),
and the config's token ids point at them.

No video_preprocessor_config.json (the 7B repo has none either): `Qwen2VLProcessor` (and so
`AutoProcessor`) needs a video processor, which needs torchvision; loaders combine tokenizer + image
processor instead.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from transformers import PreTrainedTokenizerFast, Qwen2VLConfig, Qwen2VLForConditionalGeneration

from .chat_templates import QWEN2_VL_CHAT_TEMPLATE
from .hub_files import data_json, save_shards, write_json
from .qwen3_tokenizer import write_qwen2_tokenizer
from .tokenizer import train_tokenizer

QWEN2_VL_HUB_ID = "Qwen/Qwen2-VL-7B-Instruct"
SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
]

# Qwen/Qwen2-VL-7B-Instruct's preprocessor_config.json, verbatim: 56x56 to ~3584x3584 pixels, one image
# token per 28x28 pixels after the 2x2 merge.
PREPROCESSOR_CONFIG = data_json("qwen2-vl/preprocessor_config.json")

# The repo's generation_config.json, with its ids replaced by this vocabulary's (filled in below).
GENERATION_CONFIG = {"do_sample": True, "repetition_penalty": 1.05, "temperature": 0.01, "top_k": 1, "top_p": 0.001}

CONTEXT = 8192
TOKENIZER_VOCAB = 1024  # learned BPE tokens of the tokenizer; the special tokens come after


def _flat_config(ids: dict[str, int], vocab_size: int) -> dict:
    """config.json as the 7B repo lays it out (transformers 4.4x), with this model's sizes."""
    return {
        "architectures": ["Qwen2VLForConditionalGeneration"],
        "model_type": "qwen2_vl",
        "attention_dropout": 0.0,
        "bos_token_id": ids["<|endoftext|>"],
        "eos_token_id": ids["<|im_end|>"],
        "vision_start_token_id": ids["<|vision_start|>"],
        "vision_end_token_id": ids["<|vision_end|>"],
        "vision_token_id": ids["<|vision_pad|>"],
        "image_token_id": ids["<|image_pad|>"],
        "video_token_id": ids["<|video_pad|>"],
        "hidden_act": "silu",
        "hidden_size": 64,
        "initializer_range": 0.02,
        "intermediate_size": 256,
        "max_position_embeddings": CONTEXT,
        "max_window_layers": 2,
        # 2 heads of 32 (vLLM's CPU attention takes no smaller), sharing 1 KV head: grouped as the 7B's 28/4 are.
        "num_attention_heads": 2,
        "num_hidden_layers": 2,
        "num_key_value_heads": 1,
        "rms_norm_eps": 1e-6,
        "rope_theta": 1000000.0,
        "sliding_window": CONTEXT,
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
        "transformers_version": "4.41.2",
        "use_cache": True,
        "use_sliding_window": False,
        "vision_config": {
            "depth": 2,
            "embed_dim": 32,
            "mlp_ratio": 2,
            "num_heads": 2,
            "in_chans": 3,
            "hidden_size": 64,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "spatial_patch_size": 14,
            "temporal_patch_size": 2,
        },
        # M-RoPE: temporal/height/width sections sum to head_dim / 2 (32 / 2), as 16+24+24 does for 128.
        "rope_scaling": {"type": "mrope", "mrope_section": [4, 6, 6]},
        "vocab_size": vocab_size,
    }


def qwen2_vl_tokenizer(context: int) -> tuple[PreTrainedTokenizerFast, dict[str, int]]:
    """The tokenizer (a BPE learned here, then the special tokens in the real order) and each special's id."""
    tok = train_tokenizer(
        TOKENIZER_VOCAB,
        trailing_specials=SPECIAL_TOKENS,
        bos=None,
        eos="<|im_end|>",
        unk=None,
        pad="<|endoftext|>",
        model_max_length=context,
    )
    return tok, {t: tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}


def qwen2_vl_config(flat: dict) -> Qwen2VLConfig:
    """The config class for config.json's `flat` dict, which stays as it is."""
    # A copy: the config class rewrites the rope dict it is given, and config.json must keep the old form.
    return Qwen2VLConfig(**{k: v for k, v in copy.deepcopy(flat).items() if k not in ("architectures", "model_type")})


def legacy_name(name: str) -> str:
    """transformers-5 module names -> the pre-5 names the Qwen2-VL/2.5-VL repos store (the inverse of
    transformers' key mapping)."""
    if name.startswith("model.language_model."):
        return "model." + name[len("model.language_model.") :]
    if name.startswith("model.visual."):
        return name[len("model.") :]
    return name


def write_qwen2_vl_files(out: Path, flat: dict, tok: PreTrainedTokenizerFast, ids: dict[str, int]) -> None:
    """The repo's files besides the weights: config.json (`flat`), generation_config.json, the tokenizer's
    (tokenizer.json, vocab.json, merges.txt, tokenizer_config.json, chat_template.json) and
    preprocessor_config.json."""
    write_json(out / "config.json", flat)
    endoftext, im_end = ids["<|endoftext|>"], ids["<|im_end|>"]
    generation = {
        "bos_token_id": endoftext,
        "pad_token_id": endoftext,
        "eos_token_id": [im_end, endoftext],
        **GENERATION_CONFIG,
        "transformers_version": "4.41.2",
    }
    write_json(out / "generation_config.json", generation)
    added = [(ids[t], t, True) for t in SPECIAL_TOKENS]
    write_qwen2_tokenizer(tok.backend_tokenizer, out, added, QWEN2_VL_CHAT_TEMPLATE, model_max_length=32768)
    write_json(out / "chat_template.json", {"chat_template": QWEN2_VL_CHAT_TEMPLATE})
    write_json(out / "preprocessor_config.json", PREPROCESSOR_CONFIG)


def write_tiny_qwen2_vl(out: Path) -> dict:
    """Write a ~0.3M-parameter `Qwen2VLForConditionalGeneration` in the 7B repo's layout to `out`."""
    torch.manual_seed(2)
    tok, ids = qwen2_vl_tokenizer(CONTEXT)
    flat = _flat_config(ids, len(tok))
    model = Qwen2VLForConditionalGeneration(qwen2_vl_config(flat))
    save_shards({legacy_name(k): v for k, v in model.state_dict().items()}, out, shards=1)
    write_qwen2_vl_files(out, flat, tok, ids)
    return {"parameters": sum(p.numel() for p in model.parameters())}
