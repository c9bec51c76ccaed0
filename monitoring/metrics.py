"""Every Prometheus metric the gateway exports, defined in one place on the app's own registry.

Names carry the `gateway_` prefix and base units (_seconds, _total, _rows). Label children that the
request path touches are created once (see `RequestMetrics`) and cached on compiled objects, because
`labels()` converts, hashes and locks on every call.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
RATIO_BUCKETS = (0.5, 0.8, 0.9, 0.95, 0.98, 0.99, 1.0)
DIFF_BUCKETS = (0.0, 1e-6, 1e-4, 1e-3, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0)


@dataclass(frozen=True, slots=True)
class RequestMetrics:
    """The children one (route, arm, version, protocol) touches per successful request."""

    ok: Counter
    seconds: Histogram

    def observe(self, seconds: float) -> None:
        self.ok.inc()
        self.seconds.observe(seconds)


@dataclass(frozen=True, slots=True)
class BatchObserver:
    """Called once per batch: its rows, how long its oldest request waited, why it was released."""

    rows: Histogram
    wait: Histogram
    reasons: dict[str, Counter]

    def __call__(self, rows: int, waited_s: float, reason: str) -> None:
        self.rows.observe(rows)
        self.wait.observe(waited_s)
        self.reasons[reason].inc()


class GatewayMetrics:
    """All metric families; one instance per app, on a registry of its own (tests get fresh ones)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "gateway_requests", "Inference requests answered, by route, arm, served version, protocol and status code.",
            ["route", "arm", "version", "protocol", "code"], registry=r,
        )
        self.request_seconds = Histogram(
            "gateway_request_duration_seconds", "Time from request body received to response built, per route and arm.",
            ["route", "arm", "version", "protocol"], buckets=LATENCY_BUCKETS, registry=r,
        )
        self.batch_rows = Histogram(
            "gateway_batch_size_rows", "Rows per onnxruntime run (requests stacked by the micro-batcher).",
            ["model", "version"], buckets=BATCH_BUCKETS, registry=r,
        )
        self.batch_wait_seconds = Histogram(
            "gateway_batch_wait_seconds", "How long the oldest request of each batch waited in the queue.",
            ["model", "version"], buckets=LATENCY_BUCKETS, registry=r,
        )
        self.batches = Counter(
            "gateway_batches", "Batches run, by why they were released: idle (model free), full (max rows), "
            "deadline (max delay).", ["model", "version", "reason"], registry=r,
        )
        self.queue_rejections = Counter(
            "gateway_queue_rejections", "Requests refused with 503 because the model's queue was full.",
            ["model", "version"], registry=r,
        )
        self.inflight_rejections = Counter(
            "gateway_inflight_rejections", "Inference requests refused with 503 because --max-in-flight were in flight.",
            registry=r,
        )
        self.model_loads = Counter(
            "gateway_model_loads", "Model version loads, by outcome (ok or failed).",
            ["model", "version", "outcome"], registry=r,
        )
        # Every worker loads the same routes: the merged view (serve --workers N) shows the largest live count.
        self.models_loaded = Gauge(
            "gateway_models_loaded", "Model versions loaded per process (the largest over live workers).",
            registry=r, multiprocess_mode="livemax",
        )
        self.registry_syncs = Counter(
            "gateway_registry_syncs", "Route/model syncs from the registry, by outcome (ok or error).",
            ["outcome"], registry=r,
        )
        self.features_defaulted = Counter(
            "gateway_features_defaulted", "Feature values served from the view's default (missing, stale, or store down).",
            ["route"], registry=r,
        )
        self.feature_fetch_seconds = Histogram(
            "gateway_feature_fetch_duration_seconds", "Time to read a request's features from the online store.",
            ["route"], buckets=LATENCY_BUCKETS, registry=r,
        )
        self.route_changes = Counter(
            "gateway_route_changes", "Admin changes to route policies, by route and action (put or delete).",
            ["route", "action"], registry=r,
        )
        self.shadow_requests = Counter(
            "gateway_shadow_requests", "Shadow copies, by route, shadow target and outcome (completed, failed, dropped).",
            ["route", "shadow", "outcome"], registry=r,
        )
        self.shadow_abs_diff = Histogram(
            "gateway_shadow_mean_abs_diff", "Mean absolute difference between shadow and primary numeric outputs.",
            ["route", "shadow"], buckets=DIFF_BUCKETS, registry=r,
        )
        self.shadow_agreement = Histogram(
            "gateway_shadow_decision_agreement_ratio",
            "Share of rows whose shadow decision (arg-max, or 0.5 threshold) equals the primary's.",
            ["route", "shadow"], buckets=RATIO_BUCKETS, registry=r,
        )
        self.shadow_mismatches = Counter(
            "gateway_shadow_output_mismatches", "Shadow answers whose outputs could not be compared with the primary's.",
            ["route", "shadow"], registry=r,
        )
        self.drift_flushes = Counter(
            "gateway_drift_flushes", "Drift count flushes to the count store, by outcome (ok or error).",
            ["outcome"], registry=r,
        )
        self.drift_flush_seconds = Histogram(
            "gateway_drift_flush_duration_seconds", "Time to bin queued rows, write them and close due drift windows.",
            buckets=LATENCY_BUCKETS, registry=r,
        )

    def batch_observer(self, model: str, version: str) -> BatchObserver:
        """The batcher's per-batch callback, with its children bound once."""
        return BatchObserver(
            rows=self.batch_rows.labels(model, version),
            wait=self.batch_wait_seconds.labels(model, version),
            reasons={r: self.batches.labels(model, version, r) for r in ("idle", "full", "deadline")},
        )

    def for_request(self, route: str, arm: str, version: str, protocol: str) -> RequestMetrics:
        """Children for the success path; build once per compiled arm and protocol."""
        return RequestMetrics(
            ok=self.requests.labels(route, arm, version, protocol, "200"),
            seconds=self.request_seconds.labels(route, arm, version, protocol),
        )
