"""A random-weight Qwen3 in the layout of Qwen/Qwen3-0.6B: the Hermes tool-call and `<think>` reasoning model.

The hub repo's files, one for one (values from its config.json and generation_config.json as public repos
quote them, e.g. Rust and Python test fixtures labelled with the repo's raw config URL, and its model card):
- config.json in the repo's (transformers 4.51) layout: `Qwen3ForCausalLM`, `model_type` qwen3, top-level
  `rope_theta` 1000000 and `rope_scaling` null (no `rope_parameters`), `head_dim` 128 (not hidden/heads),
  `max_position_embeddings` 40960, `tie_word_embeddings` true, `torch_dtype` bfloat16, bos 151643
  (`<|endoftext|>`), eos 151645 (`<|im_end|>`), `vocab_size` 151936, no sliding window;
- model.safetensors in bfloat16 with transformers' Qwen3 names (`model.embed_tokens.weight`,
  `model.layers.N.self_attn.{q,k,v,o}_proj.weight`, the per-head `q_norm`/`k_norm`, `model.norm.weight`);
  tied, so there is no `lm_head.weight`, as in the repo;
- generation_config.json with the repo's values: do_sample, temperature 0.6, top_p 0.95, top_k 20 (the
  card's thinking-mode settings), eos [151645, 151643], pad and bos 151643;
- tokenizer.json, vocab.json, merges.txt and tokenizer_config.json (`Qwen2Tokenizer`, the added tokens at
  their real ids, the real chat template): qwen3_tokenizer.py says what they hold.

What differs: the sizes (hidden 64, 2 layers, 4 query / 2 key-value heads of the real head_dim 128, MLP 192;
the real one is 1024, 28 layers, 16/8 heads, MLP 3072; the ratios are kept), `max_window_layers` (2, the
layer count, as the real 28 is) and the vocabulary's learned part (see qwen3_tokenizer.py). The
embedding keeps all 151,936 rows, so every real token id is valid; the rows of the 267 ids that have no
token (151669..151935, as in the real vocabulary) are zero, so the random model all but never picks them.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import Qwen3Config, Qwen3ForCausalLM

from .chat_templates import QWEN3_CHAT_TEMPLATE
from .qwen3_tokenizer import NUM_TOKENS, TOKEN_IDS, write_qwen3_tokenizer

QWEN3_HUB_ID = "Qwen/Qwen3-0.6B"
ENDOFTEXT, IM_END = TOKEN_IDS["<|endoftext|>"], TOKEN_IDS["<|im_end|>"]  # 151643, 151645
VOCAB_SIZE = 151936

# config.json as the repo has it, with this model's sizes.
CONFIG = {
    "architectures": ["Qwen3ForCausalLM"],
    "attention_bias": False,
    "attention_dropout": 0.0,
    "bos_token_id": ENDOFTEXT,
    "eos_token_id": IM_END,
    "head_dim": 128,
    "hidden_act": "silu",
    "hidden_size": 64,
    "initializer_range": 0.02,
    "intermediate_size": 192,
    "max_position_embeddings": 40960,
    "max_window_layers": 2,
    "model_type": "qwen3",
    "num_attention_heads": 4,
    "num_hidden_layers": 2,
    "num_key_value_heads": 2,
    "rms_norm_eps": 1e-06,
    "rope_scaling": None,
    "rope_theta": 1000000,
    "sliding_window": None,
    "tie_word_embeddings": True,
    "torch_dtype": "bfloat16",
    "transformers_version": "4.51.0",
    "use_cache": True,
    "use_sliding_window": False,
    "vocab_size": VOCAB_SIZE,
}

GENERATION_CONFIG = {
    "bos_token_id": ENDOFTEXT,
    "do_sample": True,
    "eos_token_id": [IM_END, ENDOFTEXT],
    "pad_token_id": ENDOFTEXT,
    "temperature": 0.6,
    "top_k": 20,
    "top_p": 0.95,
    "transformers_version": "4.51.0",
}


@torch.no_grad()
def _silence_tokenless_ids(model: Qwen3ForCausalLM) -> None:
    # Tied embeddings: a zero row gives a zero logit whatever the hidden state, far below the best of the
    # random ones, so greedy decoding never lands on an id that decodes to nothing.
    model.model.embed_tokens.weight[NUM_TOKENS:] = 0


def write_tiny_qwen3(out: Path) -> dict:
    """Write a ~10M-parameter (almost all embedding) random `Qwen3ForCausalLM` with the repo's files to `out`."""
    torch.manual_seed(4)
    # Built from the hub-layout dict, as from_pretrained reads config.json (legacy rope_theta included).
    config = Qwen3Config.from_dict(dict(CONFIG))
    model = Qwen3ForCausalLM(config)
    _silence_tokenless_ids(model)
    model = model.to(torch.bfloat16)
    model.save_pretrained(out)  # model.safetensors without lm_head.weight (tied)
    # transformers 5 writes its own config layout (dtype, rope_parameters, layer_types): put the repo's back.
    (out / "config.json").write_text(json.dumps(CONFIG, indent=2) + "\n")
    (out / "generation_config.json").write_text(json.dumps(GENERATION_CONFIG, indent=2) + "\n")
    write_qwen3_tokenizer(out, QWEN3_CHAT_TEMPLATE)
    return {"parameters": sum(p.numel() for p in model.parameters())}
