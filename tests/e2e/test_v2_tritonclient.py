"""The real tritonclient.http client against a real `gateway serve --demo` over a real socket."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from gateway.demo import build_mlp
from tests.e2e.conftest import GatewayProcess


@pytest.fixture(scope="module")
def client(demo_gateway: GatewayProcess) -> httpclient.InferenceServerClient:
    return httpclient.InferenceServerClient(url=demo_gateway.hostport)


def expected_churn(x: np.ndarray, seed: int = 1) -> np.ndarray:
    session = ort.InferenceSession(build_mlp(seed), providers=["CPUExecutionProvider"])
    return session.run(None, {"features": x})[0]


def churn_rows(n: int) -> np.ndarray:
    return np.random.default_rng(7).standard_normal((n, 32)).astype(np.float32)


class TestHealthAndMetadata:
    def test_server_live_and_ready(self, client: httpclient.InferenceServerClient) -> None:
        """Liveness and readiness report true once the demo models are warm."""
        assert client.is_server_live()
        assert client.is_server_ready()

    def test_model_ready_by_route_and_version(self, client: httpclient.InferenceServerClient) -> None:
        """A routed model and an existing version are ready; an unknown model is not."""
        assert client.is_model_ready("churn")
        assert client.is_model_ready("churn", model_version="2")
        assert not client.is_model_ready("no_such_model")

    def test_server_metadata_lists_binary_extension(self, client: httpclient.InferenceServerClient) -> None:
        """Server metadata names the binary tensor data extension."""
        meta = client.get_server_metadata()
        assert meta["name"] == "gateway"
        assert "binary_tensor_data" in meta["extensions"]

    def test_model_metadata_has_signature(self, client: httpclient.InferenceServerClient) -> None:
        """Model metadata gives every version and the inputs/outputs read from the ONNX file."""
        meta = client.get_model_metadata("churn")
        assert meta["versions"] == ["1", "2"]
        assert meta["inputs"] == [{"name": "features", "datatype": "FP32", "shape": [-1, 32]}]
        assert meta["outputs"] == [{"name": "probability", "datatype": "FP32", "shape": [-1, 1]}]

    def test_unknown_model_metadata_raises_with_message(self, client: httpclient.InferenceServerClient) -> None:
        """An unknown model is a 404 whose {"error"} message reaches the client."""
        with pytest.raises(InferenceServerException) as info:
            client.get_model_metadata("no_such_model")
        assert "no_such_model" in info.value.message()
        assert info.value.status() == "404"


class TestInferFP32:
    @pytest.mark.parametrize("binary_in", [True, False])
    @pytest.mark.parametrize("binary_out", [True, False, None])
    def test_churn_predictions_match_onnxruntime(
        self, client: httpclient.InferenceServerClient, binary_in: bool, binary_out: bool | None
    ) -> None:
        """FP32 inference gives onnxruntime's own answer, with binary data on and off (None: outputs not listed)."""
        x = churn_rows(5)
        inp = httpclient.InferInput("features", list(x.shape), "FP32")
        inp.set_data_from_numpy(x, binary_data=binary_in)
        outputs = None if binary_out is None else [httpclient.InferRequestedOutput("probability", binary_data=binary_out)]
        result = client.infer("churn", [inp], outputs=outputs, request_id="req-42")
        np.testing.assert_allclose(result.as_numpy("probability"), expected_churn(x), rtol=1e-5)
        response = result.get_response()
        assert response["model_name"] == "churn"
        assert response["model_version"] == "1"  # the champion alias
        assert response["id"] == "req-42"

    def test_version_addressed_directly(self, client: httpclient.InferenceServerClient) -> None:
        """/versions/2/infer runs version 2, not the route's champion."""
        x = churn_rows(3)
        inp = httpclient.InferInput("features", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        result = client.infer("churn", [inp], model_version="2")
        np.testing.assert_allclose(result.as_numpy("probability"), expected_churn(x, seed=2), rtol=1e-5)
        assert result.get_response()["model_version"] == "2"

    def test_gzip_request_and_response(self, client: httpclient.InferenceServerClient) -> None:
        """A gzip-compressed request body is inflated; Inference-Header-Content-Length counts uncompressed bytes."""
        x = churn_rows(4)
        inp = httpclient.InferInput("features", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        result = client.infer("churn", [inp], request_compression_algorithm="gzip")
        np.testing.assert_allclose(result.as_numpy("probability"), expected_churn(x), rtol=1e-5)


class TestInferInt64AndBytes:
    @pytest.mark.parametrize("binary", [True, False])
    def test_ticket_router(self, client: httpclient.InferenceServerClient, binary: bool) -> None:
        """BYTES and INT64 inputs and outputs round-trip through tritonclient, binary and JSON."""
        category = np.array([[b"bug"], [b"outage"], [b"unknown"]], dtype=np.object_)
        priority = np.array([[2], [3], [1]], dtype=np.int64)
        inputs = [httpclient.InferInput("category", [3, 1], "BYTES"), httpclient.InferInput("priority", [3, 1], "INT64")]
        inputs[0].set_data_from_numpy(category, binary_data=binary)
        inputs[1].set_data_from_numpy(priority, binary_data=binary)
        outputs = [httpclient.InferRequestedOutput(n, binary_data=binary) for n in ("score", "queue")]
        result = client.infer("ticket_router", inputs, outputs=outputs)
        assert result.as_numpy("score").tolist() == [[22], [33], [1]]
        queue = result.as_numpy("queue")
        assert [q.decode() if isinstance(q, bytes) else q for q in queue.reshape(-1)] == ["support", "engineering", "triage"]

    def test_mixed_binary_and_json_outputs(self, client: httpclient.InferenceServerClient) -> None:
        """One output binary and one JSON in the same response decode correctly."""
        inputs = [httpclient.InferInput("category", [1, 1], "BYTES"), httpclient.InferInput("priority", [1, 1], "INT64")]
        inputs[0].set_data_from_numpy(np.array([[b"billing"]], dtype=np.object_))
        inputs[1].set_data_from_numpy(np.array([[5]], dtype=np.int64))
        outputs = [
            httpclient.InferRequestedOutput("score", binary_data=True),
            httpclient.InferRequestedOutput("queue", binary_data=False),
        ]
        result = client.infer("ticket_router", inputs, outputs=outputs, model_version="1")
        assert result.as_numpy("score").tolist() == [[15]]
        assert result.as_numpy("queue").reshape(-1)[0] in ("general", b"general")


class TestInferErrors:
    def test_wrong_dtype_names_input_and_reason(self, client: httpclient.InferenceServerClient) -> None:
        """FP64 sent to an FP32 input is a 400 naming the input and both types."""
        inp = httpclient.InferInput("features", [1, 32], "FP64")
        inp.set_data_from_numpy(np.zeros((1, 32), dtype=np.float64))
        with pytest.raises(InferenceServerException) as info:
            client.infer("churn", [inp])
        assert info.value.status() == "400"
        assert "features" in info.value.message() and "FP32" in info.value.message()

    def test_wrong_width_names_dimension(self, client: httpclient.InferenceServerClient) -> None:
        """A row of 31 features is a 400 that says which dimension is wrong."""
        inp = httpclient.InferInput("features", [1, 31], "FP32")
        inp.set_data_from_numpy(np.zeros((1, 31), dtype=np.float32))
        with pytest.raises(InferenceServerException) as info:
            client.infer("churn", [inp])
        assert info.value.status() == "400"
        assert "31" in info.value.message() and "32" in info.value.message()

    def test_unknown_model_and_version(self, client: httpclient.InferenceServerClient) -> None:
        """Unknown models and versions are 404s with the protocol's error shape."""
        inp = httpclient.InferInput("features", [1, 32], "FP32")
        inp.set_data_from_numpy(np.zeros((1, 32), dtype=np.float32))
        for kwargs in ({"model_name": "nope"}, {"model_name": "churn", "model_version": "99"}):
            with pytest.raises(InferenceServerException) as info:
                client.infer(inputs=[inp], **kwargs)
            assert info.value.status() == "404"
