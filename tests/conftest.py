"""Shared test fixtures: real databases and servers, never mocks."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest
import redis
import sqlalchemy as sa
from onnx import TensorProto, helper, numpy_helper
from sqlalchemy.pool import NullPool

from registry.artifacts import ArtifactStore
from registry.schema import metadata
from registry.store import RegistryStore, normalise_url

# --- registry fixtures ---

DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def _admin_engine(url: sa.URL) -> sa.Engine:
    # lock_timeout turns a teardown blocked by a leaked transaction into an error instead of a hang.
    return sa.create_engine(
        url,
        isolation_level="AUTOCOMMIT",
        poolclass=NullPool,
        connect_args={"connect_timeout": 5, "options": "-c lock_timeout=10s"},
    )


@contextlib.contextmanager
def throwaway_postgres_database() -> Iterator[str]:
    """Create a PostgreSQL database of our own, yield its URL, drop it; fails (never skips) when
    PostgreSQL cannot be reached."""
    admin_url = sa.make_url(normalise_url(os.environ.get("GATEWAY_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL)))
    admin = _admin_engine(admin_url)
    database = f"gateway_test_{secrets.token_hex(6)}"
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{database}"')
    except sa.exc.OperationalError as exc:
        admin.dispose()
        pytest.fail(
            f"PostgreSQL is not reachable at {admin_url.render_as_string(hide_password=True)} ({exc.orig}). "
            "Start PostgreSQL, or set GATEWAY_TEST_POSTGRES_URL to a server where this user may CREATE DATABASE.",
            pytrace=False,
        )
    try:
        yield admin_url.set(database=database).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        admin.dispose()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A throwaway PostgreSQL database for the session, dropped at the end."""
    with throwaway_postgres_database() as url:
        yield url


@pytest.fixture
def fresh_postgres_url() -> Iterator[str]:
    """A throwaway PostgreSQL database for one test."""
    with throwaway_postgres_database() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgres"])
def registry_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty registry database per test: a new SQLite file, or the session's PostgreSQL database
    with every registry table dropped afterwards."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'registry' / 'registry.db'}"
        return
    url: str = request.getfixturevalue("postgres_url")
    yield url
    engine = _admin_engine(sa.make_url(url))
    try:
        metadata.drop_all(engine)
    finally:
        engine.dispose()


@pytest.fixture
def registry_store(registry_url: str) -> Iterator[RegistryStore]:
    store = RegistryStore(registry_url)
    yield store
    store.close()


@pytest.fixture
def artifact_store(tmp_path: Path) -> ArtifactStore:
    return ArtifactStore(tmp_path / "artifacts")


def _build_onnx(graph: onnx.GraphProto) -> bytes:
    """Serialize a graph as a checked opset-17 model that every supported onnxruntime reads."""
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="gateway-tests")
    model.ir_version = 9
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())


@pytest.fixture(scope="session")
def demo_onnx_bytes() -> bytes:
    """FP32 "x" [batch, 4] -> MatMul with fixed weights -> FP32 "y" [batch, 2]; the same bytes every run."""
    weights = (np.arange(8, dtype=np.float32).reshape(4, 2) / 10).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "demo_matmul",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 2])],
        [numpy_helper.from_array(weights, "w")],
    )
    return _build_onnx(graph)


@pytest.fixture(scope="session")
def string_onnx_bytes() -> bytes:
    """STRING "text" [batch] and INT64 "ids" [batch, 3], each passed through Identity to "text_out"/"ids_out"."""
    graph = helper.make_graph(
        [helper.make_node("Identity", ["text"], ["text_out"]), helper.make_node("Identity", ["ids"], ["ids_out"])],
        "demo_strings",
        [
            helper.make_tensor_value_info("text", TensorProto.STRING, ["batch"]),
            helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", 3]),
        ],
        [
            helper.make_tensor_value_info("text_out", TensorProto.STRING, ["batch"]),
            helper.make_tensor_value_info("ids_out", TensorProto.INT64, ["batch", 3]),
        ],
    )
    return _build_onnx(graph)


# --- redis fixtures ---

REDIS_INSTALL_HINT = (
    "Redis tests need the redis-server binary on PATH (Debian/Ubuntu: apt-get install redis-server) "
    "or GATEWAY_TEST_REDIS_URL=redis://host:port/db pointing at a Redis the tests may write to"
)


@dataclass(frozen=True)
class RedisServer:
    """A Redis for tests: `owned` when the session started it (tests may FLUSHALL it)."""

    url: str
    owned: bool
    process: subprocess.Popen[bytes] | None = None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_redis_server(port: int | None = None) -> RedisServer:
    """Start a private redis-server on a free loopback port (no persistence), ready when it answers PING."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail(REDIS_INSTALL_HINT)
    port = port or _free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--protected-mode", "no", "--daemonize", "no", "--loglevel", "warning"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"redis-server on port {port} did not start ({REDIS_INSTALL_HINT})")
            time.sleep(0.02)
    client.close()
    return RedisServer(url, owned=True, process=proc)


def stop_redis_server(server: RedisServer) -> None:
    if server.process is not None and server.process.poll() is None:
        server.process.terminate()
        server.process.wait(timeout=10)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """The session's Redis: GATEWAY_TEST_REDIS_URL if set, else a private redis-server; fails (never
    skips) with an install hint when neither works."""
    url = os.environ.get("GATEWAY_TEST_REDIS_URL")
    if url:
        try:
            redis.Redis.from_url(url).ping()
        except redis.RedisError as exc:
            pytest.fail(f"GATEWAY_TEST_REDIS_URL={url} is not reachable: {exc}")
        yield RedisServer(url, owned=False)
        return
    server = start_redis_server()
    yield server
    stop_redis_server(server)


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """A Redis URL for one test; the session's own server is flushed first so tests start empty.
    With an external GATEWAY_TEST_REDIS_URL nothing is flushed: tests must use their own key prefixes."""
    if redis_server.owned:
        client = redis.Redis.from_url(redis_server.url)
        client.flushall()
        client.close()
    return redis_server.url
