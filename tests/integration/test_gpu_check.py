"""`make gpu-check` runs here, on the CPU at the stand-ins' sizes, so the script a GPU machine runs is known to work.

The whole script in a subprocess, as `make gpu-check` starts it: the small checkpoints built by
services/model_builder/real_size.py, the stack under the real launcher, the load at 1/16/64 streams, the
captions, the idle unload, `transformers serve` side by side. Only the CUDA memory query is CPU-less; it
must say so instead of failing. Assertions are on the JSON summary the script writes and on what it prints.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors import safe_open
from transformers import AutoConfig

from services.model_builder.real_size import SMALL, checkpoint_dirs
from tests.support.processes import REPO_ROOT

pytestmark = [pytest.mark.needs_models, pytest.mark.e2e]

RUN_LIMIT = 280  # s: the script's own CPU budget is 240 s; it took ~45 s on 2 cores


@pytest.fixture(scope="module")
def gpu_check(tmp_path_factory) -> tuple[dict, str, float]:
    work = tmp_path_factory.mktemp("gpu-check")
    out = work / "summary.json"
    started = time.monotonic()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.gpu_check",
            "--device",
            "cpu",
            "--small",
            "--work",
            str(work),
            "--out",
            str(out),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=RUN_LIMIT,
    )
    elapsed = time.monotonic() - started
    assert done.returncode == 0, f"gpu_check exited {done.returncode}:\n{done.stdout[-6000:]}\n{done.stderr[-4000:]}"
    return json.loads(out.read_text()), done.stdout, elapsed


def test_every_phase_ran_within_its_limit_and_the_run_within_its_budget(gpu_check):
    summary, stdout, _ = gpu_check
    assert summary["ok"] and summary["failures"] == []
    expected = [
        "bootstrap",
        "build",
        "stack start",
        "text: proxyvision",
        "captions",
        "idle unload",
        "transformers serve start",
        "text: transformers serve",
    ]
    assert list(summary["phases"]) == expected
    for name, record in summary["phases"].items():
        assert record["ok"], name
        assert 0 <= record["seconds"] <= record["limit_s"], name
        assert f"== {name}: " in stdout  # elapsed per phase is printed
    assert summary["total_s"] <= summary["budget_s"]
    assert "OK  (summary: " in stdout


def test_versions_are_checked_and_printed(gpu_check):
    summary, stdout, _ = gpu_check
    machine = summary["machine"]
    assert machine["torch"] and machine["python"] and machine["numpy"]
    assert machine["bootstrap"].startswith("not needed")  # this venv has every pin
    assert summary["packages"]["transformers"] and summary["packages"]["openai"]
    assert f"torch {machine['torch']}" in stdout and f"transformers {summary['packages']['transformers']}" in stdout


def test_both_contenders_generate_every_token_at_1_16_and_64_streams(gpu_check):
    summary, stdout, _ = gpu_check
    max_tokens = summary["profile"]["max_tokens"]
    for contender in ("proxyvision", "transformers_serve"):
        rows = summary["text"][contender]
        assert sorted(rows, key=int) == ["1", "16", "64"]
        for level, row in rows.items():
            # The builder quiets end-of-sequence rows, so no stream stops early and tok/s compares like with like.
            assert row["tokens"] == row["expected_tokens"] == int(level) * max_tokens, (contender, level)
            assert row["tok_per_s"] > 0 and 0 < row["ttft_p50_ms"] <= row["ttft_p95_ms"]
            assert row["wall_s"] * 1000 >= row["ttft_p50_ms"]
    assert set(summary["ratios"]) == {"1", "16", "64"}
    assert "ProxyVision          64 streams" in stdout and "transformers serve   64 streams" in stdout


def test_caption_latency_for_one_and_four_images(gpu_check):
    captions = gpu_check[0]["captions"]
    assert captions["one_image_ms"] > 0 and captions["four_images_ms"] > 0
    assert captions["cached_ms"] < captions["first_ms"]  # a repeat is served from the caption cache
    assert captions["e2e_ttft_ms"] >= captions["vision_ms"] > 0


def test_the_idle_unload_is_seen_and_gpu_memory_says_na_on_cpu(gpu_check):
    summary, stdout, _ = gpu_check
    memory = summary["memory"]
    assert memory["unload_ok"] and memory["gpu"] == "n/a on cpu"
    assert memory["states_before"] == {"text": "MODEL_STATE_READY", "vision": "MODEL_STATE_READY"}
    assert set(memory["seconds_until_unloaded"]) == {"text", "vision"}
    assert memory["before"]["text_engine_rss_mib"] > memory["after"]["text_engine_rss_mib"]  # the weights left
    assert "GPU memory: n/a on cpu" in stdout


def test_the_stack_served_the_small_checkpoints_in_bf16_on_the_cpu(gpu_check):
    summary = gpu_check[0]
    engines = summary["engines"]
    assert engines["text"]["device"] == engines["vision"]["device"] == "cpu"
    # The text engine names torch's dtype, the vision engine models.yaml's spelling: both are bf16.
    assert {engines["text"]["dtype"], engines["vision"]["dtype"]} <= {"bfloat16", "bf16"}
    assert engines["text"]["stand_in_for"] == "mistralai/Ministral-3-3B-Reasoning-2512"
    assert engines["vision"]["stand_in_for"] == "Qwen/Qwen2-VL-7B-Instruct"
    for kind, path in checkpoint_dirs(Path("models"), SMALL).items():
        assert Path(summary["checkpoints"][kind]).name == path.name


def test_the_checkpoints_carry_the_configured_sizes_and_the_hub_layouts(gpu_check):
    paths = gpu_check[0]["checkpoints"]
    text = AutoConfig.from_pretrained(paths["text"])
    assert text.architectures == ["Mistral3ForConditionalGeneration"]
    assert text.text_config.vocab_size == SMALL.ministral3.vocab and text.text_config.num_hidden_layers == 2
    text_only = AutoConfig.from_pretrained(paths["text_only"])
    assert text_only.architectures == ["Ministral3ForCausalLM"] and text_only.tie_word_embeddings
    vision = json.loads((REPO_ROOT / paths["vision"] / "config.json").read_text())
    assert vision["vocab_size"] == SMALL.qwen2_vl.vocab and vision["rope_scaling"]["type"] == "mrope"
    index = json.loads((REPO_ROOT / paths["vision"] / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) == SMALL.qwen2_vl.shards
    with safe_open(f"{paths['vision']}/{next(iter(index['weight_map'].values()))}", "pt") as weights:
        names = list(weights.keys())
    assert all(name.startswith(("model.", "visual.", "lm_head.")) for name in names)  # the 7B repo's names
