"""Ask the hub once, quickly, whether a checkpoint can be fetched, and fail in one line when it cannot.

Left to itself, huggingface_hub retries a connection error five times per request with back-off (about 23 s),
and transformers makes several such requests: an engine without network access used to fail after ~55 s and
~70 log lines of "Retrying in 8s", ending in a message that names none of the fixes. One metadata request
(`model_info`, no retries) with a short timeout tells the cases apart before anything else talks to the hub:

- reachable and visible: the download goes ahead (hub_download.fetch_checkpoint);
- unreachable, but the checkpoint is in the hub cache: it loads from the cache, as with HF_HUB_OFFLINE=1;
- unreachable and not cached, not found, gated, or a missing revision: `ModelLoadError`, one line saying what,
  why and the fix (network or HF_ENDPOINT, HF_HUB_OFFLINE with a filled cache, HF_TOKEN, `local_path`).
"""

from __future__ import annotations

import logging
from pathlib import Path

from .hf_models import ModelLoadError

log = logging.getLogger(__name__)

PROBE_TIMEOUT_SECS = 8.0


def check_hub_source(repo: str, *, revision: str | None, field: str = "hf_id") -> None:
    """Return when `repo` can be loaded (fetched, or read from the cache offline); raise ModelLoadError otherwise.

    `field` is the models.yaml key the repo id comes from, named in the fix. An unreachable hub with the repo
    cached switches this process to offline mode (huggingface_hub's own switch, read on every request), so
    transformers reads the cache without retrying the network first."""
    from huggingface_hub import HfApi, constants, errors

    cached = cached_snapshot(repo, revision)
    if constants.HF_HUB_OFFLINE:
        if cached is None:
            raise ModelLoadError(
                f"{field} {repo} is not in the hub cache ({constants.HF_HUB_CACHE}) and HF_HUB_OFFLINE is set: "
                "download it once on a machine with hub access (huggingface-cli download, same HF_HOME), unset "
                "HF_HUB_OFFLINE, or set local_path to a checkpoint directory"
            )
        return
    try:
        HfApi().model_info(repo, revision=revision, timeout=PROBE_TIMEOUT_SECS)
        return
    except errors.GatedRepoError:
        why = "is a gated repo: accept its terms on the hub and set HF_TOKEN to a token of that account"
    except errors.RevisionNotFoundError:
        why = f"has no revision {revision!r}: check revision in models.yaml"
    except errors.RepositoryNotFoundError:
        why = f"is not a repo on {constants.ENDPOINT} (or it is private): check {field}, or set HF_TOKEN"
    except errors.HFValidationError as exc:
        why = f"is not a hub repo id ({exc}): check {field}, or set local_path for a local checkpoint"
    except Exception as exc:  # noqa: BLE001 - transport errors come from httpx, whose classes are not ours to name
        if cached is not None:
            log.info(
                "The hub (%s) cannot be reached (%s); loading %s from the hub cache at %s, as with HF_HUB_OFFLINE=1",
                constants.ENDPOINT,
                _short(exc),
                repo,
                cached,
            )
            constants.HF_HUB_OFFLINE = True
            return
        raise ModelLoadError(
            f"{field} {repo}: cannot reach the hub at {constants.ENDPOINT} ({_short(exc)}) and it is not in the hub "
            f"cache ({constants.HF_HUB_CACHE}): give this machine access to the hub (or a mirror through "
            "HF_ENDPOINT), fill the cache and set HF_HUB_OFFLINE=1, or set local_path to a checkpoint directory"
        ) from exc
    raise ModelLoadError(f"{field} {repo} {why}")


def cached_snapshot(repo: str, revision: str | None) -> Path | None:
    """The repo's cached snapshot directory at `revision` (a branch, a tag or a commit), or None.

    Read from the hub cache's documented layout (models--ORG--NAME/refs/REV holds the commit,
    snapshots/COMMIT the files) rather than by looking for one file: a GGUF-only repo has no config.json."""
    from huggingface_hub import constants

    folder = Path(constants.HF_HUB_CACHE) / f"models--{repo.replace('/', '--')}"
    ref = folder / "refs" / (revision or "main")
    commit = ref.read_text().strip() if ref.is_file() else (revision or "")
    snapshot = folder / "snapshots" / commit if commit else None
    return snapshot if snapshot is not None and snapshot.is_dir() and any(snapshot.iterdir()) else None


def _short(exc: BaseException) -> str:
    """'ConnectError: [Errno -2] Name or service not known', on one line."""
    text = " ".join(str(exc).split())[:200]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
