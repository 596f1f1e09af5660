"""Size the paged KV cache from the operator's memory budget, never from what the machine has.

Left unsized, transformers' manager fills free device memory (on CPU: system RAM), which on CPU makes
attention masks huge and generation several times slower, and on a shared GPU starves the other engine.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from services.common.config import ModelParams
from services.common.hf_models import MIB, kv_bytes_per_token

if TYPE_CHECKING:  # loader.py imports torch and transformers: only its type is needed here
    from .loader import LoadedModel


@dataclass(frozen=True)
class KvBudget:
    """The KV cache a memory budget buys."""

    bytes_per_token: int
    page_size: int
    num_blocks: int

    @property
    def capacity_tokens(self) -> int:
        """Tokens of KV (prompt + completion, all sequences together) the cache holds."""
        return self.num_blocks * self.page_size


def kv_budget(
    text_config, dtype: torch.dtype, mem_mib: int, page_size: int, *, max_useful_tokens: int | None = None
) -> KvBudget:
    """The cache that fits `mem_mib` MiB; at least one block so a tiny budget still serves short prompts.

    `max_useful_tokens` (max_num_seqs x max context) caps it: more cache than every sequence in flight can
    fill is dead weight, and without flash attention the attention masks grow with the cache size.
    """
    per_token = kv_bytes_per_token(text_config, dtype)
    num_blocks = max(1, (mem_mib * MIB) // (per_token * page_size))
    if max_useful_tokens is not None:
        num_blocks = min(num_blocks, max(1, -(-max_useful_tokens // page_size)))
    return KvBudget(bytes_per_token=per_token, page_size=page_size, num_blocks=num_blocks)


def paged_kv_budget(loaded: LoadedModel, params: ModelParams) -> KvBudget:
    """The paged cache of a model's text requests (either backend's): `params.mem` MiB in `block_size` pages,
    capped at `max_num_seqs` whole contexts."""
    return kv_budget(
        loaded.text_config,
        loaded.dtype,
        params.mem,
        params.block_size,
        max_useful_tokens=params.max_num_seqs * loaded.max_context,
    )
