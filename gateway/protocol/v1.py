"""KServe v1 codec (pure): {"instances": ...} or columnar {"inputs": ...} bodies -> arrays in the model's
input order, converted strictly to the model's datatypes; outputs -> {"predictions": ...} via orjson."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from gateway.errors import InferenceFailed, InvalidInput
from gateway.protocol.dtypes import NUMPY_DTYPE, array_from_json, datatype_of
from registry.entities import TensorSpec

DEFAULT_MAX_ELEMENTS = 1 << 26
PredictDecoder = Callable[[bytes], dict[str, npt.NDArray[Any]]]

# A float64 |x| at or above this rounds to inf in float32 (2**128 - 2**103: halfway past FLT_MAX).
_FP32_OVERFLOW = float(2**128 - 2**103)
# Squared (rounded like any product): a sum of squares below it proves every |x| is below the bound.
_FP32_OVERFLOW_SQUARED = _FP32_OVERFLOW * _FP32_OVERFLOW
_FAST_KINDS = frozenset("iuf")
# Native-order numeric dtypes: orjson writes such an array (C-contiguous, rank >= 1) as it is.
_ORJSON_NATIVE = frozenset(dt for name, dt in NUMPY_DTYPE.items() if name != "BYTES")


def decode_predict(
    body: bytes, inputs: Sequence[TensorSpec], *, max_elements: int = DEFAULT_MAX_ELEMENTS
) -> dict[str, npt.NDArray[Any]]:
    """Decode a v1 predict body into {input name: batch array}, in the order of `inputs`.

    Row form: {"instances": [row, ...]} where a row is the input's value for one instance (a
    single-input model) or {input name: value} (any model). Columnar form: {"inputs": batch} for a
    single-input model, or {"inputs": {input name: batch}}. Values are converted to each input's
    datatype strictly (no floats for integers, no strings for numbers, no ragged rows); BYTES
    inputs become object arrays of str. Raises InvalidInput, also for more than `max_elements`
    elements in one input."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"request body is not valid JSON: {exc}") from exc
    if type(doc) is not dict:
        raise InvalidInput("request body must be a JSON object")
    names = [spec.name for spec in inputs]
    if "instances" in doc:
        if "inputs" in doc:
            raise InvalidInput("request has both 'instances' and 'inputs'; send one")
        columns = _columns_from_instances(doc["instances"], names)
    elif "inputs" in doc:
        columns = _columns_from_inputs(doc["inputs"], names)
    else:
        raise InvalidInput("request needs 'instances' or 'inputs'")
    return {spec.name: _to_array(columns[spec.name], spec, max_elements) for spec in inputs}


def compile_predict_decoder(
    inputs: Sequence[TensorSpec], *, max_elements: int = DEFAULT_MAX_ELEMENTS
) -> PredictDecoder:
    """decode_predict specialised once per signature: `decoder(body)` returns what
    `decode_predict(body, inputs)` returns and raises what it raises.

    A single FP32 or FP64 input of shape [-1, F] gets a fast path for its common body,
    {"instances": [[F numbers], ...]}: one numpy conversion, one shape check and, for FP32, one
    dot product proving no value overflows, instead of errstate + isfinite. Any other body (row
    dicts, columnar, ragged, non-numeric, out of range, errors) takes decode_predict itself."""
    inputs = tuple(inputs)
    general: PredictDecoder = partial(decode_predict, inputs=inputs, max_elements=max_elements)
    if len(inputs) != 1:
        return general
    spec = inputs[0]
    if spec.datatype not in ("FP32", "FP64") or len(spec.shape) != 2 or spec.shape[0] != -1 or spec.shape[1] < 1:
        return general
    name, width, target = spec.name, spec.shape[1], NUMPY_DTYPE[spec.datatype]
    narrow = spec.datatype == "FP32"
    loads, asarray, vdot, kinds, limit = orjson.loads, np.asarray, np.vdot, _FAST_KINDS, _FP32_OVERFLOW_SQUARED

    def decode(body: bytes) -> dict[str, npt.NDArray[Any]]:
        try:
            doc = loads(body)
        except orjson.JSONDecodeError:
            return general(body)
        if type(doc) is dict and "inputs" not in doc:
            rows = doc.get("instances")
            if type(rows) is list and rows and type(rows[0]) is list:
                try:
                    array = asarray(rows)  # exactly as array_from_json converts, so the same values pass
                except (ValueError, TypeError, OverflowError, RecursionError):
                    return general(body)
                shape = array.shape
                if (
                    len(shape) == 2 and shape[1] == width and array.dtype.kind in kinds
                    and array.size <= max_elements
                    # JSON has no inf or NaN, so only narrowing float64 to float32 can overflow
                    and not (narrow and array.dtype.kind == "f" and not vdot(array, array) < limit)
                ):
                    return {name: array.astype(target, copy=False)}
        return general(body)

    return decode


def _columns_from_instances(instances: Any, names: list[str]) -> Mapping[str, Any]:
    if type(instances) is not list or not instances:
        raise InvalidInput("'instances' must be a non-empty list")
    if len(names) == 1 and type(instances[0]) is not dict:
        return {names[0]: instances}
    columns: dict[str, list[Any]] = {name: [] for name in names}
    for index, instance in enumerate(instances):
        if type(instance) is not dict:
            raise InvalidInput(
                f"instances[{index}] must be an object keyed by input name (model inputs: {', '.join(names)})"
            )
        if len(instance) != len(names) or any(name not in instance for name in names):
            _raise_for_keys(f"instances[{index}]", instance, names)
        for name in names:
            columns[name].append(instance[name])
    return columns


def _columns_from_inputs(value: Any, names: list[str]) -> Mapping[str, Any]:
    if type(value) is dict:
        if len(value) != len(names) or any(name not in value for name in names):
            _raise_for_keys("'inputs'", value, names)
        return value
    if len(names) == 1:
        return {names[0]: value}
    raise InvalidInput(f"'inputs' must be an object keyed by input name (model inputs: {', '.join(names)})")


def _raise_for_keys(where: str, given: Mapping[str, Any], names: list[str]) -> None:
    for key in given:
        if key not in names:
            raise InvalidInput(f"{where}: unexpected input '{key}' (model inputs: {', '.join(names)})")
    for name in names:
        if name not in given:
            raise InvalidInput(f"{where}: missing input '{name}'")


def _to_array(rows: Any, spec: TensorSpec, max_elements: int) -> npt.NDArray[Any]:
    what = f"input '{spec.name}'"
    if spec.datatype not in NUMPY_DTYPE:
        raise InvalidInput(f"{what}: datatype {spec.datatype} is not supported")
    if type(rows) is not list or not rows:
        raise InvalidInput(f"{what}: expected a non-empty list with one value per instance")
    array = array_from_json(rows, spec.datatype, what)
    if array.size > max_elements:
        raise InvalidInput(f"{what}: {array.size} elements, over the limit of {max_elements}")
    return array


def encode_predict(outputs: Sequence[tuple[str, npt.NDArray[Any]]]) -> bytes:
    """Encode {"predictions": [...]}: with one output, each prediction is that output's row; with
    several, each is {output name: row}. BYTES outputs serialize as strings.

    Raises InferenceFailed for outputs whose batch sizes differ, a rank-0 output beside others,
    an unsupported dtype, or BYTES elements that are not valid UTF-8 (v1 has no binary form)."""
    if len(outputs) == 1:
        name, array = outputs[0]
        if type(array) is np.ndarray and array.dtype in _ORJSON_NATIVE and array.ndim and array.flags.c_contiguous:
            return orjson.dumps({"predictions": array}, option=orjson.OPT_SERIALIZE_NUMPY)  # what _jsonable gives
        return orjson.dumps({"predictions": _jsonable(name, array)}, option=orjson.OPT_SERIALIZE_NUMPY)
    columns: list[tuple[str, Any]] = []
    batch = 0
    for name, array in outputs:
        if array.ndim == 0:
            raise InferenceFailed(f"output '{name}' has no batch dimension")
        if not columns:
            batch = array.shape[0]
        elif array.shape[0] != batch:
            raise InferenceFailed(
                f"output '{name}' has batch size {array.shape[0]}, output '{columns[0][0]}' has {batch}"
            )
        columns.append((name, _jsonable(name, array)))
    predictions = [{name: column[index] for name, column in columns} for index in range(batch)]
    return orjson.dumps({"predictions": predictions}, option=orjson.OPT_SERIALIZE_NUMPY)


def _jsonable(name: str, array: npt.NDArray[Any]) -> Any:
    """A C-contiguous native array (orjson writes nested lists), a numpy scalar, or nested lists of str."""
    try:
        datatype = datatype_of(array)
    except TypeError as exc:
        raise InferenceFailed(f"output '{name}': {exc}") from exc
    if datatype != "BYTES":
        native = array.astype(NUMPY_DTYPE[datatype], order="C", copy=False)
        return native[()] if native.ndim == 0 else native  # orjson takes numpy scalars, not 0-d arrays
    texts: list[str] = []
    for item in array.ravel().tolist():
        if isinstance(item, bytes):
            try:
                item = item.decode()
            except UnicodeDecodeError as exc:
                raise InferenceFailed(f"output '{name}': BYTES element is not valid UTF-8") from exc
        elif not isinstance(item, str):
            raise InferenceFailed(f"output '{name}': BYTES element of type {type(item).__name__}")
        texts.append(item)
    strings = np.empty(len(texts), dtype=object)
    strings[:] = texts
    return strings.reshape(array.shape).tolist()
