"""`gateway features ...` and `gateway models register --features/--reference` as a user runs them:
subprocesses sharing a registry through GATEWAY_DATA_DIR, a real Redis, and a real `gateway serve`."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import redis
from onnx import TensorProto, helper

from featurestore.online import StoreOptions, open_online_store
from featurestore.views import FeatureView, compile_read_plan
from gateway.demo import build_fraud, build_mlp
from registry.serving import ServingMetadata
from registry.store import RegistryStore
from tests.e2e.conftest import cli_env, run_cli, start_gateway

VIEWS_YAML = """\
# the two views the churn-like model reads
- name: user_features
  entity: user_id
  ttl_seconds: 86400
  features:
    - {name: age, dtype: float32, default: 35}
    - {name: tenure_months, dtype: float32, default: 0.0}
- name: txn_features
  entity: user_id
  ttl_seconds: 3600
  description: rolling aggregates
  features:
    - name: avg_amount
      dtype: float64
      default: 0.0
"""
VIEWS: list[dict[str, Any]] = [
    {"name": "user_features", "entity": "user_id", "ttl_seconds": 86400,
     "features": [{"name": "age", "dtype": "float32", "default": 35.0},
                  {"name": "tenure_months", "dtype": "float32", "default": 0.0}]},
    {"name": "txn_features", "entity": "user_id", "ttl_seconds": 3600, "description": "rolling aggregates",
     "features": [{"name": "avg_amount", "dtype": "float64", "default": 0.0}]},
]
REFS = "user_features:age,user_features:tenure_months,txn_features:avg_amount,request:amount"


def list_views(data_dir: Path) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in json.loads(run_cli(data_dir, "features", "list", "--json").stdout)}


def versions(data_dir: Path) -> list[tuple[str, int]]:
    return [(r["name"], r["version"]) for r in json.loads(run_cli(data_dir, "models", "list", "--json").stdout)]


def blobs(data_dir: Path) -> list[Path]:
    root = data_dir / "artifacts"
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def meta(data_dir: Path) -> tuple[RegistryStore, ServingMetadata]:
    store = RegistryStore(f"sqlite:///{(data_dir / 'registry.db').resolve()}")
    return store, ServingMetadata(store)


def write_users(path: Path, users: range, *, extra: str = "") -> dict[int, tuple[float, float]]:
    rows = {u: (float(18 + u % 60), float(u % 120)) for u in users}
    path.write_text("user_id,age,tenure_months\n" + "".join(f"{u},{a},{t}\n" for u, (a, t) in rows.items()) + extra)
    return rows


def fraud_file(tmp_path: Path) -> Path:
    path = tmp_path / "fraud.onnx"
    path.write_bytes(build_fraud())  # FP32 "features" [batch, 4] -> "probability" [batch, 1]
    return path


def int_model(tmp_path: Path) -> Path:
    """INT64 "ids" [batch, 2] -> Identity."""
    graph = helper.make_graph(
        [helper.make_node("Identity", ["ids"], ["out"])], "ints",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", 2])],
        [helper.make_tensor_value_info("out", TensorProto.INT64, ["batch", 2])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    path = tmp_path / "ints.onnx"
    path.write_bytes(model.SerializeToString())
    onnx.checker.check_model(model)
    return path


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "registry"


@pytest.fixture
def applied(tmp_path: Path, data_dir: Path) -> Path:
    views = tmp_path / "views.yaml"
    views.write_text(VIEWS_YAML)
    run_cli(data_dir, "features", "apply", str(views))
    return data_dir


class TestApply:
    def test_yaml_apply_then_list(self, tmp_path: Path, applied: Path) -> None:
        """Views from YAML are stored in the contract shape, audited as cli:<user>, and listed."""
        stored = list_views(applied)
        for view in VIEWS:
            got = {k: v for k, v in stored[view["name"]].items() if k not in ("updated_ms", "updated_by")}
            assert got == view
        assert stored["user_features"]["updated_by"].startswith("cli:")
        table = run_cli(applied, "features", "list").stdout
        assert "user_features" in table and "age:float32=35.0" in table and "1h" in table

    def test_json_apply_and_unchanged_rerun(self, tmp_path: Path, data_dir: Path) -> None:
        """The same list as JSON gives the same views; applying it again changes nothing."""
        path = tmp_path / "views.json"
        path.write_text(json.dumps(VIEWS))
        first = run_cli(data_dir, "features", "apply", str(path)).stdout
        assert "user_features: created" in first and "txn_features: created" in first
        stamp = list_views(data_dir)["user_features"]["updated_ms"]
        again = run_cli(data_dir, "features", "apply", str(path)).stdout
        assert "user_features: unchanged" in again
        assert list_views(data_dir)["user_features"]["updated_ms"] == stamp

    def test_update_replaces_a_view(self, tmp_path: Path, applied: Path) -> None:
        path = tmp_path / "v2.json"
        path.write_text(json.dumps([{**VIEWS[0], "ttl_seconds": 7200}]))
        assert "user_features: updated" in run_cli(applied, "features", "apply", str(path)).stdout
        assert list_views(applied)["user_features"]["ttl_seconds"] == 7200

    @pytest.mark.parametrize(
        ("views", "needle"),
        [
            ([{**VIEWS[0], "features": [{"name": "age", "dtype": "float16"}]}], "features[0].dtype"),
            ([{k: v for k, v in VIEWS[0].items() if k != "entity"}], "entity"),
            ([{**VIEWS[0], "ttl_seconds": -1}], "ttl_seconds"),
            ([VIEWS[1], {k: v for k, v in VIEWS[0].items() if k != "name"}], "views[1].name"),
            ([VIEWS[0], VIEWS[0]], "appears twice"),
            ({"name": "x"}, "list of feature views"),
        ],
    )
    def test_invalid_file_stores_nothing(self, tmp_path: Path, data_dir: Path, views: object, needle: str) -> None:
        """One bad view anywhere in the file: exit 1 naming the field, and no view is stored."""
        path = tmp_path / "bad.json"
        path.write_text(json.dumps(views))
        proc = run_cli(data_dir, "features", "apply", str(path), check=False)
        assert proc.returncode == 1, proc.stdout
        assert needle in proc.stderr
        assert list_views(data_dir) == {}

    def test_json_works_without_pyyaml_and_yaml_says_what_it_needs(self, tmp_path: Path, data_dir: Path) -> None:
        """With pyyaml unimportable, a JSON file still applies and a YAML file gets an install hint."""
        as_json, as_yaml = tmp_path / "views.json", tmp_path / "views.yaml"
        as_json.write_text(json.dumps(VIEWS))
        as_yaml.write_text(VIEWS_YAML)
        no_yaml = "import sys; sys.modules['yaml'] = None; from gateway.cli import main; main()"

        def run(path: Path) -> subprocess.CompletedProcess[str]:
            return subprocess.run([sys.executable, "-c", no_yaml, "features", "apply", str(path)],
                                  env=cli_env(data_dir), capture_output=True, text=True, timeout=60)

        assert run(as_json).returncode == 0
        assert set(list_views(data_dir)) == {"user_features", "txn_features"}
        proc = run(as_yaml)
        assert proc.returncode == 1 and "pyyaml" in proc.stderr


class TestRegisterWithFeatures:
    @pytest.mark.parametrize(
        ("refs", "needle"),
        [
            ("user_features:age,user_features:tenure_months,request:amount", "4 columns but 3 features"),
            ("user_features:age,user_features:nope,txn_features:avg_amount,request:amount", "no feature 'nope'"),
            ("user_features:age,ghost:x,txn_features:avg_amount,request:amount", "no feature view named 'ghost'"),
            ("user_features:age,user_features:age,txn_features:avg_amount,request:amount", "listed twice"),
            ("user_features:age,tenure,txn_features:avg_amount,request:amount", "expected 'view:feature'"),
        ],
    )
    def test_mismatch_writes_nothing(self, tmp_path: Path, applied: Path, refs: str, needle: str) -> None:
        """Declared features that do not fit the model (or do not exist) are refused before any write:
        no model, no version, no artifact."""
        proc = run_cli(applied, "models", "register", "fraud", str(fraud_file(tmp_path)), "--features", refs, check=False)
        assert proc.returncode in (1, 2), proc.stdout
        assert needle in proc.stderr
        assert versions(applied) == []
        assert blobs(applied) == []

    def test_dtype_mismatch_names_the_feature(self, tmp_path: Path, applied: Path) -> None:
        """A float feature cannot fill an INT64 input; an existing model gets no new version."""
        run_cli(applied, "models", "register", "ints", str(int_model(tmp_path)))
        proc = run_cli(applied, "models", "register", "ints", str(int_model(tmp_path)),
                       "--features", "user_features:age,request:n", check=False)
        assert proc.returncode == 1
        assert "user_features:age" in proc.stderr and "int64" in proc.stderr
        assert versions(applied) == [("ints", 1)]

    def test_bad_reference_writes_nothing(self, tmp_path: Path, applied: Path) -> None:
        """A reference CSV without a declared feature's column is refused before anything is written."""
        ref = tmp_path / "ref.csv"
        ref.write_text("age,tenure_months,amount\n30,2,10\n40,5,20\n")
        proc = run_cli(applied, "models", "register", "fraud", str(fraud_file(tmp_path)), "--features", REFS,
                       "--reference", str(ref), check=False)
        assert proc.returncode == 1 and "avg_amount" in proc.stderr
        assert versions(applied) == [] and blobs(applied) == []

    def test_version_features_and_profile_are_one_registry_change(self, tmp_path: Path, applied: Path) -> None:
        """`register --features --reference` moves the change counter once: replicas polling it see the
        version together with its features and profile, never without them."""
        ref = tmp_path / "ref.csv"
        ref.write_text("age,tenure_months,avg_amount,amount\n30,2,10,1\n40,5,20,2\n50,9,30,3\n")
        store, m = meta(applied)
        try:
            before = store.change_counter()
            run_cli(applied, "models", "register", "fraud", str(fraud_file(tmp_path)), "--features", REFS,
                    "--reference", str(ref))
            assert store.change_counter() == before + 1
            assert m.get_model_features("fraud", 1) == tuple(REFS.split(","))
            assert m.get_reference_profile("fraud", 1) is not None
        finally:
            store.close()

    def test_profile_for_an_existing_version(self, tmp_path: Path, data_dir: Path) -> None:
        """`models profile` stores a profile over the model's input columns, named by the CSV header."""
        model = tmp_path / "m.onnx"
        model.write_bytes(build_mlp(3, features=4, hidden=(8,)))
        run_cli(data_dir, "models", "register", "plain", str(model))
        ref = tmp_path / "ref.csv"
        rng = np.random.default_rng(0)
        ref.write_text("a,b,c,d\n" + "".join(",".join(f"{x:.4f}" for x in row) + "\n" for row in rng.standard_normal((200, 4))))
        out = run_cli(data_dir, "models", "profile", "plain", "1", str(ref), "--bins", "5").stdout
        assert "4 columns (a, b, c, d)" in out
        store, m = meta(data_dir)
        try:
            profile = m.get_reference_profile("plain", 1)
        finally:
            store.close()
        assert profile is not None
        assert [f["name"] for f in profile["features"]] == ["a", "b", "c", "d"]
        assert [o["name"] for o in profile["outputs"]] == ["probability"]
        wrong = tmp_path / "wrong.csv"
        wrong.write_text("a,b\n1,2\n")
        proc = run_cli(data_dir, "models", "profile", "plain", "1", str(wrong), check=False)
        assert proc.returncode == 1 and "4" in proc.stderr and "nothing was stored" in proc.stderr


class TestIngest:
    def test_without_redis_exits_2_and_says_why(self, tmp_path: Path, applied: Path) -> None:
        """No --redis and no GATEWAY_REDIS_URL: a usage error explaining the in-memory store is per process."""
        csv = tmp_path / "u.csv"
        write_users(csv, range(1, 3))
        proc = run_cli(applied, "features", "ingest", "user_features", str(csv), check=False)
        assert proc.returncode == 2
        assert "--redis" in proc.stderr and "in-memory" in proc.stderr

    def test_unknown_view_and_unreachable_redis_fail_cleanly(self, tmp_path: Path, applied: Path, redis_url: str) -> None:
        csv = tmp_path / "u.csv"
        write_users(csv, range(1, 3))
        proc = run_cli(applied, "features", "ingest", "nope", str(csv), "--redis", redis_url, check=False)
        assert proc.returncode == 1 and "user_features" in proc.stderr
        proc = run_cli(applied, "features", "ingest", "user_features", str(csv), "--redis", "redis://127.0.0.1:1/0", check=False)
        assert proc.returncode == 1 and "127.0.0.1:1" in proc.stderr

    def test_rerun_is_idempotent_and_values_are_read_back(self, tmp_path: Path, applied: Path, redis_url: str) -> None:
        """Ingesting the same file twice (second time through GATEWAY_REDIS_URL) leaves one hash per user
        with the file's values."""
        csv = tmp_path / "users.csv"
        rows = write_users(csv, range(1, 2501))
        first = run_cli(applied, "features", "ingest", "user_features", str(csv), "--redis", redis_url, "--batch-size", "300")
        assert "ingested 2,500 rows into user_features in 9 batches" in first.stdout
        assert "rows/s" in first.stdout
        client = redis.Redis.from_url(redis_url)
        keys = sorted(client.scan_iter(match="fv:user_features:*", count=1000))
        run_cli(applied, "features", "ingest", "user_features", str(csv), GATEWAY_REDIS_URL=redis_url)
        assert sorted(client.scan_iter(match="fv:user_features:*", count=1000)) == keys
        assert len(keys) == 2500
        assert 0 < client.pttl(b"fv:user_features:7") <= 2 * 86_400_000  # Redis reclaims keys after 2 x TTL

        view = FeatureView.from_dict("user_features", {k: v for k, v in VIEWS[0].items() if k != "name"})
        plan = compile_read_plan(["user_features:age", "user_features:tenure_months"], {"user_features": view})

        async def read() -> Any:
            store = open_online_store(redis_url, StoreOptions(read_timeout_s=2.0))
            try:
                return await store.read(plan, [{"user_id": u} for u in (1, 1234, 2500, 9999)], time.time_ns() // 1_000_000)
            finally:
                await store.close()

        result = asyncio.run(read())
        np.testing.assert_array_equal(result.rows[:3], [rows[1], rows[1234], rows[2500]])
        np.testing.assert_array_equal(result.rows[3], [35.0, 0.0])  # never ingested: defaults
        assert result.defaulted == 2

    def test_bad_row_names_line_and_column(self, tmp_path: Path, applied: Path, redis_url: str) -> None:
        csv = tmp_path / "bad.csv"
        write_users(csv, range(1, 5), extra="5,old,3\n")
        proc = run_cli(applied, "features", "ingest", "user_features", str(csv), "--redis", redis_url, check=False)
        assert proc.returncode == 1
        assert "line 6" in proc.stderr and "'age'" in proc.stderr

    def test_timestamp_column_sets_event_time(self, tmp_path: Path, applied: Path, redis_url: str) -> None:
        """Rows older than the view's TTL by their --timestamp-column are ingested but read as missing."""
        csv = tmp_path / "ts.csv"
        csv.write_text("user_id,age,tenure_months,seen\n1,50,5,2020-01-01T00:00:00Z\n2,60,6,\n")
        run_cli(applied, "features", "ingest", "user_features", str(csv), "--redis", redis_url, "--timestamp-column", "seen")
        view = FeatureView.from_dict("user_features", {k: v for k, v in VIEWS[0].items() if k != "name"})
        plan = compile_read_plan(["user_features:age"], {"user_features": view}, dtype=object)

        async def read() -> Any:
            store = open_online_store(redis_url, StoreOptions(read_timeout_s=2.0))
            try:
                return await store.read(plan, [{"user_id": 1}, {"user_id": 2}], time.time_ns() // 1_000_000)
            finally:
                await store.close()

        result = asyncio.run(read())
        assert result.rows[:, 0].tolist() == [35.0, 60.0]  # user 1 is stale: the default


class TestEndToEnd:
    def test_apply_ingest_register_serve_and_watch_drift(self, tmp_path: Path, applied: Path, redis_url: str) -> None:
        """The README flow: views from YAML, rows into Redis, a model declaring features with a reference
        profile, then `gateway serve --redis` answers entity-keyed requests and watches drift on them."""
        csv = tmp_path / "users.csv"
        users = write_users(csv, range(1, 201))
        run_cli(applied, "features", "ingest", "user_features", str(csv), "--redis", redis_url)
        txn = tmp_path / "txn.csv"
        txn.write_text("user_id,avg_amount\n" + "".join(f"{u},{u * 1.5}\n" for u in range(1, 101)))
        run_cli(applied, "features", "ingest", "txn_features", str(txn), "--redis", redis_url)
        rng = np.random.default_rng(1)
        ref = tmp_path / "reference.csv"
        ref.write_text("user_id,age,tenure_months,avg_amount,amount\n" + "".join(
            f"{u},{rng.integers(18, 80)},{rng.integers(0, 120)},{rng.gamma(2, 40):.2f},{rng.gamma(2, 30):.2f}\n"
            for u in range(500)))
        out = run_cli(applied, "models", "register", "fraud", str(fraud_file(tmp_path)), "--features", REFS,
                      "--reference", str(ref)).stdout
        assert "declared features: " + REFS.replace(",", ", ") in out
        assert "reference profile: 4 columns" in out and "outputs: probability" in out
        store, m = meta(applied)
        try:
            assert m.get_model_features("fraud", 1) == tuple(REFS.split(","))
            profile = m.get_reference_profile("fraud", 1)
        finally:
            store.close()
        assert profile is not None and [f["name"] for f in profile["features"]] == REFS.split(",")

        gw = start_gateway(applied, "--redis", redis_url, "--drift-flush-interval", "0.05")
        try:
            with httpx.Client(base_url=gw.url, timeout=10) as client:
                r = client.post("/v1/models/fraud:predict",
                                json={"instances": [{"user_id": 5, "amount": 12.5}, {"user_id": 150, "amount": 3.0}]})
                assert r.status_code == 200, r.text
                assert r.headers["x-gateway-features-defaulted"] == "1"  # user 150 has no txn row
                rows = np.array([[*users[5], 7.5, 12.5], [*users[150], 0.0, 3.0]], dtype=np.float32)
                session = ort.InferenceSession(build_fraud(), providers=["CPUExecutionProvider"])
                np.testing.assert_allclose(r.json()["predictions"], session.run(None, {"features": rows})[0], rtol=1e-5)
                for u in range(1, 41):
                    assert client.post("/v1/models/fraud:predict",
                                       json={"instances": [{"user_id": u, "amount": 10.0}]}).status_code == 200
                deadline = time.monotonic() + 10
                while True:
                    drift = client.get("/monitoring/drift", params={"route": "fraud"}).json()["drift"]
                    if drift and drift[0]["current"]["rows"] >= 42:
                        break
                    assert time.monotonic() < deadline, drift
                    time.sleep(0.05)
                assert [f["name"] for f in drift[0]["features"] if f["role"] == "input"] == REFS.split(",")
        finally:
            gw.stop()
