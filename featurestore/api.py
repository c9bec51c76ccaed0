"""Feast-shaped feature server endpoints: POST get-online-features, push and write-to-online-store
(request and response shapes as `feast serve` 0.67 answers them; see shared/protocols/feast.md).

Where we differ from Feast, on purpose: errors are JSON objects {"error", "code"}, and an unknown
feature view, feature or feature service is a 404 (Feast: 500 for a feature); a malformed body, a
missing `entities`/`df` column, an unknown push source or an offline `to` is a 422; a store that is
down or slow is a 503. The response's feature columns come in request order (Feast's order varies).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Protocol

import numpy as np
import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from featurestore.codec import FeatureStatus
from featurestore.errors import (
    EntityNotFound,
    FeatureStoreError,
    IngestError,
    InvalidFeatureRequest,
    InvalidFeatureView,
    OnlineStoreUnavailable,
    PlanMismatch,
    UnknownFeature,
    UnknownFeatureService,
    UnknownView,
)
from featurestore.online import OnlineStore
from featurestore.views import FeatureView, ReadPlan, compile_read_plan

# Looked up along the MRO, so a subclass inherits its parent's status unless listed.
STATUS_FOR: Final[Mapping[type[FeatureStoreError], int]] = {
    FeatureStoreError: 500,
    InvalidFeatureRequest: 422,
    InvalidFeatureView: 422,
    PlanMismatch: 422,
    IngestError: 422,
    UnknownView: 404,
    UnknownFeature: 404,
    UnknownFeatureService: 404,
    EntityNotFound: 404,
    OnlineStoreUnavailable: 503,
}
EPOCH: Final = "1970-01-01T00:00:00Z"
_STATUS_NAMES: Final = tuple(s.name for s in FeatureStatus)
_PUSH_TARGETS: Final = ("online", "offline", "online_and_offline")
_PLAN_CACHE_SIZE: Final = 256


class FeatureCatalog(Protocol):
    """What the endpoints resolve names against; the registry (or a static map) provides it.
    Both methods are called per request, so they should return a prebuilt mapping."""

    def views(self) -> Mapping[str, FeatureView]: ...

    def feature_services(self) -> Mapping[str, Sequence[str]]:
        """Service name -> its "view:feature" refs, in order."""
        ...


@dataclass(frozen=True, slots=True)
class StaticCatalog:
    """A fixed catalog: views by name, and feature services as lists of refs."""

    by_name: Mapping[str, FeatureView]
    services: Mapping[str, Sequence[str]] = field(default_factory=dict)

    @classmethod
    def of(cls, *views: FeatureView, services: Mapping[str, Sequence[str]] | None = None) -> StaticCatalog:
        return cls({v.name: v for v in views}, services or {})

    def views(self) -> Mapping[str, FeatureView]:
        return self.by_name

    def feature_services(self) -> Mapping[str, Sequence[str]]:
        return self.services


def wall_clock_ms() -> int:
    """Wall-clock epoch milliseconds: event times and TTLs are calendar times, not durations."""
    return time.time_ns() // 1_000_000


def status_for(exc: FeatureStoreError) -> int:
    """HTTP status of an error: the entry of the nearest class in its MRO."""
    for cls in type(exc).__mro__:
        status = STATUS_FOR.get(cls)
        if status is not None:
            return status
    return 500


def error_response(exc: FeatureStoreError) -> Response:
    """{"error": message, "code": stable code} with the status of the error's class."""
    body = orjson.dumps({"error": exc.message, "code": exc.code})
    return Response(body, status_code=status_for(exc), media_type="application/json")


def _json_object(body: bytes) -> dict[str, object]:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidFeatureRequest(f"the request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidFeatureRequest(f"the request body must be a JSON object, got {type(data).__name__}")
    return data


def _columns(data: Mapping[str, object], key: str) -> dict[str, list[object]]:
    """A required columnar object {column: [values...]} whose lists have equal lengths."""
    if key not in data:
        raise InvalidFeatureRequest(f"'{key}' is required: an object of columns, e.g. {{\"user_id\": [1, 2]}}")
    columns = data[key]
    if not isinstance(columns, dict):
        raise InvalidFeatureRequest(f"'{key}' must be an object of columns, got {type(columns).__name__}")
    lengths = set()
    for name, values in columns.items():
        if not isinstance(values, list):
            raise InvalidFeatureRequest(f"'{key}.{name}' must be a list of values, got {type(values).__name__}")
        lengths.add(len(values))
    if len(lengths) > 1:
        shown = ", ".join(f"{name}: {len(v)}" for name, v in columns.items())
        raise InvalidFeatureRequest(f"the columns of '{key}' must have equal lengths ({shown})")
    return columns


def _optional(data: Mapping[str, object], key: str, kind: type, default: object) -> object:
    value = data.get(key, default)
    if value is not None and not isinstance(value, kind):
        raise InvalidFeatureRequest(f"'{key}' must be a {kind.__name__}, got {value!r}")
    return value


def _rows(columns: Mapping[str, list[object]]) -> list[dict[str, object]]:
    names = list(columns)
    return [dict(zip(names, values, strict=True)) for values in zip(*columns.values(), strict=True)]


class FeatureAPI:
    """The endpoints as bound methods over one store, a catalog and a clock (epoch ms)."""

    def __init__(self, store: OnlineStore, catalog: FeatureCatalog, clock: Callable[[], int] = wall_clock_ms) -> None:
        self._store = store
        self._catalog = catalog
        self._clock = clock
        self._plans: dict[tuple[str, ...], tuple[Mapping[str, FeatureView], ReadPlan]] = {}

    async def get_online_features(self, request: Request) -> Response:
        """{"entities": {key: [...]}, "features": ["view:feature"] | "feature_service": name,
        "full_feature_names": bool} -> column-major {"metadata": {"feature_names"}, "results"}."""
        try:
            data = _json_object(await request.body())
            entities = _columns(data, "entities")
            refs = self._refs(data)
            full_names = bool(_optional(data, "full_feature_names", bool, False))
            plan = self._plan(refs)
            names = [ref.full_name if full_names else ref.feature for ref in plan.refs]
            if len(set(names)) < len(names):
                dup = next(n for n in names if names.count(n) > 1)
                raise InvalidFeatureRequest(f"feature name '{dup}' appears in several views; set full_feature_names")
            for vr in plan.views:
                if vr.entity not in entities:
                    raise InvalidFeatureRequest(
                        f"'entities' has no column '{vr.entity}', the join key of feature view '{vr.view}'"
                    )
            rows = _rows(entities)
            result = await self._store.read(plan, rows, self._clock())
        except FeatureStoreError as exc:
            return error_response(exc)
        n = len(rows)
        results: list[dict[str, object]] = [
            {"values": values, "statuses": ["PRESENT"] * n, "event_timestamps": [EPOCH] * n}
            for values in entities.values()
        ]
        features: list[dict[str, object]] = [{} for _ in plan.refs]
        stamps = np.datetime_as_string(result.event_ms.astype("datetime64[ms]"), unit="s", timezone="UTC")
        for vi, vr in enumerate(plan.views):
            view_stamps = stamps[:, vi].tolist()
            for col in vr.columns.tolist():
                codes = result.status[:, col].tolist()
                features[col] = {
                    "values": [v if c == 0 else None for v, c in zip(result.rows[:, col], codes, strict=True)],
                    "statuses": [_STATUS_NAMES[c] for c in codes],
                    "event_timestamps": view_stamps,
                }
        body = {"metadata": {"feature_names": [*entities, *names]}, "results": results + features}
        return Response(orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY), media_type="application/json")

    def _refs(self, data: Mapping[str, object]) -> list[str]:
        service = _optional(data, "feature_service", str, None)
        if service is not None:
            services = self._catalog.feature_services()
            if service not in services:
                raise UnknownFeatureService(f"no feature service named '{service}'")
            return list(services[service])  # type: ignore[index]
        features = data.get("features", [])
        if not isinstance(features, list) or not all(isinstance(f, str) for f in features):
            raise InvalidFeatureRequest("'features' must be a list of 'view:feature' strings")
        return features

    def _plan(self, refs: list[str]) -> ReadPlan:
        """Compile (object rows: values keep their types) and cache per ref list while the catalog's
        views mapping stays the same object."""
        views = self._catalog.views()
        key = tuple(refs)
        cached = self._plans.get(key)
        if cached is not None and cached[0] is views:
            return cached[1]
        for ref in refs:
            if ref.startswith("request:"):
                raise InvalidFeatureRequest(f"feature '{ref}': request features are not served here")
        plan = compile_read_plan(refs, views, dtype=object)
        if len(self._plans) >= _PLAN_CACHE_SIZE:
            self._plans.clear()
        self._plans[key] = (views, plan)
        return plan

    async def push(self, request: Request) -> Response:
        """{"push_source_name", "df": {column: [...]}, "to": "online"} -> 200 with an empty body. A push
        source is a feature view's name, or that name + "_push" (Feast's usual naming)."""
        try:
            data = _json_object(await request.body())
            source = data.get("push_source_name")
            if not isinstance(source, str):
                raise InvalidFeatureRequest("'push_source_name' is required: the name of a push source")
            to = data.get("to", "online")
            if to not in _PUSH_TARGETS:
                raise InvalidFeatureRequest(f"{to!r} is not a supported push format; expected one of {', '.join(_PUSH_TARGETS)}")
            if to != "online":
                raise InvalidFeatureRequest(f"to={to!r}: this feature server has no offline store; push with to='online'")
            views = self._catalog.views()
            view = views.get(source) or views.get(source.removesuffix("_push"))
            if view is None:
                raise InvalidFeatureRequest(f"unable to find push source '{source}'")
            await self._write(view, data)
        except FeatureStoreError as exc:
            return error_response(exc)
        return Response(status_code=200)

    async def write_to_online_store(self, request: Request) -> Response:
        """{"feature_view_name", "df": {column: [...]}} -> 200 with body `null` (what the Feast SDK
        uses for both write_to_online_store() and push())."""
        try:
            data = _json_object(await request.body())
            name = data.get("feature_view_name")
            if not isinstance(name, str):
                raise InvalidFeatureRequest("'feature_view_name' is required: the name of a feature view")
            view = self._catalog.views().get(name)
            if view is None:
                raise UnknownView(f"no feature view named '{name}'")
            await self._write(view, data)
        except FeatureStoreError as exc:
            return error_response(exc)
        return Response(b"null", media_type="application/json")

    async def _write(self, view: FeatureView, data: Mapping[str, object]) -> None:
        df = _columns(data, "df")
        absent = [c for c in (view.entity, *(f.name for f in view.features)) if c not in df]
        if absent:
            raise InvalidFeatureRequest(f"'df' has no column {', '.join(absent)} of feature view '{view.name}'")
        await self._store.write(view, _rows(df), self._clock())

    async def health(self, request: Request) -> Response:
        """200 with an empty body when the store answers, else the 503 error."""
        try:
            await self._store.ping()
        except FeatureStoreError as exc:
            return error_response(exc)
        return Response(status_code=200)


def feature_routes(api: FeatureAPI, prefix: str = "/features") -> list[Route]:
    """The endpoints under `prefix` (use prefix="" inside a Mount)."""
    return [
        Route(f"{prefix}/get-online-features", api.get_online_features, methods=["POST"]),
        Route(f"{prefix}/push", api.push, methods=["POST"]),
        Route(f"{prefix}/write-to-online-store", api.write_to_online_store, methods=["POST"]),
        Route(f"{prefix}/health", api.health, methods=["GET"]),
    ]
