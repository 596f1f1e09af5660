"""The replicas behind one engine endpoint, for affinity routing: addresses, one channel each, and whether each
can take a call now.

An endpoint names its replicas as gRPC targets do (clients/channels.py):

* `dns:///text-x.ns.svc.cluster.local:50051`: looked up with the system resolver (a headless Service gives one
  address per ready pod), again every `resolve_interval_secs`, and sooner (at most once a second) after a
  replica refused a call: a pod that went away has usually left the Service's DNS too.
* a plain `host:port`: the same (gRPC's default resolver is DNS, so round_robin saw every address too);
  an IP literal is one replica. (A name that resolves to several addresses of one process, `localhost` to
  127.0.0.1 and ::1, is that many replicas: harmless, they share the one process's caches.)
* `ipv4:a:p,b:p` / `ipv6:[a]:p,...`: a fixed list. Any other scheme (`unix:`...) is one replica, dialled as is.

A replica whose address stays keeps its channel; one that leaves has its channel closed once the calls on it
are done (a draining pod leaves DNS while it finishes them). Every channel is kept connecting, so a replica
that comes back is seen by its channel state without waiting for a call.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import grpc

from .hash_ring import HashRing

log = logging.getLogger(__name__)

# A replica that refused a call before committing it is skipped this long, unless its channel reconnects first.
# Its channel state covers a dead or draining pod within moments; this bridges the race until it does (and
# covers an engine that is up but refuses: a failed model, a dead batch loop).
REFUSED_SECS = 2.0
# The soonest a refusal asks DNS again.
MIN_RESOLVE_GAP_SECS = 1.0
_OTHER_SCHEMES = ("unix:", "unix-abstract:", "vsock:", "xds:")
_DOWN = (grpc.ChannelConnectivity.TRANSIENT_FAILURE, grpc.ChannelConnectivity.SHUTDOWN)


@dataclass(frozen=True)
class Address:
    """One replica: its name on the ring (`10.0.0.5:50051`) and the target its channel dials."""

    name: str
    target: str


@dataclass(frozen=True)
class EndpointTarget:
    """An endpoint, parsed: a name to look up (`host`, `port`), or a fixed list of addresses."""

    host: str = ""
    port: int = 0
    fixed: tuple[Address, ...] = ()

    @property
    def resolves(self) -> bool:
        return not self.fixed


def parse_target(target: str) -> EndpointTarget:
    """What `target` names (ValueError when a dns or ipv4/ipv6 target has no port)."""
    if target.startswith(("ipv4:", "ipv6:")):
        scheme, rest = target.split(":", 1)
        addresses = [a.strip() for a in rest.split(",") if a.strip()]
        return EndpointTarget(fixed=tuple(Address(a, f"{scheme}:{a}") for a in addresses))
    if target.startswith(_OTHER_SCHEMES):
        return EndpointTarget(fixed=(Address(target, target),))
    name = target.removeprefix("dns:")
    if name.startswith("//"):  # dns://authority/host:port: the authority (a DNS server) is not ours to use
        name = name[2:].split("/", 1)[-1]
    host, port = _split_host_port(name, target)
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return EndpointTarget(host=host, port=port)
    return EndpointTarget(fixed=(_address(ip, port),))


def _split_host_port(name: str, target: str) -> tuple[str, int]:
    host, sep, port = name.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"engine endpoint {target!r}: expected host:port")
    return host.strip("[]"), int(port)


def _address(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int) -> Address:
    if ip.version == 6:
        return Address(f"[{ip}]:{port}", f"ipv6:[{ip}]:{port}")
    return Address(f"{ip}:{port}", f"ipv4:{ip}:{port}")


async def resolve(host: str, port: int) -> list[str]:
    """The addresses `host` resolves to (the system resolver, as gRPC's DNS resolver asks it)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [info[4][0] for info in infos]


@dataclass(eq=False)
class Replica:
    """One replica's channel, and what the router knows of it. Event-loop only."""

    address: Address
    channel: grpc.aio.Channel
    in_flight: int = 0  # this gateway's calls on it now (the load guard's measure)
    state: grpc.ChannelConnectivity = grpc.ChannelConnectivity.IDLE
    refused_until: float = 0.0
    stubs: dict = field(default_factory=dict)
    watcher: asyncio.Task | None = None

    @property
    def name(self) -> str:
        return self.address.name

    def ready(self, now: float | None = None) -> bool:
        """Worth a call: its channel is not failing, and it did not just refuse one. IDLE and CONNECTING count as
        ready: a call on them waits for the connection, and a refusal fails over at once."""
        return self.state not in _DOWN and (now if now is not None else time.monotonic()) >= self.refused_until

    def refused(self) -> None:
        """It refused a call before committing it (gone, draining, or not serving)."""
        self.refused_until = time.monotonic() + REFUSED_SECS

    def stub(self, factory):
        """The `factory` stub (TextEngineStub...) over this replica's channel, made once."""
        if factory not in self.stubs:
            self.stubs[factory] = factory(self.channel)
        return self.stubs[factory]


class ReplicaSet:
    """The replicas of one model's endpoint, their ring, and the lookups that keep both current."""

    def __init__(
        self,
        model: str,
        target: str,
        open_channel: Callable[[str, str | None], grpc.aio.Channel],
        *,
        resolve_interval: float = 10.0,
        close_grace: float = 600.0,
        resolver: Callable[[str, int], Awaitable[list[str]]] = resolve,
    ) -> None:
        """`open_channel(address_target, server_name)` dials one replica; `server_name` is the looked-up host
        (the name a TLS certificate carries) or None for fixed addresses."""
        self.model = model
        self.target = target
        self._parsed = parse_target(target)
        self._open_channel = open_channel
        self._interval = resolve_interval
        self._close_grace = close_grace
        self._resolver = resolver
        self.replicas: dict[str, Replica] = {}
        self.ring = HashRing([])
        self._task: asyncio.Task | None = None
        self._wake = asyncio.Event()
        self._last_resolve = float("-inf")
        self._retiring: set[asyncio.Task] = set()
        self._resolve_error = ""

    async def start(self) -> None:
        """Resolve once now (a failure is logged and retried), then keep resolving if the target is a name."""
        await self.refresh()
        if self._parsed.resolves:
            self._task = asyncio.create_task(self._refresh_loop())

    async def close(self) -> None:
        """Stop resolving and close every channel (calls still on them are cancelled, as at any shutdown)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for task in list(self._retiring):
            task.cancel()
        await asyncio.gather(*self._retiring, return_exceptions=True)
        for replica in list(self.replicas.values()):
            await self._close(replica, grace=None)
        self.replicas.clear()

    def ready_count(self) -> int:
        now = time.monotonic()
        return sum(r.ready(now) for r in self.replicas.values())

    def unavailable_count(self) -> int:
        return len(self.replicas) - self.ready_count()

    def why_none(self) -> str:
        """Why there is no replica at all (for the error a call gets)."""
        reason = f": {self._resolve_error}" if self._resolve_error else ""
        return f"no replica of {self.model} found at {self.target}{reason}"

    async def refresh(self) -> None:
        """Look the target up and apply what changed (a failed lookup keeps the replicas there are)."""
        self._last_resolve = time.monotonic()
        try:
            addresses = await self._addresses()
        except (OSError, ValueError) as exc:
            if str(exc) != self._resolve_error:
                log.warning(
                    "Replicas of %s: cannot resolve %s (%s); keeping %d",
                    self.model,
                    self.target,
                    exc,
                    len(self.replicas),
                )
            self._resolve_error = str(exc)
            return
        self._resolve_error = ""
        self._apply(addresses)

    async def ensure_resolved(self) -> None:
        """With no replica known, look again now (at most once a second): the first lookup may have failed."""
        if not self.replicas and time.monotonic() - self._last_resolve >= MIN_RESOLVE_GAP_SECS:
            await self.refresh()

    def refused(self, replica: Replica) -> None:
        """`replica` refused a call: skip it for a while, and ask DNS again soon."""
        replica.refused()
        if self._parsed.resolves:
            self._wake.set()

    async def _addresses(self) -> list[Address]:
        if not self._parsed.resolves:
            return list(self._parsed.fixed)
        ips = await self._resolver(self._parsed.host, self._parsed.port)
        unique = dict.fromkeys(_address(ipaddress.ip_address(ip.split("%")[0]), self._parsed.port) for ip in ips)
        return list(unique)

    def _apply(self, addresses: list[Address]) -> None:
        wanted = {a.name: a for a in addresses}
        added = [a for name, a in wanted.items() if name not in self.replicas]
        removed = [r for name, r in self.replicas.items() if name not in wanted]
        if not added and not removed:
            return
        server_name = self._parsed.host if self._parsed.resolves else None
        for address in added:
            replica = Replica(address, self._open_channel(address.target, server_name))
            replica.watcher = asyncio.create_task(self._watch(replica))
            self.replicas[address.name] = replica
        for replica in removed:
            del self.replicas[replica.name]
            task = asyncio.create_task(self._close(replica, grace=self._close_grace))
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)
        self.ring = HashRing(self.replicas)
        changes = [f"added {', '.join(a.name for a in added)}"] if added else []
        changes += [f"removed {', '.join(r.name for r in removed)}"] if removed else []
        log.info("Replicas of %s: %d (%s)", self.model, len(self.replicas), "; ".join(changes))

    async def _refresh_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):  # woken early by a refusal, or the interval is over
                await asyncio.wait_for(self._wake.wait(), self._interval)
            self._wake.clear()
            gap = MIN_RESOLVE_GAP_SECS - (time.monotonic() - self._last_resolve)
            if gap > 0:
                await asyncio.sleep(gap)
            try:
                await self.refresh()
            except Exception:  # noqa: BLE001 - the loop must outlive any one failed lookup
                log.exception("Replicas of %s: lookup failed", self.model)

    @staticmethod
    async def _watch(replica: Replica) -> None:
        """Follow the channel's state, and keep it connecting (a channel left IDLE after a GOAWAY or a lost
        connection would otherwise reconnect only on the next call). Back to READY clears a refusal."""
        channel = replica.channel
        while True:
            replica.state = channel.get_state(try_to_connect=True)
            if replica.state == grpc.ChannelConnectivity.SHUTDOWN:
                return
            if replica.state == grpc.ChannelConnectivity.READY:
                replica.refused_until = 0.0
            await channel.wait_for_state_change(replica.state)

    @staticmethod
    async def _close(replica: Replica, grace: float | None) -> None:
        """Close a replica's channel; with `grace`, after the calls on it finished (or the grace is over)."""
        if replica.watcher is not None:
            replica.watcher.cancel()
            await asyncio.gather(replica.watcher, return_exceptions=True)
        await replica.channel.close(grace)
