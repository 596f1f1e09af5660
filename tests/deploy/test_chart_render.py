"""The Helm chart renders, lints (strict) and validates (kubernetes-validate, strict) for the default
values and every example values file, against Kubernetes 1.33 and the newest version bundled; and what
it renders is what the operators need: one engine Deployment per model behind a headless Service the
gateway balances over, GPU scheduling, probes, drain, disruption budgets, autoscaling, secrets."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import helm_python
import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import SchemaNotFoundError, all_versions, latest_version

from services.common.config import parse_models_config

from .chart import (
    CHART_DIR,
    NAMESPACE,
    RELEASE,
    arg_after,
    container_port,
    env_of,
    example_values,
    main_container,
    render,
    value_sets,
)

VALUE_SETS = value_sets()
KUBE_VERSIONS = ["1.33.0", latest_version()]
# Custom resources kubernetes-validate has no schema for (checked by hand below).
CUSTOM_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor")}


def test_the_examples_cover_the_issue_s_scenarios_and_both_kubernetes_versions_are_bundled():
    assert {"default", "cpu-demo", "gpu", "two-text-models-hpa"} <= set(VALUE_SETS)
    assert "1.33.0" in all_versions() and latest_version() != "1.33.0"


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
@pytest.mark.parametrize("values_name", sorted(VALUE_SETS))
def test_lint_strict_passes(values_name, kube_version):
    report = helm_python.lint(CHART_DIR, VALUE_SETS[values_name], strict=True, kube_version=f"v{kube_version}")
    assert report["errors"] == [], report
    # Severity 2 = warning, 3 = error; strict makes warnings fail too. Info ("icon is recommended") is fine.
    assert [m for m in report["messages"] if m["severity"] >= 2] == [], report


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
@pytest.mark.parametrize("values_name", sorted(VALUE_SETS))
def test_every_manifest_validates_strictly(values_name, kube_version):
    rendered = render(VALUE_SETS[values_name])
    assert rendered.docs
    for doc in rendered.docs:
        if (doc["apiVersion"], doc["kind"]) in CUSTOM_KINDS:
            with pytest.raises(SchemaNotFoundError):
                kubernetes_validate.validate(doc, kube_version, strict=True)
            continue
        # Raises ValidationError (with the path) on a wrong or unknown field.
        kubernetes_validate.validate(doc, kube_version, strict=True)


def test_the_kubernetes_validate_command_line_accepts_the_rendered_files(tmp_path):
    files = []
    for name, values in VALUE_SETS.items():
        docs = [d for d in render(values).docs if (d["apiVersion"], d["kind"]) not in CUSTOM_KINDS]
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump_all(docs))
        files.append(str(path))
    cli = Path(sys.executable).with_name("kubernetes-validate")
    for version in KUBE_VERSIONS:
        result = subprocess.run(
            [str(cli), "--strict", "-k", version, *files], capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert "passed" in result.stdout and "ERROR" not in result.stdout and "WARN" not in result.stdout


@pytest.mark.parametrize("values_name", sorted(VALUE_SETS))
def test_the_configmap_is_a_valid_models_yaml_whose_endpoints_reach_each_model_s_engine(values_name):
    rendered = render(VALUE_SETS[values_name])
    config = parse_models_config(yaml.safe_load(rendered.models_yaml()), "rendered models.yaml")
    assert [m.name for m in config.models] == [
        m["name"] for m in (VALUE_SETS[values_name].get("modelsConfig") or render_defaults()["modelsConfig"])["models"]
    ]
    for model in config.models:
        match = re.fullmatch(rf"dns:///([a-z0-9-]+)\.{NAMESPACE}\.svc\.cluster\.local:(\d+)", model.endpoint or "")
        assert match, model.endpoint
        service = rendered.get("Service", match[1])
        assert service["spec"]["clusterIP"] == "None", "engines need a headless Service for client-side balancing"
        (deployment,) = rendered.deployments_selected_by(service)
        container = main_container(deployment)
        expected = "vision-engine" if model.is_vision_proxy else "text-engine"
        assert container["name"] == expected
        assert container["command"] == ["python", "-m", f"services.{expected.replace('-', '_')}"]
        assert arg_after(container, "--model") == model.name
        grpc_port = next(p for p in service["spec"]["ports"] if p["name"] == "grpc")
        assert grpc_port["port"] == int(match[2]) == container_port(container, grpc_port["targetPort"])


def render_defaults() -> dict:
    return yaml.safe_load((CHART_DIR / "values.yaml").read_text())


def test_default_values_carry_the_brief_s_models_yaml_verbatim():
    brief = yaml.safe_load((CHART_DIR.parents[1] / "configs" / "brief.models.yaml").read_text())
    assert render_defaults()["modelsConfig"] == brief
    rendered = yaml.safe_load(render().models_yaml())
    assert [{k: v for k, v in m.items() if k != "endpoint"} for m in rendered["models"]] == brief["models"]


def test_gpu_engines_get_their_gpu_node_selector_tolerations_and_runtime_class():
    rendered = render(example_values("gpu"))
    engines = rendered.engine_deployments()
    assert len(engines) == 2
    for deployment in engines:
        pod = deployment["spec"]["template"]["spec"]
        container = main_container(deployment)
        assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
        assert arg_after(container, "--device") == "cuda"
        assert pod["runtimeClassName"] == "nvidia"
        assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    # engines.<model> overrides one engine only, and keeps the default GPU limit it did not mention.
    vision = rendered.get("Deployment", f"{RELEASE}-vision-qwen2-vl-7b")
    assert main_container(vision)["resources"]["limits"] == {"nvidia.com/gpu": 1, "memory": "48Gi"}
    text = rendered.get("Deployment", f"{RELEASE}-text-ministral-3-3b-reasoning")
    assert main_container(text)["resources"]["limits"] == {"nvidia.com/gpu": 1, "memory": "32Gi"}


@pytest.mark.parametrize("values_name", sorted(VALUE_SETS))
def test_probes_drain_and_security_of_every_pod(values_name):
    values = VALUE_SETS[values_name]
    rendered = render(values)
    drain = values.get("drainGraceSeconds", 30)
    for deployment in rendered.of_kind("Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        container = main_container(deployment)
        env = env_of(container)
        pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
        assert env["PROXYVISION_DRAIN_GRACE_SECS"]["value"] == str(drain)
        assert pod["terminationGracePeriodSeconds"] > pre_stop + drain
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
        for c in [*pod["containers"], *pod.get("initContainers", [])]:
            assert c["securityContext"]["readOnlyRootFilesystem"] is True
            assert c["securityContext"]["allowPrivilegeEscalation"] is False
        mounts = {m["mountPath"] for m in container["volumeMounts"]}
        assert {"/etc/proxyvision", "/tmp"} <= mounts
        assert arg_after(container, "--models-config") == "/etc/proxyvision/models.yaml"
        if container["name"] == "gateway":
            assert container["livenessProbe"]["httpGet"]["path"] == "/health"
            assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
            continue
        grpc_port = container_port(container, "grpc")
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            assert container[probe]["grpc"] == {"port": grpc_port}, probe  # standard grpc.health.v1, service ""
        startup = container["startupProbe"]
        if values_name != "cpu-demo":  # real checkpoints: allow a long download and load
            assert startup["periodSeconds"] * startup["failureThreshold"] >= 20 * 60
        assert int(env["PROXYVISION_GRPC_MAX_CONNECTION_AGE_MS"]["value"]) > 0
        assert env["PROXYVISION_METRICS_PORT"]["value"] == str(container_port(container, "metrics"))
        assert env["HF_HOME"]["value"].startswith(
            next(m["mountPath"] for m in container["volumeMounts"] if m["name"] == "model-cache")
        )


@pytest.mark.parametrize("values_name", sorted(VALUE_SETS))
def test_every_deployment_has_a_disruption_budget_over_exactly_its_pods(values_name):
    rendered = render(VALUE_SETS[values_name])
    budgets = rendered.of_kind("PodDisruptionBudget")
    assert len(budgets) == len(rendered.of_kind("Deployment"))
    for budget in budgets:
        selector = budget["spec"]["selector"]["matchLabels"]
        matched = [
            d
            for d in rendered.of_kind("Deployment")
            if selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert [d["metadata"]["name"] for d in matched] == [budget["metadata"]["name"]]


def test_two_text_models_with_three_replicas_each_scale_with_an_hpa():
    rendered = render(example_values("two-text-models-hpa"))
    text = [d for d in rendered.engine_deployments() if main_container(d)["name"] == "text-engine"]
    assert sorted(arg_after(main_container(d), "--model") for d in text) == [
        "ministral-3-3b-reasoning",
        "qwen2.5-7b-instruct",
    ]
    hpas = {h["spec"]["scaleTargetRef"]["name"]: h["spec"] for h in rendered.of_kind("HorizontalPodAutoscaler")}
    for deployment in text:
        # The HPA owns the replica count: a rendered `replicas` would fight it on every upgrade.
        assert "replicas" not in deployment["spec"]
        spec = hpas[deployment["metadata"]["name"]]
        assert spec["minReplicas"] == 3 and spec["maxReplicas"] == 8
        assert spec["metrics"][0]["pods"]["metric"]["name"] == "proxyvision_requests_waiting"
    vision = rendered.get("Deployment", f"{RELEASE}-vision-qwen2-vl-7b")
    assert vision["spec"]["replicas"] == 1 and vision["metadata"]["name"] not in hpas
    assert f"{RELEASE}-gateway" in hpas
    # Each text model has its own headless Service, so the gateway balances each over its own pods.
    services = {s["metadata"]["name"] for s in rendered.of_kind("Service") if s["spec"].get("clusterIP") == "None"}
    assert {d["metadata"]["name"] for d in text} <= services


def test_the_hub_token_comes_from_an_existing_secret_only():
    rendered = render(example_values("gpu"))
    for deployment in rendered.engine_deployments():
        token = env_of(main_container(deployment))["HF_TOKEN"]
        assert token == {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf-token", "key": "token"}}}
    assert not rendered.of_kind("Secret")
    # Without a secret name there is no HF_TOKEN at all.
    assert all("HF_TOKEN" not in env_of(main_container(d)) for d in render().engine_deployments())


def test_model_cache_volume_kinds():
    default = render().engine_deployments()[0]["spec"]["template"]["spec"]["volumes"]
    assert next(v for v in default if v["name"] == "model-cache")["emptyDir"] == {"sizeLimit": "64Gi"}
    gpu = render(example_values("gpu"))
    (claim,) = gpu.of_kind("PersistentVolumeClaim")
    assert (
        claim["spec"]["accessModes"] == ["ReadWriteMany"]
        and claim["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    )
    for deployment in gpu.engine_deployments():
        volumes = deployment["spec"]["template"]["spec"]["volumes"]
        assert (
            next(v for v in volumes if v["name"] == "model-cache")["persistentVolumeClaim"]["claimName"]
            == claim["metadata"]["name"]
        )
    existing = render(example_values("two-text-models-hpa"))
    assert not existing.of_kind("PersistentVolumeClaim")
    volumes = existing.engine_deployments()[0]["spec"]["template"]["spec"]["volumes"]
    assert (
        next(v for v in volumes if v["name"] == "model-cache")["persistentVolumeClaim"]["claimName"] == "model-weights"
    )


def test_service_monitors_scrape_ports_that_the_selected_services_have():
    rendered = render(example_values("gpu"))
    monitors = rendered.of_kind("ServiceMonitor")
    assert len(monitors) == 2
    for monitor in monitors:
        assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
        selector = monitor["spec"]["selector"]
        services = [
            s
            for s in rendered.of_kind("Service")
            if selector["matchLabels"].items() <= s["metadata"]["labels"].items()
            and all(s["metadata"]["labels"].get(e["key"]) in e["values"] for e in selector.get("matchExpressions", []))
        ]
        assert services, monitor["metadata"]["name"]
        for service in services:
            port_names = {p["name"] for p in service["spec"]["ports"]}
            assert {e["port"] for e in monitor["spec"]["endpoints"]} <= port_names
            assert all(e["path"] == "/metrics" for e in monitor["spec"]["endpoints"])


def test_gateway_service_ingress_and_ui_flag():
    rendered = render(example_values("gpu"))
    (ingress,) = rendered.of_kind("Ingress")
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    service = rendered.get("Service", backend["name"])
    assert backend["port"]["name"] in {p["name"] for p in service["spec"]["ports"]}
    (gateway,) = rendered.deployments_selected_by(service)
    assert main_container(gateway)["command"] == ["python", "-m", "services.api_gateway"]
    assert gateway["spec"]["replicas"] == 2
    assert "--ui-server" not in main_container(gateway)["args"]
    assert (
        "--ui-server"
        in main_container(render(example_values("cpu-demo")).get("Deployment", f"{RELEASE}-gateway"))["args"]
    )


def test_a_change_to_one_model_restarts_that_engine_and_the_gateways_only():
    def checksums(values):
        return {
            d["metadata"]["name"]: d["spec"]["template"]["metadata"]["annotations"]
            for d in render(values).of_kind("Deployment")
        }

    values = example_values("gpu")
    before = checksums(values)
    values["modelsConfig"]["models"][1]["params"]["max_num_seqs"] = 8
    after = checksums(values)
    changed = {name for name in before if before[name] != after[name]}
    assert changed == {f"{RELEASE}-vision-qwen2-vl-7b", f"{RELEASE}-gateway"}


def test_pod_templates_do_not_change_with_the_chart_version_alone():
    # Chart and app version labels stay off pod templates: a chart bump must not reload every model.
    for deployment in render().of_kind("Deployment"):
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert "helm.sh/chart" not in labels and "app.kubernetes.io/version" not in labels


def test_notes_tell_how_to_reach_the_gateway_and_grpcurl_an_engine():
    notes = render().notes
    assert f"port-forward svc/{RELEASE} 2000:2000" in notes
    assert f"port-forward deployment/{RELEASE}-text-ministral-3-3b-reasoning 50051:50051" in notes
    assert "grpcurl -plaintext localhost:50051 list" in notes
    assert "WARNING" not in notes
    cuda_without_gpu = {"engineDefaults": {"gpu": {"count": 0}}}
    assert "uses device cuda but requests no GPU" in render(cuda_without_gpu).notes
