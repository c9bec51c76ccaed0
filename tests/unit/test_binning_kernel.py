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


def run_feed(direct: bool, batches: list[tuple[Any, tuple[npt.NDArray[Any], ...]]], window: int) -> DriftFeed:
    rng = np.random.default_rng(5)
    ref = rng.normal(size=(4000, 4))
    t = DriftTracker([(f"f{i}", profile_from_sample(ref[:, i])) for i in range(4)], WindowPolicy(rows=window),
                     outputs=[("y", profile_from_sample(rng.uniform(size=4000)))])
    feed = DriftFeed(t, MemoryCountSink(), chunk_rows=64)
    feed._direct = direct  # the numpy path, as on a machine where the kernel was not built

    async def scenario() -> None:
        for i, (columns, outs) in enumerate(batches):
            feed.add_served(columns, outs)
            if i % 13 == 12:
                await feed.flush(now=float(i), epoch=float(i))
        await feed.flush(now=1e6, epoch=1e6)

    asyncio.run(scenario())
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
    kernel, numpy_path = run_feed(True, batches, 100), run_feed(False, batches, 100)
    got, want = kernel.tracker.history(), numpy_path.tracker.history()
    rows = sum(len(x) for x, _ in batches)
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
    kernel, numpy_path = run_feed(True, batches, 100), run_feed(False, batches, 100)

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
