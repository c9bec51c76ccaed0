"""Micro-batching: requests that reach a model together share one session.run.

Pure stack/split helpers first, then the MicroBatcher that owns the queue. A request that finds the
model idle runs at once (in the same event-loop turn as the requests that arrived with it); requests
that arrive while the model is busy queue and run stacked when it frees up. Times come from
time.monotonic(): uvloop's loop.time() only advances once per loop iteration, in milliseconds. Each request keeps one
future; no ids. A batch that fails is retried request by request, so one bad request fails alone.

A request may carry a tap (drift tracking): after its batch ran, the tap sees the batch's stacked
inputs and outputs once when every request of the batch carries the same tap (the common case), so
per-request observers cost nothing per request; otherwise each request's own rows.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from time import monotonic
from typing import Literal

import numpy as np
import numpy.typing as npt

Arrays = list[npt.NDArray[np.generic]]
RunFn = Callable[[Arrays], Arrays]
Reason = Literal["idle", "full", "deadline"]
# rows in the batch, seconds its oldest request waited, why it was released
Observer = Callable[[int, float, Reason], None]
# served inputs and outputs (model order), called on the event loop after a successful run
Tap = Callable[[Arrays, Arrays], object]
# per-request results, and the stacked inputs and outputs when the batch ran as one
Ran = tuple[list["Arrays | BaseException"], Arrays | None, Arrays | None]


class QueueFull(Exception):
    """The model's queue holds its limit of rows; the caller should answer 503 at once."""


class DeadlineExceeded(Exception):
    """The request's deadline passed while it waited in the queue; it was never run."""


def stack_requests(requests: Sequence[Arrays]) -> tuple[Arrays, list[int]]:
    """Concatenate each input along the batch axis; return the arrays and each request's row count."""
    sizes = [r[0].shape[0] for r in requests]
    if len(requests[0]) == 1:
        return [np.concatenate([r[0] for r in requests])], sizes
    stacked = [np.concatenate([r[i] for r in requests]) for i in range(len(requests[0]))]
    return stacked, sizes


def split_outputs(outputs: Arrays, sizes: Sequence[int]) -> list[Arrays]:
    """Split each batched output back into per-request slices (views, no copies)."""
    if len(sizes) == 1:
        return [list(outputs)]
    parts: list[Arrays] = []
    start = 0
    if len(outputs) == 1:
        out = outputs[0]
        for size in sizes:
            parts.append([out[start : start + size]])
            start += size
        return parts
    for size in sizes:
        end = start + size
        parts.append([out[start:end] for out in outputs])
        start = end
    return parts


def batch_key(arrays: Arrays) -> tuple[object, ...]:
    """Requests can share a run only when every input has the same dtype and non-batch dims."""
    return tuple((a.dtype, a.shape[1:]) for a in arrays)


@dataclass(slots=True)
class _Item:
    arrays: Arrays
    future: asyncio.Future[Arrays]
    rows: int
    queued_at: float
    deadline: float | None  # time.monotonic(); past it the request is dropped from the queue unrun
    tap: Tap | None = None


class MicroBatcher:
    """Collects submissions for one model and runs them stacked, inline or on an executor.

    Inline (executor None): batches run in the loop turn that flushes, until `inline_turn_s` has passed;
    the rest waits for the next turn. Running the whole queue in one turn would keep the loop from reading
    new requests meanwhile: under overload the backlog would then sit unbounded in the sockets, where
    max_queue_rows cannot see it, instead of in this queue, where it is shed. Small models still run
    many batches per turn (a turn per batch cost 50% more CPU per request with 64-row v2 requests, measured).
    Executor: up to `concurrency` batches in flight; what queues meanwhile runs when a slot frees.
    `max_delay_s` > 0 makes an idle model wait that long to fill a batch (off by default: it adds
    latency at low load). `batchable` is False for models without a leading dynamic batch dim:
    their requests still queue here, but each runs alone. `uniform` promises that every request
    has the same batch_key (the signature fixes every dtype and non-batch dim), so batches are
    taken without comparing keys.
    """

    def __init__(
        self,
        run: RunFn,
        *,
        max_batch_size: int,
        max_delay_s: float,
        executor: Executor | None,
        batchable: bool = True,
        max_queue_rows: int = 4096,
        concurrency: int = 1,
        observe: Observer | None = None,
        uniform: bool = False,
        inline_turn_s: float = 0.0005,
    ) -> None:
        self._run = run
        self._max_rows = max_batch_size if batchable else 1
        self._max_delay_s = max_delay_s
        self._executor = executor
        self._max_queue_rows = max_queue_rows
        self._concurrency = concurrency
        self._observe = observe
        self._uniform = uniform
        self._inline_turn_s = inline_turn_s
        self._pending: list[_Item] = []
        self._queued_rows = 0
        self._timer: asyncio.TimerHandle | None = None
        self._scheduled = False
        self._in_flight = 0
        # The loop it serves, bound once: asyncio.get_running_loop() makes a getpid() system call per
        # call on CPython 3.11 (fork detection), measured at ~2 µs of CPU per request under load.
        try:
            self._loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:  # built outside a loop: bound by the first submit
            self._loop = None

    @property
    def queued_rows(self) -> int:
        return self._queued_rows

    async def submit(self, arrays: Arrays, deadline: float | None = None, tap: Tap | None = None) -> Arrays:
        """Queue one request's inputs (validated, model order) and wait for its outputs.
        Raises QueueFull at once when the queue already holds max_queue_rows, and DeadlineExceeded
        when `deadline` (time.monotonic()) passes before its batch is taken."""
        rows = int(arrays[0].shape[0])
        if self._queued_rows + rows > self._max_queue_rows and self._pending:
            raise QueueFull(f"{self._queued_rows} rows already queued (limit {self._max_queue_rows})")
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        future: asyncio.Future[Arrays] = loop.create_future()
        self._pending.append(_Item(arrays, future, rows, monotonic(), deadline, tap))
        self._queued_rows += rows
        if self._in_flight < self._concurrency and not self._scheduled:
            self._scheduled = True
            if self._max_delay_s > 0 and self._queued_rows < self._max_rows:
                self._timer = loop.call_later(self._max_delay_s, self._flush, "deadline")
            else:
                loop.call_soon(self._flush, "idle")
        elif self._timer is not None and self._queued_rows >= self._max_rows:
            self._timer.cancel()  # enough rows to fill a batch: don't wait out the delay
            self._timer = None
            loop.call_soon(self._flush, "full")
        return await future

    def _drop_abandoned(self, now: float) -> None:
        """Requests whose caller left (cancelled) or whose deadline passed leave the queue unrun."""
        for item in self._pending:
            if item.future.done() or (item.deadline is not None and now > item.deadline):
                break
        else:
            return  # the common case: every request is still wanted
        kept = []
        for item in self._pending:
            if item.future.done():
                self._queued_rows -= item.rows
            elif item.deadline is not None and now > item.deadline:
                self._queued_rows -= item.rows
                item.future.set_exception(DeadlineExceeded(f"waited {now - item.queued_at:.3f} s in the queue"))
            else:
                kept.append(item)
        self._pending = kept

    def _take_batch(self) -> tuple[list[_Item], int, Reason | None]:
        """Take the oldest request and those after it that fit its shape key and the row cap; return
        them, their rows, and "full" when the cap stopped it."""
        if self._uniform and self._queued_rows <= self._max_rows:  # all of the queue fits one batch
            batch, rows = self._pending, self._queued_rows
            self._pending = []
            self._queued_rows = 0
            return batch, rows, "full" if rows >= self._max_rows else None
        first = self._pending[0]
        key = batch_key(first.arrays)
        rows = first.rows
        batch, rest = [first], []
        capped = False
        for item in self._pending[1:]:
            if rows + item.rows <= self._max_rows and (self._uniform or batch_key(item.arrays) == key):
                batch.append(item)
                rows += item.rows
            else:
                capped = capped or rows + item.rows > self._max_rows
                rest.append(item)
        self._pending = rest
        self._queued_rows -= rows
        return batch, rows, "full" if capped or rows >= self._max_rows else None

    def _flush(self, reason: Reason) -> None:
        self._scheduled = False
        self._timer = None
        loop = self._loop
        assert loop is not None  # scheduled by submit()
        now = monotonic()
        self._drop_abandoned(now)
        while self._pending and self._in_flight < self._concurrency:
            batch, rows, capped = self._take_batch()
            if self._observe is not None:
                self._observe(rows, now - batch[0].queued_at, capped or reason)
            if self._executor is None:
                _deliver(batch, self._run_batch(batch))
                if self._pending and monotonic() - now >= self._inline_turn_s:
                    # the rest waits a loop turn, so what arrived meanwhile is read (or shed)
                    self._scheduled = True
                    loop.call_soon(self._flush, "idle")
                    return
                continue
            self._in_flight += 1
            task = loop.run_in_executor(self._executor, self._run_batch, batch)
            task.add_done_callback(lambda done, batch=batch: self._after_executor_run(batch, done))  # type: ignore[misc]

    def _after_executor_run(self, batch: list[_Item], done: asyncio.Future[Ran]) -> None:
        self._in_flight -= 1
        exc = done.exception()
        _deliver(batch, ([exc] * len(batch), None, None) if exc is not None else done.result())
        if self._pending and not self._scheduled:  # what queued during the run goes now
            self._flush("idle")

    def _run_batch(self, batch: list[_Item]) -> Ran:
        """Run a batch; on failure run its requests one by one so only the bad one fails."""
        if len(batch) == 1:
            arrays = batch[0].arrays
            result = _call(self._run, arrays)
            return [result], arrays, None if isinstance(result, BaseException) else result
        stacked, sizes = stack_requests([item.arrays for item in batch])
        try:
            outputs = self._run(stacked)
        except Exception:
            return [_call(self._run, item.arrays) for item in batch], None, None
        return list(split_outputs(outputs, sizes)), stacked, outputs


def _call(run: RunFn, arrays: Arrays) -> Arrays | BaseException:
    try:
        return run(arrays)
    except Exception as exc:
        return exc


def _deliver(batch: list[_Item], ran: Ran) -> None:
    results, stacked, outputs = ran
    for item, result in zip(batch, results, strict=True):
        if item.future.done():  # the caller went away (cancelled); nothing to deliver
            continue
        if isinstance(result, BaseException):
            item.future.set_exception(result)
        else:
            item.future.set_result(result)
    tap = batch[0].tap
    if outputs is not None and all(item.tap is tap for item in batch):
        if tap is not None:
            assert stacked is not None
            tap(stacked, outputs)
        return
    for item, result in zip(batch, results, strict=True):  # mixed taps, or run one by one
        if item.tap is not None and not isinstance(result, BaseException):
            item.tap(item.arrays, result)
