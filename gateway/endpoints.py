"""HTTP handlers for KServe v1, Open Inference Protocol v2 and health: bytes -> codec -> dataplane -> Response.

Bound methods of one Endpoints object built at startup; every error is raised as a GatewayError
(or RegistryError) and rendered by the single table in gateway/errors.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from time import perf_counter
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from gateway.config import Config
from gateway.dataplane import Arm, DataPlane, Route, sticky_key_of, without_input
from gateway.errors import InvalidInput, PayloadTooLarge, Unavailable
from gateway.mirror import Mirror
from gateway.protocol import v1, v2
from gateway.sync import RegistryFollower

JSON = "application/json"
BINARY = "application/octet-stream"
HEADER_LENGTH = "inference-header-content-length"
PLATFORM = "onnxruntime_onnx"
STICKY_HEADER = "x-gateway-key"
KeySource = Callable[[str | None], bytes | None]

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
    mirror: Mirror
    loaded: asyncio.Event

    def __init__(self, config: Config) -> None:
        self.max_body = config.max_body_bytes
        self.draining = False

    def attach(self, dataplane: DataPlane, follower: RegistryFollower, mirror: Mirror) -> None:
        self.dataplane = dataplane
        self.follower = follower
        self.mirror = mirror
        self.loaded = follower.ready
        self.draining = False

    @property
    def is_ready(self) -> bool:
        return self.loaded.is_set() and not self.draining

    async def _body(self, request: Request) -> bytes:
        """The request body, inflated if compressed; 413 past the limit without reading it all."""
        length = request.headers.get("content-length")
        if length is not None:
            if not (length.isascii() and length.isdigit()):
                raise InvalidInput(f"invalid Content-Length header: {length!r}")
            if int(length) > self.max_body:
                raise PayloadTooLarge(f"request body of {length} bytes exceeds the limit of {self.max_body} bytes")
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self.max_body:
                raise PayloadTooLarge(f"request body exceeds the limit of {self.max_body} bytes")
            chunks.append(chunk)
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        encoding = request.headers.get("content-encoding")
        if encoding is not None:
            body = v2.decode_content(body, encoding, self.max_body)
        return body

    async def _arm(self, request: Request, key_of: KeySource | None = None) -> tuple[Arm, Route | None]:
        """The arm that serves this request, and its route (None when a version is addressed directly).
        `key_of` supplies the sticky key from the body when the route splits by key."""
        name: str = request.path_params["name"]
        if not self.loaded.is_set():
            raise Unavailable("the gateway is still loading its models")
        version: str | None = request.path_params.get("version")
        if version is not None:
            return await self.dataplane.version(name, version), None
        route = self.dataplane.route(name)
        if len(route.arms) == 1:
            return route.arms[0], route
        key: bytes | None = None
        if route.split == "sticky":
            header = request.headers.get(STICKY_HEADER)
            key = header.encode() if header is not None else key_of(route.sticky_key) if key_of else None
        return self.dataplane.pick(route, key), route

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
        model = (await self._arm(request))[0].model
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

    async def infer(self, request: Request) -> Response:
        started = perf_counter()
        body = await self._body(request)
        header_length = v2.parse_header_length(request.headers.get(HEADER_LENGTH))
        infer_request = v2.decode_infer_request(body, header_length)
        inputs = infer_request.inputs

        def key_of(field: str | None) -> bytes | None:
            if field is None:
                return None
            if field in infer_request.parameters:
                return sticky_key_of(infer_request.parameters[field])
            if field in inputs:
                return sticky_key_of(inputs[field])
            return None

        arm, route = await self._arm(request, key_of)
        model = arm.model
        if route is not None and route.sticky_key in inputs and route.sticky_key not in model.validator.names:
            inputs = without_input(inputs, route.sticky_key)  # an entity field for routing, not a model input
        outputs = await model.infer(inputs)
        names, binary = v2.select_outputs(infer_request, model.output_names)
        by_name = dict(outputs)
        content, json_length = v2.encode_infer_response(
            request.path_params["name"], model.version_str, infer_request.id, [(n, by_name[n]) for n in names], binary
        )
        if route is not None and route.shadows:
            self._mirror(route, inputs, outputs)
        arm.v2.observe(perf_counter() - started)
        if json_length is None:
            return Response(content, media_type=JSON, headers=arm.headers)
        return Response(content, media_type=BINARY, headers={**arm.headers, HEADER_LENGTH: str(json_length)})

    def _mirror(self, route: Route, inputs: Mapping[str, Any], outputs: list[tuple[str, Any]]) -> None:
        targets = self.dataplane.shadows_for(route)
        if targets:
            self.mirror.offer(route.name, targets, inputs, outputs)

    # --- KServe v1 ------------------------------------------------------------------------------

    async def v1_models(self, request: Request) -> Response:
        return _json({"models": sorted(self.dataplane.snapshot.routes)})

    async def v1_model(self, request: Request) -> Response:
        await self._arm(request)
        return _json({"name": request.path_params["name"], "ready": True})

    async def v1_predict(self, request: Request) -> Response:
        started = perf_counter()
        body = await self._body(request)
        arm, route = await self._arm(request)
        inputs = v1.decode_predict(body, arm.model.signature.inputs)
        outputs = await arm.model.infer(inputs)
        content = v1.encode_predict(outputs)
        if route is not None and route.shadows:
            self._mirror(route, inputs, outputs)
        arm.v1.observe(perf_counter() - started)
        return Response(content, media_type=JSON, headers=arm.headers)
