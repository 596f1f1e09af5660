"""One tokenizer backend whether or not mistral-common is installed (services/common/tokenizers.py).

Each case runs in a fresh interpreter, because transformers decides what is installed once per process:
- "without": this project's environment, which must not have mistral-common (it is no dependency: every
  release transformers 5.24 accepts, >= 1.11.5, requires numpy < 2.4 on Python <= 3.12, and numpy is
  pinned at 2.4.6);
- "with": the same environment plus the real mistral-common 1.13.1 on PYTHONPATH, from the side install
  in `.venv/mistral-common` that `make install` makes (`pip install --no-deps --target`).
In both, the engines' loader must give `TokenizersBackend` and the prompt ids the chat template defines,
default system prompt included; a plain `AutoTokenizer` gives `MistralCommonBackend` "with", which is the
behaviour the loader exists to avoid.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from services.common.tokenizers import load_tokenizer
from services.model_builder import build_all
from tests.support.processes import REPO_ROOT

MISTRAL_COMMON_SITE = REPO_ROOT / ".venv" / "mistral-common"
MESSAGES = {
    "no_system": [{"role": "user", "content": "What is two plus two?"}],
    "own_system": [{"role": "system", "content": "Answer in one word."}, {"role": "user", "content": "Hello"}],
}

PROBE = r"""
import importlib.util, json, sys
from transformers import AutoTokenizer
from services.common.tokenizers import load_tokenizer
path, messages = sys.argv[1], json.loads(sys.argv[2])
loaded, auto = load_tokenizer(path), AutoTokenizer.from_pretrained(path)
print(json.dumps({
    "mistral_common": importlib.util.find_spec("mistral_common") is not None,
    "loader_class": type(loaded).__name__,
    "auto_class": type(auto).__name__,
    "ids": {name: list(loaded.apply_chat_template(m, add_generation_prompt=True, return_dict=False))
            for name, m in messages.items()},
}))
"""


@pytest.fixture(scope="module")
def stand_ins() -> dict[str, Path]:
    return build_all(REPO_ROOT / "models" / "tiny", only={"text", "vision"})


def probe(path: Path, *, with_mistral_common: bool) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    paths = [str(REPO_ROOT)]
    if with_mistral_common:
        assert (MISTRAL_COMMON_SITE / "mistral_common").is_dir(), (
            f"{MISTRAL_COMMON_SITE} is missing: `make install` puts mistral-common 1.13.1 there"
        )
        paths.append(str(MISTRAL_COMMON_SITE))
    env["PYTHONPATH"] = os.pathsep.join(paths)
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(path), json.dumps(MESSAGES)],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def expected_ids(path: Path) -> dict[str, list[int]]:
    """The prompts' ids spelled out from the template's rules, piece by piece."""
    tok = load_tokenizer(str(path))
    text = lambda s: tok(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    bos, inst, end_inst, sys_, end_sys = tok.convert_tokens_to_ids(
        ["<s>", "[INST]", "[/INST]", "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]"]
    )
    default = (path / "SYSTEM_PROMPT.txt").read_text()
    # The default prompt holds [THINK]..[/THINK]: special tokens inside text are matched as such.
    return {
        "no_system": [bos, sys_, *text(default), end_sys, inst, *text("What is two plus two?"), end_inst],
        "own_system": [bos, sys_, *text("Answer in one word."), end_sys, inst, *text("Hello"), end_inst],
    }


@pytest.mark.parametrize("with_mistral_common", [False, True], ids=["without", "with"])
def test_tekken_checkpoint_loads_as_tokenizers_backend_with_the_templates_ids(stand_ins, with_mistral_common):
    result = probe(stand_ins["text"], with_mistral_common=with_mistral_common)
    assert result["mistral_common"] is with_mistral_common
    assert result["loader_class"] == "TokenizersBackend"
    # What an unpinned AutoTokenizer would do instead: switch backends with the environment.
    assert result["auto_class"] == ("MistralCommonBackend" if with_mistral_common else "TokenizersBackend")
    expected = expected_ids(stand_ins["text"])
    assert result["ids"] == expected
    think = load_tokenizer(str(stand_ins["text"])).convert_tokens_to_ids("[THINK]")
    assert think == 34 and think in expected["no_system"] and think not in expected["own_system"]


def test_a_tokenizer_config_naming_mistral_common_does_not_switch_the_backend(stand_ins, tmp_path):
    # AutoTokenizer obeys a tokenizer_config.json's class over `mistral_format=False`; the loader must not.
    path = tmp_path / "m"
    shutil.copytree(stand_ins["text"], path)
    (path / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "MistralCommonBackend"}))
    result = probe(path, with_mistral_common=True)
    assert (result["loader_class"], result["auto_class"]) == ("TokenizersBackend", "MistralCommonBackend")
    assert result["ids"] == expected_ids(stand_ins["text"])


@pytest.mark.parametrize("with_mistral_common", [False, True], ids=["without", "with"])
def test_the_vision_stand_in_keeps_its_tokenizer_class(stand_ins, with_mistral_common):
    result = probe(stand_ins["vision"], with_mistral_common=with_mistral_common)
    assert result["loader_class"] == result["auto_class"] == "Qwen2Tokenizer"
