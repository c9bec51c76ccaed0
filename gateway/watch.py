"""Drift watching for one served version: the batcher's tap (gateway/batching.py) for the arm.

After a batch ran, the tap counts the monitored columns of the validated inputs and the outputs
(model order) on the arm's DriftFeed, once per batch, not per request. Where the compiled kernel
can take the model's batches (one float input whose columns are exactly the monitored features,
one value per row per profiled output), the tap is the feed's native one (monitoring/_binning.c
`Tap`): it bins the batch in one C call, with no Python frame. Otherwise the Python `DriftWatch`
only queues references (the whole input matrix, or its columns by name, and the raw output arrays
by position) for the feed to bin with numpy, reducing outputs to one decision per row there
(monitoring/drift.py `decision_column`); no numpy work, no I/O here."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from monitoring.sinks import DriftFeed
from registry.entities import Signature


@dataclass(frozen=True, slots=True, eq=False)
class DriftWatch:
    """`whole_input` is the position of the one 2-D input whose columns are exactly the monitored
    features, in order (the array is queued as is); otherwise `columns` maps each feature to
    (input position, column)."""

    feed: DriftFeed
    whole_input: int | None
    columns: tuple[tuple[str, int, int], ...]
    output_slots: tuple[int, ...]  # per profiled output (in the profile's order), its position in the model's outputs
    native: Callable[[Sequence[npt.NDArray[Any]], Sequence[npt.NDArray[Any]]], object] | None = None

    @property
    def batch_tap(self) -> Callable[[Sequence[npt.NDArray[Any]], Sequence[npt.NDArray[Any]]], object]:
        """What the batcher calls after each batch: the feed's native tap where there is one, else this."""
        return self.native if self.native is not None else self

    def __call__(self, inputs: Sequence[npt.NDArray[Any]], outputs: Sequence[npt.NDArray[Any]]) -> None:
        whole = self.whole_input
        columns: Any = (
            inputs[whole] if whole is not None
            else {feature: _column(inputs[position], index) for feature, position, index in self.columns}
        )
        slots = self.output_slots
        if not slots:
            self.feed.add(columns)
        elif len(slots) == 1:
            self.feed.add_served(columns, (outputs[slots[0]],))
        else:
            self.feed.add_served(columns, tuple([outputs[i] for i in slots]))


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
    slots = [(position, i) for position, spec in enumerate(signature.inputs) for i in range(widths[spec.name])]
    if len(slots) != len(features):
        raise ValueError(f"the reference profiles {len(features)} features but the model has {len(slots)} input columns")
    whole = 0 if len(signature.inputs) == 1 and signature.inputs[0].datatype != "BYTES" else None
    model_outputs = {o.name: i for i, o in enumerate(signature.outputs)}  # the order model.infer answers in
    missing = [o for o in outputs if o not in model_outputs]
    if missing:
        raise ValueError(f"the reference profiles outputs the model does not have: {', '.join(missing)}")
    watch = DriftWatch(
        feed=feed,
        whole_input=whole,
        columns=tuple((f, position, i) for f, (position, i) in zip(features, slots, strict=True)),
        output_slots=tuple(model_outputs[o] for o in outputs),
    )
    float_input = whole is not None and signature.inputs[0].datatype in ("FP32", "FP64")
    native = feed.tap(whole, watch.output_slots, watch) if whole is not None and float_input else None
    return replace(watch, native=native) if native is not None else watch
