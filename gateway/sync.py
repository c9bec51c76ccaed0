"""Registry follower: notices registry changes by a counter, resolves every route's arms and shadows,
loads what they need off the request path, then swaps the route snapshot in one assignment."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from featurestore.errors import FeatureStoreError
from featurestore.views import FeatureView, compile_read_plan
from gateway.access import Keyring
from gateway.dataplane import DataPlane, Route, RouteSnapshot, ShadowTarget, default_route, make_arm
from gateway.features import FeatureBinding
from gateway.models import LoadedModel
from gateway.protocol.dtypes import numpy_dtype
from gateway.routing import PolicyError, RoutePolicy, ShadowSpec, compile_route
from gateway.watch import DriftWatch, watch_for
from monitoring.collectors import DriftRegistry
from monitoring.drift import WindowPolicy
from monitoring.profiles import ProfileSet
from monitoring.sinks import CountSink, DriftFeed
from registry.entities import ModelVersion
from registry.errors import RegistryError, ResourceDoesNotExist
from registry.serving import ServingMetadata
from registry.store import RegistryStore

log = logging.getLogger("gateway.sync")


@dataclass(frozen=True, slots=True)
class VersionExtras:
    """What serving a version needs beyond its ONNX file: declared input features and the reference
    profiles of its inputs/outputs (as stored JSON), when it has them."""

    features: tuple[str, ...] | None = None
    profile: dict[str, Any] | None = None


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


@dataclass(frozen=True, slots=True)
class RegistryPlan:
    routes: dict[str, RoutePlan]
    views: dict[str, FeatureView]
    extras: dict[tuple[str, int], VersionExtras]


def plan_registry(store: RegistryStore) -> RegistryPlan:
    """Blocking: routes, feature views, and the extras of every version a route serves or mirrors."""
    meta = ServingMetadata(store)
    routes = plan_routes(store)
    views: dict[str, FeatureView] = {}
    for record in meta.list_feature_views():
        try:
            views[record.name] = FeatureView.from_dict(record.name, record.spec)
        except FeatureStoreError as exc:  # validated when stored; a bad row must not stop serving
            log.error("feature view %s is invalid and is ignored: %s", record.name, exc)
    versions = {
        (mv.name, mv.version)
        for plan in routes.values()
        for mv in (*plan.arms, *(s for s in plan.shadows if isinstance(s, ModelVersion)))
    }
    extras = {
        (name, version): VersionExtras(
            meta.get_model_features(name, version), meta.get_reference_profile(name, version)
        )
        for name, version in versions
    }
    return RegistryPlan(routes, views, extras)


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

    def __init__(
        self, store: RegistryStore, dataplane: DataPlane, poll_interval_s: float, *,
        drift: DriftRegistry | None = None, sink: CountSink | None = None, window: WindowPolicy | None = None,
        keyring: Keyring | None = None,
    ) -> None:
        self._store = store
        self._dataplane = dataplane
        self._interval = poll_interval_s
        self._drift = drift
        self._sink = sink
        self._window = window or WindowPolicy(rows=1000)
        self._keyring = keyring
        self._feeds: dict[tuple[str, int, str, WindowPolicy], DriftFeed] = {}
        self._extras: dict[tuple[str, int], VersionExtras] = {}
        self._views: dict[str, FeatureView] = {}
        self.views: Mapping[str, FeatureView] = MappingProxyType({})  # swapped whole, for the Feast API
        self._used_feeds: dict[tuple[str, int, str, WindowPolicy], DriftFeed] = {}
        dataplane.bind = self.direct_bindings
        self._counter: int | None = None
        self._lock = asyncio.Lock()  # the poller and admin writes may both ask for a sync
        self._needed: set[tuple[str, int]] = set()  # versions the current sync loads
        self.ready = asyncio.Event()
        self.last_error: str | None = None

    async def sync_once(self) -> None:
        """Read the counter first, so a change made during this sync triggers the next one."""
        async with self._lock:
            counter = await asyncio.to_thread(self._store.change_counter)
            if self._keyring is not None:  # first: a revoke applies before any slow model load
                await asyncio.to_thread(self._keyring.reload, self._store)
            registry = await asyncio.to_thread(plan_registry, self._store)
            plans, self._extras, self._views = registry.routes, registry.extras, registry.views
            self._used_feeds = {}
            self._needed = set()
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
            self.views = MappingProxyType(dict(self._views))
            if self._drift is not None:
                for route in routes.values():  # routes kept from before keep their feeds too
                    for arm in route.arms:
                        if arm.drift is not None:
                            feed = arm.drift.feed
                            self._used_feeds[(route.name, arm.model.version, feed.tracker.fingerprint, feed.tracker.policy)] = feed
                self._feeds = self._used_feeds
                self._drift.swap(self._feeds.values())
            self._unload_unused(routes)
            self._dataplane.pool.forget_fetch_failures(self._needed)
            self._counter = counter
            metrics = self._dataplane.metrics
            metrics.models_loaded.set(len(self._dataplane.pool.loaded()))
            metrics.registry_changes_applied.inc()
            metrics.registry_last_sync.set_to_current_time()
            self.ready.set()

    async def _load(self, mv: ModelVersion) -> LoadedModel:
        pool = self._dataplane.pool
        self._needed.add((mv.name, mv.version))
        failure = pool.failures.get((mv.name, mv.version))
        # A broken artifact stays broken: don't retry it on every change. A failed download is retried
        # once its backoff has passed (run() syncs then even without a registry change).
        if failure is not None and not pool.retry_due(mv.name, mv.version):
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
            mv = plan.arms[0]
            model = await self._load(mv)
            return default_route(plan.name, model, metrics, **self._bindings(plan.name, mv, model, RoutePolicy.default(mv.name)))
        policy = plan.policy
        arms = []
        for spec, mv in zip(policy.arms, plan.arms, strict=True):
            model = await self._load(mv)
            arms.append(make_arm(plan.name, spec.version, model, metrics, **self._bindings(plan.name, mv, model, policy)))
        kept_specs: list[ShadowSpec] = []
        targets: list[ShadowTarget] = []
        for shadow, resolved in zip(policy.shadows, plan.shadows, strict=True):
            label = shadow.version or shadow.url or "?"
            try:
                if isinstance(resolved, str):
                    raise RuntimeError(resolved)
                target = await self._load(resolved) if resolved is not None else None
            except Exception as exc:  # a broken shadow never takes the primary down
                log.error("route %s: shadow %s dropped: %s", plan.name, label, exc)
                continue
            kept_specs.append(shadow)
            targets.append(ShadowTarget(label=label, model=target, url=shadow.url))
        policy = dataclasses.replace(policy, shadows=tuple(kept_specs))
        return compile_route(plan.name, policy, arms, targets)

    async def direct_bindings(self, mv: ModelVersion, model: LoadedModel) -> dict[str, Any]:
        """Bindings for /versions/{v} requests: declared features with the default policy; no drift
        (windows describe routes)."""
        key = (mv.name, mv.version)
        if key not in self._extras:
            features = await asyncio.to_thread(ServingMetadata(self._store).get_model_features, mv.name, mv.version)
            self._extras[key] = VersionExtras(features, None)
        return self._bindings(mv.name, mv, model, RoutePolicy.default(mv.name), watch=False)

    def _bindings(
        self, route: str, mv: ModelVersion, model: LoadedModel, policy: RoutePolicy, *, watch: bool = True
    ) -> dict[str, Any]:
        """The feature binding and drift watch of one arm. Raises when declared features cannot be
        served (the route then keeps its previous table); a profile that does not fit only logs."""
        extras = self._extras.get((mv.name, mv.version), VersionExtras())
        features = None
        if extras.features is not None:
            if len(model.signature.inputs) != 1:
                raise RuntimeError(f"version {mv.version} declares features but has {len(model.signature.inputs)} inputs")
            spec = model.signature.inputs[0]
            plan = compile_read_plan(list(extras.features), self._views, dtype=numpy_dtype(spec.datatype))
            metrics = self._dataplane.metrics
            features = FeatureBinding(
                plan, spec.name, policy.features,
                metrics.features_defaulted.labels(route), metrics.feature_fetch_seconds.labels(route),
            )
        drift = None
        if watch and extras.profile is not None and self._drift is not None and self._sink is not None:
            try:
                drift = self._watch(route, mv, model, policy, extras.profile, features)
            except (ValueError, KeyError) as exc:
                log.error("route %s version %d: drift not watched: %s", route, mv.version, exc)
        return {"features": features, "drift": drift}

    def _watch(self, route: str, mv: ModelVersion, model: LoadedModel, policy: RoutePolicy,
               profile: dict[str, Any], features: FeatureBinding | None) -> DriftWatch:
        profiles = ProfileSet.from_dict(profile)
        window = WindowPolicy.parse(dict(policy.drift), default=self._window)
        tracker = profiles.tracker(window, route=route, model=mv.name, version=str(mv.version))
        key = (route, mv.version, tracker.fingerprint, window)
        feed = self._used_feeds.get(key) or self._feeds.get(key)
        if feed is None:
            assert self._sink is not None
            feed = DriftFeed(tracker, self._sink)
        self._used_feeds[key] = feed
        names = [name for name, _ in profiles.features]
        widths = {features.input_name: features.plan.width} if features is not None else None
        return watch_for(feed, model.signature, names, [name for name, _ in profiles.outputs], widths)

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
        """Sync now, then poll the change counter forever (and sync when a failed download is due for a
        retry); a registry outage keeps the last snapshot."""
        while True:
            try:
                if (
                    self._counter is None
                    or self._dataplane.pool.any_retry_due()
                    or await asyncio.to_thread(self._store.change_counter) != self._counter
                ):
                    await self.sync_once()
                    self._dataplane.metrics.registry_syncs.labels("ok").inc()
                self._dataplane.metrics.registry_last_sync.set_to_current_time()  # in step with the registry now
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
