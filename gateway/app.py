"""create_app(config) -> Starlette: the full route list in one place, and the lifespan that opens the
registry, loads the routed models, runs the registry follower, and marks draining on shutdown signals."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import threading
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from types import FrameType
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from featurestore.api import FeatureAPI, feature_routes
from featurestore.errors import FeatureStoreError
from featurestore.online import StoreOptions, open_online_store
from gateway.access import AccessGuard, Keyring, WriteAuditor
from gateway.admin import Admin
from gateway.armstats import StatsBoard
from gateway.config import Config
from gateway.dataplane import DataPlane
from gateway.demo import seed_demo_features
from gateway.endpoints import JSON, Endpoints
from gateway.errors import GatewayError, Overloaded, render_error, status_for
from gateway.features import LiveCatalog
from gateway.inference import (
    ASGIApp,
    InferenceService,
    InferenceSlot,
    Receive,
    Scope,
    Send,
    match_inference_path,
)
from gateway.mirror import Mirror
from gateway.models import ModelPool
from gateway.openapi import openapi_json
from gateway.rollouts import RolloutDriver
from gateway.shadow import ShadowQueue
from gateway.sync import RegistryFollower
from monitoring.api import DriftEndpoint, MetricsEndpoint
from monitoring.collectors import DriftCollector, DriftRegistry
from monitoring.drift import WindowPolicy
from monitoring.metrics import GatewayMetrics
from monitoring.sinks import CountSinkError, open_count_sink
from registry.api import create_mlflow_routes
from registry.artifacts import ArtifactStore
from registry.errors import RegistryError
from registry.store import RegistryStore

log = logging.getLogger("gateway")


async def _error(request: Request, exc: Exception) -> Response:
    if isinstance(exc, Overloaded):  # shed load at once; tell well-behaved clients when to come back
        headers = {"retry-after": str(exc.retry_after_s)}
        return Response(render_error(exc.message), status_code=503, media_type=JSON, headers=headers)
    if isinstance(exc, GatewayError | RegistryError | FeatureStoreError):
        return Response(render_error(exc.message), status_code=status_for(exc), media_type=JSON)
    if isinstance(exc, HTTPException):  # unknown path, wrong method: still the protocol's shape
        return Response(render_error(str(exc.detail)), status_code=exc.status_code, media_type=JSON)
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return Response(render_error(f"internal error: {type(exc).__name__}"), status_code=500, media_type=JSON)


def _install_drain_hook(on_drain: Callable[[], None]) -> None:
    """Chain onto the server's SIGTERM/SIGINT handlers so readiness turns false before the server
    stops accepting (uvicorn installs its handlers before the lifespan starts)."""
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(sig)
        if not callable(previous):
            continue

        def handler(signum: int, frame: FrameType | None, previous: Callable[[int, FrameType | None], object] = previous) -> None:
            on_drain()
            previous(signum, frame)

        signal.signal(sig, handler)


async def flush_once(drift: DriftRegistry, metrics: GatewayMetrics) -> None:
    """Bin and merge every feed's queued rows; closes the windows that are due."""
    for feed in drift.feeds():
        started = time.perf_counter()
        try:
            await feed.flush(now=time.monotonic(), epoch=time.time())
            metrics.drift_flushes.labels("ok").inc()
        except CountSinkError as exc:  # rows are dropped and counted by the feed; serving goes on
            metrics.drift_flushes.labels("error").inc()
            log.warning("drift flush for %s failed: %s", feed.key, exc)
        metrics.drift_flush_seconds.observe(time.perf_counter() - started)


async def flush_drift(drift: DriftRegistry, metrics: GatewayMetrics, interval_s: float) -> None:
    """Off the request path: the request path only queues arrays on the feeds."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            await flush_once(drift, metrics)
        except Exception:  # a bug in one flush must not end drift tracking
            log.exception("drift flush failed")


async def freeze_when_ready(ready: asyncio.Event) -> None:
    """Once the models are loaded, move every object alive to the collector's permanent generation.
    Startup leaves ~94k tracked objects (imports, sessions, registry state) that a full collection
    would traverse each time, a pause measured at 47 ms on the demo; after the freeze ~2.5k remain
    in the collected generations. Long-lived state created later is still collected normally."""
    await ready.wait()
    gc.collect()
    gc.freeze()


async def sample_inflight(service: InferenceService, metrics: GatewayMetrics, interval_s: float = 0.25) -> None:
    """With worker processes, each worker writes its in-flight count to its metrics file."""
    while True:
        metrics.inflight.set(service.inflight)
        await asyncio.sleep(interval_s)


def create_app(config: Config) -> Starlette:
    endpoints = Endpoints(config)
    slot = InferenceSlot()
    admin = Admin()
    keyring = Keyring(config.admin_token)
    auditor = WriteAuditor()  # its store is set once the lifespan opens the registry
    metrics = GatewayMetrics()
    board = StatsBoard()  # per-arm counts of the versions a rollout watches
    metrics.taps = board
    # Opening these does no I/O; the lifespan closes them.
    online = open_online_store(config.redis_url, StoreOptions(read_timeout_s=config.feature_timeout_ms / 1000))
    catalog = LiveCatalog()
    drift = DriftRegistry()
    metrics.registry.register(DriftCollector(drift))
    sink = open_count_sink(config.redis_url)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        store = await asyncio.to_thread(RegistryStore, config.database_url)
        auditor.store = store
        await asyncio.to_thread(keyring.reload, store)  # tokens are valid from the first request
        executor = ThreadPoolExecutor(max_workers=config.inference_threads, thread_name_prefix="inference")
        artifacts = ArtifactStore(config.artifacts_dir)
        pool = ModelPool(artifacts, config, executor, metrics)
        dataplane = DataPlane(store, pool, metrics)
        follower = RegistryFollower(
            store, dataplane, config.poll_interval_s,
            drift=drift, sink=sink, window=WindowPolicy(rows=config.drift_window_requests), keyring=keyring,
        )
        catalog.source = lambda: follower.views
        shadows = ShadowQueue(config.shadow_queue_size, config.shadow_workers, timeout=None)
        http = httpx.AsyncClient(timeout=config.shadow_timeout_s)
        endpoints.attach(dataplane, follower)
        mirror = Mirror(shadows, metrics, http, config.shadow_timeout_s, board)
        slot.serve = service = InferenceService(
            dataplane, mirror, follower.ready.is_set, config.max_body_bytes, config.request_timeout_s, online,
            keyring=keyring if config.require_api_key else None,
            max_in_flight=config.max_in_flight, refused=metrics.inflight_rejections,
        )
        background: list[asyncio.Task[None]] = []
        if not metrics.track_inflight(lambda: service.inflight):
            background.append(asyncio.create_task(sample_inflight(service, metrics), name="inflight-sampler"))
        admin.attach(store, dataplane, follower)
        driver = RolloutDriver(store, follower, board, metrics, drift, config.poll_interval_s)
        admin.rollouts = driver
        # The MLflow-compatible API needs the open store; the router reads its route list per request.
        app.router.routes.extend(create_mlflow_routes(store, artifacts, max_artifact_bytes=config.max_artifact_bytes))
        def start_draining() -> None:
            endpoints.draining = True
            log.info("draining: /v2/health/ready now answers 503; finishing in-flight requests")

        _install_drain_hook(start_draining)
        shadows.start()
        if config.demo:  # the in-memory store starts empty in every process; Redis rows are just rewritten
            try:
                await seed_demo_features(online)
            except FeatureStoreError as exc:
                log.warning("demo feature rows not written: %s", exc)
        follow = asyncio.create_task(follower.run(), name="registry-follower")
        background.append(asyncio.create_task(freeze_when_ready(follower.ready), name="gc-freeze"))
        flush = asyncio.create_task(flush_drift(drift, metrics, config.drift_flush_interval_s), name="drift-flush")
        drive = asyncio.create_task(driver.run(), name="rollout-driver")
        try:
            yield
        finally:
            endpoints.draining = True
            for task in (follow, flush, drive, *background):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await driver.close()  # hand its leases back: another replica resumes at once
            await flush_once(drift, metrics)  # count what was served before the drain
            await online.close()
            await sink.close()
            await shadows.close()
            await http.aclose()
            executor.shutdown(wait=True)
            await asyncio.to_thread(store.close)

    e = endpoints
    routes = [
        Route("/v2", e.server_metadata, methods=["GET"]),
        Route("/v2/health/live", e.liveness, methods=["GET"]),
        Route("/v2/health/ready", e.readiness, methods=["GET"]),
        Route("/v2/models/{name}", e.model_metadata, methods=["GET"]),
        Route("/v2/models/{name}/ready", e.model_ready, methods=["GET"]),
        Route("/v2/models/{name}/versions/{version}", e.model_metadata, methods=["GET"]),
        Route("/v2/models/{name}/versions/{version}/ready", e.model_ready, methods=["GET"]),
        Route("/v1/models", e.v1_models, methods=["GET"]),
        Route("/v1/models/{name}", e.v1_model, methods=["GET"]),
        Route("/health", e.health_details, methods=["GET"]),
        Route("/openapi.json", openapi_json, methods=["GET"]),
        Route("/metrics", MetricsEndpoint(metrics.registry).exposition, methods=["GET"]),
        Route("/monitoring/drift", DriftEndpoint(drift).drift, methods=["GET"]),
        *feature_routes(FeatureAPI(online, catalog)),
        Route("/admin/routes", admin.list_routes, methods=["GET"]),
        Route("/admin/routes/{name}", admin.get_route, methods=["GET"]),
        Route("/admin/routes/{name}", admin.put_route, methods=["PUT"]),
        Route("/admin/routes/{name}", admin.delete_route, methods=["DELETE"]),
        Route("/admin/audit", admin.audit, methods=["GET"]),
        Route("/admin/rollouts", admin.list_rollouts, methods=["GET"]),
        Route("/admin/rollouts/{name}", admin.get_rollout, methods=["GET"]),
        Route("/admin/rollouts/{name}", admin.put_rollout, methods=["PUT"]),
        Route("/admin/rollouts/{name}", admin.delete_rollout, methods=["DELETE"]),
        Route("/admin/lineage/{model}/{version}", admin.lineage, methods=["GET"]),
        Route("/admin/features/views", admin.list_feature_views, methods=["GET"]),
        Route("/admin/features/views/{name}", admin.put_feature_view, methods=["PUT"]),
    ]
    return GatewayApp(
        slot,
        lambda app: AccessGuard(app, keyring, enabled=config.access_control, require_api_key=config.require_api_key,
                                auditor=auditor),
        routes=routes,
        lifespan=lifespan,
        exception_handlers={
            GatewayError: _error, RegistryError: _error, FeatureStoreError: _error, HTTPException: _error, Exception: _error,
        },
    )


class GatewayApp(Starlette):
    """Starlette, with inference paths answered before its middleware stack: the hot path pays for
    no error middleware, router or Request object (gateway/inference.py renders its own errors)."""

    def __init__(self, slot: InferenceSlot, guard: Callable[[ASGIApp], ASGIApp], **kwargs: Any) -> None:
        """`guard` wraps Starlette in the access check; inference does its own (API keys)."""
        super().__init__(**kwargs)
        self.slot = slot
        self.guarded = guard(super().__call__)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":  # inference paths: the lean service
            serve = self.slot.serve
            target = match_inference_path(scope["path"])
            if target is not None and serve is not None:
                await serve(target, scope, receive, send)
                return
        await self.guarded(scope, receive, send)


def create_app_from_env() -> Starlette:
    """Factory for `serve --workers N`: each worker process rebuilds the app from GATEWAY_CONFIG_JSON."""
    return create_app(Config.from_env())
