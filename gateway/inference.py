"""The inference path as a lean ASGI layer in front of Starlette: POST /v1/models/{name}:predict and
POST /v2/models/{name}[/versions/{v}]/infer are served here; every other request goes on to Starlette.

Inference is the only hot path, and it pays for no generic routing, Request or Response objects:
the path is split by hand, the headers it needs are read in one pass, and the response goes out
as two ASGI messages with header tuples pre-built per arm (gateway/dataplane.py).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from time import monotonic, perf_counter
from typing import Any

from prometheus_client import Counter

from featurestore.errors import FeatureStoreError
from featurestore.online import OnlineStore
from gateway.access import CHALLENGE, Keyring
from gateway.dataplane import Arm, DataPlane, Route, sticky_key_of, without_input
from gateway.errors import (
    GatewayError,
    InvalidInput,
    Overloaded,
    PayloadTooLarge,
    Unauthorized,
    Unavailable,
    render_error,
    status_for,
)
from gateway.features import assemble, instances_from_v1, instances_from_v2
from gateway.mirror import Mirror
from gateway.protocol import v1, v2
from gateway.respond import write_whole
from registry.errors import RegistryError

log = logging.getLogger("gateway.inference")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

JSON_HEADER = (b"content-type", b"application/json")
DEFAULTED_HEADER = b"x-gateway-features-defaulted"  # feature values served from view defaults
BINARY_HEADER = (b"content-type", b"application/octet-stream")
V1_PREFIX, V1_SUFFIX = "/v1/models/", ":predict"
V2_PREFIX, V2_SUFFIX = "/v2/models/", "/infer"


def match_inference_path(path: str) -> tuple[str, str, str | None] | None:
    """(protocol, name, version) for an inference path, else None. Pure."""
    if path.startswith(V2_PREFIX) and path.endswith(V2_SUFFIX):
        parts = path[len(V2_PREFIX) : -len(V2_SUFFIX)].split("/")
        if len(parts) == 1 and parts[0]:
            return "v2", parts[0], None
        if len(parts) == 3 and parts[1] == "versions" and parts[0] and parts[2]:
            return "v2", parts[0], parts[2]
        return None
    if path.startswith(V1_PREFIX) and path.endswith(V1_SUFFIX):
        name = path[len(V1_PREFIX) : -len(V1_SUFFIX)]
        return ("v1", name, None) if name and "/" not in name else None
    return None


class RequestHeaders:
    """The few request headers inference reads, picked out of the ASGI header list in one pass."""

    __slots__ = ("authorization", "content_encoding", "content_length", "header_length", "sticky_key")
    authorization: bytes | None  # set by KeyedRequestHeaders only

    def __init__(self, raw: list[tuple[bytes, bytes]]) -> None:
        self.content_length: bytes | None = None
        self.content_encoding: bytes | None = None
        self.header_length: bytes | None = None
        self.sticky_key: bytes | None = None
        for name, value in raw:
            if name == b"content-length":
                self.content_length = value
            elif name == b"inference-header-content-length":
                self.header_length = value
            elif name == b"content-encoding":
                self.content_encoding = value
            elif name == b"x-gateway-key":
                self.sticky_key = value


class ArmFailed(Exception):
    """An error raised after an arm was picked, carrying the arm so the error is counted against it."""

    def __init__(self, arm: Arm, error: Exception) -> None:
        self.arm = arm
        self.error = error


class KeyedRequestHeaders(RequestHeaders):
    """RequestHeaders plus Authorization, for --require-api-key; chosen once at startup, so a gateway
    without API keys does not even compare header names against it."""

    __slots__ = ()

    def __init__(self, raw: list[tuple[bytes, bytes]]) -> None:
        self.content_length: bytes | None = None
        self.content_encoding: bytes | None = None
        self.header_length: bytes | None = None
        self.sticky_key: bytes | None = None
        self.authorization: bytes | None = None
        for name, value in raw:
            if name == b"content-length":
                self.content_length = value
            elif name == b"authorization":
                self.authorization = value
            elif name == b"inference-header-content-length":
                self.header_length = value
            elif name == b"content-encoding":
                self.content_encoding = value
            elif name == b"x-gateway-key":
                self.sticky_key = value


class InferenceSlot:
    """Where the lifespan puts the InferenceService once the dataplane exists (Starlette builds its
    middleware lazily, so the layer cannot be handed the service directly)."""

    serve: Callable[[tuple[str, str, str | None], Scope, Receive, Send], Awaitable[None]] | None = None


class InferenceService:
    """Turns one inference request into one response; every error becomes {"error"} with its status."""

    def __init__(self, dataplane: DataPlane, mirror: Mirror, is_loaded: Callable[[], bool], max_body_bytes: int,
                 timeout_s: float, online: OnlineStore, *, keyring: Keyring | None = None,
                 max_in_flight: int = 0, refused: Counter | None = None) -> None:
        """With `keyring` (--require-api-key), each request needs a bearer token of any role. With
        `max_in_flight` > 0, a request arriving while that many are in flight is answered 503 with
        Retry-After before its body is read (and counted on `refused`): with --max-body-bytes this caps
        the memory bodies can hold, and it bounds requests waiting anywhere (body upload, online
        features), not only in a model's queue, which --max-queue-rows bounds."""
        self.dataplane = dataplane
        self.keyring = keyring
        self.headers: type[RequestHeaders] = RequestHeaders if keyring is None else KeyedRequestHeaders
        self.mirror = mirror
        self.online = online
        self.is_loaded = is_loaded
        self.max_body = max_body_bytes
        self.timeout_s = timeout_s
        self.inflight = 0  # requests received and not yet answered; exported as gateway_inflight_requests
        self.max_in_flight = max_in_flight or sys.maxsize
        self.refused = refused
        self._refusal = render_error(f"the gateway is overloaded: {max_in_flight} inference requests already in flight")
        self._refusal_headers = [JSON_HEADER, (b"retry-after", b"%d" % Overloaded.retry_after_s),
                                 (b"content-length", b"%d" % len(self._refusal))]

    async def __call__(self, target: tuple[str, str, str | None], scope: Scope, receive: Receive, send: Send) -> None:
        if self.inflight >= self.max_in_flight:
            await self._refuse(receive, send)
            return
        self.inflight += 1  # exported as gateway_inflight_requests
        try:
            protocol, name, version = target
            started = perf_counter()
            deadline = monotonic() + self.timeout_s
            headers = self.headers(scope["headers"])
            try:
                if self.keyring is not None:  # one sha256 and one dict lookup (gateway/access.py)
                    self.keyring.authenticate(headers.authorization, "reader")
                body = await self._body(headers, receive)
                if body is None:  # the client went away
                    return
                if protocol == "v2":
                    arm, status, out_headers, content = await self._v2(name, version, headers, body, deadline)
                else:
                    arm, status, out_headers, content = await self._v1(name, version, headers, body, deadline)
            except ArmFailed as failed:  # counted against the arm that was serving it
                status, out_headers, content = self._error(name, protocol, failed.error, failed.arm)
            except Exception as exc:
                status, out_headers, content = self._error(name, protocol, exc)
            else:
                (arm.v2 if protocol == "v2" else arm.v1).observe(perf_counter() - started)
            out_headers.append((b"content-length", b"%d" % len(content)))
            if not write_whole(receive, status, out_headers, content):
                await send({"type": "http.response.start", "status": status, "headers": out_headers})
                await send({"type": "http.response.body", "body": content})
        finally:
            self.inflight -= 1

    async def _refuse(self, receive: Receive, send: Send) -> None:
        if self.refused is not None:
            self.refused.inc()
        if not write_whole(receive, 503, self._refusal_headers, self._refusal):
            await send({"type": "http.response.start", "status": 503, "headers": self._refusal_headers})
            await send({"type": "http.response.body", "body": self._refusal})

    async def _body(self, headers: RequestHeaders, receive: Receive) -> bytes | None:
        """The body, inflated if compressed; 413 past the limit without reading it all."""
        if headers.content_length is not None:
            if not headers.content_length.isdigit():
                raise InvalidInput(f"invalid Content-Length header: {headers.content_length!r}")
            if int(headers.content_length) > self.max_body:
                raise PayloadTooLarge(
                    f"request body of {int(headers.content_length)} bytes exceeds the limit of {self.max_body} bytes"
                )
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        body: bytes = message.get("body", b"")
        if message.get("more_body", False):
            chunks, size = [body], len(body)
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return None
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > self.max_body:
                    raise PayloadTooLarge(f"request body exceeds the limit of {self.max_body} bytes")
                chunks.append(chunk)
                if not message.get("more_body", False):
                    break
            body = b"".join(chunks)
        elif len(body) > self.max_body:
            raise PayloadTooLarge(f"request body exceeds the limit of {self.max_body} bytes")
        if headers.content_encoding is not None:
            body = v2.decode_content(body, headers.content_encoding.decode("latin-1"), self.max_body)
        return body

    async def _arm(self, name: str, version: str | None, key: Callable[[str | None], bytes | None] | None,
                   sticky_header: bytes | None) -> tuple[Arm, Route | None]:
        if not self.is_loaded():
            raise Unavailable("the gateway is still loading its models")
        if version is not None:
            return await self.dataplane.version(name, version), None
        route = self.dataplane.route(name)
        if len(route.arms) == 1:
            return route.arms[0], route
        sticky: bytes | None = None
        if route.split == "sticky":
            sticky = sticky_header if sticky_header is not None else key(route.sticky_key) if key else None
        return self.dataplane.pick(route, sticky), route

    async def _v2(self, name: str, version: str | None, headers: RequestHeaders, body: bytes,
                  deadline: float) -> tuple[Arm, int, list[tuple[bytes, bytes]], bytes]:
        header_length = v2.parse_header_length(headers.header_length.decode("latin-1") if headers.header_length else None)
        request = v2.decode_infer_request(body, header_length)
        inputs = request.inputs
        timeout_us = request.parameters.get("timeout")
        if timeout_us is not None:  # Triton's per-request timeout, in microseconds
            if type(timeout_us) is not int or timeout_us <= 0:
                raise InvalidInput(f"parameters.timeout: expected a positive integer of microseconds, got {timeout_us!r}")
            deadline = min(deadline, monotonic() + timeout_us / 1e6)

        def key_of(field: str | None) -> bytes | None:
            if field is None:
                return None
            if field in request.parameters:
                return sticky_key_of(request.parameters[field])
            return sticky_key_of(inputs[field]) if field in inputs else None

        arm, route = await self._arm(name, version, key_of, headers.sticky_key)
        try:
            model = arm.model
            defaulted = -1
            if arm.features is not None:
                instances = instances_from_v2(request, arm.features.request_fields)
                inputs, defaulted = await assemble(arm.features, self.online, instances)
            elif route is not None and route.sticky_key in inputs and route.sticky_key not in model.validator.names:
                inputs = without_input(inputs, route.sticky_key)  # an entity field for routing, not a model input
            outputs = await model.infer(inputs, deadline, arm.tap)
            names, binary = v2.select_outputs(request, model.output_names)
            chosen = outputs if len(names) == len(outputs) and not request.outputs else [(n, dict(outputs)[n]) for n in names]
            content, json_length = v2.encode_infer_response(name, model.version_str, request.id, chosen, binary)
            if route is not None and route.shadows:
                self._mirror(route, arm, inputs, outputs)
            extra = [(DEFAULTED_HEADER, b"%d" % defaulted)] if defaulted >= 0 else []
            if json_length is None:
                return arm, 200, [JSON_HEADER, *arm.raw_headers, *extra], content
            length = (b"inference-header-content-length", b"%d" % json_length)
            return arm, 200, [BINARY_HEADER, length, *arm.raw_headers, *extra], content
        except Exception as exc:  # zero-cost on success; tells __call__ which arm failed
            raise ArmFailed(arm, exc) from None

    async def _v1(self, name: str, version: str | None, headers: RequestHeaders, body: bytes,
                  deadline: float) -> tuple[Arm, int, list[tuple[bytes, bytes]], bytes]:
        arm, route = await self._arm(name, version, None, headers.sticky_key)
        try:
            if arm.features is not None:
                inputs, defaulted = await assemble(arm.features, self.online, instances_from_v1(body))
                extra = [(DEFAULTED_HEADER, b"%d" % defaulted)]
            else:
                inputs, extra = arm.model.decode_v1(body), []
            outputs = await arm.model.infer(inputs, deadline, arm.tap)
            content = v1.encode_predict(outputs)
            if route is not None and route.shadows:
                self._mirror(route, arm, inputs, outputs)
            return arm, 200, [JSON_HEADER, *arm.raw_headers, *extra], content
        except Exception as exc:
            raise ArmFailed(arm, exc) from None

    def _mirror(self, route: Route, arm: Arm, inputs: Mapping[str, Any], outputs: list[tuple[str, Any]]) -> None:
        targets = self.dataplane.shadows_for(route, arm)
        if targets:
            self.mirror.offer(route.name, targets, inputs, outputs)

    def _error(self, name: str, protocol: str, exc: Exception,
               arm: Arm | None = None) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        headers = [JSON_HEADER]
        if isinstance(exc, GatewayError | RegistryError | FeatureStoreError):
            status = status_for(exc)
            message = exc.message
            if isinstance(exc, Overloaded):  # shed load at once; tell clients when to come back
                headers.append((b"retry-after", b"%d" % exc.retry_after_s))
            elif isinstance(exc, Unauthorized):
                headers.append(CHALLENGE)
        else:
            log.exception("unhandled error serving %s", name, exc_info=exc)
            status, message = 500, f"internal error: {type(exc).__name__}"
        # only known routes become label values: callers must not be able to grow the series count
        route = name if name in self.dataplane.snapshot.routes else "unknown"
        if arm is None:
            self.dataplane.metrics.count_error(route, "", "", protocol, str(status))
        else:
            self.dataplane.metrics.count_error(route, arm.label, arm.model.version_str, protocol, str(status))
            (arm.v2 if protocol == "v2" else arm.v1).failed()
        return status, headers, render_error(message)
