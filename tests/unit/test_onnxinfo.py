"""inspect_onnx and check_loadable over plain bytes: signatures, and refusal of broken files."""

from __future__ import annotations

from typing import Any

import onnx
import pytest
from onnx import TensorProto, helper

from registry.entities import Signature, TensorSpec
from registry.errors import InvalidModelFile
from registry.onnxinfo import check_loadable, inspect_onnx


def model_bytes(nodes: list[Any], inputs: list[Any], outputs: list[Any], *, check: bool = True, **graph: Any) -> bytes:
    model = helper.make_model(
        helper.make_graph(nodes, "g", inputs, outputs, **graph), opset_imports=[helper.make_opsetid("", 17)]
    )
    model.ir_version = 9
    if check:
        onnx.checker.check_model(model)
    return bytes(model.SerializeToString())


def identity(elem_type: int, shape: list[Any] | None) -> bytes:
    return model_bytes(
        [helper.make_node("Identity", ["a"], ["b"])],
        [helper.make_tensor_value_info("a", elem_type, shape)],
        [helper.make_tensor_value_info("b", elem_type, shape)],
        check=False,
    )


class TestInspectOnnx:
    def test_demo_signature(self, demo_onnx_bytes: bytes) -> None:
        """The MatMul demo has FP32 x [-1, 4] -> FP32 y [-1, 2]; its weight initializer is not an input."""
        assert inspect_onnx(demo_onnx_bytes) == Signature(
            inputs=(TensorSpec("x", "FP32", (-1, 4)),), outputs=(TensorSpec("y", "FP32", (-1, 2)),)
        )

    def test_string_and_int64_signature(self, string_onnx_bytes: bytes) -> None:
        """STRING maps to BYTES and INT64 stays INT64, inputs and outputs in graph order."""
        sig = inspect_onnx(string_onnx_bytes)
        assert sig.inputs == (TensorSpec("text", "BYTES", (-1,)), TensorSpec("ids", "INT64", (-1, 3)))
        assert sig.outputs == (TensorSpec("text_out", "BYTES", (-1,)), TensorSpec("ids_out", "INT64", (-1, 3)))

    @pytest.mark.parametrize(
        ("elem_type", "datatype"),
        [
            (TensorProto.FLOAT, "FP32"),
            (TensorProto.DOUBLE, "FP64"),
            (TensorProto.FLOAT16, "FP16"),
            (TensorProto.BFLOAT16, "BF16"),
            (TensorProto.INT8, "INT8"),
            (TensorProto.INT16, "INT16"),
            (TensorProto.INT32, "INT32"),
            (TensorProto.INT64, "INT64"),
            (TensorProto.UINT8, "UINT8"),
            (TensorProto.UINT16, "UINT16"),
            (TensorProto.UINT32, "UINT32"),
            (TensorProto.UINT64, "UINT64"),
            (TensorProto.BOOL, "BOOL"),
            (TensorProto.STRING, "BYTES"),
        ],
    )
    def test_datatype_mapping(self, elem_type: int, datatype: str) -> None:
        """Each ONNX element type maps to its Open Inference Protocol datatype name."""
        sig = inspect_onnx(identity(elem_type, [2]))
        assert sig.inputs[0].datatype == sig.outputs[0].datatype == datatype

    def test_dims(self) -> None:
        """Fixed dims keep their size; symbolic and unknown dims become -1; a scalar has shape ()."""
        assert inspect_onnx(identity(TensorProto.FLOAT, ["batch", 3, None, 7])).inputs[0].shape == (-1, 3, -1, 7)
        assert inspect_onnx(identity(TensorProto.FLOAT, [])).inputs[0].shape == ()

    def test_initializers_listed_as_inputs_are_not_inputs(self) -> None:
        """Old exporters list weights among graph inputs; only the real inputs make the signature."""
        weight = helper.make_tensor("w", TensorProto.FLOAT, [2], [1.0, 2.0])
        data = model_bytes(
            [helper.make_node("Add", ["x", "w"], ["y"])],
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2]), helper.make_tensor_value_info("w", TensorProto.FLOAT, [2])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
            initializer=[weight],
        )
        assert [t.name for t in inspect_onnx(data).inputs] == ["x"]


class TestInspectOnnxRefusals:
    def assert_refused(self, data: bytes, *fragments: str) -> None:
        with pytest.raises(InvalidModelFile) as info:
            inspect_onnx(data)
        assert info.value.code == "INVALID_PARAMETER_VALUE"
        assert info.value.message.startswith("not a valid ONNX model: ")
        for fragment in fragments:
            assert fragment in info.value.message

    def test_garbage_bytes(self) -> None:
        """Bytes that are not a protobuf are refused as unparsable."""
        self.assert_refused(b"\xff\xfe this is not an onnx model \x00\x01", "cannot parse")

    def test_empty_file(self) -> None:
        """An empty file is refused as empty."""
        self.assert_refused(b"", "empty")

    @pytest.mark.parametrize("keep", [0.5, 0.9])
    def test_truncated_model(self, demo_onnx_bytes: bytes, keep: float) -> None:
        """A model cut short is refused, whether the cut breaks the protobuf or only the graph."""
        self.assert_refused(demo_onnx_bytes[: int(len(demo_onnx_bytes) * keep)])

    def test_checker_failure(self) -> None:
        """A graph whose node reads an undefined tensor fails onnx.checker and is refused with its reason."""
        data = model_bytes(
            [helper.make_node("MatMul", ["x", "missing"], ["y"])],
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 2])],
            check=False,
        )
        self.assert_refused(data, "missing")

    def test_unknown_operator(self) -> None:
        """A node with an operator the opset does not define is refused by the checker."""
        data = model_bytes(
            [helper.make_node("NoSuchOp", ["x"], ["y"])],
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
            check=False,
        )
        self.assert_refused(data, "NoSuchOp")

    def test_no_inputs(self) -> None:
        """A graph with no inputs (only constants) is refused."""
        const = helper.make_node("Constant", [], ["y"], value=helper.make_tensor("c", TensorProto.FLOAT, [1], [1.0]))
        data = model_bytes([const], [], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
        self.assert_refused(data, "no inputs")

    def test_unsupported_element_type(self) -> None:
        """An element type the inference protocols cannot carry is refused, naming the input and type."""
        self.assert_refused(identity(TensorProto.COMPLEX64, [2]), "input 'a'", "COMPLEX64")

    def test_non_tensor_input(self) -> None:
        """A sequence input is refused as not a tensor."""
        data = model_bytes(
            [helper.make_node("SequenceLength", ["s"], ["n"])],
            [helper.make_tensor_sequence_value_info("s", TensorProto.FLOAT, None)],
            [helper.make_tensor_value_info("n", TensorProto.INT64, [])],
        )
        self.assert_refused(data, "input 's'", "not a tensor")

    def test_input_without_shape(self) -> None:
        """An input of unknown rank (no declared shape) is refused."""
        self.assert_refused(identity(TensorProto.FLOAT, None), "shape")


class TestCheckLoadable:
    def test_valid_models_load(self, demo_onnx_bytes: bytes, string_onnx_bytes: bytes) -> None:
        """Models onnxruntime can run pass without error."""
        check_loadable(demo_onnx_bytes)
        check_loadable(string_onnx_bytes)

    def test_checker_valid_but_not_runnable(self) -> None:
        """A model that passes onnx.checker but uses an operator onnxruntime lacks is refused."""
        model = helper.make_model(
            helper.make_graph(
                [helper.make_node("Frobnicate", ["x"], ["y"], domain="com.example")],
                "g",
                [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
            ),
            opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)],
        )
        model.ir_version = 9
        data = model.SerializeToString()
        inspect_onnx(data)  # the checker does not know custom domains, so it lets this through
        with pytest.raises(InvalidModelFile, match="onnxruntime cannot load the model"):
            check_loadable(data)

    def test_garbage(self) -> None:
        """Bytes that are not a model are refused by onnxruntime too."""
        with pytest.raises(InvalidModelFile):
            check_loadable(b"junk")
