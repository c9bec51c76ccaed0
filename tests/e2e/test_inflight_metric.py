"""gateway_inflight_requests: requests received and not yet answered, in one process and summed over
workers. Requests are held in flight deterministically by sending their head and only part of the
body: the gateway has accepted them and waits for the rest."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import orjson
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import GatewayProcess, start_gateway
from tests.e2e.test_metrics_workers import wait_all_workers_ready

HELD = 5
BODY = orjson.dumps({"instances": [[0.5] * 32]})


def inflight(gw: GatewayProcess) -> float:
    with httpx.Client(base_url=gw.url, timeout=10) as client:
        text = client.get("/metrics").text
    (value,) = [
        s.value for f in text_string_to_metric_families(text) for s in f.samples if s.name == "gateway_inflight_requests"
    ]
    return value


def wait_for_inflight(gw: GatewayProcess, expected: float, timeout_s: float = 10.0) -> float:
    """The scraped value once it equals `expected` (workers sample theirs every 0.25 s), else the last one."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = inflight(gw)
        if value == expected or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


@contextmanager
def held_requests(gw: GatewayProcess, count: int) -> Iterator[list[socket.socket]]:
    """`count` predict requests whose body is half sent; on exit each gets the rest and must answer 200."""
    with ExitStack() as stack:
        socks = []
        for _ in range(count):
            sock = stack.enter_context(socket.create_connection(("127.0.0.1", gw.port), timeout=10))
            head = (
                f"POST /v1/models/churn:predict HTTP/1.1\r\nHost: {gw.hostport}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(BODY)}\r\n\r\n"
            ).encode()
            sock.sendall(head + BODY[:10])
            socks.append(sock)
        yield socks
        for sock in socks:
            sock.sendall(BODY[10:])
            answer = sock.recv(65536)
            assert answer.startswith(b"HTTP/1.1 200"), answer[:200]


def test_inflight_counts_requests_being_served(tmp_path: Path) -> None:
    gw = start_gateway(tmp_path / "gw", "--demo")
    try:
        assert inflight(gw) == 0
        with held_requests(gw, HELD):
            assert wait_for_inflight(gw, HELD) == HELD
        assert wait_for_inflight(gw, 0) == 0
        # an error answer leaves the count too
        assert httpx.post(f"{gw.url}/v1/models/churn:predict", content=b"{", timeout=10).status_code == 400
        assert inflight(gw) == 0
    finally:
        assert gw.stop() == 0, gw.output()


def test_inflight_sums_over_workers(tmp_path: Path) -> None:
    gw = start_gateway(tmp_path / "gw", "--demo", "--workers", "2")
    try:
        wait_all_workers_ready(gw.url)
        with held_requests(gw, HELD):
            assert wait_for_inflight(gw, HELD) == HELD
        assert wait_for_inflight(gw, 0) == 0
    finally:
        assert gw.stop() == 0, gw.output()
