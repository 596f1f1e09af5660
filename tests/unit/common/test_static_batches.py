"""The static-batch loop both image paths share (services/common/static_batches.py): batches are costed with
their padding, so no batch's KV cache outgrows `mem`; FIFO order, cancellation and failures per batch.

A fake `generate` records each batch. The first job is a blocker whose batch holds the worker until the others
are all queued: they arrive together, as a burst of requests does while a batch runs."""

from __future__ import annotations

import gc
import threading
import weakref
from dataclasses import dataclass, field

import pytest

from services.common.hf_models import MIB
from services.common.static_batches import StaticBatchRunner, budget_tokens, padded_tokens

WAIT = 10  # seconds; every wait is for an event the runner's thread sets


@dataclass
class Job:
    name: str
    prompt_ids: list[int]
    max_new_tokens: int
    cancelled: threading.Event = field(default_factory=threading.Event)
    done: bool = False


def job(name: str, prompt: int, new: int) -> Job:
    return Job(name, [7] * prompt, new)


class Recorder(StaticBatchRunner[Job, Job]):
    """A fake model's side of the runner: records batches (and what they held), fails the ones it is told to."""

    def __init__(self, *, token_budget: int, max_batch: int = 16, fail_batches_with: str = "") -> None:
        self.batches: list[list[Job]] = []
        self.held: list[int] = []  # tokens_in_flight at each generated step, over all batches
        self.failed: dict[str, str] = {}
        self.fail_batches_with = fail_batches_with
        self.blocked = threading.Event()
        self.release = threading.Event()
        self.drained = threading.Event()  # the sentinel, queued after every job, has run
        super().__init__("test-batches", max_batch=max_batch, token_budget=token_budget)

    def prepare(self, job: Job) -> Job:
        return job

    def generate(self, rows: list[Job], holding) -> None:
        self.batches.append(list(rows))
        if rows[0].name == "blocker":
            self.blocked.set()
            assert self.release.wait(WAIT)
        if any(row.name == self.fail_batches_with for row in rows):
            raise RuntimeError("out of memory")
        for step in range(1, max(row.max_new_tokens for row in rows) + 1):
            holding(step)
            self.held.append(self.tokens_in_flight)
        for row in rows:
            row.done = True
        if any(row.name == "sentinel" for row in rows):
            self.drained.set()

    def fail(self, row: Job, exc: Exception) -> None:
        self.failed[row.name] = str(exc)


def run_together(jobs: list[Job], **settings) -> Recorder:
    """Queue `jobs` while a blocker's batch runs, then let them all through; the batches after the blocker's."""
    rec = Recorder(**settings)
    try:
        rec.enqueue(job("blocker", 1, 1))
        assert rec.blocked.wait(WAIT)
        for j in jobs:
            rec.enqueue(j)
        rec.enqueue(job("sentinel", 1, 1))  # FIFO: it runs last
        rec.release.set()
        assert rec.drained.wait(WAIT), "the runner did not get through the queue"
    finally:
        rec.stop()
    assert rec.fatal_error is None and rec.tokens_in_flight == 0 and rec.running == 0
    batches = [[row for row in batch if row.name != "sentinel"] for batch in rec.batches[1:]]
    rec.batches = [batch for batch in batches if batch]
    return rec


def unpadded_tokens(rows: list[Job]) -> int:
    """The old captioner's cost of a batch: each row's own prompt + completion, as if nobody were padded."""
    return sum(len(row.prompt_ids) + row.max_new_tokens for row in rows)


def test_no_batch_outgrows_mem_when_very_different_lengths_arrive_together():
    mem_mib, bytes_per_token = 1, 1024  # 1024 tokens of KV cache
    budget = budget_tokens(mem_mib, bytes_per_token)
    lengths = [(900, 20), (10, 5), (20, 300), (500, 10), (30, 30), (40, 40), (300, 200), (5, 5), (700, 300), (8, 8)]
    jobs = [job(f"j{i}", prompt, new) for i, (prompt, new) in enumerate(lengths)]
    rec = run_together(jobs, token_budget=budget)

    assert [row.name for batch in rec.batches for row in batch] == [j.name for j in jobs]  # each once, FIFO
    assert len(rec.batches) > 1
    for batch in rec.batches:
        assert padded_tokens(batch) * bytes_per_token <= mem_mib * MIB, [row.name for row in batch]
    assert max(rec.held) <= budget  # and what the running batches reported holding, step by step
    # Padded to the longest prompt AND the longest completion, even when they are different rows.
    assert padded_tokens([job("a", 10, 500), job("b", 500, 10)]) == 2 * (500 + 500)


def test_a_batch_the_unpadded_cost_would_have_formed_is_split():
    budget = 1000
    big, small, other = job("big", 550, 50), job("small", 90, 10), job("other", 90, 10)
    together = [big, small, other]
    # The old costing let all three in (600 + 100 + 100 tokens); padded to the longest, they hold 3 x 600.
    assert unpadded_tokens(together) <= budget < padded_tokens(together)

    rec = run_together(together, token_budget=budget)

    assert [[row.name for row in batch] for batch in rec.batches] == [["big"], ["small", "other"]]
    assert all(padded_tokens(batch) <= budget for batch in rec.batches)


def test_a_row_over_the_budget_alone_runs_alone():
    """The callers size a request to fit alone before it gets here; one that does not is not held back."""
    rec = run_together([job("a", 10, 10), job("huge", 2000, 10), job("b", 10, 10)], token_budget=1000)
    assert [[row.name for row in batch] for batch in rec.batches] == [["a"], ["huge"], ["b"]]


def test_max_batch_caps_the_rows_whatever_the_budget():
    rec = run_together([job(f"j{i}", 4, 4) for i in range(5)], token_budget=10**6, max_batch=2)
    assert [len(batch) for batch in rec.batches] == [2, 2, 1]


def test_cancelled_jobs_are_skipped_and_a_failed_batch_fails_only_its_open_rows():
    gone = job("gone", 10, 10)
    gone.cancelled.set()
    jobs = [job("a", 10, 10), gone, job("boom", 600, 10), job("b", 500, 10)]
    rec = run_together(jobs, token_budget=1000, fail_batches_with="boom")

    assert [[row.name for row in batch] for batch in rec.batches] == [["a"], ["boom"], ["b"]]
    assert rec.failed == {"boom": "out of memory"}  # the next batch still ran
    assert all(row.done for batch in rec.batches for row in batch)


@pytest.mark.parametrize(("mem_mib", "per_token", "tokens"), [(1, 1024, 1024), (1, 3 * MIB, 1), (3, 1000, 3145)])
def test_the_budget_is_the_tokens_mem_holds(mem_mib, per_token, tokens):
    assert budget_tokens(mem_mib, per_token) == tokens


def test_a_stopped_runner_is_freed_without_a_garbage_collection():
    """The engine frees a model by dropping its last reference: nothing of a stopped runner (the model's owner)
    may stay in a reference cycle until a garbage collection."""
    runner = Recorder(token_budget=1)
    runner.stop()
    gone = weakref.ref(runner)
    gc.disable()
    try:
        del runner
        assert gone() is None
    finally:
        gc.enable()
