"""Long completions that outgrow the KV cache together, through the gateway, the real engine and the
OpenAI SDK: the engine preempts and resumes, every request ends with finish_reason and usage, none
hangs, the text of a preempted request is what it would have been alone, and the engine keeps serving.

The cache is tiny (mem=1 MiB: 2048 tokens of the stand-in); the requests give no max_tokens, so each may
use all the room the cache leaves after its prompt (the documented default): three of them cannot fit
at once."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from services.common.pb.proxyvision.v1 import common_pb2, text_engine_pb2_grpc
from tests.support.metrics import scrape
from tests.support.models_yaml import TEXT_MODEL
from tests.support.stack import make_stack

pytestmark = pytest.mark.e2e
TOPICS = ("rivers", "mountains", "deserts")


@pytest.fixture(scope="module")
def stack(tiny_models, tmp_path_factory):
    s = make_stack(
        tmp_path_factory.mktemp("kv"),
        tiny_models,
        vision=False,
        text_params={"mem": 1, "block_size": 16, "max_num_seqs": len(TOPICS), "prefill_chunk_size": 256},
    )
    yield s
    s.stop()


def messages(topic: str) -> list[dict]:
    return [{"role": "user", "content": f"Think hard, then tell me everything about {topic}."}]


def reasoning_of(obj) -> str:
    return (obj.model_extra or {}).get("reasoning_content") or ""


async def streamed(client, topic: str, **kw) -> tuple[str, str, object]:
    stream = await client.chat.completions.create(
        model=TEXT_MODEL,
        messages=messages(topic),
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
        **kw,
    )
    text, reasoning, finish, usage = [], [], None, None
    async for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            text.append(choice.delta.content or "")
            reasoning.append(reasoning_of(choice.delta))
            finish = choice.finish_reason or finish
    return "".join(reasoning) + "|" + "".join(text), finish, usage


async def whole(client, topic: str, **kw) -> tuple[str, str, object]:
    reply = await client.chat.completions.create(model=TEXT_MODEL, messages=messages(topic), temperature=0, **kw)
    choice = reply.choices[0]
    return reasoning_of(choice.message) + "|" + (choice.message.content or ""), choice.finish_reason, reply.usage


def kv_cache_tokens(stack) -> int:
    with grpc.insecure_channel(stack.text.address) as channel:
        return (
            text_engine_pb2_grpc.TextEngineStub(channel)
            .GetModelInfo(common_pb2.GetModelInfoRequest(), timeout=10)
            .kv_cache_tokens
        )


async def test_requests_that_outgrow_the_cache_together_all_finish_properly(stack):
    capacity = kv_cache_tokens(stack)
    assert capacity == 2048
    client = stack.async_client()
    # Two streams and one plain request at once; each bounded, so a hang fails the test instead of stalling it.
    calls = [streamed(client, TOPICS[0]), streamed(client, TOPICS[1]), whole(client, TOPICS[2])]
    results = await asyncio.wait_for(asyncio.gather(*calls), timeout=240)
    for _text, finish, usage in results:
        assert finish == "length" and usage is not None
        # No max_tokens: the completion may use all the cache its prompt leaves, and got it.
        assert usage.prompt_tokens > 0 and usage.prompt_tokens + usage.completion_tokens == capacity
        assert usage.total_tokens == capacity
    assert sum(usage.total_tokens for _, _, usage in results) > capacity  # so they cannot all have fit at once
    log = stack.text.log_text()
    assert "KV cache full (2048 tokens, mem=1 MiB): preempted" in log  # the cache did run out mid-decode
    assert scrape(stack.metrics_url("text")).value("proxyvision_kv_preemptions_total", model=TEXT_MODEL) >= 1
    # Each one alone (nothing to preempt it) writes the same text: preemption resumed them exactly.
    for topic, (text, _, usage) in zip(TOPICS, results):
        alone, finish, _ = await asyncio.wait_for(whole(client, topic, max_tokens=usage.completion_tokens), 120)
        assert finish == "length" and alone == text, topic
    # And it keeps serving short requests.
    short, finish, usage = await asyncio.wait_for(whole(client, "lakes", max_tokens=5), 60)
    assert finish == "length" and usage.completion_tokens == 5
    await client.close()
