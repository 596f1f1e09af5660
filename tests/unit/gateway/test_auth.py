"""API keys (auth.py) on the app in-process: open without keys, 401 in OpenAI's shape without an accepted
key, every configured key works, health/ready/metrics open unless configured otherwise, key files (several
keys, comments, re-read on change), constant-time comparison over all keys, keys never logged; and where
the keys come from (--api-key > PROXYVISION_API_KEY > models.yaml)."""

from __future__ import annotations

import hmac
import logging
from pathlib import Path

import httpx
import pytest

from services.api_gateway import auth
from services.api_gateway.__main__ import with_api_keys
from services.api_gateway.app import build_app
from services.api_gateway.auth import ApiKeys, KeyPolicy, bearer_token, key_matches, parse_key_file
from services.api_gateway.dependencies import get_state
from services.common.config import ConfigError, load_models_config, parse_models_config
from services.common.env import ENVIRONMENT, parse_api_keys

from .fakes import TEXT, FakeTextEngine, hello_script, make_state

HI = {"model": TEXT, "messages": [{"role": "user", "content": "Hi"}]}
KEYS = ["sk-first-0123456789", "sk-second-abcdef", "third"]


def config_with(**gateway):
    models = [{"name": TEXT, "hf_id": "mistralai/Ministral-3-3B-Reasoning-2512", "endpoint": "127.0.0.1:1"}]
    return parse_models_config({"models": models, "gateway": gateway})


def client_for(config) -> httpx.AsyncClient:
    app = build_app(config)
    state = make_state({TEXT: FakeTextEngine(TEXT, hello_script())}, config)
    app.dependency_overrides[get_state] = lambda: state
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw")


def bearer(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


def assert_refused(response: httpx.Response, code: str | None) -> str:
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert "x-request-id" in response.headers  # the request-id middleware wraps this one
    body = response.json()
    assert set(body) == {"error"} and body["error"]["type"] == "invalid_request_error"
    assert body["error"]["param"] is None and body["error"]["code"] == code
    return body["error"]["message"]


async def test_without_keys_the_api_is_open_as_before():
    async with client_for(config_with()) as client:
        assert (await client.get("/v1/models")).status_code == 200
        assert (await client.post("/v1/chat/completions", json=HI)).status_code == 200
        assert (await client.post("/v1/chat/completions", json=HI, headers=bearer("anything"))).status_code == 200
        assert "securitySchemes" not in (await client.get("/openapi.json")).json()["components"]


async def test_with_keys_v1_needs_one_of_them():
    async with client_for(config_with(api_keys=KEYS)) as client:
        message = assert_refused(await client.post("/v1/chat/completions", json=HI), code=None)
        assert "didn't provide an API key" in message and "Bearer" in message
        message = assert_refused(
            await client.post("/v1/chat/completions", json=HI, headers=bearer("sk-wrong")), "invalid_api_key"
        )
        assert message.startswith("Incorrect API key provided") and "sk-wrong" not in message
        assert_refused(
            await client.get("/v1/models", headers={"Authorization": "Basic dXNlcjpwYXNz"}), "invalid_api_key"
        )
        assert_refused(await client.get("/v1/models", headers={"Authorization": "Bearer "}), "invalid_api_key")
        assert_refused(await client.get("/v1/models", headers=bearer(KEYS[0] + "x")), "invalid_api_key")
        assert_refused(await client.get("/v1/models", headers=bearer(KEYS[0][:-1])), "invalid_api_key")
        # Every route under /v1, known or not, and every method.
        assert_refused(await client.get(f"/v1/models/{TEXT}"), None)
        assert_refused(await client.get("/v1/no-such-route"), None)
        assert_refused(await client.delete("/v1/models"), None)
        for key in KEYS:
            assert (await client.get("/v1/models", headers=bearer(key))).status_code == 200
            response = await client.post("/v1/chat/completions", json=HI, headers=bearer(key))
            assert response.status_code == 200 and response.json()["choices"][0]["message"]["content"]
        # The scheme's name is case-insensitive, as HTTP says.
        assert (await client.get("/v1/models", headers={"Authorization": f"bearer {KEYS[1]}"})).status_code == 200


async def test_a_streamed_request_without_a_key_gets_a_plain_401_and_no_stream():
    async with client_for(config_with(api_keys=KEYS)) as client:
        response = await client.post("/v1/chat/completions", json={**HI, "stream": True})
        assert_refused(response, None)
        assert response.headers["content-type"] == "application/json"
        async with client.stream(
            "POST", "/v1/chat/completions", json={**HI, "stream": True}, headers=bearer(KEYS[2])
        ) as ok:
            assert ok.status_code == 200 and ok.headers["content-type"].startswith("text/event-stream")
            assert "data: [DONE]" in (await ok.aread()).decode()


async def test_health_ready_and_metrics_stay_open_and_the_page_loads():
    async with client_for(config_with(api_keys=KEYS)) as client:
        assert (await client.get("/health")).status_code == 200
        assert (await client.get("/ready")).status_code in (200, 503)  # fakes answer health; never 401
        assert (await client.get("/metrics")).status_code == 200
        assert (await client.get("/")).status_code == 200  # the API pointer (the UI test covers the page)
        assert (await client.get("/openapi.json")).status_code == 200


async def test_health_ready_and_metrics_need_a_key_when_configured():
    async with client_for(config_with(api_keys=KEYS, api_keys_protect_health=True)) as client:
        for path in ("/health", "/ready", "/metrics"):
            assert_refused(await client.get(path), None)
        assert (await client.get("/health", headers=bearer(KEYS[0]))).status_code == 200
        assert (await client.get("/metrics", headers=bearer(KEYS[0]))).status_code == 200
        doc = (await client.get("/openapi.json")).json()
        assert doc["paths"]["/health"]["get"]["security"] == [{"ApiKey": []}]


async def test_the_openapi_document_declares_the_bearer_scheme_and_the_401():
    async with client_for(config_with(api_keys=KEYS)) as client:
        doc = (await client.get("/openapi.json")).json()
    assert doc["components"]["securitySchemes"]["ApiKey"] == {
        "type": "http",
        "scheme": "bearer",
        "description": doc["components"]["securitySchemes"]["ApiKey"]["description"],
    }
    v1 = [(path, op) for path, ops in doc["paths"].items() if path.startswith("/v1") for op in ops.values()]
    assert {path for path, _ in v1} >= {"/v1/chat/completions", "/v1/models", "/v1/models/{model_id}"}
    for path, operation in v1:
        assert operation["security"] == [{"ApiKey": []}], path
        shape = "AnthropicErrorResponse" if path.startswith("/v1/messages") else "ErrorResponse"  # Anthropic's clients
        assert operation["responses"]["401"]["content"]["application/json"]["schema"] == {
            "$ref": f"#/components/schemas/{shape}"
        }
    assert "security" not in doc["paths"]["/health"]["get"] and "401" not in doc["paths"]["/health"]["get"]["responses"]


def test_the_comparison_is_constant_time_over_every_key(monkeypatch):
    compared: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def recording(a, b):
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", recording)
    digests = [auth.digest(k) for k in KEYS]
    assert key_matches(KEYS[0], digests)  # the first key matches: the others are compared all the same
    assert len(compared) == len(KEYS)
    assert not key_matches("nope", digests) and len(compared) == 2 * len(KEYS)
    # Always two SHA-256 digests: equal lengths, whatever the key's length.
    assert {(len(a), len(b)) for a, b in compared} == {(32, 32)}
    assert [b for _, b in compared[: len(KEYS)]] == digests
    compared.clear()
    keys = ApiKeys(KEYS)
    assert keys.matches(KEYS[2]) and len(compared) == len(KEYS)


def test_bearer_header_parsing():
    assert bearer_token([(b"authorization", b"Bearer abc")]) == "abc"
    assert bearer_token([(b"Authorization", b"  BEARER   abc  ")]) == "abc"
    assert bearer_token([(b"authorization", b"Token abc")]) == ""
    assert bearer_token([(b"authorization", b"Bearer")]) == ""
    assert bearer_token([(b"x-api-key", b"abc")]) is None
    assert KeyPolicy().guards("/v1") and KeyPolicy().guards("/v1/models/x") and not KeyPolicy().guards("/v10")
    assert not KeyPolicy().guards("/health") and KeyPolicy(protect_operations=True).guards("/metrics")
    assert not KeyPolicy(protect_operations=True).guards("/ui/js/main.js")


KEY_FILE = """# keys for the team (one per line)
sk-file-one

   sk-file-two
# retired: sk-old
sk-file-three
"""


async def test_a_key_file_with_several_keys_blank_lines_and_comments(tmp_path):
    (tmp_path / "keys").write_text(KEY_FILE)
    assert parse_key_file(KEY_FILE, "keys") == ["sk-file-one", "sk-file-two", "sk-file-three"]
    (tmp_path / "models.yaml").write_text(
        f"models:\n  - name: {TEXT}\n    hf_id: a/b\n    endpoint: 127.0.0.1:1\n"
        "gateway:\n  api_keys: [sk-inline]\n  api_keys_file: keys\n"
    )
    config = load_models_config(tmp_path / "models.yaml")
    assert config.gateway.api_keys_file == str(tmp_path / "keys")  # relative to models.yaml
    async with client_for(config) as client:
        for key in ("sk-file-one", "sk-file-two", "sk-file-three", "sk-inline"):
            assert (await client.get("/v1/models", headers=bearer(key))).status_code == 200, key
        for key in ("sk-old", "# retired: sk-old", "keys"):
            assert (await client.get("/v1/models", headers=bearer(key))).status_code == 401, key


def test_the_key_file_is_re_read_when_it_changes_and_a_bad_re_read_keeps_the_keys(tmp_path, caplog):
    path = tmp_path / "keys"
    path.write_text("sk-before\n")
    now = [0.0]
    keys = ApiKeys([], path, recheck_secs=1.0, clock=lambda: now[0])
    assert keys.matches("sk-before")
    # A rotated Secret: a new file swapped in (a new inode), as the kubelet does.
    staged = tmp_path / "keys.new"
    staged.write_text("sk-after-1\nsk-after-2\n")
    staged.replace(path)
    assert keys.matches("sk-before")  # not re-checked within a second
    now[0] = 1.5
    assert keys.matches("sk-after-2") and not keys.matches("sk-before") and keys.count == 2
    # A file that cannot be read, or has a bad line: the keys in force stay.
    path.unlink()
    now[0] = 3.0
    with caplog.at_level(logging.WARNING, logger="services.api_gateway.auth"):
        assert keys.matches("sk-after-1")
    assert "could not be re-read" in caplog.text
    path.write_text("sk-x\nnot a key\n")
    now[0] = 4.5
    assert keys.matches("sk-after-1") and not keys.matches("sk-x")
    # An emptied file locks the API: authentication never switches itself off.
    path.write_text("# nobody\n")
    now[0] = 6.0
    assert not keys.matches("sk-after-1") and keys.count == 0
    assert "sk-after" not in caplog.text and "sk-x" not in caplog.text


def test_bad_key_files_and_keys_fail_at_start_up_without_showing_the_key(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        build_app(config_with(api_keys_file=str(tmp_path / "missing")))
    (tmp_path / "empty").write_text("# none yet\n\n")
    with pytest.raises(ConfigError, match="has no keys"):
        build_app(config_with(api_keys_file=str(tmp_path / "empty")))
    (tmp_path / "bad").write_text("sk-good\nsk bad key\n")
    with pytest.raises(ConfigError, match="line 2: an API key must be printable ASCII without spaces") as caught:
        build_app(config_with(api_keys_file=str(tmp_path / "bad")))
    assert "sk bad" not in str(caught.value)
    with pytest.raises(ConfigError, match=r"gateway\.api_keys\[1\]: an API key must be printable") as caught:
        config_with(api_keys=["sk-ok", "sk-ünicode"])
    assert "ünicode" not in str(caught.value)
    with pytest.raises(ValueError, match="names no key"):
        parse_api_keys(" , ")


async def test_keys_are_never_logged(caplog):
    secret = "sk-do-not-log-me-42"
    with caplog.at_level(logging.DEBUG):
        async with client_for(config_with(api_keys=[secret])) as client:
            await client.get("/v1/models", headers=bearer(secret))
            await client.get("/v1/models", headers=bearer(secret + "-wrong"))
    assert "API keys required on /v1: 1 key(s)" in caplog.text
    assert secret not in caplog.text
    assert secret not in repr(config_with(api_keys=[secret]))


def test_cli_beats_env_beats_models_yaml():
    config = config_with(api_keys=["from-file"], api_keys_file="/run/keys")
    assert with_api_keys(config, [], environ={}).gateway.api_keys == ["from-file"]
    from_env = with_api_keys(config, [], environ={"PROXYVISION_API_KEY": "env-1, env-2"})
    assert from_env.gateway.api_keys == ["env-1", "env-2"] and from_env.gateway.api_keys_file == "/run/keys"
    from_cli = with_api_keys(config, ["cli-1,cli-2", "cli-3"], environ={"PROXYVISION_API_KEY": "env-1"})
    assert from_cli.gateway.api_keys == ["cli-1", "cli-2", "cli-3"]
    assert "PROXYVISION_API_KEY" in ENVIRONMENT


def test_the_launcher_passes_keys_to_the_gateway_in_its_environment(monkeypatch):
    from services.launcher.cli import api_key_env, parse_args

    args = parse_args(["--models-config", "m.yaml", "--api-key", "a,b", "--api-key", "c"])
    monkeypatch.delenv("PROXYVISION_API_KEY", raising=False)
    assert api_key_env(args.api_key) == {"PROXYVISION_API_KEY": "a,b,c"}
    monkeypatch.setenv("PROXYVISION_API_KEY", "from-env")
    assert api_key_env([]) == {"PROXYVISION_API_KEY": "from-env"}
    monkeypatch.delenv("PROXYVISION_API_KEY")
    assert api_key_env([]) == {}
    with pytest.raises(ValueError, match="API key 1"):
        api_key_env(["bad key"])


def test_every_file_key_is_path_relative_only_when_relative(tmp_path):
    (tmp_path / "models.yaml").write_text(
        f"models:\n  - name: {TEXT}\n    hf_id: a/b\ngateway:\n  api_keys_file: /abs/keys\n"
    )
    assert load_models_config(tmp_path / "models.yaml").gateway.api_keys_file == str(Path("/abs/keys"))
