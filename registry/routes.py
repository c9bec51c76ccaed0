"""Route policies and their audit trail, as functions over a Connection in the caller's transaction.

RegistryStore opens that transaction, checks names, and bumps the change counter before calling a mutation.
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from registry.entities import AuditAction, AuditEntry, RouteRecord
from registry.errors import InvalidParameterValue, ResourceDoesNotExist
from registry.schema import ACTOR_LENGTH, route_audit
from registry.schema import routes as route_table

POLICY_MAX_BYTES = 64 * 1024
AUDIT_LIMIT_MAX = 10_000


# --- validation (pure) -------------------------------------------------------------------------


def check_actor(actor: str) -> None:
    """An actor is 1..ACTOR_LENGTH characters without NUL (PostgreSQL text cannot hold NUL)."""
    if not actor:
        raise InvalidParameterValue("Actor cannot be empty")
    if "\x00" in actor:
        raise InvalidParameterValue("Actor contains a NUL character")
    if len(actor) > ACTOR_LENGTH:
        raise InvalidParameterValue(f"Actor is longer than {ACTOR_LENGTH} characters")


def encode_policy(policy: object) -> str:
    """`policy` as compact JSON in its own key order. Raises InvalidParameterValue unless it is a dict
    that reads back equal from JSON, in at most POLICY_MAX_BYTES bytes."""
    if not isinstance(policy, dict):
        raise InvalidParameterValue(f"Route policy must be a JSON object, got {type(policy).__name__}")
    try:
        # ASCII output (the default): \u escapes keep NUL and lone surrogates storable in PostgreSQL
        # text, and make the length in characters the length in bytes.
        encoded = json.dumps(policy, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError, RecursionError) as error:
        raise InvalidParameterValue(f"Route policy is not JSON: {error}") from None
    if len(encoded) > POLICY_MAX_BYTES:
        raise InvalidParameterValue(
            f"Route policy is {len(encoded)} bytes as JSON, over the limit of {POLICY_MAX_BYTES}"
        )
    if json.loads(encoded) != policy:  # non-string keys become strings, tuples become lists
        raise InvalidParameterValue(
            "Route policy does not read back unchanged from JSON: use string keys and lists"
        )
    return encoded


def _check_limit(limit: int) -> None:
    if not 1 <= limit <= AUDIT_LIMIT_MAX:
        raise InvalidParameterValue(f"Audit limit must be between 1 and {AUDIT_LIMIT_MAX}, got {limit}")


# --- rows -> entities --------------------------------------------------------------------------


def _decode(text: str | None) -> dict[str, Any] | None:
    return None if text is None else json.loads(text)


def _to_route(row: sa.Row[Any]) -> RouteRecord:
    return RouteRecord(
        name=row.name,
        model=row.model,
        policy=json.loads(row.policy),
        created_ms=row.created_ms,
        updated_ms=row.updated_ms,
        updated_by=row.updated_by,
    )


def _to_audit(row: sa.Row[Any]) -> AuditEntry:
    return AuditEntry(
        id=row.id,
        route=row.route,
        action=row.action,
        actor=row.actor,
        at_ms=row.at_ms,
        old_policy=_decode(row.old_policy),
        new_policy=_decode(row.new_policy),
    )


def _route_row(conn: Connection, name: str) -> sa.Row[Any] | None:
    return conn.execute(sa.select(route_table).where(route_table.c.name == name)).first()


def _missing(name: str) -> ResourceDoesNotExist:
    return ResourceDoesNotExist(f"Route {name!r} has no stored policy")


def _append_audit(
    conn: Connection,
    route: str,
    action: AuditAction,
    actor: str,
    at_ms: int,
    old: str | None,
    new: str | None,
) -> AuditEntry:
    values = {
        "route": route,
        "action": action,
        "actor": actor,
        "at_ms": at_ms,
        "old_policy": old,
        "new_policy": new,
    }
    entry_id = conn.execute(sa.insert(route_audit).values(values).returning(route_audit.c.id)).scalar_one()
    return AuditEntry(
        id=int(entry_id),
        route=route,
        action=action,
        actor=actor,
        at_ms=at_ms,
        old_policy=_decode(old),
        new_policy=_decode(new),
    )


# --- mutations (the caller has bumped the change counter) --------------------------------------


def put_route(
    conn: Connection, name: str, model: str, policy: dict[str, Any], actor: str, now_ms: int
) -> tuple[RouteRecord, AuditEntry]:
    """Create or replace route `name`'s policy, keeping its created_ms, and append a "put" audit entry
    holding the old policy (None for a new route) and the new one."""
    check_actor(actor)
    encoded = encode_policy(policy)
    old = _route_row(conn, name)
    values = {"model": model, "policy": encoded, "updated_ms": now_ms, "updated_by": actor}
    if old is None:
        conn.execute(sa.insert(route_table).values(name=name, created_ms=now_ms, **values))
    else:
        conn.execute(sa.update(route_table).where(route_table.c.name == name).values(values))
    record = RouteRecord(
        name=name,
        model=model,
        policy=json.loads(encoded),  # a copy the caller cannot change under us
        created_ms=now_ms if old is None else old.created_ms,
        updated_ms=now_ms,
        updated_by=actor,
    )
    return record, _append_audit(
        conn, name, "put", actor, now_ms, None if old is None else old.policy, encoded
    )


def delete_route(conn: Connection, name: str, actor: str, now_ms: int) -> AuditEntry:
    """Remove route `name`'s policy and append a "delete" audit entry holding the old policy.
    Raises ResourceDoesNotExist, writing nothing, when the route has no policy."""
    check_actor(actor)
    old = _route_row(conn, name)
    if old is None:
        raise _missing(name)
    conn.execute(sa.delete(route_table).where(route_table.c.name == name))
    return _append_audit(conn, name, "delete", actor, now_ms, old.policy, None)


# --- reads -------------------------------------------------------------------------------------


def get_route(conn: Connection, name: str) -> RouteRecord:
    row = _route_row(conn, name)
    if row is None:
        raise _missing(name)
    return _to_route(row)


def list_routes(conn: Connection) -> list[RouteRecord]:
    """Every stored route by name; Python's code-point order is UTF-8 byte order, as models list."""
    rows = conn.execute(sa.select(route_table)).all()
    return [_to_route(row) for row in sorted(rows, key=lambda row: str(row.name))]


def list_audit(conn: Connection, route: str | None, limit: int) -> list[AuditEntry]:
    """The newest `limit` (1..AUDIT_LIMIT_MAX) audit entries, of `route` only when given, newest first."""
    _check_limit(limit)
    query = sa.select(route_audit).order_by(route_audit.c.id.desc()).limit(limit)
    if route is not None:
        query = query.where(route_audit.c.route == route)
    return [_to_audit(row) for row in conn.execute(query)]
