"""A random-weight Qwen3-VL in the layout of Qwen/Qwen3-VL-2B-Instruct.

Matched, file for file (the repo as released with transformers 4.57):
- config.json nested: `Qwen3VLForConditionalGeneration`, `model_type` qwen3_vl, the token ids at the top level
  (image 151655, video 151656, vision_start 151652, vision_end 151653), `tie_word_embeddings` true;
  `text_config` (`qwen3_vl_text`: `head_dim` 128, `rope_scaling` {mrope_interleaved, mrope_section
  [24, 20, 20], rope_type default}, `rope_theta` 5000000, `max_position_embeddings` 262144, bos 151643,
  eos 151645, `vocab_size` 151936, `dtype` bfloat16) and `vision_config` (`model_type` qwen3_vl, patch 16,
  `in_channels`, `num_position_embeddings` 2304, `deepstack_visual_indexes`, `out_hidden_size`,
  gelu_pytorch_tanh);
- model.safetensors in bfloat16 with the repo's names (`model.language_model.*`, `model.visual.*`, the
  `deepstack_merger_list`); tied, so no `lm_head.weight`;
- generation_config.json: bos/pad 151643, eos [151645, 151643], do_sample, temperature 0.7, top_p 0.8,
  top_k 20, repetition_penalty 1.0 (the card's settings for the Instruct models);
- preprocessor_config.json: `size` {shortest_edge 65536, longest_edge 16777216} pixels, patch 16,
  temporal 2, merge 2, mean/std 0.5, `Qwen2VLImageProcessorFast` (transformers picks the PIL one without
  torchvision), processor_class `Qwen3VLProcessor`; video_preprocessor_config.json (`Qwen3VLVideoProcessor`),
  present in the repo though the captioner never loads it;
- tokenizer.json, vocab.json, merges.txt, tokenizer_config.json (`Qwen2Tokenizer`, the 26 added tokens at
  151643..151668, model_max_length 262144) and chat_template.json with Qwen3-VL's own template
  (chat_templates.QWEN3_VL_CHAT_TEMPLATE: no default system prompt).

Not checked against the repo's bytes here: the chat template is rebuilt from its rules (see
chat_templates.QWEN3_VL_CHAT_TEMPLATE), and generation_config.json's values are the model card's.

What differs: the sizes (text hidden 64, 2 layers, 4/2 heads of the real head_dim 128, so the real M-RoPE
sections fit; vision 2 blocks of 32 wide with DeepStack taps after blocks 0 and 1, for the real 24 blocks
with taps at 5, 11, 17) and the tokenizer's learned part (vision_qwen_tokenizer.py). The embedding keeps
all 151,936 rows; the ids with no token are zero rows.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

from .chat_templates import QWEN3_VL_CHAT_TEMPLATE
from .hub_files import data_json, save_shards, write_json
from .qwen3_tokenizer import BPE_VOCAB
from .vision_qwen25 import silence_tokenless_ids
from .vision_qwen_tokenizer import qwen_vl_generation_config, qwen_vl_token_ids, write_qwen_vl_tokenizer

QWEN3_VL_HUB_ID = "Qwen/Qwen3-VL-2B-Instruct"
ADDED = 26
IDS = qwen_vl_token_ids(ADDED)
VOCAB_SIZE = 151936

CONFIG = {
    "architectures": ["Qwen3VLForConditionalGeneration"],
    "image_token_id": IDS["<|image_pad|>"],
    "model_type": "qwen3_vl",
    "text_config": {
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": IDS["<|endoftext|>"],
        "dtype": "bfloat16",
        "eos_token_id": IDS["<|im_end|>"],
        "head_dim": 128,
        "hidden_act": "silu",
        "hidden_size": 64,
        "initializer_range": 0.02,
        "intermediate_size": 192,
        "max_position_embeddings": 262144,
        "model_type": "qwen3_vl_text",
        "num_attention_heads": 4,
        "num_hidden_layers": 2,
        "num_key_value_heads": 2,
        "rms_norm_eps": 1e-06,
        "rope_scaling": {"mrope_interleaved": True, "mrope_section": [24, 20, 20], "rope_type": "default"},
        "rope_theta": 5000000,
        "tie_word_embeddings": True,
        "use_cache": True,
        "vocab_size": VOCAB_SIZE,
    },
    "tie_word_embeddings": True,
    "transformers_version": "4.57.0.dev0",
    "video_token_id": IDS["<|video_pad|>"],
    "vision_config": {
        "deepstack_visual_indexes": [0, 1],
        "depth": 2,
        "hidden_act": "gelu_pytorch_tanh",
        "hidden_size": 32,
        "in_channels": 3,
        "initializer_range": 0.02,
        "intermediate_size": 64,
        "model_type": "qwen3_vl",
        "num_heads": 2,
        "num_position_embeddings": 2304,
        "out_hidden_size": 64,
        "patch_size": 16,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
    },
    "vision_end_token_id": IDS["<|vision_end|>"],
    "vision_start_token_id": IDS["<|vision_start|>"],
}

GENERATION_CONFIG = qwen_vl_generation_config(
    top_k=20, top_p=0.8, repetition_penalty=1.0, temperature=0.7, transformers_version="4.56.0"
)

# The repo's image and video processor configs (16-pixel patches, 2x2 merge), as it ships them.
PREPROCESSOR_CONFIG = data_json("qwen3-vl/preprocessor_config.json")
VIDEO_PREPROCESSOR_CONFIG = data_json("qwen3-vl/video_preprocessor_config.json")


def write_tiny_qwen3_vl(out: Path) -> dict:
    """Write a ~10M-parameter (almost all embedding) random Qwen3-VL with the 2B repo's files to `out`."""
    torch.manual_seed(6)
    config = Qwen3VLConfig.from_dict(copy.deepcopy(CONFIG))
    model = Qwen3VLForConditionalGeneration(config)
    silence_tokenless_ids(model.model.language_model.embed_tokens.weight, BPE_VOCAB + ADDED)
    model = model.to(torch.bfloat16)
    weights = {k: v for k, v in model.state_dict().items() if k != "lm_head.weight"}  # tied: not stored
    save_shards(weights, out, shards=1)
    write_json(out / "config.json", CONFIG)
    write_json(out / "generation_config.json", GENERATION_CONFIG)
    write_json(out / "preprocessor_config.json", PREPROCESSOR_CONFIG)
    write_json(out / "video_preprocessor_config.json", VIDEO_PREPROCESSOR_CONFIG)
    write_qwen_vl_tokenizer(out, added=ADDED, chat_template=QWEN3_VL_CHAT_TEMPLATE, model_max_length=262144)
    return {"parameters": sum(p.numel() for p in model.parameters())}
