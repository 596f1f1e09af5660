"""Hub download progress: log lines with the file and bytes so far, and the status GetModelInfo shows.

No hub is reachable here, so the downloads are fakes that drive the progress class exactly as
huggingface_hub does: through its own progress-bar helpers for plain HTTP and for Xet downloads."""

from __future__ import annotations

import logging

from huggingface_hub.utils._xet_progress_reporting import XetDownloadProgressReporter
from huggingface_hub.utils.tqdm import _get_progress_bar_context

from services.common import hub_download
from services.common.hub_download import DownloadProgress, fetch_checkpoint, files_to_fetch, human_bytes

GB = 1_000_000_000
# The brief's text model repo as the hub lists it.
MINISTRAL_FILES = [
    "README.md",
    ".gitattributes",
    "SYSTEM_PROMPT.txt",
    "chat_template.jinja",
    "config.json",
    "consolidated.safetensors",
    "generation_config.json",
    "model.safetensors",
    "params.json",
    "processor_config.json",
    "tekken.json",
    "tokenizer_config.json",
]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def http_download(sizes: dict[str, int], clock: Clock, chunk: int):
    """A fake hf_hub_download: opens the bar the way huggingface_hub's http_get does, feeds it chunks."""
    fetched = []

    def download(repo, filename, *, revision, tqdm_class):
        fetched.append((repo, filename, revision))
        with _get_progress_bar_context(
            desc=filename,
            log_level=logging.INFO,
            total=sizes[filename],
            initial=0,
            name="huggingface_hub.http_get",
            tqdm_class=tqdm_class,
        ) as bar:
            for start in range(0, sizes[filename], chunk):
                clock.now += 1.0
                n = min(chunk, sizes[filename] - start)
                bar.update(n)
                bar.update_transfer(n)  # http_get calls it when the bar has it
        return f"/cache/{filename}"

    return download, fetched


def test_only_the_files_transformers_reads_are_fetched():
    assert files_to_fetch(MINISTRAL_FILES) == [
        "SYSTEM_PROMPT.txt",
        "chat_template.jinja",
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "processor_config.json",
        "tekken.json",
        "tokenizer_config.json",
    ]
    assert files_to_fetch(["config.json", "pytorch_model.bin"]) == ["config.json", "pytorch_model.bin"]
    assert files_to_fetch(["model.safetensors", "pytorch_model.bin"]) == ["model.safetensors"]


def reachable(repo, *, revision, field):
    """check_hub_source's answer when the hub has the repo (test_hub_access.py tests the real one)."""


def test_a_download_logs_periodically_and_reports_its_status(monkeypatch, caplog):
    clock = Clock()
    monkeypatch.setattr(DownloadProgress, "clock", staticmethod(clock))
    statuses: list[str] = []
    sizes = {"config.json": 1_000, "model.safetensors": 30 * 250_000_000}  # 7.5 GB in 30 chunks, 1 s each
    download, fetched = http_download(sizes, clock, 250_000_000)
    with caplog.at_level(logging.INFO, logger="services.common.hub_download"):
        fetch_checkpoint(
            "org/model",
            revision="main",
            report=statuses.append,
            check=reachable,
            list_files=lambda repo, revision: list(sizes),
            download=download,
        )
    assert fetched == [("org/model", "config.json", "main"), ("org/model", "model.safetensors", "main")]
    assert statuses[0] == "listing the files of org/model"
    assert (
        "downloading model.safetensors 1.2/7.5 GB" in statuses
        and statuses[-1] == "downloading model.safetensors 7.5/7.5 GB"
    )
    lines = [r.getMessage() for r in caplog.records]
    # One line every 10 s (10 of the 30 chunks), one when each file is done: not one per chunk.
    assert lines == [
        "Downloaded org/model: config.json 1.0 kB (file 1 of 2)",
        "Downloading org/model: model.safetensors 2.5/7.5 GB (33%) (file 2 of 2)",
        "Downloading org/model: model.safetensors 5.0/7.5 GB (67%) (file 2 of 2)",
        "Downloading org/model: model.safetensors 7.5/7.5 GB (100%) (file 2 of 2)",
        "Downloaded org/model: model.safetensors 7.5 GB (file 2 of 2)",
    ]


def test_a_xet_download_uses_one_bar_named_after_the_file(caplog):
    statuses: list[str] = []
    cls = DownloadProgress.bound("org/model", "file 1 of 1", statuses.append)

    class Report:  # what hf_xet passes to the progress callback
        total_bytes = 6 * GB
        total_bytes_completed = 3 * GB
        total_transfer_bytes_completed = 3 * GB
        total_bytes_completion_rate = None
        total_transfer_bytes_completion_rate = None

    with (
        caplog.at_level(logging.INFO, logger="services.common.hub_download"),
        XetDownloadProgressReporter(
            reconstruction_desc="model.safetensors: reconstructing file",
            transfer_desc="model.safetensors: downloading bytes",
            total=6 * GB,
            log_level=logging.INFO,
            tqdm_class=cls,
        ) as progress,
    ):
        progress.update_progress(Report())
    assert progress.transfer_bar is progress.reconstruction_bar  # one bar: one set of lines
    assert statuses == ["downloading model.safetensors 0 B/6.0 GB", "downloading model.safetensors 3.0/6.0 GB"]
    assert [r.getMessage() for r in caplog.records] == ["Downloaded org/model: model.safetensors 3.0 GB (file 1 of 1)"]


def test_local_directories_and_offline_mode_fetch_nothing(tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("must not be called")

    fetch_checkpoint(str(tmp_path), revision=None, report=boom, check=boom, list_files=boom, download=boom)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    fetch_checkpoint("org/model", revision=None, report=boom, check=reachable, list_files=boom, download=boom)


def test_a_failed_prefetch_is_a_warning_and_leaves_the_load_to_transformers(caplog):
    def unreachable(repo, revision):
        raise OSError("[Errno -3] Temporary failure in name resolution")

    fetch_checkpoint(
        "org/model", revision=None, report=lambda s: None, check=reachable, list_files=unreachable, download=None
    )
    assert "Could not pre-fetch org/model (OSError: [Errno -3] Temporary failure in name resolution)" in caplog.text


def test_human_bytes():
    assert [human_bytes(n) for n in (12, 12_345, 350_000_000, 7_500_000_000)] == [
        "12 B",
        "12.3 kB",
        "350.0 MB",
        "7.5 GB",
    ]
    assert hub_download.LOG_EVERY_SECS == 10.0
