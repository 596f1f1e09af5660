"""Schemathesis against the gateway's own /openapi.json, in-process: every operation gets generated requests,
valid and invalid by the document (bodies that name a served model, so the chat core is reached rather than
answered 404), and every response must be no server error and conform to what the document declares
(status, content type, headers, body schema).

The app is the one of test_bad_inputs.py: a fake text engine that serializes each call as the real client
would, a captioning vision engine, an image fetcher with no network. Bounded by max_examples per operation
(PROXYVISION_FUZZ_EXAMPLES, default 250 for the chat route, a sixth of that for each other protocol's
generation route, 20 for the rest), under a minute on 2 cores;
`make fuzz` runs it with 2,500.
"""

from __future__ import annotations

import asyncio
import os
from collections import Counter

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings, strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from .fakes import TEXT, VISION, hello_script
from .test_bad_inputs import WireCheckingEngine, hostile_app, hostile_config

CHAT_EXAMPLES = int(os.environ.get("PROXYVISION_FUZZ_EXAMPLES", "250"))
# The other protocols' generation routes: the same core behind them, so fewer cases each.
PROTOCOLS = ("POST /v1/responses", "POST /v1/messages", "POST /v1/completions")
PROTOCOL_EXAMPLES = max(20, CHAT_EXAMPLES // 6)
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
]
# Mostly the served text model; sometimes the vision model (not a chat model: 400/404) or an unknown one (404).
MODELS = st.sampled_from([TEXT] * 6 + [VISION, "no-such-model"])
STATUSES: Counter = Counter()  # what the run saw, for docs/reliability.md (printed by the last test)


@pytest.fixture(scope="module")
def app():
    engine = WireCheckingEngine(TEXT, hello_script())
    return asyncio.run(hostile_app(hostile_config({"max_body_bytes": 256 * 1024, "max_text_chars": 20_000}), engine))


def load_schema(app, mode: GenerationMode):
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    if mode is GenerationMode.NEGATIVE:
        return schema  # bodies that break the document: nothing to steer, the schema's validation must refuse them

    @schema.hook
    def flatmap_body(context, body):
        if isinstance(body, dict) and isinstance(body.get("messages"), list):
            # A chat request: name a model that exists (mostly), and most of the time keep the messages within the
            # rules the document cannot express (which roles need content, tool_call_id, tool_calls), so that
            # generated parameters reach the chat core instead of stopping at the first message.
            return st.tuples(MODELS, st.booleans(), st.booleans()).map(
                lambda drawn: {
                    **body,
                    "model": drawn[0],
                    "messages": body["messages"]
                    if drawn[1] and drawn[2]
                    else [_plausible(m) for m in body["messages"]],
                }
            )
        if isinstance(body, dict) and "model" in body:  # another protocol's request: a model that exists, mostly
            return MODELS.map(lambda model: {**body, "model": model})
        return st.just(body)

    return schema


def _plausible(message):
    """The message with what its role requires (content, a tool's call id; tool calls only on an assistant)."""
    if not isinstance(message, dict):
        return message
    message = dict(message)
    if message.get("content") is None:
        message["content"] = "hello"
    if message.get("role") == "tool" and not message.get("tool_call_id"):
        message["tool_call_id"] = "call_1"
    if message.get("role") != "assistant":
        message.pop("tool_calls", None)
    return message


def operations(schema) -> list:
    return [result.ok() for result in schema.get_all_operations()]


# The schemathesis pytest plugin does not run on this pytest; hypothesis drives each operation's strategy here.
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_every_generated_request_is_answered_as_documented(app, mode):
    for operation in operations(load_schema(app, mode)):
        if mode is GenerationMode.NEGATIVE and "requestBody" not in operation.definition.raw:
            continue  # nothing to get wrong: no body, and a string path parameter accepts any string
        examples = (
            CHAT_EXAMPLES
            if operation.label == "POST /v1/chat/completions"
            else (PROTOCOL_EXAMPLES if operation.label in PROTOCOLS else 20)
        )
        fuzz(operation, mode, examples)()


def fuzz(operation, mode: GenerationMode, examples: int):
    """The hypothesis test of one operation: `examples` generated requests, each answered as documented."""

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def answered_as_documented(case):
        response = case.call_and_validate(checks=CHECKS)
        STATUSES[(operation.label, mode.value, response.status_code)] += 1

    return answered_as_documented


def test_the_fuzzing_reached_the_chat_core():
    """The run above is only worth something if generated chats were answered, not all refused."""
    chat = Counter()
    for (label, _, status), n in STATUSES.items():
        if label == "POST /v1/chat/completions":
            chat[status] += n
    print(
        f"\nfuzz cases: {sum(STATUSES.values())} in all; POST /v1/chat/completions by status: {dict(sorted(chat.items()))}"
    )
    assert chat[200] >= 10 and chat[400] >= 10, chat
    for label in PROTOCOLS:
        answered = Counter({status: n for (seen, _, status), n in STATUSES.items() if seen == label})
        print(f"{label} by status: {dict(sorted(answered.items()))}")
        assert answered[200] >= 3, (label, answered)
    assert not any(status >= 500 for (*_, status) in STATUSES), STATUSES
