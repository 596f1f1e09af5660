"""The model lifecycle every engine shares: load at start, unload after idle, reload on demand.

One asyncio lock orders loads and unloads; `use()` marks a request as active so the idle timer never
unloads a model under a request. Loading and unloading run in worker threads (they are seconds of
CPU/GPU work), never on the event loop. Requests that arrive while the model (re)loads wait on the lock,
bounded by their own deadline; concurrent arrivals after an unload trigger one load.

Draining (SIGTERM): `begin_drain()` refuses new requests with UNAVAILABLE (a client with a retry policy
goes to another replica), `wait_idle()` lets the ones inside `use()` finish.

A failed load, whatever it raised, leaves the engine up and NOT_SERVING with `state` FAILED and one line
in `error` saying why (GetModelInfo reports it; the launcher stops on it): never a dead process with
only a traceback, never a model stuck in LOADING. While loading, `status` says what the load is doing
("downloading model.safetensors 1.2/7.5 GB", "loading weights"): the load reports it through `report()`.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from enum import Enum
from typing import Generic, TypeVar

from .errors import EngineUnavailableError, ShuttingDownError

log = logging.getLogger(__name__)

R = TypeVar("R")


class ModelState(str, Enum):
    """Where the model is in its lifecycle."""

    LOADING = "loading"
    READY = "ready"
    UNLOADED = "unloaded"
    FAILED = "failed"


class ModelLifecycle(Generic[R]):
    """Owns one loaded resource (model + its loop) built by `load` and freed by `unload`."""

    def __init__(
        self,
        name: str,
        load: Callable[[], R],
        unload: Callable[[R], None],
        *,
        idle_unload_secs: int,
        on_serving_change: Callable[[bool], None] = lambda serving: None,
    ) -> None:
        self.name = name
        self._load_fn, self._unload_fn = load, unload
        self._idle_unload_secs = idle_unload_secs
        self._on_serving_change = on_serving_change
        self.state = ModelState.UNLOADED
        self.error = ""
        self._progress = ""  # what the load in progress is doing, in words (see `report`)
        self.resource: R | None = None
        self._lock = asyncio.Lock()
        self._active = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._last_activity = time.monotonic()
        self._idle_task: asyncio.Task | None = None
        self.draining = False
        self.loads = 0
        self.unloads = 0  # idle unloads only
        self.last_load_seconds = 0.0

    def report(self, status: str) -> None:
        """Say what the load is doing now (called from the loading thread: one attribute write, which
        readers on the event loop see whole)."""
        self._progress = status

    @property
    def status(self) -> str:
        """What the model is doing, in words: the load's progress while LOADING, "failed: <error>" once it
        failed, "" otherwise."""
        if self.state is ModelState.LOADING:
            return self._progress
        return f"failed: {self.error}" if self.state is ModelState.FAILED else ""

    @property
    def serving(self) -> bool:
        """Requests can be served now (an unloaded model reloads on demand)."""
        return self.state in (ModelState.READY, ModelState.UNLOADED)

    @property
    def active(self) -> int:
        """Requests inside `use()`."""
        return self._active

    async def start(self) -> None:
        """Load now (a failure is kept in `state`/`error`, not raised) and start the idle timer."""
        async with self._lock:
            await self._load()
        if self._idle_unload_secs > 0:
            self._idle_task = asyncio.create_task(self._idle_unloader())

    async def stop(self) -> None:
        """Stop the idle timer and free the resource."""
        if self._idle_task is not None:
            self._idle_task.cancel()
            await asyncio.gather(self._idle_task, return_exceptions=True)
        async with self._lock:
            await self._unload()

    async def replace(self, build: Callable[[R], R]) -> None:
        """Swap the resource for `build(old)` under the lock (a batching loop restart). Failure -> FAILED."""
        async with self._lock:
            if self.resource is None:
                return
            self._on_serving_change(False)
            try:
                self.resource = await asyncio.to_thread(build, self.resource)
            except Exception as exc:  # noqa: BLE001 - whatever broke, the engine cannot serve now
                self.state, self.error, self.resource = (
                    ModelState.FAILED,
                    f"restart failed: {describe_load_error(exc)}",
                    None,
                )
                log.error("Model %s: %s", self.name, self.error)
                return
            self._on_serving_change(True)

    async def fail(self, reason: str) -> None:
        """Give up on the resource: free it and report FAILED (NOT_SERVING) with `reason`."""
        async with self._lock:
            await self._unload()
            self.state, self.error = ModelState.FAILED, reason
            self._on_serving_change(False)

    def begin_drain(self) -> None:
        """From now on `use()` refuses new requests; those already inside go on."""
        self.draining = True

    async def wait_idle(self, timeout: float) -> bool:
        """Wait until no request is inside `use()`; False if some still are after `timeout` seconds."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True

    @asynccontextmanager
    async def use(self) -> AsyncIterator[R]:
        """The ready resource for one request; loads it first if it was unloaded."""
        if self.draining:
            raise ShuttingDownError(f"The engine serving {self.name} is shutting down; retry on another replica")
        self._active += 1
        self._idle.clear()
        self._last_activity = time.monotonic()
        try:
            # No resource while still READY: an unload is under way (it drops the resource before it frees it and
            # says UNLOADED only once done). Wait for it behind the lock, then load again.
            if self.state is not ModelState.READY or self.resource is None:
                async with self._lock:
                    if self.state is ModelState.UNLOADED:
                        await self._load()
            if self.state is not ModelState.READY or self.resource is None:
                raise EngineUnavailableError(f"Model {self.name} is not available: {self.error or self.state.value}")
            yield self.resource
        finally:
            self._active -= 1
            if self._active == 0:
                self._idle.set()
            self._last_activity = time.monotonic()

    async def _load(self) -> None:
        self.state, self._progress = ModelState.LOADING, "loading"
        started = time.monotonic()
        try:
            self.resource = await asyncio.to_thread(self._load_fn)
        # SystemExit too: a library that calls sys.exit() in the loading thread must not take the engine down.
        except (Exception, SystemExit) as exc:  # noqa: BLE001 - a failed load is reported, never a crash loop
            self.state, self.error, self.resource = ModelState.FAILED, describe_load_error(exc), None
            # Our own load errors are written for the operator; anything else is a bug worth its traceback.
            log.error("Model %s failed to load: %s", self.name, self.error, exc_info=not _expected(exc))
            self._on_serving_change(False)
            return
        self.state, self.error = ModelState.READY, ""
        self.loads += 1
        self.last_load_seconds = time.monotonic() - started
        self._last_activity = time.monotonic()
        self._on_serving_change(True)

    async def _unload(self) -> None:
        resource, self.resource = self.resource, None
        if resource is not None:
            await asyncio.to_thread(self._unload_fn, resource)
        # Drop this frame's reference first: a model held in a reference cycle is only freed by a collection
        # that runs after the last outside reference is gone.
        del resource
        gc.collect()
        torch = sys.modules.get("torch")  # only engines that loaded torch can hold device memory
        if torch is not None and torch.cuda.is_available():
            torch.cuda.empty_cache()  # give the freed blocks back to the device, not just to torch's pool
        if self.state is not ModelState.FAILED:
            self.state = ModelState.UNLOADED

    async def unload_idle(self) -> bool:
        """Unload the ready model unless a request is inside `use()`: what the idle timer does once the model has
        idled for `idle_unload_secs`. True if it unloaded."""
        async with self._lock:
            if self._active or self.state is not ModelState.READY:
                return False
            # The configured delay, not the measured one: operators grep for the number they set.
            log.info("Unloading model %s after %ds idle", self.name, self._idle_unload_secs)
            await self._unload()
            self.unloads += 1
            return True

    async def _idle_unloader(self) -> None:
        while True:
            await asyncio.sleep(min(5.0, self._idle_unload_secs / 4))
            idle_for = time.monotonic() - self._last_activity
            if self.state is ModelState.READY and self._active == 0 and idle_for >= self._idle_unload_secs:
                await self.unload_idle()


def _expected(exc: BaseException) -> bool:
    """A load error that already says what to fix (the loaders' ModelLoadError)."""
    from .hf_models import ModelLoadError  # here, not at import: only engines that load models have torch

    return isinstance(exc, ModelLoadError)


def describe_load_error(exc: BaseException) -> str:
    """One line for GetModelInfo and the log, whatever the load raised.

    Our ModelLoadError already reads as a reason. Other types get their class name in front, since their
    message alone can be a bare key or path (`KeyError('lm_head.weight')` reads "'lm_head.weight'"); a
    missing module is named as such (its pip name can differ, so no install command is guessed)."""
    message = " ".join(str(exc).split())  # one line: the launcher and /ready show it in one
    if _expected(exc):
        return message or type(exc).__name__
    if isinstance(exc, ImportError):
        module = f" ({exc.name!r})" if getattr(exc, "name", None) else ""
        return f"a Python module the model needs is missing{module}: {message}"
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__
