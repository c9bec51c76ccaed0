"""One socket write per inference response, on uvicorn's httptools protocol.

Through ASGI a response is two messages, and uvicorn writes each to the socket as it comes: a write
system call for the head and another for the body, plus two regular-expression checks per header.
On this path the head and body are ready together and every header is the gateway's own (constants,
integers, and registry names checked once per arm in gateway/dataplane.py), so `write_whole` joins
them into one write and completes the cycle exactly as uvicorn's `send` would: the response flags,
the message event that ends `receive`, `connection: close` and closing when keep-alive is off, and
`on_response`, which re-arms keep-alive and starts the next pipelined request.

It takes the cycle from `receive.__self__` (the bound method uvicorn hands the app) and answers False,
so that the caller sends the usual ASGI messages, for anything it does not recognise: another server,
a cycle whose response already started, a disconnected client, or a paused transport that must drain.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, RequestResponseCycle


def write_whole(receive: Callable[..., Any], status: int, headers: Sequence[tuple[bytes, bytes]], body: bytes) -> bool:
    """Write status line, headers (lower-case names, safe values, content-length included) and body
    at once; False when the caller must send through ASGI instead."""
    cycle = getattr(receive, "__self__", None)
    if type(cycle) is not RequestResponseCycle or cycle.response_started or cycle.disconnected or cycle.flow.write_paused:
        return False
    cycle.response_started = True
    cycle.waiting_for_100_continue = False
    parts = [STATUS_LINE[status]]
    for name, value in cycle.default_headers:
        parts += (name, b": ", value, b"\r\n")
    for name, value in headers:
        parts += (name, b": ", value, b"\r\n")
    keep_alive = cycle.keep_alive
    if not keep_alive:
        parts.append(b"connection: close\r\n")
    parts += (b"\r\n", body)
    cycle.transport.write(b"".join(parts))
    cycle.response_complete = True
    cycle.message_event.set()
    if not keep_alive:
        cycle.transport.close()
    cycle.on_response()
    return True
