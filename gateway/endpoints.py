"""HTTP handlers for health and metadata of KServe v1 and the Open Inference Protocol v2.

Bound methods of one Endpoints object built at startup; every error is raised as a GatewayError
(or RegistryError) and rendered by the single table in gateway/errors.py. Inference itself is served
by the lean ASGI layer in gateway/inference.py.
"""

from __future__ import annotations

import asyncio
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version

import orjson
from starlette.requests import Request
from starlette.responses import Response

from gateway.config import Config
from gateway.dataplane import Arm, DataPlane
from gateway.errors import Unavailable
from gateway.sync import RegistryFollower

JSON = "application/json"
BINARY = "application/octet-stream"
HEADER_LENGTH = "inference-header-content-length"
PLATFORM = "onnxruntime_onnx"

try:
    SERVER_VERSION = package_version("gateway")
except PackageNotFoundError:  # running from a source tree that was not installed
    SERVER_VERSION = "0"

_LIVE = orjson.dumps({"live": True})
_READY = orjson.dumps({"ready": True})
_NOT_READY = orjson.dumps({"ready": False})


def _json(body: object, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type=JSON)


class Endpoints:
    """Built with the route list; `attach` hands it the serving objects once the lifespan opened them.

    Readiness: true once the first registry sync has warmed every routed version, false from the
    moment draining starts.
    """

    dataplane: DataPlane
    follower: RegistryFollower
    loaded: asyncio.Event

    def __init__(self, config: Config) -> None:
        self.max_body = config.max_body_bytes
        self.draining = False

    def attach(self, dataplane: DataPlane, follower: RegistryFollower) -> None:
        self.dataplane = dataplane
        self.follower = follower
        self.loaded = follower.ready
        self.draining = False

    @property
    def is_ready(self) -> bool:
        return self.loaded.is_set() and not self.draining

    async def _arm(self, request: Request) -> Arm:
        """The arm a metadata or readiness call describes: the version addressed, else the route's first arm."""
        if not self.loaded.is_set():
            raise Unavailable("the gateway is still loading its models")
        name: str = request.path_params["name"]
        version: str | None = request.path_params.get("version")
        if version is not None:
            return await self.dataplane.version(name, version)
        return self.dataplane.route(name).arms[0]

    # --- health -------------------------------------------------------------------------------

    async def liveness(self, request: Request) -> Response:
        return Response(_LIVE, media_type=JSON)

    async def readiness(self, request: Request) -> Response:
        if self.is_ready:
            return Response(_READY, media_type=JSON)
        return Response(_NOT_READY, status_code=503, media_type=JSON)

    async def health_details(self, request: Request) -> Response:
        """Everything an operator asks first: ready or not, what each route serves, what failed."""
        snapshot = self.dataplane.snapshot
        failures = {f"{name}/{version}": reason for (name, version), reason in self.dataplane.pool.failures.items()}
        return _json(
            {
                "ready": self.is_ready,
                "draining": self.draining,
                "registry_error": self.follower.last_error,
                "routes": {
                    name: {
                        "model": route.policy.model,
                        "version": route.arms[0].model.version_str,  # the first arm's, for a quick look
                        "arms": [
                            {"arm": a.label, "version": a.model.version_str, "inline": a.model.inline,
                             "warmup_us": round(a.model.warmup_us, 1)}
                            for a in route.arms
                        ],
                        "shadows": [s.label for s in route.shadows],
                    }
                    for name, route in snapshot.routes.items()
                },
                "unavailable": dict(snapshot.unavailable),
                "load_failures": failures,
            },
            200 if self.is_ready else 503,
        )

    # --- Open Inference Protocol v2 -----------------------------------------------------------

    async def server_metadata(self, request: Request) -> Response:
        return _json({"name": "gateway", "version": SERVER_VERSION, "extensions": ["binary_tensor_data"]})

    async def model_metadata(self, request: Request) -> Response:
        model = (await self._arm(request)).model
        versions = await asyncio.to_thread(self.dataplane.store.list_model_versions, model.name)
        sig = model.signature
        return _json(
            {
                "name": request.path_params["name"],
                "versions": [str(mv.version) for mv in versions],
                "platform": PLATFORM,
                "inputs": [t.to_dict() for t in sig.inputs],
                "outputs": [t.to_dict() for t in sig.outputs],
            },
        )

    async def model_ready(self, request: Request) -> Response:
        await self._arm(request)
        return _json({"name": request.path_params["name"], "ready": True})

    # --- KServe v1 ------------------------------------------------------------------------------

    async def v1_models(self, request: Request) -> Response:
        return _json({"models": sorted(self.dataplane.snapshot.routes)})

    async def v1_model(self, request: Request) -> Response:
        await self._arm(request)
        return _json({"name": request.path_params["name"], "ready": True})
