"""A random-weight Qwen2.5-VL in the layout of Qwen/Qwen2.5-VL-3B-Instruct.

Matched, file for file (the 3B repo: the smallest Instruct one, and tied like the stand-in can afford to be):
- config.json flat, as the repo has it (transformers 4.41 layout): the text model's keys at the top level,
  `rope_scaling: {"type": "mrope", "mrope_section": ...}`, `tie_word_embeddings` true, `torch_dtype`
  bfloat16, `vocab_size` 151936, the real token ids (bos 151643, eos 151645, vision_start 151652,
  vision_end 151653, vision_pad 151654, image 151655, video 151656); the vision tower's keys under
  `vision_config` with the old names (`in_chans`, `spatial_patch_size`) and Qwen2.5-VL's own
  (`out_hidden_size`, `window_size` 112, `fullatt_block_indexes`, `tokens_per_second` 2, `intermediate_size`,
  `hidden_act` silu);
- the weights in bfloat16 with the repo's pre-transformers-5 names (`model.layers.*`, `model.embed_tokens.*`,
  `visual.blocks.*`, `visual.merger.*`), which transformers 5 maps on load, in two shards behind
  `model.safetensors.index.json` as the repo stores them; tied, so no `lm_head.weight`;
- generation_config.json: bos/pad 151643, eos [151645, 151643], do_sample, repetition_penalty 1.05,
  temperature 0.1 (as quoted for the Instruct repos), top_p 0.001, top_k 1;
- preprocessor_config.json as the repo has it: `Qwen2VLImageProcessor` (Qwen2.5-VL never had an image
  processor of its own), processor_class `Qwen2_5_VLProcessor`, 56x56 to 12,845,056 pixels, patch 14, merge 2;
- tokenizer.json, vocab.json, merges.txt, tokenizer_config.json (`Qwen2Tokenizer`, the 22 added tokens at
  151643..151664, model_max_length 131072) and chat_template.json: Qwen2-VL's template, which the
  Qwen2.5-VL repos ship unchanged (default system prompt "You are a helpful assistant.").

Not checked against the repo's bytes here (offline; taken from public quotes and transformers' own code):
generation_config.json's temperature (0.1 here; some Instruct repos quote 1e-06), `transformers_version`
strings, and whether the 3B's index lists an `lm_head.weight` (tied: transformers needs none).

What differs: the sizes (text hidden 64, 2 layers, 2/1 heads of head_dim 32, the least vLLM's CPU attention
takes, so the M-RoPE sections are [4, 6, 6] for the real [16, 24, 24]; vision 2 blocks of 32 wide, window
attention in block 0 and full attention in block 1, as the real 32 blocks alternate), `max_window_layers` (2)
and the tokenizer's learned part (vision_qwen_tokenizer.py). The embedding keeps all 151,936 rows; the ids with no token are zero rows.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

from .chat_templates import QWEN2_VL_CHAT_TEMPLATE
from .hub_files import save_shards, write_json
from .qwen3_tokenizer import BPE_VOCAB
from .vision_model import PREPROCESSOR_CONFIG as QWEN2_VL_PREPROCESSOR_CONFIG, legacy_name
from .vision_qwen_tokenizer import qwen_vl_generation_config, qwen_vl_token_ids, write_qwen_vl_tokenizer

QWEN25_VL_HUB_ID = "Qwen/Qwen2.5-VL-3B-Instruct"
ADDED = 22  # the repo's added tokens: <|endoftext|> .. <|file_sep|>
IDS = qwen_vl_token_ids(ADDED)
VOCAB_SIZE = 151936

CONFIG = {
    "architectures": ["Qwen2_5_VLForConditionalGeneration"],
    "attention_dropout": 0.0,
    "bos_token_id": IDS["<|endoftext|>"],
    "eos_token_id": IDS["<|im_end|>"],
    "vision_start_token_id": IDS["<|vision_start|>"],
    "vision_end_token_id": IDS["<|vision_end|>"],
    "vision_token_id": IDS["<|vision_pad|>"],
    "image_token_id": IDS["<|image_pad|>"],
    "video_token_id": IDS["<|video_pad|>"],
    "hidden_act": "silu",
    "hidden_size": 64,
    "initializer_range": 0.02,
    "intermediate_size": 256,
    "max_position_embeddings": 128000,
    "max_window_layers": 2,
    "model_type": "qwen2_5_vl",
    # 2 heads of 32 (vLLM's CPU attention takes no smaller), sharing 1 KV head: grouped as the 3B's 16/2 are.
    "num_attention_heads": 2,
    "num_hidden_layers": 2,
    "num_key_value_heads": 1,
    "rms_norm_eps": 1e-06,
    "rope_theta": 1000000.0,
    "sliding_window": 32768,
    "tie_word_embeddings": True,
    "torch_dtype": "bfloat16",
    "transformers_version": "4.41.2",
    "use_cache": True,
    "use_sliding_window": False,
    "vision_config": {
        "depth": 2,
        "hidden_act": "silu",
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_heads": 2,
        "in_chans": 3,
        "out_hidden_size": 64,
        "patch_size": 14,
        "spatial_merge_size": 2,
        "spatial_patch_size": 14,
        "window_size": 112,
        "fullatt_block_indexes": [1],
        "tokens_per_second": 2,
        "temporal_patch_size": 2,
    },
    "rope_scaling": {"type": "mrope", "mrope_section": [4, 6, 6]},
    "vocab_size": VOCAB_SIZE,
}

GENERATION_CONFIG = qwen_vl_generation_config(
    repetition_penalty=1.05, temperature=0.1, top_p=0.001, top_k=1, transformers_version="4.49.0.dev0"
)

# The 7B Qwen2-VL repo's, under Qwen2.5-VL's processor: the image processor is the same.
PREPROCESSOR_CONFIG = {**QWEN2_VL_PREPROCESSOR_CONFIG, "processor_class": "Qwen2_5_VLProcessor"}


@torch.no_grad()
def silence_tokenless_ids(embedding: torch.Tensor, used: int) -> None:
    """Zero the rows past the tokenizer's last id: with tied embeddings their logit is 0 whatever the hidden
    state, far below the best random one, so greedy decoding never picks an id that decodes to nothing."""
    embedding[used:] = 0


def write_tiny_qwen25_vl(out: Path) -> dict:
    """Write a ~10M-parameter (almost all embedding) random Qwen2.5-VL with the 3B repo's files to `out`."""
    torch.manual_seed(5)
    config = Qwen2_5_VLConfig.from_dict(copy.deepcopy(CONFIG))  # as from_pretrained reads the flat file
    model = Qwen2_5_VLForConditionalGeneration(config)
    silence_tokenless_ids(model.model.language_model.embed_tokens.weight, BPE_VOCAB + ADDED)
    model = model.to(torch.bfloat16)
    state = model.state_dict()
    weights = {legacy_name(k): v for k, v in state.items() if k != "lm_head.weight"}  # tied: not stored
    save_shards(weights, out, shards=2)
    write_json(out / "config.json", CONFIG)
    write_json(out / "generation_config.json", GENERATION_CONFIG)
    write_json(out / "preprocessor_config.json", PREPROCESSOR_CONFIG)
    write_qwen_vl_tokenizer(out, added=ADDED, chat_template=QWEN2_VL_CHAT_TEMPLATE, model_max_length=131072)
    return {"parameters": sum(p.numel() for p in model.parameters())}
