"""Drift watching for one served version: picks the monitored columns out of the model's inputs and
outputs and queues them on its DriftFeed after the answer is built (no numpy work, no I/O here).

It runs once per request, so it only takes references: the whole input matrix when the monitored
features are exactly its columns, and the raw output arrays by position. Reducing outputs to one
decision per row happens at flush, on the concatenated arrays (monitoring/drift.py `decision_column`)."""

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
    output_slots: tuple[int, ...]  # per profiled output (in the profile's order), its index in the model's outputs

    def observe(self, inputs: Arrays, outputs: Sequence[tuple[str, npt.NDArray[Any]]]) -> None:
        whole = self.whole_input
        columns: Any = (
            inputs[whole] if whole is not None
            else {feature: _column(inputs[name], index) for feature, name, index in self.columns}
        )
        slots = self.output_slots
        if not slots:
            self.feed.add(columns)
        elif len(slots) == 1:
            self.feed.add_served(columns, (outputs[slots[0]][1],))
        else:
            self.feed.add_served(columns, tuple([outputs[i][1] for i in slots]))


def _column(array: npt.NDArray[Any], index: int) -> npt.NDArray[Any]:
    return array.reshape(array.shape[0], -1)[:, index]


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
    model_outputs = {o.name: i for i, o in enumerate(signature.outputs)}  # the order model.infer answers in
    missing = [o for o in outputs if o not in model_outputs]
    if missing:
        raise ValueError(f"the reference profiles outputs the model does not have: {', '.join(missing)}")
    return DriftWatch(
        feed=feed,
        whole_input=whole,
        columns=tuple((f, name, i) for f, (name, i) in zip(features, slots, strict=True)),
        output_slots=tuple(model_outputs[o] for o in outputs),
    )
