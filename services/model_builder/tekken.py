"""A small but real `tekken.json`: Mistral's native tokenizer file, as the Ministral-3 hub repos ship it.

The BPE part is the head of a real tekken vocabulary: `data/tekken_vocab_head.json` holds the pre-tokenizer
pattern and the first 3,096 ranks of `tekken_240911.json` from the mistral-common wheel (1.13.1). In a
tiktoken-style BPE the merges are implied by the ranks, and every token is built from lower-ranked ones,
so any prefix of the ranks is itself a valid vocabulary: text splits exactly as the real tokenizer would
split it with a vocabulary cut at that rank.

The special tokens follow the real layout: 1,000 of them before the BPE ranks, the named ones at their real
ids (`<s>` 1, `</s>` 2, `[INST]` 3, `[/INST]` 4, `[IMG]` 10, `<pad>` 11, `[SYSTEM_PROMPT]` 17, `[ARGS]` 32,
`[THINK]` 34, `[/THINK]` 35, ...) and `<SPECIAL_N>` fillers elsewhere. Both readers of the format accept
the file: transformers' `MistralConverter` (`TokenizersBackend`) and mistral-common's `Tekkenizer`.
"""

from __future__ import annotations

import json
from pathlib import Path

VOCAB_HEAD = Path(__file__).parent / "data" / "tekken_vocab_head.json"
NUM_SPECIAL_TOKENS = 1000  # the real file's default_num_special_tokens: BPE ranks start at id 1000
VERSION = "v13"

# id -> token for the named special tokens; every other id below NUM_SPECIAL_TOKENS is `<SPECIAL_id>`.
NAMED_SPECIAL_TOKENS = {
    0: "<unk>",
    1: "<s>",
    2: "</s>",
    3: "[INST]",
    4: "[/INST]",
    5: "[AVAILABLE_TOOLS]",
    6: "[/AVAILABLE_TOOLS]",
    7: "[TOOL_RESULTS]",
    8: "[/TOOL_RESULTS]",
    9: "[TOOL_CALLS]",
    10: "[IMG]",
    11: "<pad>",
    12: "[IMG_BREAK]",
    13: "[IMG_END]",
    14: "[PREFIX]",
    15: "[MIDDLE]",
    16: "[SUFFIX]",
    17: "[SYSTEM_PROMPT]",
    18: "[/SYSTEM_PROMPT]",
    19: "[TOOL_CONTENT]",
    24: "[AUDIO]",
    25: "[BEGIN_AUDIO]",
    32: "[ARGS]",
    33: "[CALL_ID]",
    34: "[THINK]",
    35: "[/THINK]",
}


def special_tokens() -> list[str]:
    """All special tokens in id order (ids 0 .. NUM_SPECIAL_TOKENS - 1)."""
    return [NAMED_SPECIAL_TOKENS.get(i, f"<SPECIAL_{i}>") for i in range(NUM_SPECIAL_TOKENS)]


def tekken_json(vocab_size: int, image: dict | None = None) -> dict:
    """The tekken.json content for a vocabulary of `vocab_size` ids (special tokens included). `image`: the
    image encoder's section of a vision model's file (`image_patch_size`, `max_image_size`,
    `spatial_merge_size`), from which mistral-common builds its `ImageEncoder`."""
    head = json.loads(VOCAB_HEAD.read_text())
    ranks = vocab_size - NUM_SPECIAL_TOKENS
    if not 256 <= ranks <= len(head["token_bytes"]):
        raise ValueError(f"vocab_size must leave 256..{len(head['token_bytes'])} BPE ranks, not {ranks}")
    return {
        "config": {
            "pattern": head["pattern"],
            "num_vocab_tokens": ranks,
            "default_vocab_size": vocab_size,
            "default_num_special_tokens": NUM_SPECIAL_TOKENS,
            "version": VERSION,
        },
        # token_str is informative only (readers decode token_bytes); None where the bytes are not UTF-8.
        "vocab": [
            {"rank": rank, "token_bytes": b64, "token_str": _text(b64)}
            for rank, b64 in enumerate(head["token_bytes"][:ranks])
        ],
        "special_tokens": [
            {"rank": rank, "token_str": token, "is_control": True} for rank, token in enumerate(special_tokens())
        ],
        **({"image": image} if image is not None else {}),
    }


def write_tekken(out: Path, vocab_size: int, image: dict | None = None) -> None:
    """Write `out/tekken.json`."""
    (out / "tekken.json").write_text(json.dumps(tekken_json(vocab_size, image), ensure_ascii=False) + "\n")


def _text(b64: str) -> str | None:
    import base64

    try:
        return base64.b64decode(b64).decode("utf-8")
    except UnicodeDecodeError:
        return None
