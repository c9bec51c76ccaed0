"""Route policies (pure): parse and validate an admin's JSON policy, then compile it once into a
CompiledRoute whose pick() chooses an arm per request from a key and a uniform number the caller draws."""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from hashlib import blake2b
from typing import Generic, Literal, TypeVar, cast
from urllib.parse import urlsplit

T = TypeVar("T")
S = TypeVar("S")

Split = Literal["random", "sticky"]

BUCKETS = 10_000
MAX_ARMS = 16
MAX_SHADOWS = 8

_SPLITS: tuple[Split, ...] = ("random", "sticky")
_POLICY_FIELDS = ("model", "arms", "split", "sticky_key", "shadows", "features", "drift")
_ARM_FIELDS = ("version", "weight")
_SHADOW_FIELDS = ("version", "url", "sample")


class PolicyError(ValueError):
    """A route policy that cannot be served; the message names the field and the reason."""


@dataclass(frozen=True, slots=True)
class ArmSpec:
    """One primary arm: a version reference (number, alias or stage) and its relative weight."""

    version: str
    weight: float


@dataclass(frozen=True, slots=True)
class ShadowSpec:
    """One mirror target: exactly one of a version reference or an http(s) URL; `sample` in [0, 1]."""

    version: str | None
    url: str | None
    sample: float


@dataclass(frozen=True, slots=True)
class FeaturePolicy:
    """What an entity-keyed request does when features are missing: `missing_entity` "default" serves
    the view's defaults, "error" answers 404 naming the entity; `on_store_error` "error" answers 503 at
    once, "default" serves defaults when the online store is slow or down."""

    missing_entity: Literal["default", "error"] = "default"
    on_store_error: Literal["default", "error"] = "error"


_FEATURE_FIELDS = ("missing_entity", "on_store_error")
_DRIFT_FIELDS = ("window_requests", "window_seconds")


@dataclass(frozen=True, slots=True)
class RoutePolicy:
    """A validated route policy; build with parse(), serialize with to_dict()."""

    model: str
    arms: tuple[ArmSpec, ...]
    split: Split
    sticky_key: str | None
    shadows: tuple[ShadowSpec, ...]
    features: FeaturePolicy = FeaturePolicy()
    drift: tuple[tuple[str, int | float], ...] = ()  # {"window_requests": N} or {"window_seconds": T}; () = server default

    @classmethod
    def default(cls, model: str) -> RoutePolicy:
        """The policy of a route nobody configured: one arm, default feature handling and drift window."""
        return cls(model, (ArmSpec("default", 1.0),), "random", None, ())

    @classmethod
    def parse(cls, spec: object) -> RoutePolicy:
        """Validate the JSON form structurally (references are not resolved here).

        Raises PolicyError naming the first offending field."""
        if not isinstance(spec, Mapping):
            raise PolicyError("policy: must be an object")
        _refuse_unknown("policy", spec, _POLICY_FIELDS)
        model = spec.get("model")
        if not isinstance(model, str) or not model.strip():
            raise PolicyError("model: must be a non-empty string")
        arms = _parse_arms(spec.get("arms"))
        split = spec.get("split", "random")
        if split not in _SPLITS:
            raise PolicyError(f"split: must be 'random' or 'sticky', got {split!r}")
        sticky_key = spec.get("sticky_key")
        if sticky_key is not None and (not isinstance(sticky_key, str) or not sticky_key.strip()):
            raise PolicyError("sticky_key: must be a non-empty string")
        if split == "sticky" and sticky_key is None:
            raise PolicyError("sticky_key: required when split is 'sticky'")
        shadows = _parse_shadows(spec.get("shadows"), {arm.version for arm in arms})
        return cls(model, arms, cast(Split, split), sticky_key, shadows, _parse_features(spec.get("features")),
                   _parse_drift(spec.get("drift")))

    def to_dict(self) -> dict[str, object]:
        """The canonical JSON form: parse(to_dict()) == self; integral numbers are written as ints."""
        out: dict[str, object] = {
            "model": self.model,
            "arms": [{"version": a.version, "weight": _json_number(a.weight)} for a in self.arms],
            "split": self.split,
        }
        if self.sticky_key is not None:
            out["sticky_key"] = self.sticky_key
        shadows: list[dict[str, object]] = []
        for s in self.shadows:
            target: dict[str, object] = {"version": s.version} if s.version is not None else {"url": s.url}
            target["sample"] = _json_number(s.sample)
            shadows.append(target)
        out["shadows"] = shadows
        if self.features != FeaturePolicy():
            out["features"] = {"missing_entity": self.features.missing_entity, "on_store_error": self.features.on_store_error}
        if self.drift:
            out["drift"] = {k: _json_number(v) for k, v in self.drift}
        return out


def _parse_features(value: object) -> FeaturePolicy:
    if value is None:
        return FeaturePolicy()
    if not isinstance(value, Mapping):
        raise PolicyError("features: must be an object")
    _refuse_unknown("features", value, _FEATURE_FIELDS)
    choices = ("default", "error")
    missing = value.get("missing_entity", "default")
    on_error = value.get("on_store_error", "error")
    if missing not in choices:
        raise PolicyError(f"features.missing_entity: must be 'default' or 'error', got {missing!r}")
    if on_error not in choices:
        raise PolicyError(f"features.on_store_error: must be 'default' or 'error', got {on_error!r}")
    return FeaturePolicy(missing, on_error)


def _parse_drift(value: object) -> tuple[tuple[str, int | float], ...]:
    if value is None:
        return ()
    if not isinstance(value, Mapping):
        raise PolicyError("drift: must be an object")
    _refuse_unknown("drift", value, _DRIFT_FIELDS)
    if len(value) != 1:
        raise PolicyError("drift: give exactly one of 'window_requests' or 'window_seconds'")
    ((key, number),) = value.items()
    n = _number(number)
    if n is None or n <= 0 or (key == "window_requests" and n != int(n)):
        kind = "a positive integer" if key == "window_requests" else "a positive number of seconds"
        raise PolicyError(f"drift.{key}: must be {kind}")
    return ((str(key), int(n) if key == "window_requests" else float(n)),)


def _refuse_unknown(where: str, spec: Mapping[object, object], known: tuple[str, ...]) -> None:
    unknown = [k for k in spec if k not in known]
    if unknown:
        names = ", ".join(repr(k) for k in unknown)
        raise PolicyError(f"{where}: unknown field {names} (known: {', '.join(known)})")


def _version_ref(where: str, value: object) -> str:
    # Integers are accepted because "version": 4 is what people type; the reference is a string.
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return str(value)
    if isinstance(value, str) and value.strip():
        return value
    raise PolicyError(f"{where}: must be a non-empty string or a version number")


def _number(value: object) -> float | None:
    """`value` as a finite float, or None; bool is not a number here even though it is an int."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _json_number(value: float) -> int | float:
    return int(value) if float(value).is_integer() else value


def _parse_arms(value: object) -> tuple[ArmSpec, ...]:
    if not isinstance(value, list) or not value:
        raise PolicyError("arms: must be a non-empty list")
    if len(value) > MAX_ARMS:
        raise PolicyError(f"arms: at most {MAX_ARMS} arms, got {len(value)}")
    arms: list[ArmSpec] = []
    seen: dict[str, int] = {}
    for i, item in enumerate(value):
        where = f"arms[{i}]"
        if not isinstance(item, Mapping):
            raise PolicyError(f"{where}: must be an object")
        _refuse_unknown(where, item, _ARM_FIELDS)
        version = _version_ref(f"{where}.version", item.get("version"))
        if version in seen:
            raise PolicyError(f"{where}.version: {version!r} duplicates arms[{seen[version]}]")
        seen[version] = i
        weight = _number(item.get("weight"))
        if weight is None or weight < 0:
            raise PolicyError(f"{where}.weight: must be a number >= 0")
        arms.append(ArmSpec(version, weight))
    if not any(arm.weight > 0 for arm in arms):
        raise PolicyError("arms: weights must not all be zero")
    return tuple(arms)


def _parse_shadows(value: object, arm_versions: set[str]) -> tuple[ShadowSpec, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise PolicyError("shadows: must be a list")
    if len(value) > MAX_SHADOWS:
        raise PolicyError(f"shadows: at most {MAX_SHADOWS} shadows, got {len(value)}")
    shadows: list[ShadowSpec] = []
    seen: dict[tuple[str | None, str | None], int] = {}
    for i, item in enumerate(value):
        where = f"shadows[{i}]"
        if not isinstance(item, Mapping):
            raise PolicyError(f"{where}: must be an object")
        _refuse_unknown(where, item, _SHADOW_FIELDS)
        if ("version" in item) == ("url" in item):
            raise PolicyError(f"{where}: give exactly one of 'version' or 'url'")
        version: str | None = None
        url: str | None = None
        if "version" in item:
            version = _version_ref(f"{where}.version", item["version"])
            if version in arm_versions:
                raise PolicyError(f"{where}: version {version!r} is already a primary arm")
        else:
            url = _http_url(f"{where}.url", item["url"])
        sample = _number(item.get("sample"))
        if sample is None or not 0.0 <= sample <= 1.0:
            raise PolicyError(f"{where}.sample: must be between 0 and 1")
        if (version, url) in seen:
            raise PolicyError(f"{where}: duplicates shadows[{seen[version, url]}]")
        seen[version, url] = i
        shadows.append(ShadowSpec(version, url, sample))
    return tuple(shadows)


def _http_url(where: str, value: object) -> str:
    if isinstance(value, str):
        try:
            parts = urlsplit(value)
        except ValueError:  # e.g. an unbalanced IPv6 bracket
            parts = None
        if parts is not None and parts.scheme in ("http", "https") and parts.hostname:
            return value
    raise PolicyError(f"{where}: must be an http(s) URL")


def check_shadows_distinct(
    policy: RoutePolicy,
    resolved_arm_versions: Sequence[int],
    resolved_shadow_versions: Sequence[int | None],
) -> None:
    """Refuse a shadow that resolves to a primary arm's version or to another shadow's version.

    The caller resolves policy.arms[i] / policy.shadows[j] to version numbers (None for URL shadows),
    which is why this check is separate from parse(). Raises PolicyError."""
    if len(resolved_arm_versions) != len(policy.arms) or len(resolved_shadow_versions) != len(policy.shadows):
        raise ValueError("resolved versions must align with policy.arms and policy.shadows")
    primary = set(resolved_arm_versions)
    seen: dict[int, int] = {}
    for i, version in enumerate(resolved_shadow_versions):
        if version is None:
            continue
        if version in primary:
            raise PolicyError(f"shadows[{i}]: version {version} is already a primary arm")
        if version in seen:
            raise PolicyError(f"shadows[{i}]: version {version} is already shadows[{seen[version]}]")
        seen[version] = i


def bucket_of(key: bytes) -> int:
    """A stable bucket in [0, BUCKETS) for a sticky key: blake2b, so it is the same in every process
    and Python version (hash() is salted per process)."""
    return int.from_bytes(blake2b(key, digest_size=8).digest(), "big") % BUCKETS


def assign_buckets(weights: Sequence[float]) -> tuple[int, ...]:
    """The arm index of each of the BUCKETS buckets: one contiguous range per arm, in arm order.

    Boundaries sit at round(cumulative share * BUCKETS), so changing weights moves only the buckets
    between the old and new boundaries; hashing modulo the total weight would reshuffle every key.
    Zero-weight arms get no bucket. Raises ValueError for no weights, a negative or non-finite weight,
    or all zeros."""
    if not weights or any(not math.isfinite(w) or w < 0 for w in weights):
        raise ValueError("weights must be finite numbers >= 0")
    total = sum(weights)
    if total <= 0:
        raise ValueError("weights must not all be zero")
    table: list[int] = []
    running = 0.0
    for arm, weight in enumerate(weights):
        running += weight
        end = BUCKETS if running >= total else round(running / total * BUCKETS)
        table.extend([arm] * (end - len(table)))
    return tuple(table)


def _cumulative(weights: Sequence[float]) -> tuple[float, ...]:
    total = sum(weights)
    running = 0.0
    out: list[float] = []
    for weight in weights:
        running += weight
        # Pinned, so float error can never leave a sliver past the last arm.
        out.append(1.0 if running >= total else running / total)
    return tuple(out)


@dataclass(frozen=True, slots=True)
class CompiledRoute(Generic[T, S]):
    """A route compiled once from its policy and the caller's resolved targets (arms[i] serves
    policy.arms[i], shadows[j] mirrors policy.shadows[j]); swap the whole object to change it."""

    name: str
    policy: RoutePolicy
    arms: tuple[T, ...]
    arm_labels: tuple[str, ...]
    cumulative: tuple[float, ...]
    buckets: bytes = field(repr=False)
    shadows: tuple[S, ...]
    shadow_samples: tuple[float, ...]
    split: Split
    sticky_key: str | None
    # cumulative up to the last non-zero arm: bisect over it lands only on arms with weight,
    # even for u == 1.0 or trailing zero-weight arms.
    _bounds: tuple[float, ...] = field(repr=False, compare=False)

    def pick(self, key: bytes | None, u: float) -> int:
        """The arm index for one request: by the key's bucket when the split is sticky and a key is
        given, else by `u` (uniform in [0, 1)) against the cumulative weights."""
        if key is None or self.split == "random":
            return bisect_right(self._bounds, u)
        return self.buckets[int.from_bytes(blake2b(key, digest_size=8).digest(), "big") % BUCKETS]

    def sampled_shadows(self, us: Sequence[float]) -> list[S]:
        """The shadows to mirror this request to: those whose sample rate exceeds their uniform
        draw; `us` holds one number in [0, 1) per shadow, in order."""
        return [s for s, rate, u in zip(self.shadows, self.shadow_samples, us, strict=True) if u < rate]


def compile_route(
    name: str, policy: RoutePolicy, arms: Sequence[T], shadows: Sequence[S]
) -> CompiledRoute[T, S]:
    """Build the per-request form of `policy`; arms and shadows align with policy.arms and
    policy.shadows. Raises ValueError when they do not."""
    if len(arms) != len(policy.arms):
        raise ValueError(f"route {name!r}: {len(arms)} arm targets for {len(policy.arms)} arms")
    if len(shadows) != len(policy.shadows):
        raise ValueError(f"route {name!r}: {len(shadows)} shadow targets for {len(policy.shadows)} shadows")
    weights = [arm.weight for arm in policy.arms]
    buckets = bytes(assign_buckets(weights))  # first: it refuses weights that cannot be compiled
    cumulative = _cumulative(weights)
    last_live = max(i for i, w in enumerate(weights) if w > 0)
    return CompiledRoute(
        name=name,
        policy=policy,
        arms=tuple(arms),
        arm_labels=tuple(arm.version for arm in policy.arms),
        cumulative=cumulative,
        buckets=buckets,
        shadows=tuple(shadows),
        shadow_samples=tuple(s.sample for s in policy.shadows),
        split=policy.split,
        sticky_key=policy.sticky_key,
        _bounds=cumulative[:last_live],
    )
