"""RedisOnlineStore: one redis.asyncio connection pool (hiredis parser when installed) built from the
URL; one non-transactional pipeline per batch, so a read of every feature of every view for a whole
batch is one round trip, and reads arriving in the same event-loop turn share one pipeline.

Every Redis failure or timeout surfaces as OnlineStoreUnavailable (raised from the cause); the pool
reconnects by itself on the next call once Redis is back.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.client import Pipeline
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from featurestore.codec import ReadResult, Reply, encode_rows, key_ttl_ms
from featurestore.errors import OnlineStoreUnavailable
from featurestore.online import StoreOptions
from featurestore.views import FeatureView, ReadPlan

Lookups = list[tuple[bytes, tuple[bytes, ...]]]
_FAILURES = (RedisError, OSError, TimeoutError)  # TimeoutError covers asyncio.timeout's


@dataclass(slots=True)
class RoundTrips:
    """Counters of the store's network round trips (one pipeline each), for metrics and tests."""

    reads: int = 0  # read() calls answered from Redis
    read_pipelines: int = 0  # pipelines that answered them (< reads when reads were coalesced)
    write_pipelines: int = 0
    largest_batch: int = 0  # most read() calls one pipeline served


class RedisOnlineStore:
    """Online store over Redis hashes. Query arguments of the URL that redis-py knows (e.g.
    `?socket_timeout=1`) override the options."""

    def __init__(self, url: str, options: StoreOptions | None = None) -> None:
        opts = options or StoreOptions()
        self._read_timeout = opts.read_timeout_s
        self._write_timeout = opts.write_timeout_s
        self._pool = BlockingConnectionPool.from_url(
            url,
            max_connections=opts.max_connections,
            timeout=opts.write_timeout_s,  # wait for a free connection; reads are bounded by read_timeout_s
            # Every call runs under one asyncio.timeout for the whole pipeline (connect included), so no
            # per-reply socket timeout: redis-py would wrap each of a batch's replies in its own.
            socket_timeout=None,
            socket_connect_timeout=opts.connect_timeout_s,
            # A pooled connection left idle while Redis restarted fails on its next use; resend the
            # pipeline once on a fresh connection so no request pays for it (HMGET/HSET/PEXPIRE are
            # idempotent). Timeouts are not retried: asyncio.timeout cancels the whole call.
            retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
        )
        self._client = Redis(connection_pool=self._pool)
        parts = urlsplit(url)
        self.where = parts.path if parts.scheme == "unix" else f"{parts.hostname}:{parts.port or 6379}"
        self.stats = RoundTrips()
        self._pending: list[tuple[Lookups, asyncio.Future[list[Reply]]]] = []
        self._inflight: set[asyncio.Task[None]] = set()
        self._closed = False
        # Bound on first read: asyncio.get_running_loop() makes a getpid() system call per call on
        # CPython 3.11, which costs more than the rest of this method; the pool is loop-bound anyway.
        self._loop: asyncio.AbstractEventLoop | None = None

    async def read(self, plan: ReadPlan, entity_keys: Sequence[Mapping[str, object]], now_ms: int) -> ReadResult:
        self._check_open()
        lookups = plan.lookups(entity_keys)
        if not lookups:
            return plan.decode([], len(entity_keys), now_ms)
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        future: asyncio.Future[list[Reply]] = loop.create_future()
        if not self._pending:
            # The first read of this loop turn schedules the flush; reads that run before it join.
            loop.call_soon(self._flush)
        self._pending.append((lookups, future))
        replies = await future
        return plan.decode(replies, len(entity_keys), now_ms)

    def _flush(self) -> None:
        batch, self._pending = self._pending, []
        assert self._loop is not None  # scheduled by read()
        task = self._loop.create_task(self._fetch(batch))
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)

    async def _fetch(self, batch: list[tuple[Lookups, asyncio.Future[list[Reply]]]]) -> None:
        pipe = self._client.pipeline(transaction=False)
        for lookups, _ in batch:
            for key, fields in lookups:
                pipe.execute_command("HMGET", key, *fields)
        self.stats.read_pipelines += 1
        self.stats.largest_batch = max(self.stats.largest_batch, len(batch))
        try:
            replies = await self._execute(pipe, self._read_timeout, "read", raise_on_error=False)
        except OnlineStoreUnavailable as exc:
            for _, future in batch:
                if not future.done():
                    error = OnlineStoreUnavailable(exc.message)  # one instance per caller's traceback
                    error.__cause__ = exc.__cause__
                    future.set_exception(error)
            return
        except BaseException:  # cancelled, e.g. at loop shutdown: never leave a caller waiting
            for _, future in batch:
                if not future.done():
                    future.set_exception(OnlineStoreUnavailable(f"redis at {self.where}: read cancelled"))
            raise
        self.stats.reads += len(batch)
        start = 0
        for lookups, future in batch:
            end = start + len(lookups)
            if not future.done():  # the caller may have been cancelled meanwhile
                mine = replies[start:end]
                bad = next((r for r in mine if isinstance(r, Exception)), None)
                if bad is None:
                    future.set_result(mine)
                else:
                    error = OnlineStoreUnavailable(f"redis at {self.where} answered an error: {bad}")
                    error.__cause__ = bad
                    future.set_exception(error)
            start = end

    async def _execute(self, pipe: Pipeline, timeout_s: float, what: str, *, raise_on_error: bool = True) -> list[Reply]:
        try:
            async with asyncio.timeout(timeout_s):
                replies: list[Reply] = await pipe.execute(raise_on_error=raise_on_error)
                return replies
        except TimeoutError as exc:
            raise OnlineStoreUnavailable(
                f"redis at {self.where}: {what} timed out after {timeout_s * 1000:g} ms"
            ) from exc
        except _FAILURES as exc:
            raise OnlineStoreUnavailable(f"redis at {self.where}: {what} failed: {exc}") from exc

    async def write(self, view: FeatureView, rows: Sequence[Mapping[str, object]], now_ms: int) -> int:
        self._check_open()
        encoded = encode_rows(view, rows, now_ms)
        if not encoded:
            return 0
        ttl_ms = key_ttl_ms(view.ttl_seconds)
        pipe = self._client.pipeline(transaction=False)
        for key, flat in encoded:
            pipe.execute_command("HSET", key, *flat)
            # The key TTL only reclaims memory; freshness is checked at read time from _ts.
            if ttl_ms:
                pipe.execute_command("PEXPIRE", key, ttl_ms)
            else:
                pipe.execute_command("PERSIST", key)  # the view's TTL may have been removed
        self.stats.write_pipelines += 1
        await self._execute(pipe, self._write_timeout, "write")
        return len(encoded)

    async def ping(self) -> None:
        self._check_open()
        pipe = self._client.pipeline(transaction=False)
        pipe.execute_command("PING")
        await self._execute(pipe, self._write_timeout, "ping")

    async def close(self) -> None:
        self._closed = True
        if self._inflight:
            await asyncio.gather(*self._inflight, return_exceptions=True)
        await self._client.aclose()
        await self._pool.aclose()

    def _check_open(self) -> None:
        if self._closed:
            raise OnlineStoreUnavailable(f"redis at {self.where}: the store is closed")
