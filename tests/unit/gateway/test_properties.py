"""Properties, checked by hypothesis over generated inputs: content parts parse to what was sent or to a 400
naming the field (never another exception), data URLs round-trip or are refused with our errors, and SSE
frames carry any payload intact, one event per frame."""

from __future__ import annotations

import base64
import contextlib
import json

from hypothesis import HealthCheck, given, settings, strategies as st
from pydantic import ValidationError

from services.api_gateway.errors import field_path
from services.api_gateway.media.data_urls import decode_data_url
from services.api_gateway.schemas.chat import ChatCompletionRequest, ChatMessage, ImagePart, TextPart
from services.api_gateway.schemas.json_values import check_json_values
from services.api_gateway.serving import sse
from services.common.errors import ImageTooLargeError, InvalidRequestError
from services.common.images import InvalidImageError

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# Any JSON value, as json.loads can return it (text without lone surrogates: json.dumps cannot write those).
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
URLS = st.one_of(
    st.text(max_size=40),
    st.from_regex(r"\Ahttps?://[\[\]a-z0-9.:@%/?#-]{0,30}\Z"),
    st.builds(lambda b: "data:image/png;base64," + base64.b64encode(b).decode(), st.binary(max_size=30)),
)
PART = st.one_of(
    st.fixed_dictionaries({"type": st.just("text"), "text": st.text()}),
    st.fixed_dictionaries(
        {
            "type": st.just("image_url"),
            "image_url": URLS
            | st.fixed_dictionaries(
                {"url": URLS}, optional={"detail": st.sampled_from(["low", "high", "auto", "ultra"])}
            ),
        }
    ),
    st.dictionaries(st.sampled_from(["type", "text", "image_url"]), JSON, max_size=3),
)


@SETTINGS
@given(
    role=st.sampled_from(["system", "developer", "user", "assistant", "tool", "robot"]),
    parts=st.lists(PART, max_size=4),
)
def test_content_parts_parse_to_what_was_sent_or_to_a_400_naming_a_field(role, parts):
    message = {"role": role, "content": parts, "tool_call_id": "call_1"}
    try:
        parsed = ChatMessage.model_validate(message)
    except ValidationError as error:  # a 400 in the gateway: it must name a field inside the message
        assert all(field_path(tuple(e["loc"])) for e in error.errors()), error
        return
    assert len(parsed.content) == len(parts)
    for sent, got in zip(parts, parsed.content, strict=True):
        if isinstance(got, TextPart):
            assert got.text == sent["text"]
        else:
            assert isinstance(got, ImagePart)
            url = sent["image_url"] if isinstance(sent["image_url"], str) else sent["image_url"]["url"]
            assert got.image.url == url and got.image.url  # the object form, whichever form was sent
    assert parsed.text() == "\n".join(p["text"] for p in parts if p.get("type") == "text")
    assert len(parsed.images()) == sum(p.get("type") == "image_url" for p in parts)


@SETTINGS
@given(
    body=st.dictionaries(
        st.sampled_from(["model", "messages", "max_tokens", "temperature", "tools", "stop", "n"]), JSON
    )
)
def test_any_json_body_validates_or_is_refused_with_a_validation_or_request_error(body):
    with contextlib.suppress(ValidationError, InvalidRequestError):  # both are 400s; anything else would be a 500
        ChatCompletionRequest.model_validate(body)


@SETTINGS
@given(
    data=st.binary(max_size=300),
    mime=st.sampled_from(["image/png", "image/jpeg", "IMAGE/WebP"]),
    wrap=st.integers(min_value=0, max_value=80),
)
def test_data_urls_round_trip_whatever_the_line_wrapping(data, mime, wrap):
    payload = base64.b64encode(data).decode()
    if wrap:  # some clients wrap base64 lines
        payload = "\n".join(payload[i : i + wrap] for i in range(0, len(payload), wrap))
    decoded, declared = decode_data_url(f"data:{mime};base64,{payload}", max_bytes=300, param="p")
    assert decoded == data and declared == mime.lower()


@SETTINGS
@given(data=st.binary(min_size=1, max_size=200), limit=st.integers(min_value=0, max_value=200))
def test_data_urls_over_the_limit_are_refused_before_decoding(data, limit):
    url = "data:image/png;base64," + base64.b64encode(data).decode()
    try:
        decoded, _ = decode_data_url(url, max_bytes=limit, param="p")
    except ImageTooLargeError as error:
        assert len(data) > limit and error.param == "p"
    else:
        assert len(data) <= limit and decoded == data


@SETTINGS
@given(url=st.text(max_size=60) | st.builds(lambda s: "data:" + s, st.text(max_size=60)))
def test_any_data_url_decodes_or_is_an_invalid_image_400(url):
    try:
        decode_data_url(url, max_bytes=1000, param="p")
    except (InvalidImageError, ImageTooLargeError) as error:
        assert error.http_status == 400 and error.param == "p"


@SETTINGS
@given(payload=st.dictionaries(st.text(), JSON, max_size=5))
def test_an_sse_event_is_one_frame_that_carries_its_payload_intact(payload):
    frame = sse.event(payload)
    assert frame.startswith("data: ") and frame.endswith("\n\n")
    assert "\n" not in frame[:-2] and "\r" not in frame[:-2]  # one line: a newline in the text cannot split the event
    assert json.loads(frame[len("data: ") : -2]) == payload


@SETTINGS
@given(payloads=st.lists(st.dictionaries(st.text(max_size=5), st.text(), max_size=3), max_size=6))
def test_a_stream_of_events_splits_back_into_its_events_and_done(payloads):
    stream = "".join(sse.event(p) for p in payloads) + sse.KEEPALIVE + sse.DONE
    blocks = [b for b in stream.split("\n\n") if b]
    data = [b[len("data: ") :] for b in blocks if b.startswith("data: ")]
    assert [json.loads(d) for d in data[:-1]] == payloads and data[-1] == "[DONE]"
    assert [b for b in blocks if not b.startswith("data: ")] == [sse.KEEPALIVE.strip()]


@SETTINGS
@given(value=JSON)
def test_json_that_json_dumps_can_write_passes_the_value_checks(value):
    json.dumps(value)  # shallow (max_leaves), finite and surrogate-free: what the check must let through
    check_json_values(value)


@SETTINGS
@given(
    text=st.text(max_size=20),
    at=st.integers(min_value=0, max_value=20),
    surrogate=st.integers(0xD800, 0xDFFF),
    key=st.text(min_size=1, max_size=5).filter(lambda k: "." not in k and "[" not in k),
)
def test_a_lone_surrogate_anywhere_is_refused_naming_where(text, at, surrogate, key):
    bad = text[:at] + chr(surrogate) + text[at:]
    try:
        check_json_values({"messages": [{"role": "user", "content": [{"type": "text", key: bad}]}]})
    except InvalidRequestError as error:
        assert error.param == f"messages[0].content[0].{key}" and error.code == "invalid_unicode"
    else:
        raise AssertionError("a lone surrogate was let through")
