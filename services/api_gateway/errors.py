"""Every error the gateway answers is in the body of the protocol its path speaks, with the right status.

OpenAI's `{"error": {message, type, param, code}}` everywhere, except under `/v1/messages`, where Anthropic's
clients expect `{"type": "error", "error": {type, message}}` and Anthropic's statuses (`anthropic_error`: one
table). FastAPI's own 422 `{"detail": [...]}` becomes a 400 naming the field (param = the field path, e.g.
`messages[0].content[1].image_url.url`); unknown routes and methods and our ProxyVisionErrors get the
same shapes. Unexpected exceptions become a 500 in `middleware.py` (see there why).
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from services.common.errors import InvalidRequestError, OverloadedError, ProxyVisionError

log = logging.getLogger(__name__)

# pydantic names union members in error locations ("str", "list[tagged-union[...]]", "ImageURL");
# they are not part of the field path a client wrote.
_TYPE_LABELS = {"str", "int", "float", "bool", "dict", "list", "none"}


ANTHROPIC_PREFIX = "/v1/messages"
# Anthropic's error type for each HTTP status we answer (https://docs.anthropic.com/en/api/errors). A full engine
# queue (OverloadedError) is Anthropic's own "overloaded": 529, which its SDK and Claude Code retry. Our other 503s
# (an engine restarting or unreachable, the vision model down, a drain) are not load: they stay 503, as api_error
# (the SDK retries every 5xx, and Retry-After says when).
ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    503: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}
OVERLOADED_STATUS = 529


def speaks_anthropic(path: str) -> bool:
    """Whether `path` (without the app's root_path) is an Anthropic Messages route, answered in its shapes."""
    return path == ANTHROPIC_PREFIX or path.startswith(ANTHROPIC_PREFIX + "/")


def app_path(scope) -> str:
    """The request's path as the routes see it: behind a proxy that sets root_path, scope["path"] carries it."""
    path, root = scope["path"], scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


def anthropic_error(error: ProxyVisionError) -> tuple[int, dict]:
    """Anthropic's status and body for one of our errors (also the `data` of a stream's `error` event)."""
    status = OVERLOADED_STATUS if isinstance(error, OverloadedError) else error.http_status
    kind = ANTHROPIC_TYPES.get(status, "invalid_request_error" if status < 500 else "api_error")
    return status, {"type": "error", "error": {"type": kind, "message": error.message}}


def error_body(error: ProxyVisionError, path: str = "") -> tuple[int, dict]:
    """The status and body of `error` for a request to `path`: Anthropic's under /v1/messages, else OpenAI's."""
    return anthropic_error(error) if speaks_anthropic(path) else (error.http_status, error.to_openai())


def error_response(error: ProxyVisionError, path: str = "") -> JSONResponse:
    """The JSON response for one of our errors to a request for `path` (with `Retry-After` when retrying later
    will help)."""
    retry_after = getattr(error, "retry_after_secs", None)
    headers = {"Retry-After": str(retry_after)} if retry_after else None
    status, body = error_body(error, path)
    return JSONResponse(body, status_code=status, headers=headers)


def field_path(loc: tuple) -> str:
    """`("body", "messages", 0, "content")` -> `messages[0].content`, without pydantic's union labels."""
    parts: list = []
    for part in loc:
        if part == "body" and not parts:
            continue
        if isinstance(part, str) and ("[" in part or part in _TYPE_LABELS or part[:1].isupper()):
            continue
        if parts and part == parts[-1] and isinstance(part, str):
            continue  # a tagged union repeats the tag ('text') before the field of the same name
        parts.append(part)
    path = ""
    for part in parts:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


def validation_error(exc: RequestValidationError, content_type: str | None = None) -> InvalidRequestError:
    """The most specific problem of a request body, as OpenAI would phrase it."""
    errors = exc.errors()
    if not errors:
        return InvalidRequestError("Invalid request body")
    if any(e.get("type") == "json_invalid" for e in errors):
        return InvalidRequestError(
            "We could not parse the JSON body of your request. (HINT: This likely means you "
            "aren't using your HTTP library correctly.)",
            code="invalid_json",
        )
    # The deepest location is the one that names what is wrong (not the union branch that did not fit); at equal
    # depth, a bad value of the right type (an empty or malformed URL string) beats "should be an object".
    first = max(errors, key=lambda e: (len(e.get("loc", ())), not str(e.get("type", "")).endswith("_type")))
    path = field_path(tuple(first.get("loc", ())))
    if not path:
        return _bad_body(first, content_type)
    if first.get("type") == "missing":
        return InvalidRequestError(
            f"Missing required parameter: '{path}'.", param=path, code="missing_required_parameter"
        )
    detail = str(first.get("msg", "invalid")).removeprefix("Value error, ")
    return InvalidRequestError(f"Invalid value for '{path}': {detail}.", param=path, code="invalid_value")


def _bad_body(error: dict, content_type: str | None) -> InvalidRequestError:
    if error.get("type") == "missing":
        return InvalidRequestError("The request body is empty: send a JSON object.", code="invalid_json")
    if "json" not in (content_type or "").lower():
        return InvalidRequestError(
            f"The request body must be JSON (got Content-Type {content_type or 'none'!r}); "
            "send 'Content-Type: application/json'.",
            code="invalid_json",
        )
    return InvalidRequestError("The request body must be a JSON object.", code="invalid_json")


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers on `app`."""

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(validation_error(exc, request.headers.get("content-type")), app_path(request.scope))

    @app.exception_handler(ProxyVisionError)
    async def _ours(request: Request, exc: ProxyVisionError) -> JSONResponse:
        if exc.http_status >= 500:
            log.warning("%s %s -> %d: %s", request.method, request.url.path, exc.http_status, exc.message)
        return error_response(exc, app_path(request.scope))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = "invalid_request_error" if exc.status_code < 500 else "server_error"
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        message = {
            404: f"Unknown request URL: {request.method} {request.url.path}",
            405: f"Method {request.method} not allowed for {request.url.path}",
        }.get(exc.status_code, str(exc.detail))
        error = ProxyVisionError(message, code=code)
        error.http_status, error.error_type = exc.status_code, kind  # this one error's, not its class's
        status, body = error_body(error, app_path(request.scope))
        return JSONResponse(body, status_code=status, headers=getattr(exc, "headers", None))
