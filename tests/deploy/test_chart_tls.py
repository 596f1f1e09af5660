"""The chart's TLS between gateway and engines: off by default; on, each pod mounts its side's Secrets where
the rendered models.yaml's tls: section points, engines are probed by an exec that speaks TLS (the
kubelet's gRPC probe cannot), and half-configured values fail the render with the key to fix."""

from __future__ import annotations

import helm_python
import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import latest_version

from services.common.config import parse_models_config

from .chart import CHART_DIR, NAMESPACE, RELEASE, chart, main_container, render

TLS = {"enabled": True, "serverSecret": "engine-tls"}
MTLS = {**TLS, "requireClientCert": True, "clientSecret": "gateway-tls", "caSecret": "our-ca", "caKey": "bundle.pem"}


def mounted_files(deployment: dict) -> dict[str, tuple[str, str]]:
    """Every file a pod gets from a Secret: its path in the container -> (secret name, key)."""
    spec = deployment["spec"]["template"]["spec"]
    secrets = {v["name"]: v["secret"] for v in spec.get("volumes", []) if "secret" in v}
    files = {}
    for mount in main_container(deployment)["volumeMounts"]:
        secret = secrets.get(mount["name"])
        for item in (secret or {}).get("items", []):
            files[f"{mount['mountPath']}/{item['path']}"] = (secret["secretName"], item["key"])
    return files


def tls_section(rendered) -> dict:
    """The tls: section as the services load it (the product's own parser)."""
    return parse_models_config(yaml.safe_load(rendered.models_yaml())).tls.model_dump(exclude_none=True)


def gateway(rendered) -> dict:
    return rendered.get("Deployment", f"{RELEASE}-gateway")


def test_tls_is_off_by_default():
    rendered = render()
    assert "tls" not in yaml.safe_load(rendered.models_yaml())
    for deployment in rendered.engine_deployments():
        container = main_container(deployment)
        assert all("grpc" in container[p] for p in ("startupProbe", "livenessProbe", "readinessProbe"))
        assert not any(path.startswith("/etc/proxyvision-tls") for path in mounted_files(deployment))
    assert not any(path.startswith("/etc/proxyvision-tls") for path in mounted_files(gateway(render())))


def test_tls_mounts_each_sides_files_where_models_yaml_points():
    rendered = render({"tls": TLS})
    section = tls_section(rendered)
    assert section == {
        "ca": "/etc/proxyvision-tls/ca/ca.crt",
        "server_cert": "/etc/proxyvision-tls/server/tls.crt",
        "server_key": "/etc/proxyvision-tls/server/tls.key",
        "require_client_cert": False,
    }
    for deployment in rendered.engine_deployments():
        # The engine reads its certificate and key; without mTLS it needs no CA, and never the gateway's files.
        assert mounted_files(deployment) == {
            section["server_cert"]: ("engine-tls", "tls.crt"),
            section["server_key"]: ("engine-tls", "tls.key"),
        }
    # The gateway gets only the CA (cert-manager's ca.crt of the engines' Secret), never the engines' key.
    assert mounted_files(gateway(rendered)) == {section["ca"]: ("engine-tls", "ca.crt")}


def test_engines_are_probed_over_tls_as_their_service_name():
    rendered = render({"tls": TLS})
    for deployment in rendered.engine_deployments():
        container = main_container(deployment)
        port = str(container["ports"][0]["containerPort"])
        service = rendered.get("Service", deployment["metadata"]["name"])
        host = f"{service['metadata']['name']}.{NAMESPACE}.svc.cluster.local"
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            assert container[probe]["exec"]["command"] == [
                "python",
                "-m",
                "services.common.health_check",
                "--models-config",
                "/etc/proxyvision/models.yaml",
                "--port",
                port,
                "--server-name",
                host,
            ]
        # ... and that is the name the gateway dials, so one certificate check fits both.
        endpoint = next(
            m["endpoint"]
            for m in yaml.safe_load(rendered.models_yaml())["models"]
            if m["name"] == deployment["metadata"]["annotations"]["proxyvision.io/model"]
        )
        assert endpoint == f"dns:///{host}:{port}"
        assert "checksum/tls" in deployment["spec"]["template"]["metadata"]["annotations"]


def test_mtls_gives_engines_the_ca_and_the_gateway_its_client_certificate():
    rendered = render({"tls": {**MTLS, "serverName": "engines.proxyvision.internal"}})
    section = tls_section(rendered)
    assert section["require_client_cert"] is True and section["server_name"] == "engines.proxyvision.internal"
    for deployment in rendered.engine_deployments():
        assert mounted_files(deployment) == {
            section["ca"]: ("our-ca", "bundle.pem"),
            section["server_cert"]: ("engine-tls", "tls.crt"),
            section["server_key"]: ("engine-tls", "tls.key"),
        }
        assert main_container(deployment)["readinessProbe"]["exec"]["command"][-1] == "engines.proxyvision.internal"
    assert mounted_files(gateway(rendered)) == {
        section["ca"]: ("our-ca", "bundle.pem"),
        section["client_cert"]: ("gateway-tls", "tls.crt"),
        section["client_key"]: ("gateway-tls", "tls.key"),
    }


def failure(values: dict) -> str:
    with pytest.raises((helm_python.HelmRenderError, helm_python.HelmValuesError)) as caught:
        chart().render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    return str(caught.value)


def test_half_configured_tls_values_fail_naming_the_key():
    assert "/tls/serverSecret" in failure({"tls": {"enabled": True}})
    assert "tls.clientSecret: with tls.requireClientCert" in failure({"tls": {**TLS, "requireClientCert": True}})
    assert "'cert' not allowed" in failure({"tls": {**TLS, "cert": "x"}})
    models = {"models": [{"name": "m", "hf_id": "a/b"}], "tls": {"ca": "/x.pem"}}
    assert "modelsConfig.tls: the chart writes it from tls" in failure({"modelsConfig": models})


@pytest.mark.parametrize("values", [{"tls": TLS}, {"tls": MTLS}], ids=["tls", "mtls"])
def test_tls_manifests_lint_and_validate_strictly(values):
    report = helm_python.lint(CHART_DIR, values, strict=True)
    assert report["errors"] == [] and [m for m in report["messages"] if m["severity"] >= 2] == [], report
    for doc in render(values).docs:
        if doc["kind"] != "ServiceMonitor":
            kubernetes_validate.validate(doc, latest_version(), strict=True)
