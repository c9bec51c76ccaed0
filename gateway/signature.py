"""Input validation (pure): a registry Signature compiled once per model version into an InputValidator
whose validate() checks names, dtypes, ranks, fixed dimensions and the shared batch size."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

import numpy as np
import numpy.typing as npt

from gateway.errors import InvalidInput
from gateway.protocol.dtypes import NUMPY_DTYPE, datatype_of
from registry.entities import Signature

_STRING_KINDS = frozenset("OUS")


@dataclass(frozen=True, slots=True)
class _InputCheck:
    """One input, precompiled: `dtype` is None for BYTES; `fixed` holds (index, size) of each fixed
    dimension; `batched` means dim 0 is dynamic (the batch dimension)."""

    name: str
    datatype: str
    dtype: np.dtype[Any] | None
    rank: int
    fixed: tuple[tuple[int, int], ...]
    batched: bool
    shape_text: str


class InputValidator:
    """Checks decoded inputs against one model version's signature; build with compile_validator()."""

    __slots__ = ("_batch_index", "_checks", "_names", "batchable")

    def __init__(self, checks: tuple[_InputCheck, ...]) -> None:
        self._checks = checks
        self._names = tuple(c.name for c in checks)
        batched = [i for i, c in enumerate(checks) if c.batched]
        self._batch_index: int | None = batched[0] if batched else None
        # Every input has a dynamic dim 0, so requests can be stacked into one run.
        self.batchable: bool = bool(checks) and len(batched) == len(checks)

    @property
    def names(self) -> tuple[str, ...]:
        """The model's input names, in the model's order."""
        return self._names

    def validate(self, inputs: Mapping[str, npt.NDArray[Any]]) -> list[npt.NDArray[Any]]:
        """The arrays in the model's input order, unconverted.

        Raises InvalidInput for a missing or unexpected input, a dtype other than the model's (BYTES
        takes object, str or bytes arrays), a rank or fixed-dimension mismatch, batch sizes that
        differ across inputs, or an empty batch."""
        arrays: list[npt.NDArray[Any]] = []
        batch = -1
        batch_from = ""
        for check in self._checks:
            array = inputs.get(check.name)
            if array is None:
                self._raise_for_names(inputs)
            if check.dtype is None:
                if array.dtype.kind not in _STRING_KINDS:
                    raise InvalidInput(f"input '{check.name}': expected BYTES, got {_datatype_text(array)}")
            elif array.dtype != check.dtype:
                raise InvalidInput(
                    f"input '{check.name}': expected {check.datatype}, got {_datatype_text(array)}"
                )
            shape = array.shape
            if len(shape) != check.rank:
                raise InvalidInput(
                    f"input '{check.name}': expected rank {check.rank} (shape {check.shape_text}), "
                    f"got rank {len(shape)} (shape {list(shape)})"
                )
            for index, size in check.fixed:
                if shape[index] != size:
                    raise InvalidInput(
                        f"input '{check.name}': dimension {index} expected {size}, got {shape[index]}"
                    )
            if check.batched:
                size = shape[0]
                if size == 0:
                    raise InvalidInput(f"input '{check.name}': empty batch")
                if batch < 0:
                    batch, batch_from = size, check.name
                elif size != batch:
                    raise InvalidInput(
                        f"input '{check.name}': batch size {size} differs from input '{batch_from}' batch size {batch}"
                    )
            arrays.append(array)
        if len(inputs) != len(self._checks):
            self._raise_for_names(inputs)
        return arrays

    def batch_size(self, arrays: Sequence[npt.NDArray[Any]]) -> int:
        """The batch size of validated arrays (model order): dim 0 of the batched inputs, 1 if none is."""
        if self._batch_index is None:
            return 1
        return int(arrays[self._batch_index].shape[0])

    def _raise_for_names(self, inputs: Mapping[str, Any]) -> NoReturn:
        """Called when the names differ from the model's: reports an unexpected name, else a missing one."""
        for name in inputs:
            if name not in self._names:
                raise InvalidInput(f"unexpected input '{name}' (model inputs: {', '.join(self._names)})")
        for name in self._names:
            if name not in inputs:
                raise InvalidInput(f"missing input '{name}'")
        raise AssertionError("input names match the model's")

    def __repr__(self) -> str:
        specs = ", ".join(f"{c.name}: {c.datatype}{c.shape_text}" for c in self._checks)
        return f"InputValidator({specs})"


def compile_validator(signature: Signature) -> InputValidator:
    """Compile a signature's inputs into an InputValidator; raises ValueError for a signature that
    no request could satisfy (unknown datatype, duplicate name, a dimension below -1)."""
    checks: list[_InputCheck] = []
    seen: set[str] = set()
    for spec in signature.inputs:
        if spec.name in seen:
            raise ValueError(f"input '{spec.name}' appears more than once in the signature")
        seen.add(spec.name)
        if spec.datatype not in NUMPY_DTYPE:
            raise ValueError(f"input '{spec.name}': unsupported datatype {spec.datatype}")
        if any(dim < -1 for dim in spec.shape):
            raise ValueError(f"input '{spec.name}': invalid shape {list(spec.shape)}")
        batched = bool(spec.shape) and spec.shape[0] == -1
        checks.append(
            _InputCheck(
                name=spec.name,
                datatype=spec.datatype,
                dtype=None if spec.datatype == "BYTES" else NUMPY_DTYPE[spec.datatype],
                rank=len(spec.shape),
                fixed=tuple((i, dim) for i, dim in enumerate(spec.shape) if dim >= 0),
                batched=batched,
                shape_text=f"[{', '.join(str(d) for d in spec.shape)}]",
            )
        )
    return InputValidator(tuple(checks))


def _datatype_text(array: npt.NDArray[Any]) -> str:
    try:
        name = datatype_of(array)
    except TypeError:
        return f"numpy {array.dtype}"
    # A byte-swapped array names the same datatype; say what actually differs.
    return name if array.dtype.isnative else f"{name} ({array.dtype.str})"
