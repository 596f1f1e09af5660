"""A consistent-hash ring: which replica owns a key, and who is next when it cannot serve.

Each replica is hashed onto a ring of 64-bit points at `VNODES` places ("virtual nodes"); a key belongs to
the first replica point at or after the key's own point, going round. Two properties make it the right
tool for cache affinity:

* **Only a leaving or joining replica's share moves.** Removing a replica hands each of its arcs to the
  replica after it; adding one takes arcs only from others. Every other key keeps its owner, so the caches
  of the replicas that stayed stay warm.
* **Balance.** With ~160 points per replica the arcs even out: each replica's share is within a few
  percent of 1/N (the spread falls as 1/sqrt(VNODES)).

Points come from blake2b of the replica's name (its `host:port`), never Python's `hash()` (salted per
process): every gateway replica, and every restart, computes the same ring from the same addresses.
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Iterable

VNODES = 160


def point(text: str) -> int:
    """A stable 64-bit point on the ring."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


class HashRing:
    """An immutable ring over a set of replica names (build a new one when the set changes)."""

    def __init__(self, nodes: Iterable[str], vnodes: int = VNODES) -> None:
        self.nodes: frozenset[str] = frozenset(nodes)
        pairs = sorted((point(f"{node}#{i}"), node) for node in self.nodes for i in range(vnodes))
        self._points = [p for p, _ in pairs]
        self._owners = [n for _, n in pairs]

    def owners(self, key: str) -> list[str]:
        """Every replica, in the order the key prefers them: its owner first, then the distinct replicas that
        follow on the ring (the one a caller falls back to when the owner is down, and so on)."""
        if not self._points:
            return []
        found: list[str] = []
        start = bisect.bisect_left(self._points, point(key))
        size = len(self._points)
        for step in range(size):
            node = self._owners[(start + step) % size]
            if node not in found:
                found.append(node)
                if len(found) == len(self.nodes):
                    break
        return found

    def owner(self, key: str) -> str | None:
        """The key's owner (None on an empty ring)."""
        owners = self.owners(key)
        return owners[0] if owners else None
