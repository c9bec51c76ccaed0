"""The online store seam: a small Protocol, its options, and open_online_store(url), which picks the
backend by URL scheme from a lazily imported table (so the embedded default never imports redis)."""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Protocol
from urllib.parse import urlsplit

from featurestore.codec import FeatureStatus, ReadResult
from featurestore.views import FeatureView, ReadPlan

__all__ = ["BACKENDS", "FeatureStatus", "OnlineStore", "ReadResult", "StoreOptions", "open_online_store"]


@dataclass(frozen=True, slots=True)
class StoreOptions:
    """Timeouts and sizes of a networked store (the memory store ignores them).

    `read_timeout_s` bounds one coalesced read (connect included): past it the read fails with
    OnlineStoreUnavailable instead of waiting. Writes and pings get `write_timeout_s`."""

    read_timeout_s: float = 0.05
    write_timeout_s: float = 5.0
    connect_timeout_s: float = 0.5
    max_connections: int = 64

    def __post_init__(self) -> None:
        for name in ("read_timeout_s", "write_timeout_s", "connect_timeout_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        if self.max_connections < 1:
            raise ValueError(f"max_connections must be >= 1, got {self.max_connections}")


class OnlineStore(Protocol):
    """Where feature rows live. Every method may raise OnlineStoreUnavailable."""

    async def read(self, plan: ReadPlan, entity_keys: Sequence[Mapping[str, object]], now_ms: int) -> ReadResult:
        """The plan's features for each entity row (a mapping holding the plan's join keys), with
        defaults, missing mask and statuses; TTLs are checked against `now_ms` (epoch ms).
        Raises InvalidFeatureRequest for a row without a join key or with an unusable key."""
        ...

    async def write(self, view: FeatureView, rows: Sequence[Mapping[str, object]], now_ms: int) -> int:
        """Write whole rows (join key, features, optional `event_timestamp`, else `now_ms`); a feature
        absent from a row is written as null. Returns the number of rows written."""
        ...

    async def ping(self) -> None:
        """Return when the store answers; raise OnlineStoreUnavailable otherwise."""
        ...

    async def close(self) -> None: ...


BACKENDS: Final[Mapping[str | None, str]] = {
    None: "featurestore.memory_store:MemoryOnlineStore",
    "memory": "featurestore.memory_store:MemoryOnlineStore",
    "redis": "featurestore.redis_store:RedisOnlineStore",
    "rediss": "featurestore.redis_store:RedisOnlineStore",
    "unix": "featurestore.redis_store:RedisOnlineStore",
}


def open_online_store(url: str | None, options: StoreOptions | None = None) -> OnlineStore:
    """The backend for `url`: None or "memory://" -> in-process MemoryOnlineStore; "redis://",
    "rediss://" or "unix://" -> RedisOnlineStore. Connects lazily (call `ping()` to check).
    Raises ValueError for another scheme."""
    scheme = urlsplit(url).scheme.lower() if url else None
    target = BACKENDS.get(scheme)
    if target is None:
        schemes = ", ".join(f"{s}://" for s in BACKENDS if s)
        raise ValueError(f"online store URL {url!r}: unsupported scheme (expected {schemes}, or none for memory)")
    module, _, name = target.partition(":")
    cls = getattr(importlib.import_module(module), name)
    store: OnlineStore = cls(url or "memory://", options or StoreOptions())
    return store
