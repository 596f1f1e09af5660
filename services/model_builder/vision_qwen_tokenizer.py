"""The Qwen-VL stand-ins' tokenizer: Qwen's byte-level BPE with the VL repos' added tokens at their real ids.

Qwen2.5-VL and Qwen3-VL ship the Qwen2 tokenizer of their text models (qwen3_tokenizer.py says what it
holds and how the stand-in's learned part and filler differ from the real merges): 151,643 BPE ids, then
the added tokens from 151643. Qwen2.5-VL's repos have the first 22 of Qwen3's 26 (through `<|file_sep|>`,
no `<tool_response>`/`<think>`), Qwen3-VL's all 26. Only the first 14 are `special`.
"""

from __future__ import annotations

from pathlib import Path

from .hub_files import write_json
from .qwen3_tokenizer import added_tokens, build_qwen3_tokenizer, write_qwen2_tokenizer


def qwen_vl_token_ids(added: int) -> dict[str, int]:
    """Each added token's real id."""
    return {token: i for i, token, _ in added_tokens(added)}


def qwen_vl_generation_config(**sampling) -> dict:
    """generation_config.json of the Qwen2.5-VL and Qwen3-VL repos: bos and pad `<|endoftext|>`, do_sample, stop
    on `<|im_end|>` or `<|endoftext|>`, then the repo's `sampling` keys in its order."""
    ids = qwen_vl_token_ids(3)
    endoftext, im_end = ids["<|endoftext|>"], ids["<|im_end|>"]
    return {
        "bos_token_id": endoftext,
        "pad_token_id": endoftext,
        "do_sample": True,
        "eos_token_id": [im_end, endoftext],
        **sampling,
    }


def write_qwen_vl_tokenizer(out: Path, *, added: int, chat_template: str, model_max_length: int) -> None:
    """tokenizer.json, vocab.json, merges.txt, tokenizer_config.json and chat_template.json, as the repos have."""
    write_qwen2_tokenizer(build_qwen3_tokenizer(added), out, added_tokens(added), chat_template, model_max_length)
    write_json(out / "chat_template.json", {"chat_template": chat_template})
