"""Guard arithmetic for rollouts (pure): latency buckets and quantiles, snapshot differences, and the
verdict of a guard check."""

from __future__ import annotations

import pytest

from gateway.armstats import ArmStats, StatsBoard
from gateway.guards import (
    GROWTH,
    LATENCY_EDGES,
    N_BUCKETS,
    ArmCounts,
    Limits,
    Side,
    Window,
    bucket_of,
    evaluate,
    quantile,
)


def side(requests: int, errors: int = 0, seconds: float = 0.001) -> Side:
    """`requests` answered in `seconds` each (errors have no latency)."""
    counts = [0] * N_BUCKETS
    counts[bucket_of(seconds)] = requests - errors
    return Side(requests, errors, tuple(counts))


class TestBuckets:
    @pytest.mark.parametrize("seconds", [1e-6, 1e-5, 0.00042, 0.0031, 0.25, 7.5, 60.0])
    def test_a_duration_lands_under_its_upper_edge_within_one_growth_step(self, seconds: float) -> None:
        """The bucket's upper edge is >= the duration and less than GROWTH times it (above 10 µs)."""
        edge = LATENCY_EDGES[bucket_of(seconds)]
        assert edge >= seconds
        assert edge <= max(seconds, LATENCY_EDGES[0]) * GROWTH

    def test_beyond_the_last_edge_is_the_overflow_bucket(self) -> None:
        """Durations past the last edge count in the last bucket, and read back as the last edge."""
        assert bucket_of(1e6) == N_BUCKETS - 1
        counts = [0] * N_BUCKETS
        counts[-1] = 3
        assert quantile(tuple(counts), 0.99) == LATENCY_EDGES[-1]

    def test_p99_of_a_hundred_requests_is_the_slowest_one(self) -> None:
        """99 fast requests and one slow: p99 is the 99th, p100 the slow one."""
        counts = [0] * N_BUCKETS
        counts[bucket_of(0.001)] = 99
        counts[bucket_of(0.1)] = 1
        assert quantile(tuple(counts), 0.99) == LATENCY_EDGES[bucket_of(0.001)]
        assert quantile(tuple(counts), 1.0) == LATENCY_EDGES[bucket_of(0.1)]

    def test_no_counts_has_no_quantile(self) -> None:
        """An empty histogram has no p99."""
        assert quantile((0,) * N_BUCKETS, 0.99) is None


class TestSnapshots:
    def test_since_is_what_happened_between_two_snapshots(self) -> None:
        """Counts recorded after the baseline, and only those, make the window."""
        stats = ArmStats()
        stats.served(0.001)
        stats.failed()
        baseline = stats.snapshot()
        stats.served(0.002)
        stats.served(0.002)
        stats.failed()
        stats.shadowed(None)
        stats.shadowed(0.003, rows=4, agreement=0.5)
        window = stats.snapshot().since(baseline)
        assert (window.requests, window.errors) == (3, 1)
        assert Side.live(window).p99 == LATENCY_EDGES[bucket_of(0.002)]
        assert (window.shadow_runs, window.shadow_errors) == (2, 1)
        assert (window.compared, window.agreement_sum) == (4, 2.0)

    def test_board_counts_only_watched_versions(self) -> None:
        """Unwatched (route, version)s have no stats; unwatching a route drops all of its versions."""
        board = StatsBoard()
        board.watch("r", (1, 2))
        assert board.get("r", "1") is not None and board.get("r", "3") is None
        board.unwatch("r")
        assert board.get("r", "1") is None
        assert board.snapshot("r", 1) == ArmCounts()


LIMITS = Limits(max_error_rate=0.01, max_p99_ratio=1.5, max_disagreement=0.05, max_psi=0.25, min_requests=100)


class TestEvaluate:
    def test_a_healthy_candidate_passes(self) -> None:
        """Same latency, no errors, full agreement, low PSI: every guard passes."""
        check = evaluate(Window(side(200), side(800), compared=200, agreement_sum=200.0, psi=0.01), LIMITS)
        assert check.verdict == "pass"
        assert {r.guard: r.status for r in check.results} == {
            "error_rate": "pass", "p99_ratio": "pass", "disagreement": "pass", "psi": "pass"}

    @pytest.mark.parametrize(("window", "guard"), [
        (Window(side(200, errors=10), side(800)), "error_rate"),
        (Window(side(200, seconds=0.003), side(800, seconds=0.001)), "p99_ratio"),
        (Window(side(200), side(800), compared=200, agreement_sum=180.0), "disagreement"),
        (Window(side(200), side(800), psi=0.4), "psi"),
    ])
    def test_each_guard_fails_alone(self, window: Window, guard: str) -> None:
        """5% errors, 3x the p99, 10% disagreement and PSI 0.4 each fail their guard, naming it."""
        check = evaluate(window, LIMITS)
        assert check.verdict == "fail"
        assert check.failed is not None and check.failed.guard == guard
        assert [r.guard for r in check.results if r.status == "fail"] == [guard]

    def test_missing_signals_are_no_data_and_do_not_block(self) -> None:
        """No comparisons, no drift window and a stable side without traffic: no_data, and still a pass."""
        check = evaluate(Window(side(200), Side(0, 0, (0,) * N_BUCKETS)), LIMITS)
        assert check.verdict == "pass"
        statuses = {r.guard: r.status for r in check.results}
        assert statuses == {"error_rate": "pass", "p99_ratio": "no_data", "disagreement": "no_data", "psi": "no_data"}

    def test_a_guard_set_to_none_is_off(self) -> None:
        """A guard turned off never fails, whatever its figure."""
        limits = Limits(max_error_rate=None, max_p99_ratio=1.5, max_disagreement=0.05, max_psi=0.25, min_requests=10)
        check = evaluate(Window(side(100, errors=50), side(100)), limits)
        assert check.verdict == "pass"
        assert check.results[0].status == "off"

    def test_too_few_requests_waits(self) -> None:
        """Under min_requests the check waits, even with a figure over its limit that more traffic could fix."""
        check = evaluate(Window(side(50, seconds=0.01), side(800)), LIMITS)
        assert check.verdict == "wait"
        assert (check.candidate_requests, check.min_requests) == (50, 100)

    def test_errors_that_can_no_longer_pass_fail_before_min_requests(self) -> None:
        """2 errors when min_requests is 100 and the limit 1%: the rate stays over 1% however the rest go."""
        check = evaluate(Window(side(50, errors=2, seconds=0.01), side(800)), LIMITS)
        assert check.verdict == "fail"
        assert check.failed is not None and check.failed.guard == "error_rate"
        assert {r.guard: r.status for r in check.results}["p99_ratio"] == "no_data"

    def test_to_dict_names_each_guard_with_its_figures(self) -> None:
        """The JSON form carries status, value, limit and the counts behind each figure."""
        out = evaluate(Window(side(200, errors=4), side(800)), LIMITS).to_dict()
        assert out["error_rate"] == {"status": "fail", "value": 0.02, "limit": 0.01, "candidate_requests": 200,
                                     "candidate_errors": 4, "stable_requests": 800, "stable_errors": 0}
