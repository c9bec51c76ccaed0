"""Rebuild the v2 golden bodies here with the real tritonclient: `.venv/bin/python tests/data/v2/make_golden.py`.

Each NAME.bin is a whole body; NAME.json gives its Inference-Header-Content-Length (null: all JSON)."""

from __future__ import annotations

import json
import pathlib
from typing import Any

import numpy as np
import tritonclient.http as httpclient

HERE = pathlib.Path(__file__).parent
IN0 = np.arange(16, dtype=np.int32).reshape(1, 16)
IN1 = np.ones((1, 16), dtype=np.int32)
generate = httpclient.InferenceServerClient.generate_request_body


def save(name: str, generated: tuple[bytes, int | None], source: str) -> None:
    body, header_length = generated
    (HERE / f"{name}.bin").write_bytes(body)
    meta = {"header_length": header_length, "content_length": len(body), "source": source}
    (HERE / f"{name}.json").write_text(json.dumps(meta, indent=2) + "\n")


def simple_inputs(binary: bool) -> list[Any]:
    in0 = httpclient.InferInput("INPUT0", [1, 16], "INT32")
    in0.set_data_from_numpy(IN0, binary_data=binary)
    in1 = httpclient.InferInput("INPUT1", [1, 16], "INT32")
    in1.set_data_from_numpy(IN1, binary_data=binary)
    return [in0, in1]


def requested(binary0: bool, binary1: bool) -> list[Any]:
    return [
        httpclient.InferRequestedOutput("OUTPUT0", binary_data=binary0),
        httpclient.InferRequestedOutput("OUTPUT1", binary_data=binary1),
    ]


def main() -> None:
    version = "tritonclient 2.73.0 generate_request_body"
    save(
        "tritonclient_binary_request",
        generate(simple_inputs(True)),
        f"{version}: model simple, INPUT0=arange(16) INPUT1=ones, binary inputs, outputs not listed",
    )
    save(
        "tritonclient_json_request",
        generate(simple_inputs(False), outputs=requested(False, False), request_id="req-42"),
        f"{version}: model simple, JSON inputs, both outputs binary_data=False, request_id=req-42",
    )
    save(
        "tritonclient_mixed_outputs_request",
        generate(simple_inputs(True), outputs=requested(True, False)),
        f"{version}: model simple, binary inputs, OUTPUT0 binary_data=True, OUTPUT1 binary_data=False",
    )
    strings = httpclient.InferInput("INPUT0", [1, 2], "BYTES")
    strings.set_data_from_numpy(np.array([["hello", "world"]], dtype=object))
    save(
        "tritonclient_bytes_request",
        generate([strings]),
        f"{version}: model simple_string, INPUT0=[['hello','world']] BYTES binary, outputs not listed",
    )
    # The captured server response in /work/shared/protocols/v2.md, byte for byte.
    header = (
        b'{"model_name":"simple","model_version":"1","outputs":['
        b'{"name":"OUTPUT0","datatype":"INT32","shape":[1,16],"parameters":{"binary_data_size":64}},'
        b'{"name":"OUTPUT1","datatype":"INT32","shape":[1,16],"parameters":{"binary_data_size":64}}]}'
    )
    blocks = (IN0 + IN1).astype("<i4").tobytes() + (IN0 - IN1).astype("<i4").tobytes()
    save(
        "simple_binary_response",
        (header + blocks, len(header)),
        "v2.md captured response to tritonclient_binary_request: OUTPUT0=IN0+IN1, OUTPUT1=IN0-IN1, binary",
    )


if __name__ == "__main__":
    main()
