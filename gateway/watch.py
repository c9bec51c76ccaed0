"""Drift watching for one served version: picks the monitored columns out of the model's inputs and
outputs and queues them on its DriftFeed after the answer is built (no numpy work, no I/O here)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from monitoring.sinks import DriftFeed
from registry.entities import Signature

Arrays = Mapping[str, npt.NDArray[Any]]


@dataclass(frozen=True, slots=True, eq=False)
class DriftWatch:
    """`whole_input` names the one 2-D input whose columns are exactly the monitored features, in
    order (the array is queued as is); otherwise `columns` maps each feature to (input, column)."""

    feed: DriftFeed
    whole_input: str | None
    columns: tuple[tuple[str, str, int], ...]
    outputs: tuple[tuple[str, str], ...]  # (profile output name, model output name)

    def observe(self, inputs: Arrays, outputs: Sequence[tuple[str, npt.NDArray[Any]]]) -> None:
        if self.whole_input is not None:
            columns: Any = inputs[self.whole_input]
        else:
            columns = {feature: _column(inputs[name], index) for feature, name, index in self.columns}
        decided = None
        if self.outputs:
            by_name = dict(outputs)
            decided = {profile: _decision(by_name[name]) for profile, name in self.outputs}
        self.feed.add(columns, decided)


def _column(array: npt.NDArray[Any], index: int) -> npt.NDArray[Any]:
    return array.reshape(array.shape[0], -1)[:, index]


def _decision(array: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """One value per row: the column of a one-column output, else the arg-max class."""
    flat = array.reshape(array.shape[0], -1)
    return flat[:, 0] if flat.shape[1] == 1 else np.argmax(flat, axis=1)


def watch_for(
    feed: DriftFeed, signature: Signature, features: Sequence[str], outputs: Sequence[str],
    input_columns: Mapping[str, int] | None = None,
) -> DriftWatch:
    """Bind a feed to a model: monitored features are the model's input columns in order (the inputs
    concatenated, each flattened past the batch dim); `input_columns` overrides widths (a feature
    model's one input of declared width). Raises ValueError when the counts don't match."""
    widths = dict(input_columns or {})
    for spec in signature.inputs:
        if spec.name not in widths:
            inner = [d for d in spec.shape[1:]]
            widths[spec.name] = int(np.prod(inner)) if inner and all(d > 0 for d in inner) else 1
    slots = [(spec.name, i) for spec in signature.inputs for i in range(widths[spec.name])]
    if len(slots) != len(features):
        raise ValueError(f"the reference profiles {len(features)} features but the model has {len(slots)} input columns")
    whole = signature.inputs[0].name if len(signature.inputs) == 1 and signature.inputs[0].datatype != "BYTES" else None
    model_outputs = {o.name for o in signature.outputs}
    missing = [o for o in outputs if o not in model_outputs]
    if missing:
        raise ValueError(f"the reference profiles outputs the model does not have: {', '.join(missing)}")
    return DriftWatch(
        feed=feed,
        whole_input=whole,
        columns=tuple((f, name, i) for f, (name, i) in zip(features, slots, strict=True)),
        outputs=tuple((o, o) for o in outputs),
    )
