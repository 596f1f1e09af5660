"""One set of errors for all services, and the two translations they need.

Each error class knows its gRPC status (engines abort calls with it) and its HTTP status and OpenAI
error type (the gateway answers with them). Engines send `code` and `param` as trailing metadata so
they survive the hop; `from_grpc` rebuilds the same class on the gateway side.
Bodies are always `{"error": {"message", "type", "param", "code"}}`.
"""

from __future__ import annotations

import grpc

# Trailing-metadata keys that carry the OpenAI `code` and `param` across gRPC.
CODE_METADATA_KEY = "x-error-code"
PARAM_METADATA_KEY = "x-error-param"


class ProxyVisionError(Exception):
    """Base class: a request failed in a way we can describe to the client."""

    grpc_status: grpc.StatusCode = grpc.StatusCode.INTERNAL
    http_status: int = 500
    error_type: str = "server_error"
    default_code: str | None = None

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code if code is not None else self.default_code

    def to_openai(self) -> dict:
        """The OpenAI error body."""
        return {"error": {"message": self.message, "type": self.error_type, "param": self.param, "code": self.code}}

    def grpc_trailers(self) -> tuple[tuple[str, str], ...]:
        """Trailing metadata that lets the receiving side rebuild `code` and `param`."""
        pairs = []
        if self.code:
            pairs.append((CODE_METADATA_KEY, self.code))
        if self.param:
            pairs.append((PARAM_METADATA_KEY, self.param))
        return tuple(pairs)


class InvalidRequestError(ProxyVisionError):
    """The request itself is wrong (bad parameter, bad image, too long)."""

    grpc_status = grpc.StatusCode.INVALID_ARGUMENT
    http_status = 400
    error_type = "invalid_request_error"


class ContextLengthExceededError(InvalidRequestError):
    """Prompt plus max_tokens does not fit the model context or the KV cache."""

    default_code = "context_length_exceeded"


class NotFoundError(ProxyVisionError):
    """What the request names does not exist here (a stored response, a route)."""

    grpc_status = grpc.StatusCode.NOT_FOUND
    http_status = 404
    error_type = "invalid_request_error"
    default_code = "not_found"


class ModelNotFoundError(NotFoundError):
    """The requested model is not served here."""

    default_code = "model_not_found"


class EngineUnavailableError(ProxyVisionError):
    """An engine cannot be reached or is not serving (loading failed, batch loop dead, shutting down)."""

    grpc_status = grpc.StatusCode.UNAVAILABLE
    http_status = 503
    error_type = "server_error"
    default_code = "engine_unavailable"
    # An engine restarting (a crash, a reload, a rollout) is back in seconds: clients may retry, and the SDKs do
    # when Retry-After says so.
    retry_after_secs = 1


class ShuttingDownError(EngineUnavailableError):
    """The service is draining (SIGTERM): it finishes what it has and takes nothing new."""

    default_code = "server_shutting_down"
    retry_after_secs = 1


class OverloadedError(ProxyVisionError):
    """The engine's waiting queue is full, or the service is draining; retry later.

    HTTP 503 with a `Retry-After` header: the OpenAI SDKs retry 503s and honour the header."""

    grpc_status = grpc.StatusCode.RESOURCE_EXHAUSTED
    http_status = 503
    error_type = "server_error"
    default_code = "server_overloaded"
    retry_after_secs = 1


class DeadlineExceededError(ProxyVisionError):
    """The engine did not answer in time."""

    grpc_status = grpc.StatusCode.DEADLINE_EXCEEDED
    http_status = 504
    error_type = "timeout_error"
    default_code = "timeout"


class RequestCancelledError(ProxyVisionError):
    """The caller went away."""

    grpc_status = grpc.StatusCode.CANCELLED
    http_status = 499
    error_type = "cancelled"
    default_code = "cancelled"


class InternalError(ProxyVisionError):
    """A bug or an unexpected engine failure; details are in the logs."""


_BY_GRPC_STATUS: dict[grpc.StatusCode, type[ProxyVisionError]] = {
    cls.grpc_status: cls
    for cls in (
        InvalidRequestError,
        ModelNotFoundError,
        EngineUnavailableError,
        OverloadedError,
        DeadlineExceededError,
        RequestCancelledError,
        InternalError,
    )
}


def from_grpc(status: grpc.StatusCode, details: str | None, trailers: tuple | None = None) -> ProxyVisionError:
    """Rebuild our error from a failed gRPC call (the gateway's clients are the one caller)."""
    meta = dict(trailers or ())
    code = meta.get(CODE_METADATA_KEY)
    cls = _BY_GRPC_STATUS.get(status, InternalError)
    if cls is InvalidRequestError and code == ContextLengthExceededError.default_code:
        cls = ContextLengthExceededError
    if cls is EngineUnavailableError and code == ShuttingDownError.default_code:
        cls = ShuttingDownError
    message = details or status.name.lower().replace("_", " ")
    return cls(message, param=meta.get(PARAM_METADATA_KEY), code=code)


class ImageDownloadTimeoutError(InvalidRequestError):
    """The image URL did not deliver in time: "Image download timeout" (the brief's words), then the host and the
    limit ("...: images.example did not answer within 10 s")."""

    default_code = "image_download_timeout"


class ImageUrlNotAccessibleError(InvalidRequestError):
    """The image URL cannot or may not be fetched: "Image URL not accessible" (the brief's words), then why, naming
    the host ("...: localhost resolves to a loopback address (127.0.0.0/8)", "...: the server at images.example
    answered 404").

    Saying why is safe because the message holds only what the client sent and what anyone outside can learn about
    it: the address class with its public registry block, never the address a name resolved to (an internal DNS
    answer); the status a server answered, never a network error's text, a stack trace or the allowlist. What a
    probing client can learn beyond that is whether a name exists in the gateway's DNS and which class of address
    it has ("resolves to a private address (10.0.0.0/8)" against "does not resolve"): never an address, and no
    connection is made to it. Operators who must hide even that set `gateway.images.allowed_domains`, which
    refuses every other host before any lookup. The `code` stays the same whatever the reason: clients match on
    it, not on the text."""

    default_code = "image_url_not_accessible"


class ImageTooLargeError(InvalidRequestError):
    """An image over the configured byte limit."""

    default_code = "image_too_large"


class TooManyImagesError(InvalidRequestError):
    """More images in one request than configured."""

    default_code = "too_many_images"


class VisionUnavailableError(EngineUnavailableError):
    """No vision engine can describe images right now (the brief's "Vision model unavailable")."""

    default_code = "vision_unavailable"
