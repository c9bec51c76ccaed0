"""/admin/routes and /admin/audit: policy validation against the registry, writes audited by the
caller's token name, and an immediate local resync (other replicas poll). Who may call what is
decided before these handlers run (gateway/access.py AccessGuard, table in gateway/authz.py)."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from featurestore.views import FeatureView
from gateway.access import actor_of
from gateway.dataplane import DataPlane, Route
from gateway.errors import InvalidInput, InvalidPolicy, NotFound, RouteNotFound
from gateway.rollouts import RolloutConflict, RolloutDriver, abort, prepare, rollout_view
from gateway.routing import PolicyError, RoutePolicy, check_shadows_distinct
from gateway.sync import RegistryFollower
from registry.errors import RegistryError, ResourceAlreadyExists, ResourceDoesNotExist
from registry.lineage import lineage
from registry.rollouts import RolloutStore
from registry.serving import ServingMetadata
from registry.store import RegistryStore

JSON = "application/json"
MAX_POLICY_BYTES = 64 * 1024


def validate_policy(store: RegistryStore, spec: object) -> RoutePolicy:
    """Blocking: parse `spec` and check it against the registry. Raises InvalidPolicy naming the field."""
    try:
        policy = RoutePolicy.parse(spec)
    except PolicyError as exc:
        raise InvalidPolicy(str(exc)) from exc
    try:
        store.get_registered_model(policy.model)
    except ResourceDoesNotExist as exc:
        raise InvalidPolicy(f"model: '{policy.model}' is not a registered model") from exc

    def resolve(where: str, ref: str) -> int:
        try:
            return store.resolve_version_ref(policy.model, ref).version
        except RegistryError as exc:
            raise InvalidPolicy(f"{where}.version: '{ref}' does not name a version of '{policy.model}' ({exc})") from exc

    arms = [resolve(f"arms[{i}]", arm.version) for i, arm in enumerate(policy.arms)]
    shadows = [
        resolve(f"shadows[{i}]", s.version) if s.version is not None else None for i, s in enumerate(policy.shadows)
    ]
    try:
        check_shadows_distinct(policy, arms, shadows)
    except PolicyError as exc:
        raise InvalidPolicy(str(exc)) from exc
    return policy


def describe_route(route: Route) -> dict[str, Any]:
    """What this replica serves for a route now: each arm's resolved version and weight, and shadows."""
    return {
        "model": route.policy.model,
        "split": route.split,
        "arms": [
            {"arm": arm.label, "version": arm.model.version_str, "weight": spec.weight}
            for arm, spec in zip(route.arms, route.policy.arms, strict=True)
        ],
        "shadows": [
            {"shadow": target.label, "version": target.model.version_str if target.model else None,
             "url": target.url, "sample": sample}
            for target, sample in zip(route.shadows, route.shadow_samples, strict=True)
        ],
    }


async def _json_body(request: Request, what: str) -> object:
    """The request's JSON document, bounded in size. Raises InvalidInput (400)."""
    body = await request.body()
    if len(body) > MAX_POLICY_BYTES:
        raise InvalidInput(f"{what} body exceeds {MAX_POLICY_BYTES} bytes")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"{what} body is not valid JSON: {exc}") from exc


def _json(body: object, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type=JSON)


class Admin:
    """Handlers for the admin API; `attach` hands them the registry once the lifespan opened it."""

    store: RegistryStore
    dataplane: DataPlane
    follower: RegistryFollower
    rollouts: RolloutDriver | None = None  # set by the lifespan: woken when a rollout starts here

    def attach(self, store: RegistryStore, dataplane: DataPlane, follower: RegistryFollower) -> None:
        self.store = store
        self.dataplane = dataplane
        self.follower = follower

    async def list_routes(self, request: Request) -> Response:
        stored = {r.name: r for r in await asyncio.to_thread(self.store.list_routes)}
        served = self.dataplane.snapshot.routes
        names = sorted(set(stored) | set(served) | set(self.dataplane.snapshot.unavailable))
        return _json({"routes": [self._view(name, stored.get(name)) for name in names]})

    async def get_route(self, request: Request) -> Response:
        name = request.path_params["name"]
        try:
            record = await asyncio.to_thread(self.store.get_route, name)
        except ResourceDoesNotExist:
            record = None
        if record is None and name not in self.dataplane.snapshot.routes and name not in self.dataplane.snapshot.unavailable:
            raise RouteNotFound(f"route '{name}' does not exist")
        return _json(self._view(name, record))

    def _view(self, name: str, record: Any) -> dict[str, Any]:
        route = self.dataplane.snapshot.routes.get(name)
        return {
            "name": name,
            "policy": record.policy if record is not None else None,
            "updated_ms": record.updated_ms if record is not None else None,
            "updated_by": record.updated_by if record is not None else None,
            "serving": describe_route(route) if route is not None else None,
            "unavailable": self.dataplane.snapshot.unavailable.get(name),
        }

    async def put_route(self, request: Request) -> Response:
        actor = actor_of(request.scope)
        name = request.path_params["name"]
        spec = await _json_body(request, "policy")
        policy = await asyncio.to_thread(validate_policy, self.store, spec)
        await asyncio.to_thread(self.store.put_route, name, policy.model, policy.to_dict(), actor)
        self.dataplane.metrics.route_changes.labels(name, "put").inc()
        await self.follower.sync_once()  # this replica applies it now; the others within a poll interval
        return await self.get_route(request)

    async def delete_route(self, request: Request) -> Response:
        actor = actor_of(request.scope)
        name = request.path_params["name"]
        try:
            await asyncio.to_thread(self.store.delete_route, name, actor)
        except ResourceDoesNotExist as exc:
            raise RouteNotFound(f"route '{name}' has no stored policy") from exc
        self.dataplane.metrics.route_changes.labels(name, "delete").inc()
        await self.follower.sync_once()
        return _json({"name": name, "deleted": True})

    async def lineage(self, request: Request) -> Response:
        """A served version -> its training run -> the datasets it was trained on."""
        version = request.path_params["version"]
        if not version.isdigit():
            raise InvalidInput(f"version: expected a positive integer, got {version!r}")
        chain = await asyncio.to_thread(lineage, self.store, request.path_params["model"], int(version))
        return _json(chain)

    async def list_feature_views(self, request: Request) -> Response:
        records = await asyncio.to_thread(ServingMetadata(self.store).list_feature_views)
        return _json({"views": [r.to_dict() for r in records]})

    async def put_feature_view(self, request: Request) -> Response:
        """Validate with the feature store's own rules, store it (audited by actor), resync now."""
        actor = actor_of(request.scope)
        name = request.path_params["name"]
        spec = await _json_body(request, "feature view")
        view = FeatureView.from_dict(name, spec)  # InvalidFeatureView -> 422
        record = await asyncio.to_thread(ServingMetadata(self.store).put_feature_view, name, view.to_dict(), actor)
        await self.follower.sync_once()
        return _json(record.to_dict())

    async def audit(self, request: Request) -> Response:
        route = request.query_params.get("route")
        limit_text = request.query_params.get("limit", "100")
        if not limit_text.isdigit():
            raise InvalidInput(f"limit: expected a positive integer, got {limit_text!r}")
        entries = await asyncio.to_thread(self.store.list_audit, route, int(limit_text))
        return _json({"entries": [e.to_dict() for e in entries]})


    # --- guarded rollouts (gateway/rollouts.py drives them) ---

    async def list_rollouts(self, request: Request) -> Response:
        records = await asyncio.to_thread(RolloutStore(self.store).list_rollouts)
        return _json({"rollouts": [
            {"name": r.name, "model": r.model, "state": r.status, "step": r.state.get("step"),
             "weight": r.state.get("weight", 0), "candidate": r.state.get("candidate"), "stable": r.state.get("stable"),
             "updated_ms": r.updated_ms} for r in records]})

    async def get_rollout(self, request: Request) -> Response:
        return _json(await asyncio.to_thread(self._rollout_view, request.path_params["name"]))

    def _rollout_view(self, name: str) -> dict[str, Any]:
        rollouts = RolloutStore(self.store)
        try:
            record = rollouts.get(name)
        except ResourceDoesNotExist as exc:
            raise NotFound(f"rollout '{name}' does not exist") from exc
        return rollout_view(record, rollouts.events(name), rollouts.lease(name))

    async def put_rollout(self, request: Request) -> Response:
        """Validate and store a rollout in state "pending"; a replica's driver starts it within a tick."""
        actor = actor_of(request.scope)
        name = request.path_params["name"]
        body = await _json_body(request, "rollout")
        try:
            spec, state = await asyncio.to_thread(prepare, self.store, name, body)
            await asyncio.to_thread(RolloutStore(self.store).create, name, spec.model, spec.to_dict(), state, actor)
        except (RolloutConflict, ResourceAlreadyExists) as exc:
            return _json({"error": exc.message}, 409)
        if self.rollouts is not None:
            self.rollouts.wake()
        return _json(await asyncio.to_thread(self._rollout_view, name), 201)

    async def delete_rollout(self, request: Request) -> Response:
        """Abort: the route goes back to its original policy (0% candidate) at once."""
        actor = actor_of(request.scope)
        name = request.path_params["name"]
        try:
            await asyncio.to_thread(abort, self.store, name, actor)
        except ResourceDoesNotExist as exc:
            raise NotFound(f"rollout '{name}' does not exist") from exc
        except RolloutConflict as exc:
            return _json({"error": exc.message}, 409)
        self.dataplane.metrics.rollout_steps.labels(name, "aborted").inc()
        await self.follower.sync_once()
        if self.rollouts is not None:
            self.rollouts.wake()
        return _json(await asyncio.to_thread(self._rollout_view, name))

