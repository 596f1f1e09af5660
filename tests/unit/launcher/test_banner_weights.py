"""The ready banner says which models are real and which are offline stand-ins (gibberish by design)."""

from __future__ import annotations

import json

from services.common.config import parse_models_config
from services.common.hf_models import TINY_MARKER
from services.launcher.banner import ready_banner


def _checkpoint(path, stands_in_for: str):
    path.mkdir()
    (path / TINY_MARKER).write_text(json.dumps({"stands_in_for": stands_in_for}))
    return str(path)


def test_the_banner_names_the_real_model_and_the_stand_ins(tmp_path):
    config = parse_models_config(
        {
            "models": [
                {
                    "name": "ministral",
                    "local_path": _checkpoint(tmp_path / "m", "mistralai/Ministral-3-3B-Reasoning-2512"),
                },
                {"name": "smollm2", "local_path": _checkpoint(tmp_path / "s", "")},  # the converted real model's marker
                {
                    "name": "qwen",
                    "local_path": _checkpoint(tmp_path / "q", "Qwen/Qwen2-VL-7B-Instruct"),
                    "capabilities": {"vision_mode": "proxy"},
                },
            ],
            "default_model": "smollm2",
        }
    )
    text = ready_banner(config, "127.0.0.1", 2000, ui_server=True)
    assert (
        "  weights         : smollm2: real weights; ministral, qwen: tiny random-weight stand-ins (gibberish by design)"
        in text
    )
    assert '"model": "smollm2"' in text  # the curl to paste asks the real model


def test_no_weights_line_when_nothing_is_a_stand_in():
    config = parse_models_config({"models": [{"name": "a", "hf_id": "mistralai/Ministral-3-3B-Reasoning-2512"}]})
    assert "weights " not in ready_banner(config, "127.0.0.1", 2000, ui_server=False)
