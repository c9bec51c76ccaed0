"""Reference profiles for drift, built at registration from a training-like sample: the model's input
columns (or its declared features) and, when the model can run on the sample, its outputs."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from gateway.protocol.dtypes import numpy_dtype
from monitoring.profiles import profile_columns
from registry.entities import Signature


def read_reference_csv(path: Path) -> dict[str, npt.NDArray[Any]]:
    """Columns of a CSV with a header row: numeric columns as float64, the others as strings."""
    with path.open(newline="") as handle:
        reader = csv.reader(handle)
        try:
            header = next(reader)
        except StopIteration:
            raise ValueError(f"{path}: empty file, expected a header row") from None
        rows = list(reader)
    if not rows:
        raise ValueError(f"{path}: no rows under the header")
    columns: dict[str, npt.NDArray[Any]] = {}
    for i, name in enumerate(header):
        values = [row[i] if i < len(row) else "" for row in rows]
        try:
            columns[name] = np.array([float(v) for v in values])
        except ValueError:
            columns[name] = np.array(values, dtype=object)
    return columns


def pick_columns(columns: dict[str, npt.NDArray[Any]], names: Sequence[str]) -> dict[str, npt.NDArray[Any]]:
    """The named columns, matching a declared ref ("view:feature") by its full text or its feature part."""
    picked = {}
    for name in names:
        short = name.split(":", 1)[-1]
        column = columns.get(name, columns.get(short))
        if column is None:
            raise ValueError(f"the reference has no column '{name}' (or '{short}'); it has: {', '.join(columns)}")
        picked[name] = column
    return picked


def build_profile(
    model: bytes, signature: Signature, columns: dict[str, npt.NDArray[Any]], bins: int = 10
) -> dict[str, Any]:
    """The profile set (JSON-ready) of `columns`, in order, plus the outputs when the model has one
    numeric input as wide as the columns (it then runs on the sample, one value per row per output)."""
    outputs: dict[str, npt.NDArray[Any]] = {}
    spec = signature.inputs[0]
    numeric = all(c.dtype.kind in "fiub" for c in columns.values())
    if len(signature.inputs) == 1 and spec.datatype != "BYTES" and numeric and spec.shape[-1] in (-1, len(columns)):
        matrix = np.column_stack(list(columns.values())).astype(numpy_dtype(spec.datatype))
        session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
        for out_spec, value in zip(signature.outputs, session.run(None, {spec.name: matrix}), strict=True):
            flat = np.asarray(value).reshape(matrix.shape[0], -1)
            if flat.dtype.kind in "fiub":
                outputs[out_spec.name] = flat[:, 0] if flat.shape[1] == 1 else np.argmax(flat, axis=1)
    return profile_columns(columns, outputs or None, bins=bins).to_dict()
