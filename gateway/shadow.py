"""Shadow mirroring: compare_outputs() (pure) scores a shadow's outputs against the primary's, and
ShadowQueue runs mirror jobs off the caller's latency, dropping (and counting) them when it is full."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

Outputs = Sequence[tuple[str, npt.NDArray[Any]]]
Job = Callable[[], Awaitable[None]]

# Complex numbers have no order, so neither argmax nor a 0.5 threshold means anything for them.
_NUMERIC_KINDS = frozenset("biuf")


@dataclass(frozen=True, slots=True)
class Comparison:
    """How close a shadow came to the primary: mean absolute difference over every numeric element
    compared, and the fraction of decisions (rows, or elements) that agree; None where not measured."""

    mean_abs_diff: float | None
    agreement: float | None


_INCOMPARABLE = Comparison(None, None)


def compare_outputs(primary: Outputs, shadow: Outputs) -> Comparison:
    """Compare the outputs the two share by name, in the primary's order.

    Comparison(None, None) when they share no name, or when a shared output differs in shape or in
    being numeric: the caller counts that as a mismatch. mean_abs_diff is element-weighted over the
    shared numeric outputs. agreement is measured on the first shared output: argmax over the last
    axis when it has more than one column; else per element, equality for integer/bool outputs
    (labels) and the 0.5 threshold for float outputs (probabilities); equality for strings."""
    theirs = dict(shadow)
    pairs: list[tuple[npt.NDArray[Any], npt.NDArray[Any]]] = []
    for name, ours in primary:
        other = theirs.get(name)
        if other is None:
            continue
        if ours.shape != other.shape or _numeric(ours) != _numeric(other):
            return _INCOMPARABLE
        pairs.append((ours, other))
    if not pairs:
        return _INCOMPARABLE
    total = 0.0
    count = 0
    for a, b in pairs:
        if _numeric(a) and a.size:
            total += float(np.abs(a.astype(np.float64) - b.astype(np.float64)).sum())
            count += a.size
    return Comparison(total / count if count else None, _agreement(*pairs[0]))


def _numeric(array: npt.NDArray[Any]) -> bool:
    return array.dtype.kind in _NUMERIC_KINDS


def _agreement(a: npt.NDArray[Any], b: npt.NDArray[Any]) -> float | None:
    if a.size == 0:
        return None
    if not _numeric(a):
        return float(np.mean(a == b))
    if a.ndim >= 2 and a.shape[-1] > 1:
        return float(np.mean(a.argmax(axis=-1) == b.argmax(axis=-1)))
    if a.dtype.kind == "f" or b.dtype.kind == "f":
        return float(np.mean((a > 0.5) == (b > 0.5)))
    return float(np.mean(a == b))


def _call_safely(callback: Callable[..., object] | None, *args: object) -> None:
    # Metric callbacks must not turn a dropped or failed mirror into an error for the caller.
    if callback is not None:
        with contextlib.suppress(Exception):
            callback(*args)


class ShadowQueue:
    """A bounded queue of mirror jobs (zero-argument coroutine factories) run by `workers` tasks.

    offer() never blocks or raises. Each job gets `timeout` seconds (None: no limit); every exception
    it raises is counted in `failed` and handed to on_failure, never to the caller. Counters are plain
    ints: offered == completed + failed + dropped + pending, where dropped counts jobs refused because
    the queue was full or closed, and jobs that close() discarded or interrupted."""

    __slots__ = (
        "_closed",
        "_on_drop",
        "_on_failure",
        "_queue",
        "_tasks",
        "_timeout",
        "_workers",
        "completed",
        "dropped",
        "failed",
        "offered",
    )

    def __init__(
        self,
        maxsize: int = 1024,
        workers: int = 4,
        timeout: float | None = 5.0,
        on_drop: Callable[[], object] | None = None,
        on_failure: Callable[[BaseException], object] | None = None,
    ) -> None:
        if maxsize < 1 or workers < 1:
            raise ValueError("ShadowQueue needs maxsize >= 1 and workers >= 1")
        self._queue: asyncio.Queue[Job] = asyncio.Queue(maxsize)
        self._workers = workers
        self._timeout = timeout
        self._on_drop = on_drop
        self._on_failure = on_failure
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = False
        self.offered = 0
        self.completed = 0
        self.failed = 0
        self.dropped = 0

    @property
    def pending(self) -> int:
        """Jobs waiting for a worker."""
        return self._queue.qsize()

    def start(self) -> None:
        """Start the worker tasks on the running loop. Raises RuntimeError if started or closed."""
        if self._tasks or self._closed:
            raise RuntimeError("ShadowQueue already started or closed")
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._work(), name=f"shadow-worker-{i}") for i in range(self._workers)
        ]

    def offer(self, job: Job) -> bool:
        """Queue `job` if there is room; else drop it, count it and call on_drop. True if queued."""
        self.offered += 1
        if not self._closed:
            try:
                self._queue.put_nowait(job)
                return True
            except asyncio.QueueFull:
                pass
        self._drop()
        return False

    async def join(self) -> None:
        """Wait until every queued job has finished (completed, failed or dropped)."""
        await self._queue.join()

    async def close(self) -> None:
        """Cancel the workers (interrupting running jobs) and discard what is still queued."""
        self._closed = True
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        while True:
            try:
                self._queue.get_nowait()
            except asyncio.QueueEmpty:
                break
            self._drop()
            self._queue.task_done()

    def _drop(self) -> None:
        self.dropped += 1
        _call_safely(self._on_drop)

    async def _work(self) -> None:
        queue = self._queue
        while True:
            job = await queue.get()
            try:
                async with asyncio.timeout(self._timeout):
                    await job()
            except asyncio.CancelledError as exc:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    # close() is stopping this worker: the job never finished, so it was dropped.
                    self._drop()
                    raise
                # The job itself raised CancelledError (say, an inner task was cancelled): a failure.
                self._fail(exc)
            except Exception as exc:  # includes TimeoutError from the per-job limit
                self._fail(exc)
            else:
                self.completed += 1
            finally:
                queue.task_done()

    def _fail(self, exc: BaseException) -> None:
        self.failed += 1
        _call_safely(self._on_failure, exc)
