"""Render deploy/grafana/gateway-dashboard.json to one PNG without Grafana or Prometheus.

    .venv/bin/pip install -e '.[docs]'                      # matplotlib
    .venv/bin/python -m deploy.grafana.render               # -> docs/dashboard.png, about 2 minutes
        [--seconds 100] [--out docs/dashboard.png] [--outage-postgres postgresql://postgres@127.0.0.1:5432/postgres]
        [--save-scrapes run.json] [--from-scrapes run.json]

Starts a real `gateway serve --demo` on 127.0.0.1 (a fresh data directory), drives a traffic mix through a
timeline (a shadow, a 90/10 then 50/50 canary, the shifted drift replay of loadtests/drift_replay.py, a
burst past the queue limit, and with --outage-postgres a registry database that refuses connections for a
while), scrapes /metrics every second, then evaluates each panel's PromQL over the scrapes
(deploy/grafana/promql.py) and draws the panels where the dashboard's gridPos puts them
(deploy/grafana/plot.py).
"""

from __future__ import annotations

import argparse
import json
import secrets
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from deploy.grafana.promql import Scrape, labels_of
from loadtests.drift_replay import drift_entries, replay

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "gateway-dashboard.json"
SHIFT = ("f3", "f11")
SIGMA = 1.5
MAX_QUEUE_ROWS = 192
DRIFT_WINDOW_ROWS = 400


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def gateway(data_dir: Path, registry: str | None) -> Iterator[str]:
    """A `gateway serve --demo` subprocess on a free loopback port; yields its base URL once ready."""
    port = free_port()
    args = [sys.executable, "-m", "gateway", "serve", "--demo", "--port", str(port), "--poll-interval", "0.5",
            "--drift-window-requests", str(DRIFT_WINDOW_ROWS), "--max-queue-rows", str(MAX_QUEUE_ROWS),
            "--data-dir", str(data_dir), *(["--registry", registry] if registry else [])]
    log = (data_dir / "gateway.log").open("wb")
    proc = subprocess.Popen(args, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"gateway did not become ready:\n{(data_dir / 'gateway.log').read_text()[-3000:]}")
            try:
                if httpx.get(f"{url}/v2/health/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def parse_scrape(t: float, text: str) -> Scrape:
    samples: dict[str, list[tuple[tuple[tuple[str, str], ...], float]]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples.setdefault(s.name, []).append((labels_of(s.name, s.labels), float(s.value)))
    return Scrape(t, samples)


class Loop(threading.Thread):
    """Calls `step` until stopped; a step's HTTP error is counted, never fatal (the burst expects 503s)."""

    def __init__(self, step: Callable[[], None], stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.step, self.stop_event, self.errors = step, stop, 0

    def run(self) -> None:
        while not self.stop_event.is_set():
            try:
                self.step()
            except (httpx.HTTPError, SystemExit):
                self.errors += 1


class Run:
    """The traffic mix and the timeline; `scrapes` and `events` are what the plot needs."""

    def __init__(self, url: str, seconds: float) -> None:
        self.url, self.seconds = url, seconds
        self.stop = threading.Event()
        self.shift: dict[int, float] = {}
        self.burst = threading.Event()
        self.scrapes: list[Scrape] = []
        self.events: list[tuple[float, str]] = []
        self.rng = np.random.default_rng(7)
        with httpx.Client(base_url=url, timeout=10) as client:
            entries = drift_entries(client, "churn")
        self.names = [f["name"] for f in entries[0]["features"] if f["role"] == "input"]

    def scraper(self) -> None:
        with httpx.Client(base_url=self.url, timeout=10) as client:
            next_at = time.monotonic()
            while not self.stop.is_set():
                self.scrapes.append(parse_scrape(time.time(), client.get("/metrics").text))
                next_at += 1.0
                self.stop.wait(max(0.0, next_at - time.monotonic()))

    def churn(self, client: httpx.Client) -> Callable[[], None]:
        def step() -> None:  # the drift replay's requests: 8 rows each, shifted once the timeline says so
            replay(client, "churn", self.names, 40, 8, dict(self.shift), np.random.default_rng(self.rng.integers(1 << 31)))
            time.sleep(0.05)
        return step

    def tickets(self, client: httpx.Client) -> Callable[[], None]:
        categories = ("billing", "bug", "outage", "question")

        def step() -> None:
            i = int(self.rng.integers(100))
            if i < 3:  # a malformed request now and then: 400, counted by status code
                client.post("/v1/models/ticket_router:predict", json={"instances": [{"category": ["bug"]}]})
            elif i < 20:  # users and amounts as in the fraud model's reference sample (gateway/demo.py)
                user = {"user_id": int(self.rng.integers(1, 1001)), "amount": round(float(self.rng.gamma(2.0, 30.0)), 2)}
                client.post("/v1/models/fraud:predict", json={"instances": [user]})
            else:
                ticket = {"category": [categories[i % 4]], "priority": [i % 5]}
                client.post("/v1/models/ticket_router:predict", json={"instances": [ticket]})
            time.sleep(0.02)
        return step

    def overload(self, client: httpx.Client) -> Callable[[], None]:
        rng = np.random.default_rng(int(self.rng.integers(1 << 31)))

        def step() -> None:  # only during the burst: more rows in flight than --max-queue-rows
            if not self.burst.wait(0.2):
                return
            rows = rng.standard_normal((64, len(self.names))).round(4)  # like the reference: load, not drift
            client.post("/v1/models/churn:predict", json={"instances": rows.tolist()})
        return step

    def at(self, started: float, fraction: float, label: str, action: Callable[[], None]) -> None:
        self.stop.wait(max(0.0, started + fraction * self.seconds - time.monotonic()))
        action()
        self.events.append((time.time(), label))
        print(f"  {time.monotonic() - started:5.1f} s  {label}", flush=True)

    def drive(self, outage: tuple[Callable[[], None], Callable[[], None]] | None) -> None:
        clients = [httpx.Client(base_url=self.url, timeout=30) for _ in range(12)]
        admin = clients[0]

        def put(policy: dict[str, Any]) -> Callable[[], None]:
            def action() -> None:
                r = admin.put("/admin/routes/churn", json=policy)
                r.raise_for_status()
            return action

        def shift() -> None:
            self.shift = {self.names.index(f): SIGMA for f in SHIFT}

        loops = [Loop(self.churn(clients[1]), self.stop), Loop(self.churn(clients[2]), self.stop),
                 Loop(self.tickets(clients[3]), self.stop), *(Loop(self.overload(c), self.stop) for c in clients[4:])]
        scraper = threading.Thread(target=self.scraper, daemon=True)
        started = time.monotonic()
        scraper.start()
        for loop in loops:
            loop.start()
        try:
            self.at(started, 0.10, "shadow v2 on 50% of churn", put(
                {"model": "churn", "arms": [{"version": "1", "weight": 1}], "shadows": [{"version": "2", "sample": 0.5}]}))
            self.at(started, 0.25, "canary 90/10", put(
                {"model": "churn", "arms": [{"version": "1", "weight": 90}, {"version": "2", "weight": 10}]}))
            self.at(started, 0.40, "canary 50/50", put(
                {"model": "churn", "arms": [{"version": "1", "weight": 50}, {"version": "2", "weight": 50}]}))
            self.at(started, 0.50, f"drift: {', '.join(SHIFT)} +{SIGMA:g} sigma", shift)
            self.at(started, 0.62, "burst past the queue limit", self.burst.set)
            self.at(started, 0.67, "burst over", self.burst.clear)
            if outage is not None:
                self.at(started, 0.74, "registry database down", outage[0])
                self.at(started, 0.88, "registry back", outage[1])
            self.stop.wait(max(0.0, started + self.seconds - time.monotonic()))
        finally:
            self.burst.set()  # release the burst loops so they see the stop
            self.stop.set()
            if outage is not None:
                outage[1]()
            for loop in loops:
                loop.join(timeout=30)
            scraper.join(timeout=30)
            for c in clients:
                c.close()


@contextmanager
def outage_database(admin_url: str) -> Iterator[tuple[str, tuple[Callable[[], None], Callable[[], None]]]]:
    """A PostgreSQL database created for the run (dropped after it), and (refuse, allow) connections to it."""
    import sqlalchemy as sa
    from sqlalchemy.pool import NullPool

    url = sa.make_url(admin_url.replace("postgresql://", "postgresql+psycopg://", 1))
    name = f"gateway_render_{secrets.token_hex(4)}"
    engine = sa.create_engine(url, isolation_level="AUTOCOMMIT", poolclass=NullPool)

    def sql(*statements: str) -> None:
        with engine.connect() as conn:
            for statement in statements:
                conn.exec_driver_sql(statement)

    sql(f'CREATE DATABASE "{name}"')
    refuse = lambda: sql(  # noqa: E731
        f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false',
        f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'",
    )
    allow = lambda: sql(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')  # noqa: E731
    try:
        yield url.set(database=name).render_as_string(hide_password=False), (refuse, allow)
    finally:
        sql(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true', f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        engine.dispose()


def save(path: Path, scrapes: list[Scrape], events: list[tuple[float, str]]) -> None:
    data: dict[str, Any] = {"events": events, "scrapes": [
        {"t": s.t, "samples": {name: [[dict(labels), v] for labels, v in rows] for name, rows in s.samples.items()}}
        for s in scrapes
    ]}
    path.write_text(json.dumps(data))


def load(path: Path) -> tuple[list[Scrape], list[tuple[float, str]]]:
    data = json.loads(path.read_text())
    scrapes = [
        Scrape(s["t"], {name: [(tuple(sorted(labels.items())), float(v)) for labels, v in rows]
                        for name, rows in s["samples"].items()})
        for s in data["scrapes"]
    ]
    return scrapes, [(float(t), str(label)) for t, label in data["events"]]


def record(seconds: float, outage_admin_url: str | None) -> tuple[list[Scrape], list[tuple[float, str]]]:
    with tempfile.TemporaryDirectory(prefix="gateway-render-") as tmp:
        if outage_admin_url:
            with outage_database(outage_admin_url) as (registry, outage), gateway(Path(tmp), registry) as url:
                run = Run(url, seconds)
                run.drive(outage)
        else:
            with gateway(Path(tmp), None) as url:
                run = Run(url, seconds)
                run.drive(None)
    return run.scrapes, run.events


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m deploy.grafana.render", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=100.0, help="length of the recorded run")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "dashboard.png")
    p.add_argument("--outage-postgres", metavar="ADMIN_URL",
                   help="serve from a PostgreSQL database created here and refuse its connections for a while")
    p.add_argument("--save-scrapes", type=Path, help="also write the scrapes and events as JSON")
    p.add_argument("--from-scrapes", type=Path, help="plot saved scrapes instead of running a gateway")
    p.add_argument("--dpi", type=int, default=80)
    a = p.parse_args(argv)
    from deploy.grafana.plot import plot_dashboard  # matplotlib: the docs extra

    if a.from_scrapes:
        scrapes, events = load(a.from_scrapes)
    else:
        print(f"recording {a.seconds:g} s of traffic against a fresh `gateway serve --demo`", flush=True)
        scrapes, events = record(a.seconds, a.outage_postgres)
        if a.save_scrapes:
            save(a.save_scrapes, scrapes, events)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    plot_dashboard(json.loads(DASHBOARD.read_text()), scrapes, events, a.out, dpi=a.dpi)
    print(f"wrote {a.out} ({a.out.stat().st_size // 1024} KiB) from {len(scrapes)} scrapes", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
