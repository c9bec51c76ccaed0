"""Drift through real HTTP: samples sent to /v1 predict, PSI read back from /monitoring/drift and
/metrics, checked against numpy on the published edges and shares (an independent computation)."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import numpy.typing as npt
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import RedisServer
from tests.e2e.conftest import GatewayProcess, start_gateway

WINDOW = 500
PER_REQUEST = 50
FEATURES = [f"f{i}" for i in range(32)]
SHIFTED = ("f3", "f11", "f27")
SHIFT_SIGMA = 1.5
STATUS_CODES = {"insufficient_data": -1, "stable": 0, "moderate": 1, "significant": 2}
WAIT_S = 15.0


def put_route(url: str, route: str, window_requests: int) -> None:
    policy = {"model": "churn", "arms": [{"version": "1", "weight": 1}], "drift": {"window_requests": window_requests}}
    r = httpx.put(f"{url}/admin/routes/{route}", json=policy, timeout=10)
    assert r.status_code == 200, r.text


def wait_for_feed(url: str, route: str) -> None:
    """Until the gateway tracks drift for the route (it follows the registry by polling)."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        if httpx.get(f"{url}/monitoring/drift", params={"route": route}, timeout=10).json()["drift"]:
            return
        time.sleep(0.05)
    raise AssertionError(f"{url} never tracked drift for route {route}")


def send(url: str, route: str, rows: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """POST the rows in requests of PER_REQUEST; returns the predictions, one per row."""
    predictions = []
    with httpx.Client(base_url=url, timeout=30) as client:
        for start in range(0, rows.shape[0], PER_REQUEST):
            # float(x) of a float32 is exact, and the gateway parses it back to the same float32.
            body = {"instances": [[float(x) for x in row] for row in rows[start : start + PER_REQUEST]]}
            r = client.post(f"/v1/models/{route}:predict", json=body)
            assert r.status_code == 200, r.text
            predictions.append(np.asarray(r.json()["predictions"], np.float32).reshape(-1))
    return np.concatenate(predictions)


def closed_window(url: str, route: str, windows: int = 1) -> dict[str, Any]:
    """The route's /monitoring/drift entry once `windows` windows have closed (bounded wait)."""
    deadline = time.monotonic() + WAIT_S
    while True:
        (entry,) = httpx.get(f"{url}/monitoring/drift", params={"route": route}, timeout=10).json()["drift"]
        if entry["windows_closed"] >= windows:
            return dict(entry)
        if time.monotonic() > deadline:
            raise AssertionError(f"route {route}: {entry['windows_closed']} windows closed after {WAIT_S} s: {entry}")
        time.sleep(0.05)


def numpy_psi(edges: Sequence[float | str], expected: Sequence[float], values: npt.NDArray[Any], eps: float) -> tuple[
        npt.NDArray[np.int64], float]:
    """Counts in the published bins (left-closed, open outer bins) and PSI with eps flooring and renormalisation."""
    full = np.array([float(e) for e in edges])  # "-Infinity" / "Infinity" parse with float()
    assert full[0] == -np.inf and full[-1] == np.inf
    bins = np.searchsorted(full[1:-1], values.astype(np.float64), side="right")
    counts = np.bincount(bins, minlength=full.size - 1)
    a = np.maximum(counts / counts.sum(), eps)
    a = a / a.sum()
    e = np.maximum(np.asarray(expected, np.float64), eps)
    e = e / e.sum()
    return counts, float(np.sum((a - e) * np.log(a / e)))


def check_against_numpy(entry: dict[str, Any], inputs: npt.NDArray[np.float32], outputs: npt.NDArray[np.float32]) -> None:
    """Every column's published counts and PSI equal numpy's on the same edges and shares (to 1e-9)."""
    eps = entry["thresholds"]["eps"]
    columns = {name: inputs[:, i] for i, name in enumerate(FEATURES)} | {"probability": outputs}
    assert [f["name"] for f in entry["features"]] == [*FEATURES, "probability"]
    for feature in entry["features"]:
        counts, value = numpy_psi(feature["edges"], feature["expected"], columns[feature["name"]], eps)
        last = feature["last"]
        assert last["n"] == inputs.shape[0]
        assert last["counts"] == counts.tolist(), feature["name"]
        assert abs(last["psi"] - value) <= 1e-9, (feature["name"], last["psi"], value)


def statuses(entry: dict[str, Any]) -> dict[str, str]:
    return {f["name"]: f["last"]["status"] for f in entry["features"] if f["role"] == "input"}


def scraped_drift(url: str, route: str) -> dict[tuple[str, str], float]:
    """(metric, feature) -> value of gateway_drift_psi and gateway_drift_status for the route."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    found = {}
    for family in text_string_to_metric_families(text):
        if family.name in ("gateway_drift_psi", "gateway_drift_status"):
            for s in family.samples:
                if s.labels["route"] == route:
                    found[(s.name, s.labels["feature"])] = s.value
    return found


def sample(seed: int, rows: int = WINDOW, shifted: Sequence[str] = ()) -> npt.NDArray[np.float32]:
    """Standard-normal rows like the demo reference, with the named features moved by SHIFT_SIGMA."""
    x = np.random.default_rng(seed).standard_normal((rows, len(FEATURES)))
    for name in shifted:
        x[:, FEATURES.index(name)] += SHIFT_SIGMA
    return x.astype(np.float32)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    gw = start_gateway(tmp_path_factory.mktemp("drift-gateway"), "--demo", "--drift-window-requests", str(WINDOW),
                       "--drift-flush-interval", "0.05")
    yield gw
    gw.stop()


class TestDriftOverHttp:
    def test_unshifted_sample_matches_numpy_and_stays_stable(self, gateway: GatewayProcess) -> None:
        """A reference-like sample: PSI per column equals numpy's; no feature is significant, most are stable."""
        put_route(gateway.url, "drift_same", WINDOW)
        wait_for_feed(gateway.url, "drift_same")
        inputs = sample(1)
        outputs = send(gateway.url, "drift_same", inputs)
        entry = closed_window(gateway.url, "drift_same")
        assert entry["last"]["rows"] == WINDOW
        check_against_numpy(entry, inputs, outputs)
        status = statuses(entry)
        assert "significant" not in status.values(), status
        assert sum(s == "stable" for s in status.values()) >= 0.9 * len(FEATURES), status

    def test_shifted_features_and_only_those_are_significant(self, gateway: GatewayProcess) -> None:
        """Three features moved by +1.5 sigma read significant, the other 29 do not; PSI still equals numpy's."""
        put_route(gateway.url, "drift_shift", WINDOW)
        wait_for_feed(gateway.url, "drift_shift")
        inputs = sample(2, shifted=SHIFTED)
        outputs = send(gateway.url, "drift_shift", inputs)
        entry = closed_window(gateway.url, "drift_shift")
        check_against_numpy(entry, inputs, outputs)
        status = statuses(entry)
        assert {name for name, s in status.items() if s == "significant"} == set(SHIFTED), status
        assert entry["last"]["status"] == "significant"
        assert entry["last"]["worst"] in SHIFTED

    def test_metrics_gauges_match_the_json(self, gateway: GatewayProcess) -> None:
        """gateway_drift_psi and gateway_drift_status on /metrics carry the same values as /monitoring/drift."""
        put_route(gateway.url, "drift_metrics", WINDOW)
        wait_for_feed(gateway.url, "drift_metrics")
        send(gateway.url, "drift_metrics", sample(3, shifted=SHIFTED[:1]))
        entry = closed_window(gateway.url, "drift_metrics")
        scraped = scraped_drift(gateway.url, "drift_metrics")
        for feature in entry["features"]:
            last = feature["last"]
            assert scraped[("gateway_drift_psi", feature["name"])] == pytest.approx(last["psi"], rel=0, abs=1e-12)
            assert scraped[("gateway_drift_status", feature["name"])] == STATUS_CODES[last["status"]]
        assert scraped[("gateway_drift_status", SHIFTED[0])] == STATUS_CODES["significant"]

    def test_small_window_is_insufficient_data(self, gateway: GatewayProcess) -> None:
        """A 50-row window is below the minimum for 10 bins: every column reads insufficient_data, even shifted
        ones, with PSI still published; no false alarm."""
        put_route(gateway.url, "drift_small", PER_REQUEST)
        wait_for_feed(gateway.url, "drift_small")
        send(gateway.url, "drift_small", sample(4, rows=PER_REQUEST, shifted=SHIFTED))
        entry = closed_window(gateway.url, "drift_small")
        assert all(f["min_rows"] > PER_REQUEST for f in entry["features"])
        assert {f["last"]["status"] for f in entry["features"]} == {"insufficient_data"}
        assert all(f["last"]["psi"] is not None for f in entry["features"])
        assert entry["last"]["status"] == "insufficient_data"
        scraped = scraped_drift(gateway.url, "drift_small")
        assert scraped[("gateway_drift_status", SHIFTED[0])] == STATUS_CODES["insufficient_data"]


class TestDriftMergedInRedis:
    def test_two_gateways_publish_the_psi_of_the_combined_sample(self, tmp_path: Path, redis_url: str,
                                                                 redis_server: RedisServer) -> None:
        """Two gateways on one registry and one Redis each serve half a window; both close the merged
        window, and its PSI equals numpy's on the combined sample (to 1e-9)."""
        data = tmp_path / "gw"
        flags = ("--demo", "--redis", redis_url, "--drift-window-requests", str(WINDOW), "--drift-flush-interval", "0.05")
        first = start_gateway(data, *flags)
        try:
            second = start_gateway(data, *flags)
            try:
                put_route(first.url, "drift_shared", WINDOW)
                for gw in (first, second):
                    wait_for_feed(gw.url, "drift_shared")
                inputs = sample(5, shifted=SHIFTED[:2])
                half = WINDOW // 2
                outputs = np.concatenate([send(first.url, "drift_shared", inputs[:half]),
                                          send(second.url, "drift_shared", inputs[half:])])
                entries = [closed_window(gw.url, "drift_shared") for gw in (first, second)]
                for entry in entries:
                    assert entry["last"]["rows"] == WINDOW
                    check_against_numpy(entry, inputs, outputs)
                    assert {n for n, s in statuses(entry).items() if s == "significant"} == set(SHIFTED[:2])
                psis = [[f["last"]["psi"] for f in entry["features"]] for entry in entries]
                assert psis[0] == psis[1]
            finally:
                second.stop()
        finally:
            first.stop()


def test_sigterm_flushes_the_served_rows(tmp_path: Path, redis_url: str, redis_server: RedisServer) -> None:
    """With no periodic flush due (interval 60 s), rows served before SIGTERM reach the shared Redis
    counts on the way out: the window holds exactly the rows served, bin by bin as numpy bins them."""
    import redis

    gw = start_gateway(tmp_path / "gw", "--demo", "--redis", redis_url, "--drift-flush-interval", "60")
    put_route(gw.url, "drift_drain", WINDOW)
    wait_for_feed(gw.url, "drift_drain")
    (entry,) = httpx.get(f"{gw.url}/monitoring/drift", params={"route": "drift_drain"}, timeout=10).json()["drift"]
    edges = {f["name"]: f["edges"] for f in entry["features"]}
    inputs = sample(9, rows=300)
    send(gw.url, "drift_drain", inputs)
    client = redis.Redis.from_url(redis_url)
    try:
        assert not client.keys("gateway:drift:drift_drain:*:w:*"), "counts were flushed before the signal"
        assert gw.stop() == 0, gw.output()
        (key,) = client.keys("gateway:drift:drift_drain:*:w:0")
        counts = {k.decode(): int(v) for k, v in client.hgetall(key).items()}
    finally:
        client.close()
    assert counts["__rows__"] == 300
    for name in ("f0", SHIFTED[0]):
        full = np.array([float(e) for e in edges[name]])
        want = np.bincount(np.searchsorted(full[1:-1], inputs[:, FEATURES.index(name)].astype(np.float64), side="right"),
                           minlength=len(full) - 1)
        got = [counts.get(f"{name}:{i}", 0) for i in range(len(full) - 1)]
        assert got == want.tolist(), name
