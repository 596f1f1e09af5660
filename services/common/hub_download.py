"""Fetch a hub checkpoint before transformers opens it, so the download shows in the log and in GetModelInfo.

transformers' `from_pretrained` downloads through huggingface_hub with tqdm bars: on a non-tty (a
launcher's child, a pod) they are either off or a stream of carriage returns, and nothing tells
GetModelInfo how far a 7.5 GB download got. So the engines call `fetch_checkpoint` first (in `fetch_weights`): it
lists the repo, downloads the files transformers will read one by one with `DownloadProgress` as the tqdm class
(a periodic log line with the file and bytes so far, and a status for GetModelInfo), and leaves them in
the ordinary hub cache, where `from_pretrained` then finds them. Whether the checkpoint can be had at all
is asked first, once (hub_access.py: no network and not cached, not found, gated: one line and no retries).
A download failing after that only skips the pre-fetch: `from_pretrained` then tries itself and reports
the real error.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from pathlib import Path

from .config import ModelEntry
from .hf_models import check_local_source
from .hub_access import check_hub_source

log = logging.getLogger(__name__)

LOG_EVERY_SECS = 10.0
# Files of a hub repo that transformers never reads: Mistral's native checkpoint beside the HF one
# (`consolidated.safetensors` is as big as the model), other frameworks' weights, docs and images.
_SKIPPED = re.compile(
    r"(^|/)(consolidated[^/]*|params\.json|original/.*|.*\.(gguf|onnx|msgpack|h5|ot|md|png|jpe?g|gif)|"
    r"flax_model[^/]*|tf_model[^/]*|rust_model[^/]*|\.gitattributes)$"
)
_TORCH_PICKLES = re.compile(r"\.(bin|pth|pt)$")

Report = Callable[[str], None]


def human_bytes(n: float) -> str:
    """1.2 GB, 350 MB, 12 kB (decimal units, as the hub shows sizes)."""
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


class DownloadProgress:
    """A tqdm stand-in for huggingface_hub's downloads: logs every `LOG_EVERY_SECS` and at the end, and
    reports "downloading <file> <done>/<total>" through `report`.

    huggingface_hub calls a tqdm class that is not a tqdm subclass with keyword arguments only (`desc`,
    `total`, `initial`, ...) and uses `update`, `set_postfix_str`, `close` and the context manager; an
    `update_transfer` attribute makes its Xet downloads use one bar (bytes written) instead of two, which
    then also calls `set_transfer_postfix_str`.
    Subclass per download with `bound(...)` to give it the repo, the file count and the reporter."""

    repo = ""
    files = ""  # "file 2 of 7"
    report: Report = staticmethod(lambda status: None)
    clock: Callable[[], float] = staticmethod(time.monotonic)

    def __init__(
        self, *_args, desc: str | None = None, total: float | None = None, initial: float = 0, **_kwargs
    ) -> None:
        # Xet names its bar "model.safetensors: reconstructing file": the file is what an operator needs.
        self.desc = (desc or "").split(": ")[0]
        self.total = total
        self.n = initial or 0
        self._last_log = self.clock()
        self._closed = False
        self._publish()

    @classmethod
    def bound(cls, repo: str, files: str, report: Report) -> type[DownloadProgress]:
        """A subclass that knows which download it reports (huggingface_hub instantiates the class itself)."""
        return type("BoundDownloadProgress", (cls,), {"repo": repo, "files": files, "report": staticmethod(report)})

    def text(self) -> str:
        """'model.safetensors 1.2/7.5 GB' (or '1.2 GB' while the total is unknown)."""
        done = human_bytes(self.n)
        if not self.total:
            return f"{self.desc} {done}"
        total = human_bytes(self.total)
        if done.split()[-1] == total.split()[-1]:
            done = done.split()[0]  # "1.2/7.5 GB" rather than "1.2 GB/7.5 GB"
        return f"{self.desc} {done}/{total}"

    def _publish(self) -> None:
        self.report(f"downloading {self.text()}")

    def update(self, n: float | None = 1) -> None:
        """Bytes received (huggingface_hub calls this per chunk)."""
        self.n += n or 0
        self._publish()
        now = self.clock()
        if now - self._last_log >= LOG_EVERY_SECS:
            self._last_log = now
            log.info("Downloading %s: %s%s (%s)", self.repo, self.text(), self._percent(), self.files)

    def _percent(self) -> str:
        return f" ({100 * self.n / self.total:.0f}%)" if self.total else ""

    def update_transfer(self, n: float | None = 1) -> None:
        """Network bytes of a Xet download: `update` counts the bytes written, which is what is done."""

    def set_postfix_str(self, *_args, **_kwargs) -> None:
        """Speed postfixes are not logged."""

    set_transfer_postfix_str = set_postfix_str  # Xet's aggregated-bar variant

    def set_description(self, desc: str | None = None, *_args, **_kwargs) -> None:
        self.desc = (desc or self.desc).split(": ")[0]

    set_description_str = set_description

    def refresh(self, *_args, **_kwargs) -> None:
        """Nothing is drawn."""

    def close(self) -> None:
        """The file is done: one line saying so."""
        if not self._closed:
            self._closed = True
            log.info("Downloaded %s: %s %s (%s)", self.repo, self.desc, human_bytes(self.n), self.files)

    def __enter__(self) -> DownloadProgress:
        return self

    def __exit__(self, *_exc) -> None:
        self.close()


def files_to_fetch(repo_files: list[str]) -> list[str]:
    """The files of a repo that transformers reads: safetensors rather than pickles when both exist."""
    wanted = [f for f in repo_files if not _SKIPPED.search(f)]
    if any(f.endswith(".safetensors") for f in wanted):
        wanted = [f for f in wanted if not _TORCH_PICKLES.search(f)]
    return sorted(wanted)


def fetch_checkpoint(
    source: str,
    *,
    revision: str | None,
    report: Report,
    field: str = "hf_id",
    check=check_hub_source,
    list_files=None,
    download=None,
) -> None:
    """Download a hub checkpoint into the hub cache with progress; a no-op for a local directory.

    A checkpoint the hub cannot give (no network and not cached, not found, gated) raises ModelLoadError at
    once, naming `field` (hub_access.check_hub_source).

    `check`, `list_files(repo, revision=)` and `download(repo, filename, revision=, tqdm_class=)` default to
    check_hub_source and huggingface_hub's `list_repo_files` and `hf_hub_download` (tests pass fakes)."""
    if Path(source).exists():
        return
    check(source, revision=revision, field=field)
    from huggingface_hub import constants, hf_hub_download, list_repo_files

    if constants.HF_HUB_OFFLINE:
        return  # cached (check_hub_source said so): from_pretrained reads the cache
    list_files, download = list_files or list_repo_files, download or hf_hub_download
    report(f"listing the files of {source}")
    try:
        files = files_to_fetch(list(list_files(source, revision=revision)))
        for i, name in enumerate(files, 1):
            download(
                source,
                name,
                revision=revision,
                tqdm_class=DownloadProgress.bound(source, f"file {i} of {len(files)}", report),
            )
    except Exception as exc:  # noqa: BLE001 - from_pretrained retries and raises the error that matters
        log.warning(
            "Could not pre-fetch %s (%s: %s); transformers will download it itself",
            source,
            type(exc).__name__,
            " ".join(str(exc).split())[:300],
        )


def fetch_weights(entry: ModelEntry, report: Report) -> None:
    """The first steps of both engines' loads: a local checkpoint must be there (`check_local_source`), a hub one
    is fetched into the cache with its progress through `report`; then `report` says the weights load."""
    check_local_source(entry)
    fetch_checkpoint(entry.source, revision=entry.revision, report=report, field=entry.source_field)
    report(f"loading weights from {entry.source}")
