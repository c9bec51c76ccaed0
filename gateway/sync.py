"""Registry follower: notices registry changes by a counter, resolves every route's arms and shadows,
loads what they need off the request path, then swaps the route snapshot in one assignment."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from dataclasses import dataclass
from types import MappingProxyType

from gateway.dataplane import DataPlane, Route, RouteSnapshot, ShadowTarget, default_route, make_arm
from gateway.models import LoadedModel
from gateway.routing import PolicyError, RoutePolicy, compile_route
from registry.entities import ModelVersion
from registry.errors import RegistryError, ResourceDoesNotExist
from registry.store import RegistryStore

log = logging.getLogger("gateway.sync")


@dataclass(frozen=True, slots=True)
class RoutePlan:
    """One route as the registry describes it, refs resolved: a ModelVersion per arm and per version
    shadow (None for URL shadows), or the reason it cannot be served."""

    name: str
    policy: RoutePolicy | None  # None: no stored policy, serve the model's default version
    arms: tuple[ModelVersion, ...] = ()
    shadows: tuple[ModelVersion | str | None, ...] = ()  # str: why that shadow cannot be resolved
    error: str | None = None


def _resolve(store: RegistryStore, model: str, ref: str) -> ModelVersion:
    return store.resolve_version_ref(model, ref)


def plan_routes(store: RegistryStore) -> dict[str, RoutePlan]:
    """Blocking: every stored route, plus a default route for each model without a route of its name."""
    plans: dict[str, RoutePlan] = {}
    stored = {record.name: record for record in store.list_routes()}
    for model in store.list_registered_models():
        if model.name in stored:
            continue
        try:
            mv = store.resolve_serving_version(model.name)
        except ResourceDoesNotExist:  # deleted between the two reads
            continue
        if mv is None:
            plans[model.name] = RoutePlan(model.name, None, error="it has no versions")
        else:
            plans[model.name] = RoutePlan(model.name, None, arms=(mv,))
    for name, record in stored.items():
        try:
            policy = RoutePolicy.parse(record.policy)
            arms = tuple(_resolve(store, policy.model, arm.version) for arm in policy.arms)
        except (PolicyError, RegistryError) as exc:
            plans[name] = RoutePlan(name, None, error=str(exc))
            continue
        shadows: list[ModelVersion | str | None] = []
        for shadow in policy.shadows:
            if shadow.version is None:
                shadows.append(None)
                continue
            try:
                shadows.append(_resolve(store, policy.model, shadow.version))
            except RegistryError as exc:
                shadows.append(str(exc))
        plans[name] = RoutePlan(name, policy, arms=arms, shadows=tuple(shadows))
    return plans


class RegistryFollower:
    """Keeps a DataPlane's snapshot in step with the registry. `ready` is set after the first sync."""

    def __init__(self, store: RegistryStore, dataplane: DataPlane, poll_interval_s: float) -> None:
        self._store = store
        self._dataplane = dataplane
        self._interval = poll_interval_s
        self._counter: int | None = None
        self._lock = asyncio.Lock()  # the poller and admin writes may both ask for a sync
        self.ready = asyncio.Event()
        self.last_error: str | None = None

    async def sync_once(self) -> None:
        """Read the counter first, so a change made during this sync triggers the next one."""
        async with self._lock:
            counter = await asyncio.to_thread(self._store.change_counter)
            plans = await asyncio.to_thread(plan_routes, self._store)
            current = self._dataplane.snapshot.routes
            routes: dict[str, Route] = {}
            unavailable: dict[str, str] = {}
            for name, plan in plans.items():
                try:
                    routes[name] = await self._compile(plan)
                    continue
                except Exception as exc:
                    reason = str(exc)
                previous = current.get(name)
                if previous is not None:  # a route that cannot be compiled never replaces a good one
                    log.error("route %s: %s; still serving its previous table", name, reason)
                    routes[name] = previous
                else:
                    log.error("route %s is unavailable: %s", name, reason)
                    unavailable[name] = reason
            self._dataplane.swap(RouteSnapshot(MappingProxyType(routes), MappingProxyType(unavailable)))
            self._unload_unused(routes)
            self._counter = counter
            self._dataplane.metrics.models_loaded.set(len(self._dataplane.pool.loaded()))
            self.ready.set()

    async def _load(self, mv: ModelVersion) -> LoadedModel:
        pool = self._dataplane.pool
        failure = pool.failures.get((mv.name, mv.version))
        if failure is not None:  # a broken artifact stays broken: don't retry it on every change
            raise RuntimeError(f"version {mv.version} failed to load: {failure}")
        try:
            model = await pool.load(mv)
        except Exception as exc:
            self._dataplane.metrics.model_loads.labels(mv.name, str(mv.version), "failed").inc()
            raise RuntimeError(f"version {mv.version} failed to load: {exc}") from exc
        self._dataplane.metrics.model_loads.labels(mv.name, str(mv.version), "ok").inc()
        return model

    async def _compile(self, plan: RoutePlan) -> Route:
        if plan.error is not None:
            raise RuntimeError(plan.error)
        metrics = self._dataplane.metrics
        if plan.policy is None:
            return default_route(plan.name, await self._load(plan.arms[0]), metrics)
        policy = plan.policy
        arms = [
            make_arm(plan.name, spec.version, await self._load(mv), metrics)
            for spec, mv in zip(policy.arms, plan.arms, strict=True)
        ]
        kept_specs, targets = [], []
        for spec, resolved in zip(policy.shadows, plan.shadows, strict=True):
            label = spec.version or spec.url or "?"
            try:
                if isinstance(resolved, str):
                    raise RuntimeError(resolved)
                model = await self._load(resolved) if resolved is not None else None
            except Exception as exc:  # a broken shadow never takes the primary down
                log.error("route %s: shadow %s dropped: %s", plan.name, label, exc)
                continue
            kept_specs.append(spec)
            targets.append(ShadowTarget(label=label, model=model, url=spec.url))
        policy = dataclasses.replace(policy, shadows=tuple(kept_specs))
        return compile_route(plan.name, policy, arms, targets)

    def _unload_unused(self, routes: dict[str, Route]) -> None:
        keep = set(self._dataplane.pinned)
        for route in routes.values():
            keep.update((arm.model.name, arm.model.version) for arm in route.arms)
            keep.update((s.model.name, s.model.version) for s in route.shadows if s.model is not None)
        pool = self._dataplane.pool
        for model in pool.loaded():
            if (model.name, model.version) not in keep:
                pool.unload(model.name, model.version)

    async def run(self) -> None:
        """Sync now, then poll the change counter forever; a registry outage keeps the last snapshot."""
        while True:
            try:
                if self._counter is None or await asyncio.to_thread(self._store.change_counter) != self._counter:
                    await self.sync_once()
                    self._dataplane.metrics.registry_syncs.labels("ok").inc()
                if self.last_error is not None:
                    log.info("registry reachable again")
                self.last_error = None
            except RegistryError as exc:
                self._dataplane.metrics.registry_syncs.labels("error").inc()
                if self.last_error is None:
                    log.warning("registry unavailable, serving the last known routes: %s", exc)
                self.last_error = str(exc)
            except Exception as exc:  # a bug must not stop the follower; the next change retries
                self._dataplane.metrics.registry_syncs.labels("error").inc()
                log.exception("registry sync failed")
                self.last_error = str(exc)
            await asyncio.sleep(self._interval)
