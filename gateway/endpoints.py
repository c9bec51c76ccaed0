"""HTTP handlers for KServe v1, Open Inference Protocol v2 and health: bytes -> codec -> dataplane -> Response.

Bound methods of one Endpoints object built at startup; every error is raised as a GatewayError
(or RegistryError) and rendered by the single table in gateway/errors.py.
"""

from __future__ import annotations

import asyncio
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version

import orjson
from starlette.requests import Request
from starlette.responses import Response

from gateway.config import Config
from gateway.dataplane import DataPlane
from gateway.errors import InvalidInput, PayloadTooLarge, Unavailable
from gateway.models import LoadedModel
from gateway.protocol import v1, v2
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

    async def _model(self, request: Request) -> LoadedModel:
        name: str = request.path_params["name"]
        version: str | None = request.path_params.get("version")
        if not self.loaded.is_set():
            raise Unavailable("the gateway is still loading its models")
        if version is None:
            return self.dataplane.route(name)
        return await self.dataplane.version(name, version)

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
                    name: {"version": m.version_str, "inline": m.inline, "warmup_us": round(m.warmup_us, 1)}
                    for name, m in snapshot.serving.items()
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
        model = await self._model(request)
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
        await self._model(request)
        return _json({"name": request.path_params["name"], "ready": True})

    async def infer(self, request: Request) -> Response:
        body = await self._body(request)
        header_length = v2.parse_header_length(request.headers.get(HEADER_LENGTH))
        infer_request = v2.decode_infer_request(body, header_length)
        model = await self._model(request)
        outputs = await model.infer(infer_request.inputs)
        names, binary = v2.select_outputs(infer_request, model.output_names)
        by_name = dict(outputs)
        content, json_length = v2.encode_infer_response(
            request.path_params["name"],
            model.version_str,
            infer_request.id,
            [(n, by_name[n]) for n in names],
            binary,
        )
        if json_length is None:
            return Response(content, media_type=JSON, headers=model.headers)
        headers = {**model.headers, HEADER_LENGTH: str(json_length)}
        return Response(content, media_type=BINARY, headers=headers)

    # --- KServe v1 ------------------------------------------------------------------------------

    async def v1_models(self, request: Request) -> Response:
        return _json({"models": sorted(self.dataplane.snapshot.serving)})

    async def v1_model(self, request: Request) -> Response:
        await self._model(request)
        return _json({"name": request.path_params["name"], "ready": True})

    async def v1_predict(self, request: Request) -> Response:
        body = await self._body(request)
        model = await self._model(request)
        inputs = v1.decode_predict(body, model.signature.inputs)
        outputs = await model.infer(inputs)
        return Response(v1.encode_predict(outputs), media_type=JSON, headers=model.headers)
