"""KServe v1 predict and raw-HTTP error handling against a real `gateway serve --demo`."""

from __future__ import annotations

import gzip

import httpx
import numpy as np
import onnxruntime as ort
import orjson
import pytest

from gateway.demo import build_mlp
from tests.e2e.conftest import GatewayProcess


@pytest.fixture(scope="module")
def http(demo_gateway: GatewayProcess) -> httpx.Client:
    return httpx.Client(base_url=demo_gateway.url, timeout=30)


def churn_expected(rows: list[list[float]]) -> np.ndarray:
    session = ort.InferenceSession(build_mlp(1), providers=["CPUExecutionProvider"])
    return session.run(None, {"features": np.asarray(rows, dtype=np.float32)})[0]


class TestPredict:
    def test_instances_give_predictions(self, http: httpx.Client) -> None:
        """{"instances": rows} answers one prediction per row, equal to onnxruntime's."""
        rows = np.random.default_rng(3).standard_normal((4, 32)).round(3).tolist()
        r = http.post("/v1/models/churn:predict", json={"instances": rows})
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == "application/json"
        assert r.headers["x-gateway-model-version"] == "1"
        predictions = r.json()["predictions"]
        np.testing.assert_allclose(np.asarray(predictions, dtype=np.float32), churn_expected(rows), rtol=1e-5)

    def test_multi_input_instances_are_dicts(self, http: httpx.Client) -> None:
        """A multi-input model takes dict instances and answers dict predictions."""
        body = {"instances": [{"category": ["bug"], "priority": [4]}, {"category": ["question"], "priority": [0]}]}
        r = http.post("/v1/models/ticket_router:predict", json=body)
        assert r.status_code == 200, r.text
        assert r.json()["predictions"] == [{"score": [24], "queue": ["support"]}, {"score": [40], "queue": ["oncall"]}]

    def test_model_status(self, http: httpx.Client) -> None:
        """GET /v1/models/{name} reports the model ready; /v1/models lists the routes."""
        assert http.get("/v1/models/churn").json() == {"name": "churn", "ready": True}
        assert set(http.get("/v1/models").json()["models"]) >= {"churn", "ticket_router"}


class TestBadInput:
    @pytest.mark.parametrize(
        ("body", "needle"),
        [
            (b"{not json", "JSON"),
            (b"[1, 2]", "object"),
            (orjson.dumps({"instances": []}), "instances"),
            (orjson.dumps({"instances": [[1.0] * 31]}), "31"),
            (orjson.dumps({"instances": [["a"] * 32]}), "features"),
            (orjson.dumps({"instances": [[1.0] * 32, [1.0] * 5]}), "features"),
        ],
    )
    def test_malformed_bodies_are_400_with_reason(self, http: httpx.Client, body: bytes, needle: str) -> None:
        """Malformed JSON, a missing or empty instances list, wrong widths, strings and ragged rows get 400."""
        r = http.post("/v1/models/churn:predict", content=body)
        assert r.status_code == 400, r.text
        assert r.headers["content-type"] == "application/json"
        assert needle.lower() in r.json()["error"].lower()

    def test_unknown_route_is_404(self, http: httpx.Client) -> None:
        """An unknown route is a 404 in the {"error"} shape."""
        r = http.post("/v1/models/nope:predict", json={"instances": [[1.0]]})
        assert r.status_code == 404
        assert "nope" in r.json()["error"]

    def test_unknown_path_is_json_404(self, http: httpx.Client) -> None:
        """Even a path the gateway does not serve answers JSON {"error"}, so clients can read it."""
        r = http.get("/v3/whatever")
        assert r.status_code == 404
        assert "error" in r.json()

    def test_body_over_limit_is_413(self, http: httpx.Client) -> None:
        """A body over the 8 MiB default gets 413 before the gateway reads it."""
        r = http.post("/v1/models/churn:predict", content=b" " * (8 * 1024 * 1024 + 1))
        assert r.status_code == 413
        assert "limit" in r.json()["error"]

    def test_chunked_body_over_limit_is_413(self, http: httpx.Client) -> None:
        """A streamed body without Content-Length is cut off at the limit too."""
        def chunks():  # type: ignore[no-untyped-def]
            for _ in range(9):
                yield b" " * (1024 * 1024)

        r = http.post("/v1/models/churn:predict", content=chunks())
        assert r.status_code == 413

    def test_gzip_bomb_is_413(self, http: httpx.Client) -> None:
        """A small gzip body that inflates past the limit is refused, not inflated in full."""
        bomb = gzip.compress(b" " * (20 * 1024 * 1024))
        r = http.post("/v1/models/churn:predict", content=bomb, headers={"content-encoding": "gzip"})
        assert r.status_code == 413

    def test_server_still_serves_after_bad_input(self, http: httpx.Client) -> None:
        """Bad requests change nothing: a good request right after still succeeds."""
        http.post("/v1/models/churn:predict", content=b"{bad")
        r = http.post("/v1/models/churn:predict", json={"instances": [[0.0] * 32]})
        assert r.status_code == 200
