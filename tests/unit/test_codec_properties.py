"""Property tests (hypothesis) for the wire codecs: any input is either decoded or refused with a
clear InvalidInput/PayloadTooLarge, never another exception; valid tensors round-trip exactly."""

from __future__ import annotations

import contextlib

import numpy as np
import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from gateway.errors import InvalidInput, PayloadTooLarge
from gateway.protocol import v1, v2
from gateway.protocol.dtypes import NUMPY_DTYPE
from gateway.signature import compile_validator
from registry.entities import Signature, TensorSpec

NUMERIC = ["BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16", "FP32", "FP64"]
FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


def refuses_cleanly(fn: object, *args: object) -> None:
    """Call fn; the only exceptions allowed out are the codec's 4xx errors (any other fails the test)."""
    with contextlib.suppress(InvalidInput, PayloadTooLarge):
        fn(*args)  # type: ignore[operator]


class TestV2Robustness:
    @FAST
    @given(body=st.binary(max_size=512), header_length=st.none() | st.integers(min_value=0, max_value=600))
    def test_arbitrary_bytes_are_decoded_or_refused(self, body: bytes, header_length: int | None) -> None:
        """Random bodies and header lengths never raise anything but InvalidInput."""
        refuses_cleanly(v2.decode_infer_request, body, header_length)

    @FAST
    @given(doc=json_values)
    def test_arbitrary_json_is_decoded_or_refused(self, doc: object) -> None:
        """Random JSON documents never raise anything but InvalidInput."""
        refuses_cleanly(v2.decode_infer_request, orjson.dumps(doc), None)

    @FAST
    @given(
        inputs=st.lists(
            st.fixed_dictionaries({
                "name": st.text(max_size=4), "datatype": st.sampled_from([*NUMERIC, "BYTES", "NOPE"]),
                "shape": st.lists(st.integers(min_value=-2, max_value=2**40), max_size=4),
                "data": json_values,
            }),
            max_size=3,
        )
    )
    def test_well_shaped_but_lying_requests_are_refused(self, inputs: list[dict[str, object]]) -> None:
        """Inputs with huge, negative or lying shapes and mismatched data are refused without allocating."""
        refuses_cleanly(v2.decode_infer_request, orjson.dumps({"inputs": inputs}), None)

    @FAST
    @given(st.data())
    def test_binary_and_json_round_trip(self, data: st.DataObject) -> None:
        """Arrays of every numeric datatype survive encode -> decode, binary and JSON alike."""
        datatype = data.draw(st.sampled_from(NUMERIC))
        dtype = NUMPY_DTYPE[datatype]
        array = data.draw(hnp.arrays(dtype, hnp.array_shapes(min_dims=1, max_dims=3, max_side=4),
                                     elements={"allow_nan": False, "allow_infinity": False} if dtype.kind == "f" else None))
        binary = data.draw(st.booleans())
        body, header_length = v2.encode_infer_response("m", "1", None, [("x", array)], [binary])
        doc_end = header_length if header_length is not None else len(body)
        response = orjson.loads(body[:doc_end])
        out = response["outputs"][0]
        request: dict[str, object] = {"inputs": [{"name": "x", "shape": out["shape"], "datatype": out["datatype"]}]}
        if binary:
            request["inputs"][0]["parameters"] = out["parameters"]  # type: ignore[index]
            header = orjson.dumps(request)
            decoded = v2.decode_infer_request(header + body[doc_end:], len(header))
        else:
            request["inputs"][0]["data"] = out["data"]  # type: ignore[index]
            decoded = v2.decode_infer_request(orjson.dumps(request), None)
        np.testing.assert_array_equal(decoded.inputs["x"], array)
        assert decoded.inputs["x"].dtype == array.dtype


class TestV1Robustness:
    SPECS = (TensorSpec("features", "FP32", (-1, 4)),)

    @FAST
    @given(doc=json_values)
    def test_arbitrary_json_is_decoded_or_refused(self, doc: object) -> None:
        """Random JSON never raises anything but InvalidInput, and what decodes passes or fails validation cleanly."""
        validator = compile_validator(Signature(self.SPECS, (TensorSpec("y", "FP32", (-1, 1)),)))
        try:
            inputs = v1.decode_predict(orjson.dumps(doc), self.SPECS)
        except InvalidInput:
            return
        refuses_cleanly(validator.validate, inputs)

    @FAST
    @given(body=st.binary(max_size=256))
    def test_arbitrary_bytes_are_refused(self, body: bytes) -> None:
        """Random bytes never raise anything but InvalidInput."""
        refuses_cleanly(v1.decode_predict, body, self.SPECS)
