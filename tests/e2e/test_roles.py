"""Roles, hashed API tokens and inference API keys against two real `gateway serve` replicas on one
PostgreSQL registry (--admin-token, --require-api-key, --max-artifact-bytes 4096), with tokens made
by the real CLI and called by real clients (httpx, the mlflow client, tritonclient)."""

from __future__ import annotations

import hashlib
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import sqlalchemy as sa
import tritonclient.http as httpclient
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from tritonclient.utils import InferenceServerException

from registry.schema import metadata
from tests.conftest import throwaway_postgres_database
from tests.e2e.conftest import GatewayProcess, cli_env, free_port, start_gateway

ADMIN = "bootstrap-" + secrets.token_hex(16)
UNKNOWN = "gwt_" + secrets.token_urlsafe(32)  # well-formed, never issued
MLFLOW = "/api/2.0/mlflow"
ARTIFACTS = "/api/2.0/mlflow-artifacts/artifacts"
MAX_ARTIFACT = 4096
ROW = [0.1] * 32
ROLES = ("reader", "deployer", "admin")


class Cluster:
    """Replica `a` (registered the demo models) and replica `b`, on one registry; `tokens` by role."""

    def __init__(self, a: GatewayProcess, b: GatewayProcess, database_url: str) -> None:
        self.a, self.b, self.database_url = a, b, database_url
        self.tokens: dict[str, str] = {}
        self.issued: list[str] = [ADMIN]  # every token this module ever held, checked against logs and bodies
        self.bodies: list[bytes] = []

    def create_token(self, name: str, role: str) -> str:
        token = self.a.cli("tokens", "create", name, "--role", role).stdout.strip()
        self.issued.append(token)
        return token

    def call(self, method: str, path: str, token: str | None = None, gw: GatewayProcess | None = None,
             **kwargs: Any) -> httpx.Response:
        headers = {"authorization": f"Bearer {token}"} if token is not None else {}
        r = httpx.request(method, f"{(gw or self.a).url}{path}", headers=headers, timeout=10, **kwargs)
        self.bodies.append(r.content)
        return r


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with throwaway_postgres_database() as url:
        shared = tmp_path_factory.mktemp("roles")
        env = {"GATEWAY_REGISTRY_URL": url, "GATEWAY_ADMIN_TOKEN": ADMIN}
        flags = ("--require-api-key", "--max-artifact-bytes", str(MAX_ARTIFACT), "--log-level", "debug")
        a = start_gateway(shared, "--demo", *flags, **env)
        b = start_gateway(shared, *flags, **env)
        c = Cluster(a, b, url)
        try:
            for role in ROLES:
                c.tokens[role] = c.create_token(f"test-{role}", role)
            yield c
        finally:
            a.stop()
            b.stop()


def wait_for_status(c: Cluster, gw: GatewayProcess, token: str, status: int, limit_s: float = 10.0) -> float:
    """Seconds until GET /v2/models/churn with `token` answers `status` on `gw` (bounded; not a timing claim)."""
    started = time.monotonic()
    while c.call("GET", "/v2/models/churn", token, gw=gw).status_code != status:
        assert time.monotonic() - started < limit_s, f"{gw.url} never answered {status}"
        time.sleep(0.02)
    return time.monotonic() - started


# --- each role on representative endpoints ---------------------------------------------------------

ENDPOINTS: list[tuple[str, str, dict[str, Any] | None, str]] = [
    ("GET", "/admin/routes", None, "reader"),
    ("GET", "/admin/audit", None, "reader"),
    ("GET", "/monitoring/drift", None, "reader"),
    ("GET", "/v2/models/churn", None, "reader"),
    ("GET", "/v1/models", None, "reader"),
    ("GET", f"{MLFLOW}/registered-models/get?name=churn", None, "reader"),
    ("POST", f"{MLFLOW}/experiments/search", {"max_results": 5}, "reader"),
    ("PUT", "/admin/routes/fraud", {"model": "fraud", "arms": [{"version": "1", "weight": 1}]}, "deployer"),
    ("POST", f"{MLFLOW}/registered-models/alias", {"name": "fraud", "alias": "roles", "version": "1"}, "deployer"),
    ("POST", f"{MLFLOW}/model-versions/transition-stage",
     {"name": "fraud", "version": "1", "stage": "Staging"}, "deployer"),
    ("PUT", "/admin/features/views/roles_view",
     {"entity": "user_id", "features": [{"name": "x", "dtype": "float32"}]}, "admin"),
    ("POST", f"{MLFLOW}/experiments/create", {"name": "roles-exp"}, "admin"),
    ("POST", f"{MLFLOW}/runs/log-metric", {"run_id": "0" * 32, "key": "k", "value": 1}, "admin"),
    ("POST", "/features/push", {"push_source_name": "users", "df": {}}, "admin"),
]


@pytest.mark.parametrize(("method", "path", "body", "needed"), ENDPOINTS)
def test_each_role_on_each_endpoint(cluster: Cluster, method: str, path: str, body: dict[str, Any] | None,
                                    needed: str) -> None:
    """No token or an unknown one: 401 with WWW-Authenticate; a role below the endpoint's: 403; the
    bootstrap admin token and every role at or above: neither. Errors keep the group's shape."""
    mlflow = path.startswith("/api/")
    for token in (None, UNKNOWN):
        r = cluster.call(method, path, token, json=body)
        assert r.status_code == 401, r.text
        assert r.headers["www-authenticate"].startswith("Bearer")
        assert (r.json()["error_code"] == "UNAUTHENTICATED") if mlflow else ("error" in r.json())
    for role in ROLES:
        r = cluster.call(method, path, cluster.tokens[role], json=body)
        if ROLES.index(role) < ROLES.index(needed):
            assert r.status_code == 403, (role, r.text)
            assert (r.json()["error_code"] == "PERMISSION_DENIED") if mlflow else (needed in r.json()["error"])
        else:
            assert r.status_code not in (401, 403), (role, r.text)
    assert cluster.call(method, path, ADMIN, json=body).status_code not in (401, 403)


@pytest.mark.parametrize("path", ["/v2/health/live", "/v2/health/ready", "/health", "/metrics", "/openapi.json"])
def test_probes_and_metrics_stay_open(cluster: Cluster, path: str) -> None:
    """Kubernetes probes, Prometheus scrapes and the OpenAPI document need no token, even with API keys required."""
    assert cluster.call("GET", path).status_code == 200


# --- clients ----------------------------------------------------------------------------------------


def test_mlflow_client_deployer_promotes_but_cannot_create(cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> None:
    """With MLFLOW_TRACKING_TOKEN set to a deployer token, the real mlflow client sets an alias (and reads
    it back) but creating an experiment raises PERMISSION_DENIED; nothing was created."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", cluster.tokens["deployer"])
    client = MlflowClient(tracking_uri=cluster.a.url, registry_uri=cluster.a.url)
    client.set_registered_model_alias("fraud", "mlflow-deployer", "1")
    assert client.get_model_version_by_alias("fraud", "mlflow-deployer").version == "1"
    with pytest.raises(MlflowException) as caught:
        client.create_experiment("made-by-a-deployer")
    assert caught.value.error_code == "PERMISSION_DENIED"
    assert client.get_experiment_by_name("made-by-a-deployer") is None


def test_v1_predict_needs_an_api_key(cluster: Cluster) -> None:
    """KServe v1 predict: 401 {"error"} with WWW-Authenticate without a key or with an unknown one (the
    body is not even read); 200 with any role's token."""
    for token in (None, UNKNOWN):
        r = cluster.call("POST", "/v1/models/churn:predict", token, json={"instances": [ROW]})
        assert r.status_code == 401 and "error" in r.json(), r.text
        assert r.headers["www-authenticate"] == 'Bearer realm="gateway"'
    for role in ROLES:
        r = cluster.call("POST", "/v1/models/churn:predict", cluster.tokens[role], json={"instances": [ROW]})
        assert r.status_code == 200, r.text


def test_tritonclient_with_authorization_header(cluster: Cluster) -> None:
    """tritonclient.http: probes work without a key; metadata and infer raise 401 without one and
    work with headers={"Authorization": "Bearer <reader token>"}, binary tensors included."""
    client = httpclient.InferenceServerClient(url=cluster.a.hostport)
    assert client.is_server_live() and client.is_server_ready()
    x = np.asarray([ROW], dtype=np.float32)
    inp = httpclient.InferInput("features", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=True)
    with pytest.raises(InferenceServerException) as caught:
        client.infer("churn", [inp])
    assert caught.value.status() == "401"
    with pytest.raises(InferenceServerException) as caught:
        client.get_model_metadata("churn")
    assert caught.value.status() == "401"
    headers = {"Authorization": f"Bearer {cluster.tokens['reader']}"}
    assert client.get_model_metadata("churn", headers=headers)["name"] == "churn"
    result = client.infer("churn", [inp], headers=headers)
    assert result.as_numpy(result.get_response()["outputs"][0]["name"]).shape[0] == 1


# --- revocation and storage -------------------------------------------------------------------------


def test_revoke_reaches_the_other_replica(cluster: Cluster) -> None:
    """A token created and revoked with the CLI: replica B (which never saw a request about it) accepts
    it once its poll reloads the table, and refuses it within a poll interval or so of the revoke."""
    token = cluster.create_token("short-lived", "reader")
    wait_for_status(cluster, cluster.b, token, 200)
    cluster.a.cli("tokens", "revoke", "short-lived")
    delay = wait_for_status(cluster, cluster.b, token, 401)
    print(f"\nrevoke reached replica B after {delay * 1000:.0f} ms (poll interval 100 ms)")
    assert cluster.call("POST", "/v1/models/churn:predict", token, gw=cluster.a, json={"instances": [ROW]}).status_code == 401


def test_registry_holds_no_plaintext_token(cluster: Cluster) -> None:
    """No row of any registry table contains any issued token (nor its random part); api_tokens
    holds exactly their sha256 digests; `tokens list` shows names and roles, never tokens."""
    engine = sa.create_engine(cluster.database_url)
    try:
        with engine.connect() as conn:
            text = "\n".join(str(tuple(row)) for table in metadata.sorted_tables
                             for row in conn.execute(sa.select(table)).all())
            stored = set(conn.execute(sa.text("SELECT token_hash FROM api_tokens")).scalars())
    finally:
        engine.dispose()
    for token in cluster.issued:
        assert token not in text and token.removeprefix("gwt_") not in text
    db_tokens = [t for t in cluster.issued if t.startswith("gwt_")]
    assert {hashlib.sha256(t.encode()).hexdigest() for t in db_tokens} <= stored
    listing = cluster.a.cli("tokens", "list").stdout
    assert "test-deployer  role=deployer" in listing
    assert not any(t in listing for t in cluster.issued)


def test_writes_are_audited_by_token_name(cluster: Cluster) -> None:
    """A route change records the token's name as the actor; token creates and revokes are audited
    with the CLI user; no audit entry contains a token."""
    r = cluster.call("PUT", "/admin/routes/ticket_router", cluster.tokens["deployer"],
                     json={"model": "ticket_router", "arms": [{"version": "1", "weight": 1}]})
    assert r.status_code == 200, r.text
    r = cluster.call("GET", "/admin/audit?route=ticket_router", cluster.tokens["reader"])
    assert r.json()["entries"][0]["actor"] == "token:test-deployer"
    audit = cluster.a.cli("tokens", "audit", "--limit", "100").stdout
    assert '"token":"short-lived","action":"revoke"' in audit and '"actor":"cli:' in audit
    assert '"token":"test-admin","action":"create","role":"admin"' in audit
    assert not any(t in audit + r.text for t in cluster.issued)


def test_every_successful_write_has_an_audit_row(cluster: Cluster) -> None:
    """Writes through the HTTP APIs land in write_audit before they are acknowledged, named by token:
    an MLflow write and a route change are recorded with their token's name and status; a refused write
    (403), a failed one (400) and reads are not."""
    from registry.store import RegistryStore
    from registry.writelog import recent_writes

    name = f"audited-{time.monotonic_ns()}"
    assert cluster.call("POST", f"{MLFLOW}/experiments/create", cluster.tokens["admin"],
                        json={"name": name}).status_code == 200
    assert cluster.call("POST", f"{MLFLOW}/experiments/create", cluster.tokens["deployer"],
                        json={"name": name + "-refused"}).status_code == 403
    assert cluster.call("POST", f"{MLFLOW}/experiments/create", cluster.tokens["admin"],
                        json={"name": ""}).status_code == 400
    assert cluster.call("PUT", "/admin/routes/ticket_router", cluster.tokens["deployer"],
                        json={"model": "ticket_router", "arms": [{"version": "1", "weight": 1}]}).status_code == 200
    assert cluster.call("POST", f"{MLFLOW}/experiments/search", cluster.tokens["reader"],
                        json={"max_results": 1}).status_code == 200
    store = RegistryStore(cluster.database_url)
    try:
        rows = recent_writes(store, 2)
    finally:
        store.close()
    # newest first, and nothing between them: the refused, failed and read requests left no row
    assert [(r.actor, r.method, r.path, r.status) for r in rows] == [
        ("token:test-deployer", "PUT", "/admin/routes/ticket_router", 200),
        ("token:test-admin", "POST", f"{MLFLOW}/experiments/create", 200),
    ]
    assert all(t not in repr(rows) for t in cluster.issued)


def test_registry_serve_alone_applies_roles_and_revokes(cluster: Cluster, tmp_path: Path) -> None:
    """`gateway registry serve` on the same registry: a deployer token promotes but may not create an
    experiment (403), a missing one is 401, and a new token is accepted and a revoked one refused after
    its next poll."""
    port = free_port()
    env = cli_env(tmp_path, GATEWAY_REGISTRY_URL=cluster.database_url, GATEWAY_ADMIN_TOKEN=ADMIN,
                  GATEWAY_MAX_ARTIFACT_BYTES=str(MAX_ARTIFACT))
    proc = subprocess.Popen([sys.executable, "-m", "gateway", "registry", "serve", "--port", str(port)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}{MLFLOW}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{url}/registered-models/get", params={"name": "fraud"})
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline and proc.poll() is None, "registry serve did not start"
                time.sleep(0.05)
        deployer = {"authorization": f"Bearer {cluster.tokens['deployer']}"}
        alias = {"name": "fraud", "alias": "alone", "version": "1"}
        assert httpx.post(f"{url}/registered-models/alias", json=alias).status_code == 401
        assert httpx.post(f"{url}/registered-models/alias", json=alias, headers=deployer).status_code == 200
        r = httpx.post(f"{url}/experiments/create", json={"name": "alone"}, headers=deployer)
        assert r.status_code == 403 and r.json()["error_code"] == "PERMISSION_DENIED"
        token = cluster.create_token("registry-only", "deployer")
        auth = {"authorization": f"Bearer {token}"}

        def wait_for(status: int) -> None:  # the token table is reloaded at most once per poll interval
            started = time.monotonic()
            while httpx.post(f"{url}/registered-models/alias", json=alias, headers=auth).status_code != status:
                assert time.monotonic() - started < 10, f"registry serve never answered {status}"
                time.sleep(0.05)

        wait_for(200)
        cluster.a.cli("tokens", "revoke", "registry-only")
        wait_for(401)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


# --- artifact upload limit ---------------------------------------------------------------------------


def _left_in(cluster: Cluster, directory: str) -> list[str]:
    root = cluster.a.data_dir / "artifacts" / "files" / directory
    return sorted(p.name for p in root.iterdir()) if root.is_dir() else []


def test_artifact_upload_limit(cluster: Cluster) -> None:
    """--max-artifact-bytes 4096: exactly 4096 bytes are stored; 4097 bytes (declared) and a chunked
    upload without Content-Length that runs past the limit get 413 RESOURCE_EXHAUSTED, and leave no
    file and no temp file behind."""
    admin = cluster.tokens["admin"]
    data = secrets.token_bytes(MAX_ARTIFACT)
    assert cluster.call("PUT", f"{ARTIFACTS}/limit/exact.bin", admin, content=data).status_code == 200
    assert cluster.call("GET", f"{ARTIFACTS}/limit/exact.bin", admin).content == data
    r = cluster.call("PUT", f"{ARTIFACTS}/limit/over.bin", admin, content=data + b"x")
    assert r.status_code == 413 and r.json()["error_code"] == "RESOURCE_EXHAUSTED", r.text

    def chunks() -> Iterator[bytes]:
        for _ in range(3):
            yield secrets.token_bytes(2000)

    r = cluster.call("PUT", f"{ARTIFACTS}/limit/streamed.bin", admin, content=chunks())
    assert r.status_code == 413 and r.json()["error_code"] == "RESOURCE_EXHAUSTED", r.text
    assert _left_in(cluster, "limit") == ["exact.bin"]


def test_aborted_upload_leaves_nothing(cluster: Cluster) -> None:
    """A client that declares 3,000 bytes, sends 1,000 and hangs up: no file and no temp file remain,
    and the hang-up is not logged as a server error."""
    head = (f"PUT {ARTIFACTS}/aborted/part.bin HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 3000\r\n"
            f"Authorization: Bearer {cluster.tokens['admin']}\r\n\r\n")
    with socket.create_connection(("127.0.0.1", cluster.a.port), timeout=10) as sock:
        sock.sendall(head.encode() + bytes(1000))
    # The gateway notices the hang-up asynchronously: wait (bounded) until its temp file is gone.
    deadline = time.monotonic() + 10
    while _left_in(cluster, "aborted"):
        assert time.monotonic() < deadline, _left_in(cluster, "aborted")
        time.sleep(0.05)
    assert cluster.call("GET", f"{ARTIFACTS}/aborted/part.bin", cluster.tokens["reader"]).status_code == 404
    assert "ClientDisconnect" not in cluster.a.output()


# --- nothing leaks (last: it checks what the module did) -------------------------------------------


def test_tokens_never_logged_or_echoed(cluster: Cluster) -> None:
    """After failing and succeeding calls with every token (and a revoked one), no token appears in
    either replica's log (at debug level) or in any response body."""
    for token in [*cluster.issued, UNKNOWN]:
        for gw in (cluster.a, cluster.b):
            cluster.call("POST", "/v1/models/churn:predict", token, gw=gw, json={"instances": [ROW]})
            cluster.call("PUT", "/admin/routes/churn", token, gw=gw, json={"model": "nope", "arms": []})
            cluster.call("POST", f"{MLFLOW}/experiments/create", token, gw=gw, content=b"{")
    secrets_seen = [*cluster.issued, UNKNOWN]
    for body in cluster.bodies:
        assert not any(t.encode() in body for t in secrets_seen)
    for gw in (cluster.a, cluster.b):
        log = gw.output()
        assert not any(t in log or t.removeprefix("gwt_") in log for t in secrets_seen)
