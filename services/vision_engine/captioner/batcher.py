"""Caption images in batches on one worker thread that owns the vision model.

Jobs from all requests wait in one FIFO queue. Each round takes as many as fit (at most
`params.max_num_seqs` images, and prompt + image + caption tokens of the whole batch within `params.mem`
MiB of KV cache), preprocesses them through the model family's adapter (services/common/multimodal/) and
runs one batched `generate`. Tokens are streamed per row as they
are produced, each row finishes on its own (end of sequence, its token limit, or its caller leaving),
and callbacks reach the event loop through `call_soon_threadsafe`.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from PIL import Image
from transformers import LogitsProcessorList, StoppingCriteria, StoppingCriteriaList
from transformers.generation.streamers import BaseStreamer

from services.common.config import ModelParams
from services.common.detokenizer import IncrementalDetokenizer
from services.common.hf_models import MIB
from services.common.multimodal import EncodedImage

from .loader import LoadedVisionModel
from .penalty import UnpaddedRepetitionPenalty
from .prompts import render_prompt

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CaptionResult:
    """A finished caption."""

    text: str
    finish_reason: str
    image_tokens: int
    caption_tokens: int
    elapsed_ms: float


@dataclass
class CaptionJob:
    """One image to caption. The callbacks run on the event loop that submitted the job."""

    image: Image.Image
    instruction: str
    max_image_tokens: int
    max_new_tokens: int
    on_delta: Callable[[str], None]
    on_done: Callable[[CaptionResult], None]
    on_error: Callable[[str], None]
    cancelled: threading.Event = field(default_factory=threading.Event)
    submitted_at: float = field(default_factory=time.monotonic)


@dataclass
class _Row:
    job: CaptionJob
    prompt_ids: list[int]
    image: EncodedImage
    detok: IncrementalDetokenizer
    tokens: list[int] = field(default_factory=list)
    text: list[str] = field(default_factory=list)
    done: bool = False


class CaptionBatcher:
    """Owns the worker thread; `submit` and `cancel` are thread-safe."""

    def __init__(self, loaded: LoadedVisionModel, params: ModelParams, loop: asyncio.AbstractEventLoop) -> None:
        self._loaded = loaded
        self._max_batch = params.max_num_seqs
        self._token_budget = max(1, (params.mem * MIB) // loaded.kv_bytes_per_token)
        self._loop = loop
        self._queue: queue.Queue[CaptionJob | None] = queue.Queue()
        self._carry: CaptionJob | None = None  # a job that did not fit the last batch goes first next time
        self.running = 0
        self.tokens_in_flight = 0  # prompt + image + caption tokens of the batch being captioned
        self.captioned = 0  # images that went through the model (cache hits never get here)
        self.batch_sizes: collections.deque[int] = collections.deque(
            maxlen=256
        )  # recent batches, for tests and metrics
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="caption-batcher", daemon=True)
        self._thread.start()

    @property
    def token_budget(self) -> int:
        """Tokens (prompt + image + caption, whole batch) the memory budget allows."""
        return self._token_budget

    @property
    def waiting(self) -> int:
        """Jobs queued for a batch."""
        return self._queue.qsize() + (self._carry is not None)

    @property
    def alive(self) -> bool:
        """False once the worker thread has exited."""
        return self._thread.is_alive()

    def submit(self, job: CaptionJob) -> None:
        """Queue a job (FIFO)."""
        self._queue.put(job)

    def stop(self) -> None:
        """Finish the current batch, then exit the thread (blocking)."""
        self._stopping = True
        self._queue.put(None)
        self._thread.join(timeout=60)

    # Worker thread ---------------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stopping:
            rows = self._next_batch()
            if not rows:
                continue
            self.running = len(rows)
            self.tokens_in_flight = sum(len(row.prompt_ids) + row.job.max_new_tokens for row in rows)
            self.batch_sizes.append(len(rows))
            self.captioned += len(rows)
            try:
                self._generate(rows)
            except Exception as exc:  # noqa: BLE001 - fail this batch's jobs, keep serving the next ones
                log.exception("Caption batch of %d failed", len(rows))
                for row in rows:
                    if not row.done:
                        row.done = True
                        self._call(row.job.on_error, f"captioning failed: {exc}")
            finally:
                self.running = 0
                self.tokens_in_flight = 0

    def _next_batch(self) -> list[_Row]:
        first = self._carry or self._queue.get()
        self._carry = None
        rows: list[_Row] = []
        used = 0
        job: CaptionJob | None = first
        while job is not None:
            if not job.cancelled.is_set():
                row = self._prepare(job)
                if row is not None:
                    cost = len(row.prompt_ids) + job.max_new_tokens
                    if rows and used + cost > self._token_budget:
                        self._carry = job  # keep FIFO order: it leads the next batch
                        break
                    rows.append(row)
                    used += cost
            if len(rows) >= self._max_batch:
                break
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
        return rows

    def _prepare(self, job: CaptionJob) -> _Row | None:
        loaded, family = self._loaded, self._loaded.family
        try:
            image = family.encode(job.image, job.max_image_tokens)
            prompt = render_prompt(loaded.tokenizer, family.placeholder, job.instruction)
            ids = family.prompt_ids(prompt, [image])
        except Exception as exc:  # noqa: BLE001 - one bad image must not fail its batch
            self._call(job.on_error, f"cannot prepare image: {exc}")
            return None
        return _Row(job, ids, image, IncrementalDetokenizer(loaded.tokenizer))

    def _generate(self, rows: list[_Row]) -> None:
        loaded = self._loaded
        width = max(len(r.prompt_ids) for r in rows)
        pad = loaded.pad_token_id
        input_ids = torch.tensor([[pad] * (width - len(r.prompt_ids)) + r.prompt_ids for r in rows])
        mask = torch.tensor([[0] * (width - len(r.prompt_ids)) + [1] * len(r.prompt_ids) for r in rows])
        streamer = _RowStreamer(rows, set(loaded.eos_token_ids), self._finish, self._call)
        penalty = loaded.model.generation_config.repetition_penalty or 1.0
        processors = (
            [UnpaddedRepetitionPenalty(penalty, [width - len(r.prompt_ids) for r in rows])] if penalty != 1.0 else []
        )
        images = {
            key: value.to(loaded.device, loaded.dtype) if value.is_floating_point() else value.to(loaded.device)
            for key, value in loaded.family.collate([r.image for r in rows]).items()
        }
        # Per-token inputs some families need beside the images (Gemma 3's token_type_ids), padded rows included.
        text_inputs = {
            key: value.to(loaded.device) for key, value in loaded.family.text_inputs(input_ids, mask).items()
        }
        with torch.inference_mode():
            loaded.model.generate(
                input_ids=input_ids.to(loaded.device),
                attention_mask=mask.to(loaded.device),
                **images,
                **text_inputs,
                max_new_tokens=max(r.job.max_new_tokens for r in rows),
                do_sample=False,  # captions are cached: the same image must give the same caption
                repetition_penalty=1.0,  # the checkpoint's penalty is applied without the padding (penalty.py)
                logits_processor=LogitsProcessorList(processors),
                pad_token_id=pad,
                eos_token_id=loaded.eos_token_ids,
                streamer=streamer,
                stopping_criteria=StoppingCriteriaList([_RowsDone(rows)]),
            )
        for row in rows:  # rows still open when generate returned (e.g. it hit its own limits)
            if not row.done:
                self._finish(row, "length")

    def _finish(self, row: _Row, reason: str) -> None:
        row.done = True
        if row.job.cancelled.is_set():
            return
        elapsed = (time.monotonic() - row.job.submitted_at) * 1000
        result = CaptionResult("".join(row.text), reason, row.image.image_tokens, len(row.tokens), elapsed)
        self._call(row.job.on_done, result)

    def _call(self, callback: Callable, *args) -> None:
        self._loop.call_soon_threadsafe(callback, *args)


class _RowStreamer(BaseStreamer):
    """Receives each step's tokens for the whole batch; routes them to their rows."""

    def __init__(self, rows: list[_Row], eos: set[int], finish: Callable, call: Callable) -> None:
        self._rows, self._eos, self._finish, self._call = rows, eos, finish, call
        self._prompt_seen = False

    def put(self, value: torch.Tensor) -> None:
        if not self._prompt_seen:  # the first call carries the prompts
            self._prompt_seen = True
            return
        for row, token in zip(self._rows, value.reshape(-1).tolist()):
            if row.done or row.job.cancelled.is_set():
                row.done = True
                continue
            if token in self._eos:
                self._finish(row, "stop")
                continue
            row.tokens.append(token)
            delta = row.detok.push([token])
            if delta:
                row.text.append(delta)
                self._call(row.job.on_delta, delta)
            if len(row.tokens) >= row.job.max_new_tokens:
                self._finish(row, "length")

    def end(self) -> None:
        """Nothing buffered: every row is finished by `put` or by the batcher."""


class _RowsDone(StoppingCriteria):
    """Per-row stop: finished or cancelled rows stop; generate ends when all have."""

    def __init__(self, rows: list[_Row]) -> None:
        self._rows = rows

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs) -> torch.Tensor:
        flags = [row.done or row.job.cancelled.is_set() for row in self._rows]
        return torch.tensor(flags, dtype=torch.bool, device=input_ids.device)
