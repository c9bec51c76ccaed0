"""The benchmark's pure parts (loadtests/bench): variant order per round and how the drift target is
decided from side-by-side pairs, in-sequence runs, or neither."""

from __future__ import annotations

from loadtests.bench import targets
from loadtests.bench.harness import round_order
from loadtests.bench.procstat import Usage
from loadtests.bench.report import Pair, Results, Sample, Variant
from loadtests.bench.wrk import WrkResult


def sample(key: str, round_: int, cpu_us: float, requests: int = 100_000) -> Sample:
    wrk = WrkResult(requests, 6.0, requests / 6.0, 1e-3, 2e-3, 0, 0)
    return Sample(key, round_, wrk, Usage(user_s=cpu_us * requests / 1e6), 6.25)


def variant(key: str) -> Variant:
    return Variant(key, key, "gateway", "/", "v1, 1 row", 32)


def drift_check(results: Results) -> str:
    return next(c.line for c in targets.checks(results, 0.0) if "drift" in c.name)


def test_rounds_alternate_direction() -> None:
    assert [round_order([1, 2, 3], r) for r in range(3)] == [[1, 2, 3], [3, 2, 1], [1, 2, 3]]


def test_drift_is_decided_side_by_side_when_measured() -> None:
    """In sequence the drift gateway looks 10% dearer, side by side 2%: the pair decides, both shown."""
    keys = [targets.GW_V1, targets.GW_V1_DRIFT]
    samples = [s for r in range(3) for s in (sample(targets.GW_V1, r, 30.0), sample(targets.GW_V1_DRIFT, r, 33.0))]
    pairs = [Pair(targets.DRIFT_PAIR, r, sample(targets.GW_V1_DRIFT, r, 35.7), sample(targets.GW_V1, r, 35.0))
             for r in range(3)]
    pairs += [Pair(targets.NULL_PAIR, r, sample(targets.GW_V1_CONTROL, r, 35.0), sample(targets.GW_V1, r, 35.0))
              for r in range(3)]
    line = drift_check(Results([variant(k) for k in keys], samples, [], pairs))
    assert line.startswith("PASS") and "side by side 1.020" in line and "null pair 1.000" in line
    assert "in sequence 1.10" in line

    sequential_only = drift_check(Results([variant(k) for k in keys], samples, []))
    assert sequential_only.startswith("FAIL") and "side by side" not in sequential_only


def test_pair_ratio_fails_over_the_cap() -> None:
    pairs = [Pair(targets.DRIFT_PAIR, r, sample(targets.GW_V1_DRIFT, r, 37.0), sample(targets.GW_V1, r, 35.0))
             for r in range(3)]
    samples = [s for r in range(3) for s in (sample(targets.GW_V1, r, 30.0), sample(targets.GW_V1_DRIFT, r, 30.0))]
    results = Results([variant(targets.GW_V1), variant(targets.GW_V1_DRIFT)], samples, [], pairs)
    assert abs(results.pair_ratio(targets.DRIFT_PAIR).median - 37.0 / 35.0) < 1e-9
    assert drift_check(results).startswith("FAIL")
