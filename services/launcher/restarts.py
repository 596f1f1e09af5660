"""When to restart a child that exited on its own, and when to give up on it: pure bookkeeping, no processes.

Kubernetes' CrashLoopBackOff, in small: the first restart waits `initial_backoff_secs`, each crash
after it doubles the wait up to `max_backoff_secs`; a child that stayed up `stable_after_secs` is
healthy again (its next crash restarts after the initial wait and starts a new count). `max_crashes`
crashes within `crash_window_secs` is a crash loop: restarting again would only hide the problem.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field


@dataclass(frozen=True)
class RestartPolicy:
    """The supervisor's restart constants (docs/operations.md, "The launcher", lists the defaults)."""

    initial_backoff_secs: float = 1.0
    max_backoff_secs: float = 30.0
    stable_after_secs: float = 60.0  # up this long: the backoff and the crash count start over
    max_crashes: int = 5  # ... within crash_window_secs: a crash loop, given up
    crash_window_secs: float = 300.0


@dataclass
class CrashHistory:
    """One child's recent crashes under a policy."""

    policy: RestartPolicy
    _crashes: deque[float] = field(default_factory=deque)  # monotonic times, within the window

    @property
    def crashes(self) -> int:
        """Crashes within the window, the last one included."""
        return len(self._crashes)

    def on_exit(self, now: float, uptime_secs: float) -> float | None:
        """The child exited at `now` after running `uptime_secs`: the seconds to wait before starting it again, or
        None for a crash loop (give up on it)."""
        if uptime_secs >= self.policy.stable_after_secs:
            self._crashes.clear()
        self._crashes.append(now)
        while now - self._crashes[0] > self.policy.crash_window_secs:
            self._crashes.popleft()
        if self.crashes >= self.policy.max_crashes:
            return None
        return min(self.policy.initial_backoff_secs * 2 ** (self.crashes - 1), self.policy.max_backoff_secs)
