"""PSI math, reference profiles and their storage (monitoring/psi.py)."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from monitoring.psi import (
    OTHER,
    CategoricalProfile,
    NumericProfile,
    SegmentedPsi,
    Thresholds,
    bin_counts,
    min_samples,
    profile_from_dict,
    profile_from_sample,
    psi,
)

RNG_SEED = 20240501


def rng() -> np.random.Generator:
    return np.random.default_rng(RNG_SEED)


def by_hand(expected: list[float], actual: list[float]) -> float:
    """The PSI formula written out term by term, for shares with no empty bin."""
    return sum((a - e) * math.log(a / e) for a, e in zip(actual, expected, strict=True))


def textbook_psi(reference: npt.NDArray[np.float64], live: npt.NDArray[np.float64], bins: int = 10) -> float:
    """The common mistake: each sample histogrammed on its OWN decile edges, then compared bin by bin."""

    def shares(sample: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        edges = np.quantile(sample, np.linspace(0, 1, bins + 1))
        counts, _ = np.histogram(sample, edges)
        return np.asarray(counts / counts.sum(), np.float64)

    return psi(shares(reference), shares(live) * len(live))


class TestPsi:
    @pytest.mark.parametrize(
        ("expected", "counts", "shares"),
        [
            ([0.5, 0.5], [30, 70], [0.3, 0.7]),
            ([0.25, 0.25, 0.5], [10, 30, 60], [0.1, 0.3, 0.6]),
            ([0.1] * 10, [5, 5, 10, 10, 10, 10, 10, 10, 15, 15], [0.05, 0.05, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.15, 0.15]),
            ([0.2, 0.8], [1, 1], [0.5, 0.5]),
        ],
    )
    def test_hand_computed(self, expected: list[float], counts: list[int], shares: list[float]) -> None:
        """With no empty bin, PSI is exactly sum((a - e) * ln(a / e)) over the count shares."""
        assert psi(expected, counts) == pytest.approx(by_hand(expected, shares), abs=1e-12)

    def test_two_bin_value(self) -> None:
        """A worked number: 50/50 expected, 30/70 observed gives 0.2*ln(5/3) + 0.2*ln(7/5) = 0.16946."""
        assert psi([0.5, 0.5], [3, 7]) == pytest.approx(0.2 * math.log(5 / 3) + 0.2 * math.log(7 / 5))
        assert psi([0.5, 0.5], [3, 7]) == pytest.approx(0.169459, abs=1e-6)

    @pytest.mark.parametrize("eps", [1e-4, 1e-3, 1e-6])
    def test_empty_bin_floored_and_renormalised(self, eps: float) -> None:
        """An empty bin is floored at eps and both share vectors renormalised, so PSI stays finite."""
        a = np.array([eps, 1.0]) / (1 + eps)
        e = np.array([0.5, 0.5])
        assert psi([0.5, 0.5], [0, 10], eps) == pytest.approx(float(np.sum((a - e) * np.log(a / e))))

    def test_empty_expected_bin(self) -> None:
        """An expected share of 0 is floored too, so a live value in a bin the reference never filled counts, finitely."""
        value = psi([0.0, 1.0], [5, 5])
        assert math.isfinite(value) and value > 1

    @pytest.mark.parametrize("counts", [[10, 20, 30], [1, 1, 1], [0, 5, 5]])
    def test_symmetric(self, counts: list[int]) -> None:
        """PSI is symmetric: swapping the roles of expected and actual gives the same value."""
        e = np.array([0.2, 0.3, 0.5])
        a = np.array(counts, float)
        assert psi(e, a) == pytest.approx(psi(a / a.sum(), e * 1000))

    @pytest.mark.parametrize("shares", [[1.0], [0.5, 0.5], [0.1] * 10, [0.7, 0.2, 0.1]])
    def test_identical_is_zero(self, shares: list[float]) -> None:
        """Counts in exactly the expected proportions give PSI 0."""
        assert psi(shares, np.array(shares) * 1000) == pytest.approx(0.0, abs=1e-12)

    @pytest.mark.parametrize(("expected", "counts"), [([0.5, 0.5], [1, 2, 3]), ([0.5, 0.5], [0, 0])])
    def test_rejects(self, expected: list[float], counts: list[int]) -> None:
        """Mismatched lengths and empty counts are errors, not a silent 0."""
        with pytest.raises(ValueError):
            psi(expected, counts)


class TestDistributions:
    def test_same_distribution_near_zero(self) -> None:
        """A fresh sample of the reference's distribution scores PSI ~ 0 on the reference's deciles."""
        r = rng()
        profile = profile_from_sample(r.normal(size=50_000))
        assert psi(profile.expected, bin_counts(profile, r.normal(size=50_000))) < 0.005

    @pytest.mark.parametrize(("shift", "scale"), [(1.0, 1.0), (-1.0, 1.0), (0.0, 3.0), (0.75, 1.0)])
    def test_shifted_normal_significant(self, shift: float, scale: float) -> None:
        """A normal moved by 0.75-1 sd, or spread 3x, scores PSI > 0.25 (significant)."""
        r = rng()
        profile = profile_from_sample(r.normal(size=20_000))
        value = psi(profile.expected, bin_counts(profile, r.normal(shift, scale, size=20_000)))
        assert value > 0.25
        assert Thresholds().status(value) == "significant"

    @pytest.mark.parametrize("shift", [0.5, 1.0, 2.0])
    def test_shared_bins_not_textbook(self, shift: float) -> None:
        """Regression: separate-edges histograms see ~0 for a clearly shifted sample; our shared bins see it."""
        r = rng()
        reference = r.normal(size=20_000)
        live = r.normal(shift, 1.0, size=20_000)
        profile = profile_from_sample(reference)
        assert textbook_psi(reference, live) < 0.01  # the mistake: every sample fills its own deciles evenly
        assert psi(profile.expected, bin_counts(profile, live)) > 0.2

    def test_psi_grows_with_shift(self) -> None:
        """Larger shifts give larger PSI."""
        r = rng()
        profile = profile_from_sample(r.normal(size=20_000))
        live = r.normal(size=20_000)
        values = [psi(profile.expected, bin_counts(profile, live + s)) for s in (0.0, 0.1, 0.3, 0.6, 1.0)]
        assert values == sorted(values)


class TestNumericProfile:
    def test_deciles(self) -> None:
        """By default the interior edges are the reference's deciles and each bin expects ~10%."""
        sample = np.arange(1000, dtype=float)
        profile = profile_from_sample(sample)
        assert isinstance(profile, NumericProfile)
        np.testing.assert_allclose(profile.edges, np.quantile(sample, np.arange(1, 10) / 10))
        np.testing.assert_allclose(profile.expected, np.full(10, 0.1))
        assert profile.rows == 1000

    @pytest.mark.parametrize("bins", [1, 2, 4, 5, 20])
    def test_bin_count_configurable(self, bins: int) -> None:
        """`bins` sets the number of quantile bins (bins - 1 interior edges)."""
        profile = profile_from_sample(rng().normal(size=5000), bins)
        assert profile.n_bins == bins
        assert isinstance(profile, NumericProfile) and profile.edges.size == bins - 1

    @pytest.mark.parametrize(
        "sample",
        [
            np.array([0.0] * 80 + list(range(1, 21)), float),
            np.repeat([1, 2, 3], [50, 30, 20]),
            np.array([5.0] * 100),
        ],
    )
    def test_duplicate_edges_collapse(self, sample: npt.NDArray[Any]) -> None:
        """Repeated quantiles collapse: edges stay strictly increasing, with fewer bins, shares summing to 1."""
        profile = profile_from_sample(sample)
        assert isinstance(profile, NumericProfile)
        assert profile.n_bins < 10
        assert (np.diff(profile.edges) > 0).all()
        assert profile.expected.sum() == pytest.approx(1.0)

    def test_constant_reference(self) -> None:
        """A constant reference collapses to one edge at the constant: the value itself is stable, anything below is drift."""
        profile = profile_from_sample(np.full(50, 3.0))
        assert isinstance(profile, NumericProfile)
        assert profile.edges.tolist() == [3.0]
        np.testing.assert_array_equal(profile.expected, [0.0, 1.0])
        assert psi(profile.expected, bin_counts(profile, np.full(10, 3.0))) == pytest.approx(0.0, abs=1e-12)
        assert psi(profile.expected, bin_counts(profile, np.full(10, -1.0))) > 0.25

    @pytest.mark.parametrize("value", [-1e12, -np.inf, 1e12, np.inf, -5.0, 1e3])
    def test_open_outer_bins(self, value: float) -> None:
        """Values beyond the reference's range land in the open first or last bin; nothing falls outside."""
        profile = profile_from_sample(rng().uniform(0, 1, size=1000))
        counts = bin_counts(profile, np.array([value]))
        assert counts.sum() == 1
        assert counts[0 if value < 0 else -1] == 1

    def test_full_edges_are_infinite(self) -> None:
        """The full edge list starts at -inf and ends at +inf."""
        edges = profile_from_sample(rng().normal(size=100)).full_edges()  # type: ignore[union-attr]
        assert edges[0] == -np.inf and edges[-1] == np.inf

    def test_matches_histogram_on_full_edges(self) -> None:
        """Counts are np.histogram's on the full edges: bins are left-closed, an edge value goes up."""
        profile = profile_from_sample(rng().normal(size=2000))
        assert isinstance(profile, NumericProfile)
        live = np.concatenate([rng().normal(0.3, 2, size=3000), profile.edges, np.nextafter(profile.edges, -np.inf)])
        expected, _ = np.histogram(live, profile.full_edges())
        np.testing.assert_array_equal(bin_counts(profile, live), expected)
        assert bin_counts(profile, profile.edges[:1])[1] == 1

    def test_nan_not_counted(self) -> None:
        """NaN is in no bin: it is ignored when profiling and left out of counts."""
        profile = profile_from_sample(np.array([1.0, 2.0, np.nan, 3.0, 4.0]), 2)
        assert profile.rows == 4
        assert bin_counts(profile, np.array([np.nan, 1.0, np.nan])).sum() == 1

    @pytest.mark.parametrize("dtype", [np.int64, np.int32, np.uint8, np.float32, np.float64])
    def test_numeric_dtypes(self, dtype: type) -> None:
        """Integer and float samples get numeric profiles."""
        assert isinstance(profile_from_sample(np.arange(100).astype(dtype)), NumericProfile)

    @pytest.mark.parametrize(
        ("edges", "expected"),
        [([1.0, 1.0], [0.3, 0.3, 0.4]), ([2.0, 1.0], [0.3, 0.3, 0.4]), ([1.0], [0.5, 0.6]), ([1.0], [1.0]), ([np.inf], [0.5, 0.5])],
    )
    def test_validation(self, edges: list[float], expected: list[float]) -> None:
        """Edges must be finite and strictly increasing, with one more share than edges, summing to 1."""
        with pytest.raises(ValueError):
            NumericProfile(np.array(edges), np.array(expected))

    def test_empty_sample(self) -> None:
        """An empty or all-NaN sample cannot be profiled."""
        for sample in (np.array([], float), np.array([np.nan, np.nan])):
            with pytest.raises(ValueError):
                profile_from_sample(sample)


class TestCategoricalProfile:
    def test_shares_and_other(self) -> None:
        """Each category gets its share, sorted by label; 'other' expects 0 when every category is kept."""
        profile = profile_from_sample(np.array(["b", "a", "b", "c", "b", "a"]))
        assert isinstance(profile, CategoricalProfile)
        assert profile.categories == ("a", "b", "c")
        np.testing.assert_allclose(profile.expected, [2 / 6, 3 / 6, 1 / 6, 0.0])
        assert profile.labels()[-1] == OTHER

    @pytest.mark.parametrize(
        "live",
        [
            np.array(["a", "zz", "b", "new", "c"]),
            np.array(["a", "zz", "b", "new", "c"], dtype=object),
            np.array([b"a", b"zz", b"b", b"new", b"c"]),
            np.array(["a", "zz", "b", "new", "c", None], dtype=object),
        ],
    )
    def test_unseen_go_to_other(self, live: npt.NDArray[Any]) -> None:
        """Categories the reference never showed count in 'other' (str, bytes or objects); None is not counted."""
        profile = profile_from_sample(np.array(["a", "b", "c"]))
        np.testing.assert_array_equal(bin_counts(profile, live), [1, 1, 1, 2])

    def test_unseen_raise_psi(self) -> None:
        """A stream of new categories drives PSI significant through the 'other' bin."""
        profile = profile_from_sample(np.array(["a"] * 50 + ["b"] * 50))
        value = psi(profile.expected, bin_counts(profile, np.array(["a"] * 20 + ["x"] * 80)))
        assert Thresholds().status(value) == "significant"

    def test_max_categories_fold_into_other(self) -> None:
        """Beyond max_categories, the rarest categories are folded into 'other' in the reference too."""
        sample = np.array(["a"] * 5 + ["b"] * 4 + ["c"] * 1 + ["d"] * 1)
        profile = profile_from_sample(sample, max_categories=2)
        assert isinstance(profile, CategoricalProfile)
        assert profile.categories == ("a", "b")
        np.testing.assert_allclose(profile.expected, [5 / 11, 4 / 11, 2 / 11])

    @pytest.mark.parametrize(
        "sample",
        [np.array([True, False, True]), np.array(["x", "y"]), np.array([b"x", b"y"]), np.array(["x", 1], dtype=object)],
    )
    def test_categorical_dtypes(self, sample: npt.NDArray[Any]) -> None:
        """Bool, string, bytes and object samples get categorical profiles."""
        assert isinstance(profile_from_sample(sample), CategoricalProfile)

    def test_bool_counts(self) -> None:
        """Booleans are categories 'False' and 'True'."""
        profile = profile_from_sample(np.array([True, True, False]))
        assert isinstance(profile, CategoricalProfile) and profile.categories == ("False", "True")
        np.testing.assert_array_equal(bin_counts(profile, np.array([False, False, True])), [2, 1, 0])

    def test_numeric_categories(self) -> None:
        """An object column of integers counts integers against the categories' labels."""
        profile = profile_from_sample(np.array([1, 2, 2], dtype=object))
        np.testing.assert_array_equal(bin_counts(profile, np.array([2, 3, 1], dtype=object)), [1, 1, 1])


class TestStorage:
    @pytest.mark.parametrize(
        "sample",
        [np.random.default_rng(1).normal(size=500), np.arange(7, dtype=float), np.array(["a", "b", "b"]), np.array([1.0])],
    )
    def test_round_trip(self, sample: npt.NDArray[Any]) -> None:
        """to_dict survives strict JSON (no NaN/Infinity literals) and from_dict rebuilds the same bins and shares."""
        profile = profile_from_sample(sample)
        text = json.dumps(profile.to_dict(), allow_nan=False)
        again = profile_from_dict(json.loads(text))
        assert type(again) is type(profile)
        assert again.to_dict() == profile.to_dict()
        live = np.concatenate([sample[:3], sample[:1]])
        np.testing.assert_array_equal(bin_counts(again, live), bin_counts(profile, live))

    def test_infinities_encoded(self) -> None:
        """The open outer edges are stored as the strings '-Infinity' and 'Infinity', interior edges as numbers."""
        data = profile_from_sample(np.arange(10, dtype=float), 2).to_dict()
        assert data["kind"] == "numeric"
        assert data["edges"] == ["-Infinity", 4.5, "Infinity"]
        assert data["expected"] == [0.5, 0.5]

    @pytest.mark.parametrize(
        "data",
        [
            {"kind": "numeric", "edges": [0.0, 1.0, "Infinity"], "expected": [0.5, 0.5]},
            {"kind": "numeric", "edges": ["-Infinity", 1.0], "expected": [0.5, 0.5]},
            {"kind": "numeric", "edges": ["-Infinity", 1.0, "Infinity"], "expected": [0.5, 0.6]},
            {"kind": "categorical", "categories": ["a"], "expected": [1.0]},
            {"kind": "histogram", "edges": [], "expected": []},
        ],
    )
    def test_from_dict_rejects(self, data: dict[str, Any]) -> None:
        """Malformed stored profiles are refused with ValueError."""
        with pytest.raises(ValueError):
            profile_from_dict(data)


class TestThresholds:
    @pytest.mark.parametrize(
        ("value", "status"),
        [(0.0, "stable"), (0.0999, "stable"), (0.1, "moderate"), (0.2499, "moderate"), (0.25, "significant"), (3.0, "significant")],
    )
    def test_default_bands(self, value: float, status: str) -> None:
        """stable < 0.1 <= moderate < 0.25 <= significant."""
        assert Thresholds().status(value) == status

    @pytest.mark.parametrize(("value", "status"), [(0.04, "stable"), (0.05, "moderate"), (0.2, "significant")])
    def test_configurable(self, value: float, status: str) -> None:
        """The cut-offs are configurable."""
        assert Thresholds(moderate=0.05, significant=0.2).status(value) == status

    @pytest.mark.parametrize(("moderate", "significant", "eps"), [(0.0, 0.25, 1e-4), (0.3, 0.2, 1e-4), (0.1, 0.25, 0.0)])
    def test_invalid(self, moderate: float, significant: float, eps: float) -> None:
        """Non-positive or inverted cut-offs and a zero eps are refused."""
        with pytest.raises(ValueError):
            Thresholds(moderate, significant, eps)


class TestMinSamples:
    @pytest.mark.parametrize(("bins", "low", "high"), [(10, 275, 290), (2, 105, 115), (5, 180, 190), (20, 430, 450)])
    def test_values(self, bins: int, low: int, high: int) -> None:
        """The minimum is chi2_0.999(bins - 1) / 0.1: about 281 rows for deciles."""
        assert low <= min_samples(bins) <= high

    def test_grows_with_bins(self) -> None:
        """More bins need more rows."""
        values = [min_samples(k) for k in range(1, 30)]
        assert values == sorted(values)

    @pytest.mark.parametrize("bins", [4, 10])
    def test_no_false_alarms_at_minimum(self, bins: int) -> None:
        """Undrifted windows of exactly the minimum size cross 'moderate' in well under 1% of draws."""
        r = rng()
        expected = np.full(bins, 1 / bins)
        n = min_samples(bins)
        draws = r.multinomial(n, expected, size=4000)
        alarms = sum(psi(expected, d) >= 0.1 for d in draws)
        assert alarms / len(draws) < 0.01


class TestSegmentedPsi:
    """The all-columns-at-once PSI a window close uses equals `psi` per column (to 1e-12)."""

    @pytest.mark.parametrize("seed", range(20))
    def test_matches_numpy_psi_per_column(self, seed: int) -> None:
        rng = np.random.default_rng(seed)
        widths = rng.integers(1, 25, size=int(rng.integers(1, 40)))
        expected = [rng.dirichlet(np.ones(w)) for w in widths]
        counts = [rng.integers(0, 500, size=w) for w in widths]
        for c in counts:
            c[rng.integers(0, c.size)] = 0  # an empty bin: the eps floor matters
        counts[0][:] = 0  # a column with no rows at all
        values, totals = SegmentedPsi(expected)(np.concatenate(counts))
        for e, c, got, n in zip(expected, counts, values.tolist(), totals.tolist(), strict=True):
            assert n == c.sum()
            if n == 0:
                assert math.isnan(got)
            else:
                assert got == pytest.approx(psi(e, c), rel=1e-12, abs=1e-15)

    def test_refuses_a_wrong_length(self) -> None:
        with pytest.raises(ValueError, match="3 counts for 4 bins"):
            SegmentedPsi([[0.5, 0.5], [0.2, 0.8]])(np.array([1, 2, 3]))
