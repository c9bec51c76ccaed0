"""Check an ONNX model's bytes and read its input/output signature (pure over bytes), for registration."""

from __future__ import annotations

from typing import Any

import onnx
import onnxruntime as ort
from onnx import TensorProto

from registry.entities import Signature, TensorSpec
from registry.errors import InvalidModelFile

# ONNX element type -> Open Inference Protocol datatype; anything else cannot cross the wire.
OIP_DATATYPES: dict[int, str] = {
    TensorProto.BOOL: "BOOL",
    TensorProto.UINT8: "UINT8",
    TensorProto.UINT16: "UINT16",
    TensorProto.UINT32: "UINT32",
    TensorProto.UINT64: "UINT64",
    TensorProto.INT8: "INT8",
    TensorProto.INT16: "INT16",
    TensorProto.INT32: "INT32",
    TensorProto.INT64: "INT64",
    TensorProto.FLOAT16: "FP16",
    TensorProto.BFLOAT16: "BF16",
    TensorProto.FLOAT: "FP32",
    TensorProto.DOUBLE: "FP64",
    TensorProto.STRING: "BYTES",
}


def _invalid(reason: str) -> InvalidModelFile:
    return InvalidModelFile(f"not a valid ONNX model: {reason}")


def _reason(exc: Exception) -> str:
    """The library's message on one line (onnx's span several), or the error's class name."""
    return " ".join(str(exc).split()) or type(exc).__name__


def _type_name(elem_type: int) -> str:
    try:
        return str(TensorProto.DataType.Name(elem_type))
    except ValueError:
        return str(elem_type)


def _tensor_spec(value: Any, role: str) -> TensorSpec:
    """One graph input or output (an onnx ValueInfoProto) as a TensorSpec; -1 marks a symbolic or unknown dim.
    The checker has already required a declared shape (rank) on every graph input and output."""
    if value.type.WhichOneof("value") != "tensor_type":
        kind = value.type.WhichOneof("value") or "untyped"
        raise _invalid(f"{role} '{value.name}' is a {kind}, not a tensor")
    tensor = value.type.tensor_type
    datatype = OIP_DATATYPES.get(tensor.elem_type)
    if datatype is None:
        raise _invalid(
            f"{role} '{value.name}' has element type {_type_name(tensor.elem_type)}, "
            "which the inference protocols cannot carry"
        )
    shape = tuple(dim.dim_value if dim.HasField("dim_value") else -1 for dim in tensor.shape.dim)
    return TensorSpec(name=value.name, datatype=datatype, shape=shape)


def inspect_onnx(data: bytes) -> Signature:
    """Parse and check an ONNX model and return its signature (graph inputs that are not initializers,
    and outputs, in graph order). Raises InvalidModelFile naming what is wrong."""
    if not data:
        raise _invalid("the file is empty")
    # onnx raises DecodeError, ValidationError, RuntimeError or ValueError depending on what is
    # broken; all of them mean the same thing to the caller.
    try:
        model = onnx.load_model_from_string(data)
    except Exception as exc:
        raise _invalid(f"cannot parse the protobuf ({_reason(exc)})") from exc
    try:
        onnx.checker.check_model(model)
    except Exception as exc:
        raise _invalid(_reason(exc)) from exc
    graph = model.graph
    initializers = {init.name for init in graph.initializer}
    inputs = tuple(_tensor_spec(v, "input") for v in graph.input if v.name not in initializers)
    if not inputs:
        raise _invalid("the graph has no inputs")
    outputs = tuple(_tensor_spec(v, "output") for v in graph.output)
    if not outputs:
        raise _invalid("the graph has no outputs")
    return Signature(inputs=inputs, outputs=outputs)


def check_loadable(data: bytes) -> None:
    """Build an onnxruntime CPU session from the bytes, so a model ORT cannot run is refused at
    registration rather than at load time. Raises InvalidModelFile."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1  # a load check needs no thread pool
    options.inter_op_num_threads = 1
    try:
        ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime's pybind errors share no public base class
        raise InvalidModelFile(f"onnxruntime cannot load the model: {_reason(exc)}") from exc
