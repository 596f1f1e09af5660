"""The web UI (`--ui-server`) in Debian's Chromium, driven by Playwright.

Against real services with the tiny models: the page loads from the gateway alone, streams a text
answer, sends attached images (file, drag and drop, paste, URL) and shows the "describing" state, the
settings start from each model's own sampling defaults, and Stop frees the engine's slot. Against the real gateway over the scripted fake engine (exact replies):
untrusted model output (answer and reasoning) renders as text, markdown renders, reasoning from its own
field shows collapsed ("Thinking…" while it streams) and is kept with the chat, think markers in an answer
are just text, API errors read clearly, and the page works at phone width in dark mode by keyboard. Screenshots go to test-artifacts/ui/.
"""

from __future__ import annotations

import base64
import contextlib
import io
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image, ImageDraw
from playwright.sync_api import Page, expect

from tests.support.browser import PageWatch, chromium, new_page, screenshot
from tests.support.fake_text_engine import REASON, REASON_SPLIT, STAND_IN, VERBATIM, VERBATIM_PIECE
from tests.support.http_servers import ScriptedServer, send_bytes
from tests.support.images import data_url, encode, png
from tests.support.models_yaml import TEXT_MODEL, ModelsYaml, tiny
from tests.support.processes import wait_until
from tests.support.stack import make_stack, start_fake_text_engine, start_gateway

from .test_text_chat import engine_running

pytestmark = pytest.mark.e2e
SLOW = 60_000  # ms: the tiny models on a busy 2-core machine


def picture() -> bytes:
    """A small landscape (sky, sun, hills), so screenshots show something recognisable."""
    image = Image.new("RGB", (320, 220), (135, 190, 235))
    draw = ImageDraw.Draw(image)
    draw.ellipse((220, 25, 280, 85), fill=(255, 210, 60))
    draw.polygon([(0, 220), (0, 150), (90, 100), (190, 160), (320, 110), (320, 220)], fill=(70, 150, 80))
    draw.polygon([(0, 220), (0, 185), (140, 150), (320, 200), (320, 220)], fill=(45, 115, 60))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


PICTURE = picture()


@pytest.fixture(scope="module")
def browser():
    with chromium() as browser:
        yield browser


@pytest.fixture(scope="module")
def images_server():
    """Serves /slow.png: at once to the browser (its thumbnail), but to the gateway only once the test
    releases it, so the "describing" state lasts as long as the test needs to see it."""
    release = threading.Event()

    def slow(handler) -> None:
        if "Chrome" not in handler.headers.get("User-Agent", ""):
            release.wait(30)
        send_bytes(PICTURE, "image/png")(handler)

    server = ScriptedServer({"/slow.png": slow})
    server.release = release
    yield server
    release.set()
    server.close()


@pytest.fixture(scope="module")
def stack(tiny_models, tmp_path_factory):
    """Text engine, vision engine and gateway (with --ui-server) on the tiny models."""
    images = {"allow_private_networks": ["127.0.0.0/8"], "fetch_timeout_secs": 30}
    s = make_stack(tmp_path_factory.mktemp("web_ui"), tiny_models, vision=True, gateway_extra={"images": images})
    yield s
    s.stop()


@pytest.fixture(scope="module")
def fake_engine(tmp_path_factory):
    """The scripted fake text engine in a process of its own: exact replies, and failures on cue."""
    engine = start_fake_text_engine(tmp_path_factory.mktemp("web_ui_fake_engine"))
    try:
        yield engine
    finally:
        engine.stop()


@contextlib.contextmanager
def gateway_over(engine, tmp: Path, **gateway_settings) -> Iterator[str]:
    """The real gateway process (with --ui-server, no vision model) over `engine`; yields its base URL."""
    config = ModelsYaml().model(TEXT_MODEL, hf_id=STAND_IN, endpoint=engine.address).gateway(**gateway_settings)
    gateway = start_gateway(config.write(tmp / "models.yaml"), tmp, ui=True)
    try:
        yield gateway.url
    finally:
        gateway.stop()


@pytest.fixture(scope="module")
def fake_gateway(fake_engine, tmp_path_factory):
    """The real gateway over the fake engine, with the default settings (reasoning as `reasoning_content`)."""
    with gateway_over(fake_engine, tmp_path_factory.mktemp("web_ui_fake")) as url:
        yield url


@pytest.fixture
def open_ui(browser):
    """Open the UI of a gateway in a fresh browser context (closed after the test)."""
    contexts = []

    def open_(base_url: str, **context_options) -> tuple[Page, PageWatch]:
        page, watch = new_page(browser, **context_options)
        contexts.append(page.context)
        page.goto(f"{base_url}/")
        expect(page.locator("body")).to_have_attribute("data-ready", "true")  # the model list has loaded
        return page, watch

    yield open_
    for context in contexts:
        context.close()


def configure(page: Page, *, max_tokens: int | None = None, temperature: float | None = None) -> None:
    """Set generation settings through the settings dialog."""
    page.get_by_role("button", name="Settings").click()
    dialog = page.get_by_role("dialog", name="Settings")
    if max_tokens is not None:
        dialog.get_by_label("Max tokens").fill(str(max_tokens))
    if temperature is not None:
        dialog.get_by_label("Temperature").fill(str(temperature))
    close_settings(page)


def close_settings(page: Page) -> None:
    """Click the settings dialog's Done and wait until its `close` event has been handled. The page saves the
    settings then, in a task after the dialog is hidden: a test that writes localStorage next must not race it."""
    page.evaluate(
        """() => { window.settingsClosed = new Promise((resolve) =>
            document.getElementById("settings").addEventListener("close", () => resolve(), { once: true })); }"""
    )
    dialog = page.get_by_role("dialog", name="Settings")
    dialog.get_by_role("button", name="Done").click()
    expect(dialog).to_be_hidden()
    page.evaluate("() => window.settingsClosed")  # this listener runs after the page's own, which saves


def send(page: Page, text: str) -> None:
    page.get_by_label("Message", exact=True).fill(text)
    page.get_by_label("Message", exact=True).press("Enter")


def last_answer(page: Page):
    return page.locator("article.assistant").last


def image_parts(request_body: dict) -> list[dict]:
    return [
        part
        for message in request_body["messages"]
        if isinstance(message["content"], list)
        for part in message["content"]
        if part["type"] == "image_url"
    ]


# --- real services, tiny models -------------------------------------------------------------------------


def test_page_loads_from_the_gateway_alone_and_streams_a_text_answer(open_ui, stack):
    page, watch = open_ui(stack.base_url)
    picker = page.get_by_label("Model")
    expect(picker).to_have_value(TEXT_MODEL)  # the default model, preselected
    expect(picker.locator("option")).to_have_count(1)  # the vision model is not a chat model
    expect(picker.locator("option")).to_have_text(f"{TEXT_MODEL} (tiny stand-in)")
    # Everything, vendored libraries included, came from the gateway: the page works offline.
    assert watch.off_origin(stack.base_url) == []
    assert any(url.endswith("/ui/vendor/marked/marked.esm.js") for url in watch.requests)
    assert any(url.endswith("/ui/vendor/highlight/highlight.min.js") for url in watch.requests)

    configure(page, max_tokens=24, temperature=0)  # greedy: the tiny model runs to max_tokens
    with page.expect_response("**/v1/chat/completions") as response_info:
        send(page, "Hello, how are you?")
    response = response_info.value
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.request.post_data_json["stream"] is True and response.request.post_data_json["max_tokens"] == 24
    expect(page.locator("article.user")).to_have_text("Hello, how are you?")
    answer = last_answer(page)
    expect(answer).to_have_attribute("data-state", "done", timeout=SLOW)
    expect(answer.locator(".content")).not_to_be_empty()
    expect(answer.locator(".meta .usage")).to_contain_text("+ 24 completion tokens")
    expect(answer.locator(".meta .finish")).to_have_text("cut at max tokens")
    expect(answer.locator(".meta .time")).to_contain_text("first token")
    screenshot(page, "text-answer")

    # The conversation is kept in the browser: it survives a reload, then new chat and clear.
    page.reload()
    expect(page.locator("article.user")).to_have_text("Hello, how are you?")
    expect(last_answer(page)).to_have_attribute("data-state", "done")
    page.get_by_role("button", name="+ New chat").click()
    expect(page.locator("article")).to_have_count(0)
    expect(page.get_by_role("heading", name="What can I help with?")).to_be_visible()
    page.get_by_role("button", name="Hello, how are you?", exact=True).click()  # back to it, from the history list
    expect(page.locator("article.user")).to_have_text("Hello, how are you?")
    page.get_by_role("button", name="Clear all chats").click()  # confirm() is accepted by the watch
    expect(page.locator("article")).to_have_count(0)
    page.reload()
    expect(page.locator("body")).to_have_attribute("data-ready", "true")
    expect(page.locator("article")).to_have_count(0)
    assert watch.dialogs == ["confirm: Delete all chats stored in this browser?"]
    assert watch.off_origin(stack.base_url) == []
    watch.assert_quiet()


def test_attach_by_file_drop_and_paste_then_send_an_image(open_ui, stack):
    page, watch = open_ui(stack.base_url)
    configure(page, max_tokens=16, temperature=0)
    page.locator("#file-input").set_input_files(
        [
            {"name": "landscape.png", "mimeType": "image/png", "buffer": PICTURE},
            {"name": "red.png", "mimeType": "image/png", "buffer": png()},
        ]
    )
    thumbs = page.locator("#attachments figure")
    expect(thumbs).to_have_count(2)
    expect(thumbs.locator("img").first).to_have_attribute("src", data_url(PICTURE))

    # Drag and drop, and paste, of image files (the events a real drop or Ctrl+V would fire).
    page.evaluate(
        """([name, b64]) => {
        const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
        const transfer = () => { const dt = new DataTransfer(); dt.items.add(new File([bytes], name, {type: "image/png"})); return dt; };
        window.dropTransfer = transfer();
        document.querySelector("#prompt").dispatchEvent(
            new ClipboardEvent("paste", {clipboardData: transfer(), bubbles: true, cancelable: true}));
    }""",
        ["dropped.png", base64.b64encode(png((0, 0, 255))).decode()],
    )
    expect(thumbs).to_have_count(3)
    drop = page.evaluate_handle("window.dropTransfer")
    page.dispatch_event("#messages", "dragenter", {"dataTransfer": drop})
    expect(page.locator("#drop-overlay")).to_be_visible()
    page.dispatch_event("#messages", "drop", {"dataTransfer": drop})
    expect(page.locator("#drop-overlay")).to_be_hidden()
    expect(thumbs).to_have_count(4)
    expect(thumbs.locator("figcaption")).to_have_text(["landscape.png", "red.png", "dropped.png", "dropped.png"])

    # Remove buttons, by keyboard: focus stays in the list.
    for name in ("red.png", "dropped.png", "dropped.png"):
        page.get_by_role("button", name=f"Remove {name}").first.focus()
        page.keyboard.press("Enter")
    expect(thumbs).to_have_count(1)
    page.get_by_label("Image detail").select_option("low")

    with page.expect_request("**/v1/chat/completions") as request_info:
        send(page, "What is in this picture?")
    parts = image_parts(request_info.value.post_data_json)
    assert [p["image_url"]["detail"] for p in parts] == ["low"]
    assert parts[0]["image_url"]["url"] == data_url(PICTURE)
    expect(thumbs).to_have_count(0)  # handed over to the message
    expect(page.locator("article.user img")).to_have_attribute("alt", "landscape.png")
    answer = last_answer(page)
    expect(answer).to_have_attribute("data-state", "done", timeout=SLOW)
    expect(answer.locator(".content")).not_to_be_empty()
    expect(answer.locator(".meta .timing")).to_contain_text("vision")  # from the gateway's timing comment
    stack.gateway.wait_for_log("Processing multimodal request with 1 images")
    # The vision model's caption, from the stream's proxy_vision chunk, shows under the image it describes. The
    # same request through the SDK is answered from the caption cache: the caption the text model was told.
    again = stack.client().chat.completions.create(
        model=TEXT_MODEL, max_tokens=1, messages=request_info.value.post_data_json["messages"]
    )
    (told,) = again.model_extra["proxy_vision"]["images"]
    assert told["cached"] and (told["message"], told["index"]) == (0, 0) and told["caption"].strip()
    told = told["caption"]
    figure = page.locator("article.user figure.msg-image")
    expect(figure.locator("img")).to_have_attribute("alt", "landscape.png")
    expect(figure.locator("figcaption.image-caption")).to_have_text(told)
    screenshot(page, "image-answer")
    page.reload()  # kept with the chat in this browser
    expect(page.locator("article.user figure.msg-image figcaption.image-caption")).to_have_text(told)
    assert watch.off_origin(stack.base_url) == []
    watch.assert_quiet()


def test_image_url_shows_describing_state_until_the_first_token(open_ui, stack, images_server):
    page, watch = open_ui(stack.base_url)
    configure(page, max_tokens=8, temperature=0)
    url = f"{images_server.base}/slow.png"
    page.get_by_role("button", name="Attach an image by URL").click()
    page.get_by_label("Image URL").fill("not a url")
    page.get_by_label("Image URL").press("Enter")
    expect(page.locator("#notice")).to_contain_text("An image URL starts with")
    page.get_by_label("Image URL").fill(url)
    page.get_by_label("Image URL").press("Enter")
    expect(page.locator("#attachments img")).to_have_attribute("src", url)

    with page.expect_request("**/v1/chat/completions") as request_info:
        send(page, "Describe it")
    assert image_parts(request_info.value.post_data_json)[0]["image_url"]["url"] == url
    answer = last_answer(page)
    # The gateway is fetching the image (held by the server): the UI says what is going on.
    expect(answer.locator(".status")).to_have_text("Describing 1 image…")
    expect(answer).to_have_attribute("data-phase", "describing")
    expect(answer.locator(".content")).to_be_empty()
    screenshot(page, "describing")
    images_server.release.set()
    expect(answer).to_have_attribute("data-state", "done", timeout=SLOW)
    expect(answer.locator(".status")).to_be_hidden()
    expect(answer.locator(".meta .timing")).to_contain_text("fetch")
    # Only the thumbnail left the gateway's origin, to the image's own (loopback) server.
    assert watch.off_origin(stack.base_url) == [url]
    watch.assert_quiet()


NATIVE_MODEL = "qwen2-vl-native"
# Distinctive models.yaml sampling defaults, one set per chat model of the native stack. Greedy: the tiny text
# model then runs to its max_tokens, which shows the engine applied it.
TEXT_SAMPLING = {"max_tokens": 77, "temperature": 0.0}
NATIVE_SAMPLING = {"max_tokens": 33, "temperature": 0.25}


@pytest.fixture(scope="module")
def native_stack(tiny_models, tmp_path_factory):
    """The tiny Qwen2-VL served as a chat model that sees images itself (`vision_mode: native`), beside the
    tiny text model; each with its own sampling defaults in models.yaml."""
    images = {"allow_private_networks": ["127.0.0.0/8"], "fetch_timeout_secs": 30}
    config = tiny(tiny_models).native(NATIVE_MODEL, local_path=tiny_models["vision"], sampling=NATIVE_SAMPLING)
    config.entry(TEXT_MODEL)["sampling"] = TEXT_SAMPLING
    config.gateway(images=images)
    s = make_stack(
        tmp_path_factory.mktemp("web_ui_native"),
        tiny_models,
        config=config,
        vision=False,
        more_text={NATIVE_MODEL: tiny_models["vision"]},
    )
    yield s
    s.stop()


def test_a_native_model_looks_at_the_image_itself_and_shows_no_caption(open_ui, native_stack, images_server):
    """No "Describing" for a model that is not captioned for: the status says it is looking at the image, and the
    answer has no caption under the image (no proxy_vision came)."""
    page, watch = open_ui(native_stack.base_url)
    page.get_by_label("Model").select_option(NATIVE_MODEL)
    configure(page, max_tokens=6, temperature=0)
    url = f"{images_server.base}/slow.png"
    images_server.release.clear()
    page.get_by_role("button", name="Attach an image by URL").click()
    page.get_by_label("Image URL").fill(url)
    page.get_by_label("Image URL").press("Enter")
    send(page, "What is in it?")
    answer = last_answer(page)
    expect(answer.locator(".status")).to_have_text("Looking at 1 image…")
    expect(answer).to_have_attribute("data-phase", "looking")
    images_server.release.set()
    expect(answer).to_have_attribute("data-state", "done", timeout=SLOW)
    expect(page.locator("article.user figure.msg-image img")).to_have_count(1)
    expect(page.locator("article.user figcaption.image-caption")).to_have_count(0)
    watch.assert_quiet()


def test_settings_start_from_each_models_own_sampling_defaults(open_ui, native_stack):
    """Max tokens and temperature show the selected model's defaults (models.yaml's, through /v1/models) and
    follow the model picker. A field left alone is not sent, and the engine applies the model's default; a
    typed value is sent, for every model, until "Model defaults" drops it."""
    page, watch = open_ui(native_stack.base_url)
    dialog = page.get_by_role("dialog", name="Settings")
    max_tokens, temperature = dialog.get_by_label("Max tokens"), dialog.get_by_label("Temperature")

    def settings_of(model: str) -> None:
        page.get_by_label("Model").select_option(model)
        page.get_by_role("button", name="Settings").click()

    def done() -> None:
        close_settings(page)

    settings_of(TEXT_MODEL)
    expect(max_tokens).to_have_value("77")
    expect(temperature).to_have_value("0")
    expect(max_tokens).to_have_accessible_description("model default · models.yaml")
    expect(temperature).to_have_accessible_description("model default · models.yaml")
    done()
    settings_of(NATIVE_MODEL)
    expect(max_tokens).to_have_value("33")
    expect(temperature).to_have_value("0.25")
    screenshot(page, "settings-model-defaults")
    done()

    # Left alone, nothing is sent: the engine applies the text model's 77 tokens, greedily.
    page.get_by_label("Model").select_option(TEXT_MODEL)
    with page.expect_request("**/v1/chat/completions") as request_info:
        send(page, "Hello, how are you?")
    sent = request_info.value.post_data_json
    assert "max_tokens" not in sent and "temperature" not in sent, sent
    answer = last_answer(page)
    expect(answer).to_have_attribute("data-state", "done", timeout=SLOW)
    expect(answer.locator(".meta .usage")).to_contain_text("+ 77 completion tokens")
    expect(answer.locator(".meta .finish")).to_have_text("cut at max tokens")

    # A typed value is the user's, whichever model is picked, and is sent.
    settings_of(TEXT_MODEL)
    max_tokens.fill("5")
    expect(max_tokens).to_have_accessible_description("yours · the model's: 77")
    done()
    settings_of(NATIVE_MODEL)
    expect(max_tokens).to_have_value("5")
    expect(max_tokens).to_have_accessible_description("yours · the model's: 33")
    expect(temperature).to_have_value("0.25")
    done()
    with page.expect_request("**/v1/chat/completions") as request_info:
        send(page, "And now?")
    sent = request_info.value.post_data_json
    assert sent["model"] == NATIVE_MODEL and sent["max_tokens"] == 5 and "temperature" not in sent, sent
    expect(last_answer(page)).to_have_attribute("data-state", "done", timeout=SLOW)

    # "Model defaults" drops it, and that is saved: after a reload the model's own shows again.
    settings_of(NATIVE_MODEL)
    dialog.get_by_role("button", name="Model defaults").click()
    expect(max_tokens).to_have_value("33")
    expect(max_tokens).to_have_accessible_description("model default · models.yaml")
    done()
    page.reload()
    expect(page.locator("body")).to_have_attribute("data-ready", "true")
    settings_of(TEXT_MODEL)
    expect(max_tokens).to_have_value("77")
    done()

    # Settings saved before this: the old built-in 1024 (saved whether or not chosen) gives way to the model's
    # default; a temperature the user set stays theirs.
    page.evaluate("""() => localStorage.setItem("proxyvision.settings.v1",
        JSON.stringify({apiKey: "", systemPrompt: "", maxTokens: 1024, temperature: 0.5}))""")
    page.reload()
    expect(page.locator("body")).to_have_attribute("data-ready", "true")
    settings_of(TEXT_MODEL)
    expect(max_tokens).to_have_value("77")
    expect(temperature).to_have_value("0.5")
    expect(temperature).to_have_accessible_description("yours · the model's: 0")
    done()
    watch.assert_quiet()


def test_stop_aborts_the_stream_and_frees_the_engine_slot(open_ui, stack):
    page, watch = open_ui(stack.base_url)
    configure(page, max_tokens=3000, temperature=0)  # far longer than the test takes
    send(page, "Tell me a very long story")
    answer = last_answer(page)
    expect(answer.locator(".content")).not_to_be_empty(timeout=SLOW)  # tokens are arriving...
    expect(answer).to_have_attribute("data-state", "streaming")  # ...and the answer is not finished
    assert engine_running(stack) == 1
    stop = page.get_by_role("button", name="Stop")
    expect(page.get_by_role("button", name="Send")).to_be_hidden()
    stop.click()
    expect(answer).to_have_attribute("data-state", "stopped")
    expect(answer.locator(".meta .stopped")).to_have_text("Stopped")
    expect(page.get_by_role("button", name="Send")).to_be_visible()
    # Aborting the fetch closed the connection; the gateway cancelled the gRPC call; the slot is free.
    wait_until(lambda: engine_running(stack) == 0, timeout=15, message="engine slot freed")
    screenshot(page, "stopped")
    watch.assert_quiet()


# --- real gateway over the scripted fake engine ---------------------------------------------------------


# Inline HTML, an HTML block, and a markdown link to a javascript: URL (each in its own paragraph: an
# HTML block would swallow the link as text).
XSS = (
    "Look: <img src=x onerror=\"window.pwned='img'\"> and <script>window.pwned='script'</script>\n\n"
    "<iframe src=\"javascript:window.pwned='iframe'\"></iframe>\n\n[click me](javascript:window.pwned='link')"
)


@pytest.mark.parametrize("where", ["answer", "reasoning"])
def test_model_output_with_html_and_script_renders_as_text(open_ui, fake_gateway, where):
    page, watch = open_ui(fake_gateway)
    prompt = f"{VERBATIM}{XSS}" if where == "answer" else f"{REASON}{XSS}{REASON_SPLIT}Done."
    send(page, prompt)
    answer = last_answer(page)
    expect(answer).to_have_attribute("data-state", "done")
    shown = answer.locator(".content")
    if where == "reasoning":
        expect(shown).to_have_text("Done.")
        answer.locator("details.reasoning summary").click()  # open it: its link must be clickable
        shown = answer.locator(".reasoning-text")
    expect(shown).to_contain_text(
        """Look: <img src=x onerror="window.pwned='img'"> and <script>window.pwned='script'</script>"""
    )
    expect(shown).to_contain_text("""<iframe src="javascript:window.pwned='iframe'"></iframe>""")
    expect(page.locator("article.user .text")).to_have_text(prompt)  # the user's own text: also only text
    for tag in ("img", "script", "iframe"):  # shown, never made into elements
        expect(page.locator(f"#messages {tag}")).to_have_count(0)
    link = shown.locator("a", has_text="click me")
    expect(link).to_have_count(1)  # markdown made it a link...
    assert link.get_attribute("href") is None  # ...whose javascript: URL the sanitizer removed
    link.click()
    assert page.evaluate("() => window.pwned") is None
    assert watch.dialogs == []
    screenshot(page, f"xss-as-text-{where}")
    watch.assert_quiet()  # a blocked script would also have logged a CSP violation


REASONING = "The user wants a **function** that adds two numbers."
CODE = "Here is **the code**:\n\n```python\ndef add(a, b):\n    return a + b\n```"  # no newline at the end: the page trims what it sends


def reasoning_tokens(text: str) -> int:
    """What the fake engine reports for a reasoning `text`: one token per piece, plus the two think markers."""
    return -(-len(text) // VERBATIM_PIECE) + 2


def test_reasoning_is_shown_collapsed_from_its_field_and_kept_in_the_history(open_ui, fake_gateway):
    page, watch = open_ui(fake_gateway)
    prompt = f"{REASON}{REASONING}{REASON_SPLIT}{CODE}"
    send(page, prompt)
    answer = last_answer(page)
    expect(answer).to_have_attribute("data-state", "done")

    def check_reasoning_and_answer() -> None:
        reasoning = answer.locator("details.reasoning")
        expect(reasoning.locator("summary")).to_have_text("Reasoning")
        expect(reasoning.locator(".reasoning-text")).to_be_hidden()  # collapsed
        content = answer.locator(".content")  # the answer, outside the reasoning, as markdown
        expect(content.locator("strong")).to_have_text("the code")
        expect(content.locator("code.language-python .hljs-keyword")).to_have_text(["def", "return"])
        expect(content).not_to_contain_text("adds two numbers")
        expect(answer.locator(".meta .usage")).to_contain_text(
            f"completion tokens ({reasoning_tokens(REASONING)} reasoning)"
        )
        reasoning.locator("summary").click()
        expect(reasoning.locator(".reasoning-text")).to_have_text("The user wants a function that adds two numbers.")
        expect(reasoning.locator(".reasoning-text strong")).to_have_text("function")  # markdown too, sanitized

    check_reasoning_and_answer()
    screenshot(page, "reasoning")
    page.reload()  # the reasoning was saved with the chat
    expect(page.locator("body")).to_have_attribute("data-ready", "true")
    answer = last_answer(page)
    check_reasoning_and_answer()

    # The next turn sends the earlier answer back without its reasoning (see toApiMessages).
    with page.expect_request("**/v1/chat/completions") as request_info:
        send(page, "thanks")
    assert request_info.value.post_data_json["messages"] == [
        {"role": "user", "content": prompt},
        {"role": "assistant", "content": CODE},
        {"role": "user", "content": "thanks"},
    ]
    expect(last_answer(page)).to_have_attribute("data-state", "done")
    expect(last_answer(page).locator(".content")).to_have_text("thanks")
    expect(last_answer(page).locator("details.reasoning")).to_be_hidden()  # an answer without reasoning has none
    expect(last_answer(page).locator(".meta .usage")).not_to_contain_text("reasoning")
    watch.assert_quiet()


def test_thinking_shows_while_reasoning_streams_then_collapses_for_the_answer(open_ui, fake_gateway):
    page, watch = open_ui(fake_gateway)
    thought = "Let me think this through, one small step at a time. " * 8  # ~85 pieces: ~4 s of reasoning
    send(page, f"{REASON}{thought}{REASON_SPLIT}Four.")
    answer = last_answer(page)
    # Checked at every animation frame: the moment the first reasoning piece is on screen.
    page.wait_for_function(
        "() => document.querySelector('article.assistant:last-of-type')?.dataset.thinking === 'true'", polling="raf"
    )
    expect(answer.locator("details.reasoning summary")).to_have_text("Thinking…")
    expect(answer.locator(".reasoning-text")).to_be_visible()  # open while the model thinks
    expect(answer.locator(".reasoning-text")).to_contain_text("Let me think")
    expect(answer.locator(".content")).to_be_empty()
    expect(answer).to_have_attribute("data-state", "streaming")
    expect(answer.locator(".status")).to_be_hidden()  # "Waiting for the model…" is over
    screenshot(page, "thinking")
    expect(answer).to_have_attribute("data-state", "done", timeout=SLOW)
    expect(answer.locator("details.reasoning summary")).to_have_text("Reasoning")
    expect(answer.locator(".reasoning-text")).to_be_hidden()  # closed when the answer came
    expect(answer.locator(".content")).to_have_text("Four.")
    watch.assert_quiet()


@pytest.mark.parametrize("field", ["reasoning", "both"])
def test_reasoning_is_read_once_under_either_name(open_ui, fake_engine, tmp_path, field):
    """`gateway.reasoning_field` may name it `reasoning` (vLLM's newer name), or send both names with the
    same text: the page reads one of them, never the two added up."""
    prompt = f"{REASON}{REASONING}{REASON_SPLIT}Done."
    with gateway_over(fake_engine, tmp_path, reasoning_field=field) as url:
        body = {"model": TEXT_MODEL, "messages": [{"role": "user", "content": prompt}], "stream": True}
        stream = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=30).text
        assert ("reasoning_content" in stream, '"reasoning"' in stream) == (field == "both", True)  # that name, really
        page, watch = open_ui(url)
        send(page, prompt)
        answer = last_answer(page)
        expect(answer).to_have_attribute("data-state", "done")
        expect(answer.locator(".content")).to_have_text("Done.")
        answer.locator("details.reasoning summary").click()
        expect(answer.locator(".reasoning-text")).to_have_text("The user wants a function that adds two numbers.")
        watch.assert_quiet()


def test_think_markers_inside_the_answer_are_just_text(open_ui, fake_gateway):
    page, watch = open_ui(fake_gateway)
    send(page, f"{VERBATIM}[THINK]x[/THINK] and <think>y</think> are how models mark reasoning.")
    answer = last_answer(page)
    expect(answer).to_have_attribute("data-state", "done")
    expect(answer.locator(".content")).to_have_text(
        "[THINK]x[/THINK] and <think>y</think> are how models mark reasoning."
    )
    expect(answer.locator("details.reasoning")).to_be_hidden()  # reasoning comes in its field, not in the content
    watch.assert_quiet()


def test_api_errors_are_shown_readably(open_ui, fake_gateway):
    page, watch = open_ui(fake_gateway)
    # Before the stream: an HTTP error (no vision model is configured behind this gateway, and the text model
    # does not see images itself). The photo is larger than any vision model uses: the page sends it scaled
    # down to 1536 px, as JPEG.
    big = Image.new("RGB", (3000, 2000), (200, 30, 30))
    page.locator("#file-input").set_input_files([{"name": "big.png", "mimeType": "image/png", "buffer": encode(big)}])
    with page.expect_request("**/v1/chat/completions") as request_info:
        send(page, "What is this?")
    sent = image_parts(request_info.value.post_data_json)[0]["image_url"]["url"]
    assert sent.startswith("data:image/jpeg;base64,")
    assert Image.open(io.BytesIO(base64.b64decode(sent.split(",", 1)[1]))).size == (1536, 1024)
    answer = last_answer(page)
    expect(answer).to_have_attribute("data-state", "error")
    alert = answer.get_by_role("alert")
    expect(alert.locator(".error-title")).to_have_text("Error · 400 · images_not_supported")
    expect(alert.locator(".error-message")).to_contain_text(f"The model '{TEXT_MODEL}' cannot take images")
    expect(answer.get_by_role("button", name="Retry")).to_be_visible()
    screenshot(page, "api-error")

    # After the first byte: an error event in the stream; what arrived before it stays. The failed turn
    # above is not sent again (it would fail this request too).
    with page.expect_request("**/v1/chat/completions") as request_info:
        send(page, "FAIL_MIDWAY")
    assert request_info.value.post_data_json["messages"] == [{"role": "user", "content": "FAIL_MIDWAY"}]
    answer = last_answer(page)
    expect(answer).to_have_attribute("data-state", "error")
    expect(answer.locator(".content")).to_have_text("partial")
    expect(answer.get_by_role("alert")).to_contain_text("Generation failed: CUDA error: device fell over")
    expect(page.get_by_role("button", name="Retry")).to_have_count(1)  # only the last answer is retried
    with page.expect_request("**/v1/chat/completions") as request_info:
        page.get_by_role("button", name="Retry").click()
    assert request_info.value.post_data_json["messages"] == [{"role": "user", "content": "FAIL_MIDWAY"}]
    expect(last_answer(page)).to_have_attribute("data-state", "error")
    expect(page.locator("article.assistant")).to_have_count(2)  # the retried answer replaced the failed one
    watch.assert_quiet("400")  # Chromium logs the refused image request (a 400) as a console error


def test_phone_width_dark_mode_and_keyboard(open_ui, fake_gateway):
    page, watch = open_ui(fake_gateway, viewport={"width": 390, "height": 844}, color_scheme="dark")
    background = page.evaluate("() => getComputedStyle(document.body).backgroundColor")
    assert background == "rgb(22, 24, 29)"  # the dark palette, from the system setting
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 390  # nothing wider than the phone
    sidebar = page.get_by_role("complementary", name="Conversations")
    expect(sidebar).to_be_hidden()

    prompt = page.get_by_label("Message", exact=True)
    prompt.focus()
    page.keyboard.type("one two three")
    page.keyboard.press("Shift+Enter")  # a new line, not a send
    page.keyboard.type("four")
    expect(prompt).to_have_value("one two three\nfour")
    page.keyboard.press("Enter")
    expect(last_answer(page)).to_have_attribute("data-state", "done")
    expect(last_answer(page).locator(".content")).to_have_text("one two three four")
    expect(prompt).to_be_focused()

    menu = page.get_by_role("button", name="Conversations")
    menu.focus()
    page.keyboard.press("Enter")
    expect(sidebar).to_be_visible()
    expect(menu).to_have_attribute("aria-expanded", "true")
    expect(page.get_by_role("button", name="+ New chat")).to_be_focused()  # focus moved into the drawer
    screenshot(page, "phone-dark-sidebar")
    page.keyboard.press("Escape")
    expect(sidebar).to_be_hidden()
    expect(menu).to_be_focused()
    screenshot(page, "phone-dark")
    assert watch.off_origin(fake_gateway) == []
    watch.assert_quiet()
