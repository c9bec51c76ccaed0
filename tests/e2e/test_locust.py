"""A short headless locust run of loadtests/locustfile.py's default mix against a plain `gateway serve --demo`
(no token, no Redis): zero failures, every default request ran, opt-in users stayed out, the route came back."""

from __future__ import annotations

import csv
import importlib.util
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import GatewayProcess, start_gateway

ROOT = Path(__file__).resolve().parents[2]
LOCUSTFILE = ROOT / "loadtests" / "locustfile.py"
RUN_TIME = "20s"
DEFAULT_REQUESTS = {
    ("POST", "/v1/models/churn:predict"),
    ("POST", "/v1/models/ticket_router:predict"),
    ("POST", "/v2/models/churn/infer"),
    ("POST", "/v2/models/ticket_router/infer"),
    ("GET", "/admin/routes/[route]"),
    ("PUT", "/admin/routes/[route] canary 10%"),
    ("PUT", "/admin/routes/[route] canary 50%"),
    ("PUT", "/admin/routes/[route] canary 100%"),
    ("DELETE", "/admin/routes/[route] restore"),
}


@dataclass
class LocustRun:
    """The finished run: locust's exit status and output, its stats rows by (method, name), the gateway."""

    proc: subprocess.CompletedProcess[str]
    stats: dict[tuple[str, str], dict[str, str]]
    gateway: GatewayProcess

    def explain(self) -> str:
        return f"locust exited {self.proc.returncode}:\n{self.proc.stdout[-4000:]}\n{self.proc.stderr[-4000:]}"


@pytest.fixture(scope="module")
def locust_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocustRun]:
    """`locust --headless -u 20 -r 10 -t 20s` with no tags and no LOCUST_*/GATEWAY_* variables: the default mix."""
    # find_spec, not import: importing locust here would monkey-patch this process with gevent
    assert importlib.util.find_spec("locust") is not None, "locust is missing: pip install -e '.[test]'"
    tmp = tmp_path_factory.mktemp("locust")
    gw = start_gateway(tmp / "gw", "--demo")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LOCUST_", "GATEWAY_"))}
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "-u", "20", "-r", "10",
             "-t", RUN_TIME, "--host", gw.url, "--csv", str(tmp / "run"), "--only-summary"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=90,
        )
        stats_file = tmp / "run_stats.csv"
        assert stats_file.exists(), f"no {stats_file.name}: " + LocustRun(proc, {}, gw).explain()
        with stats_file.open(newline="") as f:
            stats = {(row["Type"], row["Name"]): row for row in csv.DictReader(f)}
        yield LocustRun(proc, stats, gw)
    finally:
        gw.stop()


def test_default_mix_runs_without_failures(locust_run: LocustRun) -> None:
    """The Aggregated row counts requests and no failures, and locust exits 0."""
    total = locust_run.stats[("", "Aggregated")]
    assert int(total["Request Count"]) > 0, locust_run.explain()
    assert int(total["Failure Count"]) == 0, locust_run.explain()
    assert locust_run.proc.returncode == 0, locust_run.explain()


@pytest.mark.parametrize(("method", "name"), sorted(DEFAULT_REQUESTS))
def test_every_default_request_ran(locust_run: LocustRun, method: str, name: str) -> None:
    """Each request of the default mix (v1, v2 and every canary step) was made at least once."""
    row = locust_run.stats.get((method, name))
    assert row is not None, f"{method} {name} missing from {sorted(locust_run.stats)}"
    assert int(row["Request Count"]) > 0


def test_opt_in_users_stay_out_of_the_default_mix(locust_run: LocustRun) -> None:
    """No entity-keyed or tracking request (tags `features`, `tracking`) ran without being asked for."""
    assert set(locust_run.stats) - {("", "Aggregated")} == DEFAULT_REQUESTS


def test_canary_route_is_restored_after_the_run(locust_run: LocustRun) -> None:
    """The churn route ends with no stored policy, as it began, and the audit shows the steps happened."""
    url = locust_run.gateway.url
    view = httpx.get(f"{url}/admin/routes/churn", timeout=10).json()
    assert view["policy"] is None
    assert view["serving"]["arms"][0]["arm"] == "default"
    entries = httpx.get(f"{url}/admin/audit", params={"route": "churn", "limit": 1000}, timeout=10).json()["entries"]
    assert len(entries) >= 4
