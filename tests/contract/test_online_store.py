"""The OnlineStore contract, written once and run on every backend (memory, redis), plus what only
Redis can show: one round trip per read, same-tick coalescing, timeouts, and recovery."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, NamedTuple, TypeVar

import numpy as np
import pytest
import redis

from featurestore.codec import FeatureStatus
from featurestore.errors import InvalidFeatureRequest, OnlineStoreUnavailable
from featurestore.online import OnlineStore, StoreOptions, open_online_store
from featurestore.redis_store import RedisOnlineStore
from featurestore.views import Feature, FeatureView, ReadPlan, compile_read_plan
from tests.conftest import RedisServer, start_redis_server, stop_redis_server

T = TypeVar("T")
PRESENT, NOT_FOUND, NULL_VALUE, STALE = (int(s) for s in FeatureStatus)
NOW = 1_767_225_600_000  # 2026-01-01T00:00:00Z, in ms; tests drive the clock
ROOMY = StoreOptions(read_timeout_s=2.0)  # contract tests check semantics, not latency

PROFILE = FeatureView(
    "profile",
    "user_id",
    (
        Feature("f32", "float32", -1.0),
        Feature("f64", "float64", -2.0),
        Feature("i32", "int32", -3),
        Feature("i64", "int64", -4),
        Feature("flag", "bool", True),
        Feature("name", "string", "anon"),
    ),
    ttl_seconds=3600,
)
TXN = FeatureView("txn", "user_id", (Feature("avg_amount", "float64", 0.0), Feature("count", "int32", 0)))
SHOP = FeatureView("shop", "shop_id", (Feature("rating", "float32", 2.5),))
VIEWS = {v.name: v for v in (PROFILE, TXN, SHOP)}
NUMERIC = ["profile:f32", "profile:f64", "profile:i32", "profile:i64", "profile:flag"]
EVERYTHING = [*NUMERIC, "profile:name"]


@pytest.fixture(params=["memory", "redis"])
def store_url(request: pytest.FixtureRequest) -> str:
    """Each contract test runs once per backend: in-process memory, and the session's Redis."""
    if request.param == "memory":
        return "memory://"
    url: str = request.getfixturevalue("redis_url")
    return url


def run(url: str, scenario: Callable[[Any], Awaitable[T]], options: StoreOptions = ROOMY) -> T:
    """Open a store for `url`, run the scenario on a fresh event loop, close the store."""

    async def main() -> T:
        store = open_online_store(url, options)
        try:
            return await scenario(store)
        finally:
            await store.close()

    return asyncio.run(main())


def plan(refs: list[str], dtype: Any = np.float32) -> ReadPlan:
    return compile_read_plan(refs, VIEWS, dtype=dtype)


def users(*ids: object) -> list[dict[str, object]]:
    return [{"user_id": i} for i in ids]


class TestContract:
    def test_round_trip_every_dtype(self, store_url: str) -> None:
        """Every dtype, extremes included, reads back exactly as written, with its own type."""
        written = {"user_id": 1, "f32": 1.5, "f64": 0.1, "i32": -(2**31), "i64": 2**63 - 1, "flag": False, "name": "Zürich ✓"}

        async def scenario(store: OnlineStore) -> None:
            assert await store.write(PROFILE, [written], NOW) == 1
            typed = await store.read(plan(EVERYTHING, object), users(1), NOW)
            assert typed.rows[0].tolist() == [1.5, 0.1, -(2**31), 2**63 - 1, False, "Zürich ✓"]
            assert [type(v) for v in typed.rows[0]] == [np.float32, np.float64, np.int32, np.int64, np.bool_, str]
            assert (typed.status == PRESENT).all() and typed.event_ms.tolist() == [[NOW]]
            numeric = await store.read(plan(NUMERIC, np.float64), users(1), NOW)
            assert numeric.rows.tolist() == [[1.5, 0.1, -(2**31), float(2**63 - 1), 0.0]]

        run(store_url, scenario)

    def test_missing_entities_get_defaults(self, store_url: str) -> None:
        """Entities never written read as the defaults with NOT_FOUND, event time 0 and found False."""

        async def scenario(store: OnlineStore) -> None:
            await store.write(PROFILE, [{"user_id": 1, "f32": 9.0}], NOW)
            result = await store.read(plan(EVERYTHING, object), users(404, 1), NOW)
            assert result.rows[0].tolist() == [-1.0, -2.0, -3, -4, True, "anon"]
            assert (result.status[0] == NOT_FOUND).all() and result.missing[0].all()
            assert result.found.tolist() == [[False], [True]] and result.event_ms[0, 0] == 0

        run(store_url, scenario)

    def test_missing_features_and_nulls_get_defaults(self, store_url: str) -> None:
        """A feature added after the write reads NOT_FOUND and a written null NULL_VALUE, each with its
        default, while the row's other features are served."""
        before = FeatureView("profile", "user_id", (Feature("f32", "float32", -1.0),), ttl_seconds=3600)

        async def scenario(store: OnlineStore) -> None:
            await store.write(before, [{"user_id": 1, "f32": 7.0}, {"user_id": 2, "f32": None}], NOW)
            result = await store.read(plan(["profile:f32", "profile:i64"]), users(1, 2), NOW)
            assert result.rows.tolist() == [[7.0, -4.0], [-1.0, -4.0]]
            assert result.status.tolist() == [[PRESENT, NOT_FOUND], [NULL_VALUE, NOT_FOUND]]
            assert result.found.all() and result.defaulted == 3

        run(store_url, scenario)

    def test_ttl_is_enforced_at_read_time(self, store_url: str) -> None:
        """A value is served up to exactly its view's TTL after its event time and defaulted one ms later."""

        async def scenario(store: OnlineStore) -> None:
            await store.write(PROFILE, [{"user_id": 1, "f32": 5.0}], NOW)
            await store.write(PROFILE, [{"user_id": 2, "f32": 6.0, "event_timestamp": "2025-12-31T23:00:00Z"}], NOW)
            p = plan(["profile:f32"])
            fresh = await store.read(p, users(1, 2), NOW + 3_600_000)
            assert fresh.rows.tolist() == [[5.0], [-1.0]] and fresh.status.tolist() == [[PRESENT], [STALE]]
            stale = await store.read(p, users(1, 2), NOW + 3_600_001)
            assert stale.rows.tolist() == [[-1.0], [-1.0]] and (stale.status == STALE).all()
            assert stale.event_ms.tolist() == [[NOW], [NOW - 3_600_000]] and not stale.found.any()

        run(store_url, scenario)

    def test_multi_view_read(self, store_url: str) -> None:
        """One read assembles features of several views, two join keys and a request value, in declared order."""
        declared = ["txn:count", "profile:f32", "request:amount", "shop:rating", "txn:avg_amount"]

        async def scenario(store: OnlineStore) -> None:
            await store.write(PROFILE, [{"user_id": 1, "f32": 1.0}, {"user_id": 2, "f32": 2.0}], NOW)
            await store.write(TXN, [{"user_id": 1, "avg_amount": 10.0, "count": 3}], NOW)
            await store.write(SHOP, [{"shop_id": "s9", "rating": 4.5}], NOW)
            p = plan(declared)
            instances = [{"user_id": 1, "shop_id": "s9", "amount": 12.5}, {"user_id": 2, "shop_id": "s0", "amount": 1}]
            result = await store.read(p, instances, NOW)
            p.fill_request(result.rows, instances)
            assert result.rows.tolist() == [[3.0, 1.0, 12.5, 4.5, 10.0], [0.0, 2.0, 1.0, 2.5, 0.0]]
            assert [vr.view for vr in p.views] == ["txn", "profile", "shop"]  # found/event_ms columns
            assert result.found.tolist() == [[True, True, True], [False, True, False]]

        run(store_url, scenario)

    def test_batch_of_many_entities(self, store_url: str) -> None:
        """A batch of 1,500 entities, a third of them unknown, reads each row correctly."""
        ids = np.arange(1_500)
        rows = [{"user_id": int(i), "f32": float(i) / 4, "i64": int(i) * 1_000_003, "flag": bool(i % 2)} for i in ids[:1_000]]

        async def scenario(store: OnlineStore) -> None:
            await store.write(PROFILE, rows, NOW)
            result = await store.read(plan(["profile:i64", "profile:f32", "profile:flag"], np.float64), users(*ids.tolist()), NOW)
            known = ids[:1_000]
            assert np.array_equal(result.rows[:1_000], np.stack([known * 1_000_003, known / 4, known % 2], axis=1))
            assert (result.rows[1_000:] == [-4.0, -1.0, 1.0]).all()
            assert (result.status[1_000:] == NOT_FOUND).all() and (result.status[:1_000] == PRESENT).all()

        run(store_url, scenario)

    def test_overwrite_replaces_the_row(self, store_url: str) -> None:
        """A second write of an entity replaces its values and event time; features it omits become null."""

        async def scenario(store: OnlineStore) -> None:
            await store.write(PROFILE, [{"user_id": 1, "f32": 1.0, "name": "old"}], NOW)
            await store.write(PROFILE, [{"user_id": "1", "f64": 2.0}], NOW + 5)
            result = await store.read(plan(["profile:f32", "profile:f64", "profile:name"], object), users(1), NOW + 5)
            assert result.rows[0].tolist() == [-1.0, 2.0, "anon"]
            assert result.status[0].tolist() == [NULL_VALUE, PRESENT, NULL_VALUE]
            assert result.event_ms.tolist() == [[NOW + 5]]

        run(store_url, scenario)

    def test_invalid_rows_write_nothing(self, store_url: str) -> None:
        """A batch with one bad value is rejected whole, naming the row and the column."""

        async def scenario(store: OnlineStore) -> None:
            with pytest.raises(InvalidFeatureRequest, match=r"row 1, column 'i32' \(int32\)"):
                await store.write(PROFILE, [{"user_id": 1, "i32": 1}, {"user_id": 2, "i32": 2**40}], NOW)
            result = await store.read(plan(["profile:i32"]), users(1, 2), NOW)
            assert (result.status == NOT_FOUND).all()

        run(store_url, scenario)

    def test_bad_entity_keys_are_rejected(self, store_url: str) -> None:
        """A read row without its join key, or with an unusable one, is an InvalidFeatureRequest."""

        async def scenario(store: OnlineStore) -> None:
            with pytest.raises(InvalidFeatureRequest, match="instance 1: missing entity key 'user_id'"):
                await store.read(plan(["profile:f32"]), [{"user_id": 1}, {"shop_id": 1}], NOW)
            with pytest.raises(InvalidFeatureRequest, match="instance 0, entity key 'user_id'"):
                await store.read(plan(["profile:f32"]), [{"user_id": [1]}], NOW)

        run(store_url, scenario)

    def test_concurrent_reads_get_their_own_rows(self, store_url: str) -> None:
        """Fifty concurrent reads with different plans and entities each get exactly their own rows."""
        plans = [plan(["profile:f32"]), plan(["txn:count", "profile:f32"])]

        async def scenario(store: OnlineStore) -> None:
            await store.write(PROFILE, [{"user_id": i, "f32": float(i)} for i in range(50)], NOW)
            await store.write(TXN, [{"user_id": i, "count": i * 2} for i in range(50)], NOW)
            results = await asyncio.gather(*(store.read(plans[i % 2], users(i, i + 1), NOW) for i in range(50)))
            for i, result in enumerate(results):
                expected = [[float(i)], [float(i + 1)]] if i % 2 == 0 else [[i * 2.0, float(i)], [(i + 1) * 2.0, float(i + 1)]]
                if i == 49:
                    expected[1] = [0.0, -1.0]  # user 50 was never written
                assert result.rows.tolist() == expected

        run(store_url, scenario)

    def test_zero_entities(self, store_url: str) -> None:
        """Reading no entities gives empty arrays of the plan's width."""

        async def scenario(store: OnlineStore) -> None:
            result = await store.read(plan(NUMERIC), [], NOW)
            assert result.rows.shape == (0, 5) and result.found.shape == (0, 1)
            assert await store.write(PROFILE, [], NOW) == 0

        run(store_url, scenario)

    def test_ping(self, store_url: str) -> None:
        """A reachable store answers ping."""
        run(store_url, lambda store: store.ping())

    def test_closed_store_refuses_calls(self, store_url: str) -> None:
        """After close, reads, writes and pings raise OnlineStoreUnavailable saying the store is closed."""

        async def scenario(store: OnlineStore) -> None:
            await store.close()
            for call in (lambda: store.read(plan(NUMERIC), users(1), NOW), lambda: store.write(PROFILE, [], NOW), store.ping):
                with pytest.raises(OnlineStoreUnavailable, match="closed"):
                    await call()

        run(store_url, scenario)


# --- Redis only ---


class Counts(NamedTuple):
    hmget: int
    reads: int  # read events the server processed: one per request that arrived in one piece


def server_counts(client: redis.Redis) -> Counts:
    info = client.info("commandstats")
    hmget = int(info.get("cmdstat_hmget", {}).get("calls", 0))
    return Counts(hmget, int(client.info("stats")["total_reads_processed"]))


@pytest.fixture
def counted(redis_server: RedisServer, redis_url: str) -> Iterator[tuple[str, Callable[[], Counts]]]:
    """The session's Redis plus a probe of its counters, net of the probe's own traffic; needs the
    tests' own server, whose counters nobody else moves."""
    if not redis_server.owned:
        pytest.skip("counting round trips needs the tests' own redis-server, not GATEWAY_TEST_REDIS_URL")
    client = redis.Redis.from_url(redis_url)
    first, second = server_counts(client), server_counts(client)
    probe_reads = second.reads - first.reads  # the INFO calls' own read events
    state = {"reads": second.reads}

    def probe() -> Counts:
        now = server_counts(client)
        delta = now.reads - state["reads"] - probe_reads
        state["reads"] = now.reads
        return Counts(now.hmget, delta)

    yield redis_url, probe
    client.close()


class TestRedisRoundTrips:
    def test_one_round_trip_per_read(self, counted: tuple[str, Callable[[], Counts]]) -> None:
        """All features of three views for an entity are one HMGET per view, sent as one pipeline
        that the server receives in one read."""
        url, probe = counted

        async def scenario(store: RedisOnlineStore) -> None:
            await store.ping()  # connect first: the handshake is not part of a read
            start = probe()
            result = await store.read(plan(["profile:f32", "txn:count", "shop:rating", "profile:i64"]), [{"user_id": 1, "shop_id": 2}], NOW)
            after = probe()
            assert result.rows.shape == (1, 4)
            assert after.hmget - start.hmget == 3
            assert after.reads == 1
            assert (store.stats.read_pipelines, store.stats.reads) == (1, 1)

        run(url, scenario)

    def test_a_batch_is_one_pipeline(self, counted: tuple[str, Callable[[], Counts]]) -> None:
        """Reading 300 entities over two views is 600 HMGETs in one pipeline."""
        url, probe = counted

        async def scenario(store: RedisOnlineStore) -> None:
            await store.ping()
            start = probe()
            await store.read(plan(["profile:f32", "txn:count"]), users(*range(300)), NOW)
            assert probe().hmget - start.hmget == 600
            assert store.stats.read_pipelines == 1

        run(url, scenario)

    def test_same_tick_reads_share_one_pipeline(self, counted: tuple[str, Callable[[], Counts]]) -> None:
        """Twenty reads started in the same loop turn go out as one pipeline, and each caller gets its own row."""
        url, probe = counted

        async def scenario(store: RedisOnlineStore) -> None:
            await store.write(PROFILE, [{"user_id": i, "f32": float(i)} for i in range(20)], NOW)
            p = plan(["profile:f32"])
            start = probe()
            results = await asyncio.gather(*(store.read(p, users(i), NOW) for i in range(20)))
            after = probe()
            assert [r.rows.tolist() for r in results] == [[[float(i)]] for i in range(20)]
            assert after.hmget - start.hmget == 20 and after.reads == 1
            assert (store.stats.read_pipelines, store.stats.reads, store.stats.largest_batch) == (1, 20, 20)

        run(url, scenario)

    def test_awaited_reads_are_not_held_back(self, redis_url: str) -> None:
        """Reads awaited one after another each go out at once, in their own pipeline."""

        async def scenario(store: RedisOnlineStore) -> None:
            p = plan(["profile:f32"])
            await store.read(p, users(1), NOW)
            await store.read(p, users(2), NOW)
            assert store.stats.read_pipelines == 2

        run(redis_url, scenario)

    def test_a_cancelled_caller_does_not_disturb_the_batch(self, redis_url: str) -> None:
        """Cancelling one coalesced read leaves the others in its pipeline served."""

        async def scenario(store: RedisOnlineStore) -> None:
            await store.write(PROFILE, [{"user_id": 2, "f32": 2.0}], NOW)
            p = plan(["profile:f32"])
            first = asyncio.create_task(store.read(p, users(1), NOW))
            second = asyncio.create_task(store.read(p, users(2), NOW))
            await asyncio.sleep(0)  # one loop turn: both are queued for the same flush
            first.cancel()
            assert (await second).rows.tolist() == [[2.0]]
            with pytest.raises(asyncio.CancelledError):
                await first
            assert store.stats.read_pipelines == 1

        run(redis_url, scenario)

    def test_stored_layout(self, redis_url: str) -> None:
        """A row is one hash of packed values plus _ts, with a key TTL of twice the view's (none without one)."""

        async def scenario(store: RedisOnlineStore) -> None:
            await store.write(PROFILE, [{"user_id": 7, "f32": 1.0, "i64": 5, "name": "ab"}], NOW)
            await store.write(TXN, [{"user_id": 7, "count": 1}], NOW)
            assert store.stats.write_pipelines == 2

        run(redis_url, scenario)
        client = redis.Redis.from_url(redis_url)
        stored = client.hgetall(b"fv:profile:7")
        assert {k: len(v) for k, v in stored.items()} == {
            b"f32": 4, b"f64": 1, b"i32": 1, b"i64": 8, b"flag": 1, b"name": 2, b"_ts": 8
        }
        assert 7_000_000 < client.pttl(b"fv:profile:7") <= 7_200_000
        assert client.pttl(b"fv:txn:7") == -1
        client.close()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


FAST = StoreOptions(read_timeout_s=0.05, write_timeout_s=0.3, connect_timeout_s=0.2)


class TestRedisFaults:
    def test_closed_port_fails_fast(self) -> None:
        """With nothing listening, read, write and ping each fail at once with OnlineStoreUnavailable
        naming the address, raised from the Redis error."""
        port = closed_port()

        async def scenario(store: RedisOnlineStore) -> None:
            for call in (
                lambda: store.read(plan(["profile:f32"]), users(*range(20)), NOW),
                lambda: store.write(PROFILE, [{"user_id": 1}], NOW),
                store.ping,
            ):
                started = time.perf_counter()
                with pytest.raises(OnlineStoreUnavailable, match=f"127.0.0.1:{port}") as info:
                    await call()
                assert time.perf_counter() - started < 0.5
                assert isinstance(info.value.__cause__, redis.RedisError)

        run(f"redis://127.0.0.1:{port}/0", scenario, FAST)

    def test_every_coalesced_caller_gets_the_error(self) -> None:
        """When a shared pipeline fails, each of its callers gets its own OnlineStoreUnavailable."""

        async def scenario(store: RedisOnlineStore) -> None:
            outcomes = await asyncio.gather(*(store.read(plan(["profile:f32"]), users(i), NOW) for i in range(10)), return_exceptions=True)
            assert all(isinstance(o, OnlineStoreUnavailable) for o in outcomes)
            assert len({id(o) for o in outcomes}) == 10

        run(f"redis://127.0.0.1:{closed_port()}/0", scenario, FAST)

    def test_silent_server_times_out(self) -> None:
        """A server that accepts connections but never answers fails a read within its 50 ms timeout."""
        with socket.socket() as silent:
            silent.bind(("127.0.0.1", 0))
            silent.listen(16)  # the kernel completes handshakes; nobody ever reads
            port = silent.getsockname()[1]

            async def scenario(store: RedisOnlineStore) -> float:
                started = time.perf_counter()
                with pytest.raises(OnlineStoreUnavailable, match="read timed out after 50 ms"):
                    await store.read(plan(["profile:f32"]), users(1), NOW)
                return time.perf_counter() - started

            assert run(f"redis://127.0.0.1:{port}/0", scenario, FAST) < 0.5

    def test_connect_timeout(self) -> None:
        """A server whose accept queue is full (SYNs dropped) fails a ping within the connect timeout."""
        with socket.socket() as full, socket.socket() as filler:
            full.bind(("127.0.0.1", 0))
            full.listen(0)
            filler.connect(full.getsockname())  # takes the only slot in the accept queue
            port = full.getsockname()[1]

            async def scenario(store: RedisOnlineStore) -> float:
                started = time.perf_counter()
                with pytest.raises(OnlineStoreUnavailable, match="ping failed: Timeout connecting"):
                    await store.ping()
                return time.perf_counter() - started

            assert run(f"redis://127.0.0.1:{port}/0", scenario, FAST) < 0.3 + 0.2

    def test_recovers_when_redis_returns(self) -> None:
        """After its Redis is stopped the store fails fast, and once Redis is back the same store serves again."""
        server = start_redis_server()
        port = int(server.url.rsplit(":", 1)[1].split("/")[0])
        p = plan(["profile:f32"])

        async def scenario(store: RedisOnlineStore) -> None:
            nonlocal server
            await store.write(PROFILE, [{"user_id": 1, "f32": 1.0}], NOW)
            assert (await store.read(p, users(1), NOW)).rows.tolist() == [[1.0]]
            stop_redis_server(server)
            for _ in range(2):
                with pytest.raises(OnlineStoreUnavailable):
                    await store.read(p, users(1), NOW)
            server = start_redis_server(port)
            await store.write(PROFILE, [{"user_id": 1, "f32": 3.0}], NOW)  # the restarted server is empty
            assert (await store.read(p, users(1), NOW)).rows.tolist() == [[3.0]]

        try:
            run(server.url, scenario, StoreOptions(read_timeout_s=0.5, write_timeout_s=2.0))
        finally:
            stop_redis_server(server)
