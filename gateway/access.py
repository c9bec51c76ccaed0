"""Access control at the edge: the cached token table (Keyring) and the ASGI guard that applies
gateway/authz.py's permission table to every request that is not inference (inference checks its
API key itself, in gateway/inference.py, so the hot path pays only when keys are required).

Tokens are never logged, echoed or stored: the keyring holds sha256 digests; the audit names a
caller by its token's name ("token:<name>", "token:admin-token" for the bootstrap --admin-token).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import orjson

from gateway.authz import READ_METHODS, Role, access_for, allows, bearer_token, parse_role, required_role
from gateway.errors import Forbidden, GatewayError, Unauthorized
from registry.store import RegistryStore
from registry.tokens import TokenStore
from registry.writelog import record_write

log = logging.getLogger("gateway.access")

PRINCIPAL = "gateway.principal"  # the ASGI scope key under which the guard leaves the caller
BOOTSTRAP_NAME = "admin-token"
CHALLENGE = (b"www-authenticate", b'Bearer realm="gateway"')
MLFLOW_PREFIX = "/api/2.0/"


@dataclass(frozen=True, slots=True)
class Principal:
    """A verified caller: the token's name and role (and the digest it was found by)."""

    name: str
    role: Role
    token_hash: bytes  # the raw sha256 digest

    @property
    def actor(self) -> str:
        """How the audit names this caller: never the token, only its name."""
        return f"token:{self.name}"

    def __repr__(self) -> str:
        return f"Principal(name={self.name!r}, role={self.role!r})"


def digest(token: bytes) -> bytes:
    """The raw sha256 of a token (the registry stores its hex form)."""
    return hashlib.sha256(token).digest()


class Keyring:
    """The tokens this process accepts, as an immutable {sha256 digest: Principal} map swapped whole by
    reload() (the follower calls it whenever the registry's change counter moves)."""

    def __init__(self, admin_token: str | None) -> None:
        self._bootstrap: dict[bytes, Principal] = {}
        if admin_token:
            hashed = digest(admin_token.encode())
            self._bootstrap[hashed] = Principal(BOOTSTRAP_NAME, "admin", hashed)
        self.table: Mapping[bytes, Principal] = MappingProxyType(dict(self._bootstrap))

    def reload(self, store: RegistryStore) -> None:
        """Blocking: read the active tokens from the registry and swap the table in one assignment."""
        table = dict(self._bootstrap)
        for token in TokenStore(store).active():
            try:
                hashed = bytes.fromhex(token.token_hash)
                table.setdefault(hashed, Principal(token.name, parse_role(token.role), hashed))
            except ValueError:  # the schema's constraints make this unreachable; never fail open
                log.error("token %s has an unknown role or a malformed hash and is ignored", token.name)
        self.table = MappingProxyType(table)

    def verify(self, token: bytes) -> Principal | None:
        """The principal of a presented token, or None.

        Looking the token up by its sha256 is safe although the dict compares with ordinary,
        early-exit equality: a timing difference can only tell an attacker how much of sha256(guess)
        matches a stored digest, and since sha256 is preimage-resistant that brings no guess closer
        to a valid token. The final compare_digest keeps the match itself constant-time."""
        hashed = digest(token)
        found = self.table.get(hashed)
        if found is None or not hmac.compare_digest(hashed, found.token_hash):
            return None
        return found

    def authenticate(self, header: bytes | None, needed: Role) -> Principal:
        """The caller of a request with this Authorization header value, allowed `needed`.
        Raises Unauthorized (401: no bearer token, or an unknown or revoked one) or Forbidden (403:
        a valid token whose role is too low). Messages never contain the token."""
        token = bearer_token(header)
        if token is None:
            raise Unauthorized("send 'Authorization: Bearer <token>' (gateway tokens create NAME --role ROLE)")
        principal = self.verify(token)
        if principal is None:
            raise Unauthorized("the bearer token is not valid (unknown or revoked)")
        if not allows(principal.role, needed):
            raise Forbidden(f"token '{principal.name}' has role {principal.role}; this call needs {needed}")
        return principal


class PollingRefresh:
    """For a process without a registry follower (`gateway registry serve`): reload the keyring when
    a request needs a token and the registry's change counter moved, at most once per interval."""

    def __init__(self, keyring: Keyring, store: RegistryStore, interval_s: float) -> None:
        self._keyring = keyring
        self._store = store
        self._interval = interval_s
        self._checked = float("-inf")
        self._counter: int | None = None

    def _reload_if_changed(self) -> None:
        counter = self._store.change_counter()
        if counter != self._counter:
            self._keyring.reload(self._store)
            self._counter = counter

    async def __call__(self) -> None:
        now = time.monotonic()
        if now - self._checked < self._interval:
            return
        self._checked = now
        try:
            await asyncio.to_thread(self._reload_if_changed)
        except Exception as exc:  # registry down: keep the last table (a revoke made meanwhile waits)
            log.warning("token table not refreshed: %s", exc)


Scope = dict[str, Any]
ASGIApp = Callable[[Any, Any, Any], Awaitable[None]]


class WriteAuditor:
    """Records every write request that succeeded (authz classes deployer and admin: MLflow writes,
    artifact uploads, /admin writes, feature pushes) in the registry's write_audit table, before its
    response starts: a write the caller saw acknowledged has its row. `store` is set once the registry
    is open; with access control off the actor is "local"."""

    def __init__(self, store: RegistryStore | None = None) -> None:
        self.store = store

    def wrap(self, scope: Any, send: Any) -> Any:
        async def audited_send(message: Any) -> None:
            store = self.store
            if message["type"] == "http.response.start" and message["status"] < 400 and store is not None:
                method, path, status = scope["method"], scope["path"], message["status"]
                try:
                    await asyncio.to_thread(record_write, store, actor_of(scope), method, path, status)
                except Exception as exc:  # the write itself is done; say loudly that its audit row is not
                    log.error("write audit not recorded for %s %s (%d): %s", method, path, status, exc)
            await send(message)

        return audited_send


class AccessGuard:
    """ASGI middleware: each request needs the role authz.py's table gives it. Denials answer in the
    endpoint group's error shape: MLflow's {"error_code", "message"} under /api/2.0/ (the mlflow
    client raises its usual RestException), else {"error"}; 401s carry WWW-Authenticate."""

    def __init__(self, app: ASGIApp, keyring: Keyring, *, enabled: bool, require_api_key: bool,
                 refresh: Callable[[], Awaitable[None]] | None = None, auditor: WriteAuditor | None = None) -> None:
        self.app = app
        self.keyring = keyring
        self.enabled = enabled
        self.require_api_key = require_api_key
        self.refresh = refresh
        self.auditor = auditor

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        access = access_for(scope["method"], scope["path"])
        if self.auditor is not None and scope["method"] not in READ_METHODS and access in ("deployer", "admin"):
            send = self.auditor.wrap(scope, send)
        if self.enabled:
            needed = required_role(access, self.require_api_key)
            if needed is not None:
                if self.refresh is not None:
                    await self.refresh()
                header = next((v for k, v in scope["headers"] if k == b"authorization"), None)
                try:
                    scope[PRINCIPAL] = self.keyring.authenticate(header, needed)
                except GatewayError as exc:
                    await _deny(send, scope["path"], exc)
                    return
        await self.app(scope, receive, send)


def actor_of(scope: Mapping[str, Any]) -> str:
    """The audit's name for the caller of a request the guard let through ("local" with access control off)."""
    principal: Principal | None = scope.get(PRINCIPAL)
    return principal.actor if principal is not None else "local"


async def _deny(send: Any, path: str, exc: GatewayError) -> None:
    status = 401 if isinstance(exc, Unauthorized) else 403
    if path.startswith(MLFLOW_PREFIX):
        code = "UNAUTHENTICATED" if status == 401 else "PERMISSION_DENIED"
        body = orjson.dumps({"error_code": code, "message": exc.message})
    else:
        body = orjson.dumps({"error": exc.message})
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    if status == 401:
        headers.append(CHALLENGE)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
