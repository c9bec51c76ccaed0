"""Benchmark: MLflow log-batch writes/s through the registry's HTTP API, on SQLite and PostgreSQL.

    .venv/bin/python -m loadtests.bench_log_batch [--batches 300] [--metrics 1000] [--clients 1,4]
        [--postgres URL] [--out loadtests/results/log_batch.md] [--note TEXT]

Each backend gets a fresh database and a registry server subprocess (create_registry_app under uvicorn,
one worker) on a socket this script binds. Each client owns one run and posts prebuilt log-batch bodies
(`--metrics` values over 10 keys, new steps every batch) back to back; a batch counts once the server
has answered 200, i.e. after its transaction committed. A final row measures TrackingStore.log_batch
in-process (no HTTP), the database's own ceiling for the same batches.
"""

from __future__ import annotations

import argparse
import os
import platform
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import orjson
import sqlalchemy as sa
from sqlalchemy.pool import NullPool

API = "/api/2.0/mlflow"
KEYS = 10
DEFAULT_POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


@dataclass(frozen=True, slots=True)
class Row:
    backend: str
    path: str
    clients: int
    batches: int
    metrics: int
    seconds: float
    latencies_ms: list[float]

    @property
    def batches_per_s(self) -> float:
        return self.batches / self.seconds

    def cells(self) -> list[str]:
        lat = sorted(self.latencies_ms)
        p50 = statistics.median(lat) if lat else float("nan")
        p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] if lat else float("nan")
        return [self.backend, self.path, str(self.clients), f"{self.batches} x {self.metrics}",
                f"{self.batches_per_s:,.1f}", f"{self.batches_per_s * self.metrics:,.0f}", f"{p50:.1f}", f"{p99:.1f}"]


def batch_body(run_id: str, batch: int, metrics: int) -> bytes:
    steps = metrics // KEYS
    return orjson.dumps({
        "run_id": run_id,
        "metrics": [
            {"key": f"m{i % KEYS}", "value": (batch * steps + i // KEYS) * 0.001, "timestamp": 1_700_000_000_000 + batch,
             "step": batch * steps + i // KEYS, "run_id": run_id}
            for i in range(metrics)
        ],
    })


# --- databases and servers ---------------------------------------------------------------------


@contextmanager
def database(backend: str, postgres_url: str, workdir: Path) -> Iterator[str]:
    if backend == "sqlite":
        yield f"sqlite:///{workdir / 'registry.db'}"
        return
    admin_url = sa.make_url(postgres_url)
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    name = f"bench_log_batch_{secrets.token_hex(4)}"
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield admin_url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


@contextmanager
def server(database_url: str, artifacts: Path) -> Iterator[str]:
    """A registry server subprocess on a socket bound here; yields its base URL once /health answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    proc = subprocess.Popen([sys.executable, "-m", "loadtests.bench_log_batch", "serve", str(sock.fileno()),
                             database_url, str(artifacts)], pass_fds=[sock.fileno()])
    try:
        httpx.get(f"{url}/health", timeout=60).raise_for_status()  # queued on the socket until the server accepts
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        sock.close()


def serve(fd: int, database_url: str, artifacts: Path) -> None:
    import uvicorn

    from registry.api import create_registry_app

    config = uvicorn.Config(create_registry_app(database_url, artifacts), log_level="warning", access_log=False)
    uvicorn.Server(config).run(sockets=[socket.socket(fileno=fd)])


# --- measurements ------------------------------------------------------------------------------


def over_http(url: str, backend: str, clients: int, batches: int, metrics: int) -> Row:
    with httpx.Client(base_url=url, timeout=60) as http:
        runs = [http.post(f"{API}/runs/create", json={"experiment_id": "0"}).json()["run"]["info"]["run_id"]
                for _ in range(clients)]
    per_client = batches // clients
    bodies = [[batch_body(run, b, metrics) for b in range(per_client + 2)] for run in runs]
    latencies: list[list[float]] = [[] for _ in range(clients)]
    start = threading.Barrier(clients + 1)

    def client(n: int) -> None:
        with httpx.Client(base_url=url, timeout=60, headers={"content-type": "application/json"}) as http:
            for body in bodies[n][:2]:  # warm-up: connection, first statements
                http.post(f"{API}/runs/log-batch", content=body).raise_for_status()
            start.wait()
            for body in bodies[n][2:]:
                began = time.perf_counter()
                http.post(f"{API}/runs/log-batch", content=body).raise_for_status()
                latencies[n].append((time.perf_counter() - began) * 1000)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for t in threads:
        t.start()
    start.wait()
    began = time.perf_counter()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - began
    with httpx.Client(base_url=url, timeout=60) as http:  # every acknowledged value is readable
        history = http.get(f"{API}/metrics/get-history", params={"run_id": runs[0], "metric_key": "m0"}).json()
        assert len(history["metrics"]) == (per_client + 2) * (metrics // KEYS), "lost writes"
    return Row(backend, "HTTP", clients, per_client * clients, metrics, seconds, [x for lat in latencies for x in lat])


def in_process(database_url: str, backend: str, batches: int, metrics: int) -> Row:
    from registry.entities import Metric
    from registry.store import RegistryStore
    from registry.tracking import TrackingStore

    store = RegistryStore(database_url)
    try:
        tracking = TrackingStore(store)
        run_id = tracking.create_run("0").info.run_id
        steps = metrics // KEYS
        payloads = [[Metric(f"m{i % KEYS}", 0.5, 1, b * steps + i // KEYS) for i in range(metrics)] for b in range(batches + 2)]
        for payload in payloads[:2]:
            tracking.log_batch(run_id, payload)
        latencies = []
        began = time.perf_counter()
        for payload in payloads[2:]:
            t0 = time.perf_counter()
            tracking.log_batch(run_id, payload)
            latencies.append((time.perf_counter() - t0) * 1000)
        return Row(backend, "in-process", 1, batches, metrics, time.perf_counter() - began, latencies)
    finally:
        store.close()


def report(rows: list[Row], command: str, note: str) -> str:
    head = ["backend", "path", "clients", "batches x metrics", "batches/s", "metric writes/s", "p50 ms/batch",
            "p99 ms/batch"]
    lines = [
        "# Benchmark: MLflow log-batch writes/s",
        "",
        f"- Command: `{command}`",
        f"- Date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        f"- Machine: {os.cpu_count()} CPUs, {platform.system()} {platform.release()}, Python {platform.python_version()}",
        f"- Conditions: load average {os.getloadavg()[0]:.2f} (1 min) at the end; the client, the server and the "
        f"database share this machine.{' ' + note if note else ''}",
        "- One registry server process (uvicorn, 1 worker, Starlette threadpool); SQLite in WAL mode with "
        "synchronous=NORMAL, PostgreSQL 15 on localhost. Each batch is one transaction, committed before the 200.",
        f"- A batch holds its metrics over {KEYS} keys (new steps each batch): that many history rows plus {KEYS} "
        "latest-value upserts.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "|".join(["---"] * 3 + ["---:"] * 5) + "|",
        *("| " + " | ".join(row.cells()) + " |" for row in rows),
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    if argv[:1] == ["serve"]:
        serve(int(argv[1]), argv[2], Path(argv[3]))
        return
    parser = argparse.ArgumentParser(prog="python -m loadtests.bench_log_batch", description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=300, help="log-batch requests per measurement")
    parser.add_argument("--metrics", type=int, default=1000, help="metrics per batch (MLflow allows 1000)")
    parser.add_argument("--clients", default="1,4", help="comma-separated concurrent client counts")
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--postgres", default=os.environ.get("GATEWAY_TEST_POSTGRES_URL", DEFAULT_POSTGRES),
                        help="a PostgreSQL server where this user may CREATE DATABASE")
    parser.add_argument("--out", type=Path, default=None, help="write the Markdown table here")
    parser.add_argument("--note", default="", help="a sentence on the conditions, added to the report")
    args = parser.parse_args(argv)
    rows: list[Row] = []
    for backend in args.backends.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            workdir = Path(tmp)
            with database(backend, args.postgres, workdir) as url:
                with server(url, workdir / "artifacts") as base:
                    for clients in (int(c) for c in args.clients.split(",")):
                        rows.append(over_http(base, backend, clients, args.batches, args.metrics))
                        print(" | ".join(rows[-1].cells()), flush=True)
                rows.append(in_process(url, backend, args.batches, args.metrics))
                print(" | ".join(rows[-1].cells()), flush=True)
    command = ".venv/bin/python -m loadtests.bench_log_batch " + " ".join(
        f"'{a}'" if " " in a else a for a in argv
    )
    text = report(rows, command.strip(), args.note)
    if args.out is not None:
        args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main(sys.argv[1:])
