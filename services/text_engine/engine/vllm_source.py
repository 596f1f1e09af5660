"""The adapter to vLLM's engine core (`backend: vllm`): the one module that imports vLLM.

One `AsyncLLM` per load, as vLLM's own OpenAI server holds one: its engine core runs in child processes
(scheduler, paged KV cache, continuous batching, the model's forward passes) and talks to this process over
ZeroMQ, so our event loop never runs a forward pass. This class is the same `TokenSource` the engine drives
for transformers (token_source.py): prompts go in as token ids and come back as token ids; the output
pipeline (detokenizer, reasoning and tool parsers, stop strings, logprob formatting) stays ours, so both
backends answer alike at the API.

What maps to vLLM, per request: temperature, top-p/k, min-p, the three penalties, seed, logit_bias,
min_tokens, ignore_eos, max_tokens, top logprobs (`SamplingParams`); the end-of-sequence ids of the
checkpoint and the request's `stop_token_ids` (vLLM then stops on any of them, and holds them back before
`min_tokens`). Cancellation cancels the `generate()` task, which aborts the request in the engine core.
Stop strings are matched by our pipeline, which then cancels the request as it does on transformers.

Grammars (response_format, a required or named tool_choice) are ours too: vllm_grammar.py runs our
`Constraint` as a vLLM logits processor in its worker.

Images (`vision_mode: native`): admission sizes each image for its token budget (the family's `handed_over`,
images.py) and counts its tokens; here the prompt goes to vLLM with the sized images beside it and the processor
arguments that keep their sizes (vllm_core.image_prompt), so vLLM's processor encodes each to the grid ours would
and the prompt's image tokens are the ones admission counted. Images and text share vLLM's one KV cache and its
continuous batching (on transformers, images run in static batches beside it). Families whose processor sizes
images itself (tiles, a fixed size) are refused at load.

Budget: `mem` is the KV cache (`kv_cache_memory_bytes`), sized by the same `paged_kv_budget` as transformers'
cache, so both hold the same number of tokens. Unloading shuts the engine core down (its processes exit, its
memory goes back to the system).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from services.common.config import ModelEntry
from services.common.hf_models import ModelLoadError
from services.common.vllm_core import first_line, image_prompt, start_vllm

from .kv_budget import KvBudget, paged_kv_budget
from .loader import LoadedModel
from .sampling.spec import SampledToken, SamplingSpec
from .token_source import NO_CACHE_EVENTS, CacheEvents, OnOutput, TokenProgress, TokenRequest
from .vllm_overrides import hf_overrides

# vllm_grammar.py imports vLLM: its name is what vLLM's worker imports, and `grammar_args` is imported when used.
LOGITS_PROCESSOR = "services.text_engine.engine.vllm_grammar:GrammarLogitsProcessor"

log = logging.getLogger(__name__)

# Images one prompt may carry on a natively seeing model: vLLM sizes its encoder cache for this many. The
# gateway's `images.max_images_per_request` (default 8) refuses more before they get here.
MAX_IMAGES_PER_PROMPT = 16


@dataclass
class EngineStats:
    """What vLLM's stat loggers last reported (written on the event loop); counts go to the engine's callbacks."""

    kv_cache_usage: float = 0.0


class VllmTokenSource:
    """Starts, feeds and stops one vLLM `AsyncLLM` over a checkpoint (text requests, and image requests for a
    natively seeing model)."""

    def __init__(self, loaded: LoadedModel, entry: ModelEntry, events: CacheEvents = NO_CACHE_EVENTS) -> None:
        params = entry.params
        self.budget: KvBudget = paged_kv_budget(loaded, params)
        self.stats = EngineStats()
        self._events = events
        self._eos = list(loaded.eos_token_ids)
        self._source, self._revision, self._vocab_size = entry.source, entry.revision, loaded.text_config.vocab_size
        self._requests: dict[str, asyncio.Task] = {}  # running requests' generate() tasks
        self._family = loaded.family if entry.is_native_vision else None
        if self._family is not None and not self._family.hands_over:
            raise ModelLoadError(
                f"{entry.source!r}: vision_mode native on vLLM takes the families whose images it can size for "
                f"vLLM's processor (Qwen2-VL, Qwen2.5-VL, Qwen3-VL, Mistral3), not {self._family.name}; serve it with "
                "backend: transformers"
            )
        # Images share the one KV cache with text (vLLM batches them alike): an image request may use all of it.
        self.image_capacity_tokens = self.budget.capacity_tokens if self._family is not None else 0
        core = start_vllm(
            loaded,
            entry,
            # The same usable cache as the transformers backend's for `mem` (its pages are block_size tokens).
            kv_blocks=self.budget.num_blocks,
            bytes_per_token=self.budget.bytes_per_token,
            stat_loggers=[self._stat_logger_factory()],
            # What vLLM does not read from config.json itself (Ministral-3's llama-4 attention scaling).
            hf_overrides=hf_overrides(loaded.config),
            max_num_batched_tokens=max(params.prefill_chunk_size, params.max_num_seqs),
            enable_chunked_prefill=True,
            enable_prefix_caching=params.prefix_caching,
            # Prompts arrive as token ids and outputs leave as token ids: our tokenizer and detokenizer own text.
            # vLLM's image processing needs the checkpoint's processor, tokenizer included.
            skip_tokenizer_init=self._family is None,
            # A vision-language checkpoint serving text only (the brief's Mistral3 in proxy mode): vLLM runs its
            # language model without the image processor (which would need the tokenizer) or image inputs.
            language_model_only=self._family is None,
            logits_processors=[LOGITS_PROCESSOR],
            **(
                {"limit_mm_per_prompt": {"image": MAX_IMAGES_PER_PROMPT, "video": 0}}
                if self._family is not None
                else {}
            ),
        )
        self.llm, self._sampling_params_cls, self._delta = core.llm, core.sampling_params, core.delta

    def _stat_logger_factory(self):
        from vllm.v1.metrics.loggers import StatLoggerBase

        stats, on_preempt, on_prefix_lookup = self.stats, self._events.on_preempt, self._events.on_prefix_lookup

        class _Recorder(StatLoggerBase):
            """Keeps the last step's scheduler figures for GetModelInfo and our metrics."""

            def __init__(self, vllm_config, engine_index: int = 0) -> None:
                pass

            def record(self, scheduler_stats, iteration_stats, mm_cache_stats=None, engine_idx: int = 0) -> None:
                if scheduler_stats is None:
                    return
                stats.kv_cache_usage = scheduler_stats.kv_cache_usage
                prefix = scheduler_stats.prefix_cache_stats
                if prefix.preempted_requests:  # requests resuming after a preemption: each counted once
                    on_preempt(prefix.preempted_requests)
                # A resumed request's lookup is not a new prompt's: counted apart by vLLM, left out here.
                queried, hit = prefix.queries - prefix.preempted_queries, prefix.hits - prefix.preempted_hits
                if queried > 0:
                    on_prefix_lookup(queried, hit)

            def log_engine_initialized(self) -> None:
                pass

        return _Recorder

    # TokenSource --------------------------------------------------------------------------------------
    @property
    def alive(self) -> bool:
        """False once the engine core has died or was shut down."""
        return not self.llm.errored

    @property
    def fatal_error(self) -> Exception | None:
        """Why the engine core died, if it did."""
        return self.llm.dead_error if self.llm.errored else None

    def cache_usage(self) -> float:
        """Fraction of the KV cache held by requests after the last engine step."""
        return max(0.0, min(1.0, self.stats.kv_cache_usage))

    def submit(self, request: TokenRequest, on_output: OnOutput) -> None:
        """Start the request in the engine core; `on_output(TokenProgress)` runs on this event loop."""
        params = self.sampling_params(request.spec, request.max_new_tokens)
        self._requests[request.request_id] = asyncio.get_running_loop().create_task(
            self._run(request.request_id, self._prompt(request), params, request.spec, on_output)
        )

    def _prompt(self, request: TokenRequest) -> dict:
        """vLLM's prompt: the token ids, and for an image request its images (see the module docstring)."""
        if not request.images:
            return {"prompt_token_ids": request.prompt_ids}
        if self._family is None:
            raise ValueError("this model takes no images")
        return image_prompt(self.llm, self._family, request.prompt_ids, request.images, expanded=True)

    def sampling_params(self, spec: SamplingSpec, max_new_tokens: int):
        """Our resolved sampling spec as vLLM's `SamplingParams` (a grammar travels in `extra_args`)."""
        from .vllm_grammar import grammar_args

        ignore_eos = bool(spec.banned_ids)  # ignore_eos is the only source of banned ids (sampling/spec.py)
        stops = [t for t in spec.end_ids if t not in self._eos] + ([] if ignore_eos else self._eos)
        return self._sampling_params_cls(
            temperature=0.0 if spec.greedy else spec.temperature,
            top_p=spec.top_p,
            top_k=spec.top_k,
            min_p=spec.min_p,
            presence_penalty=spec.presence_penalty,
            frequency_penalty=spec.frequency_penalty,
            repetition_penalty=spec.repetition_penalty,
            seed=spec.seed,
            logit_bias=dict(spec.logit_bias) or None,
            min_tokens=spec.min_tokens,
            ignore_eos=ignore_eos,
            stop_token_ids=stops,
            max_tokens=max_new_tokens,
            logprobs=spec.top_logprobs,
            detokenize=False,
            output_kind=self._delta,
            extra_args=None
            if spec.constraint is None
            else grammar_args(spec.constraint, self._source, self._revision, self._vocab_size, self._eos),
        )

    async def _run(self, request_id: str, prompt: dict, params, spec: SamplingSpec, on_output) -> None:
        tokens: list[int] = []
        try:
            async for out in self.llm.generate(prompt, params, request_id):
                completion = out.outputs[0]
                new = list(completion.token_ids)
                if spec.top_logprobs is not None and completion.logprobs:
                    for token, ranked in zip(new, completion.logprobs):
                        spec.sampled.append(_sampled(token, ranked, spec.top_logprobs))
                tokens = tokens + new  # a new list: the stream may still hold the previous one
                on_output(TokenProgress(tokens, finished=out.finished))
                if out.finished:
                    return
        # cancel() raises CancelledError here, which passes through: vLLM's generate() aborts the request on its way out.
        except Exception as exc:  # the engine core died or refused the request: this request fails, with why
            on_output(TokenProgress(tokens, error=f"vLLM: {first_line(exc)}", finished=True))
        finally:
            self._requests.pop(request_id, None)

    def cancel(self, request_id: str) -> None:
        """Abort a request: its task is cancelled, and vLLM frees its slot and KV blocks."""
        task = self._requests.pop(request_id, None)
        if task is not None:
            task.cancel()

    def stop(self) -> None:
        """Shut the engine core down (its processes exit and free their memory). Blocking: a worker thread."""
        for task in list(self._requests.values()):
            task.get_loop().call_soon_threadsafe(task.cancel)
        self._requests.clear()
        self.llm.shutdown()


def _sampled(token: int, ranked: dict, top: int) -> SampledToken:
    """vLLM's logprobs of one position ({token: Logprob(logprob, rank)}) as our record."""
    best = sorted(ranked.items(), key=lambda item: item[1].rank)[:top]
    own = ranked.get(token)
    return SampledToken(
        token, own.logprob if own is not None else float("-inf"), tuple((t, lp.logprob) for t, lp in best)
    )
