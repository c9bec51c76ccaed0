"""Inference request counts and latencies for one process, kept as plain numbers and exported at scrape.

prometheus-client's Counter.inc and Histogram.observe take a lock and run several Python calls each;
on the inference path that was about 12k instructions per request (measured with callgrind), more
than routing and the arm pick together. Everything here is touched from the event loop only (the
request path and the async /metrics handler both run on it), so plain attribute increments are safe.

With worker processes (PROMETHEUS_MULTIPROC_DIR) counts must land in each worker's metrics file, so
monitoring/metrics.py uses prometheus-client's own objects instead; the exported families, names and
labels are the same either way.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator, Sequence

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.utils import floatToGoString

REQUESTS = "gateway_requests"
REQUESTS_DOC = "Inference requests answered, by route, arm, served version, protocol and status code."
DURATION = "gateway_request_duration_seconds"
DURATION_DOC = "Time from request body received to response built, per route and arm."
ARM_LABELS = ("route", "arm", "version", "protocol")


class RequestStats:
    """Successful requests of one (route, arm, version, protocol): count, latency sum and buckets."""

    __slots__ = ("bounds", "buckets", "count", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds  # upper bounds, the last one +inf
        self.buckets = [0] * len(bounds)  # not cumulative: observations per bucket
        self.count = 0
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self.count += 1
        self.total += seconds
        self.buckets[bisect_left(self.bounds, seconds)] += 1  # first bound >= seconds: Prometheus' `le`

    def failed(self) -> None:
        """A request that failed after its arm was picked: counted by status in `RequestCounts.error`."""


class RequestCounts:
    """A custom collector for gateway_requests_total and gateway_request_duration_seconds."""

    def __init__(self, buckets: Sequence[float]) -> None:
        bounds = sorted(float(b) for b in buckets)
        if not bounds or bounds[-1] != float("inf"):
            bounds.append(float("inf"))
        self.bounds = tuple(bounds)
        self._ok: dict[tuple[str, str, str, str], RequestStats] = {}
        self._errors: dict[tuple[str, str, str, str, str], int] = {}

    def arm(self, route: str, arm: str, version: str, protocol: str) -> RequestStats:
        """The stats of one label set; the same object for the same labels (recompiled routes keep counting)."""
        key = (route, arm, version, protocol)
        stats = self._ok.get(key)
        if stats is None:
            stats = self._ok[key] = RequestStats(self.bounds)
        return stats

    def error(self, route: str, arm: str, version: str, protocol: str, code: str) -> None:
        key = (route, arm, version, protocol, code)
        self._errors[key] = self._errors.get(key, 0) + 1

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(REQUESTS, REQUESTS_DOC, labels=[*ARM_LABELS, "code"])
        duration = HistogramMetricFamily(DURATION, DURATION_DOC, labels=list(ARM_LABELS))
        les = [floatToGoString(b) for b in self.bounds]  # type: ignore[no-untyped-call]  # the library's own `le` format
        for key, stats in list(self._ok.items()):
            requests.add_metric([*key, "200"], stats.count)
            cumulative, running = [], 0
            for le, count in zip(les, stats.buckets, strict=True):
                running += count
                cumulative.append((le, running))
            duration.add_metric(list(key), cumulative, sum_value=stats.total)
        for error_key, count in list(self._errors.items()):
            requests.add_metric(list(error_key), count)
        yield requests
        yield duration
