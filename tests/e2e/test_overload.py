"""A full model queue sheds load at once with 503 + Retry-After; batches are explained in metrics."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import httpx
import numpy as np
import orjson

from gateway.demo import build_mlp
from tests.e2e.conftest import GatewayProcess, run_cli, start_gateway


def test_full_queue_answers_503_with_retry_after(tmp_path: Path) -> None:
    """With a tiny queue and a heavy model on the executor, excess requests get 503 + Retry-After at
    once, the rest succeed, and /metrics counts rejections and batch release reasons."""
    data = tmp_path / "gw"
    heavy = tmp_path / "heavy.onnx"
    heavy.write_bytes(build_mlp(9, hidden=(1024, 1024)))
    run_cli(data, "models", "register", "heavy", str(heavy))
    gw = start_gateway(data, "--inline-threshold-us", "0", "--max-queue-rows", "64", "--max-batch-size", "64")
    body = {"instances": np.full((64, 32), 0.1).tolist()}

    async def fire() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=gw.url, timeout=60) as client:
            return await asyncio.gather(*(client.post("/v1/models/heavy:predict", json=body) for _ in range(48)))

    try:
        responses = asyncio.run(fire())
        codes = [r.status_code for r in responses]
        assert set(codes) <= {200, 503}, codes
        refused = [r for r in responses if r.status_code == 503]
        assert refused, "48 concurrent 64-row requests must overflow a 64-row queue"
        assert codes.count(200) >= 1
        assert all(r.headers["retry-after"] == "1" and "overloaded" in r.json()["error"] for r in refused)
        metrics = httpx.get(f"{gw.url}/metrics").text
        assert f'gateway_queue_rejections_total{{model="heavy",version="1"}} {len(refused)}.0' in metrics
        assert 'gateway_batches_total{model="heavy",reason="idle",version="1"}' in metrics
        assert 'gateway_batch_wait_seconds_count{model="heavy",version="1"}' in metrics
        ok = httpx.post(f"{gw.url}/v1/models/heavy:predict", json={"instances": [[0.1] * 32]})
        assert ok.status_code == 200, "after the burst the model serves again"
    finally:
        gw.stop()


def test_deadline_gives_504_and_bad_timeout_400(demo_gateway: GatewayProcess) -> None:
    """A v2 request whose `timeout` parameter (µs) is too short gets 504; a malformed one 400."""
    features = {"name": "features", "shape": [1, 32], "datatype": "FP32", "data": [0.1] * 32}
    url = f"{demo_gateway.url}/v2/models/churn/infer"
    r = httpx.post(url, json={"inputs": [features], "parameters": {"timeout": 1}})
    assert r.status_code == 504, r.text
    assert "deadline" in r.json()["error"]
    r = httpx.post(url, json={"inputs": [features], "parameters": {"timeout": "soon"}})
    assert r.status_code == 400
    r = httpx.post(url, json={"inputs": [features], "parameters": {"timeout": 10_000_000}})
    assert r.status_code == 200


def test_in_flight_bound_refuses_before_reading_the_body(tmp_path: Path) -> None:
    """With --max-in-flight 2 and two requests stalled mid-body, further inference requests get 503 with
    Retry-After at once; once the two finish, requests are admitted again; /metrics counts each refusal."""
    gw = start_gateway(tmp_path / "gw", "--demo", "--max-in-flight", "2")
    body = orjson.dumps({"instances": [[0.1] * 32]})
    head = (b"POST /v1/models/churn:predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body))
    stalled = [socket.create_connection(("127.0.0.1", gw.port), timeout=30) for _ in range(2)]
    try:
        for sock in stalled:
            sock.sendall(head + body[:10])  # the rest of the body comes later: in flight until then
        with httpx.Client(base_url=gw.url, timeout=30) as client:
            refused = []
            for _ in range(200):  # until the server has taken in both stalled requests
                r = client.post("/v1/models/churn:predict", content=body, headers={"content-type": "application/json"})
                assert r.status_code in (200, 503), r.text
                if r.status_code == 503:
                    refused.append(r)
                    break
            assert refused, "two requests stalled mid-body must fill a bound of two"
            assert refused[0].headers["retry-after"] == "1"
            assert "2 inference requests already in flight" in refused[0].json()["error"]
            for sock in stalled:
                sock.sendall(body[10:])
                assert sock.recv(65536).startswith(b"HTTP/1.1 200 "), "the stalled requests finish normally"
            assert client.post("/v1/models/churn:predict", content=body).status_code == 200
            assert "gateway_inflight_rejections_total 1.0" in client.get("/metrics").text
    finally:
        for sock in stalled:
            sock.close()
        gw.stop()
