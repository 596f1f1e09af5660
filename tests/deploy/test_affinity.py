"""Affinity routing with real processes: three vision-engine processes behind one `ipv4:a,b,c` endpoint and two
text engines behind another, a gateway with `routing.vision: affinity` and `routing.text: affinity`
(load_guard_gap 1), the official SDK in front. Where each request went is read from each engine's own metrics
(caption cache hits and misses, requests served, prefix-cache hits) and checked against the hash ring's owners
of each key (an image's sha256, a conversation's key)."""

from __future__ import annotations

import hashlib

import openai
import pytest

from services.api_gateway.clients.hash_ring import HashRing
from services.api_gateway.schemas.chat import ChatCompletionRequest
from services.api_gateway.serving.conversation_key import conversation_key
from services.api_gateway.serving.protocols.chat import chat_conversation
from tests.support.images import data_url, png
from tests.support.metrics import scrape
from tests.support.models_yaml import TEXT_MODEL, VISION_MODEL, tiny
from tests.support.processes import ServiceProcess, free_port, stop_all, wait_grpc_serving, wait_until
from tests.support.stack import start_gateway, start_text_engine, start_vision_engine

pytestmark = pytest.mark.e2e

HISTORY = "Tell me about the lighthouse keeper and his logbook. " * 6  # several KV blocks of 16 tokens


class Replica:
    """One engine process and its metrics exporter; `name` is its address as the ring knows it."""

    def __init__(self, process: ServiceProcess) -> None:
        self.process = process
        self.name = process.address

    def metric(self, name: str, **labels: str) -> float:
        return scrape(f"http://127.0.0.1:{self.process.metrics_port}/metrics").value(name, **labels)


class Cluster:
    def __init__(self, vision: list[Replica], text: list[Replica], gateway: ServiceProcess) -> None:
        self.vision, self.text, self.gateway = vision, text, gateway
        self.vision_ring = HashRing(r.name for r in vision)
        self.text_ring = HashRing(r.name for r in text)
        self.client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="x", max_retries=0, timeout=60)

    def vision_replica(self, name: str) -> Replica:
        return next(r for r in self.vision if r.name == name)

    def gateway_metric(self, name: str, **labels: str) -> float:
        return scrape(f"{self.gateway.url}/metrics").value(name, **labels)


@pytest.fixture(scope="module")
def cluster(tiny_models, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("affinity")
    config = tiny(tiny_models, vision=True, text_params={"block_size": 16})
    config.entry(VISION_MODEL)["capabilities"]["vision_proxy"]["max_caption_tokens"] = 8  # quick captions
    engine_config = config.write(tmp / "engines.yaml")
    processes: list[ServiceProcess] = []
    try:
        # All five engines load at once, then the gateway starts over serving engines.
        for start, count in ((start_vision_engine, 3), (start_text_engine, 2)):
            for _ in range(count):
                processes.append(start(engine_config, tmp, metrics_port=free_port(), wait=False))
        for process in processes:
            wait_grpc_serving(process)
        vision, text = [Replica(p) for p in processes[:3]], [Replica(p) for p in processes[3:]]
        config.endpoints(
            {
                VISION_MODEL: "ipv4:" + ",".join(r.name for r in vision),
                TEXT_MODEL: "ipv4:" + ",".join(r.name for r in text),
            }
        )
        config.gateway(routing={"text": "affinity", "vision": "affinity", "load_guard_gap": 1})
        gateway = start_gateway(config.write(tmp / "gateway.yaml"), tmp, ready="/ready")
        processes.append(gateway)
        yield Cluster(vision, text, gateway)
    finally:
        stop_all(processes)


def picture(color: tuple[int, int, int]) -> tuple[dict, str]:
    """An image part (a data URL) and the sha256 the gateway routes it by."""
    data = png(color, (32, 24))
    return {"type": "image_url", "image_url": {"url": data_url(data)}}, hashlib.sha256(data).hexdigest()


def ask_about(cluster: Cluster, *parts: dict) -> None:
    response = cluster.client.chat.completions.create(
        model=TEXT_MODEL,
        max_tokens=2,
        messages=[{"role": "user", "content": [{"type": "text", "text": "What is this?"}, *parts]}],
    )
    assert response.choices[0].finish_reason in ("stop", "length")


def cache_counts(cluster: Cluster) -> dict[str, tuple[float, float]]:
    """(misses, hits) of each vision replica still running."""
    return {
        r.name: (
            r.metric("proxyvision_vision_cache_misses_total", model=VISION_MODEL),
            r.metric("proxyvision_vision_cache_hits_total", model=VISION_MODEL),
        )
        for r in cluster.vision
        if r.process.proc.poll() is None
    }


def delta(before: dict[str, tuple[float, float]], after: dict[str, tuple[float, float]]) -> dict[str, tuple]:
    return {name: (after[name][0] - before[name][0], after[name][1] - before[name][1]) for name in after}


def served(replicas: list[Replica]) -> dict[str, float]:
    return {r.name: r.metric("proxyvision_requests_total", model=TEXT_MODEL, status="ok") for r in replicas}


# --- vision: one image, one replica --------------------------------------------------------------------------


def test_an_image_sent_five_times_is_captioned_once_by_its_owner(cluster):
    part, sha = picture((200, 30, 30))
    owner = cluster.vision_ring.owner(sha)
    before = cache_counts(cluster)
    for _ in range(5):
        ask_about(cluster, part)
    moved = delta(before, cache_counts(cluster))
    assert moved[owner] == (1, 4)
    assert all(moved[name] == (0, 0) for name in moved if name != owner), moved
    assert cluster.gateway_metric("proxyvision_gateway_replicas", model=VISION_MODEL, state="ready") == 3


def one_image_per_replica(cluster: Cluster, skip: int = 0) -> list[tuple[dict, str]]:
    """Test images whose owners are the three replicas, one each (`skip` picks other colours)."""
    found: dict[str, tuple[dict, str]] = {}
    for i in range(skip, skip + 60):
        part, sha = picture((10 + 3 * i, 240 - 3 * i, 90))
        found.setdefault(cluster.vision_ring.owner(sha), (part, sha))
    assert len(found) == 3
    return [found[r.name] for r in cluster.vision]


def test_different_images_spread_over_the_replicas_each_to_its_owner(cluster):
    images = one_image_per_replica(cluster)
    before = cache_counts(cluster)
    ask_about(cluster, *(part for part, _ in images))  # one request, split over the three owners
    moved = delta(before, cache_counts(cluster))
    assert moved == {r.name: (1, 0) for r in cluster.vision}
    # Turn 2 re-sends them with a new one: only the new one is captioned (by its owner); nothing else moves.
    new_part, new_sha = picture((1, 2, 3))
    before = cache_counts(cluster)
    ask_about(cluster, *(part for part, _ in images), new_part)
    moved = delta(before, cache_counts(cluster))
    new_owner = cluster.vision_ring.owner(new_sha)
    assert moved == {r.name: (int(r.name == new_owner), 1) for r in cluster.vision}


# --- text: conversations, users, the load guard -----------------------------------------------------------------


def test_five_turns_of_one_conversation_stay_on_one_replica_and_reuse_its_prefix_cache(cluster):
    messages = [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": HISTORY}]
    key = conversation_key(
        chat_conversation(ChatCompletionRequest.model_validate({"model": TEXT_MODEL, "messages": messages}))
    )
    owner = next(r for r in cluster.text if r.name == cluster.text_ring.owner(key))
    before, hits_before = served(cluster.text), owner.metric("proxyvision_prefix_cache_hits_total", model=TEXT_MODEL)
    for turn in range(5):
        response = cluster.client.chat.completions.create(
            model=TEXT_MODEL, messages=messages, max_tokens=3, temperature=0
        )
        messages += [
            {"role": "assistant", "content": response.choices[0].message.content or ""},
            {"role": "user", "content": f"And then? ({turn})"},
        ]
    after = served(cluster.text)
    assert {name: after[name] - before[name] for name in after} == {
        r.name: 5 if r is owner else 0 for r in cluster.text
    }
    assert owner.metric("proxyvision_prefix_cache_hits_total", model=TEXT_MODEL) - hits_before >= 4 * 16


def users_on_each_replica(cluster: Cluster) -> tuple[str, str]:
    """Two users whose keys the ring gives to different text replicas."""
    users = [f"user-{i}" for i in range(50)]
    first = users[0]
    second = next(u for u in users if cluster.text_ring.owner(f"user:{u}") != cluster.text_ring.owner(f"user:{first}"))
    return first, second


def test_conversations_with_a_user_go_where_the_ring_says(cluster):
    for user in users_on_each_replica(cluster):
        owner = cluster.text_ring.owner(f"user:{user}")
        before = served(cluster.text)
        for text in ("Hi", "Something else entirely", "A third opening"):  # the user is the key, not the text
            cluster.client.chat.completions.create(
                model=TEXT_MODEL, max_tokens=2, user=user, messages=[{"role": "user", "content": text}]
            )
        after = served(cluster.text)
        assert {n: after[n] - before[n] for n in after} == {n: 3 if n == owner else 0 for n in after}


def test_the_load_guard_sends_a_conversation_elsewhere_while_its_owner_is_busy(cluster):
    user, _ = users_on_each_replica(cluster)
    owner = cluster.text_ring.owner(f"user:{user}")
    spilled_before = cluster.gateway_metric("proxyvision_gateway_routes_total", model=TEXT_MODEL, outcome="load_guard")
    long_call = cluster.client.chat.completions.create(
        model=TEXT_MODEL,
        max_tokens=3000,
        user=user,
        stream=True,
        messages=[{"role": "user", "content": "Go on"}],
        extra_body={"ignore_eos": True},
    )
    try:
        next(iter(long_call))  # its role chunk: the owner accepted it, it is generating (1 in flight vs 0)
        before = served(cluster.text)
        cluster.client.chat.completions.create(
            model=TEXT_MODEL, max_tokens=2, user=user, messages=[{"role": "user", "content": "Meanwhile"}]
        )
        after = served(cluster.text)
    finally:
        long_call.close()
    assert {n: after[n] - before[n] for n in after} == {n: 0 if n == owner else 1 for n in after}
    spilled = cluster.gateway_metric("proxyvision_gateway_routes_total", model=TEXT_MODEL, outcome="load_guard")
    assert spilled - spilled_before == 1


# --- vision: an owner SIGKILLed (last: the module's processes are shared) -------------------------------------------


def test_after_an_owner_is_killed_its_images_go_to_the_next_owner_and_no_other_key_moves(cluster):
    part, sha = picture((200, 30, 30))  # the first test's image: its owner has its caption
    owners = cluster.vision_ring.owners(sha)
    # An image the earlier test had captioned by a replica that stays up.
    survivors_image = next(
        image
        for image in one_image_per_replica(cluster)
        if image[1] != sha and cluster.vision_ring.owner(image[1]) != owners[0]
    )
    killed = cluster.vision_replica(owners[0]).process.proc
    killed.kill()
    killed.wait(10)

    before = cache_counts(cluster)
    for _ in range(3):
        ask_about(cluster, part)  # every one answered (an error would raise)
    moved = delta(before, cache_counts(cluster))
    assert moved[owners[1]] == (1, 2)  # the next owner captions it once, then has it
    assert all(moved[n] == (0, 0) for n in moved if n != owners[1]), moved

    before = cache_counts(cluster)
    ask_about(cluster, survivors_image[0])  # captioned in an earlier test by a replica that is still up
    moved = delta(before, cache_counts(cluster))
    assert moved[cluster.vision_ring.owner(survivors_image[1])] == (0, 1)
    assert sum(m for m, _ in moved.values()) == 0

    assert cluster.gateway_metric("proxyvision_gateway_routes_total", model=VISION_MODEL, outcome="next_owner") >= 3
    wait_until(
        lambda: cluster.gateway_metric("proxyvision_gateway_replicas", model=VISION_MODEL, state="unavailable") == 1,
        timeout=15,
        message="the killed replica counted unavailable",
    )
