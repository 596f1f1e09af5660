from pathlib import Path

import pytest

from services.common.config import ConfigError, load_models_config, parse_models_config
from services.common.env import first_set, parse_endpoints
from services.common.logging_setup import normalize_level

BRIEF_YAML = Path(__file__).parent.parent.parent / "fixtures" / "brief_models.yaml"


def test_brief_file_loads_as_written():
    config = load_models_config(BRIEF_YAML)
    assert [m.name for m in config.models] == ["ministral-3-3b-reasoning", "qwen2-vl-7b"]
    text = config.model("ministral-3-3b-reasoning")
    assert text.params.mem == 2048 and text.params.dtype == "bf16" and text.params.max_num_seqs == 16
    assert config.vision_model.vision_proxy.prompt_template == "Describe this image in detail:"
    assert config.idle_unload_secs == 300
    assert config.default_model_name == "ministral-3-3b-reasoning"


def errors_of(data):
    with pytest.raises(ConfigError) as info:
        parse_models_config(data, "m.yaml")
    return str(info.value)


def test_unknown_key_names_file_and_path():
    assert "m.yaml: models[0].params.memory: unknown key" in errors_of(
        {"models": [{"name": "a", "hf_id": "x", "params": {"memory": 1}}]}
    )


def test_wrong_type_names_path():
    assert "models[0].params.mem:" in errors_of({"models": [{"name": "a", "hf_id": "x", "params": {"mem": "lots"}}]})


def test_duplicate_names_and_missing_source_and_bad_default():
    assert "duplicate model name(s) or alias(es): a" in errors_of(
        {"models": [{"name": "a", "hf_id": "x"}, {"name": "a", "hf_id": "y"}]}
    )
    assert "models[0]: needs either hf_id or local_path" in errors_of({"models": [{"name": "a"}]})
    assert "default_model 'b' is not one of the models" in errors_of(
        {"models": [{"name": "a", "hf_id": "x"}], "default_model": "b"}
    )


def test_relative_local_path_is_relative_to_the_file(tmp_path):
    (tmp_path / "cfg").mkdir()
    path = tmp_path / "cfg" / "models.yaml"
    path.write_text("models:\n  - name: a\n    local_path: ../weights/a\n")
    assert load_models_config(path).model("a").local_path == str(tmp_path / "weights" / "a")


def test_unreadable_and_invalid_yaml(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_models_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("models: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_models_config(bad)


def test_precedence_cli_env_file_default():
    env = {"PROXYVISION_DEVICE": "cuda"}
    assert first_set("cpu", "PROXYVISION_DEVICE", "auto", "x", environ=env) == "cpu"
    assert first_set(None, "PROXYVISION_DEVICE", "auto", "x", environ=env) == "cuda"
    assert first_set(None, "PROXYVISION_DEVICE", "auto", "x", environ={}) == "auto"
    assert first_set(None, "PROXYVISION_DEVICE", None, "x", environ={}) == "x"


def test_endpoints_and_log_levels():
    assert parse_endpoints("a=127.0.0.1:1, b=dns:///svc:2") == {"a": "127.0.0.1:1", "b": "dns:///svc:2"}
    # gRPC address lists keep their commas
    assert parse_endpoints("a=ipv4:10.0.0.1:5,10.0.0.2:5,b=h:1") == {"a": "ipv4:10.0.0.1:5,10.0.0.2:5", "b": "h:1"}
    with pytest.raises(ValueError):
        parse_endpoints("nonsense")
    assert normalize_level("info") == "INFO"
    assert normalize_level("warn") == "WARNING"
    assert normalize_level("proxyvision=debug,hyper=info") == "DEBUG"
