"""CountSink contract, written once for the memory and Redis backends, and DriftFeed merging windows
across "replicas" (several sinks over one store)."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import redis
from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.connection import Connection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from monitoring.drift import BinCounts, DriftTracker, WindowPolicy
from monitoring.psi import Profile, profile_from_sample
from monitoring.sinks import (
    CountSink,
    CountSinkError,
    DriftFeed,
    MemoryCounts,
    MemoryCountSink,
    RedisCountSink,
    open_count_sink,
)


@dataclass
class Backend:
    """Opens sinks that share one store, as separate processes would."""

    name: str
    url: str | None = None
    store: MemoryCounts | None = None
    prefix: str = ""

    def open(self, ttl_seconds: int = 600) -> CountSink:
        if self.store is not None:
            return MemoryCountSink(self.store)
        assert self.url is not None
        return RedisCountSink(Redis.from_url(self.url), self.prefix, ttl_seconds=ttl_seconds, owns_client=True)


@pytest.fixture(params=["memory", "redis"])
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    """A fresh store; Redis keys live under a prefix of their own."""
    if request.param == "memory":
        yield Backend("memory", store=MemoryCounts())
    else:
        yield Backend("redis", url=request.getfixturevalue("redis_url"), prefix=f"test:{secrets.token_hex(4)}")


def run(scenario: Callable[[], Awaitable[Any]]) -> Any:
    return asyncio.run(asyncio.wait_for(scenario(), 30))


def counts(rows: int, **bins: list[int]) -> BinCounts:
    return BinCounts(rows, {name: np.array(values, np.int64) for name, values in bins.items()})


def padded(array: npt.NDArray[np.int64], size: int) -> list[int]:
    out = np.zeros(size, np.int64)
    out[: array.size] = array
    return out.tolist()


PROFILES: list[tuple[str, Profile]] = [
    (f"f{i}", profile_from_sample(np.random.default_rng(i).normal(size=5000))) for i in range(3)
]


def tracker(policy: WindowPolicy) -> DriftTracker:
    return DriftTracker(PROFILES, policy, route="r", model="m", version="1")


def data(rows: int, seed: int, shift: float = 0.0) -> npt.NDArray[np.float64]:
    return np.random.default_rng(seed).normal(shift, 1.0, size=(rows, 3))


class TestSink:
    @pytest.mark.parametrize(
        "batches",
        [
            [counts(3, a=[1, 2, 0], b=[3]), counts(4, a=[0, 0, 4], b=[1, 1, 1, 1])],
            [counts(1, a=[1]), counts(1, a=[0, 1]), counts(1, a=[0, 0, 1])],
            [counts(0, a=[0, 0, 0])],
            [counts(10, a=[10], b=[0, 0, 0, 0, 10]), counts(5, b=[5]), counts(2, a=[1, 1], b=[0, 2])],
        ],
    )
    def test_replicas_merge_to_sum(self, backend: Backend, batches: list[BinCounts]) -> None:
        """Counts added by two replicas (alternating) read back, from either, as their sum."""

        async def scenario() -> list[BinCounts]:
            one, two = backend.open(), backend.open()
            for i, batch in enumerate(batches):
                await (one if i % 2 == 0 else two).add("route:1", 0, batch)
            totals = [await one.totals("route:1", 0), await two.totals("route:1", 0)]
            await one.close()
            await two.close()
            return totals

        for total in run(scenario):
            assert total.rows == sum(b.rows for b in batches)
            for name in ("a", "b"):
                expected = np.zeros(5, np.int64)
                for b in batches:
                    if name in b.bins:
                        expected[: b.bins[name].size] += b.bins[name]
                assert padded(total.bins.get(name, np.zeros(0, np.int64)), 5) == expected.tolist()

    def test_windows_and_keys_apart(self, backend: Backend) -> None:
        """Each (key, window id) has its own totals; an unknown window reads as empty."""

        async def scenario() -> tuple[BinCounts, ...]:
            sink = backend.open()
            await sink.add("k1", 0, counts(1, a=[1]))
            await sink.add("k1", 1, counts(2, a=[0, 2]))
            await sink.add("k2", 0, counts(3, a=[0, 0, 3]))
            result = (await sink.totals("k1", 0), await sink.totals("k1", 1), await sink.totals("k2", 0), await sink.totals("k9", 5))
            await sink.close()
            return result

        k1w0, k1w1, k2w0, empty = run(scenario)
        assert (k1w0.rows, k1w1.rows, k2w0.rows, empty.rows) == (1, 2, 3, 0)
        assert padded(k1w1.bins["a"], 3) == [0, 2, 0]
        assert empty.bins == {}

    def test_vector_and_named_counts_merge(self, backend: Backend) -> None:
        """A tracker's counts (one vector in its layout) and counts by column name add up in one window,
        whichever comes first."""
        t = tracker(WindowPolicy(rows=10))
        vector = np.arange(t.layout.size, dtype=np.int64)
        named = counts(2, **{t.feature_names[0]: [5, 0, 1]})

        async def scenario() -> tuple[BinCounts, BinCounts]:
            sink = backend.open()
            await sink.add("mix", 0, t.split(vector.copy(), 3))
            await sink.add("mix", 0, named)
            await sink.add("mix", 1, named)
            await sink.add("mix", 1, t.split(vector.copy(), 3))
            result = (await sink.totals("mix", 0), await sink.totals("mix", 1))
            await sink.close()
            return result

        expected = t.join(t.split(vector.copy(), 3)).copy()
        expected[: 3] += [5, 0, 1]
        for total in run(scenario):
            assert total.rows == 5
            np.testing.assert_array_equal(t.join(total), expected)

    def test_shared_row_counter(self, backend: Backend) -> None:
        """reserve() is one counter per key across replicas; reserving 0 reads it."""

        async def scenario() -> list[int]:
            one, two = backend.open(), backend.open()
            seen = [await one.reserve("k", 5), await two.reserve("k", 7), await one.reserve("k", 0), await two.reserve("other", 1)]
            await one.close()
            await two.close()
            return seen

        assert run(scenario) == [5, 12, 12, 1]


class TestFeed:
    def test_rows_windows_merge_across_replicas(self, backend: Backend) -> None:
        """Two replicas' rows fill shared by-rows windows in reservation order; both publish the merged PSI."""
        a_rows, b_rows = data(70, 1), data(50, 2, shift=0.5)

        async def scenario() -> tuple[DriftFeed, DriftFeed]:
            a = DriftFeed(tracker(WindowPolicy(rows=100)), backend.open(), key="r:1")
            b = DriftFeed(tracker(WindowPolicy(rows=100)), backend.open(), key="r:1")
            a.add(a_rows[:30])
            a.add(a_rows[30:])  # two requests, one flush
            assert await a.flush(now=0.0, epoch=0.0) == []  # positions 0-69
            b.add(b_rows)
            [closed_b] = await b.flush(now=0.0, epoch=0.0)  # 70-119: 30 rows finish window 0
            [closed_a] = await a.flush(now=0.0, epoch=0.0)  # nothing queued; learns window 0 is complete
            assert closed_a.psi() == closed_b.psi()
            await a.sink.close()
            await b.sink.close()
            return a, b

        a, b = run(scenario)
        reference = tracker(WindowPolicy(rows=100))
        [expected] = reference.add_batch(np.concatenate([a_rows, b_rows[:30]]), now=0.0)
        for feed in (a, b):
            [window] = feed.tracker.history()
            assert (window.window, window.rows) == (0, 100)
            assert window.psi() == pytest.approx(expected.psi(), abs=1e-12)
        assert b.tracker.current().rows == 20 and b.tracker.current().window == 1

    def test_batch_spanning_windows(self, backend: Backend) -> None:
        """A flush larger than several windows is split at the exact boundaries and closes each of them."""
        rows = data(350, 3)

        async def scenario() -> DriftFeed:
            feed = DriftFeed(tracker(WindowPolicy(rows=100)), backend.open(), key="span")
            feed.add(rows)
            closed = await feed.flush(now=1.0, epoch=0.0)
            assert [w.window for w in closed] == [0, 1, 2]
            await feed.sink.close()
            return feed

        feed = run(scenario)
        local = tracker(WindowPolicy(rows=100))
        for ours, theirs in zip(feed.tracker.history(), local.add_batch(rows, now=1.0), strict=True):
            assert ours.psi() == pytest.approx(theirs.psi(), abs=1e-12)

    def test_time_windows_merge(self, backend: Backend) -> None:
        """By-time windows are wall-clock aligned; each replica closes window floor(epoch/T) from merged totals after settling."""

        async def scenario() -> tuple[DriftFeed, DriftFeed]:
            a = DriftFeed(tracker(WindowPolicy(seconds=10)), backend.open(), key="t", settle_seconds=1.0)
            b = DriftFeed(tracker(WindowPolicy(seconds=10)), backend.open(), key="t", settle_seconds=1.0)
            a.add(data(200, 4))
            assert await a.flush(now=0.0, epoch=100.5) == []
            b.add(data(300, 5))
            assert await b.flush(now=0.0, epoch=109.0) == []
            assert await a.flush(now=0.0, epoch=110.5) == []  # window 10 ended at 110, not settled yet
            [closed_a] = await a.flush(now=0.0, epoch=111.0)
            [closed_b] = await b.flush(now=0.0, epoch=112.0)
            assert closed_a.psi() == closed_b.psi()
            assert await a.flush(now=0.0, epoch=135.0) == []  # empty windows are not recorded
            await a.sink.close()
            await b.sink.close()
            return a, b

        a, _ = run(scenario)
        [window] = a.tracker.history()
        assert (window.window, window.rows) == (10, 500)
        [expected] = tracker(WindowPolicy(rows=500)).add_batch(np.concatenate([data(200, 4), data(300, 5)]), now=0.0)
        assert window.psi() == pytest.approx(expected.psi(), abs=1e-12)

    def test_incomplete_window_closes_after_settle(self, backend: Backend) -> None:
        """Rows reserved by a replica that never writes them hold a window open only for settle_seconds."""

        async def scenario() -> list[list[int]]:
            sink = backend.open()
            await sink.reserve("lost", 50)  # a replica that died between reserve and add
            feed = DriftFeed(tracker(WindowPolicy(rows=100)), backend.open(), key="lost", settle_seconds=5.0)
            feed.add(data(60, 6))
            seen = [[w.rows for w in await feed.flush(now=10.0, epoch=0.0)]]
            seen.append([w.rows for w in await feed.flush(now=14.0, epoch=0.0)])
            seen.append([w.rows for w in await feed.flush(now=15.0, epoch=0.0)])
            await sink.close()
            await feed.sink.close()
            return seen

        assert run(scenario) == [[], [], [50]]

    def test_queue_cap_drops_and_counts(self, backend: Backend) -> None:
        """Batches beyond max_pending_rows are dropped and counted, never queued."""
        feed = DriftFeed(tracker(WindowPolicy(rows=100)), backend.open(), key="cap", max_pending_rows=100)
        assert feed.add(data(60, 7)) is True
        assert feed.add(data(60, 8)) is False
        assert (feed.pending_rows, feed.dropped_rows) == (60, 60)
        run(feed.sink.close)

    def test_malformed_batch_dropped_alone(self, backend: Backend) -> None:
        """A malformed batch is dropped and counted; the rest of the flush is still counted."""

        async def scenario() -> DriftFeed:
            feed = DriftFeed(tracker(WindowPolicy(rows=100)), backend.open(), key="bad")
            feed.add(data(30, 1))
            feed.add(np.zeros((5, 2)))  # wrong width
            feed.add({"f0": np.zeros(4)})  # missing columns
            feed.add(data(20, 2))
            await feed.flush(now=0.0, epoch=0.0)
            await feed.sink.close()
            return feed

        feed = run(scenario)
        assert feed.dropped_rows == 9
        assert feed.tracker.current().rows == 50

    def test_outputs_and_named_columns(self, backend: Backend) -> None:
        """Named-column batches, with and without outputs, are concatenated per flush and counted like one batch."""
        y = profile_from_sample(np.random.default_rng(9).uniform(size=1000))
        rows = data(120, 10)
        scores = np.random.default_rng(11).uniform(size=120)

        async def scenario() -> DriftFeed:
            feed = DriftFeed(DriftTracker(PROFILES, WindowPolicy(rows=120), outputs={"y": y}), backend.open(), key="named")
            for lo in range(0, 120, 40):
                batch = {f"f{i}": rows[lo : lo + 40, i] for i in range(3)}
                feed.add(batch, {"y": scores[lo : lo + 40]} if lo else None)
            await feed.flush(now=0.0, epoch=0.0)
            await feed.sink.close()
            return feed

        [window] = run(scenario).tracker.history()
        assert (window.feature("f0").n, window.feature("y").n) == (120, 80)
        [expected] = DriftTracker(PROFILES, WindowPolicy(rows=120)).add_batch(rows, now=0.0)
        assert window.feature("f2").counts == expected.feature("f2").counts


    def test_raw_outputs_reduce_like_decided_columns(self, backend: Backend) -> None:
        """`add_served` with raw output arrays (one-column scores and multi-class probabilities), reduced at
        flush, counts exactly what `add` with the decided columns counts; a batch with the wrong number
        of raw outputs is dropped alone."""
        rng = np.random.default_rng(12)
        y = profile_from_sample(rng.uniform(size=1000))
        k = profile_from_sample(rng.integers(0, 3, size=1000).astype(str))
        rows = data(90, 13)
        scores = rng.uniform(size=(90, 1))
        probs = rng.dirichlet([1.0, 1.0, 1.0], size=90)

        async def scenario(raw: bool) -> DriftFeed:
            tracker = DriftTracker(PROFILES, WindowPolicy(rows=90), outputs={"y": y, "k": k})
            feed = DriftFeed(tracker, backend.open(), key=f"raw-{raw}")
            for lo in range(0, 90, 30):
                if raw:
                    feed.add_served(rows[lo : lo + 30], (scores[lo : lo + 30], probs[lo : lo + 30]))
                else:
                    decided = {"y": scores[lo : lo + 30, 0], "k": np.argmax(probs[lo : lo + 30], axis=1).astype(str)}
                    feed.add(rows[lo : lo + 30], decided)
            if raw:
                feed.add_served(rows[:5], (scores[:5],))  # one output short: dropped, counted
            await feed.flush(now=0.0, epoch=0.0)
            await feed.sink.close()
            return feed

        raw_feed, decided_feed = run(lambda: scenario(True)), run(lambda: scenario(False))
        assert raw_feed.dropped_rows == 5
        [a], [b] = raw_feed.tracker.history(), decided_feed.tracker.history()
        for name in ("f0", "f2", "y", "k"):
            assert a.feature(name).counts == b.feature(name).counts, name
        assert a.feature("k").n == 90


class CountingConnection(Connection):
    """A real connection that counts its socket writes: one write is one round trip."""

    writes = 0

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        CountingConnection.writes += 1
        await super().send_packed_command(command, check_health)


def unreachable() -> Redis:
    """A client for a port nothing listens on, without redis-py's default retries with backoff."""
    return Redis(host="127.0.0.1", port=1, socket_connect_timeout=1, retry=Retry(NoBackoff(), 0))


def commandstats(url: str) -> dict[str, int]:
    client = redis.Redis.from_url(url)
    stats = client.info("commandstats")
    client.close()
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}


class TestRedis:
    @pytest.mark.parametrize("bins", [{"a": [1, 0, 2], "b": [0, 0, 0, 5]}, {f"f{i}": [3] * 11 for i in range(32)}])
    def test_one_pipeline_per_add(self, redis_url: str, bins: dict[str, list[int]]) -> None:
        """add() is one round trip: one socket write carrying an HINCRBY per non-zero bin, one for rows, one EXPIRE."""
        batch = counts(5, **bins)
        nonzero = sum(int(np.count_nonzero(v)) for v in batch.bins.values())

        async def scenario() -> int:
            pool = ConnectionPool.from_url(redis_url, connection_class=CountingConnection)
            client = Redis(connection_pool=pool)
            sink = RedisCountSink(client, "pipe", owns_client=True)
            await client.ping()
            before = CountingConnection.writes
            await sink.add("k", 0, batch)
            writes = CountingConnection.writes - before
            await sink.close()
            await pool.aclose()
            return writes

        stats_before = commandstats(redis_url)
        assert run(scenario) == 1
        stats_after = commandstats(redis_url)
        assert stats_after["hincrby"] - stats_before.get("hincrby", 0) == nonzero + 1
        assert stats_after["expire"] - stats_before.get("expire", 0) == 1

    def test_layout_and_expiry(self, redis_url: str) -> None:
        """One hash per (key, window): fields '<column>:<bin>' and '__rows__', with the configured expiry."""

        async def scenario() -> None:
            sink = RedisCountSink(Redis.from_url(redis_url), "lay", ttl_seconds=120, owns_client=True)
            await sink.add("route:7", 3, counts(4, x=[0, 4], y=[1, 0, 3]))
            await sink.reserve("route:7", 4)
            await sink.close()

        run(scenario)
        client = redis.Redis.from_url(redis_url)
        assert client.hgetall("lay:route:7:w:3") == {b"x:1": b"4", b"y:0": b"1", b"y:2": b"3", b"__rows__": b"4"}
        assert 0 < client.ttl("lay:route:7:w:3") <= 120
        assert 0 < client.ttl("lay:route:7:rows") <= 120
        client.close()

    def test_unreachable_raises_sink_error(self) -> None:
        """A Redis that cannot be reached surfaces as CountSinkError, naming what was being done."""

        async def scenario() -> None:
            sink = RedisCountSink(unreachable(), owns_client=True)
            try:
                with pytest.raises(CountSinkError, match="adding counts"):
                    await sink.add("k", 0, counts(1, a=[1]))
                with pytest.raises(CountSinkError, match="reading"):
                    await sink.totals("k", 0)
            finally:
                await sink.close()

        run(scenario)

    def test_feed_failure_counts_dropped(self) -> None:
        """A failed flush drops its queued rows, counts them and raises; the next flush starts clean."""

        async def scenario() -> DriftFeed:
            sink = RedisCountSink(unreachable(), owns_client=True)
            feed = DriftFeed(tracker(WindowPolicy(rows=10)), sink)
            feed.add(data(7, 1))
            with pytest.raises(CountSinkError):
                await feed.flush(now=0.0, epoch=0.0)
            await sink.close()
            return feed

        feed = run(scenario)
        assert (feed.dropped_rows, feed.pending_rows) == (7, 0)


class TestOpen:
    def test_memory_default(self) -> None:
        """No URL: an in-process sink."""
        assert isinstance(open_count_sink(None), MemoryCountSink)

    def test_redis_url(self, redis_url: str) -> None:
        """A redis:// URL opens a RedisCountSink that owns its client."""

        async def scenario() -> None:
            sink = open_count_sink(redis_url, prefix="open")
            assert isinstance(sink, RedisCountSink) and sink.owns_client
            await sink.add("k", 0, counts(1, a=[1]))
            assert (await sink.totals("k", 0)).rows == 1
            await sink.close()

        run(scenario)

    def test_bad_scheme(self) -> None:
        """Other schemes are refused, naming the URL."""
        with pytest.raises(ValueError, match="memcached"):
            open_count_sink("memcached://x")

    def test_memory_keeps_newest_windows(self) -> None:
        """The memory sink keeps only the newest `keep` windows per key."""

        async def scenario() -> list[int]:
            sink = MemoryCountSink(keep=3)
            for window in range(6):
                await sink.add("k", window, counts(1, a=[1]))
            return [(await sink.totals("k", w)).rows for w in range(6)]

        assert run(scenario) == [0, 0, 0, 1, 1, 1]
