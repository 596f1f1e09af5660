"""`/`: the web chat UI with `--ui-server`, otherwise a short JSON pointer to the API.

The UI is static files under `static/` (page, ES modules, CSS and the vendored markdown, sanitizer and
highlighting libraries), served from this gateway's own origin: no CDN, no CORS, works offline. The page
talks to `/v1` with plain fetch().
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
ASSETS_PREFIX = "/ui"  # where index.html's relative `ui/...` URLs point

# Model output is rendered into this page, so the page may only run its own scripts and talk to its own
# origin. Images may come from anywhere: a user can attach an image by URL (model replies cannot show any).
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data: blob: http: https:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)

page_router = APIRouter(tags=["ui"])
pointer_router = APIRouter(tags=["ui"])


@page_router.get("/", include_in_schema=False)
async def index() -> FileResponse:
    """The chat page."""
    headers = {
        "Content-Security-Policy": CONTENT_SECURITY_POLICY,
        "Cache-Control": "no-cache",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
    }
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html", headers=headers)


@pointer_router.get("/", include_in_schema=False)
async def pointer() -> dict:
    """What a browser sees at `/` when the UI is off: where the API and its docs are."""
    return {
        "message": "ProxyVision: an OpenAI-compatible API. Start the gateway with --ui-server for the web chat UI.",
        "api": "/v1",
        "models": "/v1/models",
        "docs": "/docs",
        "health": "/health",
    }


def install(app: FastAPI, *, enabled: bool) -> None:
    """Serve the UI at `/` (page) and `/ui/` (assets) when `enabled`; otherwise only the pointer at `/`."""
    if enabled:
        app.include_router(page_router)
        app.mount(ASSETS_PREFIX, StaticFiles(directory=STATIC_DIR), name="ui")
    else:
        app.include_router(pointer_router)
