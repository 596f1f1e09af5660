"""The rendered chart runs: the CPU demo's manifests (examples/cpu-demo.yaml) become local processes, from
each container's own command, args and env and the ConfigMap's models.yaml, with only addresses, ports and
volume paths rewritten (see local_cluster.py for exactly what). The init containers build the tiny
models into the model-cache volume, every pod passes its own rendered probes, and a chat with an image
goes through the gateway's Service to the engines the ConfigMap names, with the real openai SDK."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.support.images import data_url, png
from tests.support.processes import wait_until

from .chart import NAMESPACE, RELEASE, example_values, render
from .local_cluster import LocalCluster, sample, scrape

pytestmark = pytest.mark.e2e

TEXT = "ministral-3-3b-reasoning"
VISION = "qwen2-vl-7b"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    local = LocalCluster(render(example_values("cpu-demo")), tmp_path_factory.mktemp("chart_runs"), NAMESPACE)
    try:
        local.run_init_containers()
        local.start()
        local.wait_ready()
        # The gateway is ready once the text engine serves; the vision engine is watched in the background
        # and may have been unreachable when the gateway first looked (all pods start at once).
        ready_url = f"http://{local.service_address(RELEASE, 'http')}/ready"
        wait_until(
            lambda: httpx.get(ready_url, timeout=5).json()["vision"]["available"] is True,
            timeout=60,
            message="the gateway sees the vision engine",
        )
        yield local
    finally:
        codes = local.stop()
    # SIGTERM drains and exits 0 within the pod's terminationGracePeriodSeconds.
    assert codes == {name: 0 for name in local.pods}, {
        n: local.pods[n].log_text()[-2000:] for n, c in codes.items() if c
    }


def test_the_init_containers_built_the_models_into_the_cache_volume(cluster):
    for kind, model in (("text", TEXT), ("vision", VISION)):
        pod = cluster.pod_behind(f"{RELEASE}-{kind}-{model}")
        cache = pod.volumes["model-cache"]
        assert (
            cache / "tiny" / ("ministral-3-tiny" if kind == "text" else "qwen2-vl-tiny") / "model.safetensors"
        ).is_file()
        assert f"Building InferenceEngine for model {model}" in pod.log_text()


def test_a_chat_with_an_image_through_the_gateway_service(cluster):
    client = openai.OpenAI(
        base_url=f"http://{cluster.service_address(RELEASE, 'http')}/v1",
        api_key="not-needed",
        max_retries=0,
        timeout=120,
    )
    url = data_url(png((200, 30, 30), (64, 48)))
    question = "What is in this image?"
    with_image = client.chat.completions.create(
        model=TEXT,
        max_tokens=8,
        temperature=0,
        messages=[
            {
                "role": "user",
                "content": [{"type": "text", "text": question}, {"type": "image_url", "image_url": {"url": url}}],
            }
        ],
    )
    text_only = client.chat.completions.create(
        model=TEXT, max_tokens=1, messages=[{"role": "user", "content": question}]
    )
    assert isinstance(with_image.choices[0].message.content, str) and with_image.usage.completion_tokens > 0
    # The caption was woven into the prompt the text engine saw.
    assert with_image.usage.prompt_tokens > text_only.usage.prompt_tokens
    gateway = cluster.pod_behind(RELEASE)
    assert "Processing multimodal request with 1 images" in gateway.log_text()
    # Both engines counted the work on the metrics port their headless Service exposes.
    vision = scrape(cluster.service_address(f"{RELEASE}-vision-{VISION}", "metrics"))
    assert sample(vision, "proxyvision_requests_total", model=VISION, status="ok") >= 1
    text = scrape(cluster.service_address(f"{RELEASE}-text-{TEXT}", "metrics"))
    assert sample(text, "proxyvision_requests_total", model=TEXT, status="ok") >= 2


def test_the_gateway_is_ready_and_lists_the_configmap_s_models(cluster):
    client = openai.OpenAI(
        base_url=f"http://{cluster.service_address(RELEASE, 2000)}/v1", api_key="not-needed", max_retries=0
    )
    assert [m.id for m in client.models.list().data] == [TEXT, VISION]
