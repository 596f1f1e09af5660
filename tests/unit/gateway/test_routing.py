"""Affinity routing over engine replicas: targets, the replica set, owners and failover, the load guard, the
Describe split, health and model info over replicas, and the conversation key. Real grpc.aio servers on
loopback (port 0) stand in for the engines: each records what it was sent."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections import Counter

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from services.api_gateway.clients.channels import open_replica_channel
from services.api_gateway.clients.replicas import Address, ReplicaSet, parse_target
from services.api_gateway.clients.routing import AffinityRouting
from services.api_gateway.clients.text_engine import TextEngineClient
from services.api_gateway.clients.vision_engine import VisionEngineClient
from services.api_gateway.schemas.chat import ChatCompletionRequest
from services.api_gateway.serving.conversation_key import conversation_key
from services.api_gateway.serving.protocols.chat import chat_conversation
from services.common.config import TlsSettings
from services.common.errors import EngineUnavailableError, InvalidRequestError
from services.common.generation import Accepted, Detail, Finished, ImageBytes, SamplingParams, TextDelta
from services.common.pb.proxyvision.v1 import (
    common_pb2,
    text_engine_pb2 as tpb,
    text_engine_pb2_grpc,
    vision_engine_pb2 as vpb,
    vision_engine_pb2_grpc,
)
from tests.support.certs import issue, make_ca
from tests.support.fake_text_engine import start_fake_text_engine
from tests.support.processes import wait_until_async

from .fakes import TEXT, FakeTextEngine, hello_script, make_state

MODEL = "m"


class Engine(text_engine_pb2_grpc.TextEngineServicer, vision_engine_pb2_grpc.VisionEngineServicer):
    """One replica: answers Generate and Describe as `mode` says, and records what it got."""

    def __init__(self) -> None:
        self.mode = "ok"  # ok | refuse (UNAVAILABLE before anything) | cut (after the first message) | hold | fail
        self.generates = 0
        self.images: list[str] = []  # sha256 of every image it was asked to describe
        self.release = asyncio.Event()
        self.cancelled = 0
        self.name = ""
        self.running = 1
        self.waiting = 2

    async def Generate(self, request, context):  # noqa: N802 - the gRPC method's name
        self.generates += 1
        if self.mode == "refuse":
            await context.abort(grpc.StatusCode.UNAVAILABLE, "draining")
        yield tpb.GenerateResponse(accepted=tpb.Accepted(prompt_tokens=3))
        if self.mode == "cut":
            await context.abort(grpc.StatusCode.UNAVAILABLE, "the engine went away mid-stream")
        if self.mode == "hold":
            await self.release.wait()
        yield tpb.GenerateResponse(delta=tpb.TextDelta(text=self.name))
        yield tpb.GenerateResponse(finished=tpb.Finished(finish_reason=tpb.FINISH_REASON_STOP))

    async def Describe(self, request, context):  # noqa: N802
        if self.mode == "refuse":
            await context.abort(grpc.StatusCode.UNAVAILABLE, "draining")
        if self.mode == "fail":
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "images[0]: not an image")
        for index, image in enumerate(request.images):
            self.images.append(image.sha256)
            if self.mode == "hold":
                try:
                    await self.release.wait()
                except asyncio.CancelledError:
                    self.cancelled += 1
                    raise
            yield vpb.DescribeResponse(done=vpb.CaptionDone(image_index=index, caption=f"{self.name} {image.sha256}"))

    async def GetModelInfo(self, request, context):  # noqa: N802
        return common_pb2.ModelInfo(
            name=MODEL, state=common_pb2.MODEL_STATE_READY, running=self.running, waiting=self.waiting
        )


class Replicas:
    """Three engine servers behind one `ipv4:a,b,c` endpoint, routed by affinity."""

    def __init__(self) -> None:
        self.engines: dict[str, Engine] = {}
        self.servers: dict[str, grpc.aio.Server] = {}
        self.health: dict[str, health.aio.HealthServicer] = {}
        self.outcomes: Counter = Counter()

    async def start(self, count: int = 3) -> None:
        for _ in range(count):
            engine, server, checker = Engine(), grpc.aio.server(), health.aio.HealthServicer()
            text_engine_pb2_grpc.add_TextEngineServicer_to_server(engine, server)
            vision_engine_pb2_grpc.add_VisionEngineServicer_to_server(engine, server)
            health_pb2_grpc.add_HealthServicer_to_server(checker, server)
            port = server.add_insecure_port("127.0.0.1:0")
            await server.start()
            engine.name = f"127.0.0.1:{port}"
            self.engines[engine.name], self.servers[engine.name], self.health[engine.name] = engine, server, checker

    def routing(self, load_guard_gap: int | None = None) -> AffinityRouting:
        target = "ipv4:" + ",".join(self.engines)
        replica_set = ReplicaSet(MODEL, target, lambda address, name: open_replica_channel(address))
        return AffinityRouting(replica_set, load_guard_gap=load_guard_gap, count_route=self.count)

    def count(self, outcome: str) -> None:
        self.outcomes[outcome] += 1

    async def stop(self) -> None:
        for server in self.servers.values():
            await server.stop(None)


@pytest.fixture
async def replicas():
    group = Replicas()
    await group.start()
    yield group
    await group.stop()


@pytest.fixture
async def text(replicas):
    routing = replicas.routing(load_guard_gap=2)
    await routing.start()
    yield TextEngineClient(routing, MODEL), routing
    await routing.close()


@pytest.fixture
async def vision(replicas):
    routing = replicas.routing()
    await routing.start()
    yield VisionEngineClient(routing, MODEL), routing
    await routing.close()


async def answer(client: TextEngineClient, key: str) -> str:
    """The text of one generation (each fake engine answers its own name)."""
    events = [e async for e in client.generate([], SamplingParams(), request_id="r", timeout=5, affinity_key=key)]
    assert isinstance(events[0], Accepted) and isinstance(events[-1], Finished)
    return "".join(e.text for e in events if isinstance(e, TextDelta))


def image(n: int) -> ImageBytes:
    data = f"image {n}".encode()
    return ImageBytes(data, "image/png", Detail.AUTO, hashlib.sha256(data).hexdigest())


# --- targets and the replica set ---------------------------------------------------------------------------------


def test_targets_name_fixed_lists_or_a_host_to_look_up():
    assert parse_target("ipv4:10.0.0.1:1,10.0.0.2:2").fixed == (
        Address("10.0.0.1:1", "ipv4:10.0.0.1:1"),
        Address("10.0.0.2:2", "ipv4:10.0.0.2:2"),
    )
    assert parse_target("ipv6:[::1]:5").fixed == (Address("[::1]:5", "ipv6:[::1]:5"),)
    dns = parse_target("dns:///text-x.ns.svc.cluster.local:50051")
    assert (dns.host, dns.port, dns.resolves) == ("text-x.ns.svc.cluster.local", 50051, True)
    assert parse_target("dns://8.8.8.8/svc:7").host == "svc"
    assert parse_target("svc.ns:7").resolves  # a plain name is looked up too, as gRPC's default resolver does
    assert parse_target("127.0.0.1:7").fixed == (Address("127.0.0.1:7", "ipv4:127.0.0.1:7"),)
    assert parse_target("[::1]:7").fixed == (Address("[::1]:7", "ipv6:[::1]:7"),)
    assert parse_target("unix:/tmp/engine.sock").fixed == (Address("unix:/tmp/engine.sock", "unix:/tmp/engine.sock"),)
    with pytest.raises(ValueError, match="host:port"):
        parse_target("dns:///no-port")


async def test_a_looked_up_replica_set_keeps_the_channels_of_addresses_that_stay(caplog):
    answers = [["10.0.0.1", "10.0.0.2", "10.0.0.3"], ["10.0.0.2", "10.0.0.3", "10.0.0.5"]]
    dialled: list[tuple[str, str | None]] = []

    async def resolver(host: str, port: int) -> list[str]:
        assert (host, port) == ("svc.ns.svc.cluster.local", 50051)
        return answers.pop(0)

    def open_channel(address: str, server_name: str | None) -> grpc.aio.Channel:
        dialled.append((address, server_name))
        return grpc.aio.insecure_channel(address)

    replica_set = ReplicaSet(
        MODEL,
        "dns:///svc.ns.svc.cluster.local:50051",
        open_channel,
        resolver=resolver,
        resolve_interval=3600,
        close_grace=0,
    )
    caplog.set_level(logging.INFO, logger="services.api_gateway.clients.replicas")
    await replica_set.start()
    try:
        kept = replica_set.replicas["10.0.0.2:50051"]
        await replica_set.refresh()
        assert sorted(replica_set.replicas) == ["10.0.0.2:50051", "10.0.0.3:50051", "10.0.0.5:50051"]
        assert replica_set.replicas["10.0.0.2:50051"] is kept  # same channel, same in-flight count
        assert replica_set.ring.nodes == set(replica_set.replicas)
        # Every pod channel expects the Service's name on a TLS certificate, not the pod's IP.
        assert {name for _, name in dialled} == {"svc.ns.svc.cluster.local"}
        assert [a for a, _ in dialled] == [f"ipv4:10.0.0.{i}:50051" for i in (1, 2, 3, 5)]
        lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Replicas of")]
        assert lines == [
            "Replicas of m: 3 (added 10.0.0.1:50051, 10.0.0.2:50051, 10.0.0.3:50051)",
            "Replicas of m: 3 (added 10.0.0.5:50051; removed 10.0.0.1:50051)",
        ]
    finally:
        await replica_set.close()


async def test_a_failed_lookup_keeps_the_replicas_there_are():
    calls = 0

    async def resolver(host: str, port: int) -> list[str]:
        nonlocal calls
        calls += 1
        if calls > 1:
            raise OSError("Temporary failure in name resolution")
        return ["10.0.0.1"]

    replica_set = ReplicaSet(MODEL, "svc:1", lambda a, n: grpc.aio.insecure_channel(a), resolver=resolver)
    await replica_set.start()
    try:
        await replica_set.refresh()
        assert list(replica_set.replicas) == ["10.0.0.1:1"]
    finally:
        await replica_set.close()


async def test_no_replica_at_all_is_an_engine_unavailable_error():
    async def resolver(host: str, port: int) -> list[str]:
        raise OSError("Name or service not known")

    routing = AffinityRouting(
        ReplicaSet(MODEL, "dns:///gone:1", lambda a, n: grpc.aio.insecure_channel(a), resolver=resolver)
    )
    await routing.start()
    try:
        client = TextEngineClient(routing, MODEL)
        with pytest.raises(EngineUnavailableError, match="no replica of m found at dns:///gone:1"):
            await answer(client, "k")
        assert (await client.health(1)).startswith("UNREACHABLE: no replica of m")
    finally:
        await routing.close()


async def test_over_tls_a_pods_channel_expects_the_service_name_its_address_came_from(tmp_path):
    service = "engines.ns.svc.cluster.local"
    _, ca_cert, ca_key = make_ca(tmp_path, "svc-ca")
    named = issue(tmp_path, "engine", ca_cert, ca_key, server=True, dns_names=(service,), ip_addresses=())
    server, engine = await start_fake_text_engine(
        tls=TlsSettings(server_cert=str(named.cert), server_key=str(named.key))
    )
    port = int(engine.address.rsplit(":", 1)[1])
    gateway_tls = TlsSettings(ca=str(tmp_path / "svc-ca.pem"))

    async def resolver(host: str, port: int) -> list[str]:
        assert host == service
        return ["127.0.0.1"]

    def dial(address: str, server_name: str | None) -> grpc.aio.Channel:
        return open_replica_channel(address, gateway_tls, server_name=server_name)

    try:
        looked_up = AffinityRouting(ReplicaSet(MODEL, f"dns:///{service}:{port}", dial, resolver=resolver))
        fixed = AffinityRouting(ReplicaSet(MODEL, f"ipv4:127.0.0.1:{port}", dial))
        for routing in (looked_up, fixed):
            await routing.start()
        try:
            assert await TextEngineClient(looked_up, MODEL).health(5) == "SERVING"
            # Dialled by IP with no name to expect, the certificate (naming only the Service) is refused.
            assert "TLS handshake failed" in await TextEngineClient(fixed, MODEL).health(5)
        finally:
            for routing in (looked_up, fixed):
                await routing.close()
    finally:
        await server.stop(0)


# --- Generate: owners, failover, load guard ---------------------------------------------------------------------


async def test_a_conversation_goes_to_its_owner_every_time(text, replicas):
    client, routing = text
    for key in ("user:alice", "user:bob", "conv:1234"):
        owner = routing.replicas.ring.owner(key)
        assert {await answer(client, key) for _ in range(3)} == {owner}
    assert replicas.outcomes == {"owner": 9}


async def test_an_owner_that_refuses_fails_over_to_the_next_owner_and_is_skipped_for_a_while(text, replicas):
    client, routing = text
    owner, next_owner, _ = routing.replicas.ring.owners("user:alice")
    replicas.engines[owner].mode = "refuse"
    assert await answer(client, "user:alice") == next_owner
    assert await answer(client, "user:alice") == next_owner
    assert replicas.engines[owner].generates == 1  # refused once, then skipped (no second refusal)
    assert replicas.outcomes == {"next_owner": 2}


async def test_a_dead_owner_moves_only_its_own_keys(text, replicas):
    client, routing = text
    keys = [f"user:{i}" for i in range(30)]
    before = {key: await answer(client, key) for key in keys}
    dead = routing.replicas.ring.owner("user:alice")
    await replicas.servers[dead].stop(None)
    after = {key: await answer(client, key) for key in keys}
    for key in keys:
        if before[key] == dead:
            assert after[key] == routing.replicas.ring.owners(key)[1]
        else:
            assert after[key] == before[key]
    assert dead in before.values()


async def test_a_call_cut_after_its_first_message_is_never_retried(text, replicas):
    client, routing = text
    owner = routing.replicas.ring.owner("user:alice")
    replicas.engines[owner].mode = "cut"
    with pytest.raises(EngineUnavailableError, match="went away mid-stream"):
        await answer(client, "user:alice")
    assert [e.generates for e in replicas.engines.values()] == [1 if n == owner else 0 for n in replicas.engines]


async def test_every_replica_refusing_gives_the_engines_own_error(text, replicas):
    client, _ = text
    for engine in replicas.engines.values():
        engine.mode = "refuse"
    with pytest.raises(EngineUnavailableError, match="draining"):
        await answer(client, "user:alice")
    # One round over the three, then the fourth attempt (as gRPC's retry policy) after a backoff.
    assert sum(e.generates for e in replicas.engines.values()) == 4


async def test_the_load_guard_spills_to_the_least_loaded_replica_past_the_gap(text, replicas):
    client, routing = text  # load_guard_gap=2
    owner = routing.replicas.ring.owner("user:alice")
    replicas.engines[owner].mode = "hold"
    held = [
        client.generate([], SamplingParams(), request_id="r", timeout=5, affinity_key="user:alice") for _ in range(2)
    ]
    for call in held:
        assert isinstance(await anext(call), Accepted)  # both running on the owner
    assert routing.replicas.replicas[owner].in_flight == 2
    spilled = await answer(client, "user:alice")
    assert spilled != owner
    assert replicas.outcomes["load_guard"] == 1
    replicas.engines[owner].release.set()
    for call in held:
        assert [e async for e in call][-1].reason == "stop"
    assert routing.replicas.replicas[owner].in_flight == 0
    assert await answer(client, "user:alice") == owner  # load gone: back to the owner


async def test_one_call_in_flight_under_the_gap_stays_with_the_owner(text, replicas):
    client, routing = text
    owner = routing.replicas.ring.owner("user:alice")
    replicas.engines[owner].mode = "hold"
    held = client.generate([], SamplingParams(), request_id="r", timeout=5, affinity_key="user:alice")
    assert isinstance(await anext(held), Accepted)
    replicas.engines[owner].mode = "ok"
    assert await answer(client, "user:alice") == owner  # 1 - 0 < 2
    await held.aclose()  # closing the stream cancels the call
    assert routing.replicas.replicas[owner].in_flight == 0


async def test_health_is_serving_when_any_replica_serves_and_model_info_sums_the_load(text, replicas):
    client, _ = text
    names = list(replicas.engines)
    for name in names[1:]:
        await replicas.health[name].set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    assert await client.health(2) == "SERVING"
    await replicas.health[names[0]].set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    assert await client.health(2) == "NOT_SERVING"
    info = await client.model_info(2)
    assert (info.state, info.running, info.waiting) == ("ready", 3, 6)


async def test_a_plain_channel_is_round_robin_as_before(replicas):
    name = next(iter(replicas.engines))
    async with grpc.aio.insecure_channel(name) as channel:
        client = TextEngineClient(channel, MODEL)
        assert await answer(client, "ignored") == name
        assert await client.health(2) == "SERVING"
        assert client.routing.policy == "round_robin"


# --- Describe: split by owner, merged back ----------------------------------------------------------------------


async def test_describe_sends_each_image_to_its_owner_and_maps_captions_back(vision, replicas):
    client, routing = vision
    images = [image(n) for n in range(9)]
    captions = [c async for c in client.describe(images, user_prompt="", request_id="r", timeout=5)]
    by_index = {c.image_index: c.caption for c in captions}
    assert sorted(by_index) == list(range(9))
    for index, img in enumerate(images):
        assert by_index[index] == f"{routing.replicas.ring.owner(img.sha256)} {img.sha256}"
    for name, engine in replicas.engines.items():
        assert sorted(engine.images) == sorted(
            i.sha256 for i in images if routing.replicas.ring.owner(i.sha256) == name
        )
    assert len({routing.replicas.ring.owner(i.sha256) for i in images}) > 1, "the images all had one owner"

    # Turn 2 re-sends them with a new one: nothing moves, the new image goes to its own owner.
    seen_before = {name: list(engine.images) for name, engine in replicas.engines.items()}
    turn2 = [*images, image(99)]
    _ = [c async for c in client.describe(turn2, user_prompt="", request_id="r", timeout=5)]
    for name, engine in replicas.engines.items():
        added = engine.images[len(seen_before[name]) :]
        assert sorted(added) == sorted(i.sha256 for i in turn2 if routing.replicas.ring.owner(i.sha256) == name)


async def test_a_refused_describe_sends_its_images_to_their_next_owners(vision, replicas):
    client, routing = vision
    images = [image(n) for n in range(9)]
    ring = routing.replicas.ring
    refusing = ring.owner(images[0].sha256)
    replicas.engines[refusing].mode = "refuse"
    captions = {
        c.image_index: c.caption async for c in client.describe(images, user_prompt="", request_id="r", timeout=5)
    }
    assert sorted(captions) == list(range(9))
    for index, img in enumerate(images):
        owners = ring.owners(img.sha256)
        expected = owners[1] if owners[0] == refusing else owners[0]
        assert captions[index].split()[0] == expected
    assert replicas.engines[refusing].images == []


async def test_one_failing_sub_call_fails_the_describe_and_cancels_the_others(vision, replicas):
    client, routing = vision
    images = [image(n) for n in range(9)]
    ring = routing.replicas.ring
    failing = ring.owner(images[0].sha256)
    holding = next(ring.owner(i.sha256) for i in images if ring.owner(i.sha256) != failing)
    replicas.engines[failing].mode = "fail"
    replicas.engines[holding].mode = "hold"
    with pytest.raises(InvalidRequestError, match="not an image"):
        _ = [c async for c in client.describe(images, user_prompt="", request_id="r", timeout=5)]
    # The cancel reaches the server a moment later.
    await wait_until_async(lambda: replicas.engines[holding].cancelled, 2, "the cancel reaching the holding replica")
    assert replicas.engines[holding].cancelled == 1
    assert all(r.in_flight == 0 for r in routing.replicas.replicas.values())


async def test_abort_calls_ends_every_sub_call_of_a_describe(vision, replicas):
    client, _ = vision
    for engine in replicas.engines.values():
        engine.mode = "hold"
    images = [image(n) for n in range(9)]
    describing = client.describe(images, user_prompt="", request_id="r", timeout=5)
    reading = asyncio.ensure_future(anext(describing))
    await wait_until_async(lambda: client.calls_in_flight == 3, 2, "the describe's 3 sub-calls in flight")
    assert client.abort_calls() == 3
    with pytest.raises(EngineUnavailableError, match="shutting down"):
        await reading


# --- the conversation key ---------------------------------------------------------------------------------------


def chat_request(messages: list[dict], **fields):
    """A chat request's conversation (the key is computed on the protocol-neutral form)."""
    return chat_conversation(ChatCompletionRequest.model_validate({"model": TEXT, "messages": messages, **fields}))


SYSTEM = {"role": "system", "content": "You are terse."}
PICTURE = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}


def test_the_conversation_key_is_the_same_for_every_turn_of_a_conversation():
    turn1 = [SYSTEM, {"role": "user", "content": [{"type": "text", "text": "What is this?"}, PICTURE]}]
    turn2 = [*turn1, {"role": "assistant", "content": "A cat."}, {"role": "user", "content": "And its colour?"}]
    turn3 = [*turn2, {"role": "assistant", "content": "Grey."}, {"role": "user", "content": "Thanks"}]
    keys = {conversation_key(chat_request(turns)) for turns in (turn1, turn2, turn3)}
    assert len(keys) == 1
    assert keys.pop().startswith("conv:")


def test_different_conversations_get_different_keys():
    base = [SYSTEM, {"role": "user", "content": "Hello"}]
    keys = [
        conversation_key(chat_request(base)),
        conversation_key(chat_request([SYSTEM, {"role": "user", "content": "Hello!"}])),
        conversation_key(chat_request([{"role": "system", "content": "You are verbose."}, base[1]])),
        conversation_key(chat_request([base[1]])),
        conversation_key(chat_request([SYSTEM, {"role": "user", "content": [PICTURE]}])),
        conversation_key(chat_request([{"role": "user", "content": "You are terse."}, base[1]])),  # roles count
    ]
    assert len(set(keys)) == len(keys)


def test_the_user_field_is_the_key_when_sent():
    assert conversation_key(chat_request([{"role": "user", "content": "Hi"}], user="alice")) == "user:alice"
    assert conversation_key(chat_request([{"role": "user", "content": "Other"}], user="alice")) == "user:alice"


async def test_the_chat_service_routes_every_choice_by_the_conversation_key():
    engine = FakeTextEngine(TEXT, hello_script())
    state = make_state({TEXT: engine})
    body = ChatCompletionRequest.model_validate(
        {"model": TEXT, "messages": [{"role": "user", "content": "Hi"}], "user": "alice", "n": 2}
    )
    await state.chat.complete(await state.chat.plan(body), "rid-1")
    assert [call.affinity_key for call in engine.calls] == ["user:alice", "user:alice"]
