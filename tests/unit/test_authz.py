"""The permission table (gateway/authz.py) with plain values."""

from __future__ import annotations

import pytest

from gateway.authz import ROLES, Access, Role, access_for, allows, bearer_token, parse_role, required_role
from registry.tokens import TOKEN_ROLES


class TestRoles:
    def test_roles_are_ordered_and_match_the_registry(self) -> None:
        """reader < deployer < admin, and the registry's check constraint allows exactly these."""
        assert ROLES == ("reader", "deployer", "admin") == TOKEN_ROLES

    @pytest.mark.parametrize(("role", "needed", "ok"), [
        ("reader", "reader", True), ("reader", "deployer", False), ("reader", "admin", False),
        ("deployer", "reader", True), ("deployer", "deployer", True), ("deployer", "admin", False),
        ("admin", "reader", True), ("admin", "deployer", True), ("admin", "admin", True),
    ])
    def test_each_role_includes_the_ones_before(self, role: Role, needed: Role, ok: bool) -> None:
        """A role allows what it names and everything below it, nothing above."""
        assert allows(role, needed) is ok

    def test_parse_role_refuses_unknown_names(self) -> None:
        """An unknown or differently cased role is an error that lists the roles."""
        assert parse_role("deployer") == "deployer"
        with pytest.raises(ValueError, match="reader, deployer, admin"):
            parse_role("Admin")


TABLE: list[tuple[str, str, Access]] = [
    ("GET", "/v2/health/live", "open"),
    ("GET", "/v2/health/ready", "open"),
    ("GET", "/health", "open"),
    ("GET", "/metrics", "open"),
    ("GET", "/openapi.json", "open"),
    ("POST", "/v1/models/churn:predict", "public"),
    ("POST", "/v2/models/churn/infer", "public"),
    ("POST", "/v2/models/churn/versions/2/infer", "public"),
    ("GET", "/v2/models/churn", "public"),
    ("GET", "/v2", "public"),
    ("GET", "/v1/models", "public"),
    ("GET", "/monitoring/drift", "public"),
    ("POST", "/features/get-online-features", "public"),
    ("POST", "/features/push", "admin"),
    ("GET", "/admin/routes", "reader"),
    ("GET", "/admin/routes/churn", "reader"),
    ("GET", "/admin/audit", "reader"),
    ("GET", "/admin/lineage/churn/1", "reader"),
    ("GET", "/admin/rollouts/churn", "reader"),
    ("PUT", "/admin/routes/churn", "deployer"),
    ("DELETE", "/admin/routes/churn", "deployer"),
    ("PUT", "/admin/rollouts/churn", "deployer"),
    ("DELETE", "/admin/rollouts/churn", "deployer"),
    ("PUT", "/admin/features/views/users", "admin"),
    ("POST", "/admin/tokens", "admin"),
    ("PUT", "/admin/routesX", "admin"),
    ("GET", "/api/2.0/mlflow/registered-models/get", "public"),
    ("POST", "/api/2.0/mlflow/runs/search", "public"),
    ("POST", "/api/2.0/mlflow/experiments/search", "public"),
    ("POST", "/api/2.0/mlflow/registered-models/alias", "deployer"),
    ("DELETE", "/api/2.0/mlflow/registered-models/alias", "deployer"),
    ("POST", "/api/2.0/mlflow/model-versions/transition-stage", "deployer"),
    ("POST", "/api/2.0/mlflow/experiments/create", "admin"),
    ("POST", "/api/2.0/mlflow/runs/log-metric", "admin"),
    ("POST", "/api/2.0/mlflow/runs/log-batch", "admin"),
    ("POST", "/api/2.0/mlflow/registered-models/create", "admin"),
    ("POST", "/api/2.0/mlflow/model-versions/create", "admin"),
    ("DELETE", "/api/2.0/mlflow/registered-models/delete", "admin"),
    ("GET", "/api/2.0/mlflow-artifacts/artifacts/a/b", "public"),
    ("PUT", "/api/2.0/mlflow-artifacts/artifacts/a/b", "admin"),
    ("POST", "/no/such/path", "admin"),
]


class TestAccessTable:
    @pytest.mark.parametrize(("method", "path", "access"), TABLE)
    def test_access_class(self, method: str, path: str, access: Access) -> None:
        """Each representative endpoint falls in the class the README's roles table gives it."""
        assert access_for(method, path) == access

    @pytest.mark.parametrize(("access", "keys", "needed"), [
        ("open", False, None), ("open", True, None),
        ("public", False, None), ("public", True, "reader"),
        ("reader", False, "reader"), ("reader", True, "reader"),
        ("deployer", False, "deployer"), ("admin", True, "admin"),
    ])
    def test_required_role(self, access: Access, keys: bool, needed: Role | None) -> None:
        """Open never needs a token; public needs a reader only with --require-api-key; the rest name their role."""
        assert required_role(access, keys) == needed


class TestBearer:
    @pytest.mark.parametrize(("header", "token"), [
        (b"Bearer abc", b"abc"), (b"bearer abc", b"abc"), (b"BEARER  abc ", b"abc"),
        (None, None), (b"", None), (b"abc", None), (b"Basic abc", None), (b"Bearer ", None), (b"Bearer", None),
    ])
    def test_bearer_token(self, header: bytes | None, token: bytes | None) -> None:
        """Only the Bearer scheme (any case) with a non-empty value yields a token."""
        assert bearer_token(header) == token
