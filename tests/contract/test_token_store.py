"""TokenStore contract (registry/tokens.py), run against SQLite and PostgreSQL, and the gateway's
Keyring reading it."""

from __future__ import annotations

import hashlib

import pytest
import sqlalchemy as sa

from gateway.access import Keyring
from gateway.errors import Forbidden, Unauthorized
from registry.errors import InvalidParameterValue, ResourceAlreadyExists, ResourceDoesNotExist
from registry.schema import api_tokens, token_audit
from registry.store import RegistryStore
from registry.tokens import TOKEN_PREFIX, TokenStore


class TestTokenStore:
    def test_create_returns_the_token_once_and_stores_only_its_hash(self, registry_store: RegistryStore) -> None:
        """The token has the prefix and 43 random characters; no column of any row holds it, the
        stored hash is its sha256, and the change counter moved."""
        before = registry_store.change_counter()
        record, token = TokenStore(registry_store).create("ci", "deployer", "cli:test")
        assert token.startswith(TOKEN_PREFIX) and len(token) == len(TOKEN_PREFIX) + 43
        assert (record.name, record.role, record.revoked_ms) == ("ci", "deployer", None)
        assert registry_store.change_counter() > before
        with registry_store.transaction() as conn:
            rows = [tuple(r) for t in (api_tokens, token_audit) for r in conn.execute(sa.select(t)).all()]
            hashes = conn.execute(sa.select(api_tokens.c.token_hash)).scalars().all()
        assert not any(token in str(value) or token[len(TOKEN_PREFIX):] in str(value) for row in rows for value in row)
        assert hashes == [hashlib.sha256(token.encode()).hexdigest()]

    def test_tokens_differ_and_names_are_unique(self, registry_store: RegistryStore) -> None:
        """Two tokens never share a value; a name is taken for good, even once revoked."""
        tokens = TokenStore(registry_store)
        _, first = tokens.create("a", "reader", "cli:test")
        _, second = tokens.create("b", "reader", "cli:test")
        assert first != second
        tokens.revoke("a", "cli:test")
        with pytest.raises(ResourceAlreadyExists):
            tokens.create("a", "admin", "cli:test")

    @pytest.mark.parametrize(("name", "role"), [
        ("", "reader"), ("has space", "reader"), ("-dash", "reader"), ("x" * 65, "reader"), ("admin-token", "admin"),
        ("ok", "root"), ("ok", "Admin"),
    ])
    def test_invalid_names_and_roles_are_refused(self, registry_store: RegistryStore, name: str, role: str) -> None:
        """Bad names, the reserved bootstrap name and unknown roles: InvalidParameterValue, nothing stored."""
        tokens = TokenStore(registry_store)
        with pytest.raises(InvalidParameterValue):
            tokens.create(name, role, "cli:test")
        assert tokens.list_tokens() == []

    def test_revoke_lists_audits_and_leaves_active(self, registry_store: RegistryStore) -> None:
        """Revoke marks the token, drops it from the active set, and both changes are audited (actor,
        name, role; a second revoke adds nothing). An unknown name is ResourceDoesNotExist."""
        tokens = TokenStore(registry_store)
        tokens.create("keep", "admin", "cli:alice")
        tokens.create("drop", "reader", "cli:alice")
        revoked = tokens.revoke("drop", "token:keep")
        tokens.revoke("drop", "token:keep")
        assert revoked.revoked_ms is not None
        assert [(r.name, r.revoked_ms is None) for r in tokens.list_tokens()] == [("drop", False), ("keep", True)]
        assert [t.name for t in tokens.active()] == ["keep"]
        audit = [(e.token_name, e.action, e.role, e.actor) for e in tokens.audit()]
        assert audit == [("drop", "revoke", "reader", "token:keep"), ("drop", "create", "reader", "cli:alice"),
                         ("keep", "create", "admin", "cli:alice")]
        with pytest.raises(ResourceDoesNotExist):
            tokens.revoke("nobody", "cli:alice")


class TestKeyring:
    def test_keyring_follows_the_registry(self, registry_store: RegistryStore) -> None:
        """A reloaded keyring accepts stored tokens with their role and the bootstrap admin token,
        and refuses a token once it is revoked and the keyring reloaded."""
        tokens = TokenStore(registry_store)
        _, reader = tokens.create("r", "reader", "cli:test")
        keyring = Keyring("bootstrap-admin-token-0123456789")
        keyring.reload(registry_store)
        principal = keyring.authenticate(b"Bearer " + reader.encode(), "reader")
        assert (principal.name, principal.role, principal.actor) == ("r", "reader", "token:r")
        assert keyring.authenticate(b"Bearer bootstrap-admin-token-0123456789", "admin").actor == "token:admin-token"
        with pytest.raises(Forbidden, match="has role reader; this call needs deployer"):
            keyring.authenticate(b"Bearer " + reader.encode(), "deployer")
        tokens.revoke("r", "cli:test")
        keyring.reload(registry_store)
        with pytest.raises(Unauthorized) as caught:
            keyring.authenticate(b"Bearer " + reader.encode(), "reader")
        assert reader not in caught.value.message

    @pytest.mark.parametrize("header", [None, b"", b"Basic abc", b"Bearer", b"Bearer gwt_unknown"])
    def test_missing_or_unknown_token_is_unauthorized(self, header: bytes | None) -> None:
        """No bearer token, another scheme, or a token nobody issued: Unauthorized (401)."""
        with pytest.raises(Unauthorized):
            Keyring(None).authenticate(header, "reader")
