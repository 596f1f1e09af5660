"""The restart bookkeeping alone: backoff doubling and its cap, the reset after a stable run, the
crash-loop window."""

from __future__ import annotations

from services.launcher.restarts import CrashHistory, GiveUp, Restart, RestartPolicy

POLICY = RestartPolicy(
    initial_backoff_secs=1, max_backoff_secs=5, stable_after_secs=60, max_crashes=6, crash_window_secs=300
)


def test_backoff_doubles_up_to_the_cap_then_a_crash_loop_is_given_up():
    history = CrashHistory(POLICY)
    decisions = [history.on_exit(now=t, uptime_secs=2) for t in (10, 20, 30, 40, 50, 60)]
    assert decisions == [Restart(1, 1), Restart(2, 2), Restart(4, 3), Restart(5, 4), Restart(5, 5), GiveUp(6)]


def test_a_child_that_stayed_up_long_enough_starts_over():
    history = CrashHistory(POLICY)
    for t in (10, 20, 30):
        history.on_exit(now=t, uptime_secs=2)
    assert history.on_exit(now=200, uptime_secs=60) == Restart(1, 1)  # backoff and count reset
    assert history.on_exit(now=210, uptime_secs=2) == Restart(2, 2)


def test_crashes_older_than_the_window_are_forgotten():
    history = CrashHistory(POLICY)
    for t in (0, 10, 20, 30, 40):  # five quick crashes, then a long quiet spell of short runs
        history.on_exit(now=t, uptime_secs=2)
    assert history.on_exit(now=335, uptime_secs=2) == Restart(2, 2)  # only 40 and 335 are within 300 s
    assert isinstance(CrashHistory(RestartPolicy(max_crashes=1)).on_exit(now=0, uptime_secs=0), GiveUp)
