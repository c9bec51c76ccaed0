"""Input validation compiled from a model signature."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from gateway.errors import InvalidInput
from gateway.signature import InputValidator, compile_validator
from registry.entities import Signature, TensorSpec

OUT = (TensorSpec("y", "FP32", (-1, 1)),)


def validator(*inputs: TensorSpec) -> InputValidator:
    return compile_validator(Signature(inputs=inputs, outputs=OUT))


TWO = validator(TensorSpec("x", "FP32", (-1, 32)), TensorSpec("ids", "INT64", (-1,)))


def two(
    batch: int = 2, x: npt.NDArray[Any] | None = None, ids: npt.NDArray[Any] | None = None
) -> dict[str, npt.NDArray[Any]]:
    """Inputs for TWO: zeros of the right dtypes and shapes unless given."""
    return {
        "x": np.zeros((batch, 32), np.float32) if x is None else x,
        "ids": np.zeros(batch, np.int64) if ids is None else ids,
    }


class TestValidate:
    def test_returns_model_order(self) -> None:
        """Valid inputs come back as the same arrays, in the model's input order."""
        arrays: dict[str, npt.NDArray[Any]] = {
            "ids": np.zeros(3, np.int64),
            "x": np.zeros((3, 32), np.float32),
        }
        result = TWO.validate(arrays)
        assert len(result) == 2
        assert result[0] is arrays["x"]
        assert result[1] is arrays["ids"]

    def test_missing_input(self) -> None:
        """A missing input is named."""
        with pytest.raises(InvalidInput, match=r"^missing input 'ids'$"):
            TWO.validate({"x": np.zeros((2, 32), np.float32)})

    def test_unexpected_input(self) -> None:
        """An extra input is named, with the model's inputs listed."""
        with pytest.raises(InvalidInput, match=r"^unexpected input 'z' \(model inputs: x, ids\)$"):
            TWO.validate({**two(), "z": np.zeros(2)})

    def test_misspelled_input(self) -> None:
        """A misspelled name is reported as unexpected, with the names the model has."""
        with pytest.raises(InvalidInput, match=r"^unexpected input 'idz' \(model inputs: x, ids\)$"):
            TWO.validate({"x": np.zeros((2, 32), np.float32), "idz": np.zeros(2, np.int64)})

    @pytest.mark.parametrize(
        ("name", "array", "message"),
        [
            ("x", np.zeros((2, 32), np.float64), "input 'x': expected FP32, got FP64"),
            ("x", np.zeros((2, 32), np.int64), "input 'x': expected FP32, got INT64"),
            ("x", np.zeros((2, 32), np.float16), "input 'x': expected FP32, got FP16"),
            ("ids", np.zeros(2, np.int32), "input 'ids': expected INT64, got INT32"),
            ("ids", np.zeros(2, np.uint64), "input 'ids': expected INT64, got UINT64"),
            ("ids", np.zeros(2, bool), "input 'ids': expected INT64, got BOOL"),
            ("ids", np.array(["1", "2"], dtype=object), "input 'ids': expected INT64, got BYTES"),
            ("ids", np.zeros(2, ">i8"), r"input 'ids': expected INT64, got INT64 \(>i8\)"),
            ("ids", np.zeros(2, np.complex64), "input 'ids': expected INT64, got numpy complex64"),
        ],
    )
    def test_dtype_mismatch(self, name: str, array: npt.NDArray[Any], message: str) -> None:
        """A dtype other than the model's is refused, never converted."""
        with pytest.raises(InvalidInput, match=rf"^{message}$"):
            TWO.validate(two(**{name: array}))  # type: ignore[arg-type]

    @pytest.mark.parametrize(
        "array",
        [
            np.array([["a"], ["b"]], dtype=object),
            np.array([[b"a"], [b"b"]], dtype=object),
            np.array([["a"], ["b"]]),
            np.array([[b"a"], [b"b"]]),
        ],
    )
    def test_bytes_accepts_strings(self, array: npt.NDArray[Any]) -> None:
        """A BYTES input takes object arrays of str or bytes, and numpy str/bytes arrays."""
        words = validator(TensorSpec("w", "BYTES", (-1, 1)))
        assert words.validate({"w": array})[0] is array

    @pytest.mark.parametrize("array", [np.zeros((2, 1), np.float32), np.zeros((2, 1), np.uint8)])
    def test_bytes_refuses_numbers(self, array: npt.NDArray[Any]) -> None:
        """A BYTES input refuses numeric arrays."""
        words = validator(TensorSpec("w", "BYTES", (-1, 1)))
        with pytest.raises(InvalidInput, match=r"^input 'w': expected BYTES, got"):
            words.validate({"w": array})

    @pytest.mark.parametrize("shape", [(2,), (2, 32, 1), (64,), ()])
    def test_rank_mismatch(self, shape: tuple[int, ...]) -> None:
        """An input of the wrong rank is refused with both shapes."""
        message = rf"^input 'x': expected rank 2 \(shape \[-1, 32\]\), got rank {len(shape)}"
        with pytest.raises(InvalidInput, match=message):
            TWO.validate(two(x=np.zeros(shape, np.float32)))

    @pytest.mark.parametrize("size", [31, 33, 0, 1])
    def test_fixed_dimension_mismatch(self, size: int) -> None:
        """A fixed dimension of another size is refused, naming the dimension."""
        with pytest.raises(InvalidInput, match=rf"^input 'x': dimension 1 expected 32, got {size}$"):
            TWO.validate(two(x=np.zeros((2, size), np.float32)))

    def test_dynamic_inner_dimension(self) -> None:
        """A -1 dimension past the batch takes any size, zero included."""
        seq = validator(TensorSpec("tokens", "INT64", (-1, -1, 8)))
        for length in (0, 1, 500):
            seq.validate({"tokens": np.zeros((2, length, 8), np.int64)})

    def test_batch_size_mismatch(self) -> None:
        """Inputs that disagree on the batch size are refused, naming both."""
        message = "^input 'ids': batch size 3 differs from input 'x' batch size 2$"
        with pytest.raises(InvalidInput, match=message):
            TWO.validate(two(ids=np.zeros(3, np.int64)))

    def test_empty_batch(self) -> None:
        """A batch of zero rows is refused."""
        with pytest.raises(InvalidInput, match=r"^input 'x': empty batch$"):
            TWO.validate(two(batch=0))

    def test_fixed_batch_dimension(self) -> None:
        """A model with a fixed leading dimension checks it like any fixed dimension."""
        fixed = validator(TensorSpec("x", "FP32", (1, 4)))
        fixed.validate({"x": np.zeros((1, 4), np.float32)})
        with pytest.raises(InvalidInput, match=r"^input 'x': dimension 0 expected 1, got 2$"):
            fixed.validate({"x": np.zeros((2, 4), np.float32)})

    def test_scalar_input(self) -> None:
        """A rank-0 input takes a rank-0 array."""
        scalar = validator(TensorSpec("t", "FP64", ()))
        scalar.validate({"t": np.array(0.5)})
        with pytest.raises(InvalidInput, match=r"^input 't': expected rank 0"):
            scalar.validate({"t": np.array([0.5])})

    def test_non_contiguous_arrays_pass(self) -> None:
        """Validation looks at dtype and shape only, so views pass as they are."""
        view = np.zeros((32, 4), np.float32).T
        assert TWO.validate(two(x=view, ids=np.zeros(4, np.int64)))[0] is view


class TestBatchSize:
    @pytest.mark.parametrize("batch", [1, 2, 7])
    def test_batched_inputs(self, batch: int) -> None:
        """The batch size is dim 0 of the batched inputs."""
        assert TWO.batch_size(TWO.validate(two(batch=batch))) == batch

    def test_first_input_not_batched(self) -> None:
        """The batch size comes from the first input with a dynamic dim 0."""
        mixed = validator(TensorSpec("k", "FP32", (3,)), TensorSpec("x", "FP32", (-1, 2)))
        arrays = mixed.validate({"k": np.zeros(3, np.float32), "x": np.zeros((5, 2), np.float32)})
        assert mixed.batch_size(arrays) == 5
        assert not mixed.batchable

    def test_unbatched_model(self) -> None:
        """A model with no dynamic dim 0 has batch size 1."""
        fixed = validator(TensorSpec("x", "FP32", (4,)))
        assert fixed.batch_size(fixed.validate({"x": np.zeros(4, np.float32)})) == 1
        assert not fixed.batchable


class TestCompileValidator:
    def test_names_and_batchable(self) -> None:
        """The compiled validator knows the input names in order and whether requests can be stacked."""
        assert TWO.names == ("x", "ids")
        assert TWO.batchable
        assert repr(TWO) == "InputValidator(x: FP32[-1, 32], ids: INT64[-1])"

    @pytest.mark.parametrize(
        ("inputs", "message"),
        [
            ((TensorSpec("x", "BF16", (-1,)),), "input 'x': unsupported datatype BF16"),
            (
                (TensorSpec("x", "FP32", (-1,)), TensorSpec("x", "FP32", (-1,))),
                "input 'x' appears more than once",
            ),
            ((TensorSpec("x", "FP32", (-2, 3)),), r"input 'x': invalid shape \[-2, 3\]"),
        ],
    )
    def test_refuses_impossible_signatures(self, inputs: tuple[TensorSpec, ...], message: str) -> None:
        """A signature no request could satisfy is a ValueError at compile time."""
        with pytest.raises(ValueError, match=message):
            compile_validator(Signature(inputs=inputs, outputs=OUT))

    def test_no_inputs(self) -> None:
        """A model without inputs validates an empty mapping and refuses anything else."""
        empty = compile_validator(Signature(inputs=(), outputs=OUT))
        assert empty.validate({}) == []
        with pytest.raises(InvalidInput, match=r"^unexpected input 'x' \(model inputs: \)$"):
            empty.validate({"x": np.zeros(1)})
