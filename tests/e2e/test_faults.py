"""Faults against real processes: the registry database goes away (PostgreSQL refusing connections,
SQLite locked past its busy timeout) and comes back; a model version whose file is corrupt.

Serving never depends on the registry being up: loaded models and routes keep answering, writes
answer 503 with a message saying the database is unavailable, and the follower resyncs by itself.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from gateway.demo import build_mlp
from registry.store import SQLITE_BUSY_TIMEOUT_MS
from tests.e2e.conftest import GatewayProcess, start_gateway

ROW = {"instances": [[0.25] * 32]}
POLICY = {"model": "churn", "arms": [{"version": "challenger", "weight": 100}]}
WRITE_BOUND_S = SQLITE_BUSY_TIMEOUT_MS / 1000 + 5  # a write fails within the store's own timeout, plus slack
ADMIN_POSTGRES_URL = os.environ.get("GATEWAY_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


class Traffic:
    """One thread predicting in a loop until stopped; records status codes (or the transport error)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.stop = threading.Event()
        self.results: list[str] = []
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        with httpx.Client(base_url=self.url, timeout=10) as client:
            while not self.stop.is_set():
                try:
                    self.results.append(str(client.post("/v1/models/churn:predict", json=ROW).status_code))
                except httpx.HTTPError as exc:
                    self.results.append(repr(exc))
                time.sleep(0.01)

    def __enter__(self) -> Traffic:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=30)


def wait_for(condition: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError(f"{what} not within {timeout} s")


def served_version(gw: GatewayProcess) -> str:
    r = httpx.post(f"{gw.url}/v1/models/churn:predict", json=ROW, timeout=10)
    assert r.status_code == 200, r.text
    return r.headers["x-gateway-model-version"]


# --- PostgreSQL refusing connections ------------------------------------------------------------


def _admin() -> psycopg.Connection[tuple[object, ...]]:
    url = re.sub(r"^postgresql\+psycopg://", "postgresql://", ADMIN_POSTGRES_URL)
    try:
        return psycopg.connect(url, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL is not reachable at {url} ({exc}); set GATEWAY_TEST_POSTGRES_URL", pytrace=False)


@pytest.fixture
def private_postgres() -> Iterator[tuple[str, str]]:
    """(database name, URL) of a database created for this test alone and dropped after it; the test
    may refuse its connections without touching any other test's database."""
    name = f"gateway_fault_{secrets.token_hex(6)}"
    with _admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = re.sub(r"/[^/]*$", "", re.sub(r"^postgresql(\+psycopg)?://", "postgresql+psycopg://", ADMIN_POSTGRES_URL))
    try:
        yield name, f"{base}/{name}"
    finally:
        with _admin() as conn:
            conn.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def refuse_connections(name: str) -> None:
    """The database goes away as far as its clients can tell: open sessions are killed, new ones refused."""
    with _admin() as conn:
        conn.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))


def allow_connections(name: str) -> None:
    with _admin() as conn:
        conn.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')


def test_postgres_outage_serving_continues_writes_503_and_resync(
    tmp_path: Path, private_postgres: tuple[str, str]
) -> None:
    """With the registry database refusing connections: inference answers 200 throughout, admin and
    MLflow writes answer 503 naming the outage within a bound, /health shows registry_error; once the
    database is back the gateway notices by itself, and a promotion made then is served."""
    name, url = private_postgres
    gw = start_gateway(tmp_path / "gw", "--demo", GATEWAY_REGISTRY_URL=url)  # the CLI below shares it
    try:
        assert served_version(gw) == "1"
        with Traffic(gw.url) as traffic, httpx.Client(base_url=gw.url, timeout=WRITE_BOUND_S + 5) as client:
            time.sleep(0.3)
            refuse_connections(name)
            wait_for(lambda: client.get("/health").json()["registry_error"], 10, "/health registry_error")
            error = client.get("/health").json()["registry_error"]
            assert "unavailable" in error

            started = time.monotonic()
            r = client.put("/admin/routes/churn", json=POLICY)
            assert r.status_code == 503, r.text
            assert "unavailable" in r.json()["error"]
            r = client.post("/api/2.0/mlflow/experiments/create", json={"name": "during-outage"})
            assert r.status_code == 503, r.text
            assert r.json()["error_code"] == "TEMPORARILY_UNAVAILABLE"
            assert "unavailable" in r.json()["message"]
            r = client.get("/admin/routes")
            assert r.status_code == 503, r.text
            assert time.monotonic() - started < WRITE_BOUND_S
            # Metadata reads that need the database fail alike; inference and liveness do not.
            assert client.get("/v2/health/live").status_code == 200
            assert client.get("/v2/health/ready").status_code == 200
            time.sleep(0.5)

            allow_connections(name)
            wait_for(lambda: client.get("/health").json()["registry_error"] is None, 15, "recovery in /health")
            time.sleep(0.3)
        assert traffic.results, "no traffic was sent"
        assert set(traffic.results) == {"200"}, sorted(set(traffic.results))

        gw.cli("models", "promote", "churn", "2", "--alias", "champion")  # straight into the database
        wait_for(lambda: served_version(gw) == "2", 10, "the promotion made after recovery")
        r = httpx.put(f"{gw.url}/admin/routes/churn", json={"model": "churn", "arms": [{"version": "1", "weight": 1}]})
        assert r.status_code == 200, r.text
        assert served_version(gw) == "1"
        assert "registry unavailable" in gw.output() and "registry reachable again" in gw.output()
    finally:
        gw.stop()


# --- SQLite locked past its busy timeout ----------------------------------------------------------


def test_sqlite_locked_writes_503_within_busy_timeout(tmp_path: Path) -> None:
    """Another process holds the registry file's write lock longer than the store's busy timeout:
    admin and MLflow writes answer 503 (not 500) within that timeout, inference keeps answering 200,
    and writes succeed once the lock is gone."""
    gw = start_gateway(tmp_path / "gw", "--demo")
    db = gw.data_dir / "registry.db"
    assert db.is_file()
    locker = sqlite3.connect(db, isolation_level=None, timeout=5)
    results: dict[str, tuple[int, dict[str, str], float]] = {}

    def write(kind: str) -> None:
        started = time.monotonic()
        if kind == "admin":
            r = httpx.put(f"{gw.url}/admin/routes/churn", json=POLICY, timeout=WRITE_BOUND_S + 5)
        else:
            r = httpx.post(f"{gw.url}/api/2.0/mlflow/experiments/create", json={"name": "locked"}, timeout=WRITE_BOUND_S + 5)
        results[kind] = (r.status_code, r.json(), time.monotonic() - started)

    try:
        with Traffic(gw.url) as traffic:
            locker.execute("BEGIN EXCLUSIVE")
            try:
                writers = [threading.Thread(target=write, args=(k,)) for k in ("admin", "mlflow")]
                for t in writers:
                    t.start()
                for t in writers:
                    t.join(timeout=WRITE_BOUND_S + 10)
            finally:
                locker.execute("ROLLBACK")
            time.sleep(0.2)
        assert set(traffic.results) == {"200"}, sorted(set(traffic.results))
        status, body, took = results["admin"]
        assert status == 503 and "unavailable" in body["error"], (status, body)
        assert took < WRITE_BOUND_S
        status, body, took = results["mlflow"]
        assert status == 503 and body["error_code"] == "TEMPORARILY_UNAVAILABLE", (status, body)
        assert took < WRITE_BOUND_S
        r = httpx.put(f"{gw.url}/admin/routes/churn", json=POLICY, timeout=10)
        assert r.status_code == 200, r.text
        assert served_version(gw) == "2"
    finally:
        locker.close()
        gw.stop()


# --- a version that cannot load -----------------------------------------------------------------


def test_corrupt_artifact_counted_as_failed_load_and_route_keeps_serving(tmp_path: Path) -> None:
    """A promoted version whose file was corrupted on disk: the route keeps its version, and the
    failure shows in /health, in gateway_model_loads_total{outcome="failed"} and in the log."""
    gw = start_gateway(tmp_path / "gw", "--demo")
    try:
        good = tmp_path / "v3.onnx"
        good.write_bytes(build_mlp(3))
        gw.cli("models", "register", "churn", str(good))
        digest = hashlib.sha256(good.read_bytes()).hexdigest()
        blob = next(p for p in (gw.data_dir / "artifacts").rglob(digest + "*") if p.is_file())
        blob.write_bytes(b"corrupted on disk")
        gw.cli("models", "promote", "churn", "3", "--alias", "champion")
        wait_for(lambda: "churn/3" in httpx.get(f"{gw.url}/health").json()["load_failures"], 10, "the load failure")
        assert served_version(gw) == "1"
        metrics = httpx.get(f"{gw.url}/metrics").text
        failed = re.search(r'gateway_model_loads_total\{[^}]*model="churn"[^}]*outcome="failed"[^}]*version="3"[^}]*\} (\S+)'
                           r'|gateway_model_loads_total\{[^}]*outcome="failed"[^}]*\} (\S+)', metrics)
        assert failed is not None, metrics
        assert float(failed.group(1) or failed.group(2)) >= 1
        assert "failed to load" in gw.output()
    finally:
        gw.stop()
