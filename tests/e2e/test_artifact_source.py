"""Replicas with empty disks (--artifact-source): one `gateway registry serve` on PostgreSQL with its own
artifact directory, two `gateway serve` replicas that fetch model files from it by sha256, verify them,
and serve them; a tampered file is refused while the route keeps its previous version."""

from __future__ import annotations

import hashlib
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import mlflow
import pytest
from mlflow import MlflowClient

from gateway.demo import build_mlp
from registry.api import BLOBS
from registry.artifacts import ArtifactStore
from registry.client import RegistryClient
from registry.errors import ArtifactFetchFailed, ArtifactMismatch, InvalidArtifactPath
from tests.conftest import throwaway_postgres_database
from tests.e2e.conftest import GatewayProcess, cli_env, free_port, run_cli, start_gateway

ROW = {"instances": [[0.2] * 32]}
POLL_S = "0.2"  # the replicas' --poll-interval
CONVERGE_S = 5.0  # generous bound on one change reaching a replica (measured figures are printed)


@dataclass
class Registry:
    """`gateway registry serve` on its own data directory (its artifact store) and PostgreSQL."""

    url: str
    data_dir: Path
    database_url: str
    proc: subprocess.Popen[bytes]

    @property
    def artifacts(self) -> ArtifactStore:
        return ArtifactStore(self.data_dir / "artifacts")

    def cli(self, *args: str) -> str:
        return run_cli(self.data_dir, *args, GATEWAY_REGISTRY_URL=self.database_url).stdout


@pytest.fixture(scope="module")
def database_url() -> Iterator[str]:
    with throwaway_postgres_database() as url:
        yield url


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory, database_url: str) -> Iterator[Registry]:
    data_dir = tmp_path_factory.mktemp("registry-service")
    port = free_port()
    log = (data_dir / "registry.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "registry", "serve", "--port", str(port), "--registry", database_url],
        env=cli_env(data_dir), stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        assert proc.poll() is None, (data_dir / "registry.log").read_text()
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "registry serve did not start"
        time.sleep(0.05)
    yield Registry(url, data_dir, database_url, proc)
    proc.terminate()
    proc.wait(timeout=30)
    log.close()


@pytest.fixture(scope="module")
def replicas(
    tmp_path_factory: pytest.TempPathFactory, registry: Registry
) -> Iterator[tuple[GatewayProcess, GatewayProcess]]:
    """Two replicas, each on its own EMPTY data directory: every model file reaches them over HTTP."""
    env = {"GATEWAY_REGISTRY_URL": registry.database_url, "GATEWAY_ARTIFACT_SOURCE": registry.url}
    a = start_gateway(tmp_path_factory.mktemp("replica-a"), "--poll-interval", POLL_S, **env)
    b = start_gateway(tmp_path_factory.mktemp("replica-b"), "--poll-interval", POLL_S, **env)
    yield a, b
    a.stop()
    b.stop()


def model_file(tmp_path: Path, seed: int) -> Path:
    path = tmp_path / f"model-{seed}.onnx"
    path.write_bytes(build_mlp(seed))  # FP32 "features" [batch, 32] -> "probability"
    return path


def served_version(gw: GatewayProcess, route: str) -> str | None:
    r = httpx.post(f"{gw.url}/v1/models/{route}:predict", json=ROW, timeout=10)
    return r.headers["x-gateway-model-version"] if r.status_code == 200 else None


def wait_for(gw: GatewayProcess, route: str, version: str, started: float, limit: float = CONVERGE_S) -> float:
    while served_version(gw, route) != version:
        assert time.monotonic() - started < limit, f"{gw.url} did not serve {route} v{version} within {limit} s:\n{gw.output()}"
        time.sleep(0.01)
    return time.monotonic() - started


def local_blob(gw: GatewayProcess, sha256: str) -> Path:
    return ArtifactStore(gw.data_dir / "artifacts").path_for(sha256)


class TestBlobEndpoint:
    def test_serves_a_blob_by_its_hash(self, registry: Registry) -> None:
        """GET /api/2.0/gateway/blobs/<sha256> answers the stored bytes."""
        digest = registry.artifacts.put_bytes(b"some model bytes")
        r = httpx.get(f"{registry.url}{BLOBS}/{digest}", timeout=10)
        assert r.status_code == 200
        assert r.content == b"some model bytes"

    @pytest.mark.parametrize(
        ("path", "status"),
        [
            ("0" * 64, {404}),  # well formed, not stored
            ("A" * 64, {400}),  # upper case is not a digest this store writes
            ("0" * 63, {400}),
            ("..%2F..%2Fregistry.log", {400, 404}),
            ("%2e%2e", {400, 404}),
        ],
    )
    def test_refuses_anything_but_a_stored_digest(self, registry: Registry, path: str, status: set[int]) -> None:
        """Malformed digests are 400 and missing ones 404, in MLflow's error shape; nothing outside
        blobs/ is ever answered."""
        r = httpx.get(f"{registry.url}{BLOBS}/{path}", timeout=10)
        assert r.status_code in status, r.text
        assert set(r.json()) == {"error_code", "message"}

    def test_is_read_only(self, registry: Registry) -> None:
        """No method but GET reaches the blobs."""
        digest = registry.artifacts.put_bytes(b"read only")
        for method in ("PUT", "POST", "DELETE"):
            r = httpx.request(method, f"{registry.url}{BLOBS}/{digest}", content=b"x", timeout=10)
            assert r.status_code == 404 and r.json()["error_code"] == "ENDPOINT_NOT_FOUND"
        assert registry.artifacts.read_bytes(digest) == b"read only"


class TestRegistryClient:
    def test_fetch_stores_the_verified_file(self, registry: Registry, tmp_path: Path) -> None:
        """A missing blob is downloaded into the local store under its digest."""
        digest = registry.artifacts.put_bytes(b"x" * 300_000)
        local = ArtifactStore(tmp_path / "local")
        RegistryClient(registry.url, max_bytes=1 << 20, timeout_s=10).fetch_artifact(digest, local)
        assert local.read_bytes(digest) == b"x" * 300_000

    def test_tampered_bytes_are_discarded(self, registry: Registry, tmp_path: Path) -> None:
        """Bytes that hash to something else raise ArtifactMismatch and leave no file behind."""
        digest = registry.artifacts.put_bytes(b"original")
        registry.artifacts.path_for(digest).write_bytes(b"tampered")
        local = ArtifactStore(tmp_path / "local")
        with pytest.raises(ArtifactMismatch, match="hash to"):
            RegistryClient(registry.url, max_bytes=1 << 20, timeout_s=10).fetch_artifact(digest, local)
        assert not local.exists(digest)
        assert [p for p in local.root.rglob("*") if p.is_file()] == []

    def test_oversized_missing_and_unreachable_fail_cleanly(self, registry: Registry, tmp_path: Path) -> None:
        """Over the size limit, not on the server, or no server at all: ArtifactFetchFailed, nothing stored."""
        digest = registry.artifacts.put_bytes(b"y" * 5000)
        local = ArtifactStore(tmp_path / "local")
        with pytest.raises(ArtifactFetchFailed, match="over the limit"):
            RegistryClient(registry.url, max_bytes=4096, timeout_s=10).fetch_artifact(digest, local)
        with pytest.raises(ArtifactFetchFailed, match=r"404.*not found"):
            RegistryClient(registry.url, max_bytes=4096, timeout_s=10).fetch_artifact("1" * 64, local)
        with pytest.raises(ArtifactFetchFailed, match="could not be fetched"):
            RegistryClient(f"http://127.0.0.1:{free_port()}", max_bytes=4096, timeout_s=10).fetch_artifact(digest, local)
        with pytest.raises(InvalidArtifactPath):
            RegistryClient(registry.url, max_bytes=4096, timeout_s=10).fetch_artifact("../x", local)
        assert [p for p in local.root.rglob("*") if p.is_file()] == []


def test_mlflow_registration_reaches_replicas_with_empty_disks(
    registry: Registry, replicas: tuple[GatewayProcess, GatewayProcess], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A model logged and registered through the real mlflow client against the registry service, then
    made champion, is served by both replicas, each holding a verified copy of the file."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    mlflow.set_tracking_uri(registry.url)
    mlflow.set_experiment("scale-out")
    model = build_mlp(21)
    with mlflow.start_run() as run, tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        path.write_bytes(model)
        mlflow.log_artifact(str(path), artifact_path="model")
    client = MlflowClient()
    client.create_registered_model("scaled")
    mv = client.create_model_version("scaled", f"runs:/{run.info.run_id}/model", run_id=run.info.run_id)
    started = time.monotonic()
    client.set_registered_model_alias("scaled", "champion", mv.version)
    for gw in replicas:
        wait_for(gw, "scaled", str(mv.version), started)
        blob = local_blob(gw, hashlib.sha256(model).hexdigest())
        assert blob.read_bytes() == model


def test_tampered_artifact_is_refused_and_the_route_keeps_its_version(
    registry: Registry, replicas: tuple[GatewayProcess, GatewayProcess], tmp_path: Path
) -> None:
    """Version 2's file is altered on the registry's disk, then v2 is made champion: both replicas
    refuse the download (hash mismatch), keep serving v1, and say so in /health, /metrics and the log.
    Once the file is whole again, the retry brings v2 in without any further registry change."""
    registry.cli("models", "register", "guarded", str(model_file(tmp_path, 31)))
    registry.cli("models", "promote", "guarded", "1", "--alias", "champion")
    started = time.monotonic()
    for gw in replicas:
        wait_for(gw, "guarded", "1", started)
    second = model_file(tmp_path, 32)
    registry.cli("models", "register", "guarded", str(second))
    digest = hashlib.sha256(second.read_bytes()).hexdigest()
    blob = registry.artifacts.path_for(digest)
    blob.write_bytes(model_file(tmp_path, 33).read_bytes())  # a valid model, but not the registered one
    registry.cli("models", "promote", "guarded", "2", "--alias", "champion")

    for gw in replicas:
        deadline = time.monotonic() + CONVERGE_S
        while "guarded/2" not in (health := httpx.get(f"{gw.url}/health", timeout=10).json())["load_failures"]:
            assert time.monotonic() < deadline, health
            time.sleep(0.05)
        assert "ArtifactMismatch" in health["load_failures"]["guarded/2"]
        assert health["routes"]["guarded"]["version"] == "1"
        assert served_version(gw, "guarded") == "1"
        assert not local_blob(gw, digest).exists()
        metrics = httpx.get(f"{gw.url}/metrics", timeout=10).text
        failed = [line for line in metrics.splitlines() if line.startswith("gateway_model_loads_total{")
                  and all(label in line for label in ('model="guarded"', 'version="2"', 'outcome="failed"'))]
        assert failed and float(failed[0].rsplit(" ", 1)[1]) >= 1, metrics
        assert "bytes received hash to" in gw.output() and "still serving its previous table" in gw.output()

    blob.write_bytes(second.read_bytes())
    started = time.monotonic()
    for gw in replicas:
        wait_for(gw, "guarded", "2", started, limit=15.0)  # the first retries back off 1 s, 2 s, 4 s
        assert "guarded/2" not in httpx.get(f"{gw.url}/health", timeout=10).json()["load_failures"]


def test_route_changes_converge_on_both_replicas(
    registry: Registry, replicas: tuple[GatewayProcess, GatewayProcess], tmp_path: Path
) -> None:
    """Twenty route changes written through replica A: each is served by A and B within a bounded delay.
    Prints the measured delays (median and max), which the README quotes."""
    a, b = replicas
    registry.cli("models", "register", "conv", str(model_file(tmp_path, 41)))
    registry.cli("models", "register", "conv", str(model_file(tmp_path, 42)))
    started = time.monotonic()
    for gw in replicas:
        wait_for(gw, "conv", "2", started)  # the newest version, until a route says otherwise
    delays: dict[str, list[float]] = {"A": [], "B": []}
    rng = random.Random(8)
    for i in range(20):
        version = "1" if i % 2 == 0 else "2"
        time.sleep(rng.uniform(0, float(POLL_S)))  # changes land at any phase of B's poll, as in production
        started = time.monotonic()
        r = httpx.put(f"{a.url}/admin/routes/conv", json={"model": "conv", "arms": [{"version": version, "weight": 1}]},
                      timeout=10)
        assert r.status_code == 200, r.text
        delays["A"].append(wait_for(a, "conv", version, started))
        delays["B"].append(wait_for(b, "conv", version, started))
    for name, values in delays.items():
        print(f"\nreplica {name}, --poll-interval {POLL_S}: route change served after median "
              f"{statistics.median(values) * 1000:.0f} ms, max {max(values) * 1000:.0f} ms (n={len(values)})")
