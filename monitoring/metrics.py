"""Every Prometheus metric the gateway exports, defined in one place on the app's own registry.

Names carry the `gateway_` prefix and base units (_seconds, _total, _rows). Label children that the
request path touches are created once (see `RequestMetrics`) and cached on compiled objects, because
`labels()` converts, hashes and locks on every call.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from monitoring.requests import DURATION, DURATION_DOC, REQUESTS, REQUESTS_DOC, RequestCounts, RequestStats

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
RATIO_BUCKETS = (0.5, 0.8, 0.9, 0.95, 0.98, 0.99, 1.0)
DIFF_BUCKETS = (0.0, 1e-6, 1e-4, 1e-3, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0)


@dataclass(frozen=True, slots=True)
class RequestMetrics:
    """The children one (route, arm, version, protocol) touches per successful request, with worker
    processes (in one process, `RequestStats` of monitoring/requests.py stands in for it)."""

    ok: Counter
    seconds: Histogram

    def observe(self, seconds: float) -> None:
        self.ok.inc()
        self.seconds.observe(seconds)

    def failed(self) -> None:
        """A request that failed after this arm was picked (its error is counted by status elsewhere)."""


class ArmTap(Protocol):
    """Per-arm counts a rollout watches (gateway/armstats.py ArmStats)."""

    def served(self, seconds: float) -> None: ...

    def failed(self) -> None: ...


class TapSource(Protocol):
    def get(self, route: str, version: str) -> ArmTap | None: ...


@dataclass(frozen=True, slots=True)
class TappedRequestMetrics:
    """Request metrics that also feed a rollout's per-arm counts; built only for arms a rollout watches,
    so other arms pay nothing for rollouts."""

    base: RequestMetrics | RequestStats
    tap: ArmTap

    def observe(self, seconds: float) -> None:
        self.base.observe(seconds)
        self.tap.served(seconds)

    def failed(self) -> None:
        self.tap.failed()


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


RequestObserver = RequestMetrics | RequestStats | TappedRequestMetrics  # what an arm observes a request on


class GatewayMetrics:
    """All metric families; one instance per app, on a registry of its own (tests get fresh ones)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.taps: TapSource | None = None  # set by the app: which (route, version)s a rollout watches
        r = self.registry
        # The request path's two families: plain numbers exported at scrape in one process, prometheus-client
        # objects (whose values live in the workers' files) with worker processes.
        self.request_counts: RequestCounts | None = None
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            self.requests = Counter(REQUESTS, REQUESTS_DOC, ["route", "arm", "version", "protocol", "code"], registry=r)
            self.request_seconds = Histogram(
                DURATION, DURATION_DOC, ["route", "arm", "version", "protocol"], buckets=LATENCY_BUCKETS, registry=r,
            )
        else:
            self.request_counts = RequestCounts(LATENCY_BUCKETS)
            r.register(self.request_counts)
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
        # Sampled, not counted per request: the path keeps a plain int (see `track_inflight`).
        self.inflight = Gauge(
            "gateway_inflight_requests", "Inference requests received and not yet answered (summed over live workers).",
            registry=r, multiprocess_mode="livesum",
        )
        self.registry_syncs = Counter(
            "gateway_registry_syncs", "Route/model syncs from the registry, by outcome (ok or error).",
            ["outcome"], registry=r,
        )
        # Registry follower (gateway/sync.py). A timestamp rather than "seconds since", as Prometheus advises
        # (https://prometheus.io/docs/instrumenting/writing_exporters/#timestamps-not-time-since): the lag is
        # `time() - gateway_registry_last_sync_timestamp_seconds`, evaluated by Prometheus, so it keeps
        # growing while the registry is down or the follower is stuck, and needs no scrape-time callback
        # (which multiprocess mode cannot merge). `livemin`: with `serve --workers N` the stalest live worker.
        self.registry_last_sync = Gauge(
            "gateway_registry_last_sync_timestamp_seconds",
            "Unix time of this process's last successful registry check (change counter read, and any change applied).",
            registry=r, multiprocess_mode="livemin",
        )
        self.registry_changes_applied = Counter(
            "gateway_registry_changes_applied",
            "Registry changes applied: route tables recompiled from the registry and swapped in.", registry=r,
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
        # Rollouts: set by the replica that drives each rollout (the others leave them unset).
        self.rollout_steps = Counter(
            "gateway_rollout_steps", "Rollout guard checks and their outcome: advanced, waiting (too few requests), "
            "promoted, rolled_back, aborted.", ["rollout", "result"], registry=r,
        )
        self.rollout_candidate_weight = Gauge(
            "gateway_rollout_candidate_weight", "Share of the route's traffic (percent) the rollout gives its candidate.",
            ["rollout"], registry=r, multiprocess_mode="livemax",
        )
        self.rollout_state = Gauge(
            "gateway_rollout_state", "1 for the rollout's current state (shadow, stepping, promoted, rolled_back, "
            "aborted), 0 for the others.", ["rollout", "state"], registry=r, multiprocess_mode="livemax",
        )
        self.rollout_guard_value = Gauge(
            "gateway_rollout_guard_value", "The figure of each rollout guard at its last check (error_rate, p99_ratio, "
            "disagreement, psi).", ["rollout", "guard"], registry=r, multiprocess_mode="livemax",
        )

    def track_inflight(self, read: Callable[[], int]) -> bool:
        """Export `read()` as gateway_inflight_requests. In one process it is read at scrape time
        (True); with worker processes (PROMETHEUS_MULTIPROC_DIR) the value must be written to this
        worker's file, so the caller samples it with `inflight.set` periodically (False)."""
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            return False
        self.inflight.set_function(read)
        return True

    def batch_observer(self, model: str, version: str) -> BatchObserver:
        """The batcher's per-batch callback, with its children bound once."""
        return BatchObserver(
            rows=self.batch_rows.labels(model, version),
            wait=self.batch_wait_seconds.labels(model, version),
            reasons={r: self.batches.labels(model, version, r) for r in ("idle", "full", "deadline")},
        )

    def for_request(self, route: str, arm: str, version: str, protocol: str, *, tapped: bool = True) -> RequestObserver:
        """What the success path observes; build once per compiled arm and protocol. With `tapped`, an arm
        whose (route, version) a rollout watches also feeds its counts."""
        base: RequestMetrics | RequestStats
        if self.request_counts is not None:
            base = self.request_counts.arm(route, arm, version, protocol)
        else:
            base = RequestMetrics(self.requests.labels(route, arm, version, protocol, "200"),
                                  self.request_seconds.labels(route, arm, version, protocol))
        tap = self.taps.get(route, version) if tapped and self.taps is not None else None
        return base if tap is None else TappedRequestMetrics(base, tap)

    def count_error(self, route: str, arm: str, version: str, protocol: str, code: str) -> None:
        """An inference request answered with an error status (the cold path)."""
        if self.request_counts is not None:
            self.request_counts.error(route, arm, version, protocol, code)
        else:
            self.requests.labels(route, arm, version, protocol, code).inc()
