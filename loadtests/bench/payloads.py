"""Request bodies (pure): the same deterministic rows encoded as KServe v1 JSON, OIP v2 JSON and v2 binary."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import orjson

FEATURES = 32
INPUT = "features"
OUTPUT = "probability"
JSON = "application/json"
BINARY = "application/octet-stream"


@dataclass(frozen=True, slots=True)
class Payload:
    """One request as wrk sends it: body bytes and the headers that go with them."""

    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


def rows(n: int, seed: int = 0) -> npt.NDArray[np.float32]:
    """`n` rows of FEATURES float32 values, the same for the same seed."""
    return np.random.default_rng(seed).standard_normal((n, FEATURES)).astype(np.float32)


def v1_predict(x: npt.NDArray[np.float32]) -> Payload:
    """{"instances": [[...], ...]}: the body the ceiling, the textbook server and /v1 predict all get."""
    return Payload(orjson.dumps({"instances": x}, option=orjson.OPT_SERIALIZE_NUMPY), {"Content-Type": JSON})


def v2_json(x: npt.NDArray[np.float32]) -> Payload:
    """An OIP v2 infer request with the tensor as JSON data, JSON output."""
    doc = {"inputs": [{"name": INPUT, "shape": list(x.shape), "datatype": "FP32", "data": x.reshape(-1)}]}
    return Payload(orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY), {"Content-Type": JSON})


def v2_binary(x: npt.NDArray[np.float32]) -> Payload:
    """An OIP v2 infer request with the binary tensor extension for the input and the output, as
    tritonclient sends it: a JSON header of Inference-Header-Content-Length bytes, then the raw tensor."""
    raw = np.ascontiguousarray(x, dtype="<f4").tobytes()
    header = orjson.dumps({
        "inputs": [{"name": INPUT, "shape": list(x.shape), "datatype": "FP32",
                    "parameters": {"binary_data_size": len(raw)}}],
        "outputs": [{"name": OUTPUT, "parameters": {"binary_data": True}}],
    })
    return Payload(header + raw, {"Content-Type": BINARY, "Inference-Header-Content-Length": str(len(header))})
