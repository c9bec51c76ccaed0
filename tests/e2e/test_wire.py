"""Inference responses on the wire (gateway/respond.py writes head and body at once): keep-alive,
pipelining, HTTP/1.0 with connection close, and the same head an ASGI response would have."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import orjson
import pytest

from tests.e2e.conftest import GatewayProcess

BODY = orjson.dumps({"instances": [[0.25] * 32]})


def request(gw: GatewayProcess, version: str = "1.1", extra: str = "") -> bytes:
    return (
        f"POST /v1/models/churn:predict HTTP/{version}\r\nHost: {gw.hostport}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(BODY)}\r\n{extra}\r\n"
    ).encode() + BODY


def responses(sock: socket.socket) -> Iterator[tuple[bytes, dict[bytes, bytes], bytes]]:
    """Parse responses off the socket as they come: (status line, headers, body)."""
    buffer = b""
    while True:
        while b"\r\n\r\n" not in buffer:
            chunk = sock.recv(65536)
            if not chunk:
                return
            buffer += chunk
        head, _, buffer = buffer.partition(b"\r\n\r\n")
        status, *lines = head.split(b"\r\n")
        headers = {name.lower(): value for name, _, value in (line.partition(b": ") for line in lines)}
        length = int(headers[b"content-length"])
        while len(buffer) < length:
            chunk = sock.recv(65536)
            assert chunk, "connection closed inside a body"
            buffer += chunk
        yield status, headers, buffer[:length]
        buffer = buffer[length:]


@pytest.fixture
def sock(demo_gateway: GatewayProcess) -> Iterator[socket.socket]:
    with socket.create_connection(("127.0.0.1", demo_gateway.port), timeout=10) as s:
        yield s


def test_keep_alive_and_pipelining(demo_gateway: GatewayProcess, sock: socket.socket) -> None:
    """Three requests in one write, then a fourth after their answers: four complete responses in
    order on one connection, each with the head uvicorn's own send would write."""
    sock.sendall(request(demo_gateway) * 3)
    answers = responses(sock)
    for _ in range(3):
        status, headers, body = next(answers)
        assert status == b"HTTP/1.1 200 OK"
        assert headers[b"content-type"] == b"application/json"
        assert b"date" in headers and b"x-gateway-model-version" in headers
        assert b"transfer-encoding" not in headers and b"connection" not in headers
        assert len(orjson.loads(body)["predictions"]) == 1
    sock.sendall(request(demo_gateway))
    status, _, body = next(answers)
    assert status == b"HTTP/1.1 200 OK" and orjson.loads(body)["predictions"]


def test_http_1_0_gets_connection_close(demo_gateway: GatewayProcess, sock: socket.socket) -> None:
    sock.sendall(request(demo_gateway, "1.0"))
    answers = responses(sock)
    status, headers, body = next(answers)
    assert status.startswith(b"HTTP/1.1 200")
    assert headers[b"connection"] == b"close"
    assert orjson.loads(body)["predictions"]
    assert next(answers, None) is None  # and the server closed the connection


def test_errors_take_the_same_path(demo_gateway: GatewayProcess, sock: socket.socket) -> None:
    """A refused request and a good one, pipelined: 400 with its JSON error, then 200."""
    bad = (f"POST /v1/models/churn:predict HTTP/1.1\r\nHost: {demo_gateway.hostport}\r\n"
           f"Content-Length: 1\r\n\r\n{{").encode()
    sock.sendall(bad + request(demo_gateway))
    answers = responses(sock)
    status, headers, body = next(answers)
    assert headers[b"content-type"] == b"application/json"
    assert status == b"HTTP/1.1 400 Bad Request" and "error" in orjson.loads(body)
    status, _, _ = next(answers)
    assert status == b"HTTP/1.1 200 OK"
