"""The port plan, the --m fallback and the CLI's config errors: pure, no process started."""

from __future__ import annotations

import socket
import sys

import pytest
import yaml

from services.common.config import ConfigError, load_models_config, parse_models_config
from services.launcher.banner import ready_banner
from services.launcher.cli import load_config, log_level, main, parse_args
from services.launcher.plan import StackOptions, config_from_model_ids, plan_stack, write_config

# The product brief's models.yaml, as written there.
BRIEF_MODELS_YAML = """
models:
  # Primary text model (required)
  - name: "ministral-3-3b-reasoning"
    hf_id: "mistralai/Ministral-3-3B-Reasoning-2512"
    params:
      mem: 2048  # Memory in MB
      dtype: "bf16"
      max_num_seqs: 16
    capabilities:
      vision_mode: "disabled"  # Text-only model

  # Vision model (optional, enables multimodal support)
  - name: "qwen2-vl-7b"
    hf_id: "Qwen/Qwen2-VL-7B-Instruct"
    params:
      mem: 8192  # Vision models need more memory
      dtype: "bf16"
      max_num_seqs: 4
    capabilities:
      vision_mode: "proxy"
      vision_proxy:
        hf_id: "Qwen/Qwen2-VL-7B-Instruct"
        prompt_template: "Describe this image in detail:"

# Global settings
idle_unload_secs: 300
"""

TEXT, VISION = "ministral-3-3b-reasoning", "qwen2-vl-7b"


@pytest.fixture
def brief_file(tmp_path):
    path = tmp_path / "models.yaml"
    path.write_text(BRIEF_MODELS_YAML)
    return path


def flag(argv, name):
    return argv[argv.index(name) + 1]


def test_brief_config_plan(brief_file, tmp_path):
    resolved_path = tmp_path / "resolved.yaml"
    plan = plan_stack(
        load_models_config(brief_file), StackOptions(port=2000, ui_server=True, device="cpu"), resolved_path
    )
    text, vision, gateway = plan.processes
    assert (text.name, text.port, text.health_kind) == (f"text_engine[{TEXT}]", 50051, "grpc")
    assert (vision.name, vision.port, vision.health_kind) == (f"vision_engine[{VISION}]", 50052, "grpc")
    assert (gateway.name, gateway.port, gateway.health_kind) == ("api_gateway", 2000, "http")
    # A failed text model stops the stack; a failed vision model leaves text served (see Supervisor).
    assert (text.required, vision.required) == (True, False)
    assert text.argv[:3] == (sys.executable, "-m", "services.text_engine")
    assert vision.argv[:3] == (sys.executable, "-m", "services.vision_engine")
    assert gateway.argv[:3] == (sys.executable, "-m", "services.api_gateway")
    for spec in plan.processes:
        assert flag(spec.argv, "--models-config") == str(resolved_path)
    assert (flag(text.argv, "--model"), flag(text.argv, "--port"), flag(text.argv, "--host")) == (
        TEXT,
        "50051",
        "127.0.0.1",
    )
    assert (flag(vision.argv, "--model"), flag(vision.argv, "--device")) == (VISION, "cpu")
    assert "--ui-server" in gateway.argv and flag(gateway.argv, "--port") == "2000"
    assert [a for a in gateway.argv if "=" in a] == [f"{TEXT}=127.0.0.1:50051", f"{VISION}=127.0.0.1:50052"]
    assert plan.config.model(TEXT).endpoint == "127.0.0.1:50051"
    assert plan.config.model(VISION).endpoint == "127.0.0.1:50052"
    assert plan.skipped_vision is None
    write_config(plan.config, resolved_path)
    reread = load_models_config(resolved_path)
    assert reread == plan.config  # the children see exactly what was planned


def test_endpoints_in_the_file_are_overridden_and_text_models_come_first():
    config = parse_models_config(
        {
            "models": [
                {"name": "v", "hf_id": "o/v", "capabilities": {"vision_mode": "proxy"}, "endpoint": "elsewhere:1"},
                {"name": "a", "hf_id": "o/a"},
                {"name": "b", "hf_id": "o/b", "endpoint": "elsewhere:2"},
            ]
        }
    )
    plan = plan_stack(config, StackOptions(engine_port_base=6000, port=8000), "r.yaml")
    assert [(s.name, s.port, s.metrics_port) for s in plan.processes] == [
        ("text_engine[a]", 6000, 7000),
        ("text_engine[b]", 6001, 7001),
        ("vision_engine[v]", 6002, 7002),
        ("api_gateway", 8000, None),
    ]
    assert all("--metrics-port" in s.argv and "--drain-grace-secs" in s.argv for s in plan.processes[:3])
    assert {m.name: m.endpoint for m in plan.config.models} == {
        "v": "127.0.0.1:6002",
        "a": "127.0.0.1:6000",
        "b": "127.0.0.1:6001",
    }


def test_the_gateway_port_may_not_be_an_engine_metrics_port():
    config = parse_models_config({"models": [{"name": "a", "hf_id": "o/a"}]})
    with pytest.raises(ValueError, match="--port 7000 is also the port of a \\(metrics\\)"):
        plan_stack(config, StackOptions(engine_port_base=6000, port=7000), "r.yaml")


def test_without_a_vision_engine_the_vision_model_is_left_out(brief_file):
    plan = plan_stack(load_models_config(brief_file), StackOptions(), "r.yaml", vision_engine_installed=False)
    assert plan.skipped_vision == VISION
    assert [s.kind for s in plan.processes] == ["text_engine", "api_gateway"]
    assert plan.config.vision_model is None and [m.name for m in plan.config.models] == [TEXT]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (StackOptions(port=50051), "--port 50051 is also the port of ministral-3-3b-reasoning"),
        (StackOptions(port=0), "port 0 of --port"),
        (StackOptions(engine_port_base=65535), f"port 65536 of {VISION}"),
    ],
)
def test_unworkable_ports_are_refused(brief_file, options, message):
    with pytest.raises(ValueError, match=message):
        plan_stack(load_models_config(brief_file), options, "r.yaml")


def test_model_id_fallback_synthesizes_a_valid_config(tmp_path):
    config = config_from_model_ids("mistralai/Ministral-3-3B-Reasoning-2512", "Qwen/Qwen2-VL-7B-Instruct")
    # The brief's names (its requests say "ministral-3-3b-reasoning"), answering to the hub id and the plain
    # lower-cased repo name as well.
    text, vision = config.text_models[0], config.vision_model
    assert text.name == "ministral-3-3b-reasoning" and text.hf_id == "mistralai/Ministral-3-3B-Reasoning-2512"
    assert text.aliases == ["mistralai/Ministral-3-3B-Reasoning-2512", "ministral-3-3b-reasoning-2512"]
    assert config.model("ministral-3-3b-reasoning-2512") is text
    assert vision.name == "qwen2-vl-7b" and vision.is_vision_proxy and vision.hf_id == "Qwen/Qwen2-VL-7B-Instruct"
    assert vision.aliases == ["Qwen/Qwen2-VL-7B-Instruct", "qwen2-vl-7b-instruct"]
    local = tmp_path / "My-Model"
    local.mkdir()
    only_text = config_from_model_ids(str(local) + "/", None)
    assert only_text.text_models[0].name == "my-model" and only_text.text_models[0].local_path == str(local)
    assert only_text.vision_model is None
    plan = plan_stack(config, StackOptions(), "r.yaml")
    assert [s.port for s in plan.processes] == [50051, 50052, 2000]


def test_bad_config_exits_2_with_the_message(tmp_path, capsys):
    bad = tmp_path / "models.yaml"
    bad.write_text(yaml.safe_dump({"models": [{"name": "a", "hf_id": "x", "params": {"mem": "lots"}}]}))
    assert main(["serve", "--models-config", str(bad)]) == 2
    assert f"{bad}: models[0].params.mem: Input should be a valid integer" in capsys.readouterr().err
    assert main(["--models-config", str(bad)]) == 2  # the brief's form, no subcommand
    assert "models[0].params.mem" in capsys.readouterr().err
    assert main(["serve"]) == 2
    assert "nothing to serve" in capsys.readouterr().err
    assert main(["--models-config", str(bad), "--m", "org/model"]) == 2
    assert "either --models-config or --m" in capsys.readouterr().err
    assert main(["--m", "org/model", "--port", "50051"]) == 2
    assert "also the port of" in capsys.readouterr().err


def test_a_taken_port_fails_fast_naming_it(brief_file, capsys):
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        assert main(["--models-config", str(brief_file), "--port", str(port)]) == 1
    assert f"port(s) already in use: {port} (api_gateway)" in capsys.readouterr().err


def test_vision_model_flag_adds_a_proxy_vision_model_to_a_file_config(tmp_path, brief_file):
    text_only = tmp_path / "text.yaml"
    text_only.write_text(yaml.safe_dump({"models": [{"name": "t", "hf_id": "org/text"}]}))
    config = load_config(parse_args(["--models-config", str(text_only), "--vision-model", "Qwen/Qwen2-VL-7B-Instruct"]))
    assert config.vision_model.name == "qwen2-vl-7b" and config.vision_model.hf_id == "Qwen/Qwen2-VL-7B-Instruct"
    with pytest.raises(ConfigError, match="already has a vision model"):
        load_config(parse_args(["--models-config", str(brief_file), "--vision-model", "x/y"]))


def test_brief_command_line_without_subcommand_is_serve():
    args = parse_args(["--models-config", "models.yaml", "--port", "2000", "--ui-server"])
    assert (args.command, args.models_config, args.port, args.ui_server) == ("serve", "models.yaml", 2000, True)
    args = parse_args(["--m", "a/B", "--vision-model", "c/D", "--port", "2000"])
    assert (args.model_id, args.vision_model) == ("a/B", "c/D")


@pytest.mark.parametrize(
    ("argv", "environ", "expected"),
    [
        ([], {}, "INFO"),
        (["--log"], {}, "DEBUG"),
        (["--log"], {"RUST_LOG": "info"}, "INFO"),  # the brief's `RUST_LOG=info ... --log`
        ([], {"RUST_LOG": "warn", "LOG_LEVEL": "error"}, "ERROR"),
        (["--log-level", "debug"], {"LOG_LEVEL": "error", "RUST_LOG": "warn"}, "DEBUG"),
    ],
)
def test_log_level_precedence(argv, environ, expected):
    assert log_level(parse_args(argv), environ) == expected


def test_banner_says_where_to_point_clients(brief_file):
    config = load_models_config(brief_file)
    text = ready_banner(config, "0.0.0.0", 2000, ui_server=True)
    assert 'base_url="http://127.0.0.1:2000/v1"' in text and "OpenAI base_url : http://127.0.0.1:2000/v1" in text
    assert f"models          : {TEXT} (default: {TEXT})" in text and f"vision          : {VISION}" in text
    assert "web UI          : http://127.0.0.1:2000/" in text
    assert "curl -s http://127.0.0.1:2000/v1/chat/completions" in text and f'"model": "{TEXT}"' in text
    assert "http://[::1]:2000/v1" in ready_banner(config, "::1", 2000, ui_server=False)
    degraded = ready_banner(config, "0.0.0.0", 2000, ui_server=False, vision_error="ImportError: no accelerate")
    assert f"vision          : UNAVAILABLE: {VISION} failed to load (ImportError: no accelerate); text only" in degraded


def test_config_prints_what_serve_would_run_as_models_yaml(tmp_path, capsys):
    assert (
        main(
            [
                "config",
                "--m",
                "mistralai/Ministral-3-3B-Reasoning-2512",
                "--vision-model",
                "Qwen/Qwen2-VL-7B-Instruct",
                "--backend",
                "transformers",
            ]
        )
        == 0
    )
    printed = yaml.safe_load(capsys.readouterr().out)
    config = parse_models_config(printed, "printed")  # it is a models.yaml serve accepts as is
    assert [m.name for m in config.models] == ["ministral-3-3b-reasoning", "qwen2-vl-7b"]
    assert config == config_from_model_ids("mistralai/Ministral-3-3B-Reasoning-2512", "Qwen/Qwen2-VL-7B-Instruct")
    keyed = tmp_path / "models.yaml"
    keyed.write_text(
        yaml.safe_dump({"models": [{"name": "a", "hf_id": "x/a"}], "gateway": {"api_keys": ["sk-secret-one"]}})
    )
    assert main(["config", "--models-config", str(keyed)]) == 0
    out = capsys.readouterr().out
    assert "sk-secret-one" not in out and yaml.safe_load(out)["gateway"]["api_keys"] == ["<redacted>"]
    assert main(["config", "--m", "a/b", "--models-config", str(keyed)]) == 2
    assert "either --models-config or --m" in capsys.readouterr().err


@pytest.mark.parametrize(
    "models, message",
    [
        ([{"name": "a", "hf_id": "x/a", "aliases": ["b"]}, {"name": "b", "hf_id": "x/b"}], "duplicate model name"),
        ([{"name": "a", "hf_id": "x/a", "aliases": ["z"]}, {"name": "b", "hf_id": "x/b", "aliases": ["z"]}], "z"),
        ([{"name": "a", "hf_id": "x/a", "aliases": ["default"]}], "'default' is not a model name"),
    ],
)
def test_aliases_must_name_one_model_each(models, message):
    with pytest.raises(ValueError, match=message):
        parse_models_config({"models": models}, "test")
