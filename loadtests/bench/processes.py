"""Servers under test as pinned child processes: each in its own process group (so its CPU time can be
read for the whole group), ready when its health URL answers 200, stopped by SIGTERM then SIGKILL."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from loadtests.bench.procstat import Usage, group_usage


class ServerError(RuntimeError):
    """A server under test did not start, or stopped; the message ends with its log."""


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(slots=True)
class Server:
    name: str
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.process.pid

    def usage(self) -> Usage:
        """CPU and syscalls used so far by the server's whole process group."""
        return group_usage(self.process.pid)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            raise ServerError(f"{self.name} exited with {self.process.returncode}; its log:\n{self.log_tail()}")

    def stop(self, timeout_s: float = 10.0) -> None:
        if self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout_s)


def start_server(name: str, argv: list[str], *, cpu: int, port: int, log: Path, env: dict[str, str] | None = None,
                 cwd: Path | None = None) -> Server:
    """Start `argv` pinned to `cpu` (taskset execs it, so the pid is the server's) in a new session."""
    with log.open("wb") as out:
        process = subprocess.Popen(
            ["taskset", "-c", str(cpu), *argv], stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, env=env, cwd=cwd,
        )
    return Server(name, process, port, log)


def http(method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None,
         timeout_s: float = 10.0) -> tuple[int, dict[str, str], bytes]:
    """One request to a 127.0.0.1 URL: (status, lower-cased headers, body); HTTP errors are returned."""
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()


def wait_ready(server: Server, path: str, timeout_s: float) -> None:
    """Poll GET `path` until it answers 200. Raises ServerError when the server exits or time runs out."""
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while time.monotonic() < deadline:
        server.check_alive()
        try:
            status, _, body = http("GET", server.base_url + path, timeout_s=2.0)
            if status == 200:
                return
            last = f"{status} {body[:200]!r}"
        except (OSError, urllib.error.URLError) as exc:
            last = str(exc)
        time.sleep(0.1)
    raise ServerError(f"{server.name} not ready at {path} after {timeout_s:.0f} s ({last}); its log:\n"
                      f"{server.log_tail()}")
