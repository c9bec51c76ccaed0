"""Datatype tables (pure): v2 datatype <-> numpy dtype <-> ONNX element type, wire dtypes and sizes,
and the strict JSON-values -> ndarray conversion that the v1 and v2 codecs share."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import numpy.typing as npt

from gateway.errors import InvalidInput

# The Open Inference Protocol datatypes that map onto numpy (BF16 has no numpy dtype).
NUMPY_DTYPE: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(object),
}
DATATYPES: frozenset[str] = frozenset(NUMPY_DTYPE)

# Binary tensor extension: little-endian, unpadded, native width; BOOL is one byte. BYTES is
# length-prefixed per element, so it has neither a wire dtype nor an element size.
WIRE_DTYPE: dict[str, np.dtype[Any]] = {
    name: dt.newbyteorder("<") for name, dt in NUMPY_DTYPE.items() if name != "BYTES"
}
ELEMENT_SIZE: dict[str, int] = {name: dt.itemsize for name, dt in WIRE_DTYPE.items()}

# onnx.TensorProto.DataType values, spelled out so the hot path never imports onnx.
ONNX_ELEMENT_TYPE: dict[str, int] = {
    "FP32": 1, "UINT8": 2, "INT8": 3, "UINT16": 4, "INT16": 5, "INT32": 6, "INT64": 7,
    "BYTES": 8, "BOOL": 9, "FP16": 10, "FP64": 11, "UINT32": 12, "UINT64": 13,
}  # fmt: skip
DATATYPE_OF_ONNX: dict[int, str] = {v: k for k, v in ONNX_ELEMENT_TYPE.items()}

# onnxruntime's NodeArg.type strings.
DATATYPE_OF_ORT: dict[str, str] = {
    "tensor(bool)": "BOOL", "tensor(uint8)": "UINT8", "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32", "tensor(uint64)": "UINT64", "tensor(int8)": "INT8",
    "tensor(int16)": "INT16", "tensor(int32)": "INT32", "tensor(int64)": "INT64",
    "tensor(float16)": "FP16", "tensor(float)": "FP32", "tensor(double)": "FP64",
    "tensor(string)": "BYTES",
}  # fmt: skip

# Keyed by (kind, itemsize) so that either byte order names the same datatype.
_DATATYPE_OF_KIND: dict[tuple[str, int], str] = {
    (dt.kind, dt.itemsize): name for name, dt in NUMPY_DTYPE.items() if name != "BYTES"
}
_STRING_KINDS = frozenset("OUS")
_KIND_TEXT = {
    "b": "booleans",
    "i": "integers",
    "u": "integers",
    "f": "non-integer numbers",
    "U": "strings",
    "O": "mixed or non-numeric values",
}


def numpy_dtype(datatype: str) -> np.dtype[Any]:
    """The numpy dtype of a v2 datatype (object for BYTES); raises ValueError for an unknown one."""
    try:
        return NUMPY_DTYPE[datatype]
    except KeyError:
        raise ValueError(f"unsupported datatype {datatype!r}") from None


def datatype_of(array: npt.NDArray[Any]) -> str:
    """The v2 datatype of an array: object, str and bytes arrays are BYTES.

    Raises TypeError for a dtype with no v2 datatype (complex, datetime, float128, ...)."""
    dt = array.dtype
    if dt.kind in _STRING_KINDS:
        return "BYTES"
    name = _DATATYPE_OF_KIND.get((dt.kind, dt.itemsize))
    if name is None:
        raise TypeError(f"numpy dtype {dt} has no v2 datatype")
    return name


def array_from_json(values: Any, datatype: str, what: str) -> npt.NDArray[Any]:
    """Convert a JSON list (flat or rectangular nested) to an array of `datatype`, strictly.

    Integers must be JSON integers within the type's range; floats accept integers and must be
    finite in the target width; BOOL takes only true/false; BYTES takes only strings (kept as
    `str` in an object array). The result has the nesting's shape. `what` prefixes error
    messages, e.g. "input 'x'". Raises InvalidInput."""
    target = NUMPY_DTYPE[datatype]
    if datatype == "BYTES":
        return _strings_from_json(values, what)
    try:
        arr = np.asarray(values)
    except (ValueError, TypeError, OverflowError, RecursionError) as exc:
        raise InvalidInput(f"{what}: data is not a rectangular array of {datatype} values") from exc
    if arr.size == 0:
        return np.empty(arr.shape, dtype=target)
    kind = arr.dtype.kind
    if target.kind == "b":
        if kind != "b":
            raise InvalidInput(f"{what}: expected BOOL data (true/false), got {_KIND_TEXT.get(kind, kind)}")
        return arr
    if target.kind in "iu":
        if kind not in "iu":
            # Integers that numpy could not fit in int64 alone (uint64 beside small ints, or
            # beyond 64 bits) come out as float or object: convert them exactly, or refuse.
            if kind in "fO" and all(type(x) is int for x in _leaves(values)):
                try:
                    return np.array(values, dtype=target)
                except OverflowError as exc:
                    raise InvalidInput(f"{what}: value out of range for {datatype}") from exc
            raise InvalidInput(
                f"{what}: expected {datatype} data (integers), got {_KIND_TEXT.get(kind, kind)}"
            )
        info = np.iinfo(target)
        if arr.min() < info.min or arr.max() > info.max:
            raise InvalidInput(f"{what}: value out of range for {datatype}")
        return arr.astype(target, copy=False)
    if kind not in "iuf":
        raise InvalidInput(f"{what}: expected {datatype} data (numbers), got {_KIND_TEXT.get(kind, kind)}")
    with np.errstate(over="ignore"):
        out = arr.astype(target, copy=False)
    # JSON cannot spell inf or NaN (orjson rejects 1e400), so only a narrowing can overflow.
    if target.itemsize < 8 and not np.isfinite(out).all():
        raise InvalidInput(f"{what}: value out of range for {datatype}")
    return out


def _strings_from_json(values: Any, what: str) -> npt.NDArray[Any]:
    try:
        arr = np.asarray(values, dtype=object)
    except (ValueError, TypeError, RecursionError) as exc:
        raise InvalidInput(f"{what}: data is not a rectangular array of BYTES values") from exc
    for x in arr.flat:
        if type(x) is not str:
            # A ragged nesting leaves lists as elements, so this also catches ragged rows.
            raise InvalidInput(f"{what}: BYTES data must be strings, got {type(x).__name__}")
    return arr


def _leaves(values: Any) -> Iterator[Any]:
    # Walked only when numpy's inference gave float or object for an integer target.
    if isinstance(values, list):
        for v in values:
            yield from _leaves(v)
    else:
        yield values
