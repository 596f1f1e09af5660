"""The chart's values reference (deploy/k8s/README.md) is hand-kept; this keeps it true: every key of
values.yaml is in the table (or its parent is), every key in the table exists, and every default shown
in backticks is values.yaml's value."""

from __future__ import annotations

import re

import yaml

from .chart import CHART_DIR, chart

ROW = re.compile(r"^\| `([A-Za-z0-9_.]+)` \| (.*?) \|(.*)\|$")


def reference() -> dict[str, str]:
    rows = {}
    for line in (CHART_DIR / "README.md").read_text().splitlines():
        match = ROW.match(line)
        if match:
            rows[match[1]] = match[2]
    return rows


def lookup(values: dict, key: str):
    node = values
    for part in key.split("."):
        assert isinstance(node, dict) and part in node, f"README documents {key}, which values.yaml does not have"
        node = node[part]
    return node


def test_every_values_key_is_documented_and_every_documented_key_exists():
    values = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    rows = reference()
    assert len(rows) > 50
    undocumented = []

    def walk(node, path):
        if path and path in rows:
            return
        if isinstance(node, dict) and node:
            for key, value in node.items():
                walk(value, f"{path}.{key}" if path else key)
        else:
            undocumented.append(path)

    walk(values, "")
    assert undocumented == []
    for key in rows:
        lookup(values, key)


def test_documented_defaults_are_the_defaults():
    values = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    checked = 0
    for key, default in reference().items():
        if default.startswith("`") and default.endswith("`"):
            assert yaml.safe_load(default.strip("`")) == lookup(values, key), key
            checked += 1
    assert checked > 50
    # The chart loaded from disk carries the same values (nothing in .helmignore hides values.yaml).
    assert chart().values == values
    assert any(f["name"] == "README.md" for f in chart().files)
