"""DriftTracker windows, counts and PSI (monitoring/drift.py), and stored profile sets (monitoring/profiles.py)."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from monitoring.drift import BinCounts, DriftTracker, WindowPolicy
from monitoring.profiles import ProfileSet, profile_columns
from monitoring.psi import NumericProfile, Profile, Thresholds, bin_counts, profile_from_sample, psi

SEED = 7


def reference(rows: int = 20_000, width: int = 3) -> npt.NDArray[np.float64]:
    return np.random.default_rng(SEED).normal(size=(rows, width))


def numeric_profiles(width: int = 3) -> list[tuple[str, Profile]]:
    ref = reference(width=width)
    return [(f"f{i}", profile_from_sample(ref[:, i])) for i in range(width)]


def tracker(policy: WindowPolicy, width: int = 3, **kwargs: Any) -> DriftTracker:
    return DriftTracker(numeric_profiles(width), policy, **kwargs)


def live(rows: int, width: int = 3, shift: float = 0.0, seed: int = 1) -> npt.NDArray[np.float64]:
    return np.random.default_rng(seed).normal(shift, 1.0, size=(rows, width))


def independent_psi(profile: Profile, values: npt.NDArray[Any]) -> float:
    """PSI from np.histogram on the profile's full edges: an independent path to the same number."""
    assert isinstance(profile, NumericProfile)
    counts, _ = np.histogram(values[~np.isnan(values)], profile.full_edges())
    return psi(profile.expected, counts)


class TestWindowPolicy:
    @pytest.mark.parametrize(
        ("spec", "policy"),
        [
            ({"window_requests": 500}, WindowPolicy(rows=500)),
            ({"window_seconds": 60}, WindowPolicy(seconds=60)),
            ({"window_seconds": 0.5, "window_requests": 10}, WindowPolicy(10, 0.5)),
        ],
    )
    def test_parse(self, spec: dict[str, Any], policy: WindowPolicy) -> None:
        """A route's "drift" object sets window_requests and/or window_seconds."""
        assert WindowPolicy.parse(spec) == policy

    @pytest.mark.parametrize("spec", [None, {}])
    def test_default(self, spec: dict[str, Any] | None) -> None:
        """No drift object means the server-wide default."""
        default = WindowPolicy(rows=1000)
        assert WindowPolicy.parse(spec, default) is default

    @pytest.mark.parametrize(
        "spec",
        [
            {"window_requests": 0},
            {"window_requests": 1.5},
            {"window_requests": True},
            {"window_seconds": -1},
            {"window_seconds": float("inf")},
            {"window_seconds": "10"},
            {"window_rows": 10},
            {"window_requests": None},
        ],
    )
    def test_invalid(self, spec: dict[str, Any]) -> None:
        """Bad values and unknown keys are refused with ValueError."""
        with pytest.raises(ValueError):
            WindowPolicy.parse(spec)

    def test_round_trip(self) -> None:
        """to_dict gives back the route-policy spelling."""
        policy = WindowPolicy(100, 30.0)
        assert WindowPolicy.parse(policy.to_dict()) == policy


class TestCountWindows:
    @pytest.mark.parametrize("batch", [1, 7, 50, 100, 130, 1000])
    def test_closes_at_exactly_n_rows(self, batch: int) -> None:
        """Windows hold exactly N rows, whatever the batch size: a crossing batch is split at the limit."""
        t = tracker(WindowPolicy(rows=100))
        data = live(1000)
        closed = []
        for lo in range(0, 1000, batch):
            closed += t.add_batch(data[lo : lo + batch], now=float(lo))
        assert [w.rows for w in closed] == [100] * 10
        for k, window in enumerate(closed):
            for i, (name, profile) in enumerate(numeric_profiles()):
                counts = bin_counts(profile, data[k * 100 : (k + 1) * 100, i])
                assert window.feature(name).counts == tuple(counts.tolist())

    def test_partial_window_is_current(self) -> None:
        """Rows short of N stay in the current window."""
        t = tracker(WindowPolicy(rows=100))
        assert t.add_batch(live(250), now=0.0) != []
        current = t.current()
        assert current.rows == 50
        assert sum(current.counts["f0"]) == 50
        assert current.window == 2

    def test_window_ids_and_span(self) -> None:
        """Windows are numbered from 0 and span from their first row to the close."""
        t = tracker(WindowPolicy(rows=10))
        t.add_batch(live(5), now=1.0)
        [first] = t.add_batch(live(5), now=2.0)
        [second] = t.add_batch(live(10), now=3.0)
        assert (first.window, first.start, first.end) == (0, 1.0, 2.0)
        assert (second.window, second.start, second.end) == (1, 2.0, 3.0)


class TestTimeWindows:
    def test_closes_on_add_after_deadline(self) -> None:
        """A by-time window closes at the first add at or after its end; that batch starts the next one."""
        t = tracker(WindowPolicy(seconds=10))
        assert t.add_batch(live(20), now=100.0) == []
        assert t.add_batch(live(20), now=109.9) == []
        [window] = t.add_batch(live(5), now=110.0)
        assert (window.rows, window.start, window.end) == (40, 100.0, 110.0)
        assert t.current().rows == 5

    def test_tick(self) -> None:
        """tick(now) closes a window whose time is up, without new rows."""
        t = tracker(WindowPolicy(seconds=10))
        t.add_batch(live(30), now=0.0)
        assert t.tick(9.999) is None
        window = t.tick(10.0)
        assert window is not None and window.rows == 30
        assert t.tick(25.0) is None  # nothing arrived: empty windows are not recorded

    def test_windows_stay_aligned(self) -> None:
        """After idle time the next window starts on the original grid, and empty windows are skipped."""
        t = tracker(WindowPolicy(seconds=10))
        t.add_batch(live(3), now=0.0)
        [window] = t.add_batch(live(4), now=35.0)
        assert window.rows == 3
        assert t.current().start == 30.0
        [window] = t.add_batch(live(1), now=40.0)
        assert (window.start, window.end, window.rows) == (30.0, 40.0, 4)

    @pytest.mark.parametrize(("rows", "now", "closed_rows"), [(60, 1.0, [50]), (30, 20.0, [30])])
    def test_rows_or_time_first(self, rows: int, now: float, closed_rows: list[int]) -> None:
        """With both limits, whichever is reached first closes the window."""
        t = tracker(WindowPolicy(rows=50, seconds=10))
        closed = t.add_batch(live(rows), now=0.0)
        window = t.tick(now)
        closed += [window] if window is not None else []
        assert [w.rows for w in closed] == closed_rows


class TestPsiPerWindow:
    def test_matches_independent_computation(self) -> None:
        """Published PSI equals numpy's histogram on the same edges to 1e-12, per feature and for the output."""
        out_profile = profile_from_sample(np.random.default_rng(3).uniform(size=5000))
        t = DriftTracker(numeric_profiles(), WindowPolicy(rows=2000), outputs={"score": out_profile})
        data = live(2000, shift=0.3)
        scores = np.random.default_rng(4).uniform(0.2, 1.0, size=2000)
        [window] = t.add_batch(data, outputs=scores, now=0.0)
        for i, (name, profile) in enumerate(numeric_profiles()):
            assert window.psi()[name] == pytest.approx(independent_psi(profile, data[:, i]), abs=1e-12)
        assert window.psi()["score"] == pytest.approx(independent_psi(out_profile, scores), abs=1e-12)
        assert window.feature("score").role == "output"

    def test_status_and_worst(self) -> None:
        """A shifted feature reads significant and is the worst; unshifted ones stay stable."""
        t = tracker(WindowPolicy(rows=5000))
        data = live(5000)
        data[:, 1] += 1.0
        [window] = t.add_batch(data, now=0.0)
        assert window.statuses() == {"f0": "stable", "f1": "significant", "f2": "stable"}
        assert window.worst == "f1"
        assert window.status == "significant"

    @pytest.mark.parametrize("rows", [1, 50, 280])
    def test_small_window_insufficient(self, rows: int) -> None:
        """Below the minimum rows for the bin count, even a shifted window reads insufficient_data, not an alarm."""
        t = tracker(WindowPolicy(rows=rows))
        [window] = t.add_batch(live(rows, shift=3.0), now=0.0)
        assert set(window.statuses().values()) == {"insufficient_data"}
        assert window.status == "insufficient_data"
        assert window.worst is None
        assert all(v is not None for v in window.psi().values())

    def test_min_rows_override(self) -> None:
        """Thresholds.min_rows overrides the derived minimum."""
        t = tracker(WindowPolicy(rows=50), thresholds=Thresholds(min_rows=10))
        [window] = t.add_batch(live(50, shift=3.0), now=0.0)
        assert window.status == "significant"

    def test_missing_counted_apart(self) -> None:
        """NaN counts as missing: it is in no bin and not in the PSI's n."""
        t = tracker(WindowPolicy(rows=400))
        data = live(400)
        data[:100, 0] = np.nan
        [window] = t.add_batch(data, now=0.0)
        f0 = window.feature("f0")
        assert (f0.n, f0.missing, sum(f0.counts)) == (300, 100, 300)
        assert window.feature("f1").missing == 0

    def test_absent_outputs(self) -> None:
        """Batches served without outputs count inputs only; the output's n covers the batches that had them."""
        t = DriftTracker(numeric_profiles(), WindowPolicy(rows=300), outputs={"y": profile_from_sample(np.arange(10.0))})
        t.add_batch(live(100), now=0.0)
        [window] = t.add_batch(live(200), outputs=np.full(200, 4.0), now=1.0)
        assert window.feature("y").n == 200
        assert window.feature("f0").n == 300


class TestHistory:
    @pytest.mark.parametrize("size", [1, 3, 8])
    def test_bounded(self, size: int) -> None:
        """History keeps the newest `history` windows, oldest first; the closed count keeps counting."""
        t = tracker(WindowPolicy(rows=10), history=size)
        t.add_batch(live(100), now=0.0)
        assert [w.window for w in t.history()] == list(range(10 - size, 10))
        assert t.windows_closed == 10
        last = t.last()
        assert last is not None and last.window == 9

    def test_empty(self) -> None:
        """Before any window closes there is no history and no last window."""
        t = tracker(WindowPolicy(rows=10))
        assert t.history() == () and t.last() is None


class TestBatches:
    def test_vectorised_10k_rows(self) -> None:
        """A 10,000-row batch of 32 float32 features is counted in one call, matching np.histogram per feature."""
        ref = reference(width=32)
        profiles = [(f"f{i}", profile_from_sample(ref[:, i])) for i in range(32)]
        t = DriftTracker(profiles, WindowPolicy(rows=10_000))
        data = live(10_000, width=32, shift=0.1).astype(np.float32)
        [window] = t.add_batch(data, now=0.0)
        for i, (name, profile) in enumerate(profiles):
            expected, _ = np.histogram(data[:, i].astype(np.float64), profile.full_edges())  # type: ignore[union-attr]
            assert window.feature(name).counts == tuple(expected.tolist())

    @pytest.mark.parametrize("rows", [1, 3, 200, 5000])
    def test_mapping_equals_matrix(self, rows: int) -> None:
        """Named columns and a 2-D array in feature order count the same, small and large."""
        data = live(rows)
        by_matrix = tracker(WindowPolicy(rows=10**6)).count(data)
        by_name = tracker(WindowPolicy(rows=10**6)).count({f"f{i}": data[:, i] for i in range(3)})
        by_column = tracker(WindowPolicy(rows=10**6)).count({f"f{i}": data[:, i : i + 1] for i in range(3)})
        for name in ("f0", "f1", "f2"):
            np.testing.assert_array_equal(by_matrix.bins[name], by_name.bins[name])
            np.testing.assert_array_equal(by_matrix.bins[name], by_column.bins[name])
        assert by_matrix.rows == rows

    @pytest.mark.parametrize("rows", [4, 4000])
    def test_float32_on_edges(self, rows: int) -> None:
        """float32 values at, just below and just above each edge bin as their float64 values do."""
        profile = profile_from_sample(reference()[:, 0])
        assert isinstance(profile, NumericProfile)
        e32 = profile.edges.astype(np.float32)
        values = np.concatenate([e32, np.nextafter(e32, np.float32(-np.inf)), np.nextafter(e32, np.float32(np.inf))])
        values = np.resize(values, rows).astype(np.float32)
        t = DriftTracker([("x", profile)], WindowPolicy(rows=10**6))
        counts = t.count(values.reshape(-1, 1)).bins["x"]
        np.testing.assert_array_equal(counts[:-1], bin_counts(profile, values.astype(np.float64)))

    @pytest.mark.parametrize("dtype", [np.int64, np.int32, np.float64, np.float32])
    def test_dtypes(self, dtype: type) -> None:
        """Integer and float batches count like their float64 values."""
        profile = profile_from_sample(np.arange(100.0))
        values: npt.NDArray[Any] = np.arange(-5, 110, 3).astype(dtype)
        t = DriftTracker([("x", profile)], WindowPolicy(rows=10**6))
        np.testing.assert_array_equal(t.count(values).bins["x"][:-1], bin_counts(profile, values.astype(np.float64)))

    @pytest.mark.parametrize("as_matrix", [False, True])
    def test_mixed_categorical(self, as_matrix: bool) -> None:
        """Numeric and categorical features count together, from named columns or a 2-D object array."""
        color = profile_from_sample(np.array(["red", "green", "blue"] * 10))
        size = profile_from_sample(np.arange(30.0))
        t = DriftTracker([("size", size), ("color", color)], WindowPolicy(rows=10**6))
        sizes = np.array([1.0, 15.0, 29.0, -4.0])
        colors = np.array(["red", "red", "purple", "blue"], dtype=object)
        batch: Any = np.column_stack([sizes.astype(object), colors]) if as_matrix else {"size": sizes, "color": colors}
        counts = t.count(batch)
        np.testing.assert_array_equal(counts.bins["color"], [1, 0, 2, 1, 0])  # blue, green, red, other, missing
        np.testing.assert_array_equal(counts.bins["size"][:-1], bin_counts(size, sizes))

    @pytest.mark.parametrize(
        "batch",
        [
            {"f0": np.zeros(3), "f1": np.zeros(3)},
            {"f0": np.zeros(3), "f1": np.zeros(3), "f2": np.zeros(4)},
            np.zeros((3, 2)),
        ],
    )
    def test_rejects_bad_batches(self, batch: Any) -> None:
        """A missing column, ragged columns or the wrong width raise ValueError naming the problem."""
        with pytest.raises(ValueError, match="drift"):
            tracker(WindowPolicy(rows=10)).add_batch(batch, now=0.0)

    def test_rejects_mismatched_outputs(self) -> None:
        """Outputs must have one value per input row."""
        t = DriftTracker(numeric_profiles(), WindowPolicy(rows=10), outputs={"y": profile_from_sample(np.arange(5.0))})
        with pytest.raises(ValueError, match="outputs"):
            t.add_batch(live(3), outputs=np.zeros(4), now=0.0)

    @pytest.mark.parametrize("outputs", [{"f0": profile_from_sample(np.arange(5.0))}, None])
    def test_rejects_duplicate_names(self, outputs: dict[str, Profile] | None) -> None:
        """Feature and output names must be distinct."""
        features = numeric_profiles() + ([] if outputs else numeric_profiles()[:1])
        with pytest.raises(ValueError, match="distinct"):
            DriftTracker(features, WindowPolicy(rows=10), outputs=outputs)


class TestMergedCounts:
    def test_close_with_merged(self) -> None:
        """close(merged=...) computes PSI from the supplied totals (e.g. all replicas'), not the local counts."""
        t = tracker(WindowPolicy(rows=10**6))
        t.add_batch(live(10), now=0.0)
        other = tracker(WindowPolicy(rows=10**6)).count(live(3000, shift=1.0))
        window = t.close(5.0, other, window=42)
        profile = numeric_profiles()[0][1]
        assert window.window == 42 and window.rows == 3000
        assert window.psi()["f0"] == pytest.approx(psi(profile.expected, other.bins["f0"][:-1]))
        assert t.current().rows == 0 and t.current().window == 43

    def test_closed_window_keeps_its_counts(self) -> None:
        """Results are worked out on first read, from the window's own copy of the counts: totals a sink
        keeps adding to (a late flush) after the close change nothing, read before or after."""
        t = tracker(WindowPolicy(rows=10**6))
        merged = tracker(WindowPolicy(rows=10**6)).count(live(3000, shift=1.0))
        merged_vector = t.join(merged)
        window = t.close(5.0, merged, window=7)
        expected = numeric_profiles()[0][1].expected
        want = psi(expected, merged_vector[:len(expected)])
        merged_vector += 1000  # a late flush into the sink's totals
        if merged.vector is not None:
            merged.vector[:] += 1000
        assert window.psi()["f0"] == pytest.approx(want)
        assert window.status == "significant" and window.worst is not None
        assert window == window and "significant" in repr(window)

    def test_short_arrays_padded(self) -> None:
        """Merged totals may omit trailing zero bins (a sink returns only what it saw); they are padded."""
        t = tracker(WindowPolicy(rows=10**6))
        window = t.close(0.0, BinCounts(5, {"f0": np.array([0, 5])}))
        assert window.feature("f0").counts[:3] == (0, 5, 0)
        assert window.feature("f1").n == 0 and window.feature("f1").psi is None

    @pytest.mark.parametrize("bins", [{"nope": np.array([1])}, {"f0": np.ones(20, np.int64)}])
    def test_bad_merged(self, bins: dict[str, npt.NDArray[np.int64]]) -> None:
        """Totals for unknown columns or with too many bins are refused."""
        with pytest.raises(ValueError):
            tracker(WindowPolicy(rows=10)).close(0.0, BinCounts(1, bins))

    def test_count_then_add_counts(self) -> None:
        """count() changes nothing; add_counts() adds to the current window without closing it."""
        t = tracker(WindowPolicy(rows=10))
        counts = t.count(live(50))
        assert t.current().rows == 0
        t.add_counts(counts, now=1.0)
        assert t.current().rows == 50 and t.history() == ()

    def test_fingerprint_follows_bins(self) -> None:
        """Trackers over the same profiles share a fingerprint; different bins give a different one."""
        assert tracker(WindowPolicy(rows=1)).fingerprint == tracker(WindowPolicy(rows=5)).fingerprint
        assert tracker(WindowPolicy(rows=1)).fingerprint != tracker(WindowPolicy(rows=1), width=2).fingerprint


class TestProfileSet:
    def test_round_trip_to_tracker(self) -> None:
        """A profile set built from reference columns survives JSON storage and builds an equivalent tracker."""
        import json

        ref = reference(width=2)
        built = profile_columns((["a", "b"], ref), {"y": np.random.default_rng(0).uniform(size=500)}, bins=5)
        stored = json.loads(json.dumps(built.to_dict(), allow_nan=False))
        again = ProfileSet.from_dict(stored)
        assert again.to_dict() == built.to_dict()
        t = again.tracker(WindowPolicy(rows=100), route="r", model="m", version="3")
        assert (t.feature_names, t.output_names, t.route, t.version) == (("a", "b"), ("y",), "r", "3")
        assert t.fingerprint == built.tracker(WindowPolicy(rows=100)).fingerprint
        assert all(c.n_bins == 5 for c in t.columns)

    def test_mapping_columns(self) -> None:
        """Columns may be given by name, numeric and categorical together."""
        built = profile_columns({"n": np.arange(10.0), "c": np.array(list("abcabcabca"))})
        assert [p.kind for _, p in built.features] == ["numeric", "categorical"]

    @pytest.mark.parametrize("data", [{"format": 99}, {"format": 1, "features": []}])
    def test_rejects(self, data: dict[str, Any]) -> None:
        """Unknown formats and empty feature lists are refused."""
        with pytest.raises(ValueError):
            ProfileSet.from_dict(data)
