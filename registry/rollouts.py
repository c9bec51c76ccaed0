"""Guarded rollouts in the registry: their state, the lease that lets one replica drive each, and an
append-only event history. SQLAlchemy Core over RegistryStore's engine, SQLite and PostgreSQL alike.

A driver's write (route policy, aliases, state, event) is one transaction fenced by its lease: it
renews the lease first and writes nothing when another replica holds it, or when the rollout is no
longer active (an abort got in first). Route and alias changes bump the change counter, so every
replica's follower picks them up; state and lease writes do not (followers need neither).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from registry import routes
from registry.dialects import dialect_insert
from registry.errors import RegistryError, ResourceAlreadyExists, ResourceDoesNotExist
from registry.schema import model_aliases, rollout_events, rollout_leases, rollouts
from registry.store import RegistryStore, _bump_counter
from registry.versions import check_name, now_ms, one_version

ACTIVE = ("pending", "shadow", "stepping")
FINISHED = ("promoted", "rolled_back", "aborted")
EVENTS_MAX = 1000


class LeaseLost(RegistryError):
    """Another replica holds the rollout's lease, or it expired and was taken: write nothing."""


class RolloutInactive(RegistryError):
    """The rollout is not active any more (finished or aborted elsewhere): write nothing."""


@dataclass(frozen=True, slots=True)
class RolloutRecord:
    name: str
    model: str
    spec: dict[str, Any]
    status: str
    state: dict[str, Any]
    created_ms: int
    updated_ms: int
    updated_by: str

    @property
    def active(self) -> bool:
        return self.status in ACTIVE


@dataclass(frozen=True, slots=True)
class RolloutEvent:
    id: int
    rollout: str
    action: str
    actor: str
    at_ms: int
    detail: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "action": self.action, "actor": self.actor, "at_ms": self.at_ms, **self.detail}


@dataclass(frozen=True, slots=True)
class Lease:
    holder: str
    expires_ms: int


@dataclass(frozen=True, slots=True)
class Change:
    """One step of a rollout as one transaction: its new status and state, the event to append, and
    optionally the route policy to store (`route_policy`; None with `delete_route` removes it) and
    aliases to point at versions."""

    status: str
    state: dict[str, Any]
    action: str
    detail: dict[str, Any] = field(default_factory=dict)
    route_policy: dict[str, Any] | None = None
    delete_route: bool = False
    aliases: tuple[tuple[str, int], ...] = ()


def _dumps(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), allow_nan=False)


def _record(row: sa.Row[Any]) -> RolloutRecord:
    return RolloutRecord(row.name, row.model, json.loads(row.spec), row.status, json.loads(row.state),
                         row.created_ms, row.updated_ms, row.updated_by)


class RolloutStore:
    """Blocking; each method is one transaction (run them in a thread)."""

    def __init__(self, store: RegistryStore) -> None:
        self.store = store

    # --- reads ---

    def get(self, name: str) -> RolloutRecord:
        check_name(name, "rollout")
        with self.store.transaction() as conn:
            row = conn.execute(sa.select(rollouts).where(rollouts.c.name == name)).first()
        if row is None:
            raise ResourceDoesNotExist(f"Rollout {name!r} does not exist")
        return _record(row)

    def list_rollouts(self, *, active_only: bool = False) -> list[RolloutRecord]:
        query = sa.select(rollouts).order_by(rollouts.c.name)
        if active_only:
            query = query.where(rollouts.c.status.in_(ACTIVE))
        with self.store.transaction() as conn:
            return [_record(row) for row in conn.execute(query)]

    def events(self, name: str, limit: int = 100) -> list[RolloutEvent]:
        """The newest `limit` events of a rollout, oldest first."""
        limit = max(1, min(limit, EVENTS_MAX))
        query = (sa.select(rollout_events).where(rollout_events.c.rollout == name)
                 .order_by(rollout_events.c.id.desc()).limit(limit))
        with self.store.transaction() as conn:
            rows = conn.execute(query).all()
        return [RolloutEvent(r.id, r.rollout, r.action, r.actor, r.at_ms, json.loads(r.detail)) for r in reversed(rows)]

    def lease(self, name: str) -> Lease | None:
        with self.store.transaction() as conn:
            row = conn.execute(sa.select(rollout_leases).where(rollout_leases.c.name == name)).first()
        return Lease(row.holder, row.expires_ms) if row is not None else None

    # --- writes ---

    def create(self, name: str, model: str, spec: dict[str, Any], state: dict[str, Any], actor: str) -> RolloutRecord:
        """Store a new rollout in status "pending" (a driver starts it), replacing a finished one of the
        same name. Raises ResourceAlreadyExists while one of that name is active."""
        check_name(name, "rollout")
        routes.check_actor(actor)
        now = now_ms()
        with self.store.transaction(write=True) as conn:
            _bump_counter(conn)  # serialises with drivers' writes; followers find nothing else changed
            old = conn.execute(sa.select(rollouts.c.status).where(rollouts.c.name == name)).first()
            if old is not None and old.status in ACTIVE:
                raise ResourceAlreadyExists(f"Rollout {name!r} is already {old.status}: abort it first")
            conn.execute(sa.delete(rollouts).where(rollouts.c.name == name))
            conn.execute(sa.delete(rollout_leases).where(rollout_leases.c.name == name))
            conn.execute(sa.insert(rollouts).values(
                name=name, model=model, spec=_dumps(spec), status="pending", state=_dumps(state),
                created_ms=now, updated_ms=now, updated_by=actor))
            _event(conn, name, "create", actor, now, {"spec": spec})
        return RolloutRecord(name, model, spec, "pending", state, now, now, actor)

    def acquire(self, name: str, holder: str, ttl_ms: int) -> bool:
        """Take or renew the lease: true when `holder` now holds it until now + ttl_ms. A conditional
        UPDATE (held by us, or expired), else an INSERT that loses to a concurrent one."""
        now = now_ms()
        with self.store.transaction(write=True) as conn:
            if _renew(conn, name, holder, now, ttl_ms, steal=True):
                return True
            stmt = dialect_insert(conn, rollout_leases).values(name=name, holder=holder, expires_ms=now + ttl_ms)
            # RETURNING, because psycopg reports no rowcount for INSERT ... ON CONFLICT DO NOTHING.
            inserted = conn.execute(stmt.on_conflict_do_nothing(index_elements=["name"]).returning(rollout_leases.c.name))
            return inserted.first() is not None

    def release(self, name: str, holder: str) -> None:
        with self.store.transaction(write=True) as conn:
            conn.execute(sa.delete(rollout_leases).where(rollout_leases.c.name == name, rollout_leases.c.holder == holder))

    def advance(self, name: str, holder: str, ttl_ms: int, change: Change) -> None:
        """Apply one driver step atomically. Raises LeaseLost or RolloutInactive, writing nothing."""
        now = now_ms()
        actor = f"rollout:{name[:160]}@{holder}"  # within ACTOR_LENGTH
        with self.store.transaction(write=True) as conn:
            if change.route_policy is not None or change.delete_route or change.aliases:
                _bump_counter(conn)
            if not _renew(conn, name, holder, now, ttl_ms, steal=False):
                raise LeaseLost(f"rollout {name!r}: this replica ({holder}) no longer holds the lease")
            self._apply(conn, name, actor, now, change)

    def abort(self, name: str, actor: str, change: Change) -> None:
        """Apply an operator's abort (no lease needed: the driver's next write then fails as inactive)."""
        routes.check_actor(actor)
        with self.store.transaction(write=True) as conn:
            _bump_counter(conn)
            self._apply(conn, name, actor, now_ms(), change)

    def _apply(self, conn: Connection, name: str, actor: str, now: int, change: Change) -> None:
        row = conn.execute(sa.select(rollouts.c.status, rollouts.c.model).where(rollouts.c.name == name)).first()
        if row is None:
            raise ResourceDoesNotExist(f"Rollout {name!r} does not exist")
        if row.status not in ACTIVE:
            raise RolloutInactive(f"Rollout {name!r} is {row.status}")
        if change.route_policy is not None:
            routes.put_route(conn, name, row.model, change.route_policy, actor, now)
        elif change.delete_route:
            with contextlib.suppress(ResourceDoesNotExist):  # already following its model's default version
                routes.delete_route(conn, name, actor, now)
        for alias, version in change.aliases:
            one_version(conn, row.model, version)
            stmt = dialect_insert(conn, model_aliases).values(name=row.model, alias=alias, version=version)
            conn.execute(stmt.on_conflict_do_update(index_elements=["name", "alias"], set_={"version": version}))
        conn.execute(sa.update(rollouts).where(rollouts.c.name == name).values(
            status=change.status, state=_dumps(change.state), updated_ms=now, updated_by=actor))
        _event(conn, name, change.action, actor, now, change.detail)


def _renew(conn: Connection, name: str, holder: str, now: int, ttl_ms: int, *, steal: bool) -> bool:
    held = rollout_leases.c.holder == holder
    condition = sa.or_(held, rollout_leases.c.expires_ms < now) if steal else sa.and_(held, rollout_leases.c.expires_ms >= now)
    result = conn.execute(sa.update(rollout_leases).where(rollout_leases.c.name == name, condition)
                          .values(holder=holder, expires_ms=now + ttl_ms))
    return bool(result.rowcount == 1)


def _event(conn: Connection, name: str, action: str, actor: str, at_ms: int, detail: dict[str, Any]) -> None:
    conn.execute(sa.insert(rollout_events).values(rollout=name, action=action, actor=actor, at_ms=at_ms, detail=_dumps(detail)))


def holders(events: Sequence[RolloutEvent]) -> set[str]:
    """The replicas whose driver wrote these events (actor "rollout:NAME@HOLDER")."""
    return {e.actor.rsplit("@", 1)[1] for e in events if e.actor.startswith("rollout:") and "@" in e.actor}
