"""The README's and docs/configuration.md's CLI lines, run by bash as written (from the repository root, as a
reader of the README is): activating the venv, `proxyvision serve --help`, `proxyvision config` in both forms,
and `make run`. None of them may touch the network: the hub endpoint is a closed port."""

from __future__ import annotations

import shutil
import subprocess

import yaml

from services.common.config import load_models_config
from tests.support.processes import REPO_ROOT, free_port

ACTIVATE = "source .venv/bin/activate"


def bash(command: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env_offline = f"HF_ENDPOINT=http://127.0.0.1:{free_port()} HF_HUB_OFFLINE=1"
    run = subprocess.run(
        ["bash", "-c", f"export {env_offline}; {command}"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert run.returncode == 0, f"{command}\n{run.stderr[-3000:]}"
    return run


def test_the_cli_help_after_activating_the_venv():
    help_text = bash(f"{ACTIVATE} && proxyvision serve --help").stdout
    assert "--models-config" in help_text and "--vision-model" in help_text and "--ui-server" in help_text


def test_config_resolves_the_brief_form_without_loading():
    command = "proxyvision config --m mistralai/Ministral-3-3B-Reasoning-2512 --vision-model Qwen/Qwen2-VL-7B-Instruct"
    resolved = yaml.safe_load(bash(f"{ACTIVATE} && {command}").stdout)
    names = {m["name"]: m for m in resolved["models"]}
    assert set(names) == {"ministral-3-3b-reasoning", "qwen2-vl-7b"}
    assert names["ministral-3-3b-reasoning"]["hf_id"] == "mistralai/Ministral-3-3B-Reasoning-2512"
    assert "ministral-3-3b-reasoning-2512" in names["ministral-3-3b-reasoning"]["aliases"]


def test_config_output_is_a_models_yaml_serve_accepts(tmp_path):
    shutil.copy(REPO_ROOT / "configs" / "brief.models.yaml", tmp_path / "models.yaml")
    # Activated from the repository root, then run where the reader's models.yaml is.
    bash(f"{ACTIVATE} && cd {tmp_path} && proxyvision config --models-config models.yaml > resolved.yaml")
    given, resolved = (load_models_config(tmp_path / name) for name in ("models.yaml", "resolved.yaml"))
    assert resolved.model_dump() == given.model_dump()


def test_make_run_is_serve_on_port_2000():
    # -n: the commands make would run, printed, not run (it would start the stack).
    plan = bash("make -n run MODELS_CONFIG=path/to/models.yaml").stdout
    assert ".venv/bin/proxyvision serve --models-config path/to/models.yaml --port 2000" in plan
