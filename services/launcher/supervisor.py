"""Start child processes, watch them, restart the ones that crash, and stop them all: no orphans,
whatever happens to the launcher.

Two guards against orphans, because either alone leaves a hole:
- each child leads its own process group, and every stop signals the whole group, so whatever a
  child spawned goes too; the terminal's Ctrl-C reaches only the launcher, which then stops the
  children in order (the gateway first) instead of all of them racing a double signal;
- on Linux each child gets PR_SET_PDEATHSIG(SIGKILL): a launcher killed with SIGKILL, which runs no
  code, still takes its children with it.

A child that exits on its own is restarted after a backoff (restarts.py: 1 s, 2 s, 4 s ... up to 30 s,
reset after a minute up), as Kubernetes restarts a pod's container; meanwhile the gateway degrades as
it does there (503 + Retry-After for the model whose engine is down, /ready says which) and its gRPC
channels reconnect when the engine is back. The gateway itself is restarted the same way: it holds no
state, while an engine restart costs a model load. A crash loop (5 crashes in 5 minutes) is given up
with the child's last exit status and output: a required child (a text engine, the gateway) then stops
the stack, exit 1; the optional vision engine is left out and the stack serves text without it.

On SIGINT/SIGTERM: SIGTERM to every group, SIGKILL after a grace period (or at once on a second
signal), exit 0. Nothing is restarted once a stop is requested.

An engine whose model failed to load stays up (NOT_SERVING, the reason in GetModelInfo), so the probe
sees the failure at its next round: a required child then stops the stack at once with the engine's
reason, instead of waiting out the ready timeout; an optional one is reported and the stack is ready
without it.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .child_output import OutputTail
from .plan import ProcessSpec
from .probes import Readiness
from .restarts import CrashHistory, RestartPolicy

log = logging.getLogger("proxyvision")

_PR_SET_PDEATHSIG = 1

Probe = Callable[[ProcessSpec], "Readiness | bool"]  # a bool means ready / not yet


def _die_with_parent_hook() -> Callable[[], None] | None:
    """A preexec_fn that ties the child's life to ours (Linux), or None elsewhere."""
    if not sys.platform.startswith("linux"):
        return None
    # Loaded here, in the parent: dlopen between fork and exec is unsafe in a threaded process.
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    parent = os.getpid()

    def hook() -> None:  # runs in the child between fork and exec
        # The signal fires when the forking *thread* exits; Popen is only called from the main thread.
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # we died before prctl took effect: nobody would signal the child
            os._exit(1)

    return hook


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    # The group outlives its leader while any member lives, and Linux never reuses its id for a new
    # process meanwhile, so this is safe after the leader was reaped.
    with contextlib.suppress(ProcessLookupError):  # the whole group is gone already
        os.killpg(proc.pid, sig)


def exit_status(code: int) -> str:
    """'code 3' or 'killed by SIGKILL' (Popen's negative return codes are signals)."""
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"code {code}"


@dataclass
class _Child:
    """One spec's current process and its history across restarts."""

    spec: ProcessSpec
    history: CrashHistory
    proc: subprocess.Popen | None = None
    output: OutputTail | None = None
    started_at: float = 0.0
    restart_at: float | None = None  # a restart is scheduled for this monotonic time
    reaped: bool = False  # the current process exited and its group was killed: never signal it again
    ready_once: bool = False


class _StopStack(Exception):
    """A required child cannot be served: `wait` returns 1."""


class Supervisor:
    """Owns the children of one launcher: start, watch (probe, restart with backoff, give up on a crash
    loop) until a stop is requested or a required child is lost, stop."""

    def __init__(
        self,
        specs: Sequence[ProcessSpec],
        *,
        grace_secs: float = 10.0,
        env: dict | None = None,
        probe: Probe | None = None,
        restart: RestartPolicy | None = None,
    ) -> None:
        self.specs = list(specs)
        self.grace_secs = grace_secs
        self._env = env
        self._probe = probe or (lambda spec: True)
        self.restart = restart or RestartPolicy()
        self.failed: dict[str, str] = {}  # optional children left out (model failed to load, crash loop) -> why
        self._status: dict[str, str] = {}  # what each child not yet ready is doing (for the timeout message)
        self._children = {spec.name: _Child(spec, CrashHistory(self.restart)) for spec in self.specs}
        self.procs: dict[str, subprocess.Popen] = {}  # each child's current (latest) process
        self._hook = _die_with_parent_hook()
        self._stop_requests = 0
        self._stopping = False

    def start(self) -> None:
        """Start every child, in order (engines first: the gateway's first health checks find them)."""
        for child in self._children.values():
            self._start(child)

    def _start(self, child: _Child) -> None:
        # stdin closed: a child in a background process group that read the terminal would be stopped.
        # Output through a pipe we pass on: its last lines explain a crash loop.
        proc = subprocess.Popen(
            list(child.spec.argv),
            env=self._env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            preexec_fn=self._hook,
            process_group=0,
        )
        child.proc, child.output, child.reaped, child.restart_at = proc, OutputTail(proc.stdout), False, None
        child.started_at = time.monotonic()
        self.procs[child.spec.name] = proc
        log.info("started %s (pid %d, port %d)", child.spec.name, proc.pid, child.spec.port)

    def wait(
        self,
        *,
        on_ready: Callable[[dict[str, str]], None] | None = None,
        ready_timeout: float = 600.0,
        poll_secs: float = 0.25,
    ) -> int:
        """Block until a stop is requested (0) or the stack cannot go on (1); returns the exit code.

        Children not yet ready are probed each round; each is logged when it becomes ready, and
        `on_ready(failed)` runs once, the first time all are (`failed`: optional children left out, with
        their reason). A child that exits is restarted after its backoff and probed again; a crash loop
        or a required model that failed to load stops the stack at once, with the reason. A start not
        ready after `ready_timeout` (0: no limit) is a failure, naming the laggards and what they were
        doing: a stack that hangs while loading must not wait unnoticed.
        """
        pending = list(self.specs)
        announced = False
        try:
            while not self._stop_requests:
                now = time.monotonic()
                for child in self._children.values():
                    if child.proc is not None and not child.reaped and child.proc.poll() is not None:
                        self._on_exit(child, now)
                        pending = [s for s in pending if s is not child.spec]
                    elif child.restart_at is not None and now >= child.restart_at:
                        self._start(child)
                        waiting = {s.name for s in pending} | {child.spec.name}
                        pending = [s for s in self.specs if s.name in waiting]  # in start order: the gateway last
                pending = [spec for spec in pending if not self._settled(spec, pending)]
                restarting = any(c.restart_at is not None for c in self._children.values())
                if not pending and not restarting and not announced:  # the banner waits for a child in backoff
                    announced = True
                    if on_ready is not None:
                        on_ready(dict(self.failed))
                self._check_ready_timeout(pending, ready_timeout)
                time.sleep(poll_secs)
        except _StopStack:
            return 1
        return 0

    def _settled(self, spec: ProcessSpec, pending: list[ProcessSpec]) -> bool:
        """Probe one pending child: True once it needs no more probing (ready, or left out)."""
        child = self._children[spec.name]
        answer = self._probed(spec, pending)
        if answer.ready:
            again = " again" if child.ready_once else ""
            log.info(
                "%s is ready%s on port %d (%.1fs)", spec.name, again, spec.port, time.monotonic() - child.started_at
            )
            child.ready_once = True
            self.failed.pop(spec.name, None)
            return True
        if answer.failed is not None and spec.required:
            log.error("%s: model failed to load: %s; stopping the stack", spec.name, answer.failed)
            raise _StopStack
        if answer.failed is not None:
            log.warning("%s: model failed to load: %s; serving without it", spec.name, answer.failed)
            self.failed[spec.name] = answer.failed
            return True
        self._status[spec.name] = answer.status
        return False

    def _check_ready_timeout(self, pending: list[ProcessSpec], ready_timeout: float) -> None:
        now = time.monotonic()
        late = [s for s in pending if ready_timeout and now - self._children[s.name].started_at > ready_timeout]
        if late:
            names = ", ".join(f"{s.name} (port {s.port}{self._doing(s)})" for s in late)
            log.error("not ready after %.0fs: %s; stopping the stack", ready_timeout, names)
            raise _StopStack

    def _on_exit(self, child: _Child, now: float) -> None:
        """A child exited on its own: schedule its restart, or give up on it (a crash loop)."""
        proc, spec = child.proc, child.spec
        _signal_group(proc, signal.SIGKILL)  # whatever it left behind goes with it, before its group id can be reused
        child.reaped = True
        status = exit_status(proc.returncode)
        delay = child.history.on_exit(now, now - child.started_at)
        crashes = child.history.crashes
        if delay is None:
            tail = child.output.text() if child.output else ""
            log.error(
                "%s exited unexpectedly with %s, its %d%s crash in %.0fs: a crash loop, giving up on it. "
                "Its last output:\n%s",
                spec.name,
                status,
                crashes,
                _ordinal(crashes),
                self.restart.crash_window_secs,
                _indented(tail),
            )
            if spec.required:
                log.error("%s is required; stopping the stack", spec.name)
                raise _StopStack
            self.failed[spec.name] = f"crash loop ({crashes} crashes, last {status})"
            log.warning(
                "%s is optional: the stack keeps serving without it (image requests answer 503 "
                "vision_unavailable until the launcher is restarted)",
                spec.name,
            )
            return
        child.restart_at = now + delay
        log.warning(
            "%s exited unexpectedly with %s after %.1fs; restarting it in %gs (crash %d of %d allowed in %.0fs)",
            spec.name,
            status,
            now - child.started_at,
            delay,
            crashes,
            self.restart.max_crashes - 1,
            self.restart.crash_window_secs,
        )

    def _doing(self, spec: ProcessSpec) -> str:
        status = self._status.get(spec.name, "")
        return f": {status}" if status else ""

    def _probed(self, spec: ProcessSpec, pending: list[ProcessSpec]) -> Readiness:
        # The last child (the gateway) is ready only when all the others are, so it is asked only then:
        # polling its /ready while models load would fill its access log with 503 lines.
        if spec is self.specs[-1] and len(pending) > 1:
            return Readiness(status="waiting for the engines")
        answer = self._probe(spec)
        return Readiness(ready=answer) if isinstance(answer, bool) else answer

    def request_stop(self, signum: int = signal.SIGTERM, _frame=None) -> None:
        """Signal handler: the first call makes `wait` return; a second one kills the children at once."""
        self._stop_requests += 1
        if self._stop_requests == 1:
            # What happens next, and how to skip it: a drain with streams open can take the whole grace period.
            log.info(
                "%s received; stopping: running requests get up to %.0fs to finish (%s again to stop now)",
                signal.Signals(signum).name,
                self.grace_secs,
                "Ctrl-C" if signum == signal.SIGINT else "the signal",
            )
        elif self._stopping:  # else `stop`, about to run, sees the count and kills
            self._kill_all()

    def _live(self) -> list[_Child]:
        return [c for c in self._children.values() if c.proc is not None and not c.reaped]

    def _kill_all(self) -> None:
        log.warning("second signal: killing the children now")
        for child in self._live():
            _signal_group(child.proc, signal.SIGKILL)

    def stop(self) -> None:
        """SIGTERM every group (gateway first: it stops taking requests before the engines go), wait up
        to the grace period, SIGKILL the rest. Cancels pending restarts. Safe to call twice."""
        self._stopping = True
        for child in self._children.values():
            child.restart_at = None
        live = self._live()
        for child in reversed(live):
            _signal_group(child.proc, signal.SIGTERM)
        if self._stop_requests > 1:
            self._kill_all()
        deadline = time.monotonic() + self.grace_secs
        for child in live:
            try:
                child.proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop in %.0fs; killing it", child.spec.name, self.grace_secs)
            # Also for a leader that did exit: a member it left behind must not survive us.
            _signal_group(child.proc, signal.SIGKILL)
            child.proc.wait()
            child.reaped = True

    def run(self, *, on_ready: Callable[[dict[str, str]], None] | None = None, ready_timeout: float = 600.0) -> int:
        """The launcher's whole life: handle SIGINT/SIGTERM, start, wait, always stop; the exit code."""
        signal.signal(signal.SIGINT, self.request_stop)
        signal.signal(signal.SIGTERM, self.request_stop)
        try:
            self.start()
            return self.wait(on_ready=on_ready, ready_timeout=ready_timeout)
        finally:
            self.stop()
            log.info("stopped")


def _ordinal(n: int) -> str:
    return "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")


def _indented(text: str) -> str:
    return "\n".join(f"    {line}" for line in text.splitlines()) or "    (nothing)"
