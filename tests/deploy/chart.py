"""Render the Helm chart offline (helm-python-sdk: Helm's own library, no cluster, no `helm` binary) and
look the manifests up the way Kubernetes would: by kind and name, Services to the pods they select."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

import helm_python
import yaml

from tests.support.processes import REPO_ROOT

CHART_DIR = REPO_ROOT / "deploy" / "k8s"
EXAMPLES_DIR = CHART_DIR / "examples"
RELEASE = "proxyvision"
NAMESPACE = "ai"


def example_values(name: str) -> dict:
    """One of the chart's example values files (deploy/k8s/examples/<name>.yaml)."""
    return yaml.safe_load((EXAMPLES_DIR / f"{name}.yaml").read_text())


def value_sets() -> dict[str, dict]:
    """The default values ({}) and every example file, by name."""
    return {"default": {}, **{p.stem: yaml.safe_load(p.read_text()) for p in sorted(EXAMPLES_DIR.glob("*.yaml"))}}


@cache
def chart() -> helm_python.Chart:
    return helm_python.Chart.load(CHART_DIR)


@dataclass
class Rendered:
    """The manifests of one render, plus NOTES.txt."""

    docs: list[dict]
    notes: str

    def of_kind(self, kind: str) -> list[dict]:
        return [d for d in self.docs if d["kind"] == kind]

    def get(self, kind: str, name: str) -> dict:
        found = [d for d in self.of_kind(kind) if d["metadata"]["name"] == name]
        assert len(found) == 1, (
            f"{kind}/{name}: {len(found)} found among {[(d['kind'], d['metadata']['name']) for d in self.docs]}"
        )
        return found[0]

    def models_yaml(self) -> str:
        """The models.yaml the config ConfigMap carries (other ConfigMaps, e.g. the Grafana dashboard's, aside)."""
        (configmap,) = [c for c in self.of_kind("ConfigMap") if "models.yaml" in c.get("data", {})]
        return configmap["data"]["models.yaml"]

    def deployments_selected_by(self, service: dict) -> list[dict]:
        """The Deployments whose pods a Service's selector matches."""
        selector = service["spec"]["selector"]
        return [
            d
            for d in self.of_kind("Deployment")
            if selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()
        ]

    def engine_deployments(self) -> list[dict]:
        return [d for d in self.of_kind("Deployment") if main_container(d)["name"] in ("text-engine", "vision-engine")]


def render(values: dict | None = None, *, namespace: str = NAMESPACE) -> Rendered:
    """`helm template RELEASE deploy/k8s -n NAMESPACE -f values` (schema checked, as install does)."""
    out = chart().render(values or {}, name=RELEASE, namespace=namespace, is_install=True)
    docs = [
        doc for path, text in sorted(out.items()) if path.endswith(".yaml") for doc in yaml.safe_load_all(text) if doc
    ]
    notes = next((text for path, text in out.items() if path.endswith("NOTES.txt")), "")
    return Rendered(docs, notes)


def main_container(deployment: dict) -> dict:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


def arg_after(container: dict, flag: str) -> str:
    args = container["args"]
    return args[args.index(flag) + 1]


def env_of(container: dict) -> dict[str, dict]:
    """name -> the EnvVar object (with `value` or `valueFrom`)."""
    return {e["name"]: e for e in container.get("env", [])}


def container_port(container: dict, name: str) -> int:
    return next(p["containerPort"] for p in container["ports"] if p["name"] == name)


def write_values(path: Path, values: dict) -> Path:
    path.write_text(yaml.safe_dump(values, sort_keys=False))
    return path
