import asyncio

from services.common.captions import CaptionDelta, CaptionDone
from services.vision_engine.captioner.batcher import CaptionJob, CaptionResult
from services.vision_engine.captioner.cache import CachedCaption, CacheKey, CaptionCache
from services.vision_engine.captioner.flights import FlightBoard


def key(n: int) -> CacheKey:
    return CacheKey.of(f"sha{n}", "auto", "Describe", max_tokens=8, model="m")


def caption(text: str) -> CachedCaption:
    return CachedCaption(text, "stop", 4, 3)


def test_lru_evicts_by_entries_and_bytes():
    cache = CaptionCache(max_entries=2, max_bytes=100)
    cache.put(key(1), caption("a"))
    cache.put(key(2), caption("b"))
    assert cache.get(key(1)).text == "a"  # 1 is now most recent
    cache.put(key(3), caption("c"))
    assert cache.get(key(2)) is None and cache.get(key(1)) is not None
    by_bytes = CaptionCache(max_entries=10, max_bytes=10)
    by_bytes.put(key(1), caption("x" * 6))
    by_bytes.put(key(2), caption("y" * 6))
    assert len(by_bytes) == 1 and by_bytes.size_bytes == 6 and by_bytes.get(key(2)) is not None


def test_key_depends_on_every_part():
    def of(sha="sha", detail="auto", instruction="p", max_tokens=8, model="org/a", revision=None):
        return CacheKey.of(sha, detail, instruction, max_tokens=max_tokens, model=model, revision=revision)

    base = of()
    assert base == of() and of(revision="") == base  # no revision and an empty one are the same checkpoint
    variants = [
        of(sha="sha2"),
        of(detail="low"),
        of(detail="high"),
        of(instruction="q"),
        of(max_tokens=9),
        of(model="org/b"),
        of(model="/models/a"),
        of(revision="abc123"),
    ]
    assert len({base, *variants}) == len(variants) + 1
    # Instruction and limit are hashed with a separator: moving a digit from one to the other changes the key.
    assert of(instruction="p", max_tokens=12) != of(instruction="p1", max_tokens=2)


def make_job(flight) -> CaptionJob:
    return CaptionJob(None, "i", 16, 8, flight.on_delta, flight.on_done, flight.on_error)


async def test_single_flight_shares_one_job_and_caches_the_result():
    board = FlightBoard(CaptionCache(10, 1000))
    started = []

    def start(flight):
        started.append(flight)
        return make_job(flight)

    a, b = asyncio.Queue(), asyncio.Queue()
    first = board.join_or_start(key(1), start)
    first.subscribe(a, 0)
    first.on_delta("A red ")
    second = board.join_or_start(key(1), start)
    second.subscribe(b, 3)  # a late subscriber gets the text so far
    first.on_delta("square")
    first.on_done(CaptionResult("A red square", "stop", 4, 3, 12.0))
    assert len(started) == 1 and second is first
    assert [a.get_nowait() for _ in range(3)][:2] == [CaptionDelta(0, "A red "), CaptionDelta(0, "square")]
    assert [b.get_nowait() for _ in range(3)][:2] == [CaptionDelta(3, "A red "), CaptionDelta(3, "square")]
    assert board.cached(key(1)).text == "A red square" and board.in_flight == 0


async def test_work_is_cancelled_only_when_the_last_subscriber_leaves():
    board = FlightBoard(CaptionCache(10, 1000))
    flight = board.join_or_start(key(2), make_job)
    a, b = asyncio.Queue(), asyncio.Queue()
    flight.subscribe(a, 0)
    flight.subscribe(b, 0)
    flight.unsubscribe(a)
    assert not flight.job.cancelled.is_set()
    flight.unsubscribe(b)
    assert flight.job.cancelled.is_set() and board.in_flight == 0
    flight.on_done(CaptionResult("late", "stop", 1, 1, 1.0))  # nobody listening: nothing delivered
    assert a.empty() and b.empty()
    assert isinstance(board.cached(key(2)), CachedCaption)  # a finished caption is still worth keeping
    assert CaptionDone  # the event type the engine turns results into
