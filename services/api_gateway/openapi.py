"""The OpenAPI document as the API behaves: FastAPI declares a 422 with its own body on every route that
validates input, but this gateway answers validation errors with a 400 in the OpenAI error shape (Anthropic's
under /v1/messages: errors.py). `install_openapi` replaces those 422s with that 400 and drops FastAPI's
validation schemas.
With API keys configured it also declares the bearer scheme, and the 401, on every route that needs a key
(auth.py answers those before any route runs, so FastAPI cannot see them)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from .errors import speaks_anthropic
from .schemas.anthropic import AnthropicErrorResponse
from .schemas.errors import ErrorResponse

if TYPE_CHECKING:
    from .auth import KeyPolicy

ERROR_REF = {"$ref": "#/components/schemas/ErrorResponse"}
ANTHROPIC_ERROR_REF = {"$ref": "#/components/schemas/AnthropicErrorResponse"}
_FASTAPI_ONLY = ("HTTPValidationError", "ValidationError")
SECURITY_SCHEME = "ApiKey"


def error_responses(*statuses: int) -> dict:
    """`responses=` for a route that answers these statuses with the OpenAI error body."""
    return {status: {"model": ErrorResponse, "description": _DESCRIPTIONS[status]} for status in statuses}


def anthropic_error_responses(*statuses: int) -> dict:
    """`responses=` for an Anthropic route that answers these statuses with Anthropic's error body."""
    return {status: {"model": AnthropicErrorResponse, "description": _DESCRIPTIONS[status]} for status in statuses}


_DESCRIPTIONS = {
    400: "Invalid request: malformed JSON, a bad or unsupported parameter (`param` names it), a context overflow, a bad image",
    401: "No API key, or not an accepted one (send 'Authorization: Bearer <key>' or 'x-api-key: <key>')",
    404: "Unknown model",
    413: "The request body is larger than gateway.limits.max_body_bytes",
    500: "Internal error (details are in the server's log)",
    503: "An engine is unavailable, overloaded (`Retry-After`) or the server is shutting down",
    504: "The engine did not answer within the deadline",
    529: "Anthropic's 'overloaded': the engine's queue is full (`Retry-After`)",
}


def install_openapi(app: FastAPI, *, key_policy: KeyPolicy | None = None) -> None:
    """Serve the corrected document at /openapi.json (built once, on first request); `key_policy`: which
    paths need an API key (None: no keys configured)."""

    def openapi() -> dict:
        if app.openapi_schema is None:
            doc = get_openapi(title=app.title, version=app.version, summary=app.summary, routes=app.routes)
            for route, path in doc.get("paths", {}).items():
                for operation in path.values():
                    responses = operation.get("responses", {})
                    error_ref = ANTHROPIC_ERROR_REF if speaks_anthropic(route) else ERROR_REF
                    if key_policy is not None and key_policy.guards(route):
                        operation["security"] = [{SECURITY_SCHEME: []}]
                        responses["401"] = {
                            "description": _DESCRIPTIONS[401],
                            "content": {"application/json": {"schema": error_ref}},
                        }
                    # A body that fails validation is a 400; a path parameter of type str cannot fail.
                    if responses.pop("422", None) is not None and "requestBody" in operation and "400" not in responses:
                        responses["400"] = {
                            "description": _DESCRIPTIONS[400],
                            "content": {"application/json": {"schema": error_ref}},
                        }
            components = doc.setdefault("components", {})
            if key_policy is not None:
                components["securitySchemes"] = {
                    SECURITY_SCHEME: {
                        "type": "http",
                        "scheme": "bearer",
                        "description": "One of the keys the server is configured with (--api-key, PROXYVISION_API_KEY, "
                        "gateway.api_keys or gateway.api_keys_file). An `x-api-key: <key>` header, "
                        "as Anthropic's clients send it, is accepted too.",
                    }
                }
            schemas = components.setdefault("schemas", {})
            for name in _FASTAPI_ONLY:
                schemas.pop(name, None)
            schemas.setdefault(
                "ErrorResponse", ErrorResponse.model_json_schema(ref_template="#/components/schemas/{model}")
            )
            app.openapi_schema = doc
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
