"""A model version's reference profiles as one storable value: build from reference columns, store as
JSON (the registry keeps `to_dict()`), and turn into a DriftTracker (pure)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from monitoring.drift import DEFAULT_HISTORY, DriftTracker, WindowPolicy
from monitoring.psi import (
    DEFAULT_BINS,
    DEFAULT_MAX_CATEGORIES,
    Profile,
    Thresholds,
    profile_from_dict,
    profile_from_sample,
)

FORMAT = 1  # bump when the stored shape changes


@dataclass(frozen=True, slots=True)
class ProfileSet:
    """Profiles of a model version's input features (in the model's column order) and of its outputs."""

    features: tuple[tuple[str, Profile], ...]
    outputs: tuple[tuple[str, Profile], ...] = ()
    bins: int = DEFAULT_BINS

    def __post_init__(self) -> None:
        names = [n for n, _ in self.features] + [n for n, _ in self.outputs]
        if not self.features:
            raise ValueError("profile set: no features")
        if len(set(names)) != len(names):
            raise ValueError(f"profile set: names must be distinct across features and outputs: {names}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe (see monitoring/psi.py for the encoding of infinite edges)."""
        return {
            "format": FORMAT,
            "bins": self.bins,
            "features": [{"name": n, **p.to_dict()} for n, p in self.features],
            "outputs": [{"name": n, **p.to_dict()} for n, p in self.outputs],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ProfileSet:
        """Inverse of `to_dict`; raises ValueError on an unknown format or a malformed profile."""
        if data.get("format") != FORMAT:
            raise ValueError(f"profile set: unsupported format {data.get('format')!r}; expected {FORMAT}")

        def entries(key: str) -> tuple[tuple[str, Profile], ...]:
            return tuple((str(item["name"]), profile_from_dict(item)) for item in data.get(key, ()))

        return cls(entries("features"), entries("outputs"), int(data.get("bins", DEFAULT_BINS)))

    def tracker(
        self,
        policy: WindowPolicy,
        *,
        thresholds: Thresholds | None = None,
        history: int = DEFAULT_HISTORY,
        route: str = "",
        model: str = "",
        version: str = "",
    ) -> DriftTracker:
        return DriftTracker(
            self.features, policy, outputs=self.outputs, thresholds=thresholds, history=history,
            route=route, model=model, version=version,
        )


def profile_columns(
    columns: Mapping[str, npt.ArrayLike] | tuple[Sequence[str], npt.NDArray[Any]],
    outputs: Mapping[str, npt.ArrayLike] | None = None,
    *,
    bins: int = DEFAULT_BINS,
    max_categories: int = DEFAULT_MAX_CATEGORIES,
) -> ProfileSet:
    """Profile every reference column: a mapping name -> values, or (names, 2-D array) in column order."""
    if isinstance(columns, tuple):
        names, matrix = columns
        matrix = np.asarray(matrix)
        if matrix.ndim != 2 or matrix.shape[1] != len(names):
            raise ValueError(f"profile set: {len(names)} names for an array of shape {matrix.shape}")
        items: list[tuple[str, npt.ArrayLike]] = [(str(n), matrix[:, i]) for i, n in enumerate(names)]
    else:
        items = list(columns.items())

    def build(values: npt.ArrayLike) -> Profile:
        return profile_from_sample(values, bins, max_categories=max_categories)

    return ProfileSet(
        tuple((n, build(v)) for n, v in items),
        tuple((n, build(v)) for n, v in (outputs or {}).items()),
        bins,
    )
