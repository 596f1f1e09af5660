"""Request limits (`gateway.limits`), checked before any heavy work: a body that is too large is never parsed,
a request with too many messages or too much text is never validated field by field, tokenized or sent on.

Two steps, each where it is cheapest:
- `RequestLimitsMiddleware` (ASGI) counts the body's bytes as they arrive and answers 413 as soon as they
  pass `max_body_bytes`: at once when `Content-Length` says so, else (chunked) at the chunk that crosses it.
  A body within the limit is buffered and handed on unchanged: FastAPI reads whole bodies anyway.
- `check_chat_limits` runs on the parsed JSON before pydantic validates it (validating a million tiny
  messages takes seconds; counting them takes nothing): messages, text characters, the completion budget.
  The request schema calls it with the limits the middleware put in `active_limits` for this request.

A `max_tokens` above the cap is refused (400 naming the field), not clamped: a client that asked for more
than it can get would otherwise read `finish_reason: "length"` as the model's choice; OpenAI answers 400 too,
and so does this gateway when a budget does not fit the context.
"""

from __future__ import annotations

import contextvars
import json
from collections.abc import Callable

from services.common.config import RequestLimits
from services.common.errors import InvalidRequestError, ProxyVisionError

from .asgi import HttpMiddleware
from .errors import app_path, error_body
from .schemas.json_values import check_json_values

# Set by the middleware for the duration of one request; None outside requests (a schema validated in a
# test, or by code that is not answering a client, is not limited).
active_limits: contextvars.ContextVar[RequestLimits | None] = contextvars.ContextVar("request_limits", default=None)


class RequestTooLargeError(ProxyVisionError):
    """The body is larger than `gateway.limits.max_body_bytes`."""

    http_status = 413
    error_type = "invalid_request_error"
    default_code = "request_too_large"


def too_large(limit: int) -> RequestTooLargeError:
    """The 413 of a body over `limit` bytes."""
    return RequestTooLargeError(
        f"The request body is larger than this server accepts ({limit} bytes; "
        "gateway.limits.max_body_bytes). Send images by URL, or fewer or smaller ones."
    )


class RequestLimitsMiddleware(HttpMiddleware):
    """Refuses oversized bodies while reading them and makes the limits known to the request schema."""

    def __init__(self, app, limits: RequestLimits) -> None:
        super().__init__(app)
        self._limits = limits

    async def handle(self, scope, receive, send) -> None:
        token = active_limits.set(self._limits)
        try:
            body = await self._read_body(scope, receive, send)
            if body is not None:
                await self.app(scope, _replay(body, receive), send)
        finally:
            active_limits.reset(token)

    async def _read_body(self, scope, receive, send) -> list[dict] | None:
        """The body's messages, or None when this middleware has answered (413) or the client has gone."""
        limit = self._limits.max_body_bytes
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > limit:
            await _refuse(scope, send, limit)  # not one byte of it is read
            return None
        messages, total = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # http.disconnect: nobody is left to answer
                return None
            total += len(message.get("body", b""))
            if total > limit:
                await _refuse(scope, send, limit)
                return None
            messages.append(message)
            if not message.get("more_body", False):
                return messages


def _replay(messages: list[dict], receive):
    """A `receive` that hands the buffered body on, then waits on the client as before (for disconnects)."""
    pending = list(messages)

    async def replayed() -> dict:
        if pending:
            return pending.pop(0)
        return await receive()

    return replayed


async def _refuse(scope, send, limit: int) -> None:
    _, payload = error_body(too_large(limit), app_path(scope))  # Anthropic's shape under /v1/messages
    body = json.dumps(payload).encode()
    # The rest of the body is not read: close the connection rather than leave it for the next request.
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def check_request_json(data: object, check_limits: Callable[[dict, RequestLimits], None]) -> None:
    """What every request model checks on the parsed JSON, before any field is validated (counting is cheap;
    validating 10^6 messages or token ids is not): the served limits through `check_limits` (a protocol's own
    fields), when a request is being served; then the values JSON cannot carry (schemas/json_values.py)."""
    limits = active_limits.get()
    if limits is not None and isinstance(data, dict):
        check_limits(data, limits)
    check_json_values(data)


def check_chat_limits(
    data: object,
    limits: RequestLimits,
    *,
    messages_field: str = "messages",
    token_fields: tuple[str, ...] = ("max_tokens", "max_completion_tokens"),
) -> None:
    """Raise a 400 naming the field if the raw (parsed, not yet validated) request is over a limit: a chat request,
    or another protocol's whose conversation is `messages_field` and whose completion limit is `token_fields`.

    Anything of the wrong shape is left alone: the schema's own validation reports it."""
    if not isinstance(data, dict):
        return
    name = messages_field
    messages = data.get(name)
    if isinstance(messages, list):
        if len(messages) > limits.max_messages:
            raise InvalidRequestError(
                f"Invalid '{name}': {len(messages)} messages is more than this server accepts "
                f"(at most {limits.max_messages}; gateway.limits.max_messages).",
                param=name,
                code="too_many_messages",
            )
        chars = sum(_text_chars(m) for m in messages)
        if chars > limits.max_text_chars:
            raise InvalidRequestError(
                f"Invalid '{name}': {chars} characters of text is more than this server "
                f"accepts (at most {limits.max_text_chars}; gateway.limits.max_text_chars).",
                param=name,
                code="text_too_long",
            )
    for name in token_fields:
        value = data.get(name)
        if isinstance(value, int | float) and not isinstance(value, bool) and value > limits.max_completion_tokens:
            value = int(value) if isinstance(value, float) and value.is_integer() else value  # 40000.0 is read as 40000
            raise InvalidRequestError(
                f"Invalid '{name}': {value} is more than this server allows (at most "
                f"{limits.max_completion_tokens} completion tokens; "
                "gateway.limits.max_completion_tokens).",
                param=name,
                code="invalid_value",
            )


def _text_chars(message: object) -> int:
    """Characters of text one raw message (or Responses item) carries into the prompt (image parts are not text)."""
    if not isinstance(message, dict):
        return 0
    total = sum(
        len(v)
        for k in ("content", "reasoning_content", "reasoning", "name", "output", "arguments")
        if isinstance(v := message.get(k), str)
    )
    for key in ("content", "output", "summary"):
        if isinstance(parts := message.get(key), list):
            total += sum(len(p["text"]) for p in parts if isinstance(p, dict) and isinstance(p.get("text"), str))
    calls = message.get("tool_calls")
    if isinstance(calls, list):
        for call in calls:
            function = call.get("function") if isinstance(call, dict) else None
            if isinstance(function, dict):
                total += sum(len(v) for k in ("name", "arguments") if isinstance(v := function.get(k), str))
    return total
