"""`make demo` as a newcomer meets it: `proxyvision serve` on configs/demo.models.yaml (the Makefile's
command, on free ports), the web UI in Chromium, "Hello" typed in, an answer in words from the real
SmolLM2 model it preselects; the brief's own request still reaches the brief's model name."""

from __future__ import annotations

import json
import re
import signal
import subprocess

import httpx
import pytest
from playwright.sync_api import expect

from tests.support.browser import chromium, new_page, screenshot
from tests.support.docs_commands import doc_commands
from tests.support.images import data_url, png
from tests.support.launcher import Launcher
from tests.support.models_yaml import TEXT_MODEL
from tests.support.processes import REPO_ROOT, free_port
from tests.support.real_model import REAL_MODEL

pytestmark = pytest.mark.e2e
DEMO_CONFIG = REPO_ROOT / "configs" / "demo.models.yaml"
# Words a greeting's answer is made of; the stand-ins' random tokens are almost never whole English words.
COMMON_WORDS = {"hello", "hi", "how", "can", "i", "help", "you", "today", "assist", "what", "are", "doing", "there"}


@pytest.fixture(scope="module")
def demo(tiny_models):
    """The demo stack, started as `make demo` starts it; yields (base URL, banner)."""
    launcher = Launcher(DEMO_CONFIG, free_port(), "--host", "127.0.0.1", "--ui-server")
    try:
        yield launcher.base_url, launcher.wait_ready()
        launcher.proc.send_signal(signal.SIGINT)
        assert launcher.proc.wait(60) == 0
    finally:
        launcher.stop()


def test_the_banner_says_which_model_is_real(demo):
    _, banner = demo
    line = next(line for line in banner.splitlines() if "real weights" in line)
    assert REAL_MODEL in line.split("real weights")[0] and "stand-in" in line


def test_hello_in_the_web_ui_gets_an_answer_in_words(demo):
    base, _ = demo
    with chromium() as browser:
        page, watch = new_page(browser)
        page.goto(f"{base}/")
        expect(page.locator("body")).to_have_attribute("data-ready", "true")
        expect(page.get_by_label("Model")).to_have_value(REAL_MODEL)  # preselected: the model that answers in words
        page.get_by_role("button", name="Settings").click()
        dialog = page.get_by_role("dialog", name="Settings")
        dialog.get_by_label("Temperature").fill("0")  # greedy: the same answer every run
        dialog.get_by_label("Max tokens").fill("32")
        dialog.get_by_role("button", name="Done").click()
        page.get_by_label("Message", exact=True).fill("Hello")
        page.get_by_label("Message", exact=True).press("Enter")
        answer = page.locator("article.assistant").last
        expect(answer).to_have_attribute("data-state", "done", timeout=120_000)
        text = answer.locator(".content").inner_text()
        screenshot(page, "demo-hello")
        words = re.findall(r"[A-Za-z']+", text)
        assert len(words) >= 3 and set(w.lower() for w in words) & COMMON_WORDS, text
        assert "\ufffd" not in text and text.isascii(), text
        watch.assert_quiet()


def test_the_brief_request_still_reaches_the_brief_model_name(demo):
    base, _ = demo
    reply = httpx.post(
        f"{base}/v1/chat/completions",
        timeout=60,
        json={"model": TEXT_MODEL, "messages": [{"role": "user", "content": "Hello, how are you?"}], "max_tokens": 100},
    )
    assert reply.status_code == 200 and reply.json()["model"] == TEXT_MODEL
    assert reply.json()["usage"]["completion_tokens"] > 0


def test_a_normal_start_up_warns_of_nothing(demo):
    # What an operator sees before the banner: our log lines only, none of them a warning or an error, and no
    # library output (transformers' LOAD REPORT table, "Loading weights" progress bars, duplicated lines).
    _, output = demo
    noisy = [
        line
        for line in output.splitlines()
        if re.search(r" (WARNING|ERROR|CRITICAL) ", line) or "LOAD REPORT" in line or "Loading weights" in line
    ]
    assert not noisy, "\n".join(noisy)
    assert "Traceback" not in output


def test_the_docs_curl_commands_answer_as_shown(demo):
    # Every curl of the README and docs/, run by bash as written: only localhost:2000 becomes the demo's port,
    # and the elided image ("base64,...") a real one.
    base, _ = demo
    image = data_url(png())
    commands = [c for c in doc_commands() if c.text.startswith("curl ") and "localhost:2000" in c.text]
    assert len(commands) >= 5
    for command in commands:
        text = command.text.replace("localhost:2000", base.removeprefix("http://"))
        text = text.replace("data:image/png;base64,...", image)
        run = subprocess.run(["bash", "-c", text], capture_output=True, text=True, timeout=300)
        where = f"{command.where}: {command.text}"
        assert run.returncode == 0, f"{where}\n{run.stderr}"
        if '"stream": true' in text:
            assert run.stdout.rstrip().endswith("data: [DONE]"), f"{where}\n{run.stdout[-2000:]}"
            assert '"error"' not in run.stdout, f"{where}\n{run.stdout[-2000:]}"
            continue
        answer = json.loads(run.stdout)
        assert answer.get("error") is None and answer.get("usage"), f"{where}\n{run.stdout}"
