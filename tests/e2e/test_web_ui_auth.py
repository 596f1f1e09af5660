"""The web UI in Chromium against the real gateway process (with API keys) over the scripted fake engine:
the page loads without a key and asks for one, a wrong key shows the 401 clearly and keeps asking, the
right key (kept in this browser, sent as the Bearer header) lists the models and gets an answer."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.support.browser import chromium, new_page, screenshot
from tests.support.fake_text_engine import STAND_IN, TEXT, VERBATIM
from tests.support.models_yaml import ModelsYaml
from tests.support.stack import start_fake_text_engine, start_gateway

pytestmark = pytest.mark.e2e
KEY = "sk-web-ui-0123456789"


@pytest.fixture(scope="module")
def browser():
    with chromium() as browser:
        yield browser


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("web_ui_auth")
    engine = start_fake_text_engine(tmp)
    try:
        config = ModelsYaml().model(TEXT, hf_id=STAND_IN, endpoint=engine.address).gateway(api_keys=[KEY])
        gateway = start_gateway(config.write(tmp / "models.yaml"), tmp, ui=True)
        try:
            yield gateway
        finally:
            gateway.stop()
    finally:
        engine.stop()


def test_the_page_asks_for_the_key_refuses_a_wrong_one_and_answers_with_the_right_one(browser, gateway):
    page, watch = new_page(browser)
    try:
        with page.expect_response("**/v1/models") as listing:
            page.goto(f"{gateway.url}/")
        assert listing.value.status == 401
        dialog = page.get_by_role("dialog", name="Settings")
        expect(dialog).to_be_visible()  # opened at the key field
        expect(dialog.get_by_role("alert")).to_contain_text("This server needs an API key (401)")
        expect(page.locator("#notice")).to_have_text("This server needs an API key (401). Enter it in Settings.")
        expect(dialog.get_by_label("API key")).to_be_focused()
        screenshot(page, "api-key-asked")

        with page.expect_response("**/v1/models") as listing:
            dialog.get_by_label("API key").fill("sk-not-this-one")
            dialog.get_by_role("button", name="Done").click()
        assert listing.value.status == 401
        assert listing.value.request.headers["authorization"] == "Bearer sk-not-this-one"
        expect(dialog.get_by_role("alert")).to_contain_text("The API key was not accepted (401)")
        expect(dialog.get_by_role("alert")).to_contain_text("Incorrect API key provided")

        with page.expect_response("**/v1/models") as listing:
            dialog.get_by_label("API key").fill(KEY)
            dialog.get_by_role("button", name="Done").click()
        assert listing.value.status == 200
        expect(dialog).to_be_hidden()
        expect(page.get_by_label("Model")).to_have_value(TEXT)
        page.get_by_label("Message", exact=True).fill(f"{VERBATIM}Hello with a key")
        with page.expect_request("**/v1/chat/completions") as request_info:
            page.get_by_label("Message", exact=True).press("Enter")
        assert request_info.value.headers["authorization"] == f"Bearer {KEY}"
        answer = page.locator("article.assistant").last
        expect(answer).to_have_attribute("data-state", "done")
        expect(answer.locator(".content")).to_have_text("Hello with a key")

        # The key is kept in this browser: a reload is served at once, without asking.
        with page.expect_response("**/v1/models") as listing:
            page.reload()
        assert listing.value.status == 200
        expect(page.locator("body")).to_have_attribute("data-ready", "true")
        expect(page.get_by_role("dialog", name="Settings")).to_be_hidden()
        watch.assert_quiet("401")
    finally:
        page.context.close()


def test_a_chat_refused_with_401_shows_the_message_and_the_key_field(browser, gateway):
    page, watch = new_page(browser)
    try:
        page.goto(f"{gateway.url}/")
        dialog = page.get_by_role("dialog", name="Settings")
        expect(dialog).to_be_visible()
        # Dismiss without a key, then send anyway: the answer says why, and the key field comes back.
        dialog.get_by_role("button", name="Done").click()
        expect(dialog).to_be_hidden()
        page.get_by_label("Message", exact=True).fill("Hello?")
        page.get_by_label("Message", exact=True).press("Enter")
        answer = page.locator("article.assistant").last
        expect(answer).to_have_attribute("data-state", "error")
        expect(answer.locator(".error-title")).to_have_text("Error · 401 · invalid_request_error")
        expect(answer.locator(".error-message")).to_contain_text("didn't provide an API key")
        expect(dialog).to_be_visible()
        expect(dialog.get_by_label("API key")).to_be_focused()
        screenshot(page, "api-key-chat-refused")
        watch.assert_quiet("401")
    finally:
        page.context.close()
