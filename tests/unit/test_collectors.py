"""Drift exported: DriftRegistry, the Prometheus DriftCollector and the /monitoring/drift JSON view."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from starlette.requests import Request

from monitoring.api import DriftEndpoint
from monitoring.collectors import DriftCollector, DriftRegistry, drift_report
from monitoring.drift import DriftTracker, WindowPolicy
from monitoring.metrics import GatewayMetrics
from monitoring.psi import NumericProfile, Profile, profile_from_sample, psi
from monitoring.sinks import DriftFeed, MemoryCountSink

REFERENCE = np.random.default_rng(0).normal(size=(20_000, 2))
PROFILES: list[tuple[str, Profile]] = [("age", profile_from_sample(REFERENCE[:, 0])), ("income", profile_from_sample(REFERENCE[:, 1]))]
COLOR = profile_from_sample(np.array(["red", "green", "blue"] * 100))
SCORE = profile_from_sample(np.random.default_rng(1).uniform(size=5000))


def tracker(route: str = "fraud", version: str = "3", rows: int = 1000, history: int = 32) -> DriftTracker:
    return DriftTracker(
        PROFILES, WindowPolicy(rows=rows), outputs={"score": SCORE}, route=route, model="fraud-model", version=version, history=history,
    )


def batch(rows: int, shift: float = 0.0, seed: int = 2) -> npt.NDArray[np.float64]:
    r = np.random.default_rng(seed)
    return np.column_stack([r.normal(shift, 1.0, rows), r.normal(0.0, 1.0, rows)])


def scrape(drift: DriftRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Expose through a fresh CollectorRegistry and parse it back: {(sample name, sorted labels): value}."""
    registry = CollectorRegistry()
    registry.register(DriftCollector(drift))
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def labels(feature: str | None = None, role: str = "input", route: str = "fraud", version: str = "3") -> tuple[tuple[str, str], ...]:
    base = {"route": route, "model": "fraud-model", "version": version}
    if feature is not None:
        base |= {"feature": feature, "role": role}
    return tuple(sorted(base.items()))


class TestRegistry:
    def test_get_and_swap(self) -> None:
        """Trackers are found by (route, version); swap replaces the whole set at once."""
        old, new = tracker(version="1"), tracker(version="2")
        drift = DriftRegistry([old])
        assert drift.get("fraud", "1") is old and drift.get("fraud", "2") is None
        drift.swap([new])
        assert drift.get("fraud", "1") is None and drift.get("fraud", "2") is new
        assert len(drift) == 1

    def test_feeds(self) -> None:
        """A DriftFeed entry is found as its tracker and as a feed."""
        feed = DriftFeed(tracker(), MemoryCountSink())
        drift = DriftRegistry([feed, tracker(route="other")])
        assert drift.get("fraud", "3") is feed.tracker
        assert drift.feed("fraud", "3") is feed
        assert drift.feed("other", "3") is None
        assert drift.feeds() == [feed]

    def test_duplicate_key(self) -> None:
        """Two trackers for the same (route, version) are refused."""
        with pytest.raises(ValueError, match="fraud"):
            DriftRegistry([tracker(), tracker()])


class TestCollector:
    def test_nothing_closed_yet(self) -> None:
        """Before a window closes there are no PSI samples, only the open window's rows and a zero close count."""
        t = tracker()
        t.add_batch(batch(10), outputs=np.full(10, 0.5), now=0.0)
        samples = scrape(DriftRegistry([t]))
        assert not any(name == "gateway_drift_psi" for name, _ in samples)
        assert samples[("gateway_drift_current_window_rows", labels())] == 10
        assert samples[("gateway_drift_windows_closed_total", labels())] == 0

    def test_psi_and_status_of_last_window(self) -> None:
        """Gauges carry the last closed window's PSI and status per feature and output, and its rows."""
        t = tracker()
        t.add_batch(batch(1000), outputs=np.full(1000, 0.5), now=0.0)
        t.add_batch(batch(1000, shift=1.0, seed=3), outputs=np.random.default_rng(4).uniform(size=1000), now=1.0)
        last = t.last()
        assert last is not None
        samples = scrape(DriftRegistry([t]))
        for feature, role in (("age", "input"), ("income", "input"), ("score", "output")):
            assert samples[("gateway_drift_psi", labels(feature, role))] == pytest.approx(last.psi()[feature])
        assert samples[("gateway_drift_status", labels("age"))] == 2
        assert samples[("gateway_drift_status", labels("income"))] == 0
        assert samples[("gateway_drift_window_rows", labels())] == 1000
        assert samples[("gateway_drift_windows_closed_total", labels())] == 2

    @pytest.mark.parametrize(("rows", "shift", "code"), [(1000, 0.0, 0), (1000, 0.45, 1), (1000, 1.5, 2), (20, 1.5, -1)])
    def test_status_codes(self, rows: int, shift: float, code: int) -> None:
        """Status is 0 stable, 1 moderate, 2 significant, -1 insufficient data."""
        t = tracker(rows=rows)
        t.add_batch(batch(rows, shift), now=0.0)
        assert scrape(DriftRegistry([t]))[("gateway_drift_status", labels("age"))] == code

    def test_many_trackers(self) -> None:
        """Each (route, version) gets its own label set."""
        one, two = tracker(version="1", rows=500), tracker(route="credit", version="7", rows=500)
        for t in (one, two):
            t.add_batch(batch(500), now=0.0)
        samples = scrape(DriftRegistry([one, two]))
        assert ("gateway_drift_psi", labels("age", version="1")) in samples
        assert ("gateway_drift_psi", labels("age", route="credit", version="7")) in samples

    def test_dropped_rows_from_feeds(self) -> None:
        """Feeds report the rows they dropped."""
        feed = DriftFeed(tracker(), MemoryCountSink(), max_pending_rows=5)
        feed.add(batch(10))
        assert scrape(DriftRegistry([feed]))[("gateway_drift_dropped_rows_total", labels())] == 10

    def test_beside_gateway_metrics(self) -> None:
        """The collector registers on the app's registry next to GatewayMetrics without name clashes."""
        metrics = GatewayMetrics(CollectorRegistry())
        t = tracker(rows=300)
        t.add_batch(batch(300), now=0.0)
        metrics.registry.register(DriftCollector(DriftRegistry([t])))
        text = generate_latest(metrics.registry).decode()
        assert 'gateway_drift_psi{feature="age"' in text
        assert "gateway_drift_flushes_total" in text or "gateway_drift_flush_duration_seconds" in text

    def test_scrape_reads_swapped_set(self) -> None:
        """A scrape reads whatever set is current: swapping trackers changes the exposition."""
        drift = DriftRegistry()
        assert scrape(drift) == {}
        t = tracker()
        drift.swap([t])
        assert ("gateway_drift_current_window_rows", labels()) in scrape(drift)


class TestReport:
    def test_shape(self) -> None:
        """The JSON has the documented shape: per route/version, per feature: edges, expected, current, last, history."""
        t = tracker()
        data = batch(1000, shift=0.5)
        t.add_batch(data, outputs=np.full(1000, 0.25), now=0.0)
        t.add_batch(batch(10), now=1.0)
        report = orjson.loads(orjson.dumps(drift_report(DriftRegistry([t]))))
        [entry] = report["drift"]
        assert (entry["route"], entry["model"], entry["version"]) == ("fraud", "fraud-model", "3")
        assert entry["policy"] == {"window_requests": 1000, "window_seconds": None}
        assert entry["current"] == {"window": 1, "rows": 10}
        assert entry["last"]["worst"] == "age" and entry["last"]["rows"] == 1000
        age = entry["features"][0]
        assert set(age) >= {"name", "edges", "expected", "current", "last", "history"}
        assert age["edges"][0] == "-Infinity" and age["edges"][-1] == "Infinity"
        assert len(age["edges"]) == len(age["expected"]) + 1 == len(age["last"]["counts"]) + 1
        assert age["current"]["n"] == 10 and sum(age["current"]["counts"]) == 10
        assert age["last"]["n"] == 1000
        assert [h["window"] for h in age["history"]] == [0]
        assert entry["features"][2]["role"] == "output"

    def test_psi_matches_numpy_on_published_edges(self) -> None:
        """The published PSI agrees to 1e-9 with numpy on the published edges and the known sample."""
        t = tracker()
        data = batch(1000, shift=0.3)
        t.add_batch(data, now=0.0)
        [entry] = orjson.loads(orjson.dumps(drift_report(DriftRegistry([t]))))["drift"]
        for i, feature in enumerate(entry["features"][:2]):
            edges = [float(e) for e in feature["edges"]]
            counts, _ = np.histogram(data[:, i], edges)
            shares = np.maximum(counts / counts.sum(), 1e-4)
            shares /= shares.sum()
            expected = np.maximum(np.array(feature["expected"]), 1e-4)
            expected /= expected.sum()
            by_numpy = float(np.sum((shares - expected) * np.log(shares / expected)))
            assert math.isclose(feature["last"]["psi"], by_numpy, abs_tol=1e-9)
            assert feature["last"]["counts"] == counts.tolist()

    def test_categorical_column(self) -> None:
        """A categorical column lists its categories (then 'other') instead of edges."""
        t = DriftTracker([("color", COLOR)], WindowPolicy(rows=5), route="c", version="1")
        t.add_batch({"color": np.array(["red", "teal", "teal", "blue", "red"])}, now=0.0)
        [entry] = drift_report(DriftRegistry([t]))["drift"]
        [color] = entry["features"]
        assert color["categories"] == ["blue", "green", "red", "__other__"]
        assert "edges" not in color
        assert color["last"]["counts"] == [1, 0, 2, 2]

    @pytest.mark.parametrize(("history", "expected"), [(None, [2, 3, 4]), (2, [3, 4]), (0, [])])
    def test_history_limit(self, history: int | None, expected: list[int]) -> None:
        """history=N lists the newest N windows per feature; the tracker's bound applies anyway."""
        t = tracker(rows=10, history=3)
        t.add_batch(batch(50), now=0.0)
        [entry] = drift_report(DriftRegistry([t]), history=history)["drift"]
        assert [h["window"] for h in entry["features"][0]["history"]] == expected

    def test_route_filter(self) -> None:
        """route=NAME keeps that route's versions only."""
        drift = DriftRegistry([tracker(version="1"), tracker(version="2"), tracker(route="credit")])
        report = drift_report(drift, route="fraud")
        assert [(e["route"], e["version"]) for e in report["drift"]] == [("fraud", "1"), ("fraud", "2")]

    def test_feed_entry(self) -> None:
        """A DriftFeed entry adds its shared key, queued and dropped rows."""
        feed = DriftFeed(tracker(), MemoryCountSink(), key="fraud:3:x")
        feed.add(batch(4))
        [entry] = drift_report(DriftRegistry([feed]))["drift"]
        assert entry["shared"] == {"key": "fraud:3:x", "pending_rows": 4, "dropped_rows": 0}


def get(endpoint: DriftEndpoint, query: str = "") -> tuple[int, Any]:
    """Call the handler with a real Starlette Request over an ASGI scope."""
    scope = {"type": "http", "method": "GET", "path": "/monitoring/drift", "query_string": query.encode(), "headers": []}
    response = asyncio.run(endpoint.drift(Request(scope)))
    return response.status_code, orjson.loads(bytes(response.body))


class TestEndpoint:
    def test_json(self) -> None:
        """GET /monitoring/drift answers the report as application/json."""
        t = tracker(rows=300)
        t.add_batch(batch(300), now=0.0)
        status, body = get(DriftEndpoint(DriftRegistry([t])), "history=1")
        assert status == 200
        assert body["drift"][0]["features"][0]["last"]["status"] == "stable"

    @pytest.mark.parametrize("query", ["history=-1", "history=x"])
    def test_bad_history(self, query: str) -> None:
        """A history that is not a non-negative integer is a 400 naming the parameter."""
        status, body = get(DriftEndpoint(DriftRegistry()), query)
        assert status == 400 and "history" in body["error"]


def test_profile_edges_are_numeric_profile() -> None:
    """The fixtures' input profiles are numeric (a guard for the edge assertions above)."""
    assert all(isinstance(p, NumericProfile) for _, p in PROFILES)
    assert psi(PROFILES[0][1].expected, np.ones(PROFILES[0][1].n_bins)) >= 0
