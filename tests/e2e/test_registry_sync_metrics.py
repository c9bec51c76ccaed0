"""Registry sync metrics over HTTP, with `serve --workers 2` on a PostgreSQL registry: the last-sync
timestamp advances while the registry answers, stands still while the database refuses connections
(so the lag Prometheus computes, time() - timestamp, grows past the poll interval), and advances again
once it is back; applied changes are counted by every worker."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import httpx
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.pool import NullPool

from tests.e2e.conftest import start_gateway
from tests.e2e.test_metrics_workers import wait_all_workers_ready

POLL_S = 0.1  # start_gateway's --poll-interval
LAST_SYNC = "gateway_registry_last_sync_timestamp_seconds"
APPLIED = "gateway_registry_changes_applied_total"


def scrape(url: str) -> dict[str, list[float]]:
    """The registry sync samples of one scrape, by sample name (one value per exposed series)."""
    with httpx.Client(base_url=url, timeout=10) as client:  # a fresh connection: either worker may answer
        r = client.get("/metrics")
    assert r.status_code == 200, r.text
    out: dict[str, list[float]] = {LAST_SYNC: [], APPLIED: []}
    for family in text_string_to_metric_families(r.text):
        for sample in family.samples:
            if sample.name in out:
                out[sample.name].append(sample.value)
    return out


def last_sync(url: str) -> float:
    (value,) = scrape(url)[LAST_SYNC]  # merged over the workers: one series, no pid label
    return value


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(POLL_S)
    raise AssertionError(f"{what} not within {timeout} s")


def set_connections(database_url: str, *, allow: bool) -> None:
    """Refusing: the database goes away as its clients see it (open sessions killed, new ones refused)."""
    target = sa.make_url(database_url)
    admin = sa.create_engine(target.set(database="postgres"), isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'ALTER DATABASE "{target.database}" ALLOW_CONNECTIONS {str(allow).lower()}')
            if not allow:
                conn.exec_driver_sql(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (target.database,)
                )
    finally:
        admin.dispose()


def test_sync_lag_grows_during_registry_outage_and_recovers(tmp_path: Path, fresh_postgres_url: str) -> None:
    """Two workers: the merged last-sync timestamp moves, freezes for the outage while the lag passes
    the poll interval many times over, then moves again; each worker's gauge file is merged by `livemin`;
    a route change is applied by both workers."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    gw = start_gateway(tmp_path / "gw", "--demo", "--workers", "2", GATEWAY_REGISTRY_URL=fresh_postgres_url,
                       TMPDIR=str(tmp))
    try:
        wait_all_workers_ready(gw.url)
        assert len(list(tmp.glob("gateway-metrics-*/gauge_livemin_*.db"))) == 2  # one per worker, merged by min
        first = last_sync(gw.url)
        assert abs(time.time() - first) < 60, "not a Unix timestamp of a recent sync"
        wait_for(lambda: last_sync(gw.url) > first, 10, "the last-sync timestamp advancing")

        applied = sum(scrape(gw.url)[APPLIED])
        assert applied >= 2, "each worker applies the registry at startup"
        policy = {"model": "churn", "arms": [{"version": "champion", "weight": 9}, {"version": "challenger", "weight": 1}]}
        r = httpx.put(f"{gw.url}/admin/routes/churn", json=policy, timeout=10)
        assert r.status_code == 200, r.text
        wait_for(lambda: sum(scrape(gw.url)[APPLIED]) >= applied + 2, 10, "both workers applying the change")

        set_connections(fresh_postgres_url, allow=False)
        try:
            def frozen() -> bool:
                before = last_sync(gw.url)
                time.sleep(5 * POLL_S)
                return last_sync(gw.url) == before

            wait_for(frozen, 15, "the last-sync timestamp standing still")
            stalled = last_sync(gw.url)
            time.sleep(10 * POLL_S)
            assert last_sync(gw.url) == stalled
            assert time.time() - stalled > 10 * POLL_S, "the lag grows past the poll interval"
            assert httpx.post(f"{gw.url}/v1/models/churn:predict", json={"instances": [[0.5] * 32]}).status_code == 200
        finally:
            set_connections(fresh_postgres_url, allow=True)
        wait_for(lambda: last_sync(gw.url) > stalled, 15, "the last-sync timestamp advancing after recovery")
    finally:
        assert gw.stop() == 0, gw.output()
