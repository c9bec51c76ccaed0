"""The compiled binning kernel (monitoring/_binning.c) against the numpy path it replaces on the request path:
same slots, same counts, same windows; and a batch it cannot take changes nothing."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitoring.drift import DriftTracker, WindowPolicy
from monitoring.psi import NumericProfile, profile_from_sample
from monitoring.sinks import DriftFeed, MemoryCountSink


def numeric(edges: list[float]) -> NumericProfile:
    return NumericProfile(np.array(edges, np.float64), np.full(len(edges) + 1, 1.0 / (len(edges) + 1)), 100)


def tracker(widths: list[int], outputs: int = 1, window: int = 1000) -> DriftTracker:
    """Columns with `widths` edges each (0 edges: a single bin), plus `outputs` one-edge outputs."""
    rng = np.random.default_rng(sum(widths) + outputs)
    features = [(f"f{i}", numeric(sorted(rng.choice(np.linspace(-2, 2, 41), w, replace=False).tolist())))
                for i, w in enumerate(widths)]
    outs = [(f"y{j}", numeric([0.25, 0.5, 0.75])) for j in range(outputs)]
    return DriftTracker(features, WindowPolicy(rows=window), outputs=outs)


def kernel_slots(t: DriftTracker, x: npt.NDArray[Any], outs: tuple[npt.NDArray[Any], ...]) -> tuple[Any, Any]:
    counts = bytearray(8 * t.layout.size)
    slots = bytearray(2 * x.shape[0] * len(t.columns))
    t.bin_batch(x, outs, counts, slots, 0)
    return np.frombuffer(counts, np.int64), np.frombuffer(slots, np.uint16).reshape(x.shape[0], -1)


def awkward_values(rng: np.random.Generator, t: DriftTracker, rows: int, dtype: Any) -> npt.NDArray[Any]:
    """Values on and next to the edges (float32-rounded too), NaN and infinities among normal draws."""
    width = len(t.feature_names)
    x = rng.uniform(-3, 3, size=(rows, width))
    for c, column in enumerate(t.columns[:width]):
        assert isinstance(column.profile, NumericProfile)
        special = [np.nan, np.inf, -np.inf, *column.profile.edges.tolist(),
                   *np.nextafter(column.profile.edges, -np.inf).tolist()]
        picks = rng.random(rows) < 0.3
        x[picks, c] = rng.choice(special, size=int(picks.sum()))
    return x.astype(dtype)


def test_kernel_is_built() -> None:
    """`make` builds it (setup.py); the gateway would fall back to numpy, ~10x dearer per row, without it.
    A column with more edges than the kernel's fixed width (15; 10 bins make 9) leaves the tracker to numpy."""
    assert tracker([3, 9, 15]).compiled
    assert not tracker([3, 16]).compiled


@settings(max_examples=60, deadline=None)
@given(
    widths=st.lists(st.integers(0, 15), min_size=1, max_size=6),
    outputs=st.integers(0, 2),
    rows=st.integers(1, 40),
    dtype=st.sampled_from([np.float32, np.float64]),
    seed=st.integers(0, 2**16),
)
def test_same_slots_and_counts_as_numpy(widths: list[int], outputs: int, rows: int, dtype: Any, seed: int) -> None:
    rng = np.random.default_rng(seed)
    t = tracker(widths, outputs)
    x = awkward_values(rng, t, rows, dtype)
    outs = tuple(rng.choice([0.1, 0.25, 0.5, 0.9, np.nan], size=(rows, 1) if j else rows).astype(dtype)
                 for j in range(outputs))
    counts, slots = kernel_slots(t, x, outs)
    want = t.locate(x, {name: o.reshape(-1) for name, o in zip(t.output_names, outs, strict=True)} or None)
    np.testing.assert_array_equal(slots, want.T)
    np.testing.assert_array_equal(counts, t.tally(want))


@pytest.mark.parametrize(
    "bad",
    [
        lambda x, y: (x[:, :2], (y,)),  # too few columns
        lambda x, y: (x.astype(np.int64), (y,)),  # not floats
        lambda x, y: (np.asfortranarray(x), (y,)),  # not C-contiguous
        lambda x, y: (x, (y[:-1],)),  # an output short of a row
        lambda x, y: (x, (np.repeat(y, 2, axis=1),)),  # two values per row
        lambda x, y: (x, ()),  # the output missing
        lambda x, y: ({"f0": x[:, 0]}, (y,)),  # named columns
    ],
)
def test_refuses_without_changing_anything(bad: Any) -> None:
    t = tracker([3, 5, 2])
    x = np.random.default_rng(1).normal(size=(6, 3))
    matrix, outs = bad(x, np.full((6, 1), 0.3))
    counts, slots = bytearray(8 * t.layout.size), bytearray(2 * 6 * 4)
    with pytest.raises((TypeError, ValueError, BufferError)):
        t.bin_batch(matrix, outs, counts, slots, 0)
    assert counts == bytearray(len(counts)) and slots == bytearray(len(slots))


def test_refuses_a_batch_past_the_slots() -> None:
    t = tracker([3])
    counts, slots = bytearray(8 * t.layout.size), bytearray(2 * 4 * 2)
    with pytest.raises(ValueError, match="no room"):
        t.bin_batch(np.zeros((3, 1)), (np.zeros(3),), counts, slots, 2)
    assert counts == bytearray(len(counts))


def test_bin_batches_equals_one_call_per_batch() -> None:
    """One call over a queue gives the slots and counts of one bin_batch per batch, rows following on;
    it stops at a full chunk (1) and at a batch it does not take (2), having counted only those before."""
    t = tracker([3, 9, 0], outputs=1)
    rng = np.random.default_rng(4)
    queue = []
    for rows in (3, 1, 5, 2):
        x = awkward_values(rng, t, rows, np.float32)
        queue.append((x, (rng.uniform(size=(rows, 1)).astype(np.float32),), rows))  # items past two are the caller's
    counts, slots = bytearray(8 * t.layout.size), bytearray(2 * 11 * len(t.columns))
    assert t.bin_batches(queue, 0, counts, slots, 0) == (4, 11, 0)
    one_counts, one_slots = bytearray(len(counts)), bytearray(len(slots))
    row = 0
    for x, outs, rows in queue:
        t.bin_batch(x, outs, one_counts, one_slots, row)
        row += rows
    assert (counts, slots) == (one_counts, one_slots)

    small = bytearray(2 * 5 * len(t.columns))  # room for 5 rows: the 3- and 1-row batches, not the 5-row one
    counts = bytearray(len(counts))
    assert t.bin_batches(queue, 0, counts, small, 0) == (2, 4, 1)
    assert np.frombuffer(counts, np.int64).sum() == 4 * len(t.columns)
    assert t.bin_batches(queue, 3, counts, small, 4) == (3, 0, 1)  # from `start`, at slot row `row`

    bad = [queue[0], (queue[1][0], (np.repeat(queue[1][1][0], 2, axis=1),), 1), queue[2]]
    counts = bytearray(len(counts))
    assert t.bin_batches(bad, 0, counts, slots, 0) == (1, 3, 2)  # no error left set
    assert np.frombuffer(counts, np.int64).sum() == 3 * len(t.columns)


def test_feed_takes_class_probabilities_to_numpy() -> None:
    """A classifier's (rows, classes) output is not one value per row: the kernel refuses the first
    batch and numpy counts the feed from then on (arg-max), the same windows as the numpy path."""
    rng = np.random.default_rng(3)
    ref, classes = rng.normal(size=(4000, 2)), rng.integers(0, 3, 4000).astype(np.float64)
    batches = [(rng.normal(size=(7, 2)).astype(np.float32), (rng.dirichlet([1, 1, 1], 7).astype(np.float32),))
               for _ in range(40)]

    def windows(direct: bool) -> list[Any]:
        t = DriftTracker([(f"f{i}", profile_from_sample(ref[:, i])) for i in range(2)], WindowPolicy(rows=50),
                         outputs=[("y", profile_from_sample(classes))])
        feed = DriftFeed(t, MemoryCountSink())
        feed._direct = direct and t.compiled
        for x, outs in batches:
            feed.add_served(x, outs)
        asyncio.run(feed.flush(now=0.0, epoch=0.0))
        assert not feed._direct and feed.dropped_rows == 0
        return [(w.rows, w.features) for w in t.history()]

    got = windows(True)
    assert len(got) == 280 // 50 and got == windows(False)


def run_feed(path: str, batches: list[tuple[Any, tuple[npt.NDArray[Any], ...]]], window: int) -> DriftFeed:
    """Feed `batches` through one path: "tap" (the native batcher tap), "queue" (add_served, the kernel
    over the queue) or "numpy" (as on a machine where the kernel was not built)."""
    rng = np.random.default_rng(5)
    ref = rng.normal(size=(4000, 4))
    t = DriftTracker([(f"f{i}", profile_from_sample(ref[:, i])) for i in range(4)], WindowPolicy(rows=window),
                     outputs=[("y", profile_from_sample(rng.uniform(size=4000)))])
    feed = DriftFeed(t, MemoryCountSink(), chunk_rows=64)
    feed._direct = path != "numpy"
    tap = feed.tap(0, (1,), lambda inputs, outputs: feed.add_served(inputs[0], (outputs[1],))) if path == "tap" else None

    async def scenario() -> None:
        for i, (columns, outs) in enumerate(batches):
            if tap is not None:
                tap([columns], [np.zeros(len(columns)), outs[0]])  # the model's second output is the profiled one
            else:
                feed.add_served(columns, outs)
            if i % 13 == 12:
                await feed.flush(now=float(i), epoch=float(i))
        await feed.flush(now=1e6, epoch=1e6)

    asyncio.run(scenario())
    assert tap is None or not tap.refused
    return feed


def served(seed: int, count: int, named_every: int = 0) -> list[tuple[Any, tuple[npt.NDArray[Any], ...]]]:
    rng = np.random.default_rng(seed)
    batches: list[tuple[Any, tuple[npt.NDArray[Any], ...]]] = []
    for i in range(count):
        rows = int(rng.integers(1, 10))
        x = rng.normal(0.3, 1.0, size=(rows, 4)).astype(np.float32)
        x[rng.random(rows) < 0.05, 1] = np.nan
        y = rng.uniform(size=(rows, 1)).astype(np.float32)
        named = named_every and i % named_every == named_every - 1
        batches.append(({f"f{j}": x[:, j] for j in range(4)} if named else x, (y,)))
    return batches


def test_feed_windows_equal_the_numpy_paths() -> None:
    """Batches of 1..9 rows through 64-row chunks and 100-row windows (boundaries inside chunks, flushes
    between): every window, with its counts and PSI, is the numpy path's."""
    batches = served(7, 300)
    numpy_path = run_feed("numpy", batches, 100)
    want = numpy_path.tracker.history()
    rows = sum(len(x) for x, _ in batches)
    for path in ("tap", "queue"):
        kernel = run_feed(path, batches, 100)
        got = kernel.tracker.history()
        assert kernel.tracker.windows_closed == numpy_path.tracker.windows_closed == rows // 100 > 10
        assert len(got) == len(want) > 10
        for a, b in zip(got, want, strict=True):
            assert (a.window, a.rows) == (b.window, b.rows) == (a.window, 100)
            assert a.features == b.features
        assert kernel.dropped_rows == numpy_path.dropped_rows == 0


def test_batches_only_numpy_takes_are_counted_too() -> None:
    """Named-column batches among matrices (numpy bins them a little later, so window boundaries may
    fall elsewhere): the same counts over the closed windows and the open one, none dropped."""
    batches = served(8, 300, named_every=7)
    kernel, numpy_path = run_feed("queue", batches, 100), run_feed("numpy", batches, 100)

    def totals(feed: DriftFeed) -> dict[str, tuple[int, ...]]:
        out: dict[str, npt.NDArray[np.int64]] = {}
        for window in feed.tracker.history():
            for f in window.features:
                out[f.name] = out.get(f.name, np.zeros(len(f.counts) + 1, np.int64)) + np.array([*f.counts, f.missing])
        current = feed.tracker.current()  # the open window's rows, which also differ
        for name, counts in current.counts.items():
            out[name] = out[name] + np.array([*counts, current.missing[name]])
        return {name: tuple(v.tolist()) for name, v in out.items()}

    assert kernel.tracker.windows_closed == numpy_path.tracker.windows_closed > 10
    assert totals(kernel) == totals(numpy_path)
    assert kernel.dropped_rows == numpy_path.dropped_rows == 0


def tap_for(t: DriftTracker, calls: list[Any], chunk_rows: int = 8, max_pending_rows: int = 1000) -> Any:
    return t.tap(1, (0,), chunk_rows, max_pending_rows, lambda inputs, outputs: calls.append((inputs, outputs)))


def test_native_tap_bins_like_bin_batch_and_seals_chunks() -> None:
    """The tap picks inputs[1] and outputs[0], bins each batch where bin_batch would, seals a chunk when
    the next batch does not fit, and hands every chunk over once (take)."""
    t = tracker([3, 9, 0], outputs=1)
    rng = np.random.default_rng(11)
    calls: list[Any] = []
    tap = tap_for(t, calls)
    batches = [(awkward_values(rng, t, rows, np.float64), rng.uniform(size=(rows, 1))) for rows in (3, 4, 2, 9, 1)]
    for x, y in batches:
        assert tap([np.zeros(2), x], [y, np.ones(len(x))]) is None
    assert calls == [] and not tap.refused and tap.pending_rows == 19
    chunks = tap.take()
    assert [rows for rows, _, _ in chunks] == [7, 2, 9, 1]  # 3+4 fill 8 rows but 2 more do not fit; 9 gets its own
    assert tap.pending_rows == 0 and tap.take() == []
    for (rows, counts, slots), batch in zip(chunks, [batches[0:2], batches[2:3], batches[3:4], batches[4:5]], strict=True):
        want_counts, want_slots = bytearray(len(counts)), bytearray(len(slots))
        row = 0
        for x, y in batch:
            t.bin_batch(x, (y,), want_counts, want_slots, row)
            row += len(x)
        assert row == rows and (counts, slots) == (want_counts, want_slots)


def test_native_tap_hands_what_it_cannot_take_to_the_fallback() -> None:
    """A batch it does not take (two values per row) goes to the fallback, as does every batch after
    it; nothing was counted for it."""
    t = tracker([3], outputs=1)
    calls: list[Any] = []
    tap = tap_for(t, calls)
    x, y = np.zeros((2, 1)), np.zeros((2, 1))
    tap([x, x], [y])
    tap([x, x], [np.zeros((2, 2))])
    tap([x, x], [y])  # a good batch after a refusal: the fallback's too
    tap([x], [y])  # no inputs[1]
    assert tap.refused and len(calls) == 3 and tap.pending_rows == 2
    assert [rows for rows, _, _ in tap.take()] == [2]


def test_native_tap_caps_pending_rows() -> None:
    """Rows past max_pending_rows (the flush is behind) are dropped and counted, never held."""
    t = tracker([3], outputs=1)
    tap = tap_for(t, [], max_pending_rows=5)
    for _ in range(3):
        tap([None, np.zeros((2, 1))], [np.zeros(2)])
    assert (tap.pending_rows, tap.dropped_rows) == (4, 2)
    tap.take()
    tap([None, np.zeros((2, 1))], [np.zeros(2)])
    assert (tap.pending_rows, tap.dropped_rows) == (2, 2)


def test_native_tap_and_its_fallback_are_collected() -> None:
    """feed -> tap -> fallback (a watch) -> feed is a cycle: the tap takes part in garbage collection."""
    import gc
    import weakref

    class Watch:
        def __call__(self, inputs: Any, outputs: Any) -> None:
            pass

    t = tracker([3], outputs=1)
    fallback = Watch()
    holder: dict[str, Any] = {}
    holder["tap"] = t.tap(0, (0,), 8, 100, fallback)
    fallback.holder = holder  # type: ignore[attr-defined]
    gone = weakref.ref(fallback)
    del fallback, holder
    gc.collect()
    assert gone() is None
