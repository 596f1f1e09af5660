"""Static `generate()` batches on one worker thread: the loop under the text engine's image requests
(text_engine/engine/image_batcher.py) and the vision engine's captioner (vision_engine/captioner/batcher.py).

`StaticBatchRunner` owns the queue and the thread; each side subclasses it with what is model-specific. Each
round it takes the jobs waiting (FIFO, cancelled ones skipped), prepares each into a row (`prepare`), and forms
a batch of at most `max_batch` rows whose *padded* cost fits `token_budget`; then it runs the batch (`generate`)
on the worker thread (a forward pass never runs on the event loop's thread) and, if that raises, fails the
batch's open rows (`fail`) and goes on with the next batch.

Cost of a batch (`padded_tokens`): a left-padded `generate()` holds rows x (longest prompt + longest
completion) tokens of KV cache at its end, image tokens included in the prompts; every row is as long as the
longest one, whatever its own length. The budget is in the same tokens (`budget_tokens`: the memory budget
over the KV bytes of one token), so a batch that fits it fits the memory. A row that does not fit alone runs
alone (both callers size their requests to fit alone before they get here: the text engine's admission and
the captioner's image-token budget).

The `generate()` plumbing both callers share is here too: `left_pad`, `to_device`, `RowStreamer` (routes each
step's tokens to their rows) and `RowsDone` (per-row stopping).
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Generic, Protocol, TypeVar

import torch
from transformers import StoppingCriteria
from transformers.generation.streamers import BaseStreamer

from .hf_models import MIB

log = logging.getLogger(__name__)


class Cancellable(Protocol):
    """A queued job: its caller may leave before it runs."""

    @property
    def cancelled(self) -> threading.Event: ...


class Row(Cancellable, Protocol):
    """A prepared job: one row of a batch."""

    done: bool  # finished (or its caller left): nothing more goes out for it

    @property
    def prompt_ids(self) -> list[int]: ...  # image tokens included

    @property
    def max_new_tokens(self) -> int: ...


J = TypeVar("J", bound=Cancellable)
R = TypeVar("R", bound=Row)


def budget_tokens(mem_mib: int, bytes_per_token: int) -> int:
    """Tokens of KV cache that `mem_mib` MiB hold (at least 1)."""
    return max(1, (mem_mib * MIB) // bytes_per_token)


def padded_tokens(rows: Sequence[Row], steps: int | None = None) -> int:
    """KV tokens a left-padded batch holds after `steps` generated tokens (None: at its end, the longest
    completion): every row is padded to the longest prompt."""
    if not rows:
        return 0
    width = max(len(row.prompt_ids) for row in rows)
    return len(rows) * (width + (max(row.max_new_tokens for row in rows) if steps is None else steps))


class StaticBatchRunner(ABC, Generic[J, R]):
    """Owns the worker thread that forms and runs static batches; `enqueue`, `stop` and the counters may be used
    from any thread. A subclass says what is model-specific (all three run on the worker thread):

    - `prepare(job)`: the job's row, or None when it cannot run (`prepare` has told its caller why).
    - `generate(rows, holding)`: run one batch; call `holding(steps)` after each generated step so
      `tokens_in_flight` follows the batch. Rows still open when it returns are the subclass's to finish.
    - `fail(row, exc)`: tell an open row's caller that its batch failed (the row is already marked done).
    """

    def __init__(self, name: str, *, max_batch: int, token_budget: int) -> None:
        self.name = name
        self.max_batch = max_batch
        self.token_budget = token_budget  # KV tokens of one batch, padding included
        self._queue: queue.Queue[J | None] = queue.Queue()
        self._carry: R | None = None  # a row that did not fit the last batch leads the next one (FIFO)
        self.running = 0  # rows of the batch running now
        self.tokens_in_flight = 0  # KV tokens the running batch holds now (rows x (padded prompt + steps))
        self.batch_sizes: collections.deque[int] = collections.deque(maxlen=256)  # recent batches, for tests
        self._error: Exception | None = None
        self._stopping = False
        # The thread holds this object only while it runs (a thread drops its target when it ends): a stopped
        # runner is freed by reference counting, and with it the model it uses when the engine unloads it.
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    @abstractmethod
    def prepare(self, job: J) -> R | None: ...

    @abstractmethod
    def generate(self, rows: list[R], holding: Callable[[int], None]) -> None: ...

    @abstractmethod
    def fail(self, row: R, exc: Exception) -> None: ...

    def enqueue(self, job: J) -> None:
        """Queue a job (FIFO)."""
        self._queue.put(job)

    @property
    def waiting(self) -> int:
        """Jobs queued for a batch."""
        return self._queue.qsize() + (self._carry is not None)

    @property
    def alive(self) -> bool:
        """False once the worker thread has exited."""
        return self._thread.is_alive()

    @property
    def fatal_error(self) -> Exception | None:
        """Why the worker died, if it did (a failed batch fails its own rows, not the worker)."""
        return self._error

    def stop(self) -> None:
        """Let the running batch end, then exit the thread (blocking)."""
        self._stopping = True
        self._queue.put(None)
        self._thread.join(timeout=60)

    # Worker thread ---------------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            while not self._stopping:
                rows = self._next_batch()
                if rows:
                    self._serve(rows)
        except Exception as exc:  # noqa: BLE001 - recorded: the engine's watchdog sees `alive` turn False
            log.exception("%s died", self.name)
            self._error = exc
        finally:
            self._carry = None

    def _next_batch(self) -> list[R]:
        """The rows of the next batch, in FIFO order, while they fit; blocks until there is one (or a stop)."""
        rows: list[R] = []
        row, self._carry = self._carry, None
        while len(rows) < self.max_batch:
            if row is None:
                try:
                    job = self._queue.get(block=not rows)
                except queue.Empty:
                    break
                if job is None:  # stop
                    break
                row = None if job.cancelled.is_set() else self.prepare(job)
            if row is None or row.cancelled.is_set():
                row = None
                continue
            if rows and padded_tokens([*rows, row]) > self.token_budget:
                self._carry = row  # FIFO: it leads the next batch
                break
            rows.append(row)
            row = None
        return rows

    def _serve(self, rows: list[R]) -> None:
        self.running = len(rows)
        self.batch_sizes.append(len(rows))
        self.tokens_in_flight = padded_tokens(rows, 0)

        def holding(steps: int) -> None:
            self.tokens_in_flight = padded_tokens(rows, steps)

        try:
            self.generate(rows, holding)
        except Exception as exc:  # noqa: BLE001 - fail this batch's rows, keep serving the next ones
            log.exception("%s: batch of %d failed", self.name, len(rows))
            for row in rows:
                if not row.done:
                    row.done = True
                    self.fail(row, exc)
        finally:
            self.running = 0
            self.tokens_in_flight = 0


# generate() plumbing ------------------------------------------------------------------------------------
def left_pad(rows: Sequence[Row], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`input_ids` and `attention_mask` of a batch, each prompt padded on the left to the longest."""
    width = max(len(row.prompt_ids) for row in rows)
    ids = torch.tensor([[pad] * (width - len(row.prompt_ids)) + list(row.prompt_ids) for row in rows])
    mask = torch.tensor([[0] * (width - len(row.prompt_ids)) + [1] * len(row.prompt_ids) for row in rows])
    return ids, mask


def to_device(tensors: dict[str, torch.Tensor], device: torch.device, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Model inputs on the model's device; floating-point ones (pixels) in its dtype."""
    return {
        key: value.to(device, dtype) if value.is_floating_point() else value.to(device)
        for key, value in tensors.items()
    }


class RowStreamer(BaseStreamer, Generic[R]):
    """Receives each step's tokens for the whole batch (the first call: the prompts) and routes them to the
    rows still open; a row whose caller left is closed without its token."""

    def __init__(self, rows: list[R], on_token: Callable[[R, int], None], holding: Callable[[int], None]) -> None:
        self._rows, self._on_token, self._holding = rows, on_token, holding
        self._steps = -1

    def put(self, value: torch.Tensor) -> None:
        self._steps += 1
        if self._steps == 0:
            return
        self._holding(self._steps)
        for row, token in zip(self._rows, value.reshape(-1).tolist()):
            if row.done:
                continue
            if row.cancelled.is_set():
                row.done = True
                continue
            self._on_token(row, token)

    def end(self) -> None:
        """Nothing buffered: rows finish in `put` or when generate returns."""


class RowsDone(StoppingCriteria):
    """Per-row stop: finished or cancelled rows stop; generate ends when every row has."""

    def __init__(self, rows: Sequence[Row]) -> None:
        self._rows = rows

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs) -> torch.Tensor:
        flags = [row.done or row.cancelled.is_set() for row in self._rows]
        return torch.tensor(flags, dtype=torch.bool, device=input_ids.device)
