"""Request ids, access logs, chat request metrics and the last-resort 500, as a plain ASGI middleware (no
buffering of streamed bodies).

The id comes from the client's `x-request-id` header or is generated; it is put in the logging context
(every gateway log line of the request carries it), sent to engines as gRPC metadata, and returned in
the `x-request-id` response header.

Unexpected exceptions are answered here rather than by a FastAPI `Exception` handler: Starlette runs
that handler outside every user middleware, so its 500 would lack the `x-request-id` header and the
access line would log no status.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid

from services.common.errors import InternalError
from services.common.logging_setup import request_id_var

from .asgi import HttpMiddleware
from .errors import app_path, error_body
from .metrics import GatewayMetrics
from .state import Drain

log = logging.getLogger("services.api_gateway.access")

_SAFE_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
_UNEXPECTED = InternalError("The server had an error while processing your request.")


# The routes that generate (every protocol's): counted, and waited for by a drain.
GENERATION_PATHS = frozenset({"/v1/chat/completions", "/v1/responses", "/v1/messages", "/v1/completions"})


class RequestIdMiddleware(HttpMiddleware):
    """Wraps the app: assigns the id, adds the header, logs one line per request, turns a crash into a 500.

    Generation requests (chat completions and the other protocols') are also counted (status, latency to the last
    byte, in flight): a streamed response
    is only over when the app returns, which is exactly what a drain must wait for."""

    def __init__(self, app, metrics: GatewayMetrics, drain: Drain) -> None:
        super().__init__(app)
        self._metrics = metrics
        self._drain = drain

    async def handle(self, scope, receive, send) -> None:
        given = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        request_id = given if _SAFE_ID.match(given) else f"req-{uuid.uuid4().hex[:20]}"
        token = request_id_var.set(request_id)
        scope.setdefault("state", {})["request_id"] = request_id
        started = time.monotonic()
        status = {"code": 0}
        is_chat = scope["path"] in GENERATION_PATHS
        if is_chat:
            self._drain.inflight += 1

        async def send_with_id(message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            log.exception("Unhandled error on %s %s", scope["method"], scope["path"])
            if status["code"]:
                raise  # headers are out: all the server can do is drop the connection
            # The traceback stays in the log; the client gets the error shape of its protocol and nothing else.
            body = json.dumps(error_body(_UNEXPECTED, app_path(scope))[1]).encode()
            await send_with_id(
                {
                    "type": "http.response.start",
                    "status": 500,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
                }
            )
            await send({"type": "http.response.body", "body": body})
        finally:
            elapsed = time.monotonic() - started
            if is_chat:
                self._drain.inflight -= 1
                model = scope["state"].get("model", "unknown")  # set by the route once the model is resolved
                self._metrics.requests.labels(model, str(status["code"] or 499)).inc()
                self._metrics.latency.labels(model).observe(elapsed)
            log.info("%s %s %d %.0fms", scope["method"], scope["path"], status["code"], elapsed * 1000)
            request_id_var.reset(token)
