"""Contender (a): the bench model under transformers' continuous-batching manager, in this process.

No gRPC, no HTTP, no detokenization: the ceiling our engine can approach. The cache is sized exactly as
the engine sizes it, so the comparison isolates the serving overhead.
"""

from __future__ import annotations

import asyncio
import time

from services.common.config import ModelParams
from services.text_engine.engine.kv_budget import kv_budget
from services.text_engine.engine.loader import load_text_model

from .load import StreamResult


class InProcessManager:
    """Owns one manager; `stream` is a load.StreamFn."""

    def __init__(self, model_dir: str, params: ModelParams, **cb_overrides) -> None:
        """`cb_overrides`: more ContinuousBatchingConfig fields (the A/Bs of benchmarks/engine_ab.py)."""
        from transformers import GenerationConfig
        from transformers.generation.configuration_utils import ContinuousBatchingConfig

        self.loaded = load_text_model(model_dir, dtype=params.dtype, device="cpu")
        budget = kv_budget(self.loaded.text_config, self.loaded.dtype, params.mem, params.block_size)
        self.manager = self.loaded.model.init_continuous_batching(
            generation_config=GenerationConfig(
                do_sample=False, eos_token_id=self.loaded.eos_token_ids, pad_token_id=self.loaded.eos_token_ids[0]
            ),
            continuous_batching_config=ContinuousBatchingConfig(
                page_size=params.block_size,
                num_blocks=budget.num_blocks,
                max_batch_tokens=params.prefill_chunk_size,
                max_requests_per_batch=params.max_num_seqs,
                use_cuda_graph=False,
                use_async_batching=False,
                **cb_overrides,
            ),
        )
        self.manager.start()
        self._n = 0

    async def stream(self, prompt: str, max_tokens: int) -> StreamResult:
        ids = self.loaded.tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=True, return_dict=False
        )
        queue: asyncio.Queue = asyncio.Queue()
        self._n += 1
        request_id = f"bench-{self._n}"
        started = time.perf_counter()
        self.manager.register_result_handler(request_id, queue.put_nowait)
        self.manager.add_request(list(ids), request_id=request_id, max_new_tokens=max_tokens, streaming=True)
        first = None
        while True:
            out = await queue.get()
            if first is None and out.generated_tokens:
                first = time.perf_counter() - started
            if out.is_finished():
                return StreamResult(first or time.perf_counter() - started, len(out.generated_tokens))

    def close(self) -> None:
        self.manager.stop(block=True, timeout=30)
