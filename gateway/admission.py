"""A bound on inference requests in flight in one process: past it a request is answered 503 with
Retry-After before its body is read. With --max-body-bytes this caps the memory that request bodies can
hold at max_in_flight x max_body_bytes, and it bounds requests waiting anywhere (body upload, online
features), not only those in a model's queue, which --max-queue-rows bounds.

Costs one comparison and two integer updates per request; not installed when the bound is 0.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from prometheus_client import Counter

from gateway.errors import Overloaded, render_error
from gateway.inference import Receive, Scope, Send

Target = tuple[str, str, str | None]  # (protocol, route, version) as gateway/inference.py matches it
Serve = Callable[[Target, Scope, Receive, Send], Awaitable[None]]


class InFlightLimit:
    """Wraps the inference service: at most `limit` requests inside it at once; the rest get 503 at once."""

    __slots__ = ("_body", "_headers", "_in_flight", "_limit", "_refused", "_serve")

    def __init__(self, serve: Serve, limit: int, refused: Counter) -> None:
        self._serve = serve
        self._limit = limit
        self._in_flight = 0
        self._refused = refused
        # Built once: the refusal is the same bytes every time.
        self._body = render_error(f"the gateway is overloaded: {limit} inference requests already in flight")
        self._headers = [(b"content-type", b"application/json"), (b"retry-after", b"%d" % Overloaded.retry_after_s),
                         (b"content-length", b"%d" % len(self._body))]

    @property
    def in_flight(self) -> int:
        return self._in_flight

    async def __call__(self, target: Target, scope: Scope, receive: Receive, send: Send) -> None:
        if self._in_flight >= self._limit:
            self._refused.inc()
            await send({"type": "http.response.start", "status": 503, "headers": self._headers})
            await send({"type": "http.response.body", "body": self._body})
            return
        self._in_flight += 1
        try:
            await self._serve(target, scope, receive, send)
        finally:
            self._in_flight -= 1
