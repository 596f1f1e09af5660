"""The consistent-hash ring: owners in ring order, balanced shares, and only a leaving or joining replica's
keys moving."""

from __future__ import annotations

from collections import Counter

from services.api_gateway.clients.hash_ring import HashRing, point

REPLICAS = ["10.0.0.1:50051", "10.0.0.2:50051", "10.0.0.3:50051"]
KEYS = [f"key-{i}" for i in range(10_000)]


def owners_of(ring: HashRing) -> dict[str, str]:
    return {key: ring.owner(key) for key in KEYS}


def test_owners_are_every_replica_once_owner_first():
    ring = HashRing(REPLICAS)
    for key in KEYS[:200]:
        owners = ring.owners(key)
        assert sorted(owners) == sorted(REPLICAS)
        assert owners[0] == ring.owner(key)


def test_the_ring_is_the_same_in_every_process_and_for_any_order_of_replicas():
    # blake2b, not hash(): fixed values whatever PYTHONHASHSEED says, so every gateway agrees on the owners.
    assert point("a") == 0x40F89E395B66422F
    assert HashRing(REPLICAS).owners("key-0") == ["10.0.0.2:50051", "10.0.0.1:50051", "10.0.0.3:50051"]
    assert owners_of(HashRing(REPLICAS)) == owners_of(HashRing(reversed(REPLICAS)))


def test_shares_are_balanced():
    shares = Counter(owners_of(HashRing(REPLICAS)).values())
    even = len(KEYS) / len(REPLICAS)
    assert set(shares) == set(REPLICAS)
    for share in shares.values():
        assert abs(share - even) / even < 0.15, shares


def test_a_replica_that_leaves_moves_only_its_own_keys():
    before = owners_of(HashRing(REPLICAS))
    after = owners_of(HashRing(REPLICAS[:2]))
    moved = {key for key in KEYS if before[key] != after[key]}
    assert moved == {key for key in KEYS if before[key] == REPLICAS[2]}
    # ... and each of them to the next owner the full ring named for it.
    ring = HashRing(REPLICAS)
    assert all(after[key] == ring.owners(key)[1] for key in moved)
    # The removed replica's keys are shared out, not all dumped on one neighbour.
    assert min(Counter(after[key] for key in moved).values()) > len(moved) / 4


def test_a_replica_that_joins_takes_only_keys_and_a_fair_share():
    before = owners_of(HashRing(REPLICAS))
    joined = "10.0.0.4:50051"
    after = owners_of(HashRing([*REPLICAS, joined]))
    moved = {key for key in KEYS if before[key] != after[key]}
    assert all(after[key] == joined for key in moved)  # nothing moves between the replicas that stayed
    assert abs(len(moved) - len(KEYS) / 4) / (len(KEYS) / 4) < 0.15


def test_an_empty_ring_owns_nothing_and_one_replica_owns_everything():
    assert HashRing([]).owners("k") == []
    assert HashRing([]).owner("k") is None
    assert {HashRing(["only:1"]).owner(key) for key in KEYS[:100]} == {"only:1"}
