"""Protocol-neutral serving: resolve a route (picking an arm) or a version to a loaded model, and run
it. Knows no HTTP.

The route map is an immutable snapshot swapped whole by the registry follower (gateway/sync.py), so
a request reads one reference and takes no lock: it sees the old table or the new one, never a mix.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any
from urllib.parse import quote

import numpy as np
import numpy.typing as npt

from gateway.batching import Tap
from gateway.errors import RouteNotFound, Unavailable, VersionNotFound
from gateway.features import FeatureBinding
from gateway.models import LoadedModel, ModelPool
from gateway.routing import CompiledRoute, RoutePolicy, compile_route
from gateway.watch import DriftWatch
from monitoring.metrics import GatewayMetrics, RequestObserver
from registry.entities import ModelVersion
from registry.errors import ResourceDoesNotExist
from registry.store import RegistryStore

DEFAULT_ARM = "default"  # the arm label of a route with no stored policy
DIRECT_ARM = "direct"  # the arm label of /versions/{v} requests


@dataclass(frozen=True, slots=True, eq=False)
class Arm:
    """One compiled arm: its model and everything a response or a metric needs, built once."""

    model: LoadedModel
    label: str
    raw_headers: tuple[tuple[bytes, bytes], ...]  # x-gateway-model, -model-version, -arm, as ASGI sends them
    v1: RequestObserver
    v2: RequestObserver
    features: FeatureBinding | None = None  # the version declares input features: fetch them per request
    drift: DriftWatch | None = None  # the version has reference profiles: count served inputs
    tap: Tap | None = None  # drift.batch_tap: what model.infer hands the batcher


@dataclass(frozen=True, slots=True, eq=False)
class ShadowTarget:
    """Where a sampled copy goes: a loaded model, or a remote v2 infer URL."""

    label: str
    model: LoadedModel | None = None
    url: str | None = None


Route = CompiledRoute[Arm, ShadowTarget]


def header_value(text: str) -> bytes:
    """A response header value: printable ASCII as is, anything else percent-encoded (registry names
    are already restricted; this keeps gateway/respond.py's unchecked single write safe regardless)."""
    return text.encode() if text.isascii() and text.isprintable() else quote(text, safe="").encode()


def make_arm(
    route: str, label: str, model: LoadedModel, metrics: GatewayMetrics,
    features: FeatureBinding | None = None, drift: DriftWatch | None = None,
) -> Arm:
    version = model.version_str
    return Arm(
        features=features,
        drift=drift,
        tap=drift.batch_tap if drift is not None else None,
        model=model,
        label=label,
        raw_headers=(
            (b"x-gateway-model", header_value(model.name)),
            (b"x-gateway-model-version", header_value(version)),
            (b"x-gateway-arm", header_value(label)),
        ),
        v1=metrics.for_request(route, label, version, "v1", tapped=label != DIRECT_ARM),
        v2=metrics.for_request(route, label, version, "v2", tapped=label != DIRECT_ARM),
    )


def default_route(
    name: str, model: LoadedModel, metrics: GatewayMetrics,
    features: FeatureBinding | None = None, drift: DriftWatch | None = None,
) -> Route:
    """A route with no stored policy: one arm on the version the registry resolves as serving."""
    policy = RoutePolicy.default(model.name)
    return compile_route(name, policy, [make_arm(name, DEFAULT_ARM, model, metrics, features, drift)], [])


@dataclass(frozen=True, slots=True)
class RouteSnapshot:
    """What each route serves now, and why the routes that serve nothing don't."""

    routes: Mapping[str, Route] = field(default_factory=lambda: MappingProxyType({}))
    unavailable: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))


class DataPlane:
    """Resolves `{name}` (a route) or `{name}/versions/{v}` (a version) to an Arm."""

    def __init__(self, store: RegistryStore, pool: ModelPool, metrics: GatewayMetrics) -> None:
        self.store = store
        self.pool = pool
        self.metrics = metrics
        self.snapshot = RouteSnapshot()
        self.pinned: set[tuple[str, int]] = set()  # versions loaded because a caller addressed them directly
        self._direct: dict[tuple[str, int], Arm] = {}
        self.random = random.random  # bound once: the per-request draw for weighted picks
        # set by the registry follower: the feature binding of a version addressed directly
        self.bind: Callable[[ModelVersion, LoadedModel], Awaitable[dict[str, Any]]] | None = None

    def swap(self, snapshot: RouteSnapshot) -> None:
        self.snapshot = snapshot

    def route(self, name: str) -> Route:
        """The compiled route. Raises RouteNotFound, or Unavailable when nothing could be loaded."""
        route = self.snapshot.routes.get(name)
        if route is not None:
            return route
        reason = self.snapshot.unavailable.get(name)
        if reason is not None:
            raise Unavailable(f"model '{name}' is not available: {reason}")
        raise RouteNotFound(f"Request for unknown model: '{name}' is not found")

    def pick(self, route: Route, key: bytes | None) -> Arm:
        return route.arms[route.pick(key, self.random())]

    def shadows_for(self, route: Route, arm: Arm) -> list[ShadowTarget]:
        """The sampled shadows of one answered request, less any shadow of the version that answered it
        (a rollout mirrors its stable version on the candidate arm only this way)."""
        draw = self.random
        return [s for s in route.sampled_shadows([draw() for _ in route.shadows]) if s.model is not arm.model]

    async def version(self, name: str, version: str) -> Arm:
        """A version addressed directly; loaded on first use (off the loop) and kept while pinned."""
        if not version.isdigit():
            raise VersionNotFound(f"model '{name}' has no version '{version}' (versions are positive integers)")
        number = int(version)
        arm = self._direct.get((name, number))
        if arm is not None and self.pool.get(name, number) is arm.model:
            return arm
        mv = await self._model_version(name, number)
        model = self.pool.get(name, number) or await self._load_version(mv)
        bindings = await self.bind(mv, model) if self.bind is not None else {}
        arm = make_arm(name, DIRECT_ARM, model, self.metrics, **bindings)
        self._direct[(name, number)] = arm
        return arm

    async def _model_version(self, name: str, number: int) -> ModelVersion:
        try:
            return await asyncio.to_thread(self.store.get_model_version, name, number)
        except ResourceDoesNotExist as exc:
            known = any(r.policy.model == name for r in self.snapshot.routes.values()) or name in self.snapshot.unavailable
            if not known:
                raise RouteNotFound(f"Request for unknown model: '{name}' is not found") from exc
            raise VersionNotFound(f"model '{name}' has no version {number}") from exc

    async def _load_version(self, mv: ModelVersion) -> LoadedModel:
        failure = self.pool.failures.get((mv.name, mv.version))
        if failure is not None:
            raise Unavailable(f"model '{mv.name}' version {mv.version} failed to load: {failure}")
        try:
            model = await self.pool.load(mv)
        except Exception as exc:
            raise Unavailable(f"model '{mv.name}' version {mv.version} failed to load: {exc}") from exc
        self.pinned.add((mv.name, mv.version))
        return model


def sticky_key_of(value: Any) -> bytes | None:
    """The bytes a sticky split hashes: strings as UTF-8, numbers by their decimal text, arrays by
    their first element (an entity field sent as a tensor)."""
    if isinstance(value, np.ndarray):
        if value.size == 0:
            return None
        value = value.reshape(-1)[0]
        if isinstance(value, np.generic):
            value = value.item()
    if isinstance(value, bytes):
        return value
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, str | int):
        return str(value).encode()
    if isinstance(value, float) and value.is_integer():
        return str(int(value)).encode()
    return str(value).encode()


def without_input(inputs: Mapping[str, npt.NDArray[Any]], name: str) -> dict[str, npt.NDArray[Any]]:
    return {k: v for k, v in inputs.items() if k != name}
