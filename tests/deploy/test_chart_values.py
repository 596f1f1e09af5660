"""values.schema.json rejects typos and wrong types before anything reaches a cluster, its models part
stays the services' own models.yaml schema, and the chart refuses the mistakes a schema cannot see."""

from __future__ import annotations

import json
import typing

import helm_python
import pytest
import yaml
from pydantic import BaseModel

from services.common.config import ModelsConfig

from .chart import CHART_DIR, RELEASE, chart, example_values, render

SCHEMA = json.loads((CHART_DIR / "values.schema.json").read_text())


def rejected(values: dict) -> str:
    """The schema error `helm install -f values` would print (render checks the schema as install does)."""
    with pytest.raises(helm_python.HelmValuesError) as caught:
        chart().render(values, name=RELEASE, namespace="ai", is_install=True)
    with pytest.raises(helm_python.HelmValuesError):
        chart().validate_schema(values)
    return str(caught.value)


def render_failure(values: dict) -> str:
    with pytest.raises(helm_python.HelmRenderError) as caught:
        chart().render(values, name=RELEASE, namespace="ai", is_install=True)
    return str(caught.value)


def test_a_typo_in_a_key_is_rejected_with_its_path():
    assert "'replica' not allowed" in rejected({"gateway": {"replica": 3}})
    assert "'gatway' not allowed" in rejected({"gatway": {"replicas": 3}})
    assert "'limit' not allowed" in rejected({"engineDefaults": {"resources": {"limit": {"memory": "1Gi"}}}})
    assert "'mme' not allowed" in rejected(
        {"modelsConfig": {"models": [{"name": "m", "hf_id": "a/b", "params": {"mme": 64}}]}}
    )
    assert "/engines/qwen2-vl-7b" in rejected({"engines": {"qwen2-vl-7b": {"replica": 2}}})


def test_a_wrong_type_is_rejected_with_its_path():
    message = rejected({"gateway": {"replicas": "two"}})
    assert "/gateway/replicas" in message and "want integer" in message
    assert "/engineDefaults/gpu/count" in rejected({"engineDefaults": {"gpu": {"count": "1"}}})
    assert "/modelsConfig/models/0/params/mem" in rejected(
        {"modelsConfig": {"models": [{"name": "m", "hf_id": "a/b", "params": {"mem": "2GB"}}]}}
    )
    assert "/engineDefaults/device" in rejected({"engineDefaults": {"device": "gpu"}})
    assert "/modelCache/type" in rejected({"modelCache": {"type": "hostPath"}})


def test_models_yaml_rules_hold_in_values_too():
    # Neither or both of hf_id and local_path; the chart owns `endpoint`.
    assert "/modelsConfig/models/0" in rejected({"modelsConfig": {"models": [{"name": "m"}]}})
    assert "/modelsConfig/models/0" in rejected(
        {"modelsConfig": {"models": [{"name": "m", "hf_id": "a/b", "local_path": "/m"}]}}
    )
    assert "'endpoint' not allowed" in rejected(
        {"modelsConfig": {"models": [{"name": "m", "hf_id": "a/b", "endpoint": "x:1"}]}}
    )


def test_the_hub_token_cannot_be_a_plain_value():
    assert "'token' not allowed" in rejected({"huggingface": {"token": "hf_secret"}})
    assert "/extraEnv" not in json.dumps(SCHEMA["properties"]["huggingface"])  # only tokenSecret, offline, endpoint
    assert set(SCHEMA["properties"]["huggingface"]["properties"]) == {"tokenSecret", "offline", "endpoint"}


def test_every_object_in_the_schema_refuses_unknown_keys_except_kubernetes_pass_throughs():
    # Maps handed to Kubernetes as they are (labels, affinity, security contexts, HPA specs) are
    # validated by the API server; everything the chart itself reads must refuse unknown keys.
    pass_through = {
        "affinity",
        "podSecurityContext",
        "securityContext",
        "behavior",
        "metrics",
        "tolerations",
        "topologySpreadConstraints",
        "extraEnv",
        "tls",
        "claims",
        "metricsFrom",
    }
    open_objects = []

    def walk(node, path):
        if isinstance(node, dict):
            # An array's items are named after the array.
            name = path[-2] if path[-1] == "items" else path[-1]
            if (
                node.get("type") == "object"
                and node.get("additionalProperties", True) in (True, {})
                and name not in pass_through
            ):
                open_objects.append("/".join(path))
            for key, value in node.items():
                walk(value, [*path, key])
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, [*path, str(i)])

    walk(SCHEMA, ["values"])
    assert SCHEMA["additionalProperties"] is False
    assert open_objects == []


def _pydantic_fields(model: type[BaseModel]) -> dict[str, object]:
    return {name: field.annotation for name, field in model.model_fields.items()}


def _nested_model(annotation) -> type[BaseModel] | None:
    for candidate in (annotation, *typing.get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
        if typing.get_origin(candidate) is list:
            inner = typing.get_args(candidate)[0]
            if isinstance(inner, type) and issubclass(inner, BaseModel):
                return inner
    return None


def _resolve(node: dict) -> dict:
    while "$ref" in node:
        node = SCHEMA["definitions"][node["$ref"].rsplit("/", 1)[-1]]
    if node.get("type") == "array":
        return _resolve(node["items"])
    return node


def test_the_models_part_of_the_schema_is_the_services_models_yaml_schema():
    """values.schema.json is hand-kept; this keeps its modelsConfig in step with services/common/config.py:
    the same keys at every level (endpoint excepted: the chart sets it), and the same types and bounds."""

    def compare(model: type[BaseModel], node: dict, path: str) -> None:
        node = _resolve(node)
        expected = set(model.model_fields) - {"endpoint"}
        assert set(node["properties"]) == expected, (
            f"{path}: schema {sorted(node['properties'])} vs config {sorted(expected)}"
        )
        pyschema = model.model_json_schema()["properties"]
        for name, annotation in _pydantic_fields(model).items():
            if name == "endpoint":
                continue
            nested = _nested_model(annotation)
            if nested is not None:
                compare(nested, node["properties"][name], f"{path}.{name}")
                continue
            prop = node["properties"][name]
            py = next(v for v in pyschema[name].get("anyOf", [pyschema[name]]) if v.get("type") != "null")
            types = prop["type"] if isinstance(prop["type"], list) else [prop["type"]]
            assert py["type"] in types, f"{path}.{name}: schema {types} vs config {py['type']}"
            for bound in ("minimum", "maximum", "exclusiveMinimum", "enum"):
                assert prop.get(bound) == py.get(bound), f"{path}.{name}: {bound} {prop.get(bound)} vs {py.get(bound)}"

    compare(ModelsConfig, SCHEMA["properties"]["modelsConfig"], "modelsConfig")


def test_engines_must_name_models_of_the_config():
    assert "engines.qwen-vl: there is no model named" in render_failure({"engines": {"qwen-vl": {"replicas": 2}}})


def test_models_whose_names_collide_as_kubernetes_names_are_refused():
    models = [{"name": "my.model", "hf_id": "a/b"}, {"name": "my_model", "hf_id": "c/d"}]
    assert "another model already has" in render_failure({"modelsConfig": {"models": models}})


def test_cpu_autoscaling_without_a_cpu_request_is_refused():
    assert "needs resources.requests.cpu" in render_failure({"engineDefaults": {"autoscaling": {"enabled": True}}})
    assert "needs gateway.resources.requests.cpu" in render_failure(
        {"gateway": {"resources": {"requests": None}, "autoscaling": {"enabled": True}}}
    )


def test_long_and_odd_model_names_give_unique_valid_kubernetes_names():
    long_a = "organisation-with-a-long-name/some-very-long-model-name-v1.5-instruct-awq-a"
    long_b = long_a[:-1] + "b"
    models = [
        {"name": long_a, "hf_id": "a/b"},
        {"name": long_b, "hf_id": "a/c"},
        {"name": "Qwen/Qwen2.5-VL", "hf_id": "q/v", "capabilities": {"vision_mode": "proxy"}},
    ]
    rendered = render({"modelsConfig": {"models": models}})
    names = [d["metadata"]["name"] for d in rendered.engine_deployments()]
    assert len(set(names)) == 3 and all(len(n) <= 63 for n in names), names
    assert f"{RELEASE}-vision-qwen-qwen2-5-vl" in names
    services = {s["metadata"]["name"] for s in rendered.of_kind("Service")}
    assert set(names) <= services
    config = yaml.safe_load(rendered.models_yaml())
    assert [m["name"] for m in config["models"]] == [long_a, long_b, "Qwen/Qwen2.5-VL"]


def test_large_numbers_survive_rendering_exactly():
    # Helm reads numbers as floats; the models.yaml must still carry integers the services accept.
    values = example_values("gpu")
    values["modelsConfig"]["gateway"]["images"]["max_image_bytes"] = 123456789
    config = yaml.safe_load(render(values).models_yaml())
    assert config["gateway"]["images"]["max_image_pixels"] == 50000000
    assert config["gateway"]["images"]["max_image_bytes"] == 123456789
    age = {"engineDefaults": {"grpcMaxConnectionAgeMs": 3600000}}
    engine = render(age).engine_deployments()[0]["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "PROXYVISION_GRPC_MAX_CONNECTION_AGE_MS", "value": "3600000"} in engine["env"]
