"""`/` with and without `--ui-server`: the page and every asset it loads (followed through the ES module
imports) come from the gateway itself; without the flag, `/` is a JSON pointer and no UI is served."""

from __future__ import annotations

import re
from urllib.parse import urljoin

import httpx
import pytest

from services.api_gateway.app import build_app
from services.api_gateway.routers.ui import STATIC_DIR

from .fakes import make_config

BASE = "http://gw/"
# What the page references (<link href>, <script src>) and what its modules import.
HTML_REFERENCE = re.compile(r'(?:href|src)="([^"#]+)"')
JS_REFERENCE = re.compile(r'^(?:import|export)\b[^"\n]*?"([^"]+)"', re.MULTILINE)


async def get(app, path: str) -> httpx.Response:
    # ASGITransport runs no lifespan: the UI routes need no engine, so none is opened.
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as client:
        return await client.get(path)


async def test_without_the_flag_root_points_to_the_api_and_no_ui_is_served():
    app = build_app(make_config())
    root = await get(app, "/")
    assert root.status_code == 200 and root.headers["content-type"] == "application/json"
    body = root.json()
    assert body["api"] == "/v1" and body["docs"] == "/docs" and "--ui-server" in body["message"]
    missing = await get(app, "/ui/js/main.js")
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "invalid_request_error"


async def test_with_the_flag_root_is_the_page_with_a_strict_content_security_policy():
    page = await get(build_app(make_config(), ui_server=True), "/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "<title>ProxyVision</title>" in page.text
    policy = dict(part.strip().split(" ", 1) for part in page.headers["content-security-policy"].split(";"))
    assert policy["script-src"] == "'self'" and policy["connect-src"] == "'self'" and policy["object-src"] == "'none'"


async def test_every_asset_the_page_loads_is_served_locally():
    app = build_app(make_config(), ui_server=True)
    pending, seen = [BASE], set()
    while pending:
        url = pending.pop()
        if url in seen:
            continue
        seen.add(url)
        response = await get(app, url)
        assert response.status_code == 200, url
        if url.endswith(".js"):  # browsers refuse module scripts of any other type
            assert response.headers["content-type"].startswith("text/javascript"), url
        if url == BASE or (url.endswith(".js") and "/vendor/" not in url):  # the vendored bundles import nothing
            for target in (HTML_REFERENCE if url == BASE else JS_REFERENCE).findall(response.text):
                assert not re.match(r"^(https?:)?//", target), f"{url} loads {target} from elsewhere"
                pending.append(urljoin(url, target))
    loaded = {url.removeprefix(BASE) for url in seen}
    assert {
        "ui/js/main.js",
        "ui/vendor/marked/marked.esm.js",
        "ui/vendor/dompurify/purify.es.js",
        "ui/vendor/highlight/highlight.min.js",
        "ui/css/style.css",
    } <= loaded
    assert {f"ui/js/{module.name}" for module in (STATIC_DIR / "js").glob("*.js")} <= loaded  # every module reached


@pytest.mark.parametrize(
    "path", ["/ui/vendor/marked/LICENSE", "/ui/vendor/dompurify/LICENSE", "/ui/vendor/highlight/LICENSE"]
)
async def test_vendored_libraries_ship_their_licences(path):
    assert (await get(build_app(make_config(), ui_server=True), path)).status_code == 200
