"""The dashboard renderer's tiny PromQL evaluator (deploy/grafana/promql.py) against hand-computed values."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path

import pytest

from deploy.grafana.promql import (
    Evaluator,
    PromQLError,
    Scrape,
    bucket_quantile,
    format_legend,
    labels_of,
    parse,
    rise,
)

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "gateway-dashboard.json"


def scrape(t: float, series: Mapping[str, list[tuple[dict[str, str], float]]]) -> Scrape:
    return Scrape(t, {name: [(labels_of(name, labels), v) for labels, v in rows] for name, rows in series.items()})


def value(history: list[Scrape], expr: str, t: float) -> dict[tuple[tuple[str, str], ...], float]:
    result = Evaluator(history).at(parse(expr), t)
    assert not isinstance(result, float)
    return result


class TestRate:
    def test_rise_counts_resets_from_zero(self) -> None:
        """A counter that drops was reset: the rise after it counts from 0."""
        assert rise([0, 10, 30]) == 30
        assert rise([5, 15, 4, 6]) == 10 + 4 + 2

    def test_rate_is_rise_over_time_between_first_and_last_sample_in_window(self) -> None:
        """rate(x[10s]) at t=20 uses the samples at 12, 16, 20: (50 - 10) / 8 s = 5/s; increase is 40."""
        history = [scrape(t, {"x_total": [({"a": "1"}, v)]}) for t, v in ((8, 0), (12, 10), (16, 30), (20, 50))]
        assert value(history, "rate(x_total[10s])", 20) == {(("a", "1"),): 5.0}
        assert value(history, "increase(x_total[10s])", 20) == {(("a", "1"),): 40.0}

    def test_one_sample_in_window_has_no_rate(self) -> None:
        """Like Prometheus, a series needs two samples in the window."""
        history = [scrape(0, {"x_total": [({}, 1)]}), scrape(10, {"x_total": [({}, 5)]})]
        assert value(history, "rate(x_total[5s])", 10) == {}

    def test_sum_by_and_division_match_on_labels(self) -> None:
        """Error ratio: 5xx rate over all, per route (3/s of 12/s = 0.25)."""
        def rows(k: float) -> list[tuple[dict[str, str], float]]:
            return [({"route": "a", "code": "200"}, 9 * k), ({"route": "a", "code": "503"}, 3 * k),
                    ({"route": "b", "code": "200"}, k)]

        history = [scrape(t, {"req_total": rows(t)}) for t in (0, 1, 2)]
        ratio = value(history, 'sum by (route) (rate(req_total{code=~"5.."}[5s])) / sum by (route) (rate(req_total[5s]))', 2)
        assert ratio == {(("route", "a"),): 0.25}

    def test_group_left_ignoring_gives_each_arms_share(self) -> None:
        """Traffic split: each arm's rate over its route's total, keeping the arm labels (90/10)."""
        def rows(k: float) -> list[tuple[dict[str, str], float]]:
            return [({"route": "r", "arm": "1"}, 9 * k), ({"route": "r", "arm": "2"}, k)]

        history = [scrape(t, {"req_total": rows(t)}) for t in (0, 4)]
        split = value(history, "sum by (route, arm) (rate(req_total[5s])) / ignoring (arm) group_left "
                               "sum by (route) (rate(req_total[5s]))", 4)
        assert split == {(("arm", "1"), ("route", "r")): 0.9, (("arm", "2"), ("route", "r")): pytest.approx(0.1)}

    def test_time_minus_timestamp_is_the_age(self) -> None:
        """time() - a timestamp gauge is the seconds since that time, at each evaluation instant."""
        history = [scrape(100, {"last_ts": [({}, 95)]}), scrape(130, {"last_ts": [({}, 95)]})]
        assert value(history, "time() - last_ts", 130) == {(): 35.0}
        assert Evaluator(history).range(parse("time() - last_ts")) == {(): [(100, 5.0), (130, 35.0)]}


class TestHistogramQuantile:
    BUCKETS = ((0.1, 10.0), (0.5, 30.0), (1.0, 40.0), (math.inf, 40.0))

    @pytest.mark.parametrize(("q", "expected"), [
        (0.1, 0.04),   # rank 4 in the first bucket: 0 + 0.1 * 4/10
        (0.5, 0.3),    # rank 20: 0.1 + 0.4 * (20 - 10) / 20
        (0.9, 0.8),    # rank 36: 0.5 + 0.5 * (36 - 30) / 10
        (1.0, 1.0),
    ])
    def test_interpolates_inside_the_bucket(self, q: float, expected: float) -> None:
        """Linear interpolation within the bucket holding rank q * total, from 0 for the first."""
        assert bucket_quantile(q, self.BUCKETS) == pytest.approx(expected)

    def test_rank_in_inf_bucket_gives_highest_finite_bound(self) -> None:
        """Observations above the last finite bound report that bound."""
        assert bucket_quantile(0.99, [(0.1, 10.0), (1.0, 40.0), (math.inf, 50.0)]) == 1.0

    def test_no_observations_is_nan(self) -> None:
        """An empty histogram has no quantile."""
        assert math.isnan(bucket_quantile(0.5, [(0.1, 0.0), (math.inf, 0.0)]))

    def test_over_rate_of_buckets_summed_across_series(self) -> None:
        """histogram_quantile(0.5, sum by (le) (rate(...))) sums two arms' bucket rates, then interpolates."""
        def buckets(k: float) -> list[tuple[dict[str, str], float]]:
            rows = []
            for arm in ("1", "2"):
                for le, c in (("0.1", 5 * k), ("0.5", 15 * k), ("1.0", 20 * k), ("+Inf", 20 * k)):
                    rows.append(({"arm": arm, "le": le}, c))
            return rows
        history = [scrape(t, {"d_bucket": buckets(t)}) for t in (0, 1)]
        got = value(history, "histogram_quantile(0.5, sum by (le) (rate(d_bucket[5s])))", 1)
        assert got == {(): pytest.approx(0.3)}


class TestSyntax:
    def test_matchers_are_anchored_regexes(self) -> None:
        """=~ matches the whole value, !~ and != exclude."""
        history = [scrape(0, {"g": [({"code": c}, 1.0) for c in ("200", "503", "5000")]})]
        assert {dict(k)["code"] for k in value(history, 'g{code=~"5.."}', 0)} == {"503"}
        assert {dict(k)["code"] for k in value(history, 'g{code!~"5.*", code!="x"}', 0)} == {"200"}

    def test_variables_are_substituted(self) -> None:
        """$route and $__rate_interval take the values the renderer passes."""
        node = parse('rate(x{route=~"$route"}[$__rate_interval])', {"route": ".*", "__rate_interval": "15s"})
        assert "15.0" in repr(node) and "'.*'" in repr(node)

    @pytest.mark.parametrize("expr", ["rate(x)", "x[5m]", "sum(x) > 0", "label_replace(x)", "x{a~\"b\"}"])
    def test_unsupported_forms_are_refused(self, expr: str) -> None:
        """Outside the subset: an error, never a silent wrong answer."""
        with pytest.raises(PromQLError):
            Evaluator([scrape(0, {"x": [({}, 1.0)]})]).at(parse(expr), 0)

    def test_every_dashboard_expression_is_supported(self) -> None:
        """The renderer can evaluate every target of deploy/grafana/gateway-dashboard.json."""
        history = [scrape(0, {}), scrape(1, {})]
        panels = json.loads(DASHBOARD.read_text())["panels"]
        exprs = [t["expr"] for p in panels for t in p.get("targets", [])]
        assert exprs
        for expr in exprs:
            Evaluator(history).range(parse(expr, {"route": ".*", "__rate_interval": "5s"}))

    def test_legend_format(self) -> None:
        """{{label}} takes the label's value; absent labels leave nothing behind."""
        assert format_legend("{{route}} arm {{ arm }} v{{version}} {{instance}}",
                             (("arm", "1"), ("route", "churn"), ("version", "2"))) == "churn arm 1 v2"
