"""GET /metrics (the Prometheus exposition of the app's own registry) and GET /monitoring/drift (JSON)."""

from __future__ import annotations

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.requests import Request
from starlette.responses import Response

from monitoring.collectors import DriftRegistry, drift_report


class MetricsEndpoint:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

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
