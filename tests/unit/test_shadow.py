"""Shadow mirroring: output comparison and the bounded job queue."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from gateway.shadow import Comparison, ShadowQueue, compare_outputs

Outputs = list[tuple[str, npt.NDArray[Any]]]
Job = Callable[[], Awaitable[None]]

PROBS = np.array([[0.1], [0.7], [0.4], [0.9]], np.float32)
CLASSES = np.array([[0.1, 0.7, 0.2], [0.5, 0.3, 0.2]], np.float32)


def one(array: npt.NDArray[Any], name: str = "y") -> Outputs:
    """A single named output."""
    return [(name, array)]


class TestCompareOutputs:
    @pytest.mark.parametrize(
        "array",
        [
            PROBS,
            PROBS[:, 0],
            CLASSES,
            np.array([0, 1, 2, 1], np.int64),
            np.array([True, False]),
            np.zeros((2, 3, 4), np.float64),
        ],
    )
    def test_identical(self, array: npt.NDArray[Any]) -> None:
        """Identical numeric outputs differ by 0 and agree fully."""
        assert compare_outputs(one(array), one(array.copy())) == Comparison(0.0, 1.0)

    @pytest.mark.parametrize("column", [False, True])
    def test_probabilities_threshold(self, column: bool) -> None:
        """A 1-D or one-column float output is a probability: decisions cross 0.5 or they agree."""
        ours = np.array([0.49, 0.51, 0.9, 0.1])
        theirs = np.array([0.51, 0.49, 0.8, 0.2])
        if column:
            ours, theirs = ours[:, None], theirs[:, None]
        result = compare_outputs(one(ours), one(theirs))
        assert result.mean_abs_diff == pytest.approx(0.06)
        assert result.agreement == 0.5

    def test_argmax_multiclass(self) -> None:
        """A multi-column output agrees per row when the argmax is the same."""
        theirs = np.array([[0.2, 0.6, 0.2], [0.2, 0.3, 0.5]], np.float32)
        result = compare_outputs(one(CLASSES), one(theirs))
        assert result.agreement == 0.5
        assert result.mean_abs_diff == pytest.approx((0.1 + 0.1 + 0.3 + 0.3) / 6)

    def test_integer_labels_compared_for_equality(self) -> None:
        """Integer label outputs agree only where the labels are equal, not by a 0.5 threshold."""
        result = compare_outputs(one(np.array([1, 2, 2, 0])), one(np.array([2, 2, 1, 0])))
        assert result.agreement == 0.5
        assert result.mean_abs_diff == 0.5

    @pytest.mark.parametrize(
        ("ours", "theirs", "agreement"),
        [
            (np.array(["a", "b", "c", "d"]), np.array(["a", "b", "x", "d"]), 0.75),
            (np.array([b"a", b"b"], dtype=object), np.array([b"a", b"b"], dtype=object), 1.0),
            (np.array([["yes"], ["no"]], dtype=object), np.array([["no"], ["no"]], dtype=object), 0.5),
        ],
    )
    def test_strings(self, ours: npt.NDArray[Any], theirs: npt.NDArray[Any], agreement: float) -> None:
        """String outputs agree element by element and have no mean difference."""
        assert compare_outputs(one(ours), one(theirs)) == Comparison(None, agreement)

    def test_element_weighted_diff_first_output_decides(self) -> None:
        """The mean difference is over all elements of all shared outputs; agreement uses the first."""
        ours: Outputs = [("label", np.array([0.0, 0.0])), ("scores", np.zeros((2, 3)))]
        theirs: Outputs = [("scores", np.zeros((2, 3))), ("label", np.array([1.0, 1.0]))]
        assert compare_outputs(ours, theirs) == Comparison(2 / 8, 0.0)

    def test_mixed_float_widths(self) -> None:
        """FP32 against FP64 is compared as numbers."""
        result = compare_outputs(one(PROBS), one(PROBS.astype(np.float64)))
        assert result == Comparison(0.0, 1.0)

    def test_extra_outputs_ignored(self) -> None:
        """Outputs only one side has are left out of the comparison."""
        ours: Outputs = [("y", PROBS), ("extra", np.ones(3))]
        theirs: Outputs = [("other", np.array(["x"])), ("y", PROBS)]
        assert compare_outputs(ours, theirs) == Comparison(0.0, 1.0)

    @pytest.mark.parametrize(
        ("ours", "theirs"),
        [
            (one(PROBS), one(PROBS[:2])),
            (one(PROBS), one(PROBS[:, 0])),
            (one(PROBS), one(PROBS, name="z")),
            (one(np.array([1.0])), one(np.array(["1.0"]))),
            ([], one(PROBS)),
            ([("y", PROBS), ("z", CLASSES)], [("y", PROBS), ("z", CLASSES[:1])]),
        ],
    )
    def test_incomparable(self, ours: Outputs, theirs: Outputs) -> None:
        """Mismatched shapes, names or kinds give Comparison(None, None)."""
        assert compare_outputs(ours, theirs) == Comparison(None, None)

    def test_empty_batch(self) -> None:
        """Zero rows leave nothing to measure."""
        empty = np.zeros((0, 3), np.float32)
        assert compare_outputs(one(empty), one(empty)) == Comparison(None, None)


def run(coro: Awaitable[None]) -> None:
    """Run a test coroutine with a deadline, so a hang fails instead of blocking the suite."""

    async def bounded() -> None:
        await asyncio.wait_for(coro, 10)

    asyncio.run(bounded())


class TestShadowQueue:
    def test_jobs_run(self) -> None:
        """Offered jobs run on the workers and are counted as completed."""

        async def main() -> None:
            done: list[int] = []
            queue = ShadowQueue(maxsize=16, workers=3)
            queue.start()

            def job(i: int) -> Job:
                async def mirror() -> None:
                    await asyncio.sleep(0)
                    done.append(i)

                return mirror

            assert all(queue.offer(job(i)) for i in range(10))
            await queue.join()
            await queue.close()
            assert sorted(done) == list(range(10))
            assert (queue.offered, queue.completed, queue.failed, queue.dropped) == (10, 10, 0, 0)

        run(main())

    def test_full_queue_drops(self) -> None:
        """When full, offer returns False at once, counts the drop and calls on_drop."""

        async def main() -> None:
            drops: list[None] = []
            queue = ShadowQueue(maxsize=2, workers=1, on_drop=lambda: drops.append(None))
            # Not started: nothing consumes, so the third and fourth offers find the queue full.
            results = [queue.offer(_noop) for _ in range(4)]
            assert results == [True, True, False, False]
            assert (queue.offered, queue.dropped, queue.pending) == (4, 2, 2)
            assert len(drops) == 2
            queue.start()
            await queue.join()
            await queue.close()
            assert queue.completed == 2

        run(main())

    @pytest.mark.parametrize("make_error", [lambda: RuntimeError("boom"), lambda: asyncio.CancelledError()])
    def test_failure_counted_workers_continue(self, make_error: Callable[[], BaseException]) -> None:
        """A job that raises is counted as failed, reported to on_failure, and the worker goes on."""

        async def main() -> None:
            errors: list[BaseException] = []
            queue = ShadowQueue(workers=1, on_failure=errors.append)
            queue.start()

            async def failing() -> None:
                raise make_error()

            queue.offer(failing)
            queue.offer(_noop)
            await queue.join()
            await queue.close()
            assert (queue.completed, queue.failed) == (1, 1)
            assert [type(e) for e in errors] == [type(make_error())]

        run(main())

    def test_timeout_counted_as_failure(self) -> None:
        """A job over the per-job timeout is cut off, counted as failed, and the next job runs."""

        async def main() -> None:
            errors: list[BaseException] = []
            queue = ShadowQueue(workers=1, timeout=0.05, on_failure=errors.append)
            queue.start()

            async def slow() -> None:
                await asyncio.sleep(60)

            queue.offer(slow)
            queue.offer(_noop)
            await queue.join()
            await queue.close()
            assert (queue.completed, queue.failed) == (1, 1)
            assert isinstance(errors[0], TimeoutError)

        run(main())

    def test_close_stops_workers(self) -> None:
        """close() interrupts a running job, discards queued ones, and later offers are dropped."""

        async def main() -> None:
            started = asyncio.Event()
            cancelled: list[bool] = []
            queue = ShadowQueue(workers=1, timeout=None)
            queue.start()

            async def forever() -> None:
                started.set()
                try:
                    await asyncio.Event().wait()
                except asyncio.CancelledError:
                    cancelled.append(True)
                    raise

            queue.offer(forever)
            queue.offer(_noop)
            await started.wait()
            await queue.close()
            assert cancelled == [True]
            assert queue.pending == 0
            assert queue.offer(_noop) is False
            assert (queue.offered, queue.completed, queue.failed, queue.dropped) == (3, 0, 0, 3)
            await queue.join()  # nothing left unfinished

        run(main())

    def test_callback_errors_contained(self) -> None:
        """Callbacks that raise never reach the caller of offer() or stop a worker."""

        def broken(*_: object) -> None:
            raise RuntimeError("metrics down")

        async def main() -> None:
            queue = ShadowQueue(maxsize=1, workers=1, on_drop=broken, on_failure=broken)
            assert queue.offer(_fail) is True
            assert queue.offer(_noop) is False
            queue.start()
            await queue.join()
            assert queue.offer(_noop) is True
            await queue.join()
            await queue.close()
            assert (queue.completed, queue.failed, queue.dropped) == (1, 1, 1)

        run(main())

    def test_start_twice_refused(self) -> None:
        """Starting a started queue is a bug and raises RuntimeError."""

        async def main() -> None:
            queue = ShadowQueue()
            queue.start()
            with pytest.raises(RuntimeError):
                queue.start()
            await queue.close()

        run(main())

    @pytest.mark.parametrize(("maxsize", "workers"), [(0, 1), (1, 0)])
    def test_refuses_bad_sizes(self, maxsize: int, workers: int) -> None:
        """A queue needs room for one job and at least one worker."""
        with pytest.raises(ValueError):
            ShadowQueue(maxsize=maxsize, workers=workers)


async def _noop() -> None:
    return None


async def _fail() -> None:
    raise ValueError("shadow answered 500")
