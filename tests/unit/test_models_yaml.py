"""The test harness's models.yaml builder (tests/support/models_yaml.py): its presets write what the tests
always ran on, its files parse with the product's own loader, and a bad config fails where it is written."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from services.common.config import ConfigError, load_models_config
from tests.support.models_yaml import BENCH_MODEL, TEXT_MODEL, VISION_MODEL, ModelsYaml, bench, tiny

CHECKPOINTS = {"text": Path("/m/text"), "vision": Path("/m/vision")}


def test_tiny_preset_is_the_stand_in_config(tmp_path):
    path = tiny(
        CHECKPOINTS,
        vision=True,
        text_params={"max_num_seqs": 4},
        endpoints={TEXT_MODEL: "127.0.0.1:1", VISION_MODEL: "127.0.0.1:2"},
    ).write(tmp_path / "m.yaml")
    assert yaml.safe_load(path.read_text()) == {
        "models": [
            {
                "name": TEXT_MODEL,
                "local_path": "/m/text",
                "capabilities": {"vision_mode": "disabled"},
                "params": {"mem": 16, "dtype": "f32", "max_num_seqs": 4, "prefill_chunk_size": 512},
                "endpoint": "127.0.0.1:1",
            },
            {
                "name": VISION_MODEL,
                "local_path": "/m/vision",
                "capabilities": {
                    "vision_mode": "proxy",
                    "vision_proxy": {"prompt_template": "Describe this image in detail:"},
                },
                "params": {"mem": 64, "dtype": "f32", "max_num_seqs": 4},
                "endpoint": "127.0.0.1:2",
            },
        ],
        "idle_unload_secs": 300,
    }
    config = load_models_config(path)
    assert config.vision_model.name == VISION_MODEL and config.model(TEXT_MODEL).params.max_num_seqs == 4


def test_bench_preset_and_gateway_settings(tmp_path):
    path = bench(Path("/m/bench"), params={"max_num_seqs": 2}, idle_unload_secs=3).gateway(request_timeout_secs=5)
    data = yaml.safe_load(path.write(tmp_path / "m.yaml").read_text())
    assert data == {
        "models": [
            {
                "name": BENCH_MODEL,
                "local_path": "/m/bench",
                "idle_unload_secs": 3,
                "params": {"mem": 16, "dtype": "f32", "max_num_seqs": 2, "prefill_chunk_size": 256},
            }
        ],
        "gateway": {"request_timeout_secs": 5},
    }


def test_copy_model_keeps_the_template_but_for_name_and_overrides():
    config = tiny(CHECKPOINTS).copy_model(TEXT_MODEL, "other", local_path=Path("/m/other"), endpoint="127.0.0.1:3")
    original, other = config.to_dict()["models"]
    assert other == {**original, "name": "other", "local_path": "/m/other", "endpoint": "127.0.0.1:3"}
    other["params"]["mem"] = 1  # a deep copy: editing one entry leaves the builder alone
    assert config.entry("other")["params"]["mem"] == 16


def test_a_bad_config_fails_at_write_unless_asked_not_to(tmp_path):
    bad = ModelsYaml().model("x", hf_id="y", params={"mem": "lots"})
    with pytest.raises(ConfigError, match="mem"):
        bad.write(tmp_path / "bad.yaml")
    assert not (tmp_path / "bad.yaml").exists()
    assert yaml.safe_load(bad.write(tmp_path / "bad.yaml", validate=False).read_text())["models"][0]["params"] == {
        "mem": "lots"
    }
