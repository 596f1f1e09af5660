"""`python -m services.api_gateway` refuses a bad start-up with a non-zero exit and the reason."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]


def run_gateway(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "services.api_gateway", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", **(env or {})},
    )


@pytest.mark.parametrize(
    "yaml_text, extra, says",
    [
        (
            "models:\n  - name: m\n    hf_id: a/b\n    params: {mem: lots}\n    endpoint: 127.0.0.1:1\n",
            [],
            "models[0].params.mem: Input should be a valid integer",
        ),
        ("models:\n  - name: m\n    hf_id: a/b\n", [], "no engine endpoint for model(s): m"),
        (
            "models:\n  - name: m\n    hf_id: a/b\n",
            ["--endpoint", "nope=127.0.0.1:1"],
            "endpoint given for unknown model(s): nope",
        ),
        ("models:\n  - name: m\n    hf_id: a/b\n", ["--endpoint", "m"], "bad endpoint 'm'"),
    ],
    ids=["bad-yaml-value", "no-endpoint", "endpoint-for-unknown-model", "malformed-endpoint"],
)
def test_bad_start_up_exits_non_zero_with_the_reason(tmp_path, yaml_text, extra, says):
    config = tmp_path / "models.yaml"
    config.write_text(yaml_text)
    result = run_gateway("--models-config", str(config), "--port", "1", *extra)
    assert result.returncode != 0 and says in result.stderr
