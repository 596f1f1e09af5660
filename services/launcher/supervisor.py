"""Start child processes, watch them, and stop them all: no orphans, whatever happens to the launcher.

Two guards, because either alone leaves a hole:
- each child leads its own process group, and every stop signals the whole group, so whatever a
  child spawned goes too; the terminal's Ctrl-C reaches only the launcher, which then stops the
  children in order (the gateway first) instead of all of them racing a double signal;
- on Linux each child gets PR_SET_PDEATHSIG(SIGKILL): a launcher killed with SIGKILL, which runs no
  code, still takes its children with it.

If a child exits on its own, the others are stopped and the launcher exits non-zero (predictable;
Kubernetes restarts pods). On SIGINT/SIGTERM: SIGTERM to every group, SIGKILL after a grace period
(or at once on a second signal), exit 0.

An engine whose model failed to load stays up (NOT_SERVING, the reason in GetModelInfo), so the probe
sees the failure at its next round: a required child (a text engine) then stops the stack at once with
the engine's reason, instead of waiting out the ready timeout; an optional one (the vision engine) is
reported and the stack is ready without it.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence

from .plan import ProcessSpec
from .probes import Readiness

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
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass  # the whole group is gone already


class Supervisor:
    """Owns the children of one launcher: start, watch until ready or exit or signal, stop."""

    def __init__(self, specs: Sequence[ProcessSpec], *, grace_secs: float = 10.0, env: dict | None = None,
                 probe: Probe | None = None) -> None:  # fmt: skip
        self.specs = list(specs)
        self.grace_secs = grace_secs
        self._env = env
        self._probe = probe or (lambda spec: True)
        self.failed: dict[str, str] = {}  # optional children whose model failed to load -> the reason
        self._status: dict[str, str] = {}  # what each child not yet ready is doing (for the timeout message)
        self.procs: dict[str, subprocess.Popen] = {}
        self._stop_requests = 0
        self._stopping = False

    def start(self) -> None:
        """Start every child, in order (engines first: the gateway's first health checks find them)."""
        hook = _die_with_parent_hook()
        for spec in self.specs:
            # stdin closed: a child in a background process group that read the terminal would be stopped.
            proc = subprocess.Popen(list(spec.argv), env=self._env, stdin=subprocess.DEVNULL, preexec_fn=hook,
                                    process_group=0)  # fmt: skip
            self.procs[spec.name] = proc
            log.info("started %s (pid %d, port %d)", spec.name, proc.pid, spec.port)

    def exited(self) -> tuple[str, int] | None:
        """The first child that has exited, with its code."""
        for name, proc in self.procs.items():
            code = proc.poll()
            if code is not None:
                return name, code
        return None

    def wait(self, *, on_ready: Callable[[dict[str, str]], None] | None = None, ready_timeout: float = 600.0,
             poll_secs: float = 0.25) -> int:  # fmt: skip
        """Block until a child exits or a stop is requested; returns the launcher's exit code.

        Children not yet ready are probed each round; each is logged when it becomes ready, and
        `on_ready(failed)` runs once when all are (`failed`: optional children left out, with their
        reason). A required child whose model failed to load stops the stack at once, with the reason.
        Not all ready after `ready_timeout` (0: no limit) is a failure, naming the laggards and what
        they were doing: a stack that hangs while loading must not wait unnoticed.
        """
        started = time.monotonic()
        pending = list(self.specs)
        while not self._stop_requests:
            gone = self.exited()
            if gone is not None:
                log.error("%s exited unexpectedly with code %d; stopping the stack", *gone)
                return 1
            still = []
            for spec in pending:
                answer = self._probed(spec, pending)
                if answer.ready:
                    log.info("%s is ready on port %d (%.1fs)", spec.name, spec.port, time.monotonic() - started)
                elif answer.failed is not None and spec.required:
                    log.error("%s: model failed to load: %s; stopping the stack", spec.name, answer.failed)
                    return 1
                elif answer.failed is not None:
                    log.warning("%s: model failed to load: %s; serving without it", spec.name, answer.failed)
                    self.failed[spec.name] = answer.failed
                else:
                    self._status[spec.name] = answer.status
                    still.append(spec)
            if pending and not still and on_ready is not None:
                on_ready(dict(self.failed))
            pending = still
            if pending and ready_timeout and time.monotonic() - started > ready_timeout:
                names = ", ".join(f"{s.name} (port {s.port}{self._doing(s)})" for s in pending)
                log.error("not ready after %.0fs: %s; stopping the stack", ready_timeout, names)
                return 1
            time.sleep(poll_secs)
        return 0

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
            log.info("%s received; stopping", signal.Signals(signum).name)
        elif self._stopping:  # else `stop`, about to run, sees the count and kills
            self._kill_all()

    def _kill_all(self) -> None:
        log.warning("second signal: killing the children now")
        for proc in self.procs.values():
            _signal_group(proc, signal.SIGKILL)

    def stop(self) -> None:
        """SIGTERM every group (gateway first: it stops taking requests before the engines go), wait up
        to the grace period, SIGKILL the rest. Safe to call twice."""
        self._stopping = True
        for proc in reversed(self.procs.values()):
            _signal_group(proc, signal.SIGTERM)
        if self._stop_requests > 1:
            self._kill_all()
        deadline = time.monotonic() + self.grace_secs
        for name, proc in self.procs.items():
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop in %.0fs; killing it", name, self.grace_secs)
            # Also for a leader that did exit: a member it left behind must not survive us.
            _signal_group(proc, signal.SIGKILL)
            proc.wait()

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
