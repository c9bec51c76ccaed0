"""Promotions reach a running gateway without a restart and without a failed request."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np

from gateway.demo import build_mlp
from tests.e2e.conftest import GatewayProcess, start_gateway

ROW = {"instances": [[0.5] * 32]}


class Traffic:
    """Threads sending predictions in a loop, recording (time answered, served version, time sent) or the error."""

    def __init__(self, url: str, threads: int = 4) -> None:
        self.url = url
        self.stop = threading.Event()
        self.seen: list[tuple[float, str, float]] = []
        self.errors: list[str] = []
        self.threads = [threading.Thread(target=self._loop, daemon=True) for _ in range(threads)]

    def _loop(self) -> None:
        with httpx.Client(base_url=self.url, timeout=10) as client:
            while not self.stop.is_set():
                sent = time.monotonic()
                try:
                    r = client.post("/v1/models/churn:predict", json=ROW)
                except httpx.HTTPError as exc:
                    self.errors.append(repr(exc))
                    continue
                if r.status_code != 200:
                    self.errors.append(f"{r.status_code} {r.text}")
                else:
                    self.seen.append((time.monotonic(), r.headers["x-gateway-model-version"], sent))

    def __enter__(self) -> Traffic:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=30)


def wait_for_version(traffic: Traffic, version: str, since: float, timeout: float) -> float:
    """Seconds from `since` until a response served `version`; fails after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for t, v, _ in list(traffic.seen):
            if t >= since and v == version:
                return t - since
        time.sleep(0.01)
    raise AssertionError(f"version {version} not served within {timeout} s; saw {Counter(v for _, v, _ in traffic.seen)}")


def test_alias_promotion_under_load_switches_within_2s_with_no_errors(tmp_path: Path) -> None:
    """Moving the champion alias under concurrent traffic switches the route within 2 s, zero errors."""
    gw = start_gateway(tmp_path / "gw", "--demo")
    try:
        with Traffic(gw.url) as traffic:
            time.sleep(0.5)
            promoted_at = time.monotonic()
            gw.cli("models", "promote", "churn", "2", "--alias", "champion")
            delay = wait_for_version(traffic, "2", promoted_at, timeout=2.0)
            time.sleep(0.5)  # keep traffic flowing after the swap
        assert traffic.errors == []
        switched = promoted_at + delay
        after = [v for _, v, sent in traffic.seen if sent > switched]
        assert after and set(after) == {"2"}, "every request sent after the first answer from v2 is served by v2"
        assert len(traffic.seen) > 50
    finally:
        assert gw.stop() == 0


def test_stage_promotion_is_followed_when_no_champion(tmp_path: Path) -> None:
    """Without a champion alias the route serves Production; a new Production version takes over."""
    gw = start_gateway(tmp_path / "gw", "--demo")
    try:
        gw.cli("models", "promote", "ticket_router", "1", "--stage", "Archived")
        model = tmp_path / "router2.onnx"
        from gateway.demo import build_ticket_router

        model.write_bytes(build_ticket_router())
        gw.cli("models", "register", "ticket_router", str(model))
        gw.cli("models", "promote", "ticket_router", "2", "--stage", "Production")
        deadline = time.monotonic() + 2.0
        version = None
        while time.monotonic() < deadline:
            r = httpx.post(f"{gw.url}/v1/models/ticket_router:predict",
                           json={"instances": [{"category": ["bug"], "priority": [1]}]})
            assert r.status_code == 200, r.text
            version = r.headers["x-gateway-model-version"]
            if version == "2":
                break
            time.sleep(0.05)
        assert version == "2"
    finally:
        gw.stop()


def promote_and_wait_for_load_failure(gw: GatewayProcess, version: str) -> dict[str, object]:
    """Promote churn `version` to champion; /health once it lists the failed load (bounded), after a
    further 0.3 s of traffic on whatever the route then serves."""
    gw.cli("models", "promote", "churn", version, "--alias", "champion")
    deadline = time.monotonic() + 5
    health: dict[str, object] = {}
    while time.monotonic() < deadline:
        health = httpx.get(f"{gw.url}/health").json()
        if f"churn/{version}" in health["load_failures"]:  # type: ignore[operator]
            break
        time.sleep(0.05)
    time.sleep(0.3)
    return health


def test_version_that_fails_to_load_leaves_route_on_previous(tmp_path: Path) -> None:
    """A promoted version whose artifact is corrupt never replaces the serving one, and /health says why."""
    gw: GatewayProcess = start_gateway(tmp_path / "gw", "--demo")
    try:
        good = tmp_path / "v3.onnx"
        good.write_bytes(build_mlp(3))
        gw.cli("models", "register", "churn", str(good))
        digest = hashlib.sha256(good.read_bytes()).hexdigest()
        blobs = [p for p in (gw.data_dir / "artifacts").rglob("*") if p.is_file() and p.name.startswith(digest)]
        assert len(blobs) == 1, "the registered file is stored content-addressed by its sha256"
        blobs[0].write_bytes(b"corrupted on disk")
        with Traffic(gw.url, threads=2) as traffic:
            health = promote_and_wait_for_load_failure(gw, "3")
        assert "churn/3" in health["load_failures"], health  # type: ignore[operator]
        assert health["routes"]["churn"]["version"] == "1"  # type: ignore[index]
        assert traffic.errors == []
        assert {v for _, v, _ in traffic.seen} == {"1"}
        assert "failed to load" in gw.output()
    finally:
        gw.stop()


def test_version_with_a_wrong_signature_is_refused_at_load(tmp_path: Path) -> None:
    """A promoted version whose registry row declares a signature its file does not have (a row written
    by another tool, say) is refused at load: the route keeps serving the previous version without a
    failed request, and /health, /metrics and the log name the mismatch."""
    gw: GatewayProcess = start_gateway(tmp_path / "gw", "--demo")
    try:
        good = tmp_path / "v3.onnx"
        good.write_bytes(build_mlp(3))
        gw.cli("models", "register", "churn", str(good))
        database = sqlite3.connect(gw.data_dir / "registry.db")
        try:
            with database:
                (text,) = database.execute(
                    "SELECT signature FROM model_versions WHERE name = 'churn' AND version = 3").fetchone()
                signature = json.loads(text)
                signature["inputs"][0]["name"] = "renamed_input"
                database.execute("UPDATE model_versions SET signature = ? WHERE name = 'churn' AND version = 3",
                                 (json.dumps(signature),))
        finally:
            database.close()
        with Traffic(gw.url, threads=2) as traffic:
            health = promote_and_wait_for_load_failure(gw, "3")
        failures: dict[str, str] = health["load_failures"]  # type: ignore[assignment]
        assert "the registry's signature says" in failures["churn/3"] and "renamed_input" in failures["churn/3"], health
        assert health["routes"]["churn"]["version"] == "1"  # type: ignore[index]
        assert traffic.errors == []
        assert {v for _, v, _ in traffic.seen} == {"1"}
        assert 'gateway_model_loads_total{model="churn",outcome="failed",version="3"} 1.0' in httpx.get(
            f"{gw.url}/metrics").text
        assert "failed to load churn v3" in gw.output()
    finally:
        gw.stop()


def test_ready_only_after_warm_models(tmp_path: Path) -> None:
    """The first 200 from /v2/health/ready comes when inference already works."""
    gw = start_gateway(tmp_path / "gw", "--demo", wait_ready=False)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{gw.url}/v2/health/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.01)
        r = httpx.post(f"{gw.url}/v1/models/churn:predict", json={"instances": np.zeros((2, 32)).tolist()})
        assert r.status_code == 200, r.text
    finally:
        gw.stop()
