"""Open Inference Protocol v2 REST codec (pure): request bodies -> named arrays, arrays -> response bodies,
with the binary tensor data extension (Inference-Header-Content-Length) and gzip/deflate request bodies.
Wire details and captured client behaviour: /work/shared/protocols/v2.md."""

from __future__ import annotations

import struct
import sys
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from gateway.errors import InferenceFailed, InvalidInput, PayloadTooLarge
from gateway.protocol.dtypes import ELEMENT_SIZE, NUMPY_DTYPE, WIRE_DTYPE, array_from_json, datatype_of

DEFAULT_MAX_ELEMENTS = 1 << 26
_MAX_RANK = 64  # numpy's NPY_MAXDIMS
_U32 = struct.Struct("<I")
_NATIVE_IS_WIRE = sys.byteorder == "little"
_EMPTY: Mapping[str, Any] = {}


@dataclass(frozen=True, slots=True)
class RequestedOutput:
    """An entry of the request's `outputs`: `binary` is its parameters.binary_data, None when unset."""

    name: str
    binary: bool | None


# eq=False: the fields hold ndarrays, whose == is elementwise; identity is the only useful equality.
@dataclass(frozen=True, slots=True, eq=False)
class InferRequest:
    """A decoded v2 inference request.

    `inputs` keeps the request's order; numeric inputs sent as binary are read-only views over the
    body. BYTES inputs are object arrays: `str` elements from JSON, `bytes` elements from binary.
    `outputs` is None when the request lists none (or an empty list): then all outputs are wanted."""

    id: str | None
    parameters: dict[str, Any]
    inputs: dict[str, npt.NDArray[Any]]
    input_datatypes: dict[str, str]
    outputs: tuple[RequestedOutput, ...] | None
    binary_output_default: bool


def parse_header_length(value: str | None) -> int | None:
    """The Inference-Header-Content-Length header as an int (None when absent); raises InvalidInput."""
    if value is None:
        return None
    text = value.strip()
    if not (text.isascii() and text.isdigit() and len(text) <= 19):
        raise InvalidInput(f"Inference-Header-Content-Length '{value}' is not a non-negative integer")
    return int(text)


def decode_infer_request(
    body: bytes, header_length: int | None, *, max_elements: int = DEFAULT_MAX_ELEMENTS
) -> InferRequest:
    """Decode a v2 infer request body.

    `header_length` is the Inference-Header-Content-Length value: None means the whole body is
    JSON; otherwise the first `header_length` bytes are JSON and the rest are the binary blocks of
    the inputs that carry parameters.binary_data_size, in input order. Content-Type is never
    consulted (tritonclient sends none). An input whose shape has more than `max_elements`
    elements is refused before anything is allocated for it. Raises InvalidInput."""
    size = len(body)
    if header_length is None:
        header_end = size
    elif 0 <= header_length <= size:
        header_end = header_length
    else:
        raise InvalidInput(f"Inference-Header-Content-Length {header_length} is outside the {size}-byte body")
    try:
        doc = orjson.loads(body if header_end == size else memoryview(body)[:header_end])
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"request header is not valid JSON: {exc}") from exc
    if type(doc) is not dict:
        raise InvalidInput("request body must be a JSON object")

    request_id = doc.get("id")
    if request_id is not None and type(request_id) is not str:
        raise InvalidInput("request 'id' must be a string")
    parameters = doc.get("parameters")
    if parameters is None:
        parameters = {}
    elif type(parameters) is not dict:
        raise InvalidInput("request 'parameters' must be an object")
    binary_output_default = parameters.get("binary_data_output", False)
    if type(binary_output_default) is not bool:
        raise InvalidInput("request parameters.binary_data_output must be true or false")

    raw_inputs = doc.get("inputs")
    if type(raw_inputs) is not list or not raw_inputs:
        raise InvalidInput("request 'inputs' must be a non-empty list")
    inputs: dict[str, npt.NDArray[Any]] = {}
    datatypes: dict[str, str] = {}
    offset = header_end
    for position, raw in enumerate(raw_inputs):
        name, datatype, array, offset = _decode_input(
            raw, position, body, offset, header_length is not None, max_elements
        )
        if name in inputs:
            raise InvalidInput(f"input '{name}' appears more than once")
        inputs[name] = array
        datatypes[name] = datatype
    if offset != size:
        raise InvalidInput(
            f"{size - offset} bytes at the end of the body belong to no input's binary_data_size"
        )

    return InferRequest(
        id=request_id,
        parameters=parameters,
        inputs=inputs,
        input_datatypes=datatypes,
        outputs=_requested_outputs(doc.get("outputs")),
        binary_output_default=binary_output_default,
    )


def _decode_input(
    raw: Any, position: int, body: bytes, offset: int, has_tail: bool, max_elements: int
) -> tuple[str, str, npt.NDArray[Any], int]:
    """One entry of `inputs` -> (name, datatype, array, offset after its binary block)."""
    if type(raw) is not dict:
        raise InvalidInput(f"inputs[{position}] must be an object")
    name = raw.get("name")
    if type(name) is not str:
        raise InvalidInput(f"inputs[{position}]: 'name' must be a string")
    what = f"input '{name}'"
    datatype = raw.get("datatype")
    if type(datatype) is not str:
        raise InvalidInput(f"{what}: 'datatype' must be a string")
    if datatype not in NUMPY_DTYPE:
        raise InvalidInput(f"{what}: unsupported datatype '{datatype}'")
    shape = raw.get("shape")
    if type(shape) is not list or len(shape) > _MAX_RANK:
        raise InvalidInput(f"{what}: 'shape' must be a list of at most {_MAX_RANK} non-negative integers")
    count = 1
    for dim in shape:
        if type(dim) is not int or dim < 0:
            raise InvalidInput(f"{what}: 'shape' must be a list of non-negative integers, got {shape}")
        if dim > max_elements:  # also bounds zero-sized shapes, which numpy cannot reshape to past 2**63
            raise InvalidInput(f"{what}: shape {shape} has a dimension of {dim} elements, over the limit of {max_elements}")
        count *= dim
    if count > max_elements:
        raise InvalidInput(f"{what}: shape {shape} has {count} elements, over the limit of {max_elements}")
    parameters = raw.get("parameters")
    if parameters is None:
        parameters = _EMPTY
    elif type(parameters) is not dict:
        raise InvalidInput(f"{what}: 'parameters' must be an object")
    binary_size = parameters.get("binary_data_size")
    data = raw.get("data")

    if binary_size is None:
        if data is None:
            raise InvalidInput(f"{what}: needs 'data' or parameters.binary_data_size")
        if type(data) is not list:
            raise InvalidInput(f"{what}: 'data' must be a list")
        array = array_from_json(data, datatype, what)
        if array.size != count:
            raise InvalidInput(f"{what}: data has {array.size} elements, shape {shape} needs {count}")
        return name, datatype, array.reshape(shape), offset

    if data is not None:
        raise InvalidInput(f"{what}: has both 'data' and parameters.binary_data_size")
    if type(binary_size) is not int or binary_size < 0:
        raise InvalidInput(f"{what}: binary_data_size must be a non-negative integer")
    if not has_tail:
        raise InvalidInput(
            f"{what}: binary_data_size given but the request has no Inference-Header-Content-Length"
        )
    left = len(body) - offset
    if binary_size > left:
        raise InvalidInput(
            f"{what}: binary_data_size {binary_size} exceeds the {left} bytes left in the body"
        )
    if datatype == "BYTES":
        array = _strings_from_binary(body, offset, binary_size, count, what).reshape(shape)
        return name, datatype, array, offset + binary_size
    expected = count * ELEMENT_SIZE[datatype]
    if binary_size != expected:
        raise InvalidInput(
            f"{what}: binary_data_size {binary_size} does not match shape {shape} of {datatype} ({expected} bytes)"
        )
    array = np.frombuffer(body, dtype=WIRE_DTYPE[datatype], count=count, offset=offset)
    if datatype == "BOOL" and count and array.view(np.uint8).max() > 1:
        raise InvalidInput(f"{what}: BOOL bytes must be 0 or 1")
    if not _NATIVE_IS_WIRE:
        array = array.astype(NUMPY_DTYPE[datatype])
    return name, datatype, array.reshape(shape), offset + binary_size


def _strings_from_binary(body: bytes, start: int, size: int, count: int, what: str) -> npt.NDArray[Any]:
    """Decode `count` BYTES elements (4-byte little-endian length + bytes each) filling body[start:start+size]."""
    items: list[bytes] = []
    pos, end = start, start + size
    for index in range(count):
        if end - pos < 4:
            raise InvalidInput(f"{what}: BYTES data ends inside the length of element {index}")
        (length,) = _U32.unpack_from(body, pos)
        pos += 4
        if length > end - pos:
            raise InvalidInput(
                f"{what}: BYTES element {index} claims {length} bytes, {end - pos} are left in its block"
            )
        items.append(body[pos : pos + length])
        pos += length
    if pos != end:
        raise InvalidInput(f"{what}: {end - pos} bytes left in the BYTES block after its {count} elements")
    array = np.empty(count, dtype=object)
    array[:] = items
    return array


def _requested_outputs(raw: Any) -> tuple[RequestedOutput, ...] | None:
    if raw is None:
        return None
    if type(raw) is not list:
        raise InvalidInput("request 'outputs' must be a list")
    if not raw:
        return None
    result: list[RequestedOutput] = []
    seen: set[str] = set()
    for position, item in enumerate(raw):
        if type(item) is not dict:
            raise InvalidInput(f"outputs[{position}] must be an object")
        name = item.get("name")
        if type(name) is not str:
            raise InvalidInput(f"outputs[{position}]: 'name' must be a string")
        if name in seen:
            raise InvalidInput(f"output '{name}' is requested more than once")
        seen.add(name)
        parameters = item.get("parameters")
        if parameters is None:
            parameters = _EMPTY
        elif type(parameters) is not dict:
            raise InvalidInput(f"output '{name}': 'parameters' must be an object")
        binary = parameters.get("binary_data")
        if binary is not None and type(binary) is not bool:
            raise InvalidInput(f"output '{name}': parameters.binary_data must be true or false")
        result.append(RequestedOutput(name, binary))
    return tuple(result)


def select_outputs(request: InferRequest, available: Sequence[str]) -> tuple[list[str], list[bool]]:
    """The outputs to return, and whether each goes binary.

    With `outputs` listed: those, binary iff their parameters.binary_data, else the request's
    parameters.binary_data_output, else False. Without: all of `available` with that default.
    Raises InvalidInput naming an output the model does not have."""
    default = request.binary_output_default
    if request.outputs is None:
        return list(available), [default] * len(available)
    names: list[str] = []
    binary: list[bool] = []
    for wanted in request.outputs:
        if wanted.name not in available:
            raise InvalidInput(f"unknown output '{wanted.name}' (model outputs: {', '.join(available)})")
        names.append(wanted.name)
        binary.append(default if wanted.binary is None else wanted.binary)
    return names, binary


def encode_infer_response(
    model_name: str,
    model_version: str,
    request_id: str | None,
    outputs: Sequence[tuple[str, npt.NDArray[Any]]],
    binary: Sequence[bool],
    parameters: Mapping[str, Any] | None = None,
) -> tuple[bytes, int | None]:
    """Encode a v2 infer response -> (body, JSON header length, or None when no output is binary).

    Binary blocks follow the JSON header in `outputs` order, little-endian; BYTES blocks are a
    4-byte length + UTF-8 bytes per element. JSON `data` is the flat row-major list. A BYTES output
    asked for as JSON whose elements are not all valid UTF-8 is sent binary instead (JSON strings
    cannot carry it, and tritonclient reads either form). Raises InferenceFailed for an output
    dtype with no v2 datatype, or BYTES elements that are neither str nor bytes."""
    if len(binary) != len(outputs):
        raise ValueError(f"{len(outputs)} outputs but {len(binary)} binary flags")
    entries: list[dict[str, Any]] = []
    blocks: list[Any] = []
    for (name, array), want_binary in zip(outputs, binary, strict=True):
        try:
            datatype = datatype_of(array)
        except TypeError as exc:
            raise InferenceFailed(f"output '{name}': {exc}") from exc
        entry: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(array.shape)}
        entries.append(entry)
        block: Any
        if datatype == "BYTES":
            items = _string_items(name, array)
            if not want_binary:
                texts = _as_texts(items)
                if texts is not None:
                    entry["data"] = texts
                    continue
            block = _pack_strings(items)
            nbytes = len(block)
        elif want_binary:
            block = np.ascontiguousarray(array, dtype=WIRE_DTYPE[datatype])
            nbytes = block.nbytes
        else:
            entry["data"] = np.ascontiguousarray(array, dtype=NUMPY_DTYPE[datatype]).reshape(-1)
            continue
        entry["parameters"] = {"binary_data_size": nbytes}
        blocks.append(block)

    doc: dict[str, Any] = {"model_name": model_name, "model_version": model_version}
    if request_id is not None:
        doc["id"] = request_id
    if parameters:
        doc["parameters"] = parameters
    doc["outputs"] = entries
    header = orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)
    if not blocks:
        return header, None
    return b"".join([header, *blocks]), len(header)


def _string_items(name: str, array: npt.NDArray[Any]) -> list[str | bytes]:
    items: list[Any] = array.ravel().tolist()
    for item in items:
        if not isinstance(item, str | bytes):
            raise InferenceFailed(f"output '{name}': BYTES element of type {type(item).__name__}")
    return items


def _as_texts(items: list[str | bytes]) -> list[str] | None:
    """The elements as str, or None when one is bytes that are not valid UTF-8."""
    texts: list[str] = []
    for item in items:
        if isinstance(item, bytes):
            try:
                item = item.decode()
            except UnicodeDecodeError:
                return None
        texts.append(item)
    return texts


def _pack_strings(items: list[str | bytes]) -> bytes:
    parts: list[bytes] = []
    for item in items:
        raw = item.encode() if isinstance(item, str) else item
        parts.append(_U32.pack(len(raw)))
        parts.append(raw)
    return b"".join(parts)


def decode_content(body: bytes, content_encoding: str | None, limit: int) -> bytes:
    """Undo a request's Content-Encoding: identity, gzip (x-gzip) or deflate, at most `limit` bytes out.

    Inflation stops at limit + 1 bytes, so a small bomb costs no more than the limit. Raises
    PayloadTooLarge past the limit, InvalidInput for a corrupt or truncated stream and for any
    other coding (a 400 naming the coding; the gateway does not answer 415)."""
    coding = "" if content_encoding is None else content_encoding.strip().lower()
    if coding in ("", "identity"):
        if len(body) > limit:
            raise PayloadTooLarge(f"request body of {len(body)} bytes exceeds the limit of {limit}")
        return body
    if coding in ("gzip", "x-gzip"):
        return _inflate(body, 16 + zlib.MAX_WBITS, limit, "gzip")
    if coding == "deflate":
        # RFC 9110 "deflate" is zlib-wrapped; some clients send a raw stream, which httpx also accepts.
        wrapped = len(body) >= 2 and body[0] & 0x0F == 8 and ((body[0] << 8) | body[1]) % 31 == 0
        return _inflate(body, zlib.MAX_WBITS if wrapped else -zlib.MAX_WBITS, limit, "deflate")
    raise InvalidInput(
        f"unsupported Content-Encoding '{content_encoding}' (supported: gzip, deflate, identity)"
    )


def _inflate(body: bytes, wbits: int, limit: int, coding: str) -> bytes:
    chunks: list[bytes] = []
    total = 0
    data = body
    while True:  # gzip allows several concatenated members (RFC 1952 2.2)
        inflater = zlib.decompressobj(wbits)
        try:
            chunk = inflater.decompress(data, limit - total + 1)
        except zlib.error as exc:
            raise InvalidInput(f"{coding} request body is corrupt: {exc}") from exc
        total += len(chunk)
        if total > limit:
            raise PayloadTooLarge(f"decompressed request body exceeds the limit of {limit} bytes")
        if not inflater.eof:
            raise InvalidInput(f"{coding} request body is truncated")
        chunks.append(chunk)
        data = inflater.unused_data
        if not data:
            break
        if coding != "gzip":
            raise InvalidInput(f"{len(data)} bytes follow the end of the {coding} stream")
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)
