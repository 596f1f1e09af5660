"""`backend: transformers | vllm`: the config key, the launcher's --backend, and which python runs an engine.

Pure: nothing is started but, for the interpreter probe, a throwaway python that cannot import vLLM."""

from __future__ import annotations

import sys

import pytest
import yaml

from services.common.backends import INSTALL_HINT, has_vllm, vllm_python
from services.common.config import ConfigError, parse_models_config
from services.launcher.cli import load_config, main, parse_args
from services.launcher.plan import StackOptions, plan_stack

TEXT_AND_VISION = {
    "models": [
        {"name": "chat", "local_path": "/m/chat"},
        {"name": "eyes", "local_path": "/m/eyes", "capabilities": {"vision_mode": "proxy"}},
    ]
}


@pytest.fixture
def config_file(tmp_path):
    path = tmp_path / "models.yaml"
    path.write_text(yaml.safe_dump(TEXT_AND_VISION))
    return path


def test_the_default_backend_is_transformers():
    config = parse_models_config(TEXT_AND_VISION)
    assert [m.backend for m in config.models] == ["transformers", "transformers"]


def test_a_text_model_may_run_on_vllm():
    config = parse_models_config({"models": [{"name": "chat", "local_path": "/m", "backend": "vllm"}]})
    assert config.model("chat").backend == "vllm"


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"capabilities": {"vision_mode": "native"}}, None),  # the Qwen-VL families (text_engine/engine/vllm_source.py)
        ({"capabilities": {"vision_mode": "proxy"}}, None),  # the captioner (vision_engine/captioner/vllm_captioner.py)
        ({"gguf_file": "model.gguf"}, "backend: vllm does not load gguf_file"),
        ({}, None),
    ],
)
def test_what_vllm_cannot_serve_here_is_refused_in_the_file(entry, message):
    data = {
        "models": [{"name": "m", "local_path": "/m", "backend": "vllm", **entry}, {"name": "chat", "local_path": "/c"}]
    }
    if message is None:
        parse_models_config(data)
        return
    with pytest.raises(ConfigError, match=message):
        parse_models_config(data)


def test_an_unknown_backend_names_the_choices():
    with pytest.raises(ConfigError, match=r"models\[0\]\.backend: Input should be 'transformers' or 'vllm'"):
        parse_models_config({"models": [{"name": "m", "local_path": "/m", "backend": "tgi"}]})


def test_backend_flag_moves_text_models_only(config_file, monkeypatch):
    monkeypatch.delenv("PROXYVISION_BACKEND", raising=False)
    config = load_config(parse_args(["--models-config", str(config_file), "--backend", "vllm"]))
    assert {m.name: m.backend for m in config.models} == {"chat": "vllm", "eyes": "transformers"}


def test_backend_from_the_environment_and_the_flag_wins(config_file, monkeypatch):
    monkeypatch.setenv("PROXYVISION_BACKEND", "vllm")
    assert load_config(parse_args(["--models-config", str(config_file)])).model("chat").backend == "vllm"
    flag = parse_args(["--models-config", str(config_file), "--backend", "transformers"])
    assert load_config(flag).model("chat").backend == "transformers"
    monkeypatch.setenv("PROXYVISION_BACKEND", "onnx")
    with pytest.raises(ConfigError, match="PROXYVISION_BACKEND=onnx: expected transformers or vllm"):
        load_config(parse_args(["--models-config", str(config_file)]))


def test_vllm_engines_run_under_the_vllm_python_and_the_rest_under_the_launchers(config_file, tmp_path, monkeypatch):
    monkeypatch.delenv("PROXYVISION_BACKEND", raising=False)
    config = load_config(parse_args(["--models-config", str(config_file), "--backend", "vllm"]))
    plan = plan_stack(
        config,
        StackOptions(vllm_python="/opt/vllm/bin/python"),
        tmp_path / "resolved.yaml",
        vision_engine_installed=True,
    )
    pythons = {spec.name: spec.argv[0] for spec in plan.processes}
    assert pythons == {
        "text_engine[chat]": "/opt/vllm/bin/python",
        "vision_engine[eyes]": sys.executable,
        "api_gateway": sys.executable,
    }


def test_a_python_without_vllm_is_refused_with_the_fix(tmp_path):
    plain = tmp_path / "venv-python"
    plain.symlink_to(sys.executable)  # the tests' own interpreter, under another name: it has no vLLM
    assert not has_vllm(str(plain))
    with pytest.raises(ConfigError) as caught:
        vllm_python({"PROXYVISION_VLLM_PYTHON": str(plain)})
    assert (
        str(caught.value)
        == f"PROXYVISION_VLLM_PYTHON={plain} cannot import vLLM and ProxyVision's engine: {INSTALL_HINT}"
    )
    with pytest.raises(ConfigError, match="make install-vllm"):
        vllm_python({"PROXYVISION_VLLM_PYTHON": str(tmp_path / "missing" / "python")})


def test_serve_with_vllm_and_no_vllm_exits_2_with_one_line(config_file, tmp_path, monkeypatch, capsys):
    plain = tmp_path / "venv-python"
    plain.symlink_to(sys.executable)
    monkeypatch.setenv("PROXYVISION_VLLM_PYTHON", str(plain))
    monkeypatch.delenv("PROXYVISION_BACKEND", raising=False)
    assert main(["serve", "--models-config", str(config_file), "--backend", "vllm", "--port", "2999"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()  # one line, no traceback
    assert line.endswith(f"PROXYVISION_VLLM_PYTHON={plain} cannot import vLLM and ProxyVision's engine: {INSTALL_HINT}")
