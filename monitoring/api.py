"""GET /metrics (the Prometheus exposition of the app's own registry, merged across worker processes
in multiprocess mode) and GET /monitoring/drift (JSON)."""

from __future__ import annotations

import os
from collections.abc import Iterable

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector
from starlette.requests import Request
from starlette.responses import Response

from monitoring.collectors import DriftRegistry, drift_report


class ProcessLocalCollector:
    """The app registry's families that the multiprocess files do not hold: what custom collectors
    (the DriftCollector) compute in this process. Families from Counter/Gauge/Histogram objects are
    left out, because the MultiProcessCollector already reports them summed over all workers."""

    def __init__(self, app_registry: CollectorRegistry, merged: MultiProcessCollector) -> None:
        self.app_registry = app_registry
        self.merged = merged

    def collect(self) -> Iterable[Metric]:
        # A metric object writes every child it creates into this process's file, so a family with
        # samples here and no entry in the files cannot come from one; empty families carry nothing.
        shared = {family.name for family in self.merged.collect()}  # type: ignore[no-untyped-call]
        return [f for f in self.app_registry.collect() if f.samples and f.name not in shared]


class MetricsEndpoint:
    """GET /metrics. With PROMETHEUS_MULTIPROC_DIR set (`serve --workers N`), counters and histograms
    are summed over every worker's files (gauges by their `multiprocess_mode`); the drift gauges
    are this worker's view, which is every worker's view when windows are merged in Redis."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        if path:
            self.registry = CollectorRegistry(auto_describe=False)
            merged = MultiProcessCollector(self.registry, path)  # type: ignore[no-untyped-call]
            self.registry.register(ProcessLocalCollector(registry, merged))

    async def exposition(self, request: Request) -> Response:
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)


class DriftEndpoint:
    """GET /monitoring/drift[?route=NAME][&history=N]: windows, PSI and status per route, version and column."""

    def __init__(self, registry: DriftRegistry) -> None:
        self.registry = registry

    async def drift(self, request: Request) -> Response:
        route = request.query_params.get("route")
        raw_history = request.query_params.get("history")
        history = None
        if raw_history is not None:
            if not raw_history.isdigit():
                return Response(orjson.dumps({"error": f"history: expected a non-negative integer, got {raw_history!r}"}),
                                status_code=400, media_type="application/json")
            history = int(raw_history)
        body = orjson.dumps(drift_report(self.registry, route=route, history=history))
        return Response(body, media_type="application/json")
