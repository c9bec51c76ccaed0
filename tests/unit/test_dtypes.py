"""Datatype tables and the strict JSON -> array conversion shared by the v1 and v2 codecs."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
import pytest
import tritonclient.utils as triton_utils

from gateway.errors import InvalidInput
from gateway.protocol.dtypes import (
    DATATYPE_OF_ONNX,
    DATATYPE_OF_ORT,
    DATATYPES,
    ELEMENT_SIZE,
    NUMPY_DTYPE,
    ONNX_ELEMENT_TYPE,
    WIRE_DTYPE,
    array_from_json,
    datatype_of,
    numpy_dtype,
)

NUMERIC = sorted(DATATYPES - {"BYTES"})


class TestTables:
    def test_datatypes(self) -> None:
        """The table covers exactly the protocol's datatypes that numpy can hold."""
        expected = {"BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64"}
        assert expected | {"FP16", "FP32", "FP64", "BYTES"} == DATATYPES

    @pytest.mark.parametrize("datatype", sorted(DATATYPES))
    def test_numpy_dtype_matches_tritonclient(self, datatype: str) -> None:
        """Each datatype maps to the numpy dtype tritonclient uses for it."""
        assert NUMPY_DTYPE[datatype] == np.dtype(triton_utils.triton_to_np_dtype(datatype))

    @pytest.mark.parametrize("datatype", NUMERIC)
    def test_wire_dtype_is_little_endian_native_width(self, datatype: str) -> None:
        """Wire dtypes are explicit little-endian (or byte-order free) at the native width."""
        wire = WIRE_DTYPE[datatype]
        assert wire.byteorder in "<|"
        assert wire.newbyteorder("=") == NUMPY_DTYPE[datatype].newbyteorder("=")
        assert ELEMENT_SIZE[datatype] == NUMPY_DTYPE[datatype].itemsize

    def test_bool_is_one_byte_and_bytes_has_no_size(self) -> None:
        """BOOL is one byte per element; BYTES has no fixed size or wire dtype."""
        assert ELEMENT_SIZE["BOOL"] == 1
        assert "BYTES" not in ELEMENT_SIZE
        assert "BYTES" not in WIRE_DTYPE

    @pytest.mark.parametrize("datatype", sorted(DATATYPES))
    def test_onnx_element_types(self, datatype: str) -> None:
        """ONNX element types agree with onnx's own numpy mapping, and the reverse table inverts them."""
        element_type = ONNX_ELEMENT_TYPE[datatype]
        assert DATATYPE_OF_ONNX[element_type] == datatype
        np_dtype = onnx.helper.tensor_dtype_to_np_dtype(element_type)
        expected = np.dtype(object) if datatype == "BYTES" else NUMPY_DTYPE[datatype]
        assert np.dtype(np_dtype) == expected

    def test_ort_type_strings(self) -> None:
        """Every datatype has exactly one onnxruntime type string."""
        assert sorted(DATATYPE_OF_ORT.values()) == sorted(DATATYPES)
        assert DATATYPE_OF_ORT["tensor(float)"] == "FP32"
        assert DATATYPE_OF_ORT["tensor(string)"] == "BYTES"


class TestNumpyDtype:
    @pytest.mark.parametrize("datatype", sorted(DATATYPES))
    def test_known(self, datatype: str) -> None:
        """Each datatype names its numpy dtype."""
        assert numpy_dtype(datatype) == NUMPY_DTYPE[datatype]

    @pytest.mark.parametrize("datatype", ["BF16", "FLOAT", "fp32", ""])
    def test_unknown(self, datatype: str) -> None:
        """An unknown datatype is a ValueError naming it."""
        with pytest.raises(ValueError, match="unsupported datatype"):
            numpy_dtype(datatype)


class TestDatatypeOf:
    @pytest.mark.parametrize("datatype", NUMERIC)
    def test_numeric(self, datatype: str) -> None:
        """A numeric array names its datatype, in either byte order."""
        dtype = NUMPY_DTYPE[datatype]
        assert datatype_of(np.zeros(2, dtype)) == datatype
        assert datatype_of(np.zeros(2, dtype.newbyteorder(">"))) == datatype

    @pytest.mark.parametrize(
        "array",
        [np.array(["a"], dtype=object), np.array(["a"]), np.array([b"a"]), np.array([], dtype=object)],
    )
    def test_strings_are_bytes(self, array: npt.NDArray[Any]) -> None:
        """Object, str and bytes arrays are BYTES."""
        assert datatype_of(array) == "BYTES"

    @pytest.mark.parametrize(
        "array", [np.array([1j]), np.array([1], dtype="datetime64[s]"), np.array([1], dtype=np.longdouble)]
    )
    def test_unsupported(self, array: npt.NDArray[Any]) -> None:
        """dtypes with no v2 datatype raise TypeError naming the dtype."""
        if array.dtype == np.float64:  # platforms where long double is double
            pytest.skip("long double is float64 here")
        with pytest.raises(TypeError, match=r"has no v2 datatype"):
            datatype_of(array)


class TestArrayFromJson:
    @pytest.mark.parametrize(
        ("datatype", "values", "expected"),
        [
            ("FP32", [1, 2], [1.0, 2.0]),
            ("FP16", [0.5, 1], [0.5, 1.0]),
            ("FP64", [1, 2.5], [1.0, 2.5]),
            ("UINT8", [0, 255], [0, 255]),
            ("INT64", [[1, 2], [3, 4]], [[1, 2], [3, 4]]),
            ("UINT64", [0, 2**64 - 1], [0, 2**64 - 1]),
            ("INT64", [-(2**63), 2**63 - 1], [-(2**63), 2**63 - 1]),
            ("BOOL", [True, False], [True, False]),
            ("BYTES", ["a", ""], ["a", ""]),
            ("BYTES", [["a"], ["b"]], [["a"], ["b"]]),
        ],
    )
    def test_converts(self, datatype: str, values: list[Any], expected: list[Any]) -> None:
        """Values that fit the datatype convert to it, keeping their nesting as the shape."""
        array = array_from_json(values, datatype, "input 'x'")
        assert array.dtype == NUMPY_DTYPE[datatype]
        assert array.tolist() == expected

    @pytest.mark.parametrize(
        ("datatype", "values", "reason"),
        [
            ("INT32", [1.5], "expected INT32 data \\(integers\\), got non-integer numbers"),
            ("INT32", ["1"], "expected INT32 data \\(integers\\), got strings"),
            ("INT32", [True], "expected INT32 data \\(integers\\), got booleans"),
            ("UINT8", [-1], "value out of range for UINT8"),
            ("INT64", [2**63, -1], "value out of range for INT64"),
            ("UINT64", [2**70], "value out of range for UINT64"),
            ("FP16", [1e6], "value out of range for FP16"),
            ("FP32", [None], "expected FP32 data \\(numbers\\)"),
            ("BOOL", [0], "expected BOOL data \\(true/false\\), got integers"),
            ("BYTES", [b"a"], "BYTES data must be strings, got bytes"),
            ("FP32", [[1.0], [2.0, 3.0]], "data is not a rectangular array of FP32 values"),
        ],
    )
    def test_refuses(self, datatype: str, values: list[Any], reason: str) -> None:
        """Values that do not fit are refused with the given prefix and the reason."""
        with pytest.raises(InvalidInput, match=rf"^input 'x': {reason}"):
            array_from_json(values, datatype, "input 'x'")

    @pytest.mark.parametrize("datatype", sorted(DATATYPES))
    def test_empty(self, datatype: str) -> None:
        """An empty list gives an empty array of the datatype."""
        array = array_from_json([], datatype, "input 'x'")
        assert array.size == 0
        assert array.dtype == NUMPY_DTYPE[datatype]
