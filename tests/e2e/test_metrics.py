"""Scrape /metrics of the gateway and both engines before and after real traffic: the series move as they should."""

from __future__ import annotations

import openai
import pytest

from services.common.hf_models import MIB
from tests.support.images import data_url, png
from tests.support.metrics import Scrape, scrape
from tests.support.models_yaml import TEXT_MODEL, VISION_MODEL
from tests.support.stack import make_stack

pytestmark = pytest.mark.e2e

IMAGE_URL = data_url(png())


def image_message(url: str) -> list[dict]:
    return [
        {
            "role": "user",
            "content": [{"type": "text", "text": "What is this?"}, {"type": "image_url", "image_url": {"url": url}}],
        }
    ]


def delta(after: Scrape, before: Scrape, name: str, **labels) -> float:
    return after.value(name, **labels) - before.value(name, **labels)


def test_counters_and_gauges_follow_the_traffic(tmp_path, tiny_models):
    stack = make_stack(tmp_path, tiny_models, vision=True)
    try:
        urls = {s: stack.metrics_url(s) for s in ("gateway", "text", "vision")}
        before = {s: scrape(u) for s, u in urls.items()}
        client = stack.client()
        usages = [
            client.chat.completions.create(
                model=TEXT_MODEL, max_tokens=5, messages=[{"role": "user", "content": "Hello"}]
            ).usage
        ]
        for messages in ([{"role": "user", "content": "Hi there"}], image_message(IMAGE_URL), image_message(IMAGE_URL)):
            chunks = list(
                client.chat.completions.create(
                    model=TEXT_MODEL,
                    max_tokens=4,
                    messages=messages,
                    stream=True,
                    stream_options={"include_usage": True},
                )
            )
            usages.append(chunks[-1].usage)
        with pytest.raises(openai.BadRequestError):  # refused before any engine: a private address
            client.chat.completions.create(model=TEXT_MODEL, messages=image_message("http://127.0.0.1:9/cat.png"))
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}])
        after = {s: scrape(u) for s, u in urls.items()}

        g0, g1 = before["gateway"], after["gateway"]
        assert delta(g1, g0, "proxyvision_gateway_requests_total", model=TEXT_MODEL, status="200") == 4
        assert delta(g1, g0, "proxyvision_gateway_requests_total", status="400") == 1
        assert delta(g1, g0, "proxyvision_gateway_requests_total", status="404") == 1
        assert delta(g1, g0, "proxyvision_gateway_request_duration_seconds_count", model=TEXT_MODEL) == 4
        assert delta(g1, g0, "proxyvision_gateway_time_to_first_token_seconds_count", model=TEXT_MODEL) == 3  # streams
        assert delta(g1, g0, "proxyvision_gateway_images_total", source="data") == 2
        assert delta(g1, g0, "proxyvision_image_fetch_failures_total", reason="image_url_not_accessible") == 1
        assert g1.value("proxyvision_gateway_requests_running") == 0

        t0, t1 = before["text"], after["text"]
        assert delta(t1, t0, "proxyvision_requests_total", model=TEXT_MODEL, status="ok") == 4
        assert delta(t1, t0, "proxyvision_generation_tokens_total", model=TEXT_MODEL) == sum(
            u.completion_tokens for u in usages
        )
        assert delta(t1, t0, "proxyvision_prompt_tokens_total", model=TEXT_MODEL) == sum(
            u.prompt_tokens for u in usages
        )
        assert delta(t1, t0, "proxyvision_time_to_first_token_seconds_count", model=TEXT_MODEL) == 4
        assert t1.value("proxyvision_requests_running", model=TEXT_MODEL) == 0
        assert t1.value("proxyvision_requests_waiting", model=TEXT_MODEL) == 0
        assert t1.value("proxyvision_memory_budget_bytes", model=TEXT_MODEL) == 16 * MIB
        assert t1.value("proxyvision_model_state", model=TEXT_MODEL, state="ready") == 1
        assert t1.value("proxyvision_model_state", model=TEXT_MODEL, state="unloaded") == 0
        assert t1.value("proxyvision_model_loads_total", model=TEXT_MODEL) == 1
        assert t1.value("proxyvision_model_load_seconds", model=TEXT_MODEL) > 0

        v0, v1 = before["vision"], after["vision"]
        assert delta(v1, v0, "proxyvision_requests_total", model=VISION_MODEL, status="ok") == 2
        assert delta(v1, v0, "proxyvision_vision_images_total", model=VISION_MODEL) == 2
        assert delta(v1, v0, "proxyvision_vision_cache_misses_total", model=VISION_MODEL) == 1
        assert delta(v1, v0, "proxyvision_vision_cache_hits_total", model=VISION_MODEL) == 1
        assert v1.value("proxyvision_requests_running", model=VISION_MODEL) == 0
        assert v1.value("proxyvision_memory_used_bytes", model=VISION_MODEL) == 0
    finally:
        stack.stop()
