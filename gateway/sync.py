"""Registry follower: notices registry changes by a counter, loads what routes now need off the
request path, then swaps the route snapshot in one assignment."""

from __future__ import annotations

import asyncio
import logging
from types import MappingProxyType

from gateway.dataplane import DataPlane, RouteSnapshot
from gateway.models import LoadedModel
from registry.entities import ModelVersion
from registry.errors import RegistryError, ResourceDoesNotExist
from registry.store import RegistryStore

log = logging.getLogger("gateway.sync")


def _desired_versions(store: RegistryStore) -> dict[str, ModelVersion | None]:
    """Blocking: every registered model is a route serving champion > Production > newest."""
    desired: dict[str, ModelVersion | None] = {}
    for model in store.list_registered_models():
        try:
            desired[model.name] = store.resolve_serving_version(model.name)
        except ResourceDoesNotExist:  # deleted between the two reads
            continue
    return desired


class RegistryFollower:
    """Keeps a DataPlane's snapshot in step with the registry. `ready` is set after the first sync."""

    def __init__(self, store: RegistryStore, dataplane: DataPlane, poll_interval_s: float) -> None:
        self._store = store
        self._dataplane = dataplane
        self._interval = poll_interval_s
        self._counter: int | None = None
        self.ready = asyncio.Event()
        self.last_error: str | None = None

    async def sync_once(self) -> None:
        """Read the counter first, so a change made during this sync triggers the next one."""
        counter = await asyncio.to_thread(self._store.change_counter)
        desired = await asyncio.to_thread(_desired_versions, self._store)
        pool = self._dataplane.pool
        current = self._dataplane.snapshot.serving
        serving: dict[str, LoadedModel] = {}
        unavailable: dict[str, str] = {}
        for route, mv in desired.items():
            if mv is None:
                unavailable[route] = "it has no versions"
                continue
            failure = pool.failures.get((mv.name, mv.version))
            if failure is None:
                try:
                    serving[route] = await pool.load(mv)
                    continue
                except Exception as exc:
                    failure = str(exc)
            previous = current.get(route)
            if previous is not None:  # a bad version never replaces a good one
                log.error("%s: version %d failed to load, still serving v%d: %s", route, mv.version, previous.version, failure)
                serving[route] = previous
            else:
                unavailable[route] = f"version {mv.version} failed to load: {failure}"
        self._dataplane.swap(RouteSnapshot(MappingProxyType(serving), MappingProxyType(unavailable)))
        keep = {(m.name, m.version) for m in serving.values()} | self._dataplane.pinned
        for model in pool.loaded():
            if (model.name, model.version) not in keep:
                pool.unload(model.name, model.version)
        self._counter = counter
        self.ready.set()

    async def run(self) -> None:
        """Sync now, then poll the change counter forever; a registry outage keeps the last snapshot."""
        while True:
            try:
                if self._counter is None or await asyncio.to_thread(self._store.change_counter) != self._counter:
                    await self.sync_once()
                if self.last_error is not None:
                    log.info("registry reachable again")
                self.last_error = None
            except RegistryError as exc:
                if self.last_error is None:
                    log.warning("registry unavailable, serving the last known routes: %s", exc)
                self.last_error = str(exc)
            except Exception as exc:  # a bug must not stop the follower; the next change retries
                log.exception("registry sync failed")
                self.last_error = str(exc)
            await asyncio.sleep(self._interval)
