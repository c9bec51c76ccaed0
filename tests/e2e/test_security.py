"""Security against a real `gateway serve --demo --admin-token ...`: who may write, what never leaks,
what never escapes the artifact store, and what is never deserialized."""

from __future__ import annotations

import pickle
import re
import secrets
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import GatewayProcess, free_port, run_cli, start_gateway

TOKEN = "s3cret-" + secrets.token_hex(16)
WRONG = "wr0ng-" + secrets.token_hex(16)
CANARY = "canary-" + secrets.token_hex(8)  # a value that only ever travels in request bodies
AUTH = {"authorization": f"Bearer {TOKEN}"}
BAD_AUTH = {"authorization": f"Bearer {WRONG}"}
MLFLOW = "/api/2.0/mlflow"
ARTIFACTS = "/api/2.0/mlflow-artifacts/artifacts"
PACKAGES = ("gateway", "registry", "featurestore", "monitoring")
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """A demo gateway with an admin token, logging at debug level (the most it would ever write)."""
    gw = start_gateway(tmp_path_factory.mktemp("secured"), "--demo", "--log-level", "debug", GATEWAY_ADMIN_TOKEN=TOKEN)
    yield gw
    gw.stop()


@pytest.fixture(scope="module")
def bodies() -> list[bytes]:
    """Every response body the module saw, checked for secrets at the end."""
    return []


def call(gw: GatewayProcess, seen: list[bytes], method: str, path: str, **kwargs: Any) -> httpx.Response:
    r = httpx.request(method, f"{gw.url}{path}", timeout=10, **kwargs)
    seen.append(r.content)
    return r


def raw_request(port: int, method: str, target: str, body: bytes = b"", headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """One HTTP/1.1 request with the target sent byte for byte (clients normalise '..' away)."""
    head = f"{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: {len(body)}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head.encode() + b"\r\n" + body)
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    status = int(reply.split(b" ", 2)[1])
    return status, reply.partition(b"\r\n\r\n")[2]


# --- who may write ------------------------------------------------------------------------------

ADMIN_CALLS = [
    ("GET", "/admin/routes", None),
    ("GET", "/admin/routes/churn", None),
    ("GET", "/admin/audit", None),
    ("GET", "/admin/features/views", None),
    ("PUT", "/admin/routes/churn", {"model": "churn", "arms": [{"version": "1", "weight": 1}]}),
    ("DELETE", "/admin/routes/no-such-route", None),
    ("PUT", "/admin/features/views/sec_view", {"entity": "user_id", "features": [{"name": "x", "dtype": "float32"}]}),
]


@pytest.mark.parametrize(("method", "path", "body"), ADMIN_CALLS)
def test_admin_api_needs_the_token(secured: GatewayProcess, bodies: list[bytes], method: str, path: str,
                                   body: object) -> None:
    """Every admin call, read or write: 401 without a bearer token or with a wrong one, and not 401/403 with it."""
    assert call(secured, bodies, method, path, json=body).status_code == 401
    assert call(secured, bodies, method, path, json=body, headers={"authorization": TOKEN}).status_code == 401
    assert call(secured, bodies, method, path, json=body, headers=BAD_AUTH).status_code == 401
    r = call(secured, bodies, method, path, json=body, headers=AUTH)
    assert r.status_code not in (401, 403), r.text


MLFLOW_WRITES = [
    ("POST", f"{MLFLOW}/experiments/create", {"name": "sec-exp"}),
    ("POST", f"{MLFLOW}/registered-models/create", {"name": "sec-model"}),
    ("POST", f"{MLFLOW}/runs/create", {"experiment_id": "0"}),
    ("POST", f"{MLFLOW}/model-versions/transition-stage", {"name": "churn", "version": "1", "stage": "Archived"}),
    ("POST", f"{MLFLOW}/registered-models/alias", {"name": "churn", "alias": "champion", "version": "2"}),
    ("DELETE", f"{MLFLOW}/registered-models/delete", {"name": "churn"}),
    ("PUT", f"{ARTIFACTS}/sec/file.txt", None),
]


@pytest.mark.parametrize(("method", "path", "body"), MLFLOW_WRITES)
def test_mlflow_writes_need_the_token(secured: GatewayProcess, bodies: list[bytes], method: str, path: str,
                                      body: object) -> None:
    """MLflow-API writes and artifact uploads: 401 UNAUTHENTICATED without the token or with a wrong
    one, and nothing changes (champion still serves v1)."""
    kwargs: dict[str, Any] = {"json": body} if body is not None else {"content": b"data"}
    r = call(secured, bodies, method, path, **kwargs)
    assert r.status_code == 401 and r.json()["error_code"] == "UNAUTHENTICATED", r.text
    r = call(secured, bodies, method, path, headers=BAD_AUTH, **kwargs)
    assert r.status_code == 401 and r.json()["error_code"] == "UNAUTHENTICATED", r.text
    r = httpx.post(f"{secured.url}/v1/models/churn:predict", json={"instances": [[0.1] * 32]})
    assert r.status_code == 200 and r.headers["x-gateway-model-version"] == "1"
    assert "churn" in call(secured, bodies, "GET", f"{MLFLOW}/registered-models/get", params={"name": "churn"}).text


READS = [
    f"{MLFLOW}/experiments/get-by-name?experiment_name=Default",
    f"{MLFLOW}/registered-models/get?name=churn",
    f"{MLFLOW}/model-versions/search",
    f"{ARTIFACTS}?path=",
    "/v2/models/churn",
    "/v1/models",
    "/health",
    "/metrics",
    "/openapi.json",
]


@pytest.mark.parametrize("path", READS)
def test_reads_need_no_token(secured: GatewayProcess, bodies: list[bytes], path: str) -> None:
    """MLflow reads, metadata, health and metrics are open; so is inference (no API key configured)."""
    assert call(secured, bodies, "GET", path).status_code == 200
    r = call(secured, bodies, "POST", "/v2/models/churn/infer",
             json={"inputs": [{"name": "features", "shape": [1, 32], "datatype": "FP32", "data": [0.1] * 32}]})
    assert r.status_code == 200, r.text


# --- artifact store: no escape ------------------------------------------------------------------


def _escape_targets(marker: str) -> list[str]:
    return [
        f"{ARTIFACTS}/../../../{marker}",
        f"{ARTIFACTS}/a/../../../../{marker}",
        f"{ARTIFACTS}/%2e%2e/%2e%2e/%2e%2e/{marker}",
        f"{ARTIFACTS}/%2E%2E%2F%2E%2E%2F%2E%2E%2F{marker}",
        f"{ARTIFACTS}/a/..%2f..%2f..%2f..%2f{marker}",
        f"{ARTIFACTS}//tmp/{marker}",
        f"{ARTIFACTS}/%2ftmp%2f{marker}",
        f"{ARTIFACTS}/a%00/{marker}",
        f"{ARTIFACTS}/outside-link/{marker}",
    ]


def test_artifact_upload_cannot_escape_the_store(secured: GatewayProcess, bodies: list[bytes], tmp_path: Path) -> None:
    """Uploads to '..', percent-encoded '..', absolute paths, NUL bytes and a symlink leading out of the
    store: 4xx each, and no file appears outside the store."""
    files = secured.data_dir / "artifacts" / "files"
    outside = tmp_path / "outside"
    outside.mkdir()
    (files / "outside-link").symlink_to(outside, target_is_directory=True)
    marker = f"escaped-{secrets.token_hex(6)}"
    for target in _escape_targets(marker):
        status, body = raw_request(secured.port, "PUT", target, b"payload", AUTH)
        bodies.append(body)
        assert 400 <= status < 500, (target, status, body)
    # A backslash is no separator on POSIX: this is a file named '..\\..\\<marker>' inside the store.
    status, _ = raw_request(secured.port, "PUT", f"{ARTIFACTS}/..%5c..%5c{marker}", b"payload", AUTH)
    assert status in (200, 400), status
    found = [p for root in (secured.data_dir, tmp_path, Path("/tmp")) for p in root.rglob(f"*{marker}*")
             if not p.resolve().is_relative_to(files.resolve())]
    assert found == []
    assert not any(p.name == marker for p in (Path("/"), Path("/tmp"))), "written at the filesystem root"


@pytest.mark.parametrize("relpath", ["n" * 300, "a/" + "n" * 300 + "/f", "sec-file/child", "sec-file/child/deeper"])
def test_artifact_paths_the_filesystem_refuses_are_400(secured: GatewayProcess, bodies: list[bytes], relpath: str) -> None:
    """A name too long for the filesystem, or a file used as a directory: 400 INVALID_PARAMETER_VALUE
    for upload, download and list, never a 500."""
    assert call(secured, bodies, "PUT", f"{ARTIFACTS}/sec-file", content=b"x", headers=AUTH).status_code == 200
    r = call(secured, bodies, "PUT", f"{ARTIFACTS}/{relpath}", content=b"x", headers=AUTH)
    assert r.status_code == 400 and r.json()["error_code"] == "INVALID_PARAMETER_VALUE", r.text
    assert call(secured, bodies, "GET", f"{ARTIFACTS}/{relpath}").status_code in (400, 404)
    assert call(secured, bodies, "GET", ARTIFACTS, params={"path": relpath}).status_code in (200, 400)


def test_artifact_download_cannot_escape_the_store(secured: GatewayProcess, bodies: list[bytes]) -> None:
    """Reading the registry database (two levels above the files root) through the proxy is refused."""
    assert (secured.data_dir / "registry.db").is_file()
    for target in (f"{ARTIFACTS}/../../registry.db", f"{ARTIFACTS}/%2e%2e/%2e%2e/registry.db",
                   f"{ARTIFACTS}/..%2f..%2fregistry.db", f"{ARTIFACTS}/%2f{secured.data_dir}/registry.db"):
        status, body = raw_request(secured.port, "GET", target)
        bodies.append(body)
        assert 400 <= status < 500, (target, status)
        assert b"SQLite format" not in body


class _TouchOnLoad:
    """Unpickling this creates `path`: proof that a pickle was loaded, should anything ever load one."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return (Path.touch, (self.path,))


def _run_with_artifact(gw: GatewayProcess, seen: list[bytes], name: str, data: bytes) -> str:
    """A run whose artifacts hold model/<name>; returns its run id."""
    r = call(gw, seen, "POST", f"{MLFLOW}/runs/create", json={"experiment_id": "0"}, headers=AUTH)
    assert r.status_code == 200, r.text
    run = r.json()["run"]["info"]
    root = run["artifact_uri"].removeprefix("mlflow-artifacts:").lstrip("/")
    r = call(gw, seen, "PUT", f"{ARTIFACTS}/{root}/model/{name}", content=data, headers=AUTH)
    assert r.status_code == 200, r.text
    return str(run["run_id"])


def test_non_onnx_model_is_never_loaded(secured: GatewayProcess, bodies: list[bytes], tmp_path: Path) -> None:
    """A pickle registered through the MLflow API is recorded but never served or unpickled, even as the
    champion; a file named .onnx that is not ONNX is refused at registration."""
    marker = tmp_path / "unpickled"
    run_id = _run_with_artifact(secured, bodies, "model.pkl", pickle.dumps(_TouchOnLoad(marker)))
    assert call(secured, bodies, "POST", f"{MLFLOW}/registered-models/create", json={"name": "pickled"}, headers=AUTH).status_code == 200
    r = call(secured, bodies, "POST", f"{MLFLOW}/model-versions/create",
             json={"name": "pickled", "source": f"runs:/{run_id}/model", "run_id": run_id}, headers=AUTH)
    assert r.status_code == 200, r.text
    version = r.json()["model_version"]["version"]
    r = call(secured, bodies, "POST", f"{MLFLOW}/registered-models/alias",
             json={"name": "pickled", "alias": "champion", "version": version}, headers=AUTH)
    assert r.status_code == 200, r.text
    time.sleep(1.0)  # several poll intervals: the follower has seen the alias
    r = call(secured, bodies, "POST", "/v1/models/pickled:predict", json={"instances": [[1.0]]})
    assert r.status_code in (404, 503), r.text
    r = call(secured, bodies, "POST", f"/v2/models/pickled/versions/{version}/infer",
             json={"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1.0]}]})
    assert r.status_code in (404, 503), r.text
    assert not marker.exists(), "the pickle was loaded"
    assert "pickled" not in httpx.get(f"{secured.url}/health").json()["routes"]

    run_id = _run_with_artifact(secured, bodies, "model.onnx", b"\x80\x04not an onnx model" + bytes(64))
    assert call(secured, bodies, "POST", f"{MLFLOW}/registered-models/create", json={"name": "fake_onnx"}, headers=AUTH).status_code == 200
    r = call(secured, bodies, "POST", f"{MLFLOW}/model-versions/create",
             json={"name": "fake_onnx", "source": f"runs:/{run_id}/model", "run_id": run_id}, headers=AUTH)
    assert r.status_code == 400 and r.json()["error_code"] == "INVALID_PARAMETER_VALUE", r.text
    versions = call(secured, bodies, "GET", f"{MLFLOW}/model-versions/search", params={"filter": "name='fake_onnx'"})
    assert versions.json().get("model_versions", []) == []


def test_model_version_source_cannot_escape_the_store(secured: GatewayProcess, bodies: list[bytes]) -> None:
    """A version whose source points outside the artifact store is refused or recorded unservable, never read."""
    assert call(secured, bodies, "POST", f"{MLFLOW}/registered-models/create", json={"name": "escaper"}, headers=AUTH).status_code == 200
    for source in ("mlflow-artifacts:/../../registry.db", "../../registry.db", "mlflow-artifacts:/%2e%2e/%2e%2e",
                   f"{secured.data_dir}/registry.db", "file:///etc/passwd"):
        r = call(secured, bodies, "POST", f"{MLFLOW}/model-versions/create",
                 json={"name": "escaper", "source": source}, headers=AUTH)
        assert r.status_code in (200, 400), (source, r.status_code, r.text)
    r = call(secured, bodies, "POST", "/v1/models/escaper:predict", json={"instances": [[1.0]]})
    assert r.status_code in (404, 503)


# --- nothing leaks --------------------------------------------------------------------------------


def test_token_and_bodies_never_logged_or_echoed(secured: GatewayProcess, bodies: list[bytes]) -> None:
    """After right and wrong tokens on every kind of endpoint (and bodies carrying a canary, some
    invalid): neither token appears in any response body or in the gateway's log, nor does the canary
    appear in the log."""
    for headers in (AUTH, BAD_AUTH, {"authorization": f"Basic {TOKEN}"}, {"authorization": TOKEN}):
        call(secured, bodies, "PUT", "/admin/routes/churn", json={"model": CANARY, "arms": []}, headers=headers)
        call(secured, bodies, "PUT", "/admin/routes/churn", content=b"{" + CANARY.encode(), headers=headers)
        call(secured, bodies, "POST", f"{MLFLOW}/experiments/create", content=b"[" + CANARY.encode(), headers=headers)
        call(secured, bodies, "POST", f"{MLFLOW}/runs/log-metric", json={"run_id": CANARY, "key": "k", "value": 1},
             headers=headers)
        call(secured, bodies, "POST", "/v2/models/churn/infer", content=CANARY.encode(), headers=headers)
        call(secured, bodies, "POST", "/v1/models/churn:predict", json={"instances": [CANARY]}, headers=headers)
        call(secured, bodies, "POST", "/features/push", json={"push_source_name": CANARY, "df": {}}, headers=headers)
        call(secured, bodies, "GET", f"/admin/audit?route={CANARY}", headers=headers)
    audit = call(secured, bodies, "GET", "/admin/audit", headers=AUTH)
    assert audit.status_code == 200
    assert any(e["actor"] == "token:admin-token" for e in audit.json()["entries"]), \
        "writes are audited by the token's name, not the token"
    for body in bodies:
        assert TOKEN.encode() not in body and WRONG.encode() not in body
    log = secured.output()
    assert TOKEN not in log and WRONG not in log
    assert CANARY not in log, [line for line in log.splitlines() if CANARY in line][:5]
    secret_part = TOKEN.split("-", 1)[1]
    assert secret_part not in log


@pytest.mark.parametrize("token", ["short-" + secrets.token_hex(2), "x" * 15])
def test_invalid_admin_token_is_refused_without_echo(tmp_path: Path, token: str) -> None:
    """A too-short --admin-token stops `serve` with an error naming the flag, never the value."""
    proc = run_cli(tmp_path / "gw", "serve", "--port", str(free_port()), "--admin-token", token, check=False)
    assert proc.returncode != 0
    assert "--admin-token" in proc.stdout + proc.stderr
    assert token not in proc.stdout + proc.stderr


def test_non_loopback_without_token_refused(tmp_path: Path) -> None:
    proc = run_cli(tmp_path / "gw", "serve", "--host", "0.0.0.0", "--port", str(free_port()), check=False)
    assert proc.returncode != 0 and "--admin-token" in proc.stdout + proc.stderr


# --- nothing deserializes arbitrary objects ---------------------------------------------------------

FORBIDDEN = [
    (r"\bimport\s+pickle\b|\bfrom\s+pickle\b|\bpickle\.", "pickle"),
    (r"\bcloudpickle\b|\bdill\b", "cloudpickle/dill"),
    (r"\bjoblib\b", "joblib"),
    (r"\btorch\.load\b", "torch.load"),
    (r"allow_pickle\s*=\s*True", "np.load(allow_pickle=True)"),
    (r"\bmarshal\.loads?\b|\bshelve\b", "marshal/shelve"),
    (r"\byaml\.load\((?![^)]*SafeLoader)", "yaml.load without SafeLoader"),
]


def test_no_pickle_loading_in_the_package() -> None:
    """No module of the package imports or calls a deserializer that runs code from the data."""
    hits = []
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            for number, line in enumerate(path.read_text().splitlines(), 1):
                for pattern, what in FORBIDDEN:
                    if re.search(pattern, line):
                        hits.append(f"{path.relative_to(REPO)}:{number}: {what}: {line.strip()}")
    assert hits == []
