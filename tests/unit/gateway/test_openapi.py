"""/openapi.json tells the truth: the request schema as validated, errors as the OpenAI body with the
statuses the gateway answers, and no FastAPI 422 anywhere (validation errors are 400s)."""

from __future__ import annotations

import json

import httpx
import jsonschema
import pytest

from services.api_gateway.app import build_app
from tests.support.images import data_url, png

from .fakes import TEXT, hello_script, make_config
from .test_bad_inputs import WireCheckingEngine, hostile_app, hostile_config

ERROR_REF = "#/components/schemas/ErrorResponse"


@pytest.fixture(scope="module")
async def doc():
    app = build_app(make_config())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as client:
        response = await client.get("/openapi.json")
    assert response.status_code == 200
    return response.json()


async def test_no_fastapi_422_or_its_validation_schemas(doc):
    text = json.dumps(doc)
    assert (
        '"422"' not in text
        and "HTTPValidationError" not in text
        and "ValidationError" not in doc["components"]["schemas"]
    )


async def test_chat_completions_declares_its_errors_with_the_openai_body(doc):
    responses = doc["paths"]["/v1/chat/completions"]["post"]["responses"]
    assert set(responses) == {"200", "400", "404", "413", "500", "503", "504"}
    for status in ("400", "404", "413", "500", "503", "504"):
        assert responses[status]["content"]["application/json"]["schema"] == {"$ref": ERROR_REF}, status
    assert set(responses["200"]["content"]) == {"application/json", "text/event-stream"}
    error = doc["components"]["schemas"]["ErrorDetail"]
    assert set(error["properties"]) == {"message", "type", "param", "code"}


async def test_the_request_schema_is_the_validated_one(doc):
    schemas = doc["components"]["schemas"]
    body = doc["paths"]["/v1/chat/completions"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/ChatCompletionRequest"}
    request = schemas["ChatCompletionRequest"]["properties"]
    for name in (
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "response_format",
        "logprobs",
        "top_logprobs",
        "n",
        "logit_bias",
        "min_tokens",
        "repetition_penalty",
        "min_p",
        "stop_token_ids",
        "ignore_eos",
    ):
        assert name in request, name
    top = next(v for v in request["top_logprobs"]["anyOf"] if v["type"] == "integer")
    assert (top["minimum"], top["maximum"]) == (0, 20)
    assert schemas["FunctionDefinition"]["properties"]["name"]["pattern"] == "^[a-zA-Z0-9_-]{1,64}$"
    assert "schema" in schemas["JsonSchema"]["properties"]  # the JSON name, not the Python one
    message = schemas["ChatMessage"]["properties"]
    assert {"tool_calls", "tool_call_id", "content"} <= set(message)
    assert request["functions"]["deprecated"] is True


async def test_the_answer_schema_has_tool_calls_logprobs_and_n_choices(doc):
    schemas = doc["components"]["schemas"]
    assert set(schemas["Choice"]["properties"]["finish_reason"]["enum"]) == {"stop", "length", "tool_calls"}
    assert {"tool_calls", "reasoning_content", "reasoning"} <= set(schemas["ChatCompletionMessage"]["properties"])
    assert set(schemas["TokenLogprob"]["properties"]) == {"token", "logprob", "bytes", "top_logprobs"}


async def test_other_routes_declare_what_they_answer(doc):
    one_model = doc["paths"]["/v1/models/{model_id}"]["get"]["responses"]
    assert one_model["404"]["content"]["application/json"]["schema"] == {"$ref": ERROR_REF}
    assert "400" not in one_model  # a path parameter cannot fail validation


async def test_proxy_vision_is_declared_and_a_captioned_answer_conforms_to_it(doc):
    """The non-streamed answer of a captioned request, from the real app, validates against the document's
    ChatCompletion (proxy_vision included: an undeclared or mistyped field would fail here)."""
    schemas = doc["components"]["schemas"]
    proxy_vision = schemas["ChatCompletion"]["properties"]["proxy_vision"]
    assert {"$ref": "#/components/schemas/ProxyVision"} in proxy_vision["anyOf"]
    assert "proxy_vision" not in schemas["ChatCompletion"].get("required", [])
    assert set(schemas["ImageCaption"]["required"]) == {"message", "index", "caption", "cached", "ms"}
    app = await hostile_app(hostile_config(), WireCheckingEngine(TEXT, hello_script()))
    image = {"type": "image_url", "image_url": {"url": data_url(png())}}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as client:
        reply = await client.post(
            "/v1/chat/completions",
            json={
                "model": TEXT,
                "messages": [{"role": "user", "content": [{"type": "text", "text": "What is it?"}, image]}],
            },
        )
    assert reply.status_code == 200
    answer = reply.json()
    assert answer["proxy_vision"] == {
        "images": [{"message": 0, "index": 0, "caption": "a cat", "cached": False, "ms": 1.0}]
    }
    jsonschema.validate(answer, {"$ref": "#/components/schemas/ChatCompletion", "components": doc["components"]})
