"""Feature reads are explained in metrics: defaulted values and fetch latency per route."""

from __future__ import annotations

import httpx

from tests.e2e.conftest import GatewayProcess


def sample(text: str, line_start: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(line_start))


def test_defaulted_features_and_fetch_latency_are_counted(demo_gateway: GatewayProcess) -> None:
    """An unknown user's 3 view features are served from defaults and counted; every read is timed."""
    before = httpx.get(f"{demo_gateway.url}/metrics").text
    r = httpx.post(f"{demo_gateway.url}/v1/models/fraud:predict",
                   json={"instances": [{"user_id": 987654, "amount": 10.0}, {"user_id": 42, "amount": 5.0}]})
    assert r.status_code == 200, r.text
    assert r.headers["x-gateway-features-defaulted"] == "3"
    after = httpx.get(f"{demo_gateway.url}/metrics").text
    defaulted = 'gateway_features_defaulted_total{route="fraud"}'
    fetches = 'gateway_feature_fetch_duration_seconds_count{route="fraud"}'
    assert sample(after, defaulted) - sample(before, defaulted) == 3
    assert sample(after, fetches) - sample(before, fetches) == 1
