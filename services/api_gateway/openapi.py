"""The OpenAPI document as the API behaves: FastAPI declares a 422 with its own body on every route that
validates input, but this gateway answers validation errors with a 400 in the OpenAI error shape
(errors.py). `install_openapi` replaces those 422s with that 400 and drops FastAPI's validation schemas."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from .schemas.errors import ErrorResponse

ERROR_REF = {"$ref": "#/components/schemas/ErrorResponse"}
_FASTAPI_ONLY = ("HTTPValidationError", "ValidationError")


def error_responses(*statuses: int) -> dict:
    """`responses=` for a route that answers these statuses with the OpenAI error body."""
    return {status: {"model": ErrorResponse, "description": _DESCRIPTIONS[status]} for status in statuses}


_DESCRIPTIONS = {
    400: "Invalid request: malformed JSON, a bad or unsupported parameter (`param` names it), a context overflow, a bad image",
    404: "Unknown model",
    500: "Internal error (details are in the server's log)",
    503: "An engine is unavailable, overloaded (`Retry-After`) or the server is shutting down",
    504: "The engine did not answer within the deadline",
}


def install_openapi(app: FastAPI) -> None:
    """Serve the corrected document at /openapi.json (built once, on first request)."""

    def openapi() -> dict:
        if app.openapi_schema is None:
            doc = get_openapi(title=app.title, version=app.version, summary=app.summary, routes=app.routes)
            for path in doc.get("paths", {}).values():
                for operation in path.values():
                    responses = operation.get("responses", {})
                    # A body that fails validation is a 400; a path parameter of type str cannot fail.
                    if responses.pop("422", None) is not None and "requestBody" in operation and "400" not in responses:
                        responses["400"] = {"description": _DESCRIPTIONS[400],
                                            "content": {"application/json": {"schema": ERROR_REF}}}  # fmt: skip
            schemas = doc.setdefault("components", {}).setdefault("schemas", {})
            for name in _FASTAPI_ONLY:
                schemas.pop(name, None)
            schemas.setdefault("ErrorResponse", ErrorResponse.model_json_schema(ref_template="#/components/schemas/{model}"))
            app.openapi_schema = doc
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
