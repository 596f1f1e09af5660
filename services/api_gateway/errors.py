"""Every error the gateway answers is an OpenAI error body with the right status.

FastAPI's own 422 `{"detail": [...]}` becomes a 400 naming the field (param = the field path, e.g.
`messages[0].content[1].image_url.url`); unknown routes and methods and our ProxyVisionErrors get the
same shape. Unexpected exceptions become a 500 in `middleware.py` (see there why).
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from services.common.errors import InvalidRequestError, ProxyVisionError

log = logging.getLogger(__name__)

# pydantic names union members in error locations ("str", "list[tagged-union[...]]", "ImageURL");
# they are not part of the field path a client wrote.
_TYPE_LABELS = {"str", "int", "float", "bool", "dict", "list", "none"}


def error_response(error: ProxyVisionError) -> JSONResponse:
    """The JSON response for one of our errors (with `Retry-After` when retrying later will help)."""
    retry_after = getattr(error, "retry_after_secs", None)
    headers = {"Retry-After": str(retry_after)} if retry_after else None
    return JSONResponse(error.to_openai(), status_code=error.http_status, headers=headers)


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
        return InvalidRequestError("We could not parse the JSON body of your request. (HINT: This likely means you "
                                   "aren't using your HTTP library correctly.)", code="invalid_json")  # fmt: skip
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
        return InvalidRequestError(f"The request body must be JSON (got Content-Type {content_type or 'none'!r}); "
                                   "send 'Content-Type: application/json'.", code="invalid_json")  # fmt: skip
    return InvalidRequestError("The request body must be a JSON object.", code="invalid_json")


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers on `app`."""

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(validation_error(exc, request.headers.get("content-type")))

    @app.exception_handler(ProxyVisionError)
    async def _ours(request: Request, exc: ProxyVisionError) -> JSONResponse:
        if exc.http_status >= 500:
            log.warning("%s %s -> %d: %s", request.method, request.url.path, exc.http_status, exc.message)
        return error_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = "invalid_request_error" if exc.status_code < 500 else "server_error"
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        message = {404: f"Unknown request URL: {request.method} {request.url.path}",
                   405: f"Method {request.method} not allowed for {request.url.path}"}.get(exc.status_code, str(exc.detail))  # fmt: skip
        body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
        return JSONResponse(body, status_code=exc.status_code, headers=getattr(exc, "headers", None))
