"""The Grafana dashboard the chart ships (deploy/k8s/dashboards/proxyvision.json): the ConfigMap carries the
sidecar's label and the repository's JSON unchanged; every panel queries the `datasource` variable; and
every series a PromQL expression names is one the services export, as their own metrics objects say (the
gateway's GatewayMetrics, the engines' EngineMetrics / VisionMetrics with their scrape-time gauges), never
a hand-kept list: a renamed series breaks this test, not a panel nobody looks at."""

from __future__ import annotations

import dataclasses
import json
import re

import helm_python
import kubernetes_validate
import pytest
from prometheus_client import CollectorRegistry

from services.api_gateway.metrics import GatewayMetrics
from services.common.lifecycle import ModelState
from services.common.metrics import EngineMetrics, ModelSnapshot, VisionMetrics

from .chart import CHART_DIR, NAMESPACE, RELEASE, render

DASHBOARD_FILE = CHART_DIR / "dashboards" / "proxyvision.json"
DASHBOARD = json.loads(DASHBOARD_FILE.read_text())
CONFIGMAP = f"{RELEASE}-grafana-dashboard"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
# Labels Prometheus adds to every series it scrapes through the chart's ServiceMonitors (Kubernetes service
# discovery and the Operator's relabelling), which the services themselves never set.
TARGET_LABELS = {"namespace", "pod", "service", "container", "endpoint", "job", "instance"}

# Words of PromQL that look like identifiers but never name a series. Functions and aggregations are
# recognised by the `(` after them and label lists (by/without/on/ignoring/group_* with their labels) are
# removed whole, so neither needs a list.
KEYWORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
    "inf",
    "nan",
}
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_NAME_MATCHER = re.compile(r'__name__\s*=\s*"([^"]+)"')
_LABEL_LIST = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
# A whole identifier (no backtracking to a prefix of `sum`) not glued to a digit, dot or `$` (1e3, 0.5,
# $model) and not a function call.
_IDENTIFIER = re.compile(r"(?<![\w.:$])([A-Za-z_:][\w:]*)(?![\w:])(?!\s*\()")


def metric_names(expr: str) -> set[str]:
    """The series an instant or range PromQL expression selects, by name."""
    names = set(_NAME_MATCHER.findall(expr))  # {__name__="x"}
    text = _STRING.sub('""', expr)  # label values may hold anything, braces and all
    text = re.sub(r"\{[^}]*\}", "{}", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "[]", text)  # ranges, subquery steps, Grafana's $__rate_interval
    text = _LABEL_LIST.sub(" ", text)  # label names, not series; `sum by (le) (x)` becomes the call `sum (x)`
    text = re.sub(r"\$\{?\w+\}?", "", text)  # any Grafana variable left outside brackets
    return names | {name for name in _IDENTIFIER.findall(text) if name not in KEYWORDS}


def balanced(expr: str) -> bool:
    """Every (, { and [ outside strings closed in order: a cheap guard against a typo no parser here sees."""
    stack, pairs = [], {")": "(", "}": "{", "]": "["}
    for char in _STRING.sub('""', expr):
        if char in "({[":
            stack.append(char)
        elif char in pairs and (not stack or stack.pop() != pairs[char]):
            return False
    return not stack


def test_the_extractor_finds_series_names_and_only_them():
    assert metric_names(
        "histogram_quantile(0.99, sum by (le, model) (rate(proxyvision_gateway_time_to_first_token_seconds_bucket"
        '{namespace=~"$namespace", model=~"$model"}[$__rate_interval])))'
    ) == {"proxyvision_gateway_time_to_first_token_seconds_bucket"}
    assert metric_names(
        'sum by (model) (rate(a_total{x="b{c} d", y!~"2.."}[5m] offset 1h)) / on (model) group_left (pod) '
        "b_info > bool 0.5e3 and count without (instance) (rate (c:rule:rate5m [1m:30s]))"
    ) == {"a_total", "b_info", "c:rule:rate5m"}
    assert metric_names('count by (model, state) (up{job="x"} == 1) or vector(0)') == {"up"}
    assert metric_names('{__name__="proxyvision_model_state", model="m"}') == {"proxyvision_model_state"}
    assert metric_names("sum(rate(x_total[$__rate_interval]))/sum(rate(y_total[5m]))") == {"x_total", "y_total"}
    assert balanced('sum by (a) (rate(x{b="(}"}[5m]))') and not balanced("sum(rate(x[5m))")


# The series prometheus_client exports for a family of each type: a labelled metric with no child yet
# exports no sample, so its family name plus these suffixes is what a scrape will show once it has one.
SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "gaugehistogram": ("_bucket", "_gcount", "_gsum"),
    "summary": ("", "_count", "_sum", "_created"),
    "info": ("_info",),
    "stateset": ("",),
    "unknown": ("",),
}


def _snapshot(**overrides) -> ModelSnapshot:
    """A snapshot with every field set, so the scrape-time collector exports all it can."""
    values = {f.name: 0 for f in dataclasses.fields(ModelSnapshot)} | {"state": ModelState.READY}
    return ModelSnapshot(**(values | overrides))


def service_registries() -> dict[str, CollectorRegistry]:
    """Each process's registry, built the way the services build theirs."""
    text, vision = EngineMetrics("text-model"), VisionMetrics("vision-model")
    text.watch(lambda: _snapshot(kv_cache_usage_ratio=0.0))  # text engines report their KV cache
    vision.watch(lambda: _snapshot(kv_cache_usage_ratio=None))
    return {"gateway": GatewayMetrics().registry, "text engine": text.registry, "vision engine": vision.registry}


def exported() -> dict[str, set[str]]:
    """Series name -> the labels its samples carry (empty when it has no sample yet), over every service."""
    series: dict[str, set[str]] = {}
    for registry in service_registries().values():
        for family in registry.collect():
            for suffix in SUFFIXES[family.type]:
                series.setdefault(family.name + suffix, set())
            for sample in family.samples:
                series.setdefault(sample.name, set()).update(sample.labels)
    return series


def test_the_exported_series_come_from_the_services():
    series = exported()
    # One of each kind, so a broken collection (nothing found, suffixes lost) fails here and not below.
    assert {
        "proxyvision_gateway_requests_total",
        "proxyvision_gateway_requests_running",
        "proxyvision_gateway_request_duration_seconds_bucket",
        "proxyvision_requests_waiting",
        "proxyvision_kv_cache_usage_ratio",
        "proxyvision_model_loads_total",
        "proxyvision_vision_cache_hits_total",
    } <= set(series)
    assert "proxyvision_gateway_requests" not in series  # a counter's family name is not a series
    assert series["proxyvision_model_state"] == {"model", "state"}


def panels() -> list[dict]:
    """Every panel, those inside collapsed rows included."""
    found = []
    for panel in DASHBOARD["panels"]:
        found.append(panel)
        found.extend(panel.get("panels", []))
    return found


def queries() -> list[dict]:
    return [p for p in panels() if p["type"] != "row"]


def test_the_dashboard_is_a_grafana_dashboard_with_rows_and_its_variables():
    assert DASHBOARD["uid"] == "proxyvision" and DASHBOARD["title"] and DASHBOARD["schemaVersion"] >= 36
    variables = {v["name"]: v for v in DASHBOARD["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    for name in ("namespace", "model"):
        assert variables[name]["type"] == "query" and variables[name]["datasource"] == DATASOURCE
        # "All" must be a regex that also matches series without the label (=~".*").
        assert variables[name]["includeAll"] and variables[name]["allValue"] == ".*"
    rows = [p["title"] for p in panels() if p["type"] == "row"]
    assert {"Gateway", "Latency", "Engines", "Vision", "Routing", "Model lifecycle"} <= set(rows)


def test_panel_ids_are_unique_and_every_panel_queries_the_datasource_variable():
    ids = [p["id"] for p in panels()]
    assert len(ids) == len(set(ids)), ids
    for panel in queries():
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"], f"{panel['title']} has no query"
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, panel["title"]
            assert metric_names(target["expr"]) and balanced(target["expr"]), (panel["title"], target["expr"])


def test_every_query_filters_on_the_namespace_variable():
    # One dashboard serves every release: a query without the filter would mix releases.
    for panel in queries():
        for target in panel["targets"]:
            for selector in re.findall(r"[A-Za-z_:][\w:]*\{[^}]*\}|[A-Za-z_:][\w:]*(?=\[)", target["expr"]):
                assert 'namespace=~"$namespace"' in selector, (panel["title"], selector)


def test_every_series_a_panel_queries_is_exported_by_the_services():
    series = exported()
    missing = {
        name: panel["title"]
        for panel in queries()
        for target in panel["targets"]
        for name in metric_names(target["expr"])
        if name not in series
    }
    assert missing == {}, f"panels query series no service exports: {missing}"


def test_the_variables_query_exported_series_and_their_labels():
    series = exported()
    for variable in DASHBOARD["templating"]["list"]:
        if variable["type"] != "query":
            continue
        query = variable["query"]["query"]
        assert variable["definition"] == query
        match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", query)
        assert match, query
        (name,) = metric_names(match[1])
        label = match[2]
        assert name in series, query
        assert label in series[name] | TARGET_LABELS, f"{name} has no label {label}"


def dashboard_configmap(values: dict) -> dict:
    return render({"grafana": {"dashboard": {"enabled": True, **values}}}).get("ConfigMap", CONFIGMAP)


def test_the_configmap_carries_the_sidecar_label_and_the_repository_s_json():
    configmap = dashboard_configmap({})
    kubernetes_validate.validate(configmap, "1.33.0", strict=True)
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert configmap["metadata"]["labels"]["app.kubernetes.io/instance"] == RELEASE
    assert "namespace" not in configmap["metadata"] and "annotations" not in configmap["metadata"]
    (key,) = configmap["data"]
    assert key == "proxyvision.json"  # the sidecar writes the file under this name
    text = configmap["data"][key]
    assert json.loads(text) == DASHBOARD
    assert text == DASHBOARD_FILE.read_text().rstrip("\n")  # byte for byte: Helm templated nothing in it
    assert len(text.encode()) < 1024 * 1024  # a ConfigMap holds at most 1 MiB


def test_label_annotations_and_namespace_are_configurable():
    configmap = dashboard_configmap(
        {
            "labels": {"grafana_dashboard": None, "dashboards": "proxyvision"},
            "annotations": {"grafana_folder": "ProxyVision"},
            "namespace": "monitoring",
        }
    )
    metadata = configmap["metadata"]
    assert metadata["namespace"] == "monitoring"
    assert metadata["labels"]["dashboards"] == "proxyvision" and "grafana_dashboard" not in metadata["labels"]
    assert metadata["annotations"] == {"grafana_folder": "ProxyVision"}


def test_off_by_default_and_the_schema_knows_the_keys():
    names = [c["metadata"]["name"] for c in render().of_kind("ConfigMap")]
    assert len(names) == 1 and CONFIGMAP not in names  # models.yaml's only
    with pytest.raises(helm_python.HelmValuesError, match="'folder' not allowed"):
        render({"grafana": {"dashboard": {"enabled": True, "folder": "ProxyVision"}}})
    with pytest.raises(helm_python.HelmValuesError, match="/grafana/dashboard/labels"):
        render({"grafana": {"dashboard": {"labels": {"grafana_dashboard": 1}}}})


def test_lint_strict_passes_with_the_dashboard():
    values = {"grafana": {"dashboard": {"enabled": True}}, "metrics": {"serviceMonitor": {"enabled": True}}}
    report = helm_python.lint(CHART_DIR, values, strict=True, kube_version="v1.33.0")
    assert report["errors"] == [] and [m for m in report["messages"] if m["severity"] >= 2] == [], report
    assert render(values, namespace=NAMESPACE).get("ConfigMap", CONFIGMAP)
