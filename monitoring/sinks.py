"""Window counts shared by workers and replicas: the CountSink seam, its memory and Redis backends,
and `DriftFeed`, which batches a tracker's counts into a sink and closes windows from merged totals.

Design. A window is identified by (key, window_id); key names a tracker (route, version and a
fingerprint of its bins, so replicas with different profiles never mix counts). Every process
adds the bin counts of what it served; every process closes every window from the merged totals,
so each replica publishes the same PSI, describing all traffic (Prometheus may scrape any of them).

- By-rows windows (`WindowPolicy.rows` = N): a shared row counter per key (INCRBY) hands each
  flush a range of global row positions [T - P, T); rows at positions kN..(k+1)N-1 belong to window
  k, so a flush that straddles a boundary is split exactly there. Window k is complete once the
  counter passes (k+1)N; a process closes it when its merged row total reaches N, or after
  `settle_seconds` if rows reserved by another process never arrive (that process died, or its
  write failed): then the window is closed with the rows that did.
- By-time windows (`WindowPolicy.seconds` = T): window ids are wall-clock aligned,
  floor(epoch / T), so replicas agree without talking. A window is closed `settle_seconds` after its
  end, giving other replicas time to flush their last counts. Limits: rows are stamped with the
  flush's clock, not their arrival (off by at most one flush interval), and replica clocks must
  agree to well under T (NTP).
- A policy with both limits is windowed by rows in merged mode (the time limit is ignored: two
  processes could not agree on who cuts a window short). Windows that saw no rows are not recorded.
- Counts that could not be written are dropped and counted (`DriftFeed.dropped_rows`): drift is
  best-effort and never blocks or fails serving.

`RedisCountSink` writes one hash per (key, window_id), fields "<column>:<bin>" (the missing slot is
bin k) and "__rows__", with an expiry; one pipeline(transaction=False) per window per flush carries
an HINCRBY for every non-zero bin, and reads are one HGETALL.
"""

from __future__ import annotations

import asyncio
import functools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import numpy.typing as npt

from monitoring.drift import BinCounts, ClosedWindow, Columns, DriftTracker, Layout, decision_column

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from monitoring._binning import Tap

ROWS_FIELD = "__rows__"
DEFAULT_PREFIX = "gateway:drift"
DEFAULT_TTL_SECONDS = 3600


Pending = Columns | tuple[npt.NDArray[Any], ...] | None
"""A queued batch's outputs: none, decided columns, or the model's raw output arrays (a tuple)."""


class CountSinkError(Exception):
    """The shared count store could not be read or written (Redis down, timeout, bad data)."""


class CountSink(Protocol):
    """Where window counts are merged; keys and ids are the caller's (see the module docstring)."""

    async def reserve(self, key: str, rows: int) -> int:
        """Add `rows` to the key's shared row counter; returns the counter after (0 adds nothing)."""
        ...

    async def add(self, key: str, window_id: int, counts: BinCounts) -> None:
        """Add counts (bins per column, and rows) into one window."""
        ...

    async def totals(self, key: str, window_id: int) -> BinCounts:
        """The window's merged counts; arrays may be short (trailing zero bins omitted)."""
        ...

    async def close(self) -> None: ...


@dataclass(slots=True)
class HeldWindow:
    """One window's merged counts in memory: a count vector while every add came in one layout (the
    gateway's case: one numpy add per flush), per-column arrays once forms or layouts mix."""

    rows: int = 0
    vector: npt.NDArray[np.int64] | None = None
    layout: Layout | None = None
    bins: dict[str, npt.NDArray[np.int64]] = field(default_factory=dict)

    def add(self, counts: BinCounts) -> None:
        self.rows += counts.rows
        if counts.vector is not None and not self.bins and (self.layout is None or self.layout == counts.layout):
            if self.vector is None:
                self.vector, self.layout = counts.vector.astype(np.int64, copy=True), counts.layout
            else:
                self.vector += counts.vector
            return
        if self.vector is not None:  # a second form arrived: keep per-column arrays from here on
            self.bins = {name: array.copy() for name, array in BinCounts(0, vector=self.vector, layout=self.layout).bins.items()}
            self.vector = self.layout = None
        for name, array in counts.bins.items():
            values = np.asarray(array, np.int64)
            old = self.bins.get(name)
            if old is None:
                self.bins[name] = values.copy()
            else:
                merged = np.zeros(max(old.size, values.size), np.int64)
                merged[: old.size] += old
                merged[: values.size] += values
                self.bins[name] = merged

    def totals(self) -> BinCounts:
        if self.vector is not None:
            return BinCounts(self.rows, vector=self.vector.copy(), layout=self.layout)
        return BinCounts(self.rows, {name: array.copy() for name, array in self.bins.items()})


@dataclass(slots=True)
class MemoryCounts:
    """The storage behind MemoryCountSinks; share one between sinks to model several processes."""

    counters: dict[str, int] = field(default_factory=dict)
    windows: dict[str, dict[int, HeldWindow]] = field(default_factory=dict)


class MemoryCountSink:
    """In-process CountSink: the embedded default, and the contract twin of RedisCountSink.

    Keeps the newest `keep` windows per key (Redis expires old ones instead).
    """

    def __init__(self, store: MemoryCounts | None = None, keep: int = 256) -> None:
        self.store = store if store is not None else MemoryCounts()
        self.keep = keep

    async def reserve(self, key: str, rows: int) -> int:
        total = self.store.counters.get(key, 0) + rows
        self.store.counters[key] = total
        return total

    async def add(self, key: str, window_id: int, counts: BinCounts) -> None:
        windows = self.store.windows.setdefault(key, {})
        held = windows.get(window_id)
        if held is None:
            held = windows[window_id] = HeldWindow()
            while len(windows) > self.keep:
                del windows[min(windows)]
        held.add(counts)

    async def totals(self, key: str, window_id: int) -> BinCounts:
        held = self.store.windows.get(key, {}).get(window_id)
        return held.totals() if held is not None else BinCounts(0, {})

    async def close(self) -> None:
        return None


class RedisCountSink:
    """CountSink over Redis hashes (see the module docstring for the layout).

    Takes a connected `redis.asyncio.Redis`; closes it on `close()` only when `owns_client`.
    Redis errors surface as CountSinkError.
    """

    def __init__(
        self,
        client: Redis,
        prefix: str = DEFAULT_PREFIX,
        *,
        ttl_seconds: int = DEFAULT_TTL_SECONDS,
        owns_client: bool = False,
    ) -> None:
        if ttl_seconds < 1:
            raise ValueError(f"count sink: ttl_seconds must be >= 1, got {ttl_seconds}")
        self.client = client
        self.prefix = prefix
        self.ttl_seconds = ttl_seconds
        self.owns_client = owns_client

    def window_key(self, key: str, window_id: int) -> str:
        return f"{self.prefix}:{key}:w:{window_id}"

    def counter_key(self, key: str) -> str:
        return f"{self.prefix}:{key}:rows"

    async def reserve(self, key: str, rows: int) -> int:
        counter = self.counter_key(key)
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.incrby(counter, rows)
                pipe.expire(counter, self.ttl_seconds)
                total, _ = await pipe.execute()
        except Exception as exc:
            raise _translate(exc, f"reserving {rows} rows for {key!r}") from exc
        return int(total)

    async def add(self, key: str, window_id: int, counts: BinCounts) -> None:
        name = self.window_key(key, window_id)
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                if counts.vector is not None and counts.layout is not None:
                    fields = _field_names(counts.layout)
                    vector = counts.vector
                    for index, value in zip(np.flatnonzero(vector).tolist(), vector[vector != 0].tolist(), strict=True):
                        pipe.hincrby(name, fields[index], value)
                else:
                    for column, array in counts.bins.items():
                        values = np.asarray(array, np.int64)
                        for index in np.flatnonzero(values).tolist():
                            pipe.hincrby(name, f"{column}:{index}", int(values[index]))
                pipe.hincrby(name, ROWS_FIELD, counts.rows)
                pipe.expire(name, self.ttl_seconds)
                await pipe.execute()
        except Exception as exc:
            raise _translate(exc, f"adding counts to {name!r}") from exc

    async def totals(self, key: str, window_id: int) -> BinCounts:
        name = self.window_key(key, window_id)
        try:
            raw: Mapping[Any, Any] = await self.client.hgetall(name)
        except Exception as exc:
            raise _translate(exc, f"reading {name!r}") from exc
        rows = 0
        sparse: dict[str, dict[int, int]] = {}
        for raw_field, raw_value in raw.items():
            text = raw_field.decode() if isinstance(raw_field, bytes) else str(raw_field)
            if text == ROWS_FIELD:
                rows = int(raw_value)
                continue
            column, sep, index = text.rpartition(":")
            if not sep or not index.isdigit():
                raise CountSinkError(f"count sink: unexpected field {text!r} in {name!r}")
            sparse.setdefault(column, {})[int(index)] = int(raw_value)
        bins: dict[str, npt.NDArray[np.int64]] = {}
        for column, cells in sparse.items():
            array = np.zeros(max(cells) + 1, np.int64)
            array[list(cells)] = list(cells.values())
            bins[column] = array
        return BinCounts(rows, bins)

    async def close(self) -> None:
        if self.owns_client:
            await self.client.aclose()


@functools.lru_cache(maxsize=64)
def _field_names(layout: Layout) -> tuple[str, ...]:
    """The hash field of every slot of a layout's count vector: "<column>:<bin>"."""
    return tuple(f"{name}:{index}" for name, _, width in layout.columns for index in range(width))


def _translate(exc: Exception, doing: str) -> Exception:
    from redis.exceptions import RedisError

    if isinstance(exc, RedisError | OSError):
        return CountSinkError(f"count sink: {doing}: {exc}")
    return exc


def open_count_sink(url: str | None, *, prefix: str = DEFAULT_PREFIX, ttl_seconds: int = DEFAULT_TTL_SECONDS) -> CountSink:
    """A sink for a URL: None for in-process counts, redis:// (or rediss://, unix://) for shared ones.

    redis is imported only when asked for, so the embedded default never loads it.
    """
    if url is None:
        return MemoryCountSink()
    if url.split("://", 1)[0] in {"redis", "rediss", "unix"}:
        from redis.asyncio import Redis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        # Drift is best-effort: fail a flush fast (it is retried by the next one) rather than back off for seconds.
        client = Redis.from_url(url, socket_connect_timeout=2.0, socket_timeout=2.0, retry=Retry(NoBackoff(), 1))
        return RedisCountSink(client, prefix, ttl_seconds=ttl_seconds, owns_client=True)
    raise ValueError(f"count sink: unsupported URL scheme in {url!r}; expected redis://, rediss:// or unix://")


@dataclass(frozen=True, slots=True, eq=False)
class BinnedChunk:
    """Served rows binned together: their number, count vector and slot matrix (rows x columns, kept
    so that a flush can split the chunk exactly at a window boundary)."""

    rows: int
    counts: npt.NDArray[np.int64]
    slots: npt.NDArray[np.integer[Any]]


class DriftFeed:
    """Feeds one tracker's counts through a CountSink; the gateway's per-(route, version) drift handle.

    Counting happens off the caller's latency (the tap runs after the batch's results are delivered).
    On the request path, `tap()` gives the batcher a native tap (monitoring/_binning.c `Tap`) that bins
    each batch in one C call into chunks the flush takes. `add`/`add_served`, the Python path for
    everything else, only queue references to a served batch's arrays (a list append). Once
    `bin_rows` rows wait (`call_soon`, after the responses already due), or at the next flush, the
    compiled kernel bins the whole queue in one call, one pass over each batch, into chunks (a count
    vector and the rows' slots). Paying Python's per-call costs once per ~100 batches instead of once per
    batch is what keeps drift cheap: per batch, the kernel itself is well under a microsecond, while
    each Python call on the way to it cost about as much. Batches the kernel cannot take (named
    columns, categorical profiles, raw outputs to reduce, or no compiler at build time) are binned
    from the same queue with numpy, which makes a dozen passes over them, ~10x the kernel's cost per row.
    `flush`, from one background task every fraction of a second, writes the chunks' counts to the
    sink and closes the windows that are due, with PSI from the merged totals. The tracker's
    `current()` shows this process's share of the open window; `history()` the merged windows.
    Not thread-safe: one event loop owns it.
    """

    def __init__(
        self,
        tracker: DriftTracker,
        sink: CountSink,
        key: str | None = None,
        *,
        settle_seconds: float = 2.0,
        max_pending_rows: int = 100_000,
        bin_rows: int = 1024,
        chunk_rows: int = 256,
    ) -> None:
        self.tracker = tracker
        self.sink = sink
        self.key = key if key is not None else f"{tracker.route}:{tracker.version}:{tracker.fingerprint}"
        self.settle_seconds = settle_seconds
        self.max_pending_rows = max_pending_rows
        self.bin_rows = bin_rows
        self.chunk_rows = chunk_rows  # rows per kernel chunk: a window boundary re-tallies part of one
        self._dropped_rows = 0
        self._taps: dict[tuple[int, tuple[int, ...]], Tap] = {}  # the request path's native taps, by selection
        self._pending: list[tuple[Columns, Pending, int]] = []
        self._pending_rows = 0  # queued, binned or not, and not yet flushed
        self._unbinned_rows = 0
        self._chunks: list[BinnedChunk] = []
        self._bin_scheduled = False
        # The open chunk the kernel bins into: its count vector (int64) and slots (capacity x columns,
        # uint16) as plain bytes, the cheapest buffers to hand over; rows used of its capacity.
        self._direct = tracker.compiled
        self._open_counts = bytearray()
        self._open_slots = bytearray()
        self._open_rows = self._open_capacity = 0
        self._next_close: int | None = None
        self._waiting_since: dict[int, float] = {}

    @property
    def pending_rows(self) -> int:
        return self._pending_rows + sum(tap.pending_rows for tap in self._taps.values())

    @property
    def dropped_rows(self) -> int:
        return self._dropped_rows + sum(tap.dropped_rows for tap in self._taps.values())

    def tap(self, input_index: int, output_indices: tuple[int, ...],
            fallback: Callable[[Sequence[Any], Sequence[Any]], object]) -> Tap | None:
        """The batcher's tap for this feed when the kernel can bin its batches: it counts
        inputs[input_index] (the monitored features, in order) and outputs[i] for i in output_indices
        in one C call per batch; `fallback` (a Python tap feeding `add_served`) gets the batches it
        cannot take. None without the kernel. One per selection, kept across route syncs."""
        if not self.tracker.compiled:
            return None
        key = (input_index, output_indices)
        tap = self._taps.get(key)
        if tap is None:
            tap = self._taps[key] = self.tracker.tap(input_index, output_indices, self.chunk_rows,
                                                     self.max_pending_rows, fallback)
        return tap

    def add(self, columns: Columns, outputs: Columns | None = None) -> bool:
        """Count a served batch (queued arrays are kept, not copied: don't mutate them); False if dropped
        as over the cap."""
        none = outputs is None and not self.tracker.output_names  # the kernel's form of "no outputs"
        return self._queue(columns, () if none else outputs, _rows(columns))

    def add_served(self, columns: Columns, raw_outputs: tuple[npt.NDArray[Any], ...]) -> bool:
        """Like `add`, with the model's raw output arrays (one per tracked output, in the tracker's
        order, batch dimension first), each reduced to one decision per row: its only column, else
        the arg-max class. The Python tap's call (gateway/watch.py) where the native one cannot serve."""
        return self._queue(columns, raw_outputs, _rows(columns))

    def _open_chunk(self, rows: int) -> None:
        """Seal the open chunk and open one with room for at least `rows` rows."""
        self._seal()
        self._open_capacity = max(self.chunk_rows, rows)
        self._open_counts = bytearray(8 * self.tracker.layout.size)
        self._open_slots = bytearray(2 * self._open_capacity * len(self.tracker.columns))

    def _seal(self) -> None:
        if self._open_rows:
            counts = np.frombuffer(self._open_counts, np.int64)
            slots = np.frombuffer(self._open_slots, np.uint16).reshape(self._open_capacity, -1)[: self._open_rows]
            self._chunks.append(BinnedChunk(self._open_rows, counts, slots))
        self._open_counts = self._open_slots = bytearray()
        self._open_rows = self._open_capacity = 0

    def _queue(self, columns: Columns, outputs: Columns | tuple[npt.NDArray[Any], ...] | None, rows: int) -> bool:
        if self._pending_rows + rows > self.max_pending_rows:
            self._dropped_rows += rows
            return False
        self._pending.append((columns, outputs, rows))
        self._pending_rows += rows
        self._unbinned_rows += rows
        if self._unbinned_rows >= self.bin_rows and not self._bin_scheduled:
            self._schedule_binning()
        return True

    def _schedule_binning(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (a script feeding it by hand): the flush bins everything
            return
        self._bin_scheduled = True
        loop.call_soon(self.bin_pending)

    def bin_pending(self) -> None:
        """Bin the queued batches: the kernel's into chunks, the rest into one numpy chunk (malformed
        batches are dropped and counted)."""
        self._bin_scheduled = False
        pending, self._pending, self._unbinned_rows = self._pending, [], 0
        if pending and self._direct:
            pending = self._bin_direct(pending)
        if not pending:
            return
        try:
            slots = self._locate(pending)
        except Exception:  # a bug must not leave rows counted as pending forever
            lost = sum(rows for _, _, rows in pending)
            self._pending_rows -= lost
            self._dropped_rows += lost
            raise
        binned = int(slots.shape[1])
        self._pending_rows -= sum(rows for _, _, rows in pending) - binned  # what _locate dropped
        if binned:
            self._seal()  # rows the kernel binned before these keep their place
            self._chunks.append(BinnedChunk(binned, self.tracker.tally(slots), slots.T))

    def _take_taps(self) -> None:
        width = len(self.tracker.columns)
        for tap in self._taps.values():
            for rows, counts, slots in tap.take():
                self._seal()
                self._chunks.append(BinnedChunk(rows, np.frombuffer(counts, np.int64),
                                                np.frombuffer(slots, np.uint16).reshape(-1, width)[:rows]))

    def _bin_direct(self, pending: list[tuple[Columns, Pending, int]]) -> list[tuple[Columns, Pending, int]]:
        """Bin `pending` with the kernel into the open chunk, opening chunks as they fill; returns the
        batches left for numpy, in order."""
        left: list[tuple[Columns, Pending, int]] = []
        start = 0
        while start < len(pending):
            if not self._open_capacity:
                self._open_chunk(pending[start][2])
            try:
                done, rows, stop = self.tracker.bin_batches(pending, start, self._open_counts,
                                                            self._open_slots, self._open_rows)
            except Exception:  # a bug must not leave rows counted as pending forever
                lost = sum(rows for _, _, rows in pending[start:])
                self._pending_rows -= lost
                self._dropped_rows += lost
                raise
            self._open_rows += rows
            if stop == 1:  # the chunk is full
                self._open_chunk(pending[done][2])
            elif stop == 2:
                columns, outputs, _ = pending[done]
                if type(columns) is np.ndarray and type(outputs) is tuple:
                    # A served matrix it does not take (say, class probabilities to reduce by arg-max,
                    # or integer features): a version's batches share dtypes and shapes, so numpy
                    # counts this feed from now on.
                    self._direct = False
                    return left + pending[done:]
                left.append(pending[done])  # named columns or decided outputs: numpy's, this once
                done += 1
            start = done
        return left

    async def flush(self, *, now: float, epoch: float) -> list[ClosedWindow]:
        """Write queued counts and close due windows; `now` is monotonic, `epoch` wall-clock seconds.

        Raises CountSinkError when the sink fails; the queued rows are then dropped and counted.
        """
        self._take_taps()
        self.bin_pending()
        self._seal()
        chunks, self._chunks, self._pending_rows = self._chunks, [], self._unbinned_rows
        rows = sum(chunk.rows for chunk in chunks)
        try:
            if self.tracker.policy.rows is not None:
                return await self._flush_rows(chunks, rows, self.tracker.policy.rows, now)
            assert self.tracker.policy.seconds is not None
            return await self._flush_time(chunks, rows, self.tracker.policy.seconds, now, epoch)
        except BaseException:
            self._dropped_rows += rows
            raise

    def _locate(self, pending: list[tuple[Columns, Pending, int]]) -> npt.NDArray[np.integer[Any]]:
        # Batches are concatenated before binning, so numpy's per-call overhead is paid per chunk,
        # not per request. A malformed batch (a missing column, a wrong width) is dropped and
        # counted alone: the others are binned one by one.
        tracker = self.tracker
        names, out_names = tracker.feature_names, tracker.output_names
        bare: list[Columns] = []
        decided: list[tuple[Columns, Columns]] = []
        raw: list[tuple[Columns, tuple[npt.NDArray[Any], ...]]] = []
        for columns, outputs, _ in pending:
            if outputs is None:
                bare.append(columns)
            elif type(outputs) is tuple:
                raw.append((columns, outputs))
            else:
                decided.append((columns, outputs))  # type: ignore[arg-type]  # Columns, by elimination
        parts: list[npt.NDArray[np.integer[Any]]] = []
        try:
            if bare:
                parts.append(tracker.locate(_concat(bare, names)))
            if decided:
                parts.append(tracker.locate(_concat([c for c, _ in decided], names), _concat([o for _, o in decided], out_names)))
            if raw:
                parts.append(tracker.locate(_concat([c for c, _ in raw], names), _decide([o for _, o in raw], out_names)))
        except (ValueError, KeyError, TypeError, IndexError):
            parts = []
            for columns, outputs, rows in pending:
                try:
                    reduced = _decide([outputs], out_names) if type(outputs) is tuple else outputs
                    parts.append(tracker.locate(columns, reduced))  # type: ignore[arg-type]
                except (ValueError, KeyError, TypeError, IndexError):
                    self._dropped_rows += rows
        if not parts:
            return np.empty((len(tracker.columns), 0), tracker.slot_dtype)
        return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)

    async def _flush_rows(self, chunks: list[BinnedChunk], rows: int, limit: int, now: float) -> list[ClosedWindow]:
        total = await self.sink.reserve(self.key, rows)
        position = total - rows
        if self._next_close is None or self._next_close > total // limit:  # first flush, or the counter expired
            self._next_close = position // limit
        # Rows at global positions kN..(k+1)N-1 belong to window k: a whole chunk adds its count vector;
        # a chunk that straddles a boundary is tallied from its slots piece by piece, all but its
        # largest piece, which is the chunk's counts less the others.
        vectors: dict[int, npt.NDArray[np.int64]] = {}
        window_rows: dict[int, int] = {}
        for chunk in chunks:
            pieces: list[tuple[int, int, int]] = []  # (window, first row, rows) within the chunk
            done = 0
            while done < chunk.rows:
                window = (position + done) // limit
                take = min(chunk.rows - done, (window + 1) * limit - (position + done))
                pieces.append((window, done, take))
                done += take
            largest = max(range(len(pieces)), key=lambda i: pieces[i][2])
            rest = chunk.counts.copy() if len(pieces) > 1 else chunk.counts
            for i, (window, first, take) in enumerate(pieces):
                if i == largest:
                    continue
                part = self.tracker.tally(chunk.slots[first : first + take])
                rest -= part
                self._add_to(vectors, window, part)
            self._add_to(vectors, pieces[largest][0], rest)
            for window, _, take in pieces:
                window_rows[window] = window_rows.get(window, 0) + take
            position += chunk.rows
        current: list[tuple[int, BinCounts]] = []
        for window, vector in vectors.items():  # in window order: chunks are in row order
            counts = self.tracker.split(vector, window_rows[window])
            await self.sink.add(self.key, window, counts)
            current.append((window, counts))
        closed = await self._close_due(total // limit - 1, now, lambda t: t.rows >= limit)
        self._mirror(current, now)
        return closed

    @staticmethod
    def _add_to(vectors: dict[int, npt.NDArray[np.int64]], window: int, part: npt.NDArray[np.int64]) -> None:
        held = vectors.get(window)
        if held is None:
            vectors[window] = part.copy()
        else:
            held += part

    async def _flush_time(self, chunks: list[BinnedChunk], rows: int, seconds: float, now: float, epoch: float) -> list[ClosedWindow]:
        window = math.floor(epoch / seconds)
        if self._next_close is None:
            self._next_close = window
        current: list[tuple[int, BinCounts]] = []
        if rows:
            vector = chunks[0].counts.copy()
            for chunk in chunks[1:]:
                vector += chunk.counts
            counts = self.tracker.split(vector, rows)
            await self.sink.add(self.key, window, counts)
            current.append((window, counts))
        closed = await self._close_due(math.floor((epoch - self.settle_seconds) / seconds) - 1, now, lambda t: True)
        self._mirror(current, now)
        return closed

    async def _close_due(self, last: int, now: float, complete: Callable[[BinCounts], bool]) -> list[ClosedWindow]:
        """Close windows up to `last` from merged totals; stop at one that is incomplete and not yet settled."""
        assert self._next_close is not None
        keep = self.tracker.history_size
        if last - self._next_close >= keep:  # far behind (idle process): only the newest `keep` matter
            self._next_close = last - keep + 1
        closed: list[ClosedWindow] = []
        while self._next_close <= last:
            window = self._next_close
            totals = await self.sink.totals(self.key, window)
            if not complete(totals) and now < self._waiting_since.setdefault(window, now) + self.settle_seconds:
                break
            self._waiting_since.pop(window, None)
            if totals.rows:
                closed.append(self.tracker.close(now, totals, window=window))
            self._next_close = window + 1
        return closed

    def _mirror(self, current: list[tuple[int, BinCounts]], now: float) -> None:
        # This process's share of the windows still open, for `tracker.current()`.
        for window, counts in current:
            if self._next_close is not None and window >= self._next_close:
                self.tracker.add_counts(counts, now=now, window=window)


def _rows(columns: Columns) -> int:
    if isinstance(columns, np.ndarray):
        return int(columns.shape[0]) if columns.ndim else 1
    for value in columns.values():
        return int(np.shape(value)[0]) if np.ndim(value) else 1
    return 0


def _matrix(columns: npt.NDArray[Any]) -> npt.NDArray[Any]:
    return columns if columns.ndim == 2 else columns.reshape(columns.shape[0], -1 if columns.ndim > 2 else 1)


def _concat(batches: Sequence[Columns], names: Sequence[str]) -> Columns:
    """One batch from several: stacked rows of 2-D arrays, or per-name concatenated columns."""
    if len(batches) == 1:
        return batches[0]
    arrays = [b for b in batches if isinstance(b, np.ndarray)]
    if len(arrays) == len(batches):
        try:  # the common case: every batch already a 2-D matrix of the same width
            return np.concatenate(arrays)
        except ValueError:
            return np.concatenate([_matrix(b) for b in arrays])

    def column(batch: Columns, index: int, name: str) -> npt.NDArray[Any]:
        if isinstance(batch, np.ndarray):
            return _matrix(batch)[:, index]
        return np.asarray(batch[name]).reshape(-1)

    return {name: np.concatenate([column(b, i, name) for b in batches]) for i, name in enumerate(names)}


def _decide(raw: Sequence[tuple[npt.NDArray[Any], ...]], names: Sequence[str]) -> dict[str, npt.NDArray[Any]]:
    """Raw output arrays of several batches as one decision column per tracked output."""
    if any(len(outputs) != len(names) for outputs in raw):
        raise ValueError(f"drift: expected {len(names)} raw outputs per batch")
    return {
        name: decision_column(raw[0][j] if len(raw) == 1 else np.concatenate([outputs[j] for outputs in raw]))
        for j, name in enumerate(names)
    }
