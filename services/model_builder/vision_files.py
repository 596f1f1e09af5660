"""File-writing helpers shared by the vision stand-ins (sharded weights as the hub repos store them)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file


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


def write_json(path: Path, value: dict) -> None:
    """JSON as the hub repos write it (indent 2, trailing newline)."""
    path.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n")
