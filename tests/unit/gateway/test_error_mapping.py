"""One table: an engine's gRPC status (+ trailers) -> our error -> HTTP status and OpenAI type/code."""

from __future__ import annotations

import grpc
import pytest

from services.api_gateway.clients.base import translate
from services.common import errors

S = grpc.StatusCode

TABLE = [
    # status, trailers, class, http, type, code, param
    (
        S.INVALID_ARGUMENT,
        {"x-error-code": "context_length_exceeded", "x-error-param": "messages"},
        errors.ContextLengthExceededError,
        400,
        "invalid_request_error",
        "context_length_exceeded",
        "messages",
    ),
    (
        S.INVALID_ARGUMENT,
        {"x-error-param": "stop"},
        errors.InvalidRequestError,
        400,
        "invalid_request_error",
        None,
        "stop",
    ),
    (S.NOT_FOUND, {}, errors.ModelNotFoundError, 404, "invalid_request_error", "model_not_found", None),
    (S.UNAVAILABLE, {}, errors.EngineUnavailableError, 503, "server_error", "engine_unavailable", None),
    (S.RESOURCE_EXHAUSTED, {}, errors.OverloadedError, 503, "server_error", "server_overloaded", None),
    (S.DEADLINE_EXCEEDED, {}, errors.DeadlineExceededError, 504, "timeout_error", "timeout", None),
    (S.INTERNAL, {}, errors.InternalError, 500, "server_error", None, None),
    (S.UNKNOWN, {}, errors.InternalError, 500, "server_error", None, None),  # anything unlisted
]


def rpc_error(status: grpc.StatusCode, trailers: dict, details: str = "what the engine said") -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(status, grpc.aio.Metadata(), grpc.aio.Metadata(*trailers.items()), details)


@pytest.mark.parametrize("status, trailers, cls, http, kind, code, param", TABLE)
def test_grpc_status_translates_to_our_error(status, trailers, cls, http, kind, code, param):
    error = translate(rpc_error(status, trailers))
    assert type(error) is cls
    assert (error.http_status, error.error_type, error.code, error.param) == (http, kind, code, param)
    assert error.to_openai() == {
        "error": {"message": "what the engine said", "type": kind, "param": param, "code": code}
    }


def test_every_error_class_round_trips_through_grpc_trailers():
    for cls in (
        errors.InvalidRequestError,
        errors.ContextLengthExceededError,
        errors.ModelNotFoundError,
        errors.EngineUnavailableError,
        errors.OverloadedError,
        errors.DeadlineExceededError,
    ):
        sent = cls("m", param="p")
        back = translate(rpc_error(sent.grpc_status, dict(sent.grpc_trailers()), "m"))
        assert type(back) is cls and back.to_openai() == sent.to_openai()


def test_missing_details_still_give_a_message():
    assert translate(rpc_error(S.UNAVAILABLE, {}, "")).message == "unavailable"
