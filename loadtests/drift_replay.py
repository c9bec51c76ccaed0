"""Replay reference-like, then shifted, traffic at a running gateway and show each feature's drift status.

    gateway serve --demo --drift-window-requests 500          # in one terminal
    .venv/bin/python -m loadtests.drift_replay                 # in another
        [--url http://127.0.0.1:8000] [--route churn] [--shift f3,f11] [--sigma 1.5] [--batch 50] [--seed 7]

Phase 1 sends one drift window of standard-normal rows (what the demo churn models' reference profile
was built from), phase 2 one window with the --shift features moved by --sigma standard deviations.
After each phase it waits for the window to close and prints PSI and status per feature from
GET /monitoring/drift, then the gateway_drift_status lines of GET /metrics for the shifted features:
the shifted ones go stable -> significant, the others stay put.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import httpx
import numpy as np


def drift_entries(client: httpx.Client, route: str) -> list[dict[str, Any]]:
    r = client.get("/monitoring/drift", params={"route": route, "history": "0"})
    r.raise_for_status()
    entries: list[dict[str, Any]] = r.json()["drift"]
    return entries


def window_rows(entry: dict[str, Any], fallback: int) -> int:
    rows = entry["policy"].get("window_requests")
    return int(rows) if rows else fallback


def replay(client: httpx.Client, route: str, names: list[str], rows: int, batch: int,
           shift: dict[int, float], rng: np.random.Generator) -> None:
    sent = 0
    while sent < rows:
        n = min(batch, rows - sent)
        x = rng.standard_normal((n, len(names)))
        for column, delta in shift.items():
            x[:, column] += delta
        r = client.post(f"/v1/models/{route}:predict", json={"instances": x.round(6).tolist()})
        if r.status_code != 200:
            raise SystemExit(f"POST /v1/models/{route}:predict answered {r.status_code}: {r.text[:300]}")
        sent += n


def wait_closed(client: httpx.Client, route: str, before: int, timeout_s: float) -> list[dict[str, Any]]:
    """The route's entries once one more window has closed (any version), or after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while True:
        entries = drift_entries(client, route)
        if sum(e["windows_closed"] for e in entries) > before or time.monotonic() > deadline:
            return entries
        time.sleep(0.1)


def statuses(entries: list[dict[str, Any]]) -> dict[tuple[str, str], tuple[float | None, str]]:
    """(version, feature) -> (psi, status) of the last closed window; '-' before any window closed."""
    out: dict[tuple[str, str], tuple[float | None, str]] = {}
    for entry in entries:
        for feature in entry["features"]:
            last = feature["last"]
            out[(entry["version"], feature["name"])] = (last["psi"], last["status"]) if last else (None, "-")
    return out


def show(phases: list[tuple[str, dict[tuple[str, str], tuple[float | None, str]]]], marked: set[str]) -> None:
    """One row per (version, feature): PSI and status after each phase; * marks the shifted features."""
    width = 26
    print(f"\n  {'version':<8}{'feature':<14}" + "".join(f"{title:<{width}}" for title, _ in phases))
    for key in phases[0][1]:
        cells = []
        for _, rows in phases:
            value, status = rows.get(key, (None, "-"))
            cells.append(f"{(f'{value:.4f} ' if value is not None else '') + status:<{width}}")
        version, name = key
        print((f"  {version:<8}{name + (' *' if name in marked else ''):<14}" + "".join(cells)).rstrip())


def scraped_status(client: httpx.Client, route: str, features: set[str]) -> list[str]:
    text = client.get("/metrics").text
    return [line for line in text.splitlines()
            if line.startswith(("gateway_drift_status{", "gateway_drift_psi{")) and f'route="{route}"' in line
            and any(f'feature="{f}"' in line for f in features)]


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m loadtests.drift_replay", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", default="http://127.0.0.1:8000")
    p.add_argument("--route", default="churn")
    p.add_argument("--shift", default="f3,f11", help="comma-separated features to shift in phase 2")
    p.add_argument("--sigma", type=float, default=1.5, help="shift in standard deviations")
    p.add_argument("--rows", type=int, default=1000, help="rows per phase when the route's window is by time")
    p.add_argument("--batch", type=int, default=50, help="rows per request")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for a window to close")
    a = p.parse_args(argv)
    rng = np.random.default_rng(a.seed)
    with httpx.Client(base_url=a.url, timeout=30) as client:
        entries = drift_entries(client, a.route)
        if not entries:
            print(f"route {a.route!r} has no drift tracking at {a.url} (no reference profile, or no such route)",
                  file=sys.stderr)
            return 1
        names = [f["name"] for f in entries[0]["features"] if f["role"] == "input"]
        shifted = [s for s in a.shift.split(",") if s]
        if unknown := [s for s in shifted if s not in names]:
            print(f"--shift: unknown feature(s) {unknown}; the route monitors {names}", file=sys.stderr)
            return 2
        rows = window_rows(entries[0], a.rows)
        marked = set(shifted)
        phases = [("before", statuses(entries))]
        for phase, shift in (("unshifted", {}), (f"+{a.sigma:g} sigma on *", {names.index(s): a.sigma for s in shifted})):
            before = sum(e["windows_closed"] for e in drift_entries(client, a.route))
            replay(client, a.route, names, rows, a.batch, shift, rng)
            entries = wait_closed(client, a.route, before, a.timeout)
            phases.append((f"after {rows} {phase}", statuses(entries)))
        print(f"route {a.route} at {a.url}: PSI and status of the last closed window (windows of {rows} rows)")
        show(phases, marked)
        print("\n/metrics:")
        for line in scraped_status(client, a.route, marked):
            print(f"  {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
