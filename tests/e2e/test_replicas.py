"""Two gateway replicas on one PostgreSQL registry and one Redis: they converge on route and model
changes, and losing one leaves the other serving."""

from __future__ import annotations

import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import mlflow
import pytest
from mlflow import MlflowClient

from gateway.demo import build_mlp
from tests.conftest import RedisServer
from tests.e2e.conftest import GatewayProcess, start_gateway

ROW = {"instances": [[0.2] * 32]}


@pytest.fixture
def replicas(tmp_path: Path, fresh_postgres_url: str, redis_server: RedisServer) -> Iterator[tuple[GatewayProcess, GatewayProcess]]:
    """Replica A registers the demo models; B starts on the same registry. Artifacts live in one shared
    directory, as a ReadWriteMany volume would hold them."""
    env = {"GATEWAY_REGISTRY_URL": fresh_postgres_url, "GATEWAY_REDIS_URL": redis_server.url}
    shared = tmp_path / "shared"
    a = start_gateway(shared, "--demo", "--poll-interval", "0.2", **env)
    b = start_gateway(shared, "--poll-interval", "0.2", **env)
    yield a, b
    a.stop()
    b.stop()


def served_version(gw: GatewayProcess, route: str = "churn") -> str:
    r = httpx.post(f"{gw.url}/v1/models/{route}:predict", json=ROW, timeout=10)
    assert r.status_code == 200, r.text
    return r.headers["x-gateway-model-version"]


def wait_for(gw: GatewayProcess, version: str, started: float, limit: float = 2.0) -> float:
    while served_version(gw) != version:
        assert time.monotonic() - started < limit, f"{gw.url} did not converge within {limit} s"
        time.sleep(0.02)
    return time.monotonic() - started


def test_route_change_through_a_reaches_b(replicas: tuple[GatewayProcess, GatewayProcess]) -> None:
    """A policy written through replica A is served by replica B within 2 s (measured)."""
    a, b = replicas
    started = time.monotonic()
    r = httpx.put(f"{a.url}/admin/routes/churn", json={"model": "churn", "arms": [{"version": "2", "weight": 1}]})
    assert r.status_code == 200, r.text
    delay = wait_for(b, "2", started)
    print(f"\nroute change reached replica B after {delay * 1000:.0f} ms")


def test_mlflow_promotion_reaches_both(
    replicas: tuple[GatewayProcess, GatewayProcess], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A version registered and made champion through A's MLflow API is served by A and B."""
    a, b = replicas
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    mlflow.set_tracking_uri(a.url)
    mlflow.set_experiment("replicas")
    with mlflow.start_run() as run, tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        path.write_bytes(build_mlp(13))
        mlflow.log_artifact(str(path), artifact_path="model")
    client = MlflowClient()
    mv = client.create_model_version("churn", f"runs:/{run.info.run_id}/model", run_id=run.info.run_id)
    started = time.monotonic()
    client.set_registered_model_alias("churn", "champion", mv.version)
    for gw in (a, b):
        wait_for(gw, str(mv.version), started)


def test_killing_a_under_load_leaves_b_serving(replicas: tuple[GatewayProcess, GatewayProcess]) -> None:
    """SIGKILL of replica A while both take traffic: every request to B succeeds."""
    a, b = replicas
    errors: list[str] = []
    served = [0]
    stop = threading.Event()

    def to_b() -> None:
        with httpx.Client(base_url=b.url, timeout=10) as client:
            while not stop.is_set():
                r = client.post("/v1/models/churn:predict", json=ROW)
                if r.status_code != 200:
                    errors.append(f"{r.status_code} {r.text}")
                served[0] += 1

    threads = [threading.Thread(target=to_b) for _ in range(3)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    a.proc.send_signal(signal.SIGKILL)
    a.proc.wait(timeout=10)
    time.sleep(1.0)
    stop.set()
    for t in threads:
        t.join(timeout=10)
    assert errors == []
    assert served[0] > 50
