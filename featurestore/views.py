"""Feature views, feature references and compiled read plans (pure).

A FeatureView names an entity key, typed features with defaults and a TTL. A model declares its
input features in order ("view:feature" or "request:name"); compile_read_plan turns that list into a
ReadPlan once, so a request only looks up keys, runs the HMGETs the plan lists and decodes.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from featurestore.codec import DTYPES, ReadResult, Reply, ViewRead, decode_read, entity_token
from featurestore.errors import (
    EntityNotFound,
    InvalidFeatureRequest,
    InvalidFeatureView,
    PlanMismatch,
    UnknownFeature,
    UnknownView,
)

REQUEST: Final = "request"  # the pseudo-view of features supplied in the request itself
MAX_TTL_SECONDS: Final = 10 * 366 * 86400
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,127}")  # no ':' (key separator); features can't start with '_'
_VIEW_KEYS: Final = frozenset({"entity", "ttl_seconds", "features", "description"})
_FEATURE_KEYS: Final = frozenset({"name", "dtype", "default", "description"})
_ZERO: Final[Mapping[str, float | int | bool | str]] = {
    "float32": 0.0, "float64": 0.0, "int32": 0, "int64": 0, "bool": False, "string": ""
}
_INT_RANGE: Final = {"int32": (-(2**31), 2**31 - 1), "int64": (-(2**63), 2**63 - 1)}

Scalar = float | int | bool | str


def _check_name(what: str, name: object) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(
            f"{what} {name!r} is not a valid name (a letter, then up to 127 letters, digits, '_', '.' or '-')"
        )
    return name


def coerce_default(dtype: str, value: object) -> Scalar:
    """A default as a value of `dtype` (ints for float dtypes become floats; integral floats for int
    dtypes become ints). Raises ValueError naming the reason."""
    if dtype not in DTYPES:
        raise ValueError(f"{dtype!r} is not one of {', '.join(DTYPES)}")
    kind = DTYPES[dtype].kind
    if kind == "f":
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif kind == "i":
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, int) and not isinstance(value, bool):
            lo, hi = _INT_RANGE[dtype]
            if lo <= value <= hi:
                return value
            raise ValueError(f"{value} is out of range for {dtype}")
    elif kind == "b":
        if isinstance(value, bool):
            return value
    elif isinstance(value, str):
        return value
    raise ValueError(f"{value!r} is not a {dtype}")


@dataclass(frozen=True, slots=True)
class Feature:
    """One feature: its name (the hash field), dtype, and the value served when it is missing."""

    name: str
    dtype: str
    default: Scalar | None = None  # None: the dtype's zero (0.0, 0, False, "")
    description: str = ""

    def __post_init__(self) -> None:
        try:
            _check_name("feature name", self.name)
            default = _ZERO.get(self.dtype) if self.default is None else self.default
            object.__setattr__(self, "default", coerce_default(self.dtype, default))
        except ValueError as exc:
            raise InvalidFeatureView(f"feature {self.name!r}: {exc}") from None

    def to_dict(self) -> dict[str, object]:
        default = self.default
        out: dict[str, object] = {
            "name": self.name,
            "dtype": self.dtype,
            "default": None if isinstance(default, float) and math.isnan(default) else default,
        }
        if self.description:
            out["description"] = self.description
        return out


@dataclass(frozen=True, slots=True)
class FeatureView:
    """A named group of features keyed by one entity (join key), with a TTL enforced at read time
    (0 = values never expire)."""

    name: str
    entity: str
    features: tuple[Feature, ...]
    ttl_seconds: int = 0
    description: str = ""

    def __post_init__(self) -> None:
        problem = self._problem()
        if problem:
            raise InvalidFeatureView(f"feature view {self.name!r}: {problem}")

    def _problem(self) -> str | None:
        try:
            _check_name("name", self.name)
            _check_name("entity", self.entity)
        except ValueError as exc:
            return str(exc)
        if self.name == REQUEST:
            return f"'{REQUEST}' is reserved for features supplied in the request"
        if isinstance(self.ttl_seconds, bool) or not isinstance(self.ttl_seconds, int):
            return f"ttl_seconds: {self.ttl_seconds!r} is not an integer"
        if not 0 <= self.ttl_seconds <= MAX_TTL_SECONDS:
            return f"ttl_seconds: {self.ttl_seconds} is not between 0 and {MAX_TTL_SECONDS}"
        if not self.features:
            return "features: a view needs at least one feature"
        seen: set[str] = set()
        for i, feature in enumerate(self.features):
            if feature.name in seen:
                return f"features[{i}].name: {feature.name!r} appears twice"
            if feature.name == self.entity:
                return f"features[{i}].name: {feature.name!r} is the entity key"
            seen.add(feature.name)
        return None

    @classmethod
    def from_dict(cls, name: str, data: object) -> FeatureView:
        """Build from the contract shape {"entity", "ttl_seconds", "features": [{"name", "dtype",
        "default"}]} ("description" optional); raises InvalidFeatureView naming the field."""

        def fail(path: str, reason: str) -> InvalidFeatureView:
            return InvalidFeatureView(f"feature view {name!r}: {path}: {reason}")

        if not isinstance(data, Mapping):
            raise InvalidFeatureView(f"feature view {name!r}: expected an object, got {type(data).__name__}")
        unknown = sorted(set(data) - _VIEW_KEYS)
        if unknown:
            raise fail(unknown[0], f"unknown field (expected {', '.join(sorted(_VIEW_KEYS))})")
        for key in ("entity", "features"):
            if key not in data:
                raise fail(key, "required")
        if not isinstance(data["entity"], str):
            raise fail("entity", f"expected a string, got {data['entity']!r}")
        ttl = data.get("ttl_seconds", 0)
        if isinstance(ttl, float) and ttl.is_integer():
            ttl = int(ttl)
        if isinstance(ttl, bool) or not isinstance(ttl, int):
            raise fail("ttl_seconds", f"expected an integer, got {ttl!r}")
        description = data.get("description", "")
        if not isinstance(description, str):
            raise fail("description", f"expected a string, got {description!r}")
        raw_features = data["features"]
        if not isinstance(raw_features, list):
            raise fail("features", f"expected a list, got {type(raw_features).__name__}")
        features = []
        for i, item in enumerate(raw_features):
            path = f"features[{i}]"
            if not isinstance(item, Mapping):
                raise fail(path, f"expected an object, got {item!r}")
            unknown = sorted(set(item) - _FEATURE_KEYS)
            if unknown:
                raise fail(f"{path}.{unknown[0]}", f"unknown field (expected {', '.join(sorted(_FEATURE_KEYS))})")
            for key in ("name", "dtype"):
                if key not in item:
                    raise fail(f"{path}.{key}", "required")
            fname, dtype = item["name"], item["dtype"]
            try:
                _check_name("feature name", fname)
            except ValueError as exc:
                raise fail(f"{path}.name", str(exc)) from None
            if not isinstance(dtype, str) or dtype not in DTYPES:
                raise fail(f"{path}.dtype", f"{dtype!r} is not one of {', '.join(DTYPES)}")
            default = item.get("default", _ZERO[dtype])
            if default is None and DTYPES[dtype].kind == "f":
                default = math.nan  # JSON has no NaN: null asks for it
            try:
                default = coerce_default(dtype, default)
            except ValueError as exc:
                raise fail(f"{path}.default", str(exc)) from None
            fdesc = item.get("description", "")
            if not isinstance(fdesc, str):
                raise fail(f"{path}.description", f"expected a string, got {fdesc!r}")
            features.append(Feature(fname, dtype, default, fdesc))
        return cls(name, data["entity"], tuple(features), ttl, description)

    def to_dict(self) -> dict[str, object]:
        """The contract shape (the name is not part of it)."""
        out: dict[str, object] = {
            "entity": self.entity,
            "ttl_seconds": self.ttl_seconds,
            "features": [f.to_dict() for f in self.features],
        }
        if self.description:
            out["description"] = self.description
        return out

    def feature(self, name: str) -> Feature:
        """The feature called `name`; raises UnknownFeature listing the view's features."""
        for feature in self.features:
            if feature.name == name:
                return feature
        names = ", ".join(f.name for f in self.features)
        raise UnknownFeature(f"feature view '{self.name}' has no feature '{name}' (it has: {names})")


@dataclass(frozen=True, slots=True)
class FeatureRef:
    """"view:feature", or "request:name" for a value the request itself supplies."""

    view: str
    feature: str

    @classmethod
    def parse(cls, text: str) -> FeatureRef:
        view, sep, feature = text.partition(":") if isinstance(text, str) else ("", "", "")
        if not sep or not view or not feature or ":" in feature:
            raise InvalidFeatureRequest(
                f"feature reference {text!r}: expected 'view:feature' or '{REQUEST}:name'"
            )
        return cls(view, feature)

    @property
    def is_request(self) -> bool:
        return self.view == REQUEST

    @property
    def full_name(self) -> str:
        """Feast's full feature name, "view__feature"."""
        return f"{self.view}__{self.feature}"

    def __str__(self) -> str:
        return f"{self.view}:{self.feature}"


@dataclass(frozen=True, slots=True, eq=False)
class ReadPlan:
    """A model's declared features compiled for reading: output column i is `refs[i]`.

    `views` lists, per feature view, the key prefix, the fields to HMGET (encoded once) and the
    output column of each; `defaults` is the row served when everything is missing; request columns
    keep their default until `fill_request`. Rows are assembled as `dtype` (object keeps each
    feature's own type, for APIs that return values as they are)."""

    refs: tuple[FeatureRef, ...]
    dtype: np.dtype[Any]
    defaults: npt.NDArray[Any]
    views: tuple[ViewRead, ...]
    request_columns: tuple[tuple[str, int], ...]
    entities: tuple[str, ...]
    column_dtypes: tuple[str | None, ...]  # a feature's dtype; None for request columns

    @property
    def width(self) -> int:
        return len(self.refs)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(str(r) for r in self.refs)

    def entity_tokens(self, entity_rows: Sequence[Mapping[str, object]]) -> dict[str, list[bytes]]:
        """Each needed join key's canonical key part per row; raises InvalidFeatureRequest naming
        the row and the key."""
        tokens: dict[str, list[bytes]] = {}
        for entity in self.entities:
            column = tokens[entity] = []
            for i, row in enumerate(entity_rows):
                try:
                    column.append(entity_token(row[entity]))
                except KeyError:
                    needed = ", ".join(f"'{v.view}'" for v in self.views if v.entity == entity)
                    raise InvalidFeatureRequest(
                        f"instance {i}: missing entity key '{entity}' (needed by feature view {needed})"
                    ) from None
                except ValueError as exc:
                    raise InvalidFeatureRequest(f"instance {i}, entity key '{entity}': {exc}") from None
        return tokens

    def lookups(self, entity_rows: Sequence[Mapping[str, object]]) -> list[tuple[bytes, tuple[bytes, ...]]]:
        """(key, fields) for one HMGET each, view-major: view 0's rows, then view 1's, ..."""
        tokens = self.entity_tokens(entity_rows)
        return [(vr.prefix + token, vr.fields) for vr in self.views for token in tokens[vr.entity]]

    def decode(self, replies: Sequence[Reply], n: int, now_ms: int) -> ReadResult:
        """Decode the HMGET replies of `lookups` for n rows; TTLs are checked against `now_ms`."""
        return decode_read(self.views, self.defaults, replies, n, now_ms)

    def fill_request(self, rows: npt.NDArray[Any], entity_rows: Sequence[Mapping[str, object]]) -> None:
        """Copy the `request:` features of each instance into its row; raises InvalidFeatureRequest
        naming the instance and the feature that is absent or of the wrong type."""
        for name, col in self.request_columns:
            for i, row in enumerate(entity_rows):
                if name not in row:
                    raise InvalidFeatureRequest(f"instance {i}: missing request feature '{name}'")
                try:
                    rows[i, col] = row[name]
                except (TypeError, ValueError):
                    raise InvalidFeatureRequest(
                        f"instance {i}, request feature '{name}': {row[name]!r} is not a {self.dtype}"
                    ) from None

    def check_found(self, result: ReadResult, entity_rows: Sequence[Mapping[str, object]]) -> None:
        """Raise EntityNotFound naming the first entity with no row (or only a stale one) in a view."""
        if result.found.all():
            return
        i, vi = (int(x) for x in np.argwhere(~result.found)[0])
        vr = self.views[vi]
        raise EntityNotFound(f"{vr.entity}={entity_rows[i][vr.entity]!r} not found in feature view '{vr.view}'")

    def check_against(self, input_width: int, input_dtype: npt.DTypeLike) -> None:
        """Check the plan fits a model input [batch, input_width] of `input_dtype`; raises
        PlanMismatch listing every problem."""
        want = np.dtype(input_dtype)
        problems = []
        if input_width != self.width:
            declared = ", ".join(self.names) or "none"
            problems.append(f"the model input has {input_width} columns but {self.width} features are declared ({declared})")
        if self.dtype != want:
            problems.append(f"features are assembled as {self.dtype} but the model input is {want}")
        for ref, dtype in zip(self.refs, self.column_dtypes, strict=True):
            if dtype is not None and not _fits(DTYPES[dtype].kind, want.kind):
                problems.append(f"feature '{ref}' is {dtype}, which a {want} input cannot take")
        if problems:
            raise PlanMismatch("declared features do not fit the model input: " + "; ".join(problems))


def _fits(feature_kind: str, input_kind: str) -> bool:
    if input_kind == "f":
        return feature_kind in "fib"
    if input_kind in "iu":
        return feature_kind in "ib"
    if input_kind == "b":
        return feature_kind == "b"
    return feature_kind == "U"  # string-like inputs take string features


_PLAN_DTYPES: Final = frozenset(np.dtype(t) for t in ("float32", "float64", "int32", "int64", "bool", "object"))


def compile_read_plan(
    refs: Sequence[str | FeatureRef], views: Mapping[str, FeatureView], *, dtype: npt.DTypeLike = np.float32
) -> ReadPlan:
    """Compile a model's declared input features, in order, against the current views.

    Raises InvalidFeatureRequest (malformed or repeated ref), UnknownView, UnknownFeature, and
    PlanMismatch for a string feature in a numeric row."""
    row_dtype = np.dtype(dtype)
    if row_dtype not in _PLAN_DTYPES:
        raise ValueError(f"rows cannot be assembled as {row_dtype}")
    object_rows = row_dtype == np.dtype(object)
    parsed = tuple(r if isinstance(r, FeatureRef) else FeatureRef.parse(r) for r in refs)
    seen: set[FeatureRef] = set()
    per_view: dict[str, list[tuple[str, str, int]]] = {}
    request_columns: list[tuple[str, int]] = []
    defaults: list[object] = []
    column_dtypes: list[str | None] = []
    for col, ref in enumerate(parsed):
        if ref in seen:
            raise InvalidFeatureRequest(f"feature '{ref}' is listed twice")
        seen.add(ref)
        if ref.is_request:
            request_columns.append((ref.feature, col))
            column_dtypes.append(None)
            defaults.append(None if object_rows else (math.nan if row_dtype.kind == "f" else 0))
            continue
        view = views.get(ref.view)
        if view is None:
            raise UnknownView(f"feature '{ref}': no feature view named '{ref.view}'")
        feature = view.feature(ref.feature)
        if feature.dtype == "string" and not object_rows:
            raise PlanMismatch(f"feature '{ref}' is a string; it cannot be assembled into {row_dtype} rows")
        per_view.setdefault(view.name, []).append((feature.name, feature.dtype, col))
        column_dtypes.append(feature.dtype)
        default = feature.default
        defaults.append(DTYPES[feature.dtype].numpy.type(default) if object_rows and feature.dtype != "string" else default)
    compiled = tuple(
        ViewRead.build(name, views[name].entity, views[name].ttl_seconds, feats, object_rows)
        for name, feats in per_view.items()
    )
    default_row = np.empty(len(parsed), dtype=row_dtype)
    default_row[:] = defaults
    default_row.flags.writeable = False
    return ReadPlan(
        refs=parsed,
        dtype=row_dtype,
        defaults=default_row,
        views=compiled,
        request_columns=tuple(request_columns),
        entities=tuple(dict.fromkeys(vr.entity for vr in compiled)),
        column_dtypes=tuple(column_dtypes),
    )
