"""`gateway serve --workers 2`: /metrics merges every worker's counters (prometheus-client multiprocess mode)."""

from __future__ import annotations

import glob
import os
import time
from pathlib import Path

import httpx
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import start_gateway

REQUESTS = 120
SCRAPES = 6


def wait_all_workers_ready(url: str, answers: int = 40, timeout_s: float = 60.0) -> None:
    """Until `answers` readiness checks in a row, each on a fresh connection, say ready: start_gateway's
    check reached one worker, and the other may still be loading its models."""
    deadline, streak = time.monotonic() + timeout_s, 0
    while streak < answers:
        assert time.monotonic() < deadline, "the workers never all became ready"
        streak = streak + 1 if httpx.get(f"{url}/v2/health/ready", timeout=10).status_code == 200 else 0
        if not streak:
            time.sleep(0.05)


def route_requests(text: str, route: str) -> float:
    """gateway_requests_total summed over every series of `route` (arms, versions, protocols, codes)."""
    total = 0.0
    for family in text_string_to_metric_families(text):
        if family.name == "gateway_requests":
            total += sum(s.value for s in family.samples if s.name == "gateway_requests_total" and s.labels["route"] == route)
    return total


def requests_per_file(metrics_dir: Path) -> dict[str, float]:
    """gateway_requests_total per worker, read from each worker's own mmap file."""
    counts = {}
    for path in glob.glob(str(metrics_dir / "gateway-metrics-*" / "counter_*.db")):
        families = MultiProcessCollector.merge([path], accumulate=False)  # type: ignore[no-untyped-call]
        counts[os.path.basename(path)] = sum(
            s.value for f in families if f.name == "gateway_requests" for s in f.samples if s.name.endswith("_total")
        )
    return counts


class TestMetricsAcrossWorkers:
    def test_request_counter_sums_over_workers(self, tmp_path: Path) -> None:
        """N requests over fresh connections to 2 workers: every scrape reports exactly N for the route,
        both workers served some of them, and the private metrics directory is removed on exit."""
        tmp = tmp_path / "tmp"
        tmp.mkdir()
        gw = start_gateway(tmp_path / "gw", "--demo", "--workers", "2", TMPDIR=str(tmp))
        try:
            (metrics_dir,) = tmp.glob("gateway-metrics-*")
            wait_all_workers_ready(gw.url)
            for i in range(REQUESTS):
                # A fresh connection per request, so the kernel spreads them over both workers' accepts.
                with httpx.Client(base_url=gw.url, timeout=10) as client:
                    r = client.post("/v1/models/churn:predict", json={"instances": [[float(i % 7)] * 32]})
                    assert r.status_code == 200, r.text
            for _ in range(SCRAPES):
                with httpx.Client(base_url=gw.url, timeout=10) as client:
                    scraped = client.get("/metrics")
                assert scraped.status_code == 200
                assert route_requests(scraped.text, "churn") == REQUESTS
                types = [line for line in scraped.text.splitlines() if line.startswith("# TYPE ")]
                assert len(types) == len(set(types)), "a family is exposed twice"
            per_worker = requests_per_file(tmp)
            assert len([v for v in per_worker.values() if v > 0]) == 2, per_worker
            assert sum(per_worker.values()) == REQUESTS
        finally:
            assert gw.stop() == 0, gw.output()
        assert not metrics_dir.exists()
