"""Protocol-neutral serving: resolve a route or version to a loaded model and run it. Knows no HTTP.

The route map is an immutable snapshot swapped whole by the registry follower (gateway/sync.py), so
the request path reads one reference and takes no lock.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from gateway.errors import RouteNotFound, Unavailable, VersionNotFound
from gateway.models import LoadedModel, ModelPool
from registry.errors import ResourceDoesNotExist
from registry.store import RegistryStore


@dataclass(frozen=True, slots=True)
class RouteSnapshot:
    """What each route serves now, and why the routes that serve nothing don't."""

    serving: Mapping[str, LoadedModel] = field(default_factory=lambda: MappingProxyType({}))
    unavailable: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))


class DataPlane:
    """Resolves `{name}` (a route) or `{name}/versions/{v}` (a version) to a LoadedModel."""

    def __init__(self, store: RegistryStore, pool: ModelPool) -> None:
        self.store = store
        self.pool = pool
        self.snapshot = RouteSnapshot()
        self.pinned: set[tuple[str, int]] = set()  # versions loaded because a caller addressed them directly

    def swap(self, snapshot: RouteSnapshot) -> None:
        self.snapshot = snapshot

    def route(self, name: str) -> LoadedModel:
        """The model a route serves now. Raises RouteNotFound, or Unavailable when nothing loaded."""
        model = self.snapshot.serving.get(name)
        if model is not None:
            return model
        reason = self.snapshot.unavailable.get(name)
        if reason is not None:
            raise Unavailable(f"model '{name}' is not available: {reason}")
        raise RouteNotFound(f"Request for unknown model: '{name}' is not found")

    async def version(self, name: str, version: str) -> LoadedModel:
        """A version addressed directly; loaded on first use (off the loop) and kept while pinned."""
        if not version.isdigit():
            raise VersionNotFound(f"model '{name}' has no version '{version}' (versions are positive integers)")
        number = int(version)
        model = self.pool.get(name, number)
        if model is not None:
            return model
        try:
            mv = await asyncio.to_thread(self.store.get_model_version, name, number)
        except ResourceDoesNotExist as exc:
            if name not in self.snapshot.serving and name not in self.snapshot.unavailable:
                raise RouteNotFound(f"Request for unknown model: '{name}' is not found") from exc
            raise VersionNotFound(f"model '{name}' has no version {number}") from exc
        failure = self.pool.failures.get((name, number))
        if failure is not None:
            raise Unavailable(f"model '{name}' version {number} failed to load: {failure}")
        try:
            model = await self.pool.load(mv)
        except Exception as exc:
            raise Unavailable(f"model '{name}' version {number} failed to load: {exc}") from exc
        self.pinned.add((name, number))
        return model
