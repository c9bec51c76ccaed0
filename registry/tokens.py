"""API tokens in the registry: create (the token is returned once and only its sha256 is stored),
list, revoke, and an audit row per change. Every write bumps the change counter, so gateways reload
their token table with their next poll."""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from registry.errors import InvalidParameterValue, ResourceAlreadyExists, ResourceDoesNotExist
from registry.routes import check_actor
from registry.schema import api_tokens, token_audit
from registry.store import RegistryStore, _bump_counter
from registry.versions import now_ms

TOKEN_ROLES = ("reader", "deployer", "admin")  # gateway/authz.py orders them
TOKEN_PREFIX = "gwt_"  # recognisable in a leaked log or a secret scanner's rules
RESERVED_NAMES = frozenset({"admin-token"})  # the audit's name for the bootstrap --admin-token
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def hash_token(token: bytes) -> str:
    """The sha256 hex digest stored for (and looked up by) a token."""
    return hashlib.sha256(token).hexdigest()


def new_token() -> str:
    """A fresh token: the prefix and 32 random bytes, URL-safe base64 (43 characters)."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def check_token_name(name: str) -> None:
    if not _NAME_RE.fullmatch(name):
        raise InvalidParameterValue(
            f"Invalid token name {name!r}: 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    if name in RESERVED_NAMES:
        raise InvalidParameterValue(f"Token name {name!r} is reserved for the --admin-token")


def check_role(role: str) -> None:
    if role not in TOKEN_ROLES:
        raise InvalidParameterValue(f"Invalid role {role!r}: use one of {', '.join(TOKEN_ROLES)}")


@dataclass(frozen=True, slots=True)
class TokenRecord:
    """A stored token, without the token: its name, role and lifetime."""

    name: str
    role: str
    created_ms: int
    created_by: str
    revoked_ms: int | None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "role": self.role, "created_ms": self.created_ms,
                "created_by": self.created_by, "revoked_ms": self.revoked_ms}


@dataclass(frozen=True, slots=True)
class ActiveToken:
    """What a gateway needs to verify a token: its hash, and the name and role it grants."""

    token_hash: str
    name: str
    role: str


@dataclass(frozen=True, slots=True)
class TokenAuditEntry:
    id: int
    token_name: str
    action: str
    role: str
    actor: str
    at_ms: int

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "token": self.token_name, "action": self.action, "role": self.role,
                "actor": self.actor, "at_ms": self.at_ms}


def _record(row: sa.Row[Any]) -> TokenRecord:
    return TokenRecord(row.name, row.role, row.created_ms, row.created_by, row.revoked_ms)


class TokenStore:
    """Token reads and writes over a RegistryStore's engine; each method is one transaction. Blocking."""

    def __init__(self, store: RegistryStore) -> None:
        self.store = store

    def create(self, name: str, role: str, actor: str) -> tuple[TokenRecord, str]:
        """Store a new token named `name` with `role`; returns its record and the token, which is
        never stored and cannot be shown again. ResourceAlreadyExists when the name is taken (revoked
        names stay taken, so the audit keeps meaning one token per name)."""
        check_token_name(name)
        check_role(role)
        check_actor(actor)
        token, now = new_token(), now_ms()
        with self.store.transaction(write=True) as conn:
            _bump_counter(conn)
            if conn.execute(sa.select(api_tokens.c.id).where(api_tokens.c.name == name)).first() is not None:
                raise ResourceAlreadyExists(f"Token {name!r} already exists")
            conn.execute(sa.insert(api_tokens).values(
                name=name, role=role, token_hash=hash_token(token.encode()), created_ms=now, created_by=actor,
            ))
            conn.execute(sa.insert(token_audit).values(token_name=name, action="create", role=role, actor=actor, at_ms=now))
        return TokenRecord(name, role, now, actor, None), token

    def revoke(self, name: str, actor: str) -> TokenRecord:
        """Mark token `name` revoked (gateways refuse it after their next poll). ResourceDoesNotExist
        when there is no such token; revoking a revoked token changes nothing and is not audited again."""
        check_actor(actor)
        now = now_ms()
        with self.store.transaction(write=True) as conn:
            _bump_counter(conn)
            row = conn.execute(sa.select(api_tokens).where(api_tokens.c.name == name)).first()
            if row is None:
                raise ResourceDoesNotExist(f"Token {name!r} does not exist")
            if row.revoked_ms is not None:
                return _record(row)
            conn.execute(sa.update(api_tokens).where(api_tokens.c.name == name).values(revoked_ms=now))
            conn.execute(sa.insert(token_audit).values(token_name=name, action="revoke", role=row.role, actor=actor, at_ms=now))
        return TokenRecord(row.name, row.role, row.created_ms, row.created_by, now)

    def list_tokens(self) -> list[TokenRecord]:
        """Every token, revoked ones included, by name."""
        with self.store.transaction() as conn:
            rows = conn.execute(sa.select(api_tokens).order_by(api_tokens.c.name)).all()
        return [_record(row) for row in rows]

    def active(self) -> list[ActiveToken]:
        """The tokens not revoked, as gateways verify them."""
        query = sa.select(api_tokens.c.token_hash, api_tokens.c.name, api_tokens.c.role).where(
            api_tokens.c.revoked_ms.is_(None)
        )
        with self.store.transaction() as conn:
            return [ActiveToken(r.token_hash, r.name, r.role) for r in conn.execute(query).all()]

    def audit(self, limit: int = 100) -> list[TokenAuditEntry]:
        """The newest `limit` (1..10000) token creates and revokes, newest first."""
        if not 1 <= limit <= 10_000:
            raise InvalidParameterValue(f"Audit limit must be between 1 and 10000, got {limit}")
        query = sa.select(token_audit).order_by(token_audit.c.id.desc()).limit(limit)
        with self.store.transaction() as conn:
            return [TokenAuditEntry(r.id, r.token_name, r.action, r.role, r.actor, r.at_ms)
                    for r in conn.execute(query).all()]
