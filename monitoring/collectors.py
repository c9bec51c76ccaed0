"""What the gateway publishes about drift: the registry of trackers it owns, a Prometheus collector
that reads their last closed windows at scrape time, and the JSON view behind GET /monitoring/drift.

Nothing here runs per request: gauges are built from the trackers when Prometheus scrapes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any

from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from monitoring.drift import ClosedWindow, DriftTracker, FeatureWindow, MonitoredColumn
from monitoring.psi import STATUS_CODES, CategoricalProfile, encode_float
from monitoring.sinks import DriftFeed

Key = tuple[str, str]  # (route, version)
Entry = DriftTracker | DriftFeed


class DriftRegistry:
    """The monitored (route, version)s, each a DriftTracker or a DriftFeed around one.

    The gateway builds a new set when routes or versions change and `swap`s it in whole (keeping
    the objects of unchanged keys, so their windows survive); readers take one reference and never
    see a mix.
    """

    def __init__(self, entries: Iterable[Entry] = ()) -> None:
        self._entries: Mapping[Key, Entry] = MappingProxyType({})
        self.swap(entries)

    def swap(self, entries: Iterable[Entry]) -> None:
        """Replace the whole set; raises ValueError if two entries share a (route, version)."""
        table: dict[Key, Entry] = {}
        for entry in entries:
            tracker = _tracker(entry)
            key = (tracker.route, tracker.version)
            if key in table:
                raise ValueError(f"drift registry: two trackers for route {key[0]!r} version {key[1]!r}")
            table[key] = entry
        self._entries = MappingProxyType(table)

    def get(self, route: str, version: str) -> DriftTracker | None:
        entry = self._entries.get((route, version))
        return _tracker(entry) if entry is not None else None

    def feed(self, route: str, version: str) -> DriftFeed | None:
        entry = self._entries.get((route, version))
        return entry if isinstance(entry, DriftFeed) else None

    def entries(self) -> Mapping[Key, Entry]:
        """The current set (an immutable snapshot)."""
        return self._entries

    def trackers(self) -> list[DriftTracker]:
        return [_tracker(e) for e in self._entries.values()]

    def feeds(self) -> list[DriftFeed]:
        return [e for e in self._entries.values() if isinstance(e, DriftFeed)]

    def __len__(self) -> int:
        return len(self._entries)


def _tracker(entry: Entry) -> DriftTracker:
    return entry.tracker if isinstance(entry, DriftFeed) else entry


_COLUMN_LABELS = ["route", "model", "version", "feature", "role"]
_TRACKER_LABELS = ["route", "model", "version"]


class DriftCollector(Collector):
    """Prometheus collector: PSI and status per (route, version, feature) from the last closed window.

    `gateway_drift_status` is 0 stable, 1 moderate, 2 significant, -1 insufficient data. Register
    it on the app's CollectorRegistry: `registry.register(DriftCollector(drift_registry))`.
    """

    def __init__(self, registry: DriftRegistry) -> None:
        self.registry = registry

    def describe(self) -> Iterable[Metric]:
        return self._families()

    def collect(self) -> Iterable[Metric]:
        families = self._families()
        psi, status, rows, current, closed, dropped = families
        for _, entry in sorted(self.registry.entries().items()):
            tracker = _tracker(entry)
            labels = [tracker.route, tracker.model, tracker.version]
            last = tracker.last()
            if last is not None:
                rows.add_metric(labels, last.rows)
                for result in last.features:
                    column = [*labels, result.name, result.role]
                    if result.psi is not None:
                        psi.add_metric(column, result.psi)
                    status.add_metric(column, STATUS_CODES[result.status])
            current.add_metric(labels, tracker.current().rows)
            closed.add_metric(labels, tracker.windows_closed)
            if isinstance(entry, DriftFeed):
                dropped.add_metric(labels, entry.dropped_rows)
        return families

    def _families(
        self,
    ) -> tuple[GaugeMetricFamily, GaugeMetricFamily, GaugeMetricFamily, GaugeMetricFamily, CounterMetricFamily, CounterMetricFamily]:
        return (
            GaugeMetricFamily(
                "gateway_drift_psi", "Population Stability Index of each monitored column in the last closed window.",
                labels=_COLUMN_LABELS,
            ),
            GaugeMetricFamily(
                "gateway_drift_status",
                "Drift status in the last closed window: 0 stable, 1 moderate, 2 significant, -1 insufficient data.",
                labels=_COLUMN_LABELS,
            ),
            GaugeMetricFamily("gateway_drift_window_rows", "Rows in the last closed drift window.", labels=_TRACKER_LABELS),
            GaugeMetricFamily(
                "gateway_drift_current_window_rows", "Rows counted so far in the open drift window (this process).",
                labels=_TRACKER_LABELS,
            ),
            CounterMetricFamily("gateway_drift_windows_closed", "Drift windows closed.", labels=_TRACKER_LABELS),
            CounterMetricFamily(
                "gateway_drift_dropped_rows", "Served rows left out of drift counts (queue full or count store down).",
                labels=_TRACKER_LABELS,
            ),
        )


def drift_report(registry: DriftRegistry, *, route: str | None = None, history: int | None = None) -> dict[str, Any]:
    """The JSON body of GET /monitoring/drift (see README): per (route, version), per column.

    Numeric `edges` include the open outer edges, encoded as the strings "-Infinity" and "Infinity"
    (JSON has no infinities); categorical columns have `categories` instead, the last being the
    'other' bin. `counts` are per bin in edge (or category) order; `missing` counts NaN/None.
    `history` limits the windows listed per column (newest last).
    """
    report = []
    for (name, _), entry in sorted(registry.entries().items()):
        if route is not None and name != route:
            continue
        report.append(_describe(entry, history))
    return {"drift": report}


def _describe(entry: Entry, history: int | None) -> dict[str, Any]:
    tracker = _tracker(entry)
    windows = tracker.history()
    if history is not None:
        windows = windows[-history:] if history > 0 else ()
    last = tracker.last()
    current = tracker.current()
    body: dict[str, Any] = {
        "route": tracker.route,
        "model": tracker.model,
        "version": tracker.version,
        "fingerprint": tracker.fingerprint,
        "policy": tracker.policy.to_dict(),
        "thresholds": tracker.thresholds.to_dict(),
        "windows_closed": tracker.windows_closed,
        "current": {"window": current.window, "rows": current.rows},
        "last": _window_summary(last) if last is not None else None,
        "features": [_column(c, tracker, windows) for c in tracker.columns],
    }
    if isinstance(entry, DriftFeed):
        body["shared"] = {"key": entry.key, "pending_rows": entry.pending_rows, "dropped_rows": entry.dropped_rows}
    return body


def _window_summary(window: ClosedWindow) -> dict[str, Any]:
    worst = window.feature(window.worst) if window.worst is not None else None
    return {
        "window": window.window,
        "start": window.start,
        "end": window.end,
        "rows": window.rows,
        "status": window.status,
        "worst": window.worst,
        "worst_psi": worst.psi if worst is not None else None,
    }


def _column(column: MonitoredColumn, tracker: DriftTracker, windows: tuple[ClosedWindow, ...]) -> dict[str, Any]:
    profile = column.profile
    current = tracker.current()
    body: dict[str, Any] = {"name": column.name, "role": column.role, "kind": profile.kind}
    if isinstance(profile, CategoricalProfile):
        body["categories"] = profile.labels()
    else:
        body["edges"] = [encode_float(float(e)) for e in profile.full_edges()]
    counts = current.counts[column.name]
    body["expected"] = profile.expected.tolist()
    body["min_rows"] = column.min_rows
    body["current"] = {"n": sum(counts), "counts": list(counts), "missing": current.missing[column.name]}
    last = tracker.last()
    body["last"] = _result(last.window, last.feature(column.name), counts=True) if last is not None else None
    body["history"] = [_result(w.window, w.feature(column.name), counts=False, span=(w.start, w.end)) for w in windows]
    return body


def _result(window: int, result: FeatureWindow, *, counts: bool, span: tuple[float, float] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"window": window, "n": result.n}
    if span is not None:
        body["start"], body["end"] = span
    if counts:
        body["counts"] = list(result.counts)
        body["missing"] = result.missing
    body["psi"] = result.psi
    body["status"] = result.status
    return body
