"""Which replica an engine call goes to: `gateway.routing` (services/common/config.py, `RoutingSettings`).

Two policies behind one small interface (`Routing`), used by `EngineClient` (clients/base.py):

* **round_robin**: one channel over every address of the endpoint; gRPC's balancer picks a replica per call
  and retries uncommitted UNAVAILABLE calls itself (clients/channels.py). Nothing here decides anything.
* **affinity**: one channel per replica (clients/replicas.py) and a consistent-hash ring over them
  (clients/hash_ring.py). A call with key K goes to K's owner; a replica that is down (its channel in
  TRANSIENT_FAILURE) or just refused a call is skipped for the next owner on the ring. Keys are the caller's:
  an image's sha256 for Describe (the vision engine's caption cache is per replica), a conversation key for
  Generate (the text engine's prefix cache holds the conversation's history on one replica).

A call that fails UNAVAILABLE before its first message (a SIGKILLed replica refuses the connection; a draining
one sends GOAWAY and refuses) fails over to the next owner (`Failover`); once a message arrived it is never
tried again. When every replica refused, another round follows after a backoff, up to `MAX_ATTEMPTS` (or one
per replica, if more) attempts in all, as gRPC's own retry policy does for round_robin; then the call fails
with the last refusal, translated like any other (a 503).

**The load guard** (text only; `routing.load_guard_gap`, default 8). Affinity alone would pile a hot
conversation, or many that hash together, onto one replica. The gateway counts its own calls in flight per
replica (`Replica.in_flight`: from the call's start to its end), and sends a conversation to the least-loaded
ready replica instead of its owner when `owner_in_flight - least_in_flight >= load_guard_gap`. Why a gap, not
"always the least loaded": a continuous-batching engine admits requests into its running batch (up to
`max_num_seqs`, 16 by default), so a few extra requests on the owner cost it a little per decode step, far
less than re-prefilling the conversation's whole history on a replica that never saw it. Past the gap, the
owner runs a batch that much fuller (and, beyond `max_num_seqs`, queues) while another replica idles: the
wait costs more than the cache saves. 8 is half the default batch: the owner is still admitting at once, and
the other replica has room for the spill. A gateway sees only its own calls, so with several gateways each
guards its own share of the load. Each decision is counted in `proxyvision_gateway_routes_total{outcome}`
(`owner`, `next_owner`, `load_guard`, `round_robin`); many `load_guard` means the gap is too small for the
traffic (or the replicas too few), none at all under uneven load means it is too large.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import grpc

from services.common.config import RoutingSettings, TlsSettings
from services.common.errors import EngineUnavailableError

from .channels import RETRY_POLICY, open_channel, open_replica_channel
from .replicas import Replica, ReplicaSet

# As RETRY_POLICY's: attempts in all (the first included) and the backoff between rounds.
MAX_ATTEMPTS = RETRY_POLICY["maxAttempts"]
INITIAL_BACKOFF_SECS = 0.05
MAX_BACKOFF_SECS = 0.5


def _no_count(outcome: str) -> None:
    pass


@dataclass(eq=False)
class SharedChannel:
    """The one channel of a round_robin endpoint (gRPC balances it), with its stubs."""

    channel: grpc.aio.Channel
    stubs: dict = field(default_factory=dict)

    def stub(self, factory):
        if factory not in self.stubs:
            self.stubs[factory] = factory(self.channel)
        return self.stubs[factory]


@dataclass(frozen=True)
class Route:
    """Where one attempt of a call goes, and why (`outcome`: owner, next_owner, load_guard, round_robin)."""

    outcome: str
    target: Replica | SharedChannel

    @property
    def channel(self) -> grpc.aio.Channel:
        return self.target.channel

    @property
    def name(self) -> str:
        return self.target.name if isinstance(self.target, Replica) else "*"

    @property
    def fails_over(self) -> bool:
        """Whether a refusal here is ours to retry elsewhere (on a shared channel gRPC already retried)."""
        return isinstance(self.target, Replica)

    def stub(self, factory):
        return self.target.stub(factory)

    def begin(self) -> None:
        if isinstance(self.target, Replica):
            self.target.in_flight += 1

    def end(self) -> None:
        if isinstance(self.target, Replica):
            self.target.in_flight -= 1


class Routing(Protocol):
    """What `EngineClient` needs from a policy."""

    policy: str

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def route(self, key: str, skip: set[str]) -> Route | None:
        """The route for a call keyed `key`, avoiding the replicas named in `skip`; None if none is left."""

    async def everyone(self) -> list[Route]:
        """A route to each replica (health and GetModelInfo ask them all)."""

    def refused(self, route: Route) -> None:
        """`route`'s replica refused a call before committing it."""

    def count(self, outcome: str) -> None:
        """A call was served by a route of this outcome (the routes metric)."""

    def size(self) -> int:
        """How many replicas there are (1 for a shared channel)."""

    def why_none(self) -> str:
        """Why `route` found nothing."""


class RoundRobinRouting:
    """Today's behaviour: one channel, gRPC's round_robin balancer and retries."""

    policy = "round_robin"

    def __init__(self, channel: grpc.aio.Channel, count_route: Callable[[str], None] = _no_count) -> None:
        self._shared = SharedChannel(channel)
        self._route = Route("round_robin", self._shared)
        self.count = count_route

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        await self._shared.channel.close()

    async def route(self, key: str, skip: set[str]) -> Route | None:
        return None if skip else self._route

    async def everyone(self) -> list[Route]:
        return [self._route]

    def refused(self, route: Route) -> None:
        pass

    def size(self) -> int:
        return 1

    def why_none(self) -> str:
        return "the engine refused the call"


class AffinityRouting:
    """Each call to the ready replica that owns its key (text: unless the load guard spills it)."""

    policy = "affinity"

    def __init__(
        self, replicas: ReplicaSet, *, load_guard_gap: int | None = None, count_route: Callable[[str], None] = _no_count
    ) -> None:
        """`load_guard_gap`: None for no load guard (the vision engine: a caption made twice costs the whole
        caption, and an image's calls are short)."""
        self.replicas = replicas
        self._gap = load_guard_gap
        self.count = count_route

    async def start(self) -> None:
        await self.replicas.start()

    async def close(self) -> None:
        await self.replicas.close()

    async def route(self, key: str, skip: set[str]) -> Route | None:
        await self.replicas.ensure_resolved()
        by_name = self.replicas.replicas
        now = time.monotonic()
        if not key:  # nothing to be faithful to: the least loaded (ring order breaks ties)
            pool = self._pool(list(by_name.values()), skip, now)
            return Route("round_robin", min(pool, key=lambda r: r.in_flight)) if pool else None
        ring_order = [by_name[name] for name in self.replicas.ring.owners(key)]
        pool = self._pool(ring_order, skip, now)
        if not pool:
            return None
        choice = pool[0]
        if self._gap is not None and choice.ready(now):
            least = min((r for r in pool if r.ready(now)), key=lambda r: r.in_flight)
            if choice.in_flight - least.in_flight >= self._gap:
                return Route("load_guard", least)
        return Route("owner" if choice is ring_order[0] else "next_owner", choice)

    @staticmethod
    def _pool(replicas: list[Replica], skip: set[str], now: float) -> list[Replica]:
        """The replicas not skipped: ready ones first, in the given order; then, as a last resort (a refusal
        may be stale, a state a moment old), the others."""
        left = [r for r in replicas if r.name not in skip]
        return [r for r in left if r.ready(now)] + [r for r in left if not r.ready(now)]

    async def everyone(self) -> list[Route]:
        await self.replicas.ensure_resolved()
        return [Route("owner", r) for r in self.replicas.replicas.values()]

    def refused(self, route: Route) -> None:
        if isinstance(route.target, Replica):
            self.replicas.refused(route.target)

    def size(self) -> int:
        return len(self.replicas.replicas)

    def why_none(self) -> str:
        return self.replicas.why_none()


class Failover:
    """The attempts of one call (or of one Describe's sub-calls together): the next route for a key, skipping the
    replicas that refused it; when all did, a backoff and another round, up to MAX_ATTEMPTS in all (or one per
    replica, when there are more). Event-loop only."""

    def __init__(self, routing: Routing) -> None:
        self._routing = routing
        self._skip: set[str] = set()
        self._refusals = 0
        self._delay = INITIAL_BACKOFF_SECS

    async def route(self, key: str) -> Route:
        """Where the next attempt for `key` goes (EngineUnavailableError when there is no replica at all)."""
        route = await self._routing.route(key, self._skip)
        if route is None and self._skip:  # every replica refused: another round, after a pause
            await asyncio.sleep(self._delay)
            self._delay = min(self._delay * 2, MAX_BACKOFF_SECS)
            self._skip.clear()
            route = await self._routing.route(key, self._skip)
        if route is None:
            raise EngineUnavailableError(f"Engine unavailable: {self._routing.why_none()}")
        return route

    def refused(self, route: Route) -> bool:
        """`route` refused before committing: record it; True when another attempt may follow."""
        if not route.fails_over:
            return False
        self._routing.refused(route)
        self._skip.add(route.name)
        self._refusals += 1
        return self._refusals < max(MAX_ATTEMPTS, self._routing.size())


def open_routing(
    model: str,
    endpoint: str,
    policy: str,
    tls: TlsSettings | None,
    settings: RoutingSettings,
    *,
    load_guard: bool,
    close_grace: float,
    count_route: Callable[[str], None] = _no_count,
) -> Routing:
    """The routing of one model's endpoint under `policy` (round_robin or affinity); `load_guard` for text
    engines. `close_grace`: how long a replica that left may finish its calls before its channel is closed."""
    if policy == "round_robin":
        return RoundRobinRouting(open_channel(endpoint, tls), count_route)
    replicas = ReplicaSet(
        model,
        endpoint,
        lambda target, server_name: open_replica_channel(target, tls, server_name=server_name),
        resolve_interval=settings.resolve_interval_secs,
        close_grace=close_grace,
    )
    gap = settings.load_guard_gap if load_guard else None
    return AffinityRouting(replicas, load_guard_gap=gap, count_route=count_route)
