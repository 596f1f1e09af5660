"""`gguf_file` in models.yaml, and where each form of it points (services/common/gguf.py `locate`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.common.config import ConfigError, load_models_config, parse_models_config
from services.common.gguf import GgufLocation, locate


def test_a_lone_gguf_file_is_a_local_file_relative_to_the_yaml(tmp_path):
    (tmp_path / "conf").mkdir()
    path = tmp_path / "conf" / "models.yaml"
    path.write_text("models:\n  - name: smol\n    gguf_file: ../weights/smol.Q4_1.gguf\n")
    entry = load_models_config(path).model("smol")
    assert entry.gguf_file == str(tmp_path / "weights" / "smol.Q4_1.gguf")
    assert entry.source == entry.gguf_file  # what the engine logs and hands the loader
    assert locate(entry.source, entry.gguf_file) == GgufLocation(str(tmp_path / "weights"), "smol.Q4_1.gguf")


def test_beside_hf_id_or_local_path_it_is_a_file_name_there(tmp_path):
    config = parse_models_config(
        {
            "models": [
                {
                    "name": "hub",
                    "hf_id": "bartowski/SmolLM2-135M-Instruct-GGUF",
                    "gguf_file": "m.Q8_0.gguf",
                    "revision": "v1",
                },
                {"name": "dir", "local_path": str(tmp_path), "gguf_file": "m.gguf"},
            ]
        }
    )
    hub, local = config.model("hub"), config.model("dir")
    assert locate(hub.source, hub.gguf_file, hub.revision) == GgufLocation(
        "bartowski/SmolLM2-135M-Instruct-GGUF", "m.Q8_0.gguf", "v1", local=False
    )
    assert str(locate(hub.source, hub.gguf_file)) == "bartowski/SmolLM2-135M-Instruct-GGUF/m.Q8_0.gguf (hub)"
    assert locate(local.source, local.gguf_file) == GgufLocation(str(tmp_path), "m.gguf")


def test_gguf_file_is_refused_for_the_vision_model_and_cannot_be_empty():
    with pytest.raises(ConfigError, match=r"models\[1\]: gguf_file: GGUF files are supported for text-only models"):
        parse_models_config(
            {
                "models": [
                    {"name": "t", "hf_id": "x"},
                    {"name": "v", "gguf_file": "/m.gguf", "capabilities": {"vision_mode": "proxy"}},
                ]
            }
        )
    with pytest.raises(ConfigError, match=r"models\[0\].gguf_file"):
        parse_models_config({"models": [{"name": "t", "hf_id": "x", "gguf_file": ""}]})


def test_absolute_gguf_paths_are_kept(tmp_path):
    path = tmp_path / "models.yaml"
    path.write_text(f"models:\n  - name: smol\n    gguf_file: {tmp_path / 'a.gguf'}\n")
    assert load_models_config(path).model("smol").gguf_file == str(tmp_path / "a.gguf")
    assert Path(load_models_config(path).model("smol").source).name == "a.gguf"
