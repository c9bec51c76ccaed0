"""Micro-batching: requests that reach a model in the same event-loop turn share one session.run.

Pure stack/split helpers first, then the MicroBatcher that owns the queue. Each request keeps one
future; no ids. A batch that fails is retried request by request, so one bad request fails alone.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import Executor

import numpy as np
import numpy.typing as npt

Arrays = list[npt.NDArray[np.generic]]
RunFn = Callable[[Arrays], Arrays]


def stack_requests(requests: Sequence[Arrays]) -> tuple[Arrays, list[int]]:
    """Concatenate each input along the batch axis; return the arrays and each request's row count."""
    sizes = [int(r[0].shape[0]) for r in requests]
    stacked = [np.concatenate([r[i] for r in requests], axis=0) for i in range(len(requests[0]))]
    return stacked, sizes


def split_outputs(outputs: Arrays, sizes: Sequence[int]) -> list[Arrays]:
    """Split each batched output back into per-request slices (views, no copies)."""
    bounds = np.cumsum(sizes)[:-1]
    per_output = [np.split(out, bounds, axis=0) for out in outputs]
    return [[parts[i] for parts in per_output] for i in range(len(sizes))]


def batch_key(arrays: Arrays) -> tuple[object, ...]:
    """Requests can share a run only when every input has the same dtype and non-batch dims."""
    return tuple((a.dtype, a.shape[1:]) for a in arrays)


class MicroBatcher:
    """Collects submissions for one model and runs them stacked, inline or on an executor.

    `batchable` is False for models whose inputs or outputs lack a leading dynamic batch dim:
    their requests still queue here, but each runs alone.
    """

    def __init__(
        self,
        run: RunFn,
        *,
        max_batch_size: int,
        max_delay_s: float,
        executor: Executor | None,
        batchable: bool = True,
    ) -> None:
        self._run = run
        self._max_rows = max_batch_size if batchable else 1
        self._max_delay_s = max_delay_s
        self._executor = executor
        self._pending: list[tuple[Arrays, asyncio.Future[Arrays]]] = []
        self._scheduled = False
        self._in_flight = False

    async def submit(self, arrays: Arrays) -> Arrays:
        """Queue one request's inputs (validated, model order) and wait for its outputs."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Arrays] = loop.create_future()
        self._pending.append((arrays, future))
        if not self._scheduled and not self._in_flight:
            self._scheduled = True
            if self._max_delay_s > 0:
                loop.call_later(self._max_delay_s, self._flush)
            else:
                loop.call_soon(self._flush)
        return await future

    def _take_batch(self) -> list[tuple[Arrays, asyncio.Future[Arrays]]]:
        """Take the oldest request and those after it that fit its shape key and the row cap."""
        first = self._pending[0]
        key = batch_key(first[0])
        rows = int(first[0][0].shape[0])
        batch, rest = [first], []
        for item in self._pending[1:]:
            n = int(item[0][0].shape[0])
            if rows + n <= self._max_rows and batch_key(item[0]) == key:
                batch.append(item)
                rows += n
            else:
                rest.append(item)
        self._pending = rest
        return batch

    def _flush(self) -> None:
        self._scheduled = False
        if self._executor is None:
            while self._pending:
                batch = self._take_batch()
                _deliver(batch, self._run_batch(batch))
        elif self._pending and not self._in_flight:
            self._in_flight = True
            batch = self._take_batch()
            loop = asyncio.get_running_loop()
            task = loop.run_in_executor(self._executor, self._run_batch, batch)
            task.add_done_callback(lambda done: self._after_executor_run(batch, done))

    def _after_executor_run(
        self, batch: list[tuple[Arrays, asyncio.Future[Arrays]]], done: asyncio.Future[list[Arrays | BaseException]]
    ) -> None:
        self._in_flight = False
        exc = done.exception()
        _deliver(batch, [exc] * len(batch) if exc is not None else done.result())
        if self._pending:  # what arrived during the run forms the next batch
            self._flush()

    def _run_batch(self, batch: list[tuple[Arrays, asyncio.Future[Arrays]]]) -> list[Arrays | BaseException]:
        """Run a batch; on failure run its requests one by one so only the bad one fails."""
        if len(batch) == 1:
            return [_call(self._run, batch[0][0])]
        stacked, sizes = stack_requests([item[0] for item in batch])
        try:
            return list(split_outputs(self._run(stacked), sizes))
        except Exception:
            return [_call(self._run, item[0]) for item in batch]


def _call(run: RunFn, arrays: Arrays) -> Arrays | BaseException:
    try:
        return run(arrays)
    except Exception as exc:
        return exc


def _deliver(batch: list[tuple[Arrays, asyncio.Future[Arrays]]], results: Sequence[Arrays | BaseException]) -> None:
    for (_, future), result in zip(batch, results, strict=True):
        if future.done():  # the caller went away (cancelled); nothing to deliver
            continue
        if isinstance(result, BaseException):
            future.set_exception(result)
        else:
            future.set_result(result)
