"""The adapter to transformers' continuous batching: the one module that touches the manager's internals.

One `ContinuousBatchingManager` over a loaded model, sized from the config. What this module reads or patches
of the manager's private state: the output router's handler table (`forget`), the cache allocators' ledger
(`cache_usage`), the scheduler and offloader (`_watch_preemption`), the cache's prefix search (`_watch_prefix_hits`), and each request state's token lists and
kwargs (`RequestSampler`, which plugs our own logits pipeline, sampling/pipeline.py, in place of the manager's
logits processors). A transformers upgrade that moves any of these breaks here and only here.

The manager runs its own background thread (the only thread that touches the model). Outputs reach
the event loop through `call_soon_threadsafe`, one callback per request.

When the paged cache runs out while several requests decode, the manager preempts: the newest requests
lose their KV blocks and are requeued (soft reset: prompt + tokens so far are prefilled again when they
resume, so their output continues exactly; one request always keeps going, and admission keeps every
request small enough to run alone, so every request finishes). Two hooks here make that visible and safe (see `_watch_preemption`).

Token ids only: the manager's `add_request(input_ids, ...)` takes a prompt as a list of token ids, and its model
runner calls `model(**batch_data)` with packed `input_ids`, positions and the paged cache, never `pixel_values`
or `inputs_embeds` (transformers 5.24, generation/continuous_batching/continuous_api.py and model_runner.py).
Image requests of a `vision_mode: native` model therefore go through static batches of `generate()` instead
(image_batcher.py); text requests to that model still come here, over the same VLM (its forward without
images is its language model's), sharing its weights.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import torch
from transformers import GenerationConfig
from transformers.generation.configuration_utils import ContinuousBatchingConfig

from services.common.config import ModelParams
from services.common.hf_models import ModelLoadError

from .kv_budget import KvBudget, paged_kv_budget
from .loader import LoadedModel
from .sampling.pipeline import Row, choose_tokens
from .sampling.spec import SamplingSpec
from .token_source import NO_CACHE_EVENTS, CacheEvents, OnOutput, TokenRequest

log = logging.getLogger(__name__)

SPEC_KEY = "proxyvision_sampling"  # the request kwarg that carries our SamplingSpec through the manager


class RequestSampler:
    """Drop-in for the manager's `ContinuousBatchingLogitsProcessorList` (same duck-typed interface).

    The manager samples the whole batch with one global RNG and knows only temperature/top-k/top-p. This sees
    which request owns each row of logits, hands the rows to our pipeline (each request's own parameters,
    generator, grammar and logprobs), and returns scores that are -inf everywhere but the chosen token, so
    the manager's own argmax picks exactly that token. Runs on the manager's generation thread."""

    # The manager reads these attributes.
    do_processing = True
    tensors_required = 0

    def __init__(self) -> None:
        self.supported_keys = {SPEC_KEY: SamplingSpec}
        self.ignored_keys: set[str] = set()
        self._states: list = []

    def check_kwargs(self, kwargs: dict) -> None:
        """Every request must carry its SamplingSpec (the engine always adds one)."""
        if not isinstance(kwargs.get(SPEC_KEY), SamplingSpec):
            raise ValueError("request is missing its SamplingSpec")

    def fill_defaults(self, int32_tensor: torch.Tensor) -> None:
        """No tensor arguments: the specs live on the request states."""

    def prepare_tensor_args(self, requests_in_batch: list, arg_storage: torch.Tensor) -> torch.Tensor:
        """Remember which request owns each logits row (rows follow requests that have a new token)."""
        self._states = [r.state for r in requests_in_batch if r.has_new_token]
        return arg_storage

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, _args: torch.Tensor) -> torch.Tensor:
        """Pick one token per row; return one-hot scores (0 at the token, -inf elsewhere)."""
        # The manager passes one row per request in the batch; only the first len(self._states) (requests with a
        # new token, in order) matter. The rest belong to requests still prefilling and are discarded.
        states = self._states[: scores.shape[0]]
        if all(state.logit_processor_kwargs[SPEC_KEY].plain_greedy for state in states):
            return scores  # all plain greedy: the manager's own argmax over the raw scores is the same choice
        rows = [_row(state) for state in states]
        chosen = choose_tokens(scores, rows)
        # Rows past the requests with a new token get token 0: valid, and discarded by the manager.
        picks = torch.zeros(scores.shape[0], dtype=torch.long, device=scores.device)
        picks[: len(rows)] = chosen
        out = torch.full_like(scores, float("-inf"))
        out.scatter_(1, picks.unsqueeze(1), 0.0)
        return out


def _row(state) -> Row:
    spec = state.logit_processor_kwargs[SPEC_KEY]
    generated = generated_so_far(state)
    return Row(spec, generated, state.initial_tokens + state.generated_tokens if spec.repetition_penalty != 1.0 else [])


def generated_so_far(state) -> list[int]:
    """All tokens a request has generated. After a preemption the manager restarts the request with its
    earlier output folded into the prompt (`initial_tokens` past `_true_initial_tokens`), and
    `generated_tokens` holds only what came since; penalties must count both, as the output does."""
    if state._true_initial_tokens:
        return state.initial_tokens[state._true_initial_tokens :] + state.generated_tokens
    return state.generated_tokens


class ContinuousBatcher:
    """Starts, feeds and stops one `ContinuousBatchingManager`."""

    image_capacity_tokens = 0  # takes no images (see the module docstring)

    def __init__(self, loaded: LoadedModel, params: ModelParams, events: CacheEvents = NO_CACHE_EVENTS) -> None:
        self.budget: KvBudget = paged_kv_budget(loaded, params)
        generation_config = GenerationConfig(
            # Our RequestSampler returns one-hot scores, so the manager's own argmax picks its choice.
            do_sample=False,
            max_new_tokens=loaded.max_context,
            eos_token_id=loaded.eos_token_ids,
            pad_token_id=loaded.tokenizer.pad_token_id
            if loaded.tokenizer.pad_token_id is not None
            else loaded.eos_token_ids[0],
        )
        cb_config = ContinuousBatchingConfig(
            page_size=params.block_size,
            num_blocks=self.budget.num_blocks,
            max_batch_tokens=max(params.prefill_chunk_size, params.max_num_seqs),
            max_requests_per_batch=params.max_num_seqs,
            # Prefix caching: a prompt's full blocks already in the cache (an earlier turn, a shared system prompt)
            # are reused instead of prefilled again.
            allow_block_sharing=params.prefix_caching,
            # The sampler reads Python-side request state each step: graphs and double-buffering would
            # replay or reorder it.
            use_cuda_graph=False,
            use_async_batching=False,
        )
        self._device = loaded.device
        self.manager = loaded.model.init_continuous_batching(
            generation_config=generation_config, continuous_batching_config=cb_config
        )
        self.manager.logit_processor = RequestSampler()
        self.manager.start()
        self._wait_until_running()
        self.preemptions = 0  # requests preempted because the KV cache was full (written by the loop thread)
        self._on_preempt = events.on_preempt  # called on the loop thread with each preemption's count
        self._watch_preemption(params.mem)
        self.prefix_queried_tokens = 0  # prompt tokens looked up in the prefix cache (loop thread writes)
        self.prefix_hit_tokens = 0  # of those, tokens whose KV blocks were reused instead of prefilled
        self._watch_prefix_hits(events.on_prefix_lookup)

    def _watch_prefix_hits(self, on_lookup: Callable[[int, int], None]) -> None:
        """Count what the prefix cache saves: the scheduler asks the cache for each request's longest cached
        prefix once, before its first prefill (`search_prefix_match`). Runs on the manager's thread."""
        cache = self.manager.batch_processor.cache
        search = cache.search_prefix_match

        def search_prefix_match(request_id: str, prompt_ids: list[int]) -> int:
            hit = search(request_id, prompt_ids)
            self.prefix_queried_tokens += len(prompt_ids)
            self.prefix_hit_tokens += hit
            on_lookup(len(prompt_ids), hit)
            return hit

        cache.search_prefix_match = search_prefix_match

    def _wait_until_running(self, timeout: float = 120.0) -> None:
        """The manager allocates its cache on its own thread; a failure there (e.g. a cache the device
        cannot hold) must fail the load now, not surface later as a loop that dies at every restart."""
        deadline = time.monotonic() + timeout
        while self.manager.batch_processor is None:
            if not self.manager.is_running() or self.fatal_error is not None:
                self.manager.destroy()
                raise ModelLoadError(f"the batching loop failed to start: {self.fatal_error}")
            if time.monotonic() > deadline:
                raise ModelLoadError(f"the batching loop did not start in {timeout:.0f}s")
            time.sleep(0.01)

    def _watch_preemption(self, mem_mib: int) -> None:
        """Count and log preemptions, and keep a preempted request from waiting forever.

        After preempting, the scheduler admits no waiting request until an active one *finishes*
        (`block_new_requests`, cleared only on completion). If the active requests are cancelled instead
        (a client left, a deadline passed), nothing ever finishes: the preempted request and every new
        one would wait forever. A cancellation frees the blocks just as a completion does, so it lifts the
        block too. Both hooks run on the manager's thread."""
        processor = self.manager.batch_processor
        scheduler, offloader = processor.scheduler, processor.offloading_manager
        offload, clear_cancelled = offloader.offload_requests, scheduler.clear_cancelled_requests

        def offload_requests() -> bool:
            before = len(scheduler.active_requests)
            offloaded = offload()
            preempted = before - len(scheduler.active_requests)
            if preempted > 0:
                self.preemptions += preempted
                self._on_preempt(preempted)
                log.log(
                    logging.WARNING if self.preemptions == preempted else logging.INFO,
                    "KV cache full (%d tokens, mem=%d MiB): preempted %d request(s), %d so far; they resume "
                    "when blocks free up (recomputed). A larger mem or a lower max_num_seqs avoids it",
                    self.budget.capacity_tokens,
                    mem_mib,
                    preempted,
                    self.preemptions,
                )
            return offloaded

        def clear_cancelled_requests():
            cancelled = clear_cancelled()
            if cancelled:
                scheduler.block_new_requests = False
            return cancelled

        offloader.offload_requests = offload_requests
        scheduler.clear_cancelled_requests = clear_cancelled_requests

    @property
    def alive(self) -> bool:
        """False once the background loop has died or was stopped."""
        return self.manager.is_running()

    @property
    def fatal_error(self) -> Exception | None:
        """Why the loop died, if it did."""
        return self.manager.background_thread_status.fatal_error

    def cache_usage(self) -> float:
        """Fraction of the paged KV cache held by requests now (read from any thread: a gauge, not an invariant).

        Blocks kept only for prefix reuse count as free, as in vLLM: the manager evicts them under pressure."""
        processor = self.manager.batch_processor
        if processor is None:
            return 0.0
        cache = processor.cache
        total = cache.num_sectors * cache.bytes_per_sector
        free = cache.compute_free_capacity(relative=False)
        free += sum(len(a.ledger.cached_blocks) * a.bytes_per_block for a in cache.cache_allocators.values())
        return max(0.0, min(1.0, 1.0 - free / total)) if total else 0.0

    def submit(self, request: TokenRequest, on_output: OnOutput) -> None:
        """Queue a request; `on_output(GenerationOutput)` runs on the calling event loop. Loop thread only."""
        if request.images:
            raise ValueError("continuous batching takes token ids only: image requests go to the image batcher")
        asyncio.get_running_loop()  # register_result_handler binds the callback to the running loop
        self.manager.register_result_handler(request.request_id, on_output)
        accepted = self.manager.add_request(
            request.prompt_ids,
            request_id=request.request_id,
            max_new_tokens=request.max_new_tokens,
            streaming=True,
            **{SPEC_KEY: request.spec.bind(self._device)},
        )
        if accepted is None:
            self.forget(request.request_id)
            raise RuntimeError("the batching loop is not accepting requests")

    def cancel(self, request_id: str) -> None:
        """Abort a request: the loop frees its slot and KV blocks on its next step."""
        self.manager.cancel_request(request_id)
        self.forget(request_id)

    def forget(self, request_id: str) -> None:
        """Drop the output callback of a request that will deliver nothing more to us."""
        with self.manager.output_router._lock:
            self.manager.output_router.result_handlers.pop(request_id, None)

    def stop(self) -> None:
        """Stop the loop and free the cache (blocking: call from a worker thread)."""
        try:
            self.manager.stop(block=True, timeout=30, hard_stop=True)
        finally:
            self.manager.destroy()
