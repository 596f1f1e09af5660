"""Write a checkpoint directory atomically and mark it as an offline tiny stand-in.

A build writes into a temporary sibling directory and renames it into place, so a killed build never
leaves a half checkpoint that would later load (or fail) mysteriously. The marker file is written last,
inside the temporary directory: a checkpoint is complete exactly when its marker exists and names the
current `BUILDER_VERSION` (bumped whenever the builder's output changes, so stale checkpoints are
rebuilt instead of silently served). An exclusive lock per checkpoint lets concurrent builders (two test
sessions, `make` and pytest) share one output directory: the second waits, then finds the work done.
"""

from __future__ import annotations

import fcntl
import json
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from services.common.hf_models import TINY_MARKER, read_tiny_marker

MARKER = TINY_MARKER
# 9: Qwen2-VL's 32-dim heads (vLLM's CPU attention); 10: Qwen2.5-VL's and SmolVLM's; 11: Ministral-3's, and its
# pixtral tower and projector under their native names in consolidated.safetensors and params.json; 12: the image
# section of Ministral-3's tekken.json
BUILDER_VERSION = 12


def is_tiny_stand_in(path: str | Path) -> str | None:
    """The hub id a built checkpoint stands in for, or None for anything else."""
    marker = read_tiny_marker(path)
    return marker.get("stands_in_for") if marker else None


def is_complete(path: str | Path) -> bool:
    """True when `path` holds a checkpoint built by this version of the builder."""
    marker = read_tiny_marker(path)
    return marker is not None and marker.get("builder_version") == BUILDER_VERSION


@contextmanager
def _exclusive(target: Path) -> Iterator[None]:
    lock_path = target.parent / f".{target.name}.lock"
    with open(lock_path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, also if this process dies
        yield


def build_atomically(target: Path, stands_in_for: str, write: Callable[[Path], dict], *, force: bool = False) -> Path:
    """Run `write(tmpdir)` unless `target` is complete, then move the result to `target`.

    `write` fills the directory and returns extra marker fields (e.g. the parameter count).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive(target):
        if is_complete(target) and not force:
            return target
        for kind in ("building", "old"):
            for stale in target.parent.glob(f".{target.name}.{kind}-*"):
                # Left by a builder killed mid-way; under the lock no other builder can be using them.
                shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.building-", dir=target.parent))
        tmp.chmod(0o755)  # mkdtemp's 0700 would hide the checkpoint from other users (e.g. a container's)
        try:
            details = write(tmp)
            marker = {
                "tiny_offline_stand_in": True,
                "stands_in_for": stands_in_for,
                "random_weights": True,
                "builder_version": BUILDER_VERSION,
                **details,
            }
            (tmp / MARKER).write_text(json.dumps(marker, indent=2) + "\n")
            for file in tmp.iterdir():
                file.chmod(0o644)  # safetensors are written 0600; readable by all, like the directory
            _replace(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)  # only left when `write` failed
    return target


def _replace(new: Path, target: Path) -> None:
    # Two renames instead of rmtree-then-rename: the old checkpoint is gone for an instant only, and a crash
    # between them leaves nothing at `target` (the next build makes it), never a half checkpoint.
    old = None
    if target.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
        target.rename(old / target.name)
    new.rename(target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
