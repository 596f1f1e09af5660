"""Caption images in batches on one worker thread that owns the vision model.

Jobs from all requests wait in one FIFO queue (the shared static-batch loop, services/common/static_batches.py).
Each round takes as many as fit (at most `params.max_num_seqs` images, and the batch's KV cache within
`params.mem` MiB counted with its padding: rows x (longest prompt with its image tokens + longest caption)),
preprocesses them through the model family's adapter (services/common/multimodal/) and runs one batched
`generate`. Tokens are streamed per row as they are produced, each row finishes on its own (end of sequence,
its token limit, or its caller leaving), and callbacks reach the event loop through `call_soon_threadsafe`.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from PIL import Image
from transformers import LogitsProcessorList, StoppingCriteriaList

from services.common.config import ModelParams
from services.common.detokenizer import IncrementalDetokenizer
from services.common.multimodal import EncodedImage
from services.common.static_batches import (
    RowsDone,
    RowStreamer,
    StaticBatchRunner,
    budget_tokens,
    left_pad,
    to_device,
)

from .loader import LoadedVisionModel
from .penalty import UnpaddedRepetitionPenalty
from .prompts import render_prompt


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
    # What the captioner runs when the job is cancelled (on the event loop); the batcher's worker polls `cancelled`.
    on_cancel: list[Callable[[], None]] = field(default_factory=list)

    def cancel(self) -> None:
        """Nobody waits for this caption any more: stop its work."""
        self.cancelled.set()
        for stop in self.on_cancel:
            stop()


@dataclass
class _Row:
    job: CaptionJob
    prompt_ids: list[int]  # image tokens included
    image: EncodedImage
    detok: IncrementalDetokenizer
    tokens: list[int] = field(default_factory=list)
    text: list[str] = field(default_factory=list)
    done: bool = False

    @property
    def cancelled(self) -> threading.Event:
        return self.job.cancelled

    @property
    def max_new_tokens(self) -> int:
        return self.job.max_new_tokens


class CaptionBatcher(StaticBatchRunner[CaptionJob, _Row]):
    """Captions in static batches on the runner's worker thread; `submit` is thread-safe."""

    def __init__(self, loaded: LoadedVisionModel, params: ModelParams, loop: asyncio.AbstractEventLoop) -> None:
        self.loaded = loaded
        self._loop = loop
        self._eos = set(loaded.eos_token_ids)
        self.captioned = 0  # images that went through the model (cache hits never get here)
        super().__init__(
            "caption-batcher",
            max_batch=params.max_num_seqs,
            token_budget=budget_tokens(params.mem, loaded.kv_bytes_per_token),
        )

    def submit(self, job: CaptionJob) -> None:
        """Queue a job (FIFO)."""
        self.enqueue(job)

    # Worker thread ---------------------------------------------------------------------------------
    def prepare(self, job: CaptionJob) -> _Row | None:
        loaded, family = self.loaded, self.loaded.family
        try:
            image = family.encode(job.image, job.max_image_tokens)
            prompt = render_prompt(loaded.tokenizer, family.placeholder, job.instruction)
            ids = family.prompt_ids(prompt, [image])
        except Exception as exc:  # noqa: BLE001 - one bad image must not fail its batch
            self._call(job.on_error, f"cannot prepare image: {exc}")
            return None
        return _Row(job, ids, image, IncrementalDetokenizer(loaded.tokenizer))

    def fail(self, row: _Row, exc: Exception) -> None:
        self._call(row.job.on_error, f"captioning failed: {exc}")

    def generate(self, rows: list[_Row], holding: Callable[[int], None]) -> None:
        loaded = self.loaded
        self.captioned += len(rows)
        input_ids, mask = left_pad(rows, loaded.pad_token_id)
        width = input_ids.shape[1]
        penalty = loaded.repetition_penalty
        processors = (
            [UnpaddedRepetitionPenalty(penalty, [width - len(r.prompt_ids) for r in rows])] if penalty != 1.0 else []
        )
        images = to_device(loaded.family.collate([r.image for r in rows]), loaded.device, loaded.dtype)
        # Per-token inputs some families need beside the images (Gemma 3's token_type_ids), padded rows included.
        text_inputs = to_device(loaded.family.text_inputs(input_ids, mask), loaded.device, loaded.dtype)
        with torch.inference_mode():
            loaded.model.generate(
                input_ids=input_ids.to(loaded.device),
                attention_mask=mask.to(loaded.device),
                **images,
                **text_inputs,
                max_new_tokens=max(r.max_new_tokens for r in rows),
                do_sample=False,  # captions are cached: the same image must give the same caption
                repetition_penalty=1.0,  # the checkpoint's penalty is applied without the padding (penalty.py)
                logits_processor=LogitsProcessorList(processors),
                pad_token_id=loaded.pad_token_id,
                eos_token_id=loaded.eos_token_ids,
                streamer=RowStreamer(rows, self._step, holding),
                stopping_criteria=StoppingCriteriaList([RowsDone(rows)]),
            )
        for row in rows:  # rows still open when generate returned (e.g. it hit its own limits)
            if not row.done:
                self._finish(row, "length")

    def _step(self, row: _Row, token: int) -> None:
        """One generated token of an open row."""
        if token in self._eos:
            self._finish(row, "stop")
            return
        row.tokens.append(token)
        delta = row.detok.push([token])
        if delta:
            row.text.append(delta)
            self._call(row.job.on_delta, delta)
        if len(row.tokens) >= row.job.max_new_tokens:
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
