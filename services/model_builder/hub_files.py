"""File-writing helpers shared by the stand-ins: JSON, sharded weights and tokenizer files as the hub repos
store them."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer


def save_shards(weights: dict[str, torch.Tensor], out: Path, shards: int) -> None:
    """`model.safetensors`, or `model-0000i-of-0000n.safetensors` + `model.safetensors.index.json` (the hub's
    sharded layout, which `from_pretrained` reads through the index) when `shards` > 1."""
    weights = {name: tensor.contiguous() for name, tensor in weights.items()}
    if shards == 1:
        save_file(weights, out / "model.safetensors", metadata={"format": "pt"})
        return
    names = sorted(weights)
    per = -(-len(names) // shards)
    index: dict[str, str] = {}
    for i in range(shards):
        file = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        part = {name: weights[name] for name in names[i * per : (i + 1) * per]}
        save_file(part, out / file, metadata={"format": "pt"})
        index.update(dict.fromkeys(part, file))
    total = sum(t.numel() * t.element_size() for t in weights.values())
    (out / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": index}, indent=2) + "\n"
    )


# Files that stand in the hub repos as they ship them (processor configs, chat templates), one folder per family.
DATA = Path(__file__).parent / "data"


def data_text(name: str) -> str:
    """`data/<name>` exactly (a template must not gain a newline)."""
    return (DATA / name).read_text(encoding="utf-8")


def data_json(name: str) -> dict:
    """`data/<name>`, parsed: written back by `write_json`, it is byte for byte the file."""
    return json.loads(data_text(name))


def write_json(path: Path, value: dict) -> None:
    """JSON as the hub repos write it (indent 2, trailing newline)."""
    path.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n")


def added_tokens_decoder(tokens: Iterable[tuple[int, str, bool]]) -> dict[str, dict]:
    """tokenizer_config.json's `added_tokens_decoder` for (id, content, special) triples, in the given order."""
    return {
        str(i): {
            "content": content,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": special,
        }
        for i, content, special in tokens
    }


def write_bpe_files(
    tok: Tokenizer, out: Path, *, vocab_below: int | None = None, vocab_indent: int | None = None
) -> None:
    """tokenizer.json, and the slow tokenizer's vocab.json and merges.txt beside it.

    vocab.json holds every id by default, unindented (the Qwen repos); `vocab_below` keeps only the ids under it
    and `vocab_indent` indents it (SmolVLM's, whose added tokens live in added_tokens.json instead)."""
    tok.save(str(out / "tokenizer.json"))
    model = json.loads(tok.to_str())["model"]
    vocab = {t: i for t, i in model["vocab"].items() if vocab_below is None or i < vocab_below}
    (out / "vocab.json").write_text(json.dumps(vocab, indent=vocab_indent, ensure_ascii=False) + "\n")
    merges = [" ".join(m) if isinstance(m, list) else m for m in model["merges"]]
    (out / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
