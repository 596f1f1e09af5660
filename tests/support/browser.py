"""Debian's Chromium driven by Playwright, for the web UI tests: how to launch it, and a watch on
everything a page requests, logs and throws, so a test can assert the page stayed on its origin and quiet."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from playwright.sync_api import Browser, ConsoleMessage, Dialog, Page, sync_playwright

from tests.support.processes import REPO_ROOT

# Debian's package (.ci/run installs it); Playwright's own browser downloads are never used.
CHROMIUM = "/usr/bin/chromium"
# Headless, and nothing that would reach the network on its own (component updates, sync, QUIC probes).
LAUNCH_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-quic",
    "--no-first-run",
    "--disable-sync",
]
ARTIFACTS = REPO_ROOT / "test-artifacts" / "ui"


def chromium_path() -> str:
    """The Chromium binary; a clear failure (not a skip) when it is missing."""
    path = CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium")
    if path is None:
        raise AssertionError(
            "Debian's Chromium is needed for the web UI tests: apt-get install chromium (.ci/run does)"
        )
    return path


@contextmanager
def chromium() -> Iterator[Browser]:
    """A headless Chromium for the duration of the block."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path(), args=LAUNCH_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


@dataclass
class PageWatch:
    """What one page did: every request URL, console errors, uncaught exceptions and dialogs (accepted,
    so a confirm() goes ahead; an alert() from injected script would show up here)."""

    requests: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)

    @classmethod
    def attach(cls, page: Page) -> PageWatch:
        watch = cls()
        page.on("request", lambda request: watch.requests.append(request.url))
        page.on("console", watch._console)
        page.on("pageerror", lambda error: watch.page_errors.append(str(error)))
        page.on("dialog", watch._dialog)
        return watch

    def _console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.console_errors.append(message.text)

    def _dialog(self, dialog: Dialog) -> None:
        self.dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.accept()

    def off_origin(self, *allowed: str) -> list[str]:
        """Requests that went anywhere but the `allowed` origins (data: and blob: URLs never leave the page)."""
        return [url for url in self.requests if not url.startswith(("data:", "blob:")) and origin(url) not in allowed]

    def assert_quiet(self, *expected_failures: str) -> None:
        """No uncaught exception, and no console error but the failed loads a test caused on purpose
        (Chromium logs each HTTP error status of a fetch as "Failed to load resource: ... status of N")."""
        assert self.page_errors == []
        unexpected = [
            text for text in self.console_errors if not any(f"status of {code}" in text for code in expected_failures)
        ]
        assert unexpected == []


def screenshot(page: Page, name: str) -> Path:
    """Save a full-page screenshot as a test artifact (test-artifacts/ui/<name>.png, gitignored)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True, animations="disabled")  # transitions jump to their end
    return path


def new_page(browser: Browser, **context_options) -> tuple[Page, PageWatch]:
    """A page in a fresh context (its own, empty localStorage), watched from the first request. Anything
    bound beyond loopback is aborted (and still recorded): a test never touches the network."""
    context = browser.new_context(**{"viewport": {"width": 1200, "height": 820}, **context_options})
    context.route(_leaves_loopback, lambda route: route.abort())
    page = context.new_page()
    return page, PageWatch.attach(page)


def _leaves_loopback(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in ("http", "https", "ws", "wss") and parts.hostname not in ("127.0.0.1", "localhost")
