"""The Qwen-VL stand-ins' tokenizer: Qwen's byte-level BPE with the VL repos' added tokens at their real ids.

Qwen2.5-VL and Qwen3-VL ship the Qwen2 tokenizer of their text models (qwen3_tokenizer.py says what it
holds and how the stand-in's learned part and filler differ from the real merges): 151,643 BPE ids, then
the added tokens from 151643. Qwen2.5-VL's repos have the first 22 of Qwen3's 26 (through `<|file_sep|>`,
no `<tool_response>`/`<think>`), Qwen3-VL's all 26. Only the first 14 are `special`.
"""

from __future__ import annotations

import json
from pathlib import Path

from .qwen3_tokenizer import ADDED_TOKENS, BPE_VOCAB, build_qwen3_tokenizer


def qwen_vl_token_ids(added: int) -> dict[str, int]:
    """Each added token's real id."""
    return {token: BPE_VOCAB + i for i, (token, _) in enumerate(ADDED_TOKENS[:added])}


def write_qwen_vl_tokenizer(out: Path, *, added: int, chat_template: str, model_max_length: int) -> None:
    """tokenizer.json, vocab.json, merges.txt, tokenizer_config.json and chat_template.json, as the repos have."""
    tok = build_qwen3_tokenizer(added)
    tok.save(str(out / "tokenizer.json"))
    model = json.loads(tok.to_str())["model"]
    (out / "vocab.json").write_text(json.dumps(model["vocab"], ensure_ascii=False) + "\n")
    merges = [" ".join(m) if isinstance(m, list) else m for m in model["merges"]]
    (out / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    tokens = ADDED_TOKENS[:added]
    config = {
        "add_prefix_space": False,
        "added_tokens_decoder": {
            str(BPE_VOCAB + i): {
                "content": token,
                "lstrip": False,
                "normalized": False,
                "rstrip": False,
                "single_word": False,
                "special": special,
            }
            for i, (token, special) in enumerate(tokens)
        },
        "additional_special_tokens": [t for t, special in tokens[1:] if special],  # <|endoftext|> is pad
        "bos_token": None,
        "chat_template": chat_template,
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|im_end|>",
        "errors": "replace",
        "model_max_length": model_max_length,
        "pad_token": "<|endoftext|>",
        "split_special_tokens": False,
        "tokenizer_class": "Qwen2Tokenizer",
        "unk_token": None,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")
    (out / "chat_template.json").write_text(json.dumps({"chat_template": chat_template}, indent=2) + "\n")
