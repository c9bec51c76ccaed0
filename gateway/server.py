"""uvicorn wiring: uvloop + httptools, graceful drain, one process or N workers; used by `serve` and tests.

With N > 1 workers, metrics use prometheus-client's multiprocess mode: the parent points
PROMETHEUS_MULTIPROC_DIR at a fresh private directory before spawning the workers (each worker's
metric values live in mmap files there), removes it on exit, and marks every worker dead as it
goes; GET /metrics in any worker then merges all the files (monitoring/api.py).
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import signal
import socket
import tempfile

import uvicorn
from starlette.applications import Starlette
from uvicorn.supervisors import Multiprocess

from gateway.config import CONFIG_ENV, Config
from gateway.headlimit import BoundedHttpToolsProtocol

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"  # prometheus_client reads it when it is first imported

log = logging.getLogger("gateway")


def uvicorn_config(config: Config, app: Starlette | str) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=config.host,
        port=config.port,
        loop="uvloop",
        http=BoundedHttpToolsProtocol,  # httptools, with a bound on request-head bytes (431 past it)
        lifespan="on",
        access_log=False,  # no per-request logging on the hot path; metrics count requests
        log_level=config.log_level,
        timeout_graceful_shutdown=max(1, round(config.graceful_timeout_s)),
        workers=config.workers,
        factory=isinstance(app, str),
        server_header=False,
        # X-Forwarded-* rewriting costs a middleware call per request, and nothing here reads the client
        # address (no access log; the audit names token holders).
        proxy_headers=False,
    )


def serve(config: Config) -> None:
    """Run until SIGTERM/SIGINT. With several workers, each process builds its own app from the config."""
    _exit_zero_after_drain()
    if config.workers == 1:
        from gateway.app import create_app

        uvicorn.Server(uvicorn_config(config, create_app(config))).run()
        return
    os.environ[CONFIG_ENV] = config.to_json()
    if config.redis_url is None:
        log.warning("%d workers without --redis: each worker's drift windows see only its share of the traffic", config.workers)
    # Fresh for every start: files left by an earlier run would add their counts to ours.
    metrics_dir = tempfile.mkdtemp(prefix="gateway-metrics-")
    os.environ[MULTIPROC_ENV] = metrics_dir
    try:
        uvicorn_cfg = uvicorn_config(config, "gateway.server:create_worker_app")
        sock = uvicorn_cfg.bind_socket()
        WorkerSupervisor(uvicorn_cfg, sockets=[sock]).run()
    finally:
        del os.environ[MULTIPROC_ENV]
        shutil.rmtree(metrics_dir, ignore_errors=True)


def create_worker_app() -> Starlette:
    """Factory run in each worker process: the app from GATEWAY_CONFIG_JSON, and, in multiprocess
    metrics mode, this process's live gauges dropped from the merged view when it exits."""
    from gateway.app import create_app_from_env

    path = os.environ.get(MULTIPROC_ENV)
    if path:
        from prometheus_client.multiprocess import mark_process_dead

        atexit.register(mark_process_dead, os.getpid(), path)  # spawned workers exit through sys.exit: atexit runs
    return create_app_from_env()


class WorkerSupervisor(Multiprocess):
    """uvicorn's supervisor, which also marks a worker dead for the metrics when it replaces it (a
    worker killed by a signal never runs its own atexit hook)."""

    def keep_subprocess_alive(self) -> None:
        before = {p.pid for p in self.processes}
        super().keep_subprocess_alive()
        gone = before - {p.pid for p in self.processes}
        path = os.environ.get(MULTIPROC_ENV)
        if gone and path:
            from prometheus_client.multiprocess import mark_process_dead

            for pid in gone:
                if pid is not None:
                    mark_process_dead(pid, path)  # type: ignore[no-untyped-call]


def _exit_zero_after_drain() -> None:
    """uvicorn re-raises the signal that stopped it once it has drained, restoring the handlers it found;
    with no-op handlers found, a graceful stop by SIGTERM or Ctrl-C ends the process with status 0."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: None)


def bind_loopback() -> socket.socket:
    """A listening socket on 127.0.0.1 with a free port, for servers started by tests and benchmarks."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(2048)
    return sock
