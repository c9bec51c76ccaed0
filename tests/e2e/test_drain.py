"""SIGTERM under load: requests already sent are answered, the process drains and exits 0."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import httpx

from tests.e2e.conftest import start_gateway

ROW = {"instances": [[0.3] * 32]}


def test_sigterm_under_load_drains_and_exits_zero(tmp_path: Path) -> None:
    """Every request sent well before SIGTERM succeeds; afterwards the gateway exits 0 on its own."""
    gw = start_gateway(tmp_path / "gw", "--demo")
    results: list[tuple[float, int | str]] = []
    stop = threading.Event()

    def client() -> None:
        with httpx.Client(base_url=gw.url, timeout=10) as c:
            while not stop.is_set():
                sent = time.monotonic()
                try:
                    results.append((sent, c.post("/v1/models/churn:predict", json=ROW).status_code))
                except httpx.HTTPError as exc:
                    results.append((sent, type(exc).__name__))
                    return

    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    signalled = time.monotonic()
    gw.proc.send_signal(signal.SIGTERM)
    code = gw.proc.wait(timeout=30)
    stop.set()
    for t in threads:
        t.join(timeout=10)
    before = [r for sent, r in results if sent < signalled - 0.05]
    assert len(before) > 50
    assert set(before) == {200}, [r for r in before if r != 200][:5]
    assert code == 0
    log = gw.output()
    assert "draining: /v2/health/ready now answers 503" in log, "readiness turns false as the signal arrives"
    assert log.index("draining:") < log.index("Finished server process")
