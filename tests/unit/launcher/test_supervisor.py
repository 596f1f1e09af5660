"""The supervisor with real child processes: a stop stops all (stubborn ones and grandchildren too), a
crashed child is restarted (and probed again) while the others keep running, a crash loop is given up
(the stack stops for a required child, not for an optional one), a hung start times out, and children
never outlive a launcher, even a SIGKILLed one.

Every wait has a deadline and polls for the state asserted; no sleep stands in for an assertion.
"""

from __future__ import annotations

import logging
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from services.common.pb.proxyvision.v1 import common_pb2, text_engine_pb2_grpc
from services.launcher.plan import ProcessSpec
from services.launcher.probes import Readiness, engine_readiness, grpc_serving, http_ready, port_is_free, ports_in_use
from services.launcher.restarts import RestartPolicy
from services.launcher.supervisor import Supervisor, exit_status
from tests.support.processes import wait_until

REPO_ROOT = Path(__file__).resolve().parents[3]


def program(code: str, *args: str) -> tuple[str, ...]:
    return (sys.executable, "-c", textwrap.dedent(code), *args)


SLEEPER = program("import time; time.sleep(600)")
CRASHER = program("import sys, time; time.sleep(0.3); print('boom: no weights', flush=True); sys.exit(3)")
# Crashes on its first run (creating the file argv[1]), then stays up.
CRASHES_ONCE = """
    import pathlib, sys, time
    marker = pathlib.Path(sys.argv[1])
    if not marker.exists():
        marker.write_text("crashed")
        sys.exit(7)
    time.sleep(600)
"""
FAST = RestartPolicy(
    initial_backoff_secs=0.05, max_backoff_secs=0.2, stable_after_secs=60, max_crashes=3, crash_window_secs=60
)
# Ignores SIGTERM, then says so by creating the file given as argv[1].
STUBBORN = """
    import pathlib, signal, sys, time
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    pathlib.Path(sys.argv[1]).write_text("ready")
    time.sleep(600)
"""
# Starts a grandchild and writes its pid to argv[1].
PARENT_OF_ONE = """
    import pathlib, subprocess, sys, time
    grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    pathlib.Path(sys.argv[1]).write_text(str(grandchild.pid))
    time.sleep(600)
"""


def spec(name: str, argv: tuple[str, ...]) -> ProcessSpec:
    return ProcessSpec(name, "text_engine", argv, 0)


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie is gone for our purposes
    except FileNotFoundError:
        return False


def wait_gone(pids, timeout: float = 10.0) -> None:
    wait_until(lambda: not any(alive(p) for p in pids), timeout, f"pids {pids} gone", interval=0.05)


def read_when_written(path: Path) -> str:
    wait_until(lambda: path.exists() and path.read_text(), 10, f"{path.name} written", interval=0.05)
    return path.read_text()


@pytest.fixture
def launcher():
    """Starts launcher-equivalent processes (`Supervisor.run`, signal handlers and all, over dummy
    children); any still running at teardown is stopped, so a failing test leaks nothing."""
    started: list[subprocess.Popen] = []

    def start(specs: str, *, grace: float = 1.0, restart: RestartPolicy = FAST) -> subprocess.Popen:
        """`specs`: Python source of a list of (name, argv) or (name, argv, required)."""
        script = f"""
            import logging, sys
            logging.basicConfig(level=logging.INFO, format="%(message)s")
            from services.launcher.plan import ProcessSpec
            from services.launcher.restarts import RestartPolicy
            from services.launcher.supervisor import Supervisor
            specs = [ProcessSpec(s[0], "text_engine", tuple(s[1]), 0, required=s[2] if len(s) > 2 else True)
                     for s in {specs}]
            sys.exit(Supervisor(specs, grace_secs={grace}, restart={restart!r}).run())
        """
        proc = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(script)], cwd=REPO_ROOT, stderr=subprocess.PIPE, text=True
        )
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()  # its children follow through PR_SET_PDEATHSIG
            proc.wait()
        proc.stderr.close()


def wait_for_line(proc: subprocess.Popen, needle: str) -> str:
    """Read the launcher's log until a line with `needle`, and return it (pytest-timeout bounds a launcher that
    never says it)."""
    for line in proc.stderr:
        if needle in line:
            return line
    raise AssertionError(f"launcher exited ({proc.wait()}) without logging {needle!r}")


def child_pids(pid: int) -> list[int]:
    out = subprocess.run(
        ["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True
    ).stdout  # exits 1 when none
    return [int(p) for p in out.split()]


def test_stop_terminates_all_kills_the_stubborn_and_takes_grandchildren(tmp_path):
    stubborn_ready, grandchild_file = tmp_path / "stubborn", tmp_path / "grandchild"
    sup = Supervisor(
        [
            spec("sleeper", SLEEPER),
            spec("stubborn", program(STUBBORN, str(stubborn_ready))),
            spec("parent", program(PARENT_OF_ONE, str(grandchild_file))),
        ],
        grace_secs=1.0,
    )
    sup.start()
    try:
        pids = [p.pid for p in sup.procs.values()]
        read_when_written(stubborn_ready)
        grandchild = int(read_when_written(grandchild_file))
        started = time.monotonic()
        sup.stop()
        assert time.monotonic() - started < 5  # SIGKILL after the 1 s grace, not a hang
    finally:
        sup.stop()  # a no-op after a stop; on a failure above, leaves nothing running
    wait_gone([*pids, grandchild])
    assert sup.procs["sleeper"].returncode == -signal.SIGTERM
    assert sup.procs["stubborn"].returncode == -signal.SIGKILL


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_to_the_launcher_stops_every_child_and_exits_0(launcher, tmp_path, sig):
    ready = tmp_path / "stubborn"
    proc = launcher(f"[('sleeper', {SLEEPER!r}), ('stubborn', {program(STUBBORN, str(ready))!r})]")
    read_when_written(ready)  # both children run (the stubborn one is the slower to start)
    children = child_pids(proc.pid)
    assert len(children) == 2
    proc.send_signal(sig)
    assert proc.wait(10) == 0
    wait_gone(children)


@pytest.mark.timeout(20)
def test_a_second_signal_kills_at_once(launcher, tmp_path):
    ready = tmp_path / "stubborn"
    proc = launcher(f"[('stubborn', {program(STUBBORN, str(ready))!r})]", grace=60.0)
    read_when_written(ready)
    [child] = child_pids(proc.pid)
    proc.send_signal(signal.SIGTERM)
    line = wait_for_line(proc, "SIGTERM received")  # two signals sent too close together count as one
    assert "up to 60s to finish (the signal again to stop now)" in line
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(5) == 0
    wait_gone([child])


@pytest.mark.timeout(20)
def test_ctrl_c_says_how_long_the_drain_may_take_and_that_a_second_ctrl_c_stops_at_once(launcher, tmp_path):
    ready = tmp_path / "stubborn"
    proc = launcher(f"[('stubborn', {program(STUBBORN, str(ready))!r})]", grace=45.0)
    read_when_written(ready)
    [child] = child_pids(proc.pid)
    proc.send_signal(signal.SIGINT)
    assert "up to 45s to finish (Ctrl-C again to stop now)" in wait_for_line(proc, "SIGINT received")
    proc.send_signal(signal.SIGINT)
    assert proc.wait(5) == 0
    wait_gone([child])


def test_a_required_child_in_a_crash_loop_stops_the_stack_naming_it_its_exit_and_its_output(launcher):
    proc = launcher(f"[('sleeper', {SLEEPER!r}), ('crasher', {CRASHER!r})]")
    wait_until(lambda: len(child_pids(proc.pid)) == 2, 10, "both children started", interval=0.05)
    sleeper = child_pids(proc.pid)  # the crasher is still in its first run; the sleeper must not be restarted
    assert proc.wait(20) == 1
    log = proc.stderr.read()
    assert log.count("started crasher") == 3 and log.count("started sleeper") == 1
    assert "crasher exited unexpectedly with code 3 after" in log and "restarting it in 0.05s (crash 1 of 2" in log
    assert "restarting it in 0.1s (crash 2 of 2" in log
    assert "crasher exited unexpectedly with code 3, its 3rd crash in 60s: a crash loop, giving up on it." in log
    assert "Its last output:\n    boom: no weights" in log
    assert "crasher is required; stopping the stack" in log
    assert log.count("boom: no weights") == 4  # each of the 3 runs' output passed through, then quoted once
    wait_gone(sleeper)


def test_an_optional_child_in_a_crash_loop_is_left_out_and_the_stack_stays_up(launcher):
    proc = launcher(f"[('sleeper', {SLEEPER!r}), ('vision', {CRASHER!r}, False)]")
    wait_for_line(proc, "vision is optional: the stack keeps serving without it")
    [sleeper] = child_pids(proc.pid)  # the sleeper alone is left, and the launcher runs on
    assert proc.poll() is None
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == 0
    wait_gone([sleeper])


def test_a_crashed_child_is_restarted_the_others_untouched(launcher, tmp_path):
    marker = tmp_path / "crashed"
    proc = launcher(f"[('sleeper', {SLEEPER!r}), ('flaky', {program(CRASHES_ONCE, str(marker))!r})]")
    wait_for_line(proc, "flaky exited unexpectedly with code 7")
    wait_for_line(proc, "started flaky")  # its second run, which stays up
    wait_until(
        lambda: len(child_pids(proc.pid)) == 2, 10, "the restarted child running beside the sleeper", interval=0.05
    )
    children = child_pids(proc.pid)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(10) == 0
    assert "sleeper exited" not in proc.stderr.read()
    wait_gone(children)


@pytest.mark.timeout(20)
def test_a_restarted_child_is_probed_until_ready_again_and_announced_once(tmp_path, caplog):
    marker = tmp_path / "crashed"
    probes: dict[str, int] = {}

    def probe(s: ProcessSpec) -> bool:  # ready whenever its process is running
        probes[s.name] = probes.get(s.name, 0) + 1
        return sup.procs[s.name].poll() is None

    announced: list[dict] = []
    sup = Supervisor(
        [spec("flaky", program(CRASHES_ONCE, str(marker))), spec("gateway", SLEEPER)],
        grace_secs=1.0,
        probe=probe,
        restart=FAST,
    )
    sup.start()
    first = sup.procs["flaky"].pid
    results: list[int] = []
    with caplog.at_level(logging.INFO, logger="proxyvision"):
        waiter = threading.Thread(target=lambda: results.append(sup.wait(on_ready=announced.append, poll_secs=0.01)))
        waiter.start()
        try:
            # Ready after its restart: "ready again" when a probe saw it up before the crash, plain "ready" when it
            # crashed before its first probe (on a loaded machine the first round can come after the crash).
            wait_until(
                lambda: "flaky is ready" in caplog.text.partition("flaky exited unexpectedly")[2],
                10,
                "the restarted child ready again",
                interval=0.05,
            )
        finally:
            sup.request_stop()
            waiter.join(10)
            sup.stop()
    assert results == [0] and sup.procs["flaky"].pid != first
    assert announced == [{}]  # once (never per restart), and not while a child waits out its backoff
    assert "flaky exited unexpectedly with code 7" in caplog.text


def test_a_stop_during_a_backoff_starts_nothing(tmp_path, caplog):
    slow = RestartPolicy(initial_backoff_secs=600, max_backoff_secs=600)
    sup = Supervisor([spec("crasher", CRASHER)], grace_secs=1.0, restart=slow)
    results: list[int] = []
    with caplog.at_level(logging.INFO, logger="proxyvision"):
        sup.start()
        waiter = threading.Thread(target=lambda: results.append(sup.wait(poll_secs=0.01)))
        waiter.start()
        try:
            wait_until(lambda: "restarting it in 600s" in caplog.text, 10, "the restart scheduled", interval=0.05)
        finally:
            sup.request_stop()
            waiter.join(10)
            sup.stop()
    assert results == [0] and caplog.text.count("started crasher") == 1


def test_exit_status_names_signals():
    assert exit_status(3) == "code 3"
    assert exit_status(-signal.SIGKILL) == "killed by SIGKILL"


def test_children_die_with_a_sigkilled_launcher(launcher):
    proc = launcher(f"[('a', {SLEEPER!r}), ('b', {SLEEPER!r})]")
    wait_until(lambda: len(child_pids(proc.pid)) == 2, 10, "both children started", interval=0.05)
    children = child_pids(proc.pid)
    proc.kill()
    proc.wait(5)
    wait_gone(children)


@pytest.mark.timeout(20)
def test_wait_announces_readiness_once_and_asks_the_gateway_last(caplog):
    calls = {"a": 0, "b": 0, "gateway": 0}

    def probe(spec: ProcessSpec) -> bool:  # "a" is ready at once, "b" on its third probe
        calls[spec.name] += 1
        return spec.name != "b" or calls["b"] >= 3

    announced = []

    def on_ready(failed: dict[str, str]) -> None:
        assert failed == {}
        announced.append(time.monotonic())
        # Stop a few dozen rounds later, from another thread like a signal would: enough rounds to see
        # a second announcement if there were one.
        threading.Timer(0.3, sup.request_stop).start()

    sup = Supervisor([spec("a", SLEEPER), spec("b", SLEEPER), spec("gateway", SLEEPER)], grace_secs=1.0, probe=probe)
    sup.start()
    try:
        with caplog.at_level(logging.INFO, logger="proxyvision"):
            assert sup.wait(on_ready=on_ready, poll_secs=0.01) == 0
    finally:
        sup.stop()
    assert len(announced) == 1
    # A ready child is not probed again; the gateway not before the engines are all ready.
    assert calls == {"a": 1, "b": 3, "gateway": 1}
    ready = [r.getMessage().split(" is ready")[0] for r in caplog.records if " is ready" in r.getMessage()]
    assert ready == ["a", "b", "gateway"]


@pytest.mark.parametrize(
    "laggard, said",
    [
        (False, "not ready after 0s: slow (port 0)"),
        (
            Readiness(status="downloading model.safetensors 1.2/7.5 GB"),
            "not ready after 0s: slow (port 0: downloading model.safetensors 1.2/7.5 GB)",
        ),  # what it was doing
    ],
)
def test_a_stack_not_ready_in_time_fails_naming_the_laggard(caplog, laggard, said):
    ready = Readiness(ready=True) if isinstance(laggard, Readiness) else True
    sup = Supervisor(
        [spec("a", SLEEPER), spec("slow", SLEEPER)], grace_secs=1.0, probe=lambda s: ready if s.name == "a" else laggard
    )
    sup.start()
    try:
        assert sup.wait(ready_timeout=0.3, poll_secs=0.05) == 1
    finally:
        sup.stop()
    assert said in caplog.text


@pytest.mark.timeout(20)
def test_a_required_model_that_failed_to_load_stops_the_stack_at_once_with_the_reason(caplog):
    probes = {"text": 0}

    def probe(s: ProcessSpec) -> Readiness:  # the text engine loads for two rounds, then fails
        probes[s.name] = probes.get(s.name, 0) + 1
        if s.name == "text" and probes["text"] > 2:
            return Readiness(failed="cannot load weights from '/m': no model.safetensors")
        return Readiness(status="loading weights")

    sup = Supervisor([spec("text", SLEEPER), spec("gateway", SLEEPER)], grace_secs=1.0, probe=probe)
    sup.start()
    try:
        started = time.monotonic()
        assert sup.wait(ready_timeout=600, poll_secs=0.01) == 1
        assert time.monotonic() - started < 5  # not the ready timeout
    finally:
        sup.stop()
    assert (
        "text: model failed to load: cannot load weights from '/m': no model.safetensors; stopping the stack"
        in caplog.text
    )
    assert probes == {"text": 3}  # the gateway was never asked


@pytest.mark.timeout(20)
def test_an_optional_model_that_failed_to_load_is_left_out_and_named_in_on_ready(caplog):
    def probe(s: ProcessSpec) -> Readiness:
        return Readiness(failed="ImportError: no accelerate") if s.name == "vision" else Readiness(ready=True)

    announced: list[dict] = []

    def on_ready(failed: dict[str, str]) -> None:
        announced.append(failed)
        threading.Timer(0.2, sup.request_stop).start()

    vision = ProcessSpec("vision", "vision_engine", SLEEPER, 0, required=False)
    sup = Supervisor([spec("text", SLEEPER), vision, spec("gateway", SLEEPER)], grace_secs=1.0, probe=probe)
    sup.start()
    try:
        assert sup.wait(on_ready=on_ready, poll_secs=0.01) == 0
        assert sup.procs["vision"].poll() is None  # kept running: its GetModelInfo still says why
    finally:
        sup.stop()
    assert announced == [{"vision": "ImportError: no accelerate"}]
    assert "vision: model failed to load: ImportError: no accelerate; serving without it" in caplog.text


def test_ports_in_use_are_reported():
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        taken = held.getsockname()[1]
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            free = probe.getsockname()[1]
        specs = [ProcessSpec("x", "text_engine", (), taken), ProcessSpec("y", "text_engine", (), free)]
        assert [s.name for s in ports_in_use(specs)] == ["x"]
        assert not port_is_free("0.0.0.0", taken)  # a wildcard bind collides with the loopback listener
    assert port_is_free("127.0.0.1", taken)


def test_grpc_probe_follows_the_health_service():
    server = grpc.server(__import__("concurrent.futures").futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        assert not grpc_serving(f"127.0.0.1:{port}")  # loading
        servicer.set("", health_pb2.HealthCheckResponse.SERVING)
        assert grpc_serving(f"127.0.0.1:{port}")
    finally:
        server.stop(None)
    assert not grpc_serving(f"127.0.0.1:{port}", timeout=0.5)  # nothing listening
    assert not http_ready(f"http://127.0.0.1:{port}/ready", timeout=0.5)


class FakeModelInfo(text_engine_pb2_grpc.TextEngineServicer):
    """GetModelInfo answering whatever `info` holds now."""

    def __init__(self) -> None:
        self.info = common_pb2.ModelInfo(state=common_pb2.MODEL_STATE_LOADING, status="loading weights")

    def GetModelInfo(self, request, context):
        return self.info


def test_engine_readiness_tells_loading_from_failed_from_serving():
    from concurrent.futures import ThreadPoolExecutor

    server = grpc.server(ThreadPoolExecutor(max_workers=2))
    servicer, fake = health.HealthServicer(), FakeModelInfo()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    text_engine_pb2_grpc.add_TextEngineServicer_to_server(fake, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    target = f"127.0.0.1:{port}"
    try:
        servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        assert engine_readiness(target, "text_engine") == Readiness(status="loading weights")
        fake.info = common_pb2.ModelInfo(
            state=common_pb2.MODEL_STATE_FAILED, error="no weights", status="failed: no weights"
        )
        assert engine_readiness(target, "text_engine") == Readiness(failed="no weights")
        servicer.set("", health_pb2.HealthCheckResponse.SERVING)
        assert engine_readiness(target, "text_engine") == Readiness(ready=True)
    finally:
        server.stop(None)
    assert engine_readiness(target, "text_engine", timeout=0.5) == Readiness(status="starting")
