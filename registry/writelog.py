"""The write audit: who wrote what through the HTTP APIs, and when (table write_audit in schema.py)."""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from registry.schema import write_audit
from registry.store import RegistryStore
from registry.versions import now_ms

MAX_PATH = 512


@dataclass(frozen=True, slots=True)
class WriteRecord:
    at_ms: int
    actor: str
    method: str
    path: str
    status: int


def record_write(store: RegistryStore, actor: str, method: str, path: str, status: int) -> None:
    """Blocking: append one row (paths are cut at 512 characters; query strings are never passed in)."""
    with store.transaction(write=True) as conn:
        conn.execute(sa.insert(write_audit).values(
            at_ms=now_ms(), actor=actor, method=method[:8], path=path[:MAX_PATH], status=status,
        ))


def recent_writes(store: RegistryStore, limit: int = 100) -> list[WriteRecord]:
    """Blocking: the newest `limit` rows, newest first."""
    with store.transaction() as conn:
        rows = conn.execute(sa.select(write_audit).order_by(write_audit.c.id.desc()).limit(limit)).all()
    return [WriteRecord(r.at_ms, r.actor, r.method, r.path, r.status) for r in rows]
