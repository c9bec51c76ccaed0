"""Open Inference Protocol v2 codec: request decoding, output selection, response encoding, content coding."""

from __future__ import annotations

import gzip
import json
import pathlib
import struct
import zlib
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson
import pytest
import tritonclient.http as httpclient

from gateway.errors import InferenceFailed, InvalidInput, PayloadTooLarge
from gateway.protocol.v2 import (
    InferRequest,
    RequestedOutput,
    decode_content,
    decode_infer_request,
    encode_infer_response,
    parse_header_length,
    select_outputs,
)

GOLDEN = pathlib.Path(__file__).parent.parent / "data" / "v2"
IN0 = np.arange(16, dtype=np.int32).reshape(1, 16)
IN1 = np.ones((1, 16), dtype=np.int32)

# One sample per datatype, including each type's extremes.
SAMPLES: dict[str, npt.NDArray[Any]] = {
    "BOOL": np.array([[True, False, True]]),
    "UINT8": np.array([[0, 7, 255]], dtype=np.uint8),
    "UINT16": np.array([[0, 7, 65535]], dtype=np.uint16),
    "UINT32": np.array([[0, 7, 2**32 - 1]], dtype=np.uint32),
    "UINT64": np.array([[0, 7, 2**64 - 1]], dtype=np.uint64),
    "INT8": np.array([[-128, 0, 127]], dtype=np.int8),
    "INT16": np.array([[-(2**15), 0, 2**15 - 1]], dtype=np.int16),
    "INT32": np.array([[-(2**31), 0, 2**31 - 1]], dtype=np.int32),
    "INT64": np.array([[-(2**63), 0, 2**63 - 1]], dtype=np.int64),
    "FP16": np.array([[0.5, -65504.0, 0.1]], dtype=np.float16),
    "FP32": np.array([[1.5, -3.25e38, 0.1]], dtype=np.float32),
    "FP64": np.array([[1e308, -2.5, 0.1]], dtype=np.float64),
    "BYTES": np.array([["hello", "wörld", ""]], dtype=object),
}
DATATYPES = sorted(SAMPLES)
NUMERIC = [d for d in DATATYPES if d != "BYTES"]


def load_golden(name: str) -> tuple[bytes, int | None]:
    meta = json.loads((GOLDEN / f"{name}.json").read_text())
    body = (GOLDEN / f"{name}.bin").read_bytes()
    assert len(body) == meta["content_length"]
    return body, meta["header_length"]


def triton_request(
    arrays: dict[str, npt.NDArray[Any]], binary: bool, **kwargs: Any
) -> tuple[bytes, int | None]:
    """A request body exactly as tritonclient builds it."""
    inputs = []
    for name, array in arrays.items():
        datatype = "BYTES" if array.dtype == object else httpclient.np_to_triton_dtype(array.dtype)
        tensor = httpclient.InferInput(name, list(array.shape), datatype)
        tensor.set_data_from_numpy(array, binary_data=binary)
        inputs.append(tensor)
    body, header_length = httpclient.InferenceServerClient.generate_request_body(inputs, **kwargs)
    return body, header_length


def binary_body(inputs: list[dict[str, Any]], *blocks: bytes, **extra: Any) -> tuple[bytes, int]:
    header = json_body({"inputs": inputs, **extra})
    return header + b"".join(blocks), len(header)


def json_body(doc: Any) -> bytes:
    # The stdlib encoder, unlike orjson, writes integers beyond 64 bits, as a hostile client may.
    return json.dumps(doc, separators=(",", ":")).encode()


def int32_input(name: str = "x", shape: list[int] | None = None, size: int | None = None) -> dict[str, Any]:
    shape = [1, 4] if shape is None else shape
    count = int(np.prod(shape))
    return {
        "name": name,
        "datatype": "INT32",
        "shape": shape,
        "parameters": {"binary_data_size": 4 * count if size is None else size},
    }


def decode_json(doc: Any, **kwargs: Any) -> InferRequest:
    return decode_infer_request(json_body(doc), None, **kwargs)


def one_input(**fields: Any) -> dict[str, Any]:
    return {"inputs": [{"name": "x", "datatype": "INT32", "shape": [2], "data": [1, 2], **fields}]}


class TestGoldenTritonclientRequests:
    def test_default_binary_request_decodes(self) -> None:
        """The captured default tritonclient request (binary inputs, outputs omitted) decodes to its arrays."""
        body, header_length = load_golden("tritonclient_binary_request")
        assert header_length == 231
        request = decode_infer_request(body, header_length)
        assert list(request.inputs) == ["INPUT0", "INPUT1"]
        np.testing.assert_array_equal(request.inputs["INPUT0"], IN0)
        np.testing.assert_array_equal(request.inputs["INPUT1"], IN1)
        assert request.inputs["INPUT0"].dtype == np.int32
        assert request.input_datatypes == {"INPUT0": "INT32", "INPUT1": "INT32"}
        assert request.outputs is None
        assert request.binary_output_default is True
        assert request.id is None

    def test_json_request_decodes(self) -> None:
        """The captured JSON tritonclient request keeps its id and its per-output binary_data=false."""
        body, header_length = load_golden("tritonclient_json_request")
        assert header_length is None
        request = decode_infer_request(body, header_length)
        assert request.id == "req-42"
        np.testing.assert_array_equal(request.inputs["INPUT0"], IN0)
        np.testing.assert_array_equal(request.inputs["INPUT1"], IN1)
        assert request.outputs == (RequestedOutput("OUTPUT0", False), RequestedOutput("OUTPUT1", False))
        assert request.binary_output_default is False

    def test_mixed_outputs_request_decodes(self) -> None:
        """A request with one binary and one JSON output keeps both choices."""
        request = decode_infer_request(*load_golden("tritonclient_mixed_outputs_request"))
        assert request.outputs == (RequestedOutput("OUTPUT0", True), RequestedOutput("OUTPUT1", False))
        assert select_outputs(request, ["OUTPUT0", "OUTPUT1"]) == (["OUTPUT0", "OUTPUT1"], [True, False])

    def test_bytes_request_decodes(self) -> None:
        """The simple_string request's BYTES block decodes to an object array of bytes."""
        request = decode_infer_request(*load_golden("tritonclient_bytes_request"))
        array = request.inputs["INPUT0"]
        assert array.dtype == object
        assert array.shape == (1, 2)
        assert array.tolist() == [[b"hello", b"world"]]

    @pytest.mark.parametrize(
        ("name", "binary", "kwargs"),
        [
            ("tritonclient_binary_request", True, {}),
            (
                "tritonclient_json_request",
                False,
                {
                    "request_id": "req-42",
                    "outputs": [
                        httpclient.InferRequestedOutput("OUTPUT0", binary_data=False),
                        httpclient.InferRequestedOutput("OUTPUT1", binary_data=False),
                    ],
                },
            ),
        ],
    )
    def test_golden_matches_installed_tritonclient(
        self, name: str, binary: bool, kwargs: dict[str, Any]
    ) -> None:
        """The installed tritonclient still builds the golden bodies byte for byte."""
        assert triton_request({"INPUT0": IN0, "INPUT1": IN1}, binary, **kwargs) == load_golden(name)


class TestDecodeRoundTrip:
    @pytest.mark.parametrize("datatype", DATATYPES)
    @pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
    def test_every_datatype(self, datatype: str, binary: bool) -> None:
        """Every datatype sent by tritonclient, as JSON or binary, decodes to the sent values and dtype."""
        sample = SAMPLES[datatype]
        request = decode_infer_request(*triton_request({"x": sample}, binary))
        array = request.inputs["x"]
        assert array.shape == sample.shape
        assert request.input_datatypes == {"x": datatype}
        if datatype == "BYTES":
            assert array.dtype == object
            expected = [[s.encode() for s in row] for row in sample.tolist()] if binary else sample.tolist()
            assert array.tolist() == expected
        else:
            assert array.dtype == sample.dtype
            np.testing.assert_array_equal(array, sample)

    @pytest.mark.parametrize("datatype", NUMERIC)
    def test_binary_numeric_is_a_view_of_the_body(self, datatype: str) -> None:
        """Numeric binary inputs are zero-copy views over the request body."""
        body, header_length = triton_request({"x": SAMPLES[datatype]}, True)
        array = decode_infer_request(body, header_length).inputs["x"]
        assert np.shares_memory(array, np.frombuffer(body, dtype=np.uint8))
        assert not array.flags.writeable

    def test_inputs_keep_request_order(self) -> None:
        """Decoded inputs keep the order of the request's `inputs` list."""
        arrays = {"b": IN0, "a": IN1, "c": IN0}
        request = decode_infer_request(*triton_request(arrays, True))
        assert list(request.inputs) == ["b", "a", "c"]

    def test_mixed_json_and_binary_inputs(self) -> None:
        """JSON inputs consume no binary bytes; binary blocks go to the binary inputs in order."""
        body, header_length = binary_body(
            [
                int32_input("a", [2]),
                {"name": "b", "datatype": "FP32", "shape": [2], "data": [1, 2.5]},
                int32_input("c", [1]),
            ],
            np.array([1, 2], "<i4").tobytes(),
            np.array([3], "<i4").tobytes(),
        )
        request = decode_infer_request(body, header_length)
        assert request.inputs["a"].tolist() == [1, 2]
        assert request.inputs["b"].tolist() == [1.0, 2.5]
        assert request.inputs["c"].tolist() == [3]

    def test_bytes_binary_layout(self) -> None:
        """The BYTES block for ["hello","world"] is the captured 4-byte-length layout."""
        body, header_length = triton_request({"x": np.array(["hello", "world"], dtype=object)}, True)
        assert header_length is not None
        assert body[header_length:].hex() == "0500000068656c6c6f05000000776f726c64"
        assert decode_infer_request(body, header_length).inputs["x"].tolist() == [b"hello", b"world"]

    @pytest.mark.parametrize(
        ("data", "shape", "expected"),
        [
            ([[1, 2], [3, 4]], [2, 2], [[1, 2], [3, 4]]),
            ([[1, 2, 3, 4]], [2, 2], [[1, 2], [3, 4]]),
            ([[[1], [2]], [[3], [4]]], [4], [1, 2, 3, 4]),
        ],
    )
    def test_nested_json_data_is_flattened(self, data: list[Any], shape: list[int], expected: Any) -> None:
        """Nested JSON data is accepted (as KServe does) and reshaped row-major to the declared shape."""
        request = decode_json({"inputs": [{"name": "x", "datatype": "INT64", "shape": shape, "data": data}]})
        assert request.inputs["x"].tolist() == expected

    def test_nested_bytes_json_data(self) -> None:
        """Nested BYTES JSON data is accepted and kept as str elements."""
        doc = {"inputs": [{"name": "s", "datatype": "BYTES", "shape": [2, 1], "data": [["a"], ["b"]]}]}
        assert decode_json(doc).inputs["s"].tolist() == [["a"], ["b"]]

    @pytest.mark.parametrize("datatype", DATATYPES)
    @pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
    def test_zero_element_inputs(self, datatype: str, binary: bool) -> None:
        """A shape with a zero dimension decodes to an empty array of that shape."""
        field: dict[str, Any] = {"parameters": {"binary_data_size": 0}} if binary else {"data": []}
        body, header_length = binary_body([{"name": "x", "datatype": datatype, "shape": [0, 3], **field}])
        request = decode_infer_request(body, header_length if binary else None)
        assert request.inputs["x"].shape == (0, 3)

    def test_scalar_shape(self) -> None:
        """An empty shape is a scalar with one element."""
        request = decode_json({"inputs": [{"name": "x", "datatype": "FP64", "shape": [], "data": [2.5]}]})
        assert request.inputs["x"].shape == ()
        assert request.inputs["x"].item() == 2.5

    def test_header_length_covering_whole_body(self) -> None:
        """A header length equal to the body length with JSON inputs is accepted."""
        body = json_body(one_input())
        assert decode_infer_request(body, len(body)).inputs["x"].tolist() == [1, 2]


class TestDecodeJsonDataErrors:
    @pytest.mark.parametrize(
        ("datatype", "data", "reason"),
        [
            ("INT64", [1, 1.5], "integers"),
            ("INT64", [1.0, 2.0], "integers"),
            ("INT32", [True, False], "integers"),
            ("INT32", ["1", "2"], "integers"),
            ("INT32", [1, None], "integers"),
            ("UINT8", [0, 256], "out of range for UINT8"),
            ("UINT32", [-1, 2], "out of range for UINT32"),
            ("INT8", [-129, 0], "out of range for INT8"),
            ("INT64", [0, 2**63], "out of range for INT64"),
            ("INT64", [-1, 2**63], "out of range for INT64"),
            ("UINT64", [0, 2**64], "integers"),  # orjson reads integers past 64 bits as floats
            ("FP32", [1.0, 1e39], "out of range for FP32"),
            ("FP16", [1.0, 70000], "out of range for FP16"),
            ("FP32", ["1.0", "2.0"], "numbers"),
            ("FP64", [True, False], "numbers"),
            ("FP64", [{"a": 1}, 2], "numbers"),
            ("BOOL", [1, 0], "true/false"),
            ("BOOL", ["true", "false"], "true/false"),
            ("BYTES", [1, 2], "strings"),
            ("BYTES", ["a", None], "strings"),
            ("INT32", [[1, 2], [3]], "rectangular"),
            ("BYTES", [["a", "b"], ["c"]], "strings"),
        ],
    )
    def test_bad_values(self, datatype: str, data: list[Any], reason: str) -> None:
        """JSON data that does not fit the datatype is refused, naming the input and the reason."""
        doc = {"inputs": [{"name": "x", "datatype": datatype, "shape": [2], "data": data}]}
        with pytest.raises(InvalidInput, match=rf"^input 'x': .*{reason}"):
            decode_json(doc)

    @pytest.mark.parametrize(("data", "shape"), [([1, 2, 3], [2, 2]), ([1, 2, 3, 4, 5], [2, 2]), ([], [1])])
    def test_element_count_must_match_shape(self, data: list[int], shape: list[int]) -> None:
        """The number of data elements must equal the product of the shape."""
        doc = {"inputs": [{"name": "x", "datatype": "INT32", "shape": shape, "data": data}]}
        with pytest.raises(InvalidInput, match=r"^input 'x': data has \d+ elements"):
            decode_json(doc)

    @pytest.mark.parametrize("data", [5, "abc", {"a": 1}])
    def test_data_must_be_a_list(self, data: Any) -> None:
        """`data` must be a JSON list."""
        with pytest.raises(InvalidInput, match=r"'data' must be a list"):
            decode_json(one_input(data=data))

    def test_deeply_nested_data(self) -> None:
        """Data nested deeper than numpy allows is refused, not crashed on."""
        data: Any = [1]
        for _ in range(100):
            data = [data]
        doc = {"inputs": [{"name": "x", "datatype": "INT32", "shape": [1], "data": data}]}
        with pytest.raises(InvalidInput, match=r"^input 'x'"):
            decode_json(doc)


class TestDecodeBinaryErrors:
    def test_binary_data_size_past_the_body(self) -> None:
        """A binary_data_size larger than what is left of the body is refused with both numbers."""
        body, header_length = binary_body([int32_input("x", [16])], b"\0" * 12)
        with pytest.raises(InvalidInput, match=r"^input 'x': binary_data_size 64 exceeds the 12 bytes left"):
            decode_infer_request(body, header_length)

    @pytest.mark.parametrize("size", [60, 68, 0, 1])
    def test_binary_data_size_must_match_shape(self, size: int) -> None:
        """A numeric binary_data_size must be exactly prod(shape) * itemsize."""
        body, header_length = binary_body([int32_input("x", [16], size=size)], b"\0" * size)
        with pytest.raises(
            InvalidInput, match=rf"^input 'x': binary_data_size {size} does not match .*\(64 bytes\)"
        ):
            decode_infer_request(body, header_length)

    def test_truncated_body(self) -> None:
        """A body cut short inside the second block is refused."""
        body, header_length = binary_body([int32_input("a"), int32_input("b")], b"\0" * 16, b"\0" * 10)
        with pytest.raises(InvalidInput, match=r"^input 'b': binary_data_size 16 exceeds the 10 bytes left"):
            decode_infer_request(body, header_length)

    @pytest.mark.parametrize("extra", [b"\0", b"\0" * 100])
    def test_trailing_bytes(self, extra: bytes) -> None:
        """Bytes after the last binary block are refused."""
        body, header_length = binary_body([int32_input()], b"\0" * 16 + extra)
        with pytest.raises(InvalidInput, match=rf"^{len(extra)} bytes at the end of the body"):
            decode_infer_request(body, header_length)

    def test_tail_with_only_json_inputs(self) -> None:
        """A binary tail that no input claims is refused."""
        header = json_body(one_input())
        with pytest.raises(InvalidInput, match=r"^4 bytes at the end"):
            decode_infer_request(header + b"\0" * 4, len(header))

    @pytest.mark.parametrize("header_length", [-1, 10_000])
    def test_header_length_outside_body(self, header_length: int) -> None:
        """A negative header length, or one past the body, is refused."""
        with pytest.raises(
            InvalidInput, match=rf"^Inference-Header-Content-Length {header_length} is outside"
        ):
            decode_infer_request(json_body(one_input()), header_length)

    def test_header_length_cutting_the_json(self) -> None:
        """A header length that cuts the JSON header short is refused as invalid JSON."""
        body, header_length = binary_body([int32_input()], b"\0" * 16)
        with pytest.raises(InvalidInput, match=r"^request header is not valid JSON"):
            decode_infer_request(body, header_length - 1)

    def test_binary_without_header_length(self) -> None:
        """binary_data_size without Inference-Header-Content-Length is refused with that reason."""
        body, _ = binary_body([int32_input()])
        with pytest.raises(InvalidInput, match=r"no Inference-Header-Content-Length"):
            decode_infer_request(body, None)

    def test_both_data_and_binary(self) -> None:
        """An input may not carry both `data` and binary_data_size."""
        entry = {**int32_input(), "data": [1, 2, 3, 4]}
        body, header_length = binary_body([entry], b"\0" * 16)
        with pytest.raises(InvalidInput, match=r"^input 'x': has both"):
            decode_infer_request(body, header_length)

    def test_neither_data_nor_binary(self) -> None:
        """An input needs `data` or binary_data_size."""
        doc = {"inputs": [{"name": "x", "datatype": "INT32", "shape": [1]}]}
        with pytest.raises(InvalidInput, match=r"^input 'x': needs 'data' or parameters.binary_data_size"):
            decode_json(doc)

    @pytest.mark.parametrize("size", [-1, 1.5, "16", True])
    def test_binary_data_size_type(self, size: Any) -> None:
        """binary_data_size must be a non-negative integer."""
        body, header_length = binary_body([int32_input(size=size)], b"\0" * 16)
        with pytest.raises(InvalidInput, match=r"binary_data_size must be a non-negative integer"):
            decode_infer_request(body, header_length)

    def test_bool_bytes_other_than_0_or_1(self) -> None:
        """BOOL binary elements must be the bytes 0 or 1."""
        entry = {"name": "x", "datatype": "BOOL", "shape": [3], "parameters": {"binary_data_size": 3}}
        body, header_length = binary_body([entry], b"\x00\x01\x02")
        with pytest.raises(InvalidInput, match=r"^input 'x': BOOL bytes must be 0 or 1"):
            decode_infer_request(body, header_length)

    @pytest.mark.parametrize(
        ("block", "count", "reason"),
        [
            (struct.pack("<I", 9) + b"hello", 1, "element 0 claims 9 bytes, 5 are left"),
            (struct.pack("<I", 2**32 - 1) + b"x", 1, "element 0 claims 4294967295 bytes"),
            (struct.pack("<I", 1) + b"a" + b"\x01\x00", 2, "ends inside the length of element 1"),
            (struct.pack("<I", 1) + b"a", 2, "ends inside the length of element 1"),
            (struct.pack("<I", 1) + b"ab", 1, "1 bytes left in the BYTES block after its 1 elements"),
            (struct.pack("<I", 0) * 3, 2, "4 bytes left in the BYTES block after its 2 elements"),
            (b"", 1, "ends inside the length of element 0"),
        ],
    )
    def test_bytes_lying_lengths(self, block: bytes, count: int, reason: str) -> None:
        """BYTES element lengths must tile the block exactly, one per element."""
        entry = {
            "name": "s",
            "datatype": "BYTES",
            "shape": [count],
            "parameters": {"binary_data_size": len(block)},
        }
        body, header_length = binary_body([entry], block)
        with pytest.raises(InvalidInput, match=rf"^input 's': .*{reason}"):
            decode_infer_request(body, header_length)

    def test_bytes_binary_with_empty_elements(self) -> None:
        """Zero-length BYTES elements decode to empty bytes."""
        block = struct.pack("<I", 0) * 2
        entry = {"name": "s", "datatype": "BYTES", "shape": [2], "parameters": {"binary_data_size": 8}}
        body, header_length = binary_body([entry], block)
        assert decode_infer_request(body, header_length).inputs["s"].tolist() == [b"", b""]


class TestDecodeMalformed:
    @pytest.mark.parametrize("body", [b"[]", b"1", b'"inputs"', b"null", b"true"])
    def test_non_object_json(self, body: bytes) -> None:
        """A body that is JSON but not an object is refused."""
        with pytest.raises(InvalidInput, match=r"^request body must be a JSON object"):
            decode_infer_request(body, None)

    @pytest.mark.parametrize("body", [b"", b"{", b"{'a': 1}", b'{"a": NaN}', b"\xff\xfe{}", b'{"a": "\xff"}'])
    def test_invalid_json(self, body: bytes) -> None:
        """Invalid JSON, including non-UTF-8 bytes, is refused."""
        with pytest.raises(InvalidInput, match=r"^request header is not valid JSON"):
            decode_infer_request(body, None)

    def test_deeply_nested_json(self) -> None:
        """JSON nested past the parser's depth limit is refused, not crashed on."""
        body = b'{"inputs": ' + b"[" * 5000 + b"]" * 5000 + b"}"
        with pytest.raises(InvalidInput, match=r"^request header is not valid JSON"):
            decode_infer_request(body, None)

    @pytest.mark.parametrize("inputs", [None, [], {}, "x", [[]]])
    def test_inputs_must_be_a_non_empty_list_of_objects(self, inputs: Any) -> None:
        """`inputs` must be a non-empty list of objects."""
        doc = {} if inputs is None else {"inputs": inputs}
        with pytest.raises(InvalidInput, match=r"inputs"):
            decode_json(doc)

    @pytest.mark.parametrize("name", [None, 1, ["x"]])
    def test_input_name_must_be_a_string(self, name: Any) -> None:
        """Each input needs a string name."""
        with pytest.raises(InvalidInput, match=r"^inputs\[0\]: 'name' must be a string"):
            decode_json(one_input(name=name))

    def test_duplicate_input_names(self) -> None:
        """Two inputs with one name are refused."""
        entry = one_input()["inputs"][0]
        with pytest.raises(InvalidInput, match=r"^input 'x' appears more than once"):
            decode_json({"inputs": [entry, entry]})

    @pytest.mark.parametrize("datatype", ["BF16", "FLOAT", "fp32", "", "STRING"])
    def test_unknown_datatype(self, datatype: str) -> None:
        """A datatype outside the supported table is refused, naming it."""
        with pytest.raises(InvalidInput, match=rf"^input 'x': unsupported datatype '{datatype}'"):
            decode_json(one_input(datatype=datatype))

    def test_datatype_must_be_a_string(self) -> None:
        """A non-string datatype is refused."""
        with pytest.raises(InvalidInput, match=r"^input 'x': 'datatype' must be a string"):
            decode_json(one_input(datatype=None))

    @pytest.mark.parametrize("shape", [None, 2, "2", [-1], [2.0], [True, 2], [[2]], [1] * 65, [10**40]])
    def test_bad_shape(self, shape: Any) -> None:
        """The shape must be a list of non-negative integers, at most 64 long."""
        with pytest.raises(InvalidInput, match=r"^input 'x': 'shape' must be a list"):
            decode_json(one_input(shape=shape))

    @pytest.mark.parametrize("shape", [[2**31, 2**31], [2**62], [2**32, 2**32, 2**32], [1 << 26, 2]])
    def test_huge_declared_shape_is_refused_before_allocation(self, shape: list[int]) -> None:
        """A declared shape over max_elements is refused before its data or binary block is looked at."""
        entry = {"name": "x", "datatype": "FP32", "shape": shape, "parameters": {"binary_data_size": 4}}
        body, header_length = binary_body([entry], b"\0" * 4)
        with pytest.raises(InvalidInput, match=r"^input 'x': shape .* elements, over the limit of 67108864"):
            decode_infer_request(body, header_length)

    def test_max_elements_keyword(self) -> None:
        """max_elements sets the per-input element limit."""
        doc = {"inputs": [{"name": "x", "datatype": "INT32", "shape": [4], "data": [1, 2, 3, 4]}]}
        assert decode_json(doc, max_elements=4).inputs["x"].size == 4
        with pytest.raises(InvalidInput, match=r"over the limit of 3"):
            decode_json(doc, max_elements=3)

    @pytest.mark.parametrize(
        ("field", "value", "message"),
        [
            ("id", 42, "request 'id' must be a string"),
            ("parameters", [], "request 'parameters' must be an object"),
            ("parameters", {"binary_data_output": 1}, "binary_data_output must be true or false"),
            ("outputs", {}, "request 'outputs' must be a list"),
            ("outputs", ["OUTPUT0"], r"outputs\[0\] must be an object"),
            ("outputs", [{"name": 1}], r"outputs\[0\]: 'name' must be a string"),
            ("outputs", [{"name": "y", "parameters": 1}], "output 'y': 'parameters' must be an object"),
            (
                "outputs",
                [{"name": "y", "parameters": {"binary_data": "yes"}}],
                "binary_data must be true or false",
            ),
            ("outputs", [{"name": "y"}, {"name": "y"}], "output 'y' is requested more than once"),
        ],
    )
    def test_bad_request_fields(self, field: str, value: Any, message: str) -> None:
        """Malformed id, parameters and outputs are refused with the field named."""
        with pytest.raises(InvalidInput, match=message):
            decode_json({**one_input(), field: value})

    def test_input_parameters_must_be_an_object(self) -> None:
        """An input's parameters must be an object."""
        with pytest.raises(InvalidInput, match=r"^input 'x': 'parameters' must be an object"):
            decode_json(one_input(parameters=[1]))


class TestRequestFields:
    def test_defaults(self) -> None:
        """Without id, parameters or outputs: no id, empty parameters, all outputs, JSON by default."""
        request = decode_json(one_input())
        assert request.id is None
        assert request.parameters == {}
        assert request.outputs is None
        assert request.binary_output_default is False

    def test_kserve_client_fields(self) -> None:
        """The kserve client's id, model_name and null parameters are accepted."""
        request = decode_json({**one_input(), "id": "abc", "model_name": "m", "parameters": None})
        assert request.id == "abc"
        assert request.parameters == {}

    def test_parameters_are_kept(self) -> None:
        """Request parameters are kept as sent."""
        params = {"binary_data_output": True, "priority": 2, "custom": "v"}
        request = decode_json({**one_input(), "parameters": params})
        assert request.parameters == params
        assert request.binary_output_default is True

    def test_empty_outputs_means_all(self) -> None:
        """An empty `outputs` list means the same as none."""
        assert decode_json({**one_input(), "outputs": []}).outputs is None

    def test_outputs_with_and_without_binary_data(self) -> None:
        """Requested outputs keep their order and binary_data, None when unset."""
        outputs = [
            {"name": "b", "parameters": {"binary_data": True}},
            {"name": "a"},
            {"name": "c", "parameters": {}},
        ]
        request = decode_json({**one_input(), "outputs": outputs})
        assert request.outputs == (
            RequestedOutput("b", True),
            RequestedOutput("a", None),
            RequestedOutput("c", None),
        )


class TestSelectOutputs:
    @pytest.mark.parametrize(
        ("outputs", "default", "names", "binary"),
        [
            (None, False, ["y0", "y1", "y2"], [False, False, False]),
            (None, True, ["y0", "y1", "y2"], [True, True, True]),
            ([("y1", None)], False, ["y1"], [False]),
            ([("y1", None)], True, ["y1"], [True]),
            ([("y1", True)], False, ["y1"], [True]),
            ([("y1", False)], True, ["y1"], [False]),
            ([("y2", True), ("y0", None)], False, ["y2", "y0"], [True, False]),
            ([("y2", False), ("y0", None)], True, ["y2", "y0"], [False, True]),
        ],
    )
    def test_rules(
        self,
        outputs: list[tuple[str, bool | None]] | None,
        default: bool,
        names: list[str],
        binary: list[bool],
    ) -> None:
        """Listed outputs in request order with per-output binary_data over the request default; else all outputs."""
        request = InferRequest(
            id=None,
            parameters={},
            inputs={},
            input_datatypes={},
            outputs=None if outputs is None else tuple(RequestedOutput(n, b) for n, b in outputs),
            binary_output_default=default,
        )
        assert select_outputs(request, ["y0", "y1", "y2"]) == (names, binary)

    def test_unknown_output(self) -> None:
        """Asking for an output the model does not have names it and lists the model's outputs."""
        request = decode_json({**one_input(), "outputs": [{"name": "nope"}]})
        with pytest.raises(InvalidInput, match=r"^unknown output 'nope' \(model outputs: y0, y1\)$"):
            select_outputs(request, ["y0", "y1"])


def parse_response(body: bytes, header_length: int | None) -> Any:
    """The response as tritonclient itself reads it."""
    return httpclient.InferResult.from_response_body(body, header_length=header_length)


class TestEncodeResponse:
    @pytest.mark.parametrize("datatype", DATATYPES)
    @pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
    def test_tritonclient_reads_every_datatype(self, datatype: str, binary: bool) -> None:
        """tritonclient's own parser reads every datatype back from a binary or JSON output."""
        sample = SAMPLES[datatype]
        body, header_length = encode_infer_response("m", "1", None, [("y", sample)], [binary])
        assert (header_length is not None) == binary
        result = parse_response(body, header_length).as_numpy("y")
        assert result.shape == sample.shape
        if datatype == "BYTES":
            expected = [[s.encode() for s in row] for row in sample.tolist()] if binary else sample.tolist()
            assert result.tolist() == expected
        else:
            assert result.dtype == sample.dtype
            np.testing.assert_array_equal(result, sample)

    def test_captured_simple_response_byte_for_byte(self) -> None:
        """The encoder reproduces the captured binary response of the `simple` model byte for byte."""
        body, header_length = encode_infer_response(
            "simple", "1", None, [("OUTPUT0", IN0 + IN1), ("OUTPUT1", IN0 - IN1)], [True, True]
        )
        assert (body, header_length) == load_golden("simple_binary_response")

    def test_json_response_shape(self) -> None:
        """A JSON-only response has no header length, echoes the id and writes flat data."""
        body, header_length = encode_infer_response(
            "simple", "1", "req-42", [("OUTPUT0", IN0 + IN1)], [False], parameters={"p": 1}
        )
        assert header_length is None
        assert orjson.loads(body) == {
            "model_name": "simple",
            "model_version": "1",
            "id": "req-42",
            "parameters": {"p": 1},
            "outputs": [
                {"name": "OUTPUT0", "datatype": "INT32", "shape": [1, 16], "data": list(range(1, 17))}
            ],
        }

    def test_mixed_outputs_blocks_in_outputs_order(self) -> None:
        """Binary blocks follow the header in outputs order, skipping JSON outputs; the header length is exact."""
        a = np.arange(3, dtype=np.float32)
        b = np.array([7, 8], dtype=np.int64)
        s = np.array(["hello", "world"], dtype=object)
        c = np.array([[1, 2]], dtype=np.uint8)
        body, header_length = encode_infer_response(
            "m", "2", None, [("a", a), ("b", b), ("s", s), ("c", c)], [True, False, True, True]
        )
        assert header_length is not None
        header = orjson.loads(body[:header_length])
        assert [o["name"] for o in header["outputs"]] == ["a", "b", "s", "c"]
        assert header["outputs"][1]["data"] == [7, 8]
        sizes = [o.get("parameters", {}).get("binary_data_size") for o in header["outputs"]]
        assert sizes == [12, None, 18, 2]
        tail = body[header_length:]
        assert tail == a.tobytes() + bytes.fromhex("0500000068656c6c6f05000000776f726c64") + c.tobytes()
        result = parse_response(body, header_length)
        for name, array in [("a", a), ("b", b), ("c", c)]:
            np.testing.assert_array_equal(result.as_numpy(name), array)
        assert result.as_numpy("s").tolist() == [b"hello", b"world"]

    def test_bytes_binary_layout(self) -> None:
        """A binary BYTES output is 4-byte little-endian lengths and UTF-8 bytes, str or bytes elements alike."""
        for strings in (["hello", "world"], [b"hello", b"world"]):
            body, header_length = encode_infer_response(
                "m", "1", None, [("s", np.array(strings, dtype=object))], [True]
            )
            assert header_length is not None
            assert body[header_length:].hex() == "0500000068656c6c6f05000000776f726c64"

    @pytest.mark.parametrize(
        "strings", [np.array(["a", "é"]), np.array([b"a", b"b"]), np.array([b"a", "b"], dtype=object)]
    )
    def test_string_arrays_as_json(self, strings: npt.NDArray[Any]) -> None:
        """str, bytes and object arrays are BYTES outputs written as JSON strings."""
        body, header_length = encode_infer_response("m", "1", None, [("s", strings)], [False])
        assert header_length is None
        output = orjson.loads(body)["outputs"][0]
        assert output["datatype"] == "BYTES"
        assert output["data"] == [x.decode() if isinstance(x, bytes) else x for x in strings.tolist()]

    def test_non_utf8_bytes_go_binary(self) -> None:
        """A BYTES output asked for as JSON that is not valid UTF-8 is sent binary instead."""
        strings = np.array([b"ok", b"\xff\xfe"], dtype=object)
        body, header_length = encode_infer_response("m", "1", None, [("s", strings)], [False])
        assert header_length is not None
        assert parse_response(body, header_length).as_numpy("s").tolist() == [b"ok", b"\xff\xfe"]

    @pytest.mark.parametrize("binary", [True, False])
    def test_non_contiguous_output_is_row_major(self, binary: bool) -> None:
        """Transposed and strided outputs are written row-major."""
        array = np.arange(12, dtype=np.float64).reshape(3, 4).T[:, ::2]
        body, header_length = encode_infer_response("m", "1", None, [("y", array)], [binary])
        np.testing.assert_array_equal(parse_response(body, header_length).as_numpy("y"), array)

    @pytest.mark.parametrize("binary", [True, False])
    def test_big_endian_output(self, binary: bool) -> None:
        """A byte-swapped output is written with the right values."""
        array = np.array([1.5, -2.0], dtype=">f4")
        body, header_length = encode_infer_response("m", "1", None, [("y", array)], [binary])
        np.testing.assert_array_equal(parse_response(body, header_length).as_numpy("y"), array)

    def test_scalar_output(self) -> None:
        """A rank-0 output has shape [] and one data element."""
        body, _ = encode_infer_response("m", "1", None, [("y", np.array(3.5))], [False])
        assert orjson.loads(body)["outputs"][0] == {
            "name": "y",
            "datatype": "FP64",
            "shape": [],
            "data": [3.5],
        }

    def test_empty_output(self) -> None:
        """A zero-element binary output has binary_data_size 0."""
        body, header_length = encode_infer_response(
            "m", "1", None, [("y", np.zeros((0, 2), np.float32))], [True]
        )
        assert header_length == len(body)
        assert orjson.loads(body)["outputs"][0]["parameters"] == {"binary_data_size": 0}

    @pytest.mark.parametrize("array", [np.array([1j]), np.array(["2020-01-01"], dtype="datetime64[D]")])
    def test_unsupported_dtype(self, array: npt.NDArray[Any]) -> None:
        """An output dtype with no v2 datatype is an inference failure naming the output."""
        with pytest.raises(InferenceFailed, match=r"^output 'y': numpy dtype"):
            encode_infer_response("m", "1", None, [("y", array)], [False])

    def test_bytes_elements_of_other_types(self) -> None:
        """BYTES output elements must be str or bytes."""
        with pytest.raises(InferenceFailed, match=r"^output 'y': BYTES element of type int"):
            encode_infer_response("m", "1", None, [("y", np.array(["a", 1], dtype=object))], [True])

    def test_binary_flags_must_match_outputs(self) -> None:
        """One binary flag per output is a programming contract."""
        with pytest.raises(ValueError, match=r"2 outputs but 1 binary flags"):
            encode_infer_response("m", "1", None, [("a", IN0), ("b", IN1)], [True])

    def test_round_trip_through_request_decoder(self) -> None:
        """A response's binary blocks, read back as request inputs, give the same arrays."""
        outputs = [(name, SAMPLES[name]) for name in NUMERIC]
        body, header_length = encode_infer_response("m", "1", None, outputs, [True] * len(outputs))
        assert header_length is not None
        header = orjson.loads(body[:header_length])
        request_header = orjson.dumps({"inputs": header["outputs"]})
        request = decode_infer_request(request_header + body[header_length:], len(request_header))
        for name, array in outputs:
            np.testing.assert_array_equal(request.inputs[name], array)


class TestDecodeContent:
    PAYLOAD = b'{"inputs": []}' * 100

    @pytest.mark.parametrize(
        ("coding", "compress"),
        [
            ("gzip", gzip.compress),
            ("GZIP", gzip.compress),
            ("x-gzip", gzip.compress),
            (" gzip ", gzip.compress),
            ("deflate", zlib.compress),
            ("deflate", lambda data: zlib.compress(data)[2:-4]),
        ],
        ids=["gzip", "upper", "x-gzip", "spaces", "deflate-zlib", "deflate-raw"],
    )
    def test_inflates(self, coding: str, compress: Any) -> None:
        """gzip and deflate (zlib-wrapped or raw) bodies are inflated."""
        assert decode_content(compress(self.PAYLOAD), coding, 1 << 20) == self.PAYLOAD

    @pytest.mark.parametrize("coding", [None, "", "identity", "Identity"])
    def test_identity_passthrough(self, coding: str | None) -> None:
        """Without a coding the body is returned as is."""
        assert decode_content(self.PAYLOAD, coding, 1 << 20) is self.PAYLOAD

    def test_identity_over_limit(self) -> None:
        """An uncompressed body over the limit is too large."""
        with pytest.raises(PayloadTooLarge):
            decode_content(self.PAYLOAD, None, len(self.PAYLOAD) - 1)

    def test_exact_limit(self) -> None:
        """A body that inflates to exactly the limit is accepted."""
        assert decode_content(gzip.compress(self.PAYLOAD), "gzip", len(self.PAYLOAD)) == self.PAYLOAD

    @pytest.mark.parametrize("coding", ["gzip", "deflate"])
    def test_bomb_stops_at_the_limit(self, coding: str) -> None:
        """A small body that inflates past the limit is refused as too large."""
        bomb = (gzip.compress if coding == "gzip" else zlib.compress)(b"\0" * (64 << 20))
        assert len(bomb) < 1 << 17
        with pytest.raises(PayloadTooLarge, match=r"exceeds the limit of 1048576 bytes"):
            decode_content(bomb, coding, 1 << 20)

    @pytest.mark.parametrize("coding", ["gzip", "deflate"])
    def test_truncated(self, coding: str) -> None:
        """A compressed body cut short is refused."""
        data = (gzip.compress if coding == "gzip" else zlib.compress)(self.PAYLOAD)
        with pytest.raises(InvalidInput, match=rf"^{coding} request body is truncated"):
            decode_content(data[: len(data) // 2], coding, 1 << 20)

    @pytest.mark.parametrize("body", [b"not gzip at all", b"\x1f\x8b\x08\x00garbage"])
    def test_corrupt_gzip(self, body: bytes) -> None:
        """A body that is not gzip is refused."""
        with pytest.raises(InvalidInput, match=r"^gzip request body is"):
            decode_content(body, "gzip", 1 << 20)

    def test_gzip_members(self) -> None:
        """Concatenated gzip members inflate to the concatenated payloads, within one limit."""
        body = gzip.compress(b"abc") + gzip.compress(b"def")
        assert decode_content(body, "gzip", 6) == b"abcdef"
        with pytest.raises(PayloadTooLarge):
            decode_content(body, "gzip", 5)

    def test_bytes_after_deflate_stream(self) -> None:
        """Bytes after the end of a deflate stream are refused."""
        with pytest.raises(InvalidInput, match=r"^3 bytes follow the end of the deflate stream"):
            decode_content(zlib.compress(b"abc") + b"xyz", "deflate", 1 << 20)

    @pytest.mark.parametrize("coding", ["br", "zstd", "compress", "gzip, br"])
    def test_unknown_coding(self, coding: str) -> None:
        """Other codings are refused as invalid input, naming the coding."""
        with pytest.raises(InvalidInput, match=rf"^unsupported Content-Encoding '{coding}'"):
            decode_content(b"x", coding, 1 << 20)


class TestParseHeaderLength:
    @pytest.mark.parametrize(("value", "expected"), [(None, None), ("0", 0), ("231", 231), (" 235 ", 235)])
    def test_valid(self, value: str | None, expected: int | None) -> None:
        """Absent means None; digits are the length."""
        assert parse_header_length(value) == expected

    @pytest.mark.parametrize("value", ["", "-1", "1.5", "abc", "0x10", "²", "9" * 5000])
    def test_invalid(self, value: str) -> None:
        """Anything but a non-negative decimal integer is refused."""
        with pytest.raises(
            InvalidInput, match=r"^Inference-Header-Content-Length .* is not a non-negative integer"
        ):
            parse_header_length(value)


def test_zero_sized_shape_with_huge_dims_is_refused() -> None:
    """A shape with a zero and dims past numpy's limit (found by fuzzing: it used to be a 500) is a 400."""
    import orjson as _orjson
    import pytest as _pytest

    from gateway.errors import InvalidInput as _InvalidInput
    from gateway.protocol.v2 import decode_infer_request as _decode

    header = _orjson.dumps({"inputs": [{"name": "features", "shape": [0, 1324818, 23384440, 10**12],
                                        "datatype": "FP32", "parameters": {"binary_data_size": 0}}]})
    with _pytest.raises(_InvalidInput, match="dimension"):
        _decode(header, len(header))
