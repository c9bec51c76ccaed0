"""MemoryOnlineStore: the embedded default and a contract-test backend. It keeps the exact bytes the
Redis store would (same codec), so reads, defaults, null and TTL semantics are the same."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from featurestore.codec import ReadResult, encode_rows
from featurestore.errors import OnlineStoreUnavailable
from featurestore.online import StoreOptions
from featurestore.views import FeatureView, ReadPlan


class MemoryOnlineStore:
    """A dict of hashes: key -> {field: packed value}. Keys are never expired; stale values read
    OUTSIDE_MAX_AGE by the read-time TTL check, as they do in Redis before it reclaims them."""

    def __init__(self, url: str = "memory://", options: StoreOptions | None = None) -> None:
        self._hashes: dict[bytes, dict[bytes, bytes]] = {}
        self._closed = False

    async def read(self, plan: ReadPlan, entity_keys: Sequence[Mapping[str, object]], now_ms: int) -> ReadResult:
        self._check_open()
        hashes = self._hashes
        empty: dict[bytes, bytes] = {}
        replies = [
            [h.get(f) for f in fields] for h, fields in ((hashes.get(k, empty), f) for k, f in plan.lookups(entity_keys))
        ]
        return plan.decode(replies, len(entity_keys), now_ms)

    async def write(self, view: FeatureView, rows: Sequence[Mapping[str, object]], now_ms: int) -> int:
        self._check_open()
        encoded = encode_rows(view, rows, now_ms)  # validate everything before changing anything
        for key, flat in encoded:
            self._hashes.setdefault(key, {}).update(zip(flat[::2], flat[1::2], strict=True))
        return len(encoded)

    async def ping(self) -> None:
        self._check_open()

    async def close(self) -> None:
        self._closed = True

    def _check_open(self) -> None:
        if self._closed:
            raise OnlineStoreUnavailable("the memory online store is closed")
