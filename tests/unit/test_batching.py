"""Micro-batching: stacking, splitting, and the batcher's coalescing of same-turn submissions."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from gateway.batching import Arrays, MicroBatcher, batch_key, split_outputs, stack_requests


def rows(n: int, start: float = 0.0, width: int = 3) -> np.ndarray:
    return (np.arange(n * width, dtype=np.float32) + start).reshape(n, width)


class TestStackSplit:
    def test_stack_concatenates_each_input_and_counts_rows(self) -> None:
        """Each input is concatenated along axis 0 and each request's row count is kept."""
        stacked, sizes = stack_requests([[rows(2), rows(2, 100, 1)], [rows(1, 50), rows(1, 200, 1)]])
        assert sizes == [2, 1]
        assert stacked[0].shape == (3, 3) and stacked[1].shape == (3, 1)
        assert stacked[0][2, 0] == 50

    def test_split_restores_per_request_slices(self) -> None:
        """Splitting a batched output by sizes gives each request its own rows, in order."""
        out = np.arange(6).reshape(6, 1)
        parts = split_outputs([out, out * 10], [1, 3, 2])
        assert [p[0].ravel().tolist() for p in parts] == [[0], [1, 2, 3], [4, 5]]
        assert parts[1][1].ravel().tolist() == [10, 20, 30]

    @pytest.mark.parametrize(
        ("a", "b", "same"),
        [
            (rows(1), rows(5), True),
            (rows(1, width=3), rows(1, width=4), False),
            (rows(1), rows(1).astype(np.float64), False),
        ],
    )
    def test_batch_key_depends_on_dtype_and_inner_dims_only(self, a: np.ndarray, b: np.ndarray, same: bool) -> None:
        """Requests share a run only if dtypes and non-batch dims agree; batch size does not matter."""
        assert (batch_key([a]) == batch_key([b])) is same


def doubling(calls: list[int]) -> object:
    def run(arrays: Arrays) -> Arrays:
        calls.append(int(arrays[0].shape[0]))
        if np.isnan(arrays[0]).any():
            raise ValueError("nan in input")
        return [arrays[0] * 2]

    return run


class TestMicroBatcher:
    @pytest.mark.parametrize("use_executor", [False, True])
    def test_same_turn_submissions_share_one_run(self, use_executor: bool) -> None:
        """Ten requests submitted in one loop turn run as one stacked batch, and each gets its own rows back."""
        calls: list[int] = []

        async def main() -> list[Arrays]:
            with ThreadPoolExecutor(1) as ex:
                b = MicroBatcher(doubling(calls), max_batch_size=64, max_delay_s=0, executor=ex if use_executor else None)  # type: ignore[arg-type]
                return await asyncio.gather(*(b.submit([rows(1, i)]) for i in range(10)))

        results = asyncio.run(main())
        assert calls == [10]
        for i, out in enumerate(results):
            np.testing.assert_array_equal(out[0], rows(1, i) * 2)

    def test_max_batch_size_caps_rows_per_run(self) -> None:
        """Rows per run never exceed max_batch_size."""
        calls: list[int] = []

        async def main() -> None:
            b = MicroBatcher(doubling(calls), max_batch_size=4, max_delay_s=0, executor=None)  # type: ignore[arg-type]
            await asyncio.gather(*(b.submit([rows(1, i)]) for i in range(10)))

        asyncio.run(main())
        assert calls == [4, 4, 2]

    def test_unbatchable_model_runs_each_request_alone(self) -> None:
        """A model without a dynamic batch dim never sees stacked requests."""
        calls: list[int] = []

        async def main() -> None:
            b = MicroBatcher(doubling(calls), max_batch_size=64, max_delay_s=0, executor=None, batchable=False)  # type: ignore[arg-type]
            await asyncio.gather(*(b.submit([rows(1, i)]) for i in range(3)))

        asyncio.run(main())
        assert calls == [1, 1, 1]

    def test_different_shapes_are_not_stacked(self) -> None:
        """Requests with different inner dims go in different runs and all succeed."""
        calls: list[int] = []

        async def main() -> list[Arrays]:
            b = MicroBatcher(doubling(calls), max_batch_size=64, max_delay_s=0, executor=None)  # type: ignore[arg-type]
            return await asyncio.gather(b.submit([rows(2, width=3)]), b.submit([rows(1, width=5)]), b.submit([rows(1, width=3)]))

        results = asyncio.run(main())
        assert sorted(calls) == [1, 3]
        assert results[1][0].shape == (1, 5)

    @pytest.mark.parametrize("use_executor", [False, True])
    def test_failing_request_fails_alone(self, use_executor: bool) -> None:
        """When a batch fails, it is retried request by request: only the bad request gets the error."""
        calls: list[int] = []

        async def main() -> list[object]:
            with ThreadPoolExecutor(1) as ex:
                b = MicroBatcher(doubling(calls), max_batch_size=64, max_delay_s=0, executor=ex if use_executor else None)  # type: ignore[arg-type]
                bad = rows(1)
                bad[0, 0] = np.nan
                return await asyncio.gather(b.submit([rows(1)]), b.submit([bad]), b.submit([rows(1, 5)]), return_exceptions=True)

        good1, bad, good2 = asyncio.run(main())
        assert isinstance(bad, ValueError)
        np.testing.assert_array_equal(good1[0], rows(1) * 2)  # type: ignore[index]
        np.testing.assert_array_equal(good2[0], rows(1, 5) * 2)  # type: ignore[index]

    def test_executor_batches_what_arrives_during_a_run(self) -> None:
        """While one executor run is in flight, new submissions queue and run together next."""
        calls: list[int] = []

        async def main() -> None:
            with ThreadPoolExecutor(1) as ex:
                b = MicroBatcher(doubling(calls), max_batch_size=64, max_delay_s=0, executor=ex)  # type: ignore[arg-type]
                first = asyncio.ensure_future(b.submit([rows(1)]))
                await asyncio.sleep(0)  # the first run starts
                rest = [asyncio.ensure_future(b.submit([rows(1, i)])) for i in range(5)]
                await asyncio.gather(first, *rest)

        asyncio.run(main())
        assert sum(calls) == 6
        assert len(calls) <= 3


class TestQueueBoundAndObserver:
    def test_full_queue_refuses_at_once(self) -> None:
        """Past max_queue_rows, submit raises QueueFull immediately instead of queueing."""
        from gateway.batching import QueueFull

        async def main() -> list[object]:
            with ThreadPoolExecutor(1) as ex:
                b = MicroBatcher(doubling([]), max_batch_size=4, max_delay_s=0, executor=ex, max_queue_rows=3)  # type: ignore[arg-type]
                return await asyncio.gather(*(b.submit([rows(1, i)]) for i in range(6)), return_exceptions=True)

        results = asyncio.run(main())
        refused = [r for r in results if isinstance(r, QueueFull)]
        assert len(refused) == 3
        assert all(not isinstance(r, BaseException) for r in results[:3])

    def test_inline_queue_yields_between_batches_so_arrivals_are_shed(self) -> None:
        """An inline model yields the loop between batches once its turn budget is spent (here at once): a
        request arriving while its queue drains counts the rows still queued and is refused past
        max_queue_rows, rather than waiting unseen in the sockets."""
        from gateway.batching import QueueFull

        calls: list[int] = []
        late: list[asyncio.Future[Arrays]] = []

        async def main() -> list[object]:
            def run(arrays: Arrays) -> Arrays:
                if not calls:  # arrives during the first batch; its task submits after the second batch
                    loop.call_soon(lambda: late.append(asyncio.ensure_future(b.submit([rows(3)]))))
                calls.append(int(arrays[0].shape[0]))
                return [arrays[0]]

            loop = asyncio.get_running_loop()
            b = MicroBatcher(run, max_batch_size=1, max_delay_s=0, executor=None, max_queue_rows=4, inline_turn_s=0)
            first = await asyncio.gather(*(b.submit([rows(1, i)]) for i in range(4)), return_exceptions=True)
            return [*first, *(await asyncio.gather(*late, return_exceptions=True))]

        *first, refused = asyncio.run(main())
        assert calls == [1, 1, 1, 1]
        assert all(not isinstance(r, BaseException) for r in first)
        assert isinstance(refused, QueueFull), "2 rows still queued + 3 exceed the bound of 4"

    def test_observer_reports_rows_wait_and_reason(self) -> None:
        """Each released batch is reported with its rows, its wait and why: idle, or full when capped."""
        seen: list[tuple[int, float, str]] = []

        async def main() -> None:
            b = MicroBatcher(doubling([]), max_batch_size=4, max_delay_s=0, executor=None,  # type: ignore[arg-type]
                             observe=lambda n, w, r: seen.append((n, w, r)))
            await asyncio.gather(*(b.submit([rows(1, i)]) for i in range(6)))

        asyncio.run(main())
        assert [(n, r) for n, _, r in seen] == [(4, "full"), (2, "idle")]
        assert all(w >= 0 for _, w, _ in seen)

    def test_delay_fills_a_batch_then_releases_on_deadline(self) -> None:
        """With max_delay, an idle model waits to fill a batch; requests spread over the delay share one run."""
        calls: list[int] = []
        seen: list[str] = []

        async def main() -> None:
            b = MicroBatcher(doubling(calls), max_batch_size=64, max_delay_s=0.05, executor=None,  # type: ignore[arg-type]
                             observe=lambda n, w, r: seen.append(r))

            async def later(i: int) -> Arrays:
                await asyncio.sleep(0.005 * i)
                return await b.submit([rows(1, i)])

            await asyncio.gather(*(later(i) for i in range(4)))

        asyncio.run(main())
        assert calls == [4]
        assert seen == ["deadline"]

    def test_delay_is_cut_short_when_the_batch_fills(self) -> None:
        """Reaching max_batch_size releases at once without waiting out the delay."""
        seen: list[str] = []

        async def main() -> None:
            b = MicroBatcher(doubling([]), max_batch_size=2, max_delay_s=10, executor=None,  # type: ignore[arg-type]
                             observe=lambda n, w, r: seen.append(r))
            await asyncio.wait_for(asyncio.gather(b.submit([rows(1)]), b.submit([rows(1, 1)])), timeout=5)

        asyncio.run(main())
        assert seen == ["full"]

    def test_concurrency_runs_batches_in_parallel_slots(self) -> None:
        """With two executor slots, two batches can be in flight at once and all results are correct."""
        import threading

        active, peak = [0], [0]
        lock = threading.Lock()

        def slow(arrays: Arrays) -> Arrays:
            with lock:
                active[0] += 1
                peak[0] = max(peak[0], active[0])
            import time

            time.sleep(0.05)
            with lock:
                active[0] -= 1
            return [arrays[0] + 1]

        async def main() -> list[Arrays]:
            with ThreadPoolExecutor(2) as ex:
                b = MicroBatcher(slow, max_batch_size=1, max_delay_s=0, executor=ex, concurrency=2)
                return await asyncio.gather(*(b.submit([rows(1, i)]) for i in range(4)))

        results = asyncio.run(main())
        assert peak[0] == 2
        for i, out in enumerate(results):
            np.testing.assert_array_equal(out[0], rows(1, i) + 1)


class TestDeadlines:
    def test_expired_requests_leave_the_queue_unrun(self) -> None:
        """A queued request whose deadline passed while the model was busy fails with DeadlineExceeded
        and is never run; a request without a deadline in the same queue still runs."""
        import time

        from gateway.batching import DeadlineExceeded

        ran: list[float] = []

        def slow(arrays: Arrays) -> Arrays:
            ran.append(float(arrays[0][0, 0]))
            time.sleep(0.05)
            return [arrays[0]]

        async def main() -> list[object]:
            with ThreadPoolExecutor(1) as ex:
                b = MicroBatcher(slow, max_batch_size=1, max_delay_s=0, executor=ex)
                first = asyncio.ensure_future(b.submit([rows(1, 1)]))
                await asyncio.sleep(0)  # the first run starts and holds the only slot
                doomed = b.submit([rows(1, 2)], deadline=time.monotonic() + 0.01)
                patient = b.submit([rows(1, 3)])
                return await asyncio.gather(first, doomed, patient, return_exceptions=True)

        first, doomed, patient = asyncio.run(main())
        assert isinstance(doomed, DeadlineExceeded)
        assert not isinstance(first, BaseException) and not isinstance(patient, BaseException)
        assert ran == [1.0, 3.0], "the expired request was never run"


class TestTaps:
    @pytest.mark.parametrize("use_executor", [False, True])
    def test_a_shared_tap_sees_each_batch_once_and_mixed_taps_see_their_own_rows(self, use_executor: bool) -> None:
        """Requests of one batch with the same tap: one call with the stacked rows; with different taps
        (or none), each tap sees exactly its own request's rows; a failed request is not tapped."""
        seen: dict[str, list[tuple[list[float], list[float]]]] = {"a": [], "b": []}

        def tap(name: str) -> object:
            def observe(inputs: Arrays, outputs: Arrays) -> None:
                seen[name].append((inputs[0][:, 0].tolist(), outputs[0][:, 0].tolist()))
            return observe

        a, b = tap("a"), tap("b")
        bad = rows(1)
        bad[0, 0] = np.nan

        async def scenario() -> None:
            with ThreadPoolExecutor(1) as pool:
                batcher = MicroBatcher(doubling([]), max_batch_size=64, max_delay_s=0,  # type: ignore[arg-type]
                                       executor=pool if use_executor else None)
                await asyncio.gather(*(batcher.submit([rows(1, 3 * i)], tap=a) for i in range(4)))  # type: ignore[arg-type]
                assert seen["a"] == [([0.0, 3.0, 6.0, 9.0], [0.0, 6.0, 12.0, 18.0])]
                seen["a"].clear()
                await asyncio.gather(
                    batcher.submit([rows(1, 30)], tap=a), batcher.submit([rows(1, 60)], tap=b),  # type: ignore[arg-type]
                    batcher.submit([rows(1, 90)]), batcher.submit([bad], tap=b),  # type: ignore[arg-type]
                    return_exceptions=True,
                )

        asyncio.run(scenario())
        assert seen["a"] == [([30.0], [60.0])]
        assert seen["b"] == [([60.0], [120.0])]
