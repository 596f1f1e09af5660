"""check_hub_source against a hub endpoint on loopback: each way a checkpoint cannot be had fails at once, in
one line naming the fix; an unreachable hub with the checkpoint cached loads it from the cache."""

from __future__ import annotations

import socket
import threading
import time
from http.server import BaseHTTPRequestHandler

import pytest

from services.common.hf_models import ModelLoadError
from services.common.hub_access import check_hub_source
from tests.support.http_servers import ScriptedServer


@pytest.fixture
def hub(monkeypatch, tmp_path):
    """huggingface_hub pointed at an empty cache, online, with `use(endpoint)` choosing the hub."""
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)

    class Hub:
        cache = tmp_path / "hub"

        @staticmethod
        def use(endpoint: str) -> None:
            monkeypatch.setattr("huggingface_hub.constants.ENDPOINT", endpoint)

    return Hub


def closed_port() -> str:
    """An endpoint nothing listens on: every connection is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


def cache_snapshot(cache, repo: str, files=("config.json",), ref: str = "main") -> None:
    """The hub cache's layout for one downloaded snapshot."""
    folder = cache / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / ref).write_text("0123abcd")
    for name in files:
        (folder / "snapshots" / "0123abcd").mkdir(parents=True, exist_ok=True)
        (folder / "snapshots" / "0123abcd" / name).write_text("{}")


def hub_error(status: int, code: str):
    def route(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(status)
        handler.send_header("X-Error-Code", code)
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    return route


def failure(repo: str, **kw) -> str:
    started = time.monotonic()
    with pytest.raises(ModelLoadError) as caught:
        check_hub_source(repo, revision=kw.pop("revision", None), **kw)
    assert time.monotonic() - started < 20, "the issue's bound for failing: no retry ladder"
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_an_unreachable_hub_without_the_checkpoint_cached_fails_naming_the_fixes(hub):
    hub.use(closed_port())
    message = failure("org/model")
    assert message.startswith("hf_id org/model: cannot reach the hub at http://127.0.0.1:")
    assert "ConnectError" in message and "not in the hub cache" in message
    assert "HF_ENDPOINT" in message and "HF_HUB_OFFLINE=1" in message and "local_path" in message


def test_the_field_the_repo_id_came_from_is_named(hub):
    hub.use(closed_port())
    assert failure("org/model", field="capabilities.vision_proxy.hf_id").startswith(
        "capabilities.vision_proxy.hf_id org/model: cannot reach the hub"
    )


def test_an_unreachable_hub_with_the_checkpoint_cached_loads_it_offline(hub, caplog):
    import huggingface_hub.constants as constants

    # A GGUF repo has no config.json: the snapshot itself is what counts.
    cache_snapshot(hub.cache, "org/model", files=("model-Q4_K_M.gguf",))
    hub.use(closed_port())
    caplog.set_level("INFO", logger="services.common.hub_access")
    check_hub_source("org/model", revision=None)
    assert constants.HF_HUB_OFFLINE is True  # transformers now reads the cache without trying the network
    assert "cannot be reached" in caplog.text and "loading org/model from the hub cache" in caplog.text


def test_a_hub_that_never_answers_is_given_up_on_after_the_probe_timeout(hub, monkeypatch):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)  # accepts into the backlog and never answers
    monkeypatch.setattr("services.common.hub_access.PROBE_TIMEOUT_SECS", 0.5)
    hub.use(f"http://127.0.0.1:{listener.getsockname()[1]}")
    try:
        assert "cannot reach the hub" in failure("org/model")
    finally:
        listener.close()


@pytest.mark.parametrize(
    "path, status, code, revision, says",
    [
        (
            "/api/models/org/gated",
            401,
            "GatedRepo",
            None,
            "is a gated repo: accept its terms on the hub and set HF_TOKEN",
        ),
        ("/api/models/org/missing", 404, "RepoNotFound", None, "is not a repo on http://"),
        ("/api/models/org/model/revision/v9", 404, "RevisionNotFound", "v9", "has no revision 'v9'"),
    ],
)
def test_hub_answers_that_refuse_the_checkpoint_say_which_and_the_fix(hub, path, status, code, revision, says):
    server = ScriptedServer({path: hub_error(status, code)})
    hub.use(server.base)
    try:
        repo = path.removeprefix("/api/models/").split("/revision/")[0]
        message = failure(repo, revision=revision)
    finally:
        server.close()
    assert message.startswith(f"hf_id {repo} ") and says in message, message


def test_an_invalid_repo_id_says_to_check_it(hub):
    hub.use(closed_port())
    assert "is not a hub repo id" in failure("not//a repo")


def test_offline_mode_needs_the_checkpoint_in_the_cache(hub, monkeypatch):
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    message = failure("org/model")
    assert "is not in the hub cache" in message and "HF_HUB_OFFLINE is set" in message and "local_path" in message
    cache_snapshot(hub.cache, "org/model")
    check_hub_source("org/model", revision=None)


def test_a_reachable_hub_that_has_the_repo_lets_the_download_go_ahead(hub):
    answered = threading.Event()

    def found(handler: BaseHTTPRequestHandler) -> None:
        answered.set()
        body = b'{"id": "org/model", "sha": "0123abcd", "siblings": []}'
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    server = ScriptedServer({"/api/models/org/model": found})
    hub.use(server.base)
    try:
        check_hub_source("org/model", revision=None)
    finally:
        server.close()
    assert answered.is_set()
