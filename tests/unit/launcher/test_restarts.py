"""The restart bookkeeping alone: backoff doubling and its cap, the reset after a stable run, the
crash-loop window."""

from __future__ import annotations

from services.launcher.restarts import CrashHistory, RestartPolicy

POLICY = RestartPolicy(
    initial_backoff_secs=1, max_backoff_secs=5, stable_after_secs=60, max_crashes=6, crash_window_secs=300
)


def on_exit(history: CrashHistory, now: float, uptime_secs: float) -> tuple[float | None, int]:
    """The delay `on_exit` answers, with the crash count it leaves."""
    return history.on_exit(now=now, uptime_secs=uptime_secs), history.crashes


def test_backoff_doubles_up_to_the_cap_then_a_crash_loop_is_given_up():
    history = CrashHistory(POLICY)
    decisions = [on_exit(history, t, 2) for t in (10, 20, 30, 40, 50, 60)]
    assert decisions == [(1, 1), (2, 2), (4, 3), (5, 4), (5, 5), (None, 6)]


def test_a_child_that_stayed_up_long_enough_starts_over():
    history = CrashHistory(POLICY)
    for t in (10, 20, 30):
        history.on_exit(now=t, uptime_secs=2)
    assert on_exit(history, 200, 60) == (1, 1)  # backoff and count reset
    assert on_exit(history, 210, 2) == (2, 2)


def test_crashes_older_than_the_window_are_forgotten():
    history = CrashHistory(POLICY)
    for t in (0, 10, 20, 30, 40):  # five quick crashes, then a long quiet spell of short runs
        history.on_exit(now=t, uptime_secs=2)
    assert on_exit(history, 335, 2) == (2, 2)  # only 40 and 335 are within 300 s
    assert CrashHistory(RestartPolicy(max_crashes=1)).on_exit(now=0, uptime_secs=0) is None
