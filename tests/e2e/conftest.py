"""End-to-end fixtures: real `gateway serve` processes on real sockets, driven by real clients."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

STARTUP_TIMEOUT_S = 60.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cli_env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env.update(GATEWAY_DATA_DIR=str(data_dir), **extra)
    return env


def run_cli(data_dir: Path, *args: str, check: bool = True, **env: str) -> subprocess.CompletedProcess[str]:
    """Run `python -m gateway ARGS` with the registry in data_dir (through GATEWAY_DATA_DIR)."""
    proc = subprocess.run(
        [sys.executable, "-m", "gateway", *args], env=cli_env(data_dir, **env), capture_output=True, text=True, timeout=120
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"gateway {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


@dataclass
class GatewayProcess:
    """A `gateway serve` subprocess; `url` is its base URL, `log` its combined output file."""

    data_dir: Path
    port: int
    proc: subprocess.Popen[bytes]
    log: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def hostport(self) -> str:
        return f"127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run_cli(self.data_dir, *args, check=check, **self.env)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def start_gateway(data_dir: Path, *args: str, wait_ready: bool = True, **env: str) -> GatewayProcess:
    """Start `gateway serve` on a free loopback port and wait until /v2/health/ready answers 200."""
    data_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = data_dir / f"gateway-{port}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve", "--port", str(port), "--poll-interval", "0.1", *args],
            env=cli_env(data_dir, **env), stdout=out, stderr=subprocess.STDOUT,
        )
    gw = GatewayProcess(data_dir, port, proc, log, env)
    if wait_ready:
        wait_until_ready(gw)
    return gw


def wait_until_ready(gw: GatewayProcess, timeout: float = STARTUP_TIMEOUT_S, in_a_row: int = 1) -> None:
    """Until /v2/health/ready answers 200 `in_a_row` times, each on a new connection: with --workers N the
    kernel hands each connection to any worker, and one ready worker says nothing of the others."""
    deadline = time.monotonic() + timeout
    streak = 0
    while time.monotonic() < deadline:
        if gw.proc.poll() is not None:
            raise AssertionError(f"gateway exited with {gw.proc.returncode} before it was ready:\n{gw.output()}")
        try:
            streak = streak + 1 if httpx.get(f"{gw.url}/v2/health/ready", timeout=2).status_code == 200 else 0
        except httpx.TransportError:
            streak = 0
        if streak >= in_a_row:
            return
        time.sleep(0.05 if streak == 0 else 0.0)
    gw.stop()
    raise AssertionError(f"gateway not ready after {timeout} s:\n{gw.output()}")


@pytest.fixture(scope="session")
def demo_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """One `gateway serve --demo` for the protocol tests, which only read."""
    gw = start_gateway(tmp_path_factory.mktemp("demo-gateway"), "--demo")
    yield gw
    gw.stop()


@pytest.fixture
def fresh_gateway_dir(tmp_path: Path) -> Path:
    return tmp_path / "gw"
