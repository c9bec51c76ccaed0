"""Rollout specs and the route policies a rollout writes (pure): parse and validate the admin's JSON,
and build the policy of each phase from the route's original policy.

Phases, for candidate version C and stable version S (the route's champion):
  shadow        arms: champion 100%; shadows: C (mirror_sample)       -> disagreement, errors, latency of C
  step w%       arms: champion 100-w, C w; shadows: S (mirror_sample) -> S mirrored on C's traffic only
  promoted      champion moved to C: the original policy with one arm "champion" (or no policy again)
  rolled back   the original policy, exactly (or no policy again)
The stable arm is written as "champion" and its shadow as S's number: two references to one version,
because a policy may not shadow a version under the same reference as an arm (gateway/routing.py).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.guards import GUARDS, Limits

STABLE_REF = "champion"
PREVIOUS_ALIAS = "previous"
MAX_STEPS = 20
MAX_STEP_SECONDS = 7 * 24 * 3600.0
_FIELDS = ("model", "candidate", "steps", "step_seconds", "min_requests", "guards", "mirror_sample")
_GUARD_FIELDS = ("max_error_rate", "max_p99_ratio", "max_disagreement", "max_psi")
_DEFAULTS = Limits()


class SpecError(ValueError):
    """A rollout spec that cannot run; the message names the field and the reason."""


@dataclass(frozen=True, slots=True)
class RolloutSpec:
    """A validated rollout spec; candidate is a version reference (number, alias or stage)."""

    model: str
    candidate: str
    steps: tuple[float, ...]
    step_seconds: float
    limits: Limits
    mirror_sample: float = 1.0

    @classmethod
    def parse(cls, spec: object) -> RolloutSpec:
        """Raises SpecError naming the first offending field."""
        if not isinstance(spec, Mapping):
            raise SpecError("rollout: must be an object")
        unknown = [k for k in spec if k not in _FIELDS]
        if unknown:
            raise SpecError(f"rollout: unknown field {', '.join(map(repr, unknown))} (known: {', '.join(_FIELDS)})")
        model = spec.get("model")
        if not isinstance(model, str) or not model.strip():
            raise SpecError("model: must be a non-empty string")
        candidate = spec.get("candidate")
        if isinstance(candidate, int) and not isinstance(candidate, bool) and candidate > 0:
            candidate = str(candidate)
        if not isinstance(candidate, str) or not candidate.strip():
            raise SpecError("candidate: must be a non-empty string or a version number")
        steps = _steps(spec.get("steps"))
        step_seconds = _number(spec.get("step_seconds", 300))
        if step_seconds is None or not 0 < step_seconds <= MAX_STEP_SECONDS:
            raise SpecError(f"step_seconds: must be a number of seconds in (0, {MAX_STEP_SECONDS:g}]")
        min_requests = spec.get("min_requests", _DEFAULTS.min_requests)
        if isinstance(min_requests, bool) or not isinstance(min_requests, int) or not 0 <= min_requests <= 10**9:
            raise SpecError("min_requests: must be an integer >= 0")
        sample = _number(spec.get("mirror_sample", 1.0))
        if sample is None or not 0 <= sample <= 1:
            raise SpecError("mirror_sample: must be a number between 0 and 1")
        limits = _guards(spec.get("guards", {}), min_requests)
        return cls(model, candidate, steps, step_seconds, limits, sample)

    def to_dict(self) -> dict[str, Any]:
        """The canonical JSON form: parse(to_dict()) == self."""
        return {
            "model": self.model,
            "candidate": self.candidate,
            "steps": [json_number(s) for s in self.steps],
            "step_seconds": json_number(self.step_seconds),
            "min_requests": self.limits.min_requests,
            "guards": {name: self.limits.limit(guard) for name, guard in zip(_GUARD_FIELDS, GUARDS, strict=True)},
            "mirror_sample": json_number(self.mirror_sample),
        }


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def json_number(value: float) -> int | float:
    """Integral numbers as ints, so JSON shows 50, not 50.0."""
    return int(value) if float(value).is_integer() else value


def _steps(value: object) -> tuple[float, ...]:
    if not isinstance(value, list) or not value:
        raise SpecError("steps: must be a non-empty list of percentages")
    if len(value) > MAX_STEPS:
        raise SpecError(f"steps: at most {MAX_STEPS} steps, got {len(value)}")
    steps: list[float] = []
    for i, item in enumerate(value):
        step = _number(item)
        if step is None or not 0 < step <= 100:
            raise SpecError(f"steps[{i}]: must be a percentage in (0, 100]")
        if steps and step <= steps[-1]:
            raise SpecError(f"steps[{i}]: must be greater than steps[{i - 1}] ({json_number(steps[-1])})")
        steps.append(step)
    return tuple(steps)


def _guards(value: object, min_requests: int) -> Limits:
    """Each guard defaults to Limits()'s value; null turns it off."""
    if not isinstance(value, Mapping):
        raise SpecError("guards: must be an object")
    unknown = [k for k in value if k not in _GUARD_FIELDS]
    if unknown:
        raise SpecError(f"guards: unknown field {', '.join(map(repr, unknown))} (known: {', '.join(_GUARD_FIELDS)})")
    limits: dict[str, float | None] = {}
    for name in _GUARD_FIELDS:
        default = getattr(_DEFAULTS, name)
        raw = value.get(name, default)
        if raw is None:
            limits[name] = None
            continue
        number = _number(raw)
        ratio = name in ("max_error_rate", "max_disagreement")
        if number is None or number < 0 or (ratio and number > 1) or (name == "max_p99_ratio" and number <= 0):
            kind = "a number between 0 and 1" if ratio else "a positive number" if name == "max_p99_ratio" else "a number >= 0"
            raise SpecError(f"guards.{name}: must be {kind}, or null to turn the guard off")
        limits[name] = number
    return Limits(limits["max_error_rate"], limits["max_p99_ratio"], limits["max_disagreement"], limits["max_psi"],
                  min_requests)


# --- the route policy of each phase -------------------------------------------------------------


def _base(model: str, original: Mapping[str, Any] | None) -> dict[str, Any]:
    """The original policy's other settings (split, sticky key, features, drift window)."""
    if original is None:
        return {"model": model, "split": "random"}
    return {k: v for k, v in original.items() if k not in ("arms", "shadows")}


def shadow_policy(model: str, original: Mapping[str, Any] | None, kept: Sequence[Mapping[str, Any]],
                  candidate: int, sample: float) -> dict[str, Any]:
    """Before the first step: all traffic on champion, the candidate mirrored on it."""
    return {**_base(model, original), "arms": [{"version": STABLE_REF, "weight": 100}],
            "shadows": [*kept, {"version": str(candidate), "sample": json_number(sample)}]}


def step_policy(model: str, original: Mapping[str, Any] | None, kept: Sequence[Mapping[str, Any]],
                stable: int, candidate: int, weight: float, sample: float) -> dict[str, Any]:
    """A live step: the candidate takes `weight` percent; the stable version is mirrored on the
    candidate's requests (the gateway never mirrors a version on its own requests)."""
    return {**_base(model, original),
            "arms": [{"version": STABLE_REF, "weight": json_number(100 - weight)},
                     {"version": str(candidate), "weight": json_number(weight)}],
            "shadows": [*kept, {"version": str(stable), "sample": json_number(sample)}]}


def promoted_policy(original: Mapping[str, Any] | None, kept: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """After promotion (champion now names the candidate): follow champion again. None: delete the
    stored policy, as the route had none before."""
    if original is None:
        return None
    return {**_base(str(original.get("model")), original), "arms": [{"version": STABLE_REF, "weight": 1}],
            "shadows": list(kept)}


def describe_step(step: int, steps: Sequence[float]) -> str:
    return "shadow" if step < 0 else f"{json_number(steps[step])}%"
