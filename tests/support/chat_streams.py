"""Streamed chat completions read raw (httpx), for tests that look at the SSE events themselves; and a reasoning
model's answer split as a client sees it."""

from __future__ import annotations

import json
import threading

import httpx


def stream_events(base_url: str, model: str, max_tokens: int) -> list:
    """A streamed chat read to its end: the decoded `data:` payloads ('[DONE]' as is)."""
    body = {
        "model": model,
        "messages": [{"role": "user", "content": "Tell me a long story."}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
    }
    events = []
    with httpx.stream("POST", f"{base_url}/v1/chat/completions", json=body, timeout=120) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("data: "):
                data = line[len("data: ") :]
                events.append(data if data == "[DONE]" else json.loads(data))
    return events


def start_streams(
    base_url: str, model: str, count: int, max_tokens: int
) -> tuple[list[threading.Thread], dict[int, list]]:
    """`count` streams in threads; their events land in the returned dict when they end."""
    results: dict[int, list] = {}

    def run(i: int) -> None:
        results[i] = stream_events(base_url, model, max_tokens)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    return threads, results


def finish_reasons(events: list) -> list:
    return [
        c["finish_reason"]
        for e in events
        if isinstance(e, dict)
        for c in e.get("choices", [])
        if c.get("finish_reason")
    ]


def errors(events: list) -> list:
    return [e["error"] for e in events if isinstance(e, dict) and "error" in e]


def reasoning_and_content(client, model: str, prompt: str, *, stream: bool, **kwargs) -> tuple[str, str]:
    """A greedy answer's `reasoning_content` and `content` through the SDK, the stream's deltas joined."""
    messages = [{"role": "user", "content": prompt}]
    if not stream:
        reply = client.chat.completions.create(model=model, messages=messages, temperature=0, **kwargs)
        message = reply.choices[0].message
        return message.model_extra.get("reasoning_content") or "", message.content or ""
    reasoning, content = "", ""
    for chunk in client.chat.completions.create(model=model, messages=messages, temperature=0, stream=True, **kwargs):
        if chunk.choices:
            reasoning += chunk.choices[0].delta.model_extra.get("reasoning_content") or ""
            content += chunk.choices[0].delta.content or ""
    return reasoning, content
