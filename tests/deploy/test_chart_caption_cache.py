"""The chart's shared caption cache (captionCache): with redis.enabled a small Redis (Deployment + Service, a
NetworkPolicy that admits the vision engines only) and models.yaml's vision_proxy.shared_cache pointing at it;
with url, no Redis pod and that URL; off by default. Rendered offline, validated strictly, and the Redis
arguments the chart renders are run by a real redis-server to check that they mean what they say."""

from __future__ import annotations

import helm_python
import kubernetes_validate
import pytest
import redis
import yaml
from kubernetes_validate.utils import latest_version

from services.common.config import parse_models_config
from tests.support.processes import free_port, start_process, wait_until
from tests.support.redis_server import redis_server_binary

from .chart import CHART_DIR, NAMESPACE, RELEASE, container_port, main_container, render
from .test_chart_values import rejected, render_failure

CACHE = f"{RELEASE}-caption-cache"
VISION = f"{RELEASE}-vision-qwen2-vl-7b"
BUNDLED = {"captionCache": {"redis": {"enabled": True}}}
EXTERNAL_URL = "redis://:s3cret@valkey.shared.svc.cluster.local:6379/2"


def shared_caches(rendered) -> dict[str, object]:
    """model name -> its parsed vision_proxy.shared_cache (None for models without one)."""
    config = parse_models_config(yaml.safe_load(rendered.models_yaml()), "rendered models.yaml")
    return {m.name: (m.vision_proxy.shared_cache if m.vision_proxy else None) for m in config.models}


def selects(selector: dict, labels: dict) -> bool:
    return selector["matchLabels"].items() <= labels.items() and all(
        labels.get(e["key"]) in e["values"] for e in selector.get("matchExpressions", [])
    )


def pod_labels(rendered, name: str) -> dict:
    return rendered.get("Deployment", name)["spec"]["template"]["metadata"]["labels"]


def test_off_by_default_no_redis_and_no_shared_cache():
    rendered = render()
    assert CACHE not in {d["metadata"]["name"] for d in rendered.docs}
    assert set(shared_caches(rendered).values()) == {None}


def test_the_bundled_redis_runs_as_the_other_pods_do_and_models_yaml_points_the_vision_model_at_it():
    rendered = render(BUNDLED)
    deployment = rendered.get("Deployment", CACHE)
    service = rendered.get("Service", CACHE)
    assert [d["metadata"]["name"] for d in rendered.deployments_selected_by(service)] == [CACHE]
    container = main_container(deployment)
    assert container["image"] == "redis:7.4-alpine" and container["command"] == ["redis-server"]
    args = container["args"]
    pairs = dict(zip(args[::2], args[1::2]))
    assert pairs["--maxmemory"] == "256mb" and pairs["--maxmemory-policy"] == "allkeys-lru"
    assert pairs["--save"] == "" and pairs["--appendonly"] == "no"
    (port,) = service["spec"]["ports"]
    assert port["port"] == 6379 == container_port(container, port["targetPort"])
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["resources"]["limits"]["memory"] == "384Mi" and pod["automountServiceAccountToken"] is False
    assert deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"] == {"type": "Recreate"}
    caches = shared_caches(rendered)
    vision = caches.pop("qwen2-vl-7b")
    assert vision.url == f"redis://{CACHE}.{NAMESPACE}.svc.cluster.local:6379/0" and vision.ttl_secs == 604800
    assert set(caches.values()) == {None}  # text models have no caption cache


def test_the_network_policy_admits_only_the_vision_engines_and_the_gateway_to_redis():
    rendered = render(BUNDLED)
    policy = rendered.get("NetworkPolicy", CACHE)["spec"]
    assert selects(policy["podSelector"], pod_labels(rendered, CACHE))
    assert not any(
        selects(policy["podSelector"], pod_labels(rendered, d["metadata"]["name"]))
        for d in rendered.of_kind("Deployment")
        if d["metadata"]["name"] != CACHE
    )
    (rule,) = policy["ingress"]
    assert rule["ports"] == [{"port": "redis", "protocol": "TCP"}]
    admitted = sorted(
        d["metadata"]["name"]
        for d in rendered.of_kind("Deployment")
        if any(selects(peer["podSelector"], pod_labels(rendered, d["metadata"]["name"])) for peer in rule["from"])
    )
    assert admitted == sorted([VISION, f"{RELEASE}-gateway"])  # captions; stored responses
    # The engines' own policy still selects the engines only (the Redis pod is not an engine).
    engines = rendered.get("NetworkPolicy", f"{RELEASE}-engines")["spec"]
    assert not selects(engines["podSelector"], pod_labels(rendered, CACHE))
    assert rendered_kinds(render({**BUNDLED, "networkPolicy": {"enabled": False}}), "NetworkPolicy") == []


def rendered_kinds(rendered, kind: str) -> list[str]:
    return [d["metadata"]["name"] for d in rendered.of_kind(kind)]


def test_an_existing_redis_by_url_runs_no_redis_pod():
    rendered = render({"captionCache": {"url": EXTERNAL_URL, "ttlSecs": 3600}})
    assert CACHE not in rendered_kinds(rendered, "Deployment") + rendered_kinds(rendered, "Service")
    assert CACHE not in rendered_kinds(rendered, "NetworkPolicy")
    vision = shared_caches(rendered)["qwen2-vl-7b"]
    assert (vision.url, vision.ttl_secs) == (EXTERNAL_URL, 3600)


def test_the_vision_engine_restarts_when_the_cache_changes():
    def annotations(values):
        return render(values).get("Deployment", VISION)["spec"]["template"]["metadata"]["annotations"]

    assert annotations({}) != annotations(BUNDLED) != annotations({"captionCache": {"url": EXTERNAL_URL}})
    assert annotations(BUNDLED) != annotations({"captionCache": {"redis": {"enabled": True}, "ttlSecs": 60}})


def test_a_shared_cache_of_your_own_in_models_config_is_kept_when_captioncache_is_off():
    values = {"modelsConfig": default_models_config()}
    own = {"url": EXTERNAL_URL, "timeout_ms": 50, "key_prefix": "team-a:"}
    values["modelsConfig"]["models"][1]["capabilities"]["vision_proxy"]["shared_cache"] = own
    vision = shared_caches(render(values))["qwen2-vl-7b"]
    assert (vision.url, vision.timeout_ms, vision.key_prefix) == (EXTERNAL_URL, 50, "team-a:")


def default_models_config() -> dict:
    return yaml.safe_load((CHART_DIR / "values.yaml").read_text())["modelsConfig"]


def test_mistakes_are_refused():
    assert "not both" in render_failure({"captionCache": {"url": EXTERNAL_URL, "redis": {"enabled": True}}})
    values = {**BUNDLED, "modelsConfig": default_models_config()}
    values["modelsConfig"]["models"][1]["capabilities"]["vision_proxy"]["shared_cache"] = {"url": "redis://x:1/0"}
    assert "is written by captionCache" in render_failure(values)
    assert "/captionCache/url" in rejected({"captionCache": {"url": "http://redis:6379"}})
    assert "/captionCache/ttlSecs" in rejected({"captionCache": {"ttlSecs": 0}})
    assert "/captionCache/redis/maxMemory" in rejected({"captionCache": {"redis": {"maxMemory": "lots"}}})
    assert "/captionCache/redis/maxMemory" in rejected({"captionCache": {"redis": {"maxMemory": 256}}})
    assert "/captionCache/redis/port" in rejected({"captionCache": {"redis": {"port": 70000}}})
    assert "'maxmemory' not allowed" in rejected({"captionCache": {"redis": {"maxmemory": "1gb"}}})
    assert "'password' not allowed" in rejected({"captionCache": {"password": "x"}})


@pytest.mark.parametrize("kube_version", ["1.33.0", latest_version()])
def test_lint_and_kubernetes_validate_pass_strictly(kube_version):
    for values in (BUNDLED, {"captionCache": {"url": EXTERNAL_URL}}):
        report = helm_python.lint(CHART_DIR, values, strict=True, kube_version=f"v{kube_version}")
        assert report["errors"] == [] and [m for m in report["messages"] if m["severity"] >= 2] == [], report
        for doc in render(values).docs:
            kubernetes_validate.validate(doc, kube_version, strict=True)


def test_a_real_redis_server_takes_the_rendered_arguments(tmp_path):
    """The Deployment's command and args, on a free port, run by the redis-server the tests use."""
    container = main_container(
        render({"captionCache": {"redis": {"enabled": True, "maxMemory": "64mb"}}}).get("Deployment", CACHE)
    )
    args = list(container["args"])
    port = free_port()
    args[args.index("--port") + 1] = str(port)
    args[args.index("--dir") + 1] = str(tmp_path)
    args += ["--bind", "127.0.0.1"]  # the pod listens on every interface; a test, on loopback only
    server = start_process("redis-server", [redis_server_binary(), *args], port, tmp_path / "redis.log")
    try:
        client = redis.Redis(port=port, socket_timeout=2, decode_responses=True)

        def answers() -> bool:
            try:
                return client.ping()
            except redis.ConnectionError:
                return False

        wait_until(answers, timeout=10, message="the rendered redis-server answering PING")
        config = {
            k: v
            for name in ("maxmemory", "maxmemory-policy", "save", "appendonly", "protected-mode")
            for k, v in client.config_get(name).items()
        }
        assert config == {
            "maxmemory": str(64 * 1024 * 1024),
            "maxmemory-policy": "allkeys-lru",
            "save": "",
            "appendonly": "no",
            "protected-mode": "no",
        }
        client.close()
    finally:
        server.stop()
