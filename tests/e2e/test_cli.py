"""The `gateway` CLI as a user runs it: subprocesses, environment variables, a shared registry."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from gateway.demo import build_mlp
from tests.e2e.conftest import run_cli, start_gateway, wait_until_ready


def blobs(data_dir: Path) -> list[Path]:
    return [p for p in (data_dir / "artifacts").rglob("*") if p.is_file()] if (data_dir / "artifacts").exists() else []


class TestHelp:
    def test_help_lists_commands(self, tmp_path: Path) -> None:
        """`gateway --help` names every command group."""
        out = run_cli(tmp_path, "--help").stdout
        assert "serve" in out and "models" in out

    def test_serve_help_lists_flags(self, tmp_path: Path) -> None:
        """`gateway serve --help` documents the flags the issue names."""
        out = run_cli(tmp_path, "serve", "--help").stdout
        for flag in ("--host", "--port", "--workers", "--registry", "--data-dir", "--demo"):
            assert flag in out

    def test_invalid_flag_names_the_flag(self, tmp_path: Path) -> None:
        """An invalid value is refused with a message naming the flag."""
        proc = run_cli(tmp_path, "serve", "--port", "70000", check=False)
        assert proc.returncode == 2
        assert "--port" in proc.stderr


class TestModels:
    def test_register_list_promote(self, tmp_path: Path) -> None:
        """Register two versions, promote by stage and alias, and see it in `models list --json`."""
        model = tmp_path / "m.onnx"
        model.write_bytes(build_mlp(5))
        assert "version 1" in run_cli(tmp_path, "models", "register", "scorer", str(model)).stdout
        model.write_bytes(build_mlp(6))
        run_cli(tmp_path, "models", "register", "scorer", str(model), "--tag", "team=risk", "--description", "v2")
        run_cli(tmp_path, "models", "promote", "scorer", "1", "--stage", "production")
        run_cli(tmp_path, "models", "promote", "scorer", "2", "--alias", "challenger")
        rows = json.loads(run_cli(tmp_path, "models", "list", "--json").stdout)
        by_version = {r["version"]: r for r in rows}
        assert by_version[1]["stage"] == "Production" and by_version[1]["serving"]
        assert by_version[2]["aliases"] == ["challenger"] and not by_version[2]["serving"]
        table = run_cli(tmp_path, "models", "list").stdout
        assert "scorer" in table and "challenger" in table

    @pytest.mark.parametrize("content", [b"", b"not an onnx model", build_mlp(1)[:200]])
    def test_corrupt_file_is_rejected_and_nothing_written(self, tmp_path: Path, content: bytes) -> None:
        """Empty, garbage and truncated files are refused; no version row and no artifact is left behind."""
        good = tmp_path / "good.onnx"
        good.write_bytes(build_mlp(1))
        run_cli(tmp_path, "models", "register", "scorer", str(good))
        before = blobs(tmp_path)
        bad = tmp_path / "bad.onnx"
        bad.write_bytes(content)
        proc = run_cli(tmp_path, "models", "register", "scorer", str(bad), check=False)
        assert proc.returncode == 1
        assert "onnx" in proc.stderr.lower()
        rows = json.loads(run_cli(tmp_path, "models", "list", "--json").stdout)
        assert [r["version"] for r in rows] == [1]
        assert blobs(tmp_path) == before

    def test_promote_unknown_version_fails_cleanly(self, tmp_path: Path) -> None:
        """Promoting a version that does not exist exits 1 with the registry's message."""
        model = tmp_path / "m.onnx"
        model.write_bytes(build_mlp(5))
        run_cli(tmp_path, "models", "register", "scorer", str(model))
        proc = run_cli(tmp_path, "models", "promote", "scorer", "9", "--alias", "champion", check=False)
        assert proc.returncode == 1
        assert "9" in proc.stderr

    def test_registry_url_env_is_shared_with_the_gateway(self, tmp_path: Path, postgres_url: str) -> None:
        """With GATEWAY_REGISTRY_URL on PostgreSQL, the CLI registers and a gateway serves from the same registry."""
        env = {"GATEWAY_REGISTRY_URL": postgres_url}
        model = tmp_path / "m.onnx"
        model.write_bytes(build_mlp(5))
        run_cli(tmp_path, "models", "register", "pgmodel", str(model), **env)
        gw = start_gateway(tmp_path, **env)
        try:
            r = httpx.post(f"{gw.url}/v1/models/pgmodel:predict", json={"instances": [[0.1] * 32]})
            assert r.status_code == 200, r.text
            assert len(r.json()["predictions"]) == 1
        finally:
            assert gw.stop() == 0


def test_serve_with_two_workers_serves_and_stops_cleanly(tmp_path: Path) -> None:
    """`serve --workers 2` shares the port between two processes and exits 0 on SIGTERM."""
    gw = start_gateway(tmp_path / "gw", "--demo", "--workers", "2", wait_ready=False)
    wait_until_ready(gw, in_a_row=30)  # both workers: one ready worker answered 200 while the other still loaded
    try:
        with httpx.Client(base_url=gw.url) as client:
            for _ in range(20):
                r = client.post("/v1/models/churn:predict", json={"instances": [[0.2] * 32]})
                assert r.status_code == 200, r.text
    finally:
        assert gw.stop() == 0
    assert gw.output().count("Application startup complete") == 2


def test_serve_reads_gateway_flag_env_vars(tmp_path: Path) -> None:
    """Every serve flag reads GATEWAY_<FLAG> (the Kubernetes ConfigMap's names), e.g. GATEWAY_GRACEFUL_TIMEOUT."""
    for env, flag in (("GATEWAY_GRACEFUL_TIMEOUT", "--graceful-timeout"), ("GATEWAY_POLL_INTERVAL", "--poll-interval"),
                      ("GATEWAY_PORT", "--port")):
        proc = run_cli(tmp_path, "serve", check=False, **{env: "-1"})
        assert proc.returncode == 2, (env, proc.stderr)
        assert flag in proc.stderr


def test_registry_serve_alone_speaks_mlflow(tmp_path: Path) -> None:
    """`gateway registry serve` answers the MLflow API on its own, with MLflow's error shape."""
    import subprocess
    import sys
    import time

    from tests.e2e.conftest import cli_env, free_port

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "gateway", "registry", "serve", "--port", str(port)],
                            env=cli_env(tmp_path), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}/api/2.0/mlflow"
        deadline = time.monotonic() + 30
        while True:
            try:
                r = httpx.get(f"{url}/experiments/get-by-name", params={"experiment_name": "nope"})
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline and proc.poll() is None, "registry serve did not start"
                time.sleep(0.05)
        assert r.status_code == 404 and r.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"
        created = httpx.post(f"{url}/experiments/create", json={"name": "alone"})
        assert created.status_code == 200 and created.json()["experiment_id"]
    finally:
        proc.terminate()
        proc.wait(timeout=30)
