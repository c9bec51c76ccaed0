"""uvicorn wiring: uvloop + httptools, graceful drain, one process or N workers; used by `serve` and tests."""

from __future__ import annotations

import os
import signal
import socket

import uvicorn
from starlette.applications import Starlette
from uvicorn.supervisors import Multiprocess

from gateway.config import CONFIG_ENV, Config


def uvicorn_config(config: Config, app: Starlette | str) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=config.host,
        port=config.port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,  # no per-request logging on the hot path; metrics count requests
        log_level=config.log_level,
        timeout_graceful_shutdown=max(1, round(config.graceful_timeout_s)),
        workers=config.workers,
        factory=isinstance(app, str),
        server_header=False,
    )


def serve(config: Config) -> None:
    """Run until SIGTERM/SIGINT. With several workers, each process builds its own app from the config."""
    _exit_zero_after_drain()
    if config.workers == 1:
        from gateway.app import create_app

        uvicorn.Server(uvicorn_config(config, create_app(config))).run()
        return
    os.environ[CONFIG_ENV] = config.to_json()
    uvicorn_cfg = uvicorn_config(config, "gateway.app:create_app_from_env")
    sock = uvicorn_cfg.bind_socket()
    Multiprocess(uvicorn_cfg, sockets=[sock]).run()


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
