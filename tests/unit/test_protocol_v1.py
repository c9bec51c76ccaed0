"""KServe v1 codec: predict request decoding against a model's inputs, and prediction encoding."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import orjson
import pytest

from gateway.errors import InferenceFailed, InvalidInput
from gateway.protocol.v1 import decode_predict, encode_predict
from registry.entities import TensorSpec

X = TensorSpec("x", "FP32", (-1, 2))
IDS = TensorSpec("ids", "INT64", (-1,))
WORDS = TensorSpec("words", "BYTES", (-1, 1))
FLAG = TensorSpec("flag", "BOOL", (-1,))


def decode(doc: Any, *inputs: TensorSpec, **kwargs: Any) -> dict[str, npt.NDArray[Any]]:
    return decode_predict(orjson.dumps(doc), inputs or (X,), **kwargs)


class TestDecodeSingleInput:
    @pytest.mark.parametrize(
        "doc",
        [
            {"instances": [[1, 2], [3, 4.5]]},
            {"instances": [{"x": [1, 2]}, {"x": [3, 4.5]}]},
            {"inputs": [[1, 2], [3, 4.5]]},
            {"inputs": {"x": [[1, 2], [3, 4.5]]}},
        ],
        ids=["rows", "row-dicts", "columnar-list", "columnar-dict"],
    )
    def test_forms(self, doc: Any) -> None:
        """Row lists, row dicts and both columnar forms decode to the same batch."""
        arrays = decode(doc)
        assert list(arrays) == ["x"]
        assert arrays["x"].dtype == np.float32
        assert arrays["x"].tolist() == [[1.0, 2.0], [3.0, 4.5]]

    def test_scalar_rows(self) -> None:
        """Scalar instances of a rank-1 input form a 1-D batch."""
        assert decode({"instances": [1, 2, 3]}, IDS)["ids"].tolist() == [1, 2, 3]

    @pytest.mark.parametrize(
        ("spec", "instances", "expected"),
        [
            (TensorSpec("t", "UINT8", (-1,)), [0, 255], [0, 255]),
            (TensorSpec("t", "INT32", (-1, 2)), [[1, -2]], [[1, -2]]),
            (TensorSpec("t", "FP64", (-1,)), [1, 2.5], [1.0, 2.5]),
            (TensorSpec("t", "FP16", (-1,)), [0.5], [0.5]),
            (FLAG, [True, False], [True, False]),
            (WORDS, [["a"], ["b"]], [["a"], ["b"]]),
        ],
    )
    def test_model_datatypes(self, spec: TensorSpec, instances: list[Any], expected: list[Any]) -> None:
        """Values convert to the model's dtype for each datatype."""
        array = decode({"instances": instances}, spec)[spec.name]
        assert array.tolist() == expected
        expected_dtype = object if spec.datatype == "BYTES" else array.dtype
        assert array.dtype == expected_dtype

    def test_bytes_are_str_objects(self) -> None:
        """BYTES inputs decode to object arrays of str."""
        array = decode({"instances": [["hello"], ["wörld"]]}, WORDS)["words"]
        assert array.dtype == object
        assert all(type(x) is str for x in array.flat)


class TestDecodeMultiInput:
    def test_instances(self) -> None:
        """Each instance is a dict keyed by input name; arrays come back in the model's order."""
        arrays = decode({"instances": [{"ids": 7, "x": [1, 2]}, {"x": [3, 4], "ids": 8}]}, X, IDS)
        assert list(arrays) == ["x", "ids"]
        assert arrays["x"].tolist() == [[1.0, 2.0], [3.0, 4.0]]
        assert arrays["ids"].tolist() == [7, 8]
        assert arrays["ids"].dtype == np.int64

    def test_columnar(self) -> None:
        """The columnar form maps each input name to its batch."""
        arrays = decode({"inputs": {"ids": [7, 8], "x": [[1, 2], [3, 4]]}}, X, IDS)
        assert list(arrays) == ["x", "ids"]
        assert arrays["ids"].tolist() == [7, 8]

    @pytest.mark.parametrize(
        ("doc", "message"),
        [
            (
                {"instances": [[1, 2]]},
                r"^instances\[0\] must be an object keyed by input name \(model inputs: x, ids\)",
            ),
            ({"instances": [{"x": [1, 2]}]}, r"^instances\[0\]: missing input 'ids'"),
            (
                {"instances": [{"x": [1, 2], "ids": 1, "z": 0}]},
                r"^instances\[0\]: unexpected input 'z' \(model inputs: x, ids\)",
            ),
            ({"instances": [{"x": [1, 2], "idz": 1}]}, r"^instances\[0\]: unexpected input 'idz'"),
            (
                {"instances": [{"x": [1, 2], "ids": 1}, {"x": [1, 2]}]},
                r"^instances\[1\]: missing input 'ids'",
            ),
            ({"inputs": [[1, 2]]}, r"^'inputs' must be an object keyed by input name"),
            ({"inputs": {"x": [[1, 2]]}}, r"^'inputs': missing input 'ids'"),
            ({"inputs": {"x": [[1, 2]], "ids": [1], "z": [1]}}, r"^'inputs': unexpected input 'z'"),
        ],
    )
    def test_names_must_match(self, doc: Any, message: str) -> None:
        """Every instance (or the columnar dict) must name exactly the model's inputs."""
        with pytest.raises(InvalidInput, match=message):
            decode(doc, X, IDS)


class TestDecodeErrors:
    @pytest.mark.parametrize(
        ("spec", "instances", "reason"),
        [
            (IDS, [1, 2.5], "integers"),
            (IDS, [1.0, 2.0], "integers"),
            (IDS, ["1", "2"], "integers"),
            (TensorSpec("ids", "UINT8", (-1,)), [1, 256], "out of range"),
            (TensorSpec("ids", "INT32", (-1,)), [2**31], "out of range"),
            (X, [["a", "b"]], "numbers"),
            (X, [[1, 2], [3]], "rectangular"),
            (X, [[1, 2], {"x": [1, 2]}], "rectangular"),
            (X, [[1, None]], "numbers"),
            (FLAG, [1, 0], "true/false"),
            (WORDS, [[1], [2]], "strings"),
            (WORDS, [["a"], ["b", "c"]], "strings"),
        ],
    )
    def test_strict_conversion(self, spec: TensorSpec, instances: list[Any], reason: str) -> None:
        """Values that do not fit the model's datatype are refused, naming the input."""
        with pytest.raises(InvalidInput, match=rf"^input '{spec.name}': .*{reason}"):
            decode({"instances": instances}, spec)

    @pytest.mark.parametrize(
        ("doc", "message"),
        [
            ({"instances": []}, "'instances' must be a non-empty list"),
            ({"instances": {}}, "'instances' must be a non-empty list"),
            ({"instances": 3}, "'instances' must be a non-empty list"),
            ({"inputs": []}, "^input 'x': expected a non-empty list"),
            ({"inputs": {"x": []}}, "^input 'x': expected a non-empty list"),
            ({"inputs": 3}, "^input 'x': expected a non-empty list"),
            ({"instances": [[1, 2]], "inputs": [[1, 2]]}, "both 'instances' and 'inputs'"),
            ({"data": [[1, 2]]}, "needs 'instances' or 'inputs'"),
            ({}, "needs 'instances' or 'inputs'"),
        ],
    )
    def test_bad_envelope(self, doc: Any, message: str) -> None:
        """Empty or missing instances and mixed forms are refused."""
        with pytest.raises(InvalidInput, match=message):
            decode(doc)

    @pytest.mark.parametrize("body", [b"[]", b"1", b"null", b'"instances"'])
    def test_non_object_json(self, body: bytes) -> None:
        """A JSON body that is not an object is refused."""
        with pytest.raises(InvalidInput, match=r"^request body must be a JSON object"):
            decode_predict(body, [X])

    @pytest.mark.parametrize("body", [b"", b"{", b"\xff", b'{"instances": [NaN]}', b"[" * 5000 + b"]" * 5000])
    def test_invalid_json(self, body: bytes) -> None:
        """Invalid or too deeply nested JSON is refused."""
        with pytest.raises(InvalidInput, match=r"^request body is not valid JSON"):
            decode_predict(body, [X])

    def test_max_elements(self) -> None:
        """An input with more than max_elements elements is refused."""
        doc = {"instances": [[1, 2], [3, 4]]}
        assert decode(doc, max_elements=4)["x"].size == 4
        with pytest.raises(InvalidInput, match=r"^input 'x': 4 elements, over the limit of 3"):
            decode(doc, max_elements=3)

    def test_unsupported_model_datatype(self) -> None:
        """A model input whose datatype the codec cannot hold is refused, naming it."""
        with pytest.raises(InvalidInput, match=r"^input 'b': datatype BF16 is not supported"):
            decode({"instances": [1.0]}, TensorSpec("b", "BF16", (-1,)))


class TestEncodePredict:
    def test_single_output_rows(self) -> None:
        """With one output, each prediction is that output's row."""
        body = encode_predict([("y", np.array([[0.5, 1.5], [2.0, 3.0]], dtype=np.float32))])
        assert orjson.loads(body) == {"predictions": [[0.5, 1.5], [2.0, 3.0]]}

    def test_single_output_vector(self) -> None:
        """A 1-D output gives one scalar per prediction."""
        assert orjson.loads(encode_predict([("y", np.array([1, 2, 3], dtype=np.int64))])) == {
            "predictions": [1, 2, 3]
        }

    def test_several_outputs(self) -> None:
        """With several outputs, each prediction is {output name: row}."""
        body = encode_predict(
            [
                ("label", np.array([1, 0], dtype=np.int64)),
                ("scores", np.array([[0.25, 0.75], [0.5, 0.5]], dtype=np.float32)),
                ("name", np.array(["cat", "dog"], dtype=object)),
            ]
        )
        assert orjson.loads(body) == {
            "predictions": [
                {"label": 1, "scores": [0.25, 0.75], "name": "cat"},
                {"label": 0, "scores": [0.5, 0.5], "name": "dog"},
            ]
        }

    @pytest.mark.parametrize(
        "array",
        [
            np.array([["a", "b"], ["c", "d"]], dtype=object),
            np.array([["a", "b"], ["c", "d"]]),
            np.array([[b"a", b"b"], [b"c", b"d"]]),
            np.array([[b"a", "b"], ["c", b"d"]], dtype=object),
        ],
    )
    def test_strings(self, array: npt.NDArray[Any]) -> None:
        """Object, str and bytes outputs serialize as nested strings."""
        assert orjson.loads(encode_predict([("y", array)])) == {"predictions": [["a", "b"], ["c", "d"]]}

    @pytest.mark.parametrize(
        ("array", "expected"),
        [
            (np.array([True, False]), [True, False]),
            (np.array([1.5], dtype=np.float16), [1.5]),
            (np.array([2**64 - 1], dtype=np.uint64), [2**64 - 1]),
            (np.arange(6, dtype=np.int32).reshape(2, 3).T, [[0, 3], [1, 4], [2, 5]]),
            (np.array([1.5, 2.5], dtype=">f8"), [1.5, 2.5]),
            (np.array(3.5), 3.5),
            (np.zeros((0, 2), dtype=np.float32), []),
        ],
        ids=["bool", "fp16", "uint64", "transposed", "big-endian", "scalar", "empty"],
    )
    def test_numeric_dtypes_and_layouts(self, array: npt.NDArray[Any], expected: Any) -> None:
        """Every numeric dtype, layout and byte order serializes to its values."""
        assert orjson.loads(encode_predict([("y", array)])) == {"predictions": expected}

    def test_batch_sizes_must_agree(self) -> None:
        """Outputs with different batch sizes cannot be zipped into predictions."""
        with pytest.raises(InferenceFailed, match=r"^output 'b' has batch size 3, output 'a' has 2"):
            encode_predict([("a", np.zeros(2)), ("b", np.zeros(3))])

    def test_scalar_beside_other_outputs(self) -> None:
        """A rank-0 output cannot be split into rows."""
        with pytest.raises(InferenceFailed, match=r"^output 'b' has no batch dimension"):
            encode_predict([("a", np.zeros(2)), ("b", np.array(1.0))])

    def test_invalid_utf8(self) -> None:
        """BYTES outputs that are not UTF-8 cannot be sent as v1 JSON."""
        with pytest.raises(InferenceFailed, match=r"^output 'y': BYTES element is not valid UTF-8"):
            encode_predict([("y", np.array([b"\xff"], dtype=object))])

    @pytest.mark.parametrize("array", [np.array([1j]), np.array([1, "a"], dtype=object)])
    def test_unsupported_values(self, array: npt.NDArray[Any]) -> None:
        """Outputs with no JSON form are inference failures naming the output."""
        with pytest.raises(InferenceFailed, match=r"^output 'y'"):
            encode_predict([("y", array)])

    def test_round_trip(self) -> None:
        """Predictions of a single output decode back as instances of an input of the same spec."""
        array = np.array([[1.5, -2.0], [0.0, 3.25]], dtype=np.float32)
        np.testing.assert_array_equal(
            decode_predict(
                orjson.dumps({"instances": orjson.loads(encode_predict([("y", array)]))["predictions"]}), [X]
            )["x"],
            array,
        )
