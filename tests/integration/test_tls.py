"""TLS on the gRPC hop, with a CA and certificates the test makes (tests/support/certs.py).

Most cases run the real gateway (uvicorn, in this event loop) over the fake text engine bound through the
same code as the real engines (services/common/tls.py), and talk to it with the openai SDK: a chat over
TLS, a gateway that does not trust the engine's CA (503, 'TLS handshake failed' in /ready and in the log),
a certificate for another name (and `server_name` fixing it), mTLS refusing a gateway without a client
certificate or with one from another CA. Then the config errors, and one real text engine + gateway pair,
as processes, configured through --tls-* flags and PROXYVISION_TLS_* variables.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import openai
import pytest
import yaml
from grpc_health.v1 import health_pb2

from services.common.config import ConfigError, TlsSettings, load_models_config, parse_models_config
from services.common.tls import channel_credentials, resolve_tls, server_credentials
from services.launcher.plan import StackOptions, plan_stack, write_config
from tests.support.certs import TlsFiles, issue, make_ca, make_test_pki
from tests.support.fake_text_engine import STAND_IN, TEXT, start_fake_text_engine
from tests.support.models_yaml import TEXT_MODEL, ModelsYaml, tiny
from tests.support.processes import REPO_ROOT
from tests.support.stack import gateway_in_process, start_gateway, start_text_engine


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> TlsFiles:
    return make_test_pki(tmp_path_factory.mktemp("pki"))


def engine_tls(pki: TlsFiles, **extra) -> TlsSettings:
    return TlsSettings(server_cert=str(pki.server.cert), server_key=str(pki.server.key), **extra)


def gateway_tls(ca: Path, client=None, **extra) -> dict:
    """The models.yaml `tls:` section the gateway reads."""
    section = {"ca": str(ca), **extra}
    if client is not None:
        section.update(client_cert=str(client.cert), client_key=str(client.key))
    return section


@asynccontextmanager
async def fake_engine(tls: TlsSettings | None):
    server, servicer = await start_fake_text_engine(tls=tls)
    try:
        yield servicer
    finally:
        await server.stop(0)


@asynccontextmanager
async def gateway_to(address: str, tls: dict | None):
    config = ModelsYaml().model(TEXT, hf_id=STAND_IN, endpoint=address).gateway(request_timeout_secs=5)
    if tls is not None:
        config.set(tls=tls)
    async with gateway_in_process(config) as url:
        yield url


async def chat(url: str, text: str = "hello over tls") -> str:
    client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0, timeout=10)
    reply = await client.chat.completions.create(model=TEXT, messages=[{"role": "user", "content": text}])
    return reply.choices[0].message.content


async def refused(url: str) -> openai.APIStatusError:
    """The SDK's error for a chat the gateway cannot serve (it must be a 503)."""
    with pytest.raises(openai.APIStatusError) as caught:
        await chat(url)
    assert caught.value.status_code == 503, caught.value
    return caught.value


async def ready(url: str) -> httpx.Response:
    async with httpx.AsyncClient() as client:
        return await client.get(f"{url}/ready")


# --- through the real gateway ------------------------------------------------------------------------------
async def test_a_chat_completion_over_tls(pki):
    async with fake_engine(engine_tls(pki)) as engine, gateway_to(engine.address, gateway_tls(pki.ca)) as url:
        assert await chat(url, "the quick brown fox") == "the quick brown fox"
        assert (await ready(url)).json()["engines"][TEXT] == "SERVING"


async def test_a_tls_engine_refuses_a_plaintext_gateway(pki):
    async with fake_engine(engine_tls(pki)) as engine, gateway_to(engine.address, None) as url:
        await refused(url)
        assert (await ready(url)).json()["engines"][TEXT].startswith("UNREACHABLE")


async def test_a_gateway_that_does_not_trust_the_engines_ca_cannot_connect(pki, caplog):
    caplog.set_level(logging.WARNING)
    async with fake_engine(engine_tls(pki)) as engine, gateway_to(engine.address, gateway_tls(pki.other_ca)) as url:
        error = await refused(url)
        assert "handshake failed" in error.message.lower()
        answer = await ready(url)
        assert answer.status_code == 503
        assert answer.json()["engines"][TEXT] == (
            "UNREACHABLE: TLS handshake failed: CERTIFICATE_VERIFY_FAILED: unable to get local issuer certificate"
        )
    logged = [r.getMessage() for r in caplog.records if r.name.startswith("services.api_gateway")]
    assert any("-> 503" in line and "handshake failed" in line.lower() for line in logged), logged


async def test_the_certificate_must_name_the_dialled_host_unless_server_name_says_otherwise(pki, tmp_path):
    _, ca_cert, ca_key = make_ca(tmp_path, "svc-ca")
    named = issue(
        tmp_path,
        "text-engine",
        ca_cert,
        ca_key,
        server=True,
        dns_names=("text-engine.proxyvision.svc.cluster.local",),
        ip_addresses=(),
    )
    ca = tmp_path / "svc-ca.pem"
    tls = TlsSettings(server_cert=str(named.cert), server_key=str(named.key))
    async with fake_engine(tls) as engine:
        async with gateway_to(engine.address, gateway_tls(ca)) as url:
            await refused(url)  # it dials 127.0.0.1, which the certificate does not name
            assert (await ready(url)).json()["engines"][TEXT] == (
                "UNREACHABLE: TLS handshake failed: the engine's "
                "certificate does not name the host dialled (see tls.server_name)"
            )
        async with gateway_to(
            engine.address, gateway_tls(ca, server_name="text-engine.proxyvision.svc.cluster.local")
        ) as url:
            assert await chat(url) == "hello over tls"


async def test_mtls_refuses_a_gateway_without_a_client_certificate(pki):
    mtls = engine_tls(pki, ca=str(pki.ca), require_client_cert=True)
    async with fake_engine(mtls) as engine, gateway_to(engine.address, gateway_tls(pki.ca)) as url:
        await refused(url)
        assert (await ready(url)).json()["engines"][TEXT].startswith("UNREACHABLE")


async def test_mtls_refuses_a_client_certificate_from_another_ca(pki):
    mtls = engine_tls(pki, ca=str(pki.ca), require_client_cert=True)
    async with fake_engine(mtls) as engine, gateway_to(engine.address, gateway_tls(pki.ca, pki.other_client)) as url:
        await refused(url)


async def test_mtls_accepts_a_client_certificate_from_its_ca(pki):
    mtls = engine_tls(pki, ca=str(pki.ca), require_client_cert=True)
    async with fake_engine(mtls) as engine, gateway_to(engine.address, gateway_tls(pki.ca, pki.client)) as url:
        assert await chat(url) == "hello over tls"
        assert (await ready(url)).status_code == 200


async def test_the_kubernetes_probe_checks_an_mtls_engine_with_its_own_certificate(pki, tmp_path):
    """services.common.health_check: the engines' exec probe when TLS is on (the kubelet's gRPC probe is
    plaintext). It verifies the engine as --server-name and, under mTLS, presents the engine's certificate."""
    tls = engine_tls(pki, ca=str(pki.ca), require_client_cert=True)
    config = (
        ModelsYaml().model(TEXT, hf_id=STAND_IN).set(tls=tls.model_dump(exclude_none=True)).write(tmp_path / "m.yaml")
    )
    async with fake_engine(tls) as engine:
        port = engine.address.rsplit(":", 1)[1]
        probe = await asyncio.to_thread(
            run_cli, "services.common.health_check", "--models-config", str(config), "--port", port
        )
        assert probe.returncode == 0 and probe.stdout.strip() == "SERVING", probe.stderr
        wrong = await asyncio.to_thread(
            run_cli,
            "services.common.health_check",
            "--models-config",
            str(config),
            "--port",
            port,
            "--server-name",
            "someone-else.example",
        )
        assert wrong.returncode == 1 and "Hostname Verification Check failed" in wrong.stderr
        await engine.health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        loading = await asyncio.to_thread(
            run_cli, "services.common.health_check", "--models-config", str(config), "--port", port
        )
        assert loading.returncode == 1 and loading.stdout.strip() == "NOT_SERVING"


# --- configuration -----------------------------------------------------------------------------------------
BASE = {"models": [{"name": TEXT, "hf_id": STAND_IN}]}


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"server_cert": "engine.pem"}, "tls: server_key is required when server_cert is set"),
        ({"server_key": "engine-key.pem"}, "tls: server_cert is required when server_key is set"),
        ({"ca": "ca.pem", "client_cert": "gw.pem"}, "tls: client_key is required when client_cert is set"),
        ({"ca": "ca.pem", "client_key": "gw-key.pem"}, "tls: client_cert is required when client_key is set"),
        (
            {"server_cert": "e.pem", "server_key": "k.pem", "require_client_cert": True},
            "tls: require_client_cert needs ca",
        ),
        ({"ca": "ca.pem", "cert": "x.pem"}, "tls.cert: unknown key"),
    ],
)
def test_a_half_configured_tls_section_is_a_config_error_naming_the_key(section, message):
    with pytest.raises(ConfigError, match="^models.yaml: " + message.replace(".", r"\.")):
        parse_models_config({**BASE, "tls": section})


def test_without_a_tls_section_everything_stays_plaintext():
    assert parse_models_config(BASE).tls is None
    assert resolve_tls(None, environ={}) is None
    # "require_client_cert: false" on its own turns nothing on
    assert resolve_tls(None, environ={"PROXYVISION_TLS_REQUIRE_CLIENT_CERT": "false"}) is None


def test_paths_are_relative_to_the_models_yaml(tmp_path):
    (tmp_path / "conf").mkdir()
    path = tmp_path / "conf" / "models.yaml"
    path.write_text(
        yaml.safe_dump(
            {**BASE, "tls": {"ca": "certs/ca.pem", "server_cert": "/etc/engine.pem", "server_key": "../engine-key.pem"}}
        )
    )
    tls = load_models_config(path).tls
    assert (tls.ca, tls.server_cert, tls.server_key) == (
        str(tmp_path / "conf" / "certs" / "ca.pem"),
        "/etc/engine.pem",
        str(tmp_path / "engine-key.pem"),
    )


def test_flags_beat_variables_beat_the_file():
    class Args:
        tls_ca = "flag-ca.pem"

    file_value = TlsSettings(ca="file-ca.pem", client_cert="file-gw.pem", client_key="file-gw-key.pem")
    environ = {
        "PROXYVISION_TLS_CA": "env-ca.pem",
        "PROXYVISION_TLS_CLIENT_CERT": "env-gw.pem",
        "PROXYVISION_TLS_REQUIRE_CLIENT_CERT": "true",
    }
    tls = resolve_tls(file_value, Args(), environ)
    assert (tls.ca, tls.client_cert, tls.client_key, tls.require_client_cert) == (
        "flag-ca.pem",
        "env-gw.pem",
        "file-gw-key.pem",
        True,
    )
    # A variable alone turns TLS on, and is checked like the file.
    assert resolve_tls(None, environ={"PROXYVISION_TLS_CA": "ca.pem"}) == TlsSettings(ca="ca.pem")
    with pytest.raises(ConfigError, match="tls: server_key is required when server_cert is set"):
        resolve_tls(None, environ={"PROXYVISION_TLS_SERVER_CERT": "engine.pem"})
    with pytest.raises(ConfigError, match="PROXYVISION_TLS_REQUIRE_CLIENT_CERT: expected true or false"):
        resolve_tls(None, environ={"PROXYVISION_TLS_REQUIRE_CLIENT_CERT": "maybe"})


def test_an_engine_needs_its_certificate_and_every_file_must_be_readable(pki, tmp_path):
    with pytest.raises(ConfigError, match=r"^tls\.server_cert: an engine needs its certificate"):
        server_credentials(TlsSettings(ca=str(pki.ca)))
    with pytest.raises(ConfigError, match=r"^tls\.server_key: cannot read .*missing-key\.pem: No such file"):
        server_credentials(TlsSettings(server_cert=str(pki.server.cert), server_key=str(tmp_path / "missing-key.pem")))
    with pytest.raises(ConfigError, match=r"^tls\.ca: cannot read"):
        channel_credentials(TlsSettings(ca=str(tmp_path / "nope.pem")))


def run_cli(module: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", module, *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )


def test_the_services_refuse_to_start_with_a_tls_setup_they_cannot_use(pki, tmp_path):
    config = tmp_path / "models.yaml"
    config.write_text(
        yaml.safe_dump(
            {"models": [{"name": TEXT, "hf_id": STAND_IN, "endpoint": "127.0.0.1:1"}], "tls": {"ca": "no-such-ca.pem"}}
        )
    )
    gateway = run_cli("services.api_gateway", "--models-config", str(config), "--port", "0")
    assert gateway.returncode == 2 and "tls.ca: cannot read" in gateway.stderr and "no-such-ca.pem" in gateway.stderr
    # An engine reading the same section has no certificate to serve.
    engine = run_cli("services.text_engine", "--models-config", str(config), "--port", "0", "--device", "cpu")
    assert engine.returncode == 2 and "tls.server_cert: an engine needs its certificate" in engine.stderr
    # mTLS asked for on the command line, with no CA anywhere.
    plain = tmp_path / "plain.yaml"
    plain.write_text(yaml.safe_dump(BASE))
    engine = run_cli(
        "services.text_engine",
        "--models-config",
        str(plain),
        "--tls-server-cert",
        str(pki.server.cert),
        "--tls-server-key",
        str(pki.server.key),
        "--tls-require-client-cert",
    )
    assert engine.returncode == 2 and "require_client_cert needs ca" in engine.stderr, engine.stderr


def test_the_launcher_gives_its_engine_probes_the_tls_the_children_read(pki, tmp_path, monkeypatch):
    """`proxyvision serve`: every child reads the resolved config, the launcher's readiness probes dial the
    engines with the same settings (services/launcher/probes.py uses ProcessSpec.tls)."""
    monkeypatch.setenv("PROXYVISION_TLS_SERVER_NAME", "localhost")  # an override reaches the children's file too
    path = tmp_path / "models.yaml"
    path.write_text(
        yaml.safe_dump(
            {**BASE, "tls": {"ca": str(pki.ca), "server_cert": str(pki.server.cert), "server_key": str(pki.server.key)}}
        )
    )
    resolved = tmp_path / "resolved.yaml"
    plan = plan_stack(load_models_config(path), StackOptions(), resolved)
    write_config(plan.config, resolved)
    expected = TlsSettings(
        ca=str(pki.ca), server_cert=str(pki.server.cert), server_key=str(pki.server.key), server_name="localhost"
    )
    assert load_models_config(resolved).tls == expected
    assert [(p.kind, p.tls) for p in plan.processes] == [("text_engine", expected), ("api_gateway", None)]
    monkeypatch.delenv("PROXYVISION_TLS_SERVER_NAME")
    plain = tmp_path / "plain.yaml"
    plain.write_text(yaml.safe_dump(BASE))
    assert all(p.tls is None for p in plan_stack(load_models_config(plain), StackOptions(), resolved).processes)


# --- a real engine and gateway, as processes -----------------------------------------------------------------
def test_a_real_engine_and_gateway_over_mtls(pki, tiny_models, tmp_path):
    """The engine gets its part through --tls-* flags, the gateway through PROXYVISION_TLS_* variables; the
    shared models.yaml has no tls section."""
    engine_config = tiny(tiny_models).write(tmp_path / "engine.yaml")
    engine = start_text_engine(
        engine_config,
        tmp_path,
        wait=False,
        args=[
            "--tls-server-cert",
            str(pki.server.cert),
            "--tls-server-key",
            str(pki.server.key),
            "--tls-ca",
            str(pki.ca),
            "--tls-require-client-cert",
        ],
    )
    try:
        gateway_config = tiny(tiny_models, endpoints={TEXT_MODEL: engine.address}).write(tmp_path / "gateway.yaml")
        env = {
            "PROXYVISION_TLS_CA": str(pki.ca),
            "PROXYVISION_TLS_CLIENT_CERT": str(pki.client.cert),
            "PROXYVISION_TLS_CLIENT_KEY": str(pki.client.key),
        }
        gateway = start_gateway(
            gateway_config, tmp_path, env=env, ready="/ready"
        )  # /ready: the engine SERVING over mTLS
        try:
            client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="x", max_retries=0, timeout=60)
            reply = client.chat.completions.create(
                model=TEXT_MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=4
            )
            assert reply.choices[0].finish_reason in ("stop", "length") and reply.usage.completion_tokens > 0
            assert "Engine channels: mTLS (presenting a client certificate)" in gateway.log_text()
        finally:
            gateway.stop()
        assert f"listening on {engine.address} (mTLS (client certificates required))" in engine.log_text()
        # The grpcurl lines of docs/operations.md (talking to an engine directly): the CA and a client certificate;
        # without the certificate, refused.
        grpcurl = [str(Path(sys.executable).parent / "grpcurl"), "-cacert", str(pki.ca)]
        health = ["-d", '{"service": ""}', engine.address, "grpc.health.v1.Health/Check"]
        answer = subprocess.run(
            [*grpcurl, "-cert", str(pki.client.cert), "-key", str(pki.client.key), *health],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert answer.returncode == 0 and '"status": "SERVING"' in answer.stdout, answer.stderr
        assert subprocess.run([*grpcurl, *health], capture_output=True, text=True, timeout=30).returncode != 0
    finally:
        engine.stop()
