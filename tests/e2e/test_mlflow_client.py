"""The real `mlflow` client against the registry's MLflow API on a real socket, on SQLite and PostgreSQL:
the tracking and registry scenario, the promoted version served by `gateway serve`, error codes,
concurrent writers, and durability across kill -9."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import mlflow
import numpy as np
import pytest
import uvicorn
from mlflow import MlflowClient
from mlflow.data.http_dataset_source import HTTPDatasetSource
from mlflow.data.meta_dataset import MetaDataset
from mlflow.entities import Metric
from mlflow.exceptions import MlflowException
from mlflow.protos.service_pb2 import LogMetric
from mlflow.utils.rest_utils import MlflowHostCreds, call_endpoint

from registry.api import create_registry_app
from registry.lineage import lineage
from registry.store import RegistryStore
from tests.e2e.conftest import start_gateway

REPO_ROOT = Path(__file__).resolve().parents[2]
WEIGHTS = (np.arange(8, dtype=np.float32).reshape(4, 2) / 10).astype(np.float32)  # demo_onnx_bytes' MatMul


@pytest.fixture(autouse=True)
def mlflow_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No retries and short timeouts, so a failure fails in seconds instead of backing off for minutes."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.setenv("DO_NOT_TRACK", "true")


@dataclass(frozen=True)
class RegistryServer:
    url: str
    database_url: str
    data_dir: Path  # artifacts under data_dir/artifacts, where `gateway serve --data-dir` looks

    def client(self) -> MlflowClient:
        return MlflowClient(tracking_uri=self.url, registry_uri=self.url)


def listening_socket() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    return sock


@pytest.fixture
def registry_server(registry_url: str, tmp_path: Path) -> Iterator[RegistryServer]:
    """create_registry_app under a real uvicorn.Server in a thread, on a pre-bound socket; ready when
    the server says it has started."""
    data_dir = tmp_path / "gw"
    sock = listening_socket()
    server = uvicorn.Server(uvicorn.Config(create_registry_app(registry_url, data_dir / "artifacts"), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the registry server did not start"
        time.sleep(0.005)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    mlflow.set_tracking_uri(url)
    yield RegistryServer(url, registry_url, data_dir)
    server.should_exit = True
    thread.join(timeout=30)
    sock.close()


def rest_error(call: object) -> MlflowException:
    with pytest.raises(MlflowException) as info:
        call()  # type: ignore[operator]
    return info.value


class TestScenario:
    @pytest.mark.filterwarnings("ignore:.*deprecated since 2.9.0:FutureWarning")  # stages, still in the scope
    def test_track_register_promote_and_serve(
        self, registry_server: RegistryServer, tmp_path: Path, demo_onnx_bytes: bytes
    ) -> None:
        """The documented client scenario end to end, after which `gateway serve` answers with the
        promoted version and lineage leads from it to the run and its dataset."""
        model_file = tmp_path / "model.onnx"
        model_file.write_bytes(demo_onnx_bytes)
        (tmp_path / "notes.txt").write_text("trained on 2024 data")

        experiment = mlflow.set_experiment("churn_prediction")
        assert (experiment.experiment_id, experiment.lifecycle_stage) == ("1", "active")
        with mlflow.start_run() as active:
            mlflow.log_param("max_depth", 6)
            mlflow.log_metric("auc", 0.91)
            for step in range(5):
                mlflow.log_metric("loss", 1.0 / (step + 1), step=step)
            mlflow.log_metrics({"precision": 0.8, "recall": 0.7})
            mlflow.set_tag("team", "retention")
            mlflow.log_artifact(str(model_file), artifact_path="model")
            mlflow.log_artifact(str(tmp_path / "notes.txt"), artifact_path="docs")
            dataset = MetaDataset(HTTPDatasetSource("https://data.example/churn.csv"), name="churn-2024", digest="d1g3st")
            mlflow.log_input(dataset, context="training")
        run_id = active.info.run_id

        client = registry_server.client()
        found = client.search_runs(["1"], "metrics.auc > 0.9 and params.max_depth = '6'", order_by=["metrics.auc DESC"])
        assert [r.info.run_id for r in found] == [run_id]
        run = found[0]
        assert run.info.status == "FINISHED" and run.info.end_time
        assert run.data.params == {"max_depth": "6"} and run.data.tags["team"] == "retention"
        assert run.data.metrics == {"auc": 0.91, "loss": 0.2, "precision": 0.8, "recall": 0.7}
        assert [(i.dataset.name, i.dataset.digest, i.tags[0].value) for i in run.inputs.dataset_inputs] == [
            ("churn-2024", "d1g3st", "training")
        ]
        history = client.get_metric_history(run_id, "loss")
        assert [(m.step, m.value) for m in history] == [(s, 1.0 / (s + 1)) for s in range(5)]
        assert {f.path for f in client.list_artifacts(run_id)} == {"model", "docs"}
        assert [f.path for f in client.list_artifacts(run_id, "model")] == ["model/model.onnx"]

        client.create_registered_model("churn_model")
        mv = client.create_model_version("churn_model", f"runs:/{run_id}/model", run_id=run_id)
        assert (mv.version, mv.status, mv.current_stage) == ("1", "READY", "None")
        client.transition_model_version_stage("churn_model", "1", "Staging")
        assert client.transition_model_version_stage("churn_model", "1", "Production").current_stage == "Production"
        client.set_registered_model_alias("churn_model", "champion", "1")
        champion = client.get_model_version_by_alias("churn_model", "champion")
        assert (champion.version, champion.aliases, champion.run_id) == ("1", ["champion"], run_id)
        assert [v.version for v in client.search_model_versions("name='churn_model'")] == ["1"]
        assert [v.version for v in client.get_latest_versions("churn_model", stages=["Production"])] == ["1"]

        store = RegistryStore(registry_server.database_url)
        try:
            serving = store.resolve_serving_version("churn_model")
            assert serving is not None and serving.version == 1
            assert serving.artifact_sha256 == hashlib.sha256(demo_onnx_bytes).hexdigest()
            chain = lineage(store, "churn_model", 1)
        finally:
            store.close()
        assert (chain["run"]["run_id"], chain["run"]["params"], chain["datasets"][0]["digest"]) == (
            run_id, {"max_depth": "6"}, "d1g3st"
        )

        gateway = start_gateway(registry_server.data_dir, "--registry", registry_server.database_url)
        try:
            rows = [[1.0, 2.0, 3.0, 4.0], [0.0, 0.5, 0.0, -1.0]]
            r = httpx.post(f"{gateway.url}/v1/models/churn_model:predict", json={"instances": rows}, timeout=30)
            assert r.status_code == 200, r.text
            assert r.headers["x-gateway-model-version"] == "1"
            np.testing.assert_allclose(r.json()["predictions"], np.asarray(rows, dtype=np.float32) @ WEIGHTS, rtol=1e-6)
        finally:
            gateway.stop()

    def test_paging_through_the_client(self, registry_server: RegistryServer) -> None:
        """MlflowClient.search_runs follows next_page_token to the last page, which has none."""
        client = registry_server.client()
        experiment_id = client.create_experiment("paging")
        created = {client.create_run(experiment_id).info.run_id for _ in range(5)}
        seen: list[str] = []
        token = None
        while True:
            page = client.search_runs([experiment_id], max_results=2, page_token=token)
            seen += [r.info.run_id for r in page]
            token = page.token
            if not token:
                break
        assert len(seen) == 5 and set(seen) == created

    def test_unservable_version(self, registry_server: RegistryServer) -> None:
        """A version from a source with no .onnx file is created READY but the gateway never serves it."""
        client = registry_server.client()
        client.create_registered_model("sk")
        mv = client.create_model_version("sk", "s3://bucket/sklearn-model")
        assert (mv.version, mv.status) == ("1", "READY") and "no .onnx file" in (mv.status_message or "")
        store = RegistryStore(registry_server.database_url)
        try:
            assert store.resolve_serving_version("sk") is None
        finally:
            store.close()


class TestErrors:
    def test_client_exceptions_carry_mlflow_codes(self, registry_server: RegistryServer) -> None:
        """Unknown run, duplicate model, changed param, bad filter and a non-numeric metric value raise
        the client's MlflowException with MLflow's error codes."""
        client = registry_server.client()
        run = client.create_run("0")
        assert rest_error(lambda: client.get_run("0" * 32)).error_code == "RESOURCE_DOES_NOT_EXIST"
        client.create_registered_model("dup")
        assert rest_error(lambda: client.create_registered_model("dup")).error_code == "RESOURCE_ALREADY_EXISTS"
        client.log_param(run.info.run_id, "depth", "6")
        changed = rest_error(lambda: client.log_param(run.info.run_id, "depth", "7"))
        assert changed.error_code == "INVALID_PARAMETER_VALUE" and "Changing param values" in changed.message
        bad_filter = rest_error(lambda: client.search_runs(["0"], "metrics.auc >"))
        assert bad_filter.error_code == "INVALID_PARAMETER_VALUE"
        body = json.dumps({"run_id": run.info.run_id, "key": "auc", "value": "high", "timestamp": 1, "step": 0})
        bad_metric = rest_error(
            lambda: call_endpoint(MlflowHostCreds(registry_server.url), "/api/2.0/mlflow/runs/log-metric", "POST",
                                  body, LogMetric.Response())
        )
        assert bad_metric.error_code == "INVALID_PARAMETER_VALUE" and "'high'" in bad_metric.message
        assert client.get_experiment_by_name("nope") is None  # the client's reading of a 404

    def test_http_shapes(self, registry_server: RegistryServer) -> None:
        """Unknown endpoints (and known paths with another method) are 404 ENDPOINT_NOT_FOUND; artifact
        paths cannot escape the store."""
        with httpx.Client(base_url=registry_server.url, timeout=10) as http:
            for method, path in [("GET", "/api/2.0/mlflow/nope"), ("DELETE", "/api/2.0/mlflow/runs/get"),
                                 ("POST", "/api/2.0/mlflow-artifacts/nope")]:
                r = http.request(method, path)
                assert (r.status_code, r.json()["error_code"]) == (404, "ENDPOINT_NOT_FOUND")
            r = http.get("/api/2.0/mlflow/experiments/get-by-name", params={"experiment_name": "x"})
            assert (r.status_code, r.json()["error_code"]) == (404, "RESOURCE_DOES_NOT_EXIST")
            r = http.post("/api/2.0/mlflow/runs/create", content=b"{not json")
            assert (r.status_code, r.json()["error_code"]) == (400, "INVALID_PARAMETER_VALUE")
            r = http.put("/api/2.0/mlflow-artifacts/artifacts/%2E%2E/escape.txt", content=b"x")
            assert (r.status_code, r.json()["error_code"]) == (400, "INVALID_PARAMETER_VALUE")
            assert http.get("/api/2.0/mlflow/metrics/get-history",
                            params={"run_id": "0" * 32, "metric_key": "m"}).status_code == 404


class TestConcurrency:
    def test_concurrent_clients_lose_nothing(self, registry_server: RegistryServer) -> None:
        """Eight clients logging to one shared run and their own runs at once: every value is stored."""
        setup = registry_server.client()
        shared = setup.create_run("0").info.run_id
        errors: list[BaseException] = []

        def worker(n: int) -> None:
            try:
                client = registry_server.client()
                own = client.create_run("0").info.run_id
                for step in range(15):
                    client.log_metric(shared, f"w{n}", float(step), step=step)
                    client.log_metric(own, "m", float(step), step=step)
                client.log_batch(shared, metrics=[Metric("batch", float(n * 100 + i), 1, n * 100 + i) for i in range(100)])
                client.log_param(shared, f"p{n}", str(n))
                client.set_tag(own, "worker", str(n))
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        run = setup.get_run(shared)
        assert len(run.data.params) == 8 and run.data.metrics["batch"] == 799.0
        assert len(setup.get_metric_history(shared, "batch")) == 800
        assert all(len(setup.get_metric_history(shared, f"w{n}")) == 15 for n in range(8))
        workers = setup.search_runs(["0"], "tags.worker LIKE '%'")
        assert len(workers) == 8 and all(r.data.metrics["m"] == 14.0 for r in workers)


@dataclass
class ServerProcess:
    """A registry server subprocess serving on a socket the test owns."""

    sock: socket.socket
    database_url: str
    artifacts_dir: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def start(self) -> None:
        fd = self.sock.fileno()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.e2e.registry_server", str(fd), self.database_url, str(self.artifacts_dir)],
            pass_fds=[fd], cwd=REPO_ROOT, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        )

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class TestDurability:
    def test_acknowledged_writes_survive_kill_9(self, registry_url: str, tmp_path: Path) -> None:
        """Every write the server acknowledged before it was killed with SIGKILL is there after a restart
        on the same database; the writer keeps logging until the kill cuts it off."""
        server = ServerProcess(listening_socket(), registry_url, tmp_path / "artifacts")
        server.start()
        try:
            client = MlflowClient(tracking_uri=server.url)
            run_id = client.create_run("0").info.run_id
            acked: list[tuple[str, int]] = []
            enough, stop = threading.Event(), threading.Event()

            def write() -> None:
                step = 0
                while not stop.is_set():
                    try:
                        if step % 10 == 9:
                            client.log_batch(run_id, metrics=[Metric("b", float(step), 1, step * 100 + i) for i in range(100)])
                            acked.append(("b", step))
                        elif step % 5 == 4:
                            client.log_param(run_id, f"p{step}", str(step))
                            acked.append(("p", step))
                        else:
                            client.log_metric(run_id, "m", float(step), step=step)
                            acked.append(("m", step))
                    except MlflowException:
                        return  # the kill cut this request off; it was never acknowledged
                    step += 1
                    if step == 150:
                        enough.set()

            writer = threading.Thread(target=write)
            writer.start()
            assert enough.wait(timeout=60), "the writer made no progress"
            server.kill()
            stop.set()
            server.start()  # a request queued on the socket meanwhile is answered (and acknowledged) by this one
            writer.join(timeout=60)
            assert not writer.is_alive()

            restarted = MlflowClient(tracking_uri=server.url)
            run = restarted.get_run(run_id)
            metric_steps = {m.step for m in restarted.get_metric_history(run_id, "m")}
            batch_steps = {m.step for m in restarted.get_metric_history(run_id, "b")}
            assert len(acked) >= 150
            for kind, step in acked:
                if kind == "m":
                    assert step in metric_steps, f"acknowledged metric step {step} was lost"
                elif kind == "p":
                    assert run.data.params[f"p{step}"] == str(step)
                else:
                    assert {step * 100 + i for i in range(100)} <= batch_steps, f"acknowledged batch {step} was lost"
        finally:
            server.stop()
            server.sock.close()
