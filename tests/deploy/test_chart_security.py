"""API keys from a Secret and the engines' NetworkPolicy, rendered offline and validated strictly:
the Secret is mounted as a directory (so the kubelet's updates reach the gateway, which re-reads the file)
and models.yaml points at it; keys never land in the ConfigMap; the engines' gRPC ports admit only the
gateway pods, their metrics ports only Prometheus when the chart's ServiceMonitors are on."""

from __future__ import annotations

import kubernetes_validate
import pytest
import yaml

from services.common.config import parse_models_config

from .chart import RELEASE, main_container, render
from .test_chart_values import render_failure

KUBE_VERSION = "1.33.0"
KEY_FILE = "/etc/proxyvision-api-keys/api-keys"


def validate_all(rendered) -> None:
    for doc in rendered.docs:
        if doc["kind"] != "ServiceMonitor":  # a custom resource kubernetes-validate has no schema for
            kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)


def gateway_pod(rendered) -> dict:
    return rendered.get("Deployment", f"{RELEASE}-gateway")["spec"]["template"]["spec"]


def test_no_api_keys_by_default():
    rendered = render()
    assert rendered.of_kind("Secret") == []
    assert "api_keys_file" not in (yaml.safe_load(rendered.models_yaml()).get("gateway") or {})
    assert "api-keys" not in {v["name"] for v in gateway_pod(rendered)["volumes"]}


@pytest.mark.parametrize(
    "api_keys, secret_name, key",
    [
        ({"create": True, "keys": ["sk-dev-1", "sk-dev-2"]}, f"{RELEASE}-api-keys", "api-keys"),
        ({"existingSecret": "team-keys", "key": "keys.txt"}, "team-keys", "keys.txt"),
    ],
    ids=["created", "existing"],
)
def test_keys_come_from_a_secret_mounted_as_a_file_that_models_yaml_names(api_keys, secret_name, key):
    rendered = render({"gateway": {"apiKeys": api_keys}})
    validate_all(rendered)
    config = parse_models_config(yaml.safe_load(rendered.models_yaml()), "rendered models.yaml")
    assert config.gateway.api_keys_file == KEY_FILE and config.gateway.api_keys == []
    pod = gateway_pod(rendered)
    (volume,) = [v for v in pod["volumes"] if v["name"] == "api-keys"]
    assert volume["secret"]["secretName"] == secret_name
    assert volume["secret"]["items"] == [{"key": key, "path": "api-keys"}]
    (mount,) = [
        m
        for m in main_container(rendered.get("Deployment", f"{RELEASE}-gateway"))["volumeMounts"]
        if m["name"] == "api-keys"
    ]
    # A directory mount: with subPath the kubelet would never update the file (no rotation).
    assert mount == {"name": "api-keys", "mountPath": "/etc/proxyvision-api-keys", "readOnly": True}
    # The keys are not in the ConfigMap, nor in the pod's environment or arguments.
    container = main_container(rendered.get("Deployment", f"{RELEASE}-gateway"))
    assert "sk-dev" not in rendered.models_yaml() + yaml.safe_dump(container)
    secrets = rendered.of_kind("Secret")
    if api_keys.get("create"):
        (secret,) = secrets
        assert secret["metadata"]["name"] == secret_name and secret["type"] == "Opaque"
        assert secret["stringData"][key].splitlines() == ["sk-dev-1", "sk-dev-2"]
    else:
        assert secrets == []  # the operator's own Secret
    assert "Authorization: Bearer" in rendered.notes


def test_api_key_mistakes_are_refused():
    assert "not both" in render_failure(
        {"gateway": {"apiKeys": {"create": True, "keys": ["k"], "existingSecret": "s"}}}
    )
    assert "at least one key" in render_failure({"gateway": {"apiKeys": {"create": True}}})
    assert "put them in a Secret" in render_failure({"modelsConfig": {**_brief(), "gateway": {"api_keys": ["k"]}}})
    assert "probes" in render_failure({"modelsConfig": {**_brief(), "gateway": {"api_keys_protect_health": True}}})
    assert "the chart sets it" in render_failure(
        {
            "gateway": {"apiKeys": {"existingSecret": "s"}},
            "modelsConfig": {**_brief(), "gateway": {"api_keys_file": "/x"}},
        }
    )


def _brief() -> dict:
    return {"models": [{"name": "m", "hf_id": "a/b"}]}


def _engine_policy(rendered) -> dict:
    (policy,) = rendered.of_kind("NetworkPolicy")
    return policy


def _selects(selector: dict, labels: dict) -> bool:
    if not selector.get("matchLabels", {}).items() <= labels.items():
        return False
    for expression in selector.get("matchExpressions", []):
        assert expression["operator"] == "In"
        if labels.get(expression["key"]) not in expression["values"]:
            return False
    return True


def test_the_network_policy_admits_only_the_gateway_to_the_engines_grpc_ports():
    rendered = render()
    validate_all(rendered)
    policy = _engine_policy(rendered)["spec"]
    assert policy["policyTypes"] == ["Ingress"]
    pods = {d["metadata"]["name"]: d["spec"]["template"]["metadata"]["labels"] for d in rendered.of_kind("Deployment")}
    gateway = pods.pop(f"{RELEASE}-gateway")
    assert len(pods) == 2 and all(_selects(policy["podSelector"], labels) for labels in pods.values())
    assert not _selects(policy["podSelector"], gateway)  # the gateway itself stays reachable by clients
    (rule,) = policy["ingress"]  # no ServiceMonitor: nobody may reach the metrics ports
    assert rule["ports"] == [{"port": "grpc", "protocol": "TCP"}]
    (peer,) = rule["from"]
    assert set(peer) == {"podSelector"}  # this namespace only
    assert _selects(peer["podSelector"], gateway)
    assert not any(_selects(peer["podSelector"], labels) for labels in pods.values())
    # The named port is what each engine container calls its gRPC port (50051 text, 50052 vision).
    for deployment in rendered.engine_deployments():
        assert "grpc" in {p["name"] for p in main_container(deployment)["ports"]}


def test_prometheus_may_scrape_the_engines_when_the_service_monitors_are_on():
    rendered = render({"metrics": {"serviceMonitor": {"enabled": True}}})
    grpc_rule, metrics_rule = _engine_policy(rendered)["spec"]["ingress"]
    assert grpc_rule["ports"] == [{"port": "grpc", "protocol": "TCP"}]
    assert metrics_rule["ports"] == [{"port": "metrics", "protocol": "TCP"}]
    assert metrics_rule["from"] == [
        {"namespaceSelector": {}, "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}}
    ]
    own = [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]
    custom = render({"metrics": {"serviceMonitor": {"enabled": True}}, "networkPolicy": {"metricsFrom": own}})
    validate_all(custom)
    assert _engine_policy(custom)["spec"]["ingress"][1]["from"] == own


def test_the_network_policy_can_be_turned_off():
    assert render({"networkPolicy": {"enabled": False}}).of_kind("NetworkPolicy") == []
