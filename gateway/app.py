"""create_app(config) -> Starlette: the full route list in one place, and the lifespan that opens the
registry, loads the routed models, runs the registry follower, and marks draining on shutdown signals."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from types import FrameType

import httpx
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.admin import Admin
from gateway.config import Config
from gateway.dataplane import DataPlane
from gateway.endpoints import JSON, Endpoints
from gateway.errors import GatewayError, Overloaded, render_error, status_for
from gateway.inference import InferenceLayer, InferenceService, InferenceSlot
from gateway.mirror import Mirror
from gateway.models import ModelPool
from gateway.shadow import ShadowQueue
from gateway.sync import RegistryFollower
from monitoring.api import MetricsEndpoint
from monitoring.metrics import GatewayMetrics
from registry.artifacts import ArtifactStore
from registry.errors import RegistryError
from registry.store import RegistryStore

log = logging.getLogger("gateway")


async def _error(request: Request, exc: Exception) -> Response:
    if isinstance(exc, Overloaded):  # shed load at once; tell well-behaved clients when to come back
        headers = {"retry-after": str(exc.retry_after_s)}
        return Response(render_error(exc.message), status_code=503, media_type=JSON, headers=headers)
    if isinstance(exc, GatewayError | RegistryError):
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


def create_app(config: Config) -> Starlette:
    endpoints = Endpoints(config)
    slot = InferenceSlot()
    admin = Admin(config)
    metrics = GatewayMetrics()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        store = await asyncio.to_thread(RegistryStore, config.database_url)
        executor = ThreadPoolExecutor(max_workers=config.inference_threads, thread_name_prefix="inference")
        pool = ModelPool(ArtifactStore(config.artifacts_dir), config, executor, metrics)
        dataplane = DataPlane(store, pool, metrics)
        follower = RegistryFollower(store, dataplane, config.poll_interval_s)
        shadows = ShadowQueue(config.shadow_queue_size, config.shadow_workers, timeout=None)
        http = httpx.AsyncClient(timeout=config.shadow_timeout_s)
        endpoints.attach(dataplane, follower)
        mirror = Mirror(shadows, metrics, http, config.shadow_timeout_s)
        slot.serve = InferenceService(
            dataplane, mirror, follower.ready.is_set, config.max_body_bytes, config.request_timeout_s
        )
        admin.attach(store, dataplane, follower)
        _install_drain_hook(lambda: setattr(endpoints, "draining", True))
        shadows.start()
        follow = asyncio.create_task(follower.run(), name="registry-follower")
        try:
            yield
        finally:
            endpoints.draining = True
            follow.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await follow
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
        Route("/metrics", MetricsEndpoint(metrics.registry).exposition, methods=["GET"]),
        Route("/admin/routes", admin.list_routes, methods=["GET"]),
        Route("/admin/routes/{name}", admin.get_route, methods=["GET"]),
        Route("/admin/routes/{name}", admin.put_route, methods=["PUT"]),
        Route("/admin/routes/{name}", admin.delete_route, methods=["DELETE"]),
        Route("/admin/audit", admin.audit, methods=["GET"]),
    ]
    return Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={GatewayError: _error, RegistryError: _error, HTTPException: _error, Exception: _error},
        middleware=[Middleware(InferenceLayer, slot=slot)],
    )


def create_app_from_env() -> Starlette:
    """Factory for `serve --workers N`: each worker process rebuilds the app from GATEWAY_CONFIG_JSON."""
    return create_app(Config.from_env())
