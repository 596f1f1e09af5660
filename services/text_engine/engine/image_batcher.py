"""Static batches of image requests through `model.generate()`, for a `vision_mode: native` model.

Why not continuous batching: transformers' manager takes token ids only (batcher.py's docstring), so a prompt
whose image tokens must be filled from the vision encoder cannot go there. Static batches are the honest
alternative: the shared static-batch loop (services/common/static_batches.py) takes the image requests waiting
(FIFO, at most `max_batch`, and at most `token_budget` tokens of KV cache for the whole batch, padding included:
rows x (longest prompt + longest completion), which is what a left-padded `generate()` holds) on its worker
thread, and this module runs ONE `generate()` over them with the family's collated image tensors, streaming each
row's tokens as they come. A request that arrives while a batch runs waits for the next batch (static batching:
no joining mid-flight), so a second image request waits out the first one's
whole answer; rows that finish early keep their slot in the batch until the longest one ends (only their
compute is wasted: they stop streaming and are reported finished at once).

Sampling is the engine's own pipeline (sampling/pipeline.py `choose_tokens`, each request's SamplingSpec:
seed, penalties, bias, grammar, logprobs): `_RowSampler` is the batch's last logits processor and returns
one-hot scores, so `generate()`'s own greedy argmax takes exactly the chosen token, as `RequestSampler` does
for continuous batching. `generate()` is called with its own processors neutralised (no checkpoint
repetition penalty, no sampling), so the pipeline sees the model's raw logits.

Outputs (`TokenProgress`) have what stream.py's RequestStream reads of the manager's outputs: the cumulative
`generated_tokens`, `is_finished()` and `error`; they reach the event loop through `call_soon_threadsafe`.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from transformers import LogitsProcessor, LogitsProcessorList, StoppingCriteriaList

from services.common.multimodal import EncodedImage
from services.common.static_batches import RowsDone, RowStreamer, StaticBatchRunner, left_pad, to_device

from .loader import LoadedModel
from .sampling.pipeline import Row, choose_tokens
from .sampling.spec import SamplingSpec
from .token_source import OnOutput, TokenProgress, TokenRequest

# generate() would otherwise apply the checkpoint's generation_config (a repetition penalty, sampling) before
# our processor sees the logits: these are the neutral values, passed explicitly so they win.
NEUTRAL_GENERATE = {
    "do_sample": False,
    "repetition_penalty": 1.0,
    "no_repeat_ngram_size": 0,
    "min_length": 0,
    "bad_words_ids": None,
    "suppress_tokens": None,
    "begin_suppress_tokens": None,
    "forced_bos_token_id": None,
    "forced_eos_token_id": None,
    "renormalize_logits": False,
    "temperature": None,
    "top_p": None,
    "top_k": None,
}


@dataclass
class _Job:
    key: str
    prompt_ids: list[int]
    max_new_tokens: int
    spec: SamplingSpec
    on_output: OnOutput
    images: tuple[EncodedImage, ...]
    loop: asyncio.AbstractEventLoop
    cancelled: threading.Event = field(default_factory=threading.Event)
    tokens: list[int] = field(default_factory=list)
    done: bool = False


class ImageBatcher(StaticBatchRunner[_Job, _Job]):
    """Image requests in static batches on the runner's worker thread; `submit` and `cancel` run on the event
    loop."""

    def __init__(self, loaded: LoadedModel, *, max_batch: int, token_budget: int) -> None:
        if loaded.family is None:
            raise ValueError("an image batcher needs a model loaded with its vision family")
        self._loaded = loaded
        self._family = loaded.family
        self._eos = set(loaded.eos_token_ids)
        self._pad = (
            loaded.tokenizer.pad_token_id if loaded.tokenizer.pad_token_id is not None else loaded.eos_token_ids[0]
        )
        self._jobs: dict[str, _Job] = {}
        # token_budget: KV tokens of one batch (rows x padded length)
        super().__init__("image-batcher", max_batch=max_batch, token_budget=token_budget)

    # Event-loop side -------------------------------------------------------------------------------
    def submit(self, request: TokenRequest, on_output: OnOutput) -> None:
        """Queue an image request (FIFO)."""
        if not request.images:
            raise ValueError("the image batcher serves requests with images")
        job = _Job(
            request.request_id,
            list(request.prompt_ids),
            request.max_new_tokens,
            request.spec.bind(self._loaded.device),
            on_output,
            tuple(request.images),
            asyncio.get_running_loop(),
        )
        self._jobs[request.request_id] = job
        self.enqueue(job)

    def cancel(self, request_id: str) -> None:
        """Drop a request: skipped if still queued, its row stops streaming (and generating, once every row
        of its batch has) if running."""
        job = self._jobs.pop(request_id, None)
        if job is not None:
            job.cancelled.set()

    def stop(self) -> None:
        """Finish the running batch's current step, then exit the thread (blocking)."""
        for job in list(self._jobs.values()):
            job.cancelled.set()
        super().stop()

    # Worker thread ---------------------------------------------------------------------------------
    def prepare(self, job: _Job) -> _Job:
        return job  # its prompt and images were prepared at admission

    def fail(self, row: _Job, exc: Exception) -> None:
        self._finish(row, error=f"generation failed: {exc}")

    def generate(self, rows: list[_Job], holding: Callable[[int], None]) -> None:
        try:
            self._generate(rows, holding)
        finally:
            for row in rows:
                self._jobs.pop(row.key, None)

    def _generate(self, rows: list[_Job], holding: Callable[[int], None]) -> None:
        loaded = self._loaded
        ids, mask = left_pad(rows, self._pad)
        # The model fills image tokens in prompt order across the flattened batch: the rows' images, in row order.
        extra = to_device(
            self._family.collate([image for r in rows for image in r.images]), loaded.device, loaded.dtype
        )
        extra.update(to_device(self._family.text_inputs(ids, mask), loaded.device, loaded.dtype))
        with torch.inference_mode():
            loaded.model.generate(
                input_ids=ids.to(loaded.device),
                attention_mask=mask.to(loaded.device),
                **extra,
                **NEUTRAL_GENERATE,
                max_new_tokens=max(r.max_new_tokens for r in rows),
                pad_token_id=self._pad,
                eos_token_id=loaded.eos_token_ids,
                logits_processor=LogitsProcessorList([_RowSampler(rows, self._pad)]),
                stopping_criteria=StoppingCriteriaList([RowsDone(rows)]),
                streamer=RowStreamer(rows, self._step, holding),
            )
        for row in rows:  # rows generate() ended without their own end (its length limit)
            if not row.done:
                self._finish(row)

    def _step(self, row: _Job, token: int) -> None:
        """One generated token of an open row (worker thread)."""
        row.tokens.append(token)
        if token in self._eos or len(row.tokens) >= row.max_new_tokens:
            self._finish(row)
        else:
            self._emit(row, TokenProgress(list(row.tokens)))

    def _finish(self, row: _Job, error: str | None = None) -> None:
        row.done = True
        if not row.cancelled.is_set():
            self._emit(row, TokenProgress(list(row.tokens), error=error, finished=True))

    @staticmethod
    def _emit(row: _Job, output: TokenProgress) -> None:
        row.loop.call_soon_threadsafe(row.on_output, output)


class _RowSampler(LogitsProcessor):
    """The engine's pipeline over the rows still generating; one-hot scores so generate's argmax takes its pick."""

    def __init__(self, rows: list[_Job], pad: int) -> None:
        self._rows, self._pad = rows, pad

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        live = [i for i, row in enumerate(self._rows) if not row.done and not row.cancelled.is_set()]
        picks = torch.full((scores.shape[0],), self._pad, dtype=torch.long, device=scores.device)
        if live:
            rows = [self._row(self._rows[i]) for i in live]
            index = torch.tensor(live, device=scores.device)
            chosen = choose_tokens(scores[index], rows)
            picks[index] = chosen if chosen is not None else scores[index].argmax(dim=-1)
        out = torch.full_like(scores, float("-inf"))
        out.scatter_(1, picks.unsqueeze(1), 0.0)
        return out

    @staticmethod
    def _row(job: _Job) -> Row:
        context = job.prompt_ids + job.tokens if job.spec.repetition_penalty != 1.0 else []
        return Row(job.spec, job.tokens, context)
