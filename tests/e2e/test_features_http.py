"""Feature-enriched inference over HTTP against real `gateway serve` processes: entity-keyed v1 and v2
requests on the demo `fraud` model, route feature policies, read-time TTL, the Feast-shaped API, and a
private redis-server that the tests pause, kill and restart on the same port."""

from __future__ import annotations

import functools
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnxruntime as ort
import pytest
import redis

from gateway.demo import USER_VIEW, USER_VIEW_SPEC, build_fraud, demo_user_rows
from tests.conftest import RedisServer, start_redis_server, stop_redis_server
from tests.e2e.conftest import GatewayProcess, start_gateway

DEFAULTED = "x-gateway-features-defaulted"
USERS = {int(r["user_id"]): r for r in demo_user_rows()}  # type: ignore[call-overload]
DEFAULTS = [float(f["default"]) for f in USER_VIEW_SPEC["features"]]  # type: ignore[attr-defined]
FEATURES = ("age", "tenure_months", "avg_spend")
UNKNOWN_USER = 987_654
FEATURE_TIMEOUT_MS = 50


@functools.cache
def fraud_session() -> ort.InferenceSession:
    return ort.InferenceSession(build_fraud(), providers=["CPUExecutionProvider"])


def expected(rows: list[list[float]]) -> np.ndarray:
    """onnxruntime's own answer for assembled rows [age, tenure_months, avg_spend, amount]."""
    out: np.ndarray = fraud_session().run(None, {"features": np.asarray(rows, dtype=np.float32)})[0]
    return out


def demo_row(user_id: int, amount: float) -> list[float]:
    user = USERS[user_id]
    return [float(user[f]) for f in FEATURES] + [amount]  # type: ignore[arg-type]


def predict(client: httpx.Client, instances: list[dict[str, Any]], route: str = "fraud") -> httpx.Response:
    return client.post(f"/v1/models/{route}:predict", json={"instances": instances})


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat()


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """`gateway serve --demo` with the embedded (in-memory) online store; tests use distinct users."""
    g = start_gateway(tmp_path_factory.mktemp("features-gw"), "--demo")
    yield g
    g.stop()


@pytest.fixture
def client(gw: GatewayProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gw.url, timeout=10) as c:
        yield c


@pytest.fixture
def route_policy(client: httpx.Client) -> Iterator[Any]:
    """Set the fraud route's feature policy for one test; the stored policy is deleted afterwards."""

    def put(**features: str) -> None:
        policy = {"model": "fraud", "arms": [{"version": "1", "weight": 1}], "features": features}
        r = client.put("/admin/routes/fraud", json=policy)
        assert r.status_code == 200, r.text

    yield put
    client.delete("/admin/routes/fraud")


class TestEntityKeyedV1:
    def test_known_users_get_onnxruntime_answer_on_assembled_rows(self, client: httpx.Client) -> None:
        """Each instance's row is the user's stored features then the request's amount, in declared order."""
        r = predict(client, [{"user_id": 42, "amount": 12.5}, {"user_id": 7, "amount": 300.0}])
        assert r.status_code == 200, r.text
        assert r.headers[DEFAULTED] == "0"
        assert r.headers["x-gateway-model-version"] == "1"
        want = expected([demo_row(42, 12.5), demo_row(7, 300.0)])
        np.testing.assert_allclose(np.asarray(r.json()["predictions"], dtype=np.float32), want, rtol=1e-5)

    def test_string_entity_key_names_the_same_user(self, client: httpx.Client) -> None:
        """"42" and 42 are the same entity (CSV strings and JSON numbers meet)."""
        r = predict(client, [{"user_id": "42", "amount": 12.5}])
        assert r.status_code == 200 and r.headers[DEFAULTED] == "0"
        np.testing.assert_allclose(r.json()["predictions"], expected([demo_row(42, 12.5)]), rtol=1e-5)

    def test_unknown_user_is_served_with_view_defaults(self, client: httpx.Client) -> None:
        """A user with no row gets the view's defaults for its three features, and the header says 3."""
        r = predict(client, [{"user_id": UNKNOWN_USER, "amount": 20.0}])
        assert r.status_code == 200, r.text
        assert r.headers[DEFAULTED] == "3"
        np.testing.assert_allclose(r.json()["predictions"], expected([[*DEFAULTS, 20.0]]), rtol=1e-5)

    def test_defaulted_count_adds_up_over_a_batch(self, client: httpx.Client) -> None:
        """Two unknown users and one known: 6 values defaulted, the known row still exact."""
        r = predict(client, [{"user_id": UNKNOWN_USER, "amount": 1.0}, {"user_id": 3, "amount": 2.0},
                             {"user_id": UNKNOWN_USER + 1, "amount": 3.0}])
        assert r.status_code == 200 and r.headers[DEFAULTED] == "6"
        want = expected([[*DEFAULTS, 1.0], demo_row(3, 2.0), [*DEFAULTS, 3.0]])
        np.testing.assert_allclose(r.json()["predictions"], want, rtol=1e-5)

    def test_missing_entity_policy_error_is_404_naming_the_entity(self, client: httpx.Client, route_policy: Any) -> None:
        """With missing_entity=error an unknown user is 404 naming the key, value and view; known users still serve."""
        route_policy(missing_entity="error")
        r = predict(client, [{"user_id": 42, "amount": 1.0}, {"user_id": UNKNOWN_USER, "amount": 1.0}])
        assert r.status_code == 404, r.text
        message = r.json()["error"]
        assert f"user_id={UNKNOWN_USER}" in message and USER_VIEW in message
        ok = predict(client, [{"user_id": 42, "amount": 1.0}])
        assert ok.status_code == 200 and ok.headers[DEFAULTED] == "0"

    @pytest.mark.parametrize(
        ("instance", "needle"),
        [({"user_id": 42}, "amount"), ({"amount": 1.0}, "user_id"), ({"user_id": 42, "amount": "lots"}, "amount"),
         ({"user_id": True, "amount": 1.0}, "user_id")],
    )
    def test_bad_instances_are_400_naming_the_field(self, client: httpx.Client, instance: dict[str, Any], needle: str) -> None:
        """A missing or unusable entity key or request feature is a 400 that names it."""
        r = predict(client, [instance])
        assert r.status_code == 400, r.text
        assert needle in r.json()["error"]


class TestEntityKeyedV2:
    @pytest.mark.parametrize(
        "user_input",
        [{"name": "user_id", "datatype": "INT64", "shape": [2], "data": [42, 7]},
         {"name": "user_id", "datatype": "BYTES", "shape": [2, 1], "data": ["42", "7"]}],
        ids=["INT64", "BYTES"],
    )
    def test_inputs_named_after_entity_keys(self, client: httpx.Client, user_input: dict[str, Any]) -> None:
        """v2 inputs named user_id (INT64 or BYTES) and amount are assembled like v1 instances."""
        body = {"inputs": [user_input, {"name": "amount", "datatype": "FP32", "shape": [2, 1], "data": [12.5, 300.0]}]}
        r = client.post("/v2/models/fraud/infer", json=body)
        assert r.status_code == 200, r.text
        assert r.headers[DEFAULTED] == "0"
        (out,) = r.json()["outputs"]
        assert out["name"] == "probability" and out["shape"] == [2, 1]
        np.testing.assert_allclose(out["data"], expected([demo_row(42, 12.5), demo_row(7, 300.0)]).ravel(), rtol=1e-5)

    def test_unknown_user_over_v2_is_defaulted(self, client: httpx.Client) -> None:
        body = {"inputs": [{"name": "user_id", "datatype": "INT64", "shape": [1], "data": [UNKNOWN_USER]},
                           {"name": "amount", "datatype": "FP64", "shape": [1], "data": [5.0]}]}
        r = client.post("/v2/models/fraud/infer", json=body)
        assert r.status_code == 200, r.text
        assert r.headers[DEFAULTED] == "3"
        np.testing.assert_allclose(r.json()["outputs"][0]["data"], expected([[*DEFAULTS, 5.0]]).ravel(), rtol=1e-5)

    def test_missing_entity_input_is_400(self, client: httpx.Client) -> None:
        body = {"inputs": [{"name": "amount", "datatype": "FP32", "shape": [1], "data": [5.0]}]}
        r = client.post("/v2/models/fraud/infer", json=body)
        assert r.status_code == 400 and "user_id" in r.json()["error"]


class TestTTLAndWrites:
    def test_push_then_predict_uses_the_pushed_row(self, client: httpx.Client) -> None:
        """POST /features/push (Feast's shape) writes a fresh row that the next prediction reads."""
        user = 5001
        df = {"user_id": [user], "age": [44.0], "tenure_months": [12.0], "avg_spend": [99.5],
              "event_timestamp": [iso(datetime.now(UTC))]}
        r = client.post("/features/push", json={"push_source_name": f"{USER_VIEW}_push", "df": df, "to": "online"})
        assert r.status_code == 200 and r.content == b""
        p = predict(client, [{"user_id": user, "amount": 10.0}])
        assert p.headers[DEFAULTED] == "0"
        np.testing.assert_allclose(p.json()["predictions"], expected([[44.0, 12.0, 99.5, 10.0]]), rtol=1e-5)

    @pytest.mark.parametrize("endpoint", ["push", "write-to-online-store"])
    def test_row_older_than_the_view_ttl_counts_as_missing(
        self, client: httpx.Client, route_policy: Any, endpoint: str
    ) -> None:
        """A row whose event time is older than the view's TTL (30 days) is served as defaults (header 3),
        and is a 404 under missing_entity=error, exactly like an unknown user."""
        user = 5100 if endpoint == "push" else 5101
        ttl = timedelta(seconds=int(USER_VIEW_SPEC["ttl_seconds"]))  # type: ignore[call-overload]
        old = iso(datetime.now(UTC) - ttl - timedelta(days=1))
        df = {"user_id": [user], "age": [70.0], "tenure_months": [100.0], "avg_spend": [500.0], "event_timestamp": [old]}
        if endpoint == "push":
            r = client.post("/features/push", json={"push_source_name": USER_VIEW, "df": df})
        else:
            r = client.post("/features/write-to-online-store", json={"feature_view_name": USER_VIEW, "df": df})
            assert r.json() is None
        assert r.status_code == 200, r.text
        p = predict(client, [{"user_id": user, "amount": 10.0}])
        assert p.status_code == 200 and p.headers[DEFAULTED] == "3"
        np.testing.assert_allclose(p.json()["predictions"], expected([[*DEFAULTS, 10.0]]), rtol=1e-5)
        route_policy(missing_entity="error")
        p = predict(client, [{"user_id": user, "amount": 10.0}])
        assert p.status_code == 404 and f"user_id={user}" in p.json()["error"]

    def test_a_fresh_write_revives_a_stale_row(self, client: httpx.Client) -> None:
        """Stale, then rewritten with a current event time: served from the store again."""
        user = 5200
        old = iso(datetime.now(UTC) - timedelta(days=400))
        for stamp, want in ((old, "3"), (iso(datetime.now(UTC)), "0")):
            df = {"user_id": [user], "age": [30.0], "tenure_months": [3.0], "avg_spend": [10.0], "event_timestamp": [stamp]}
            assert client.post("/features/push", json={"push_source_name": USER_VIEW, "df": df}).status_code == 200
            assert predict(client, [{"user_id": user, "amount": 1.0}]).headers[DEFAULTED] == want


class TestFeastAPI:
    def get(self, client: httpx.Client, users: list[Any], *, full: bool = False) -> dict[str, Any]:
        body: dict[str, Any] = {"features": [f"{USER_VIEW}:{f}" for f in FEATURES], "entities": {"user_id": users}}
        if full:
            body["full_feature_names"] = True
        r = client.post("/features/get-online-features", json=body)
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == "application/json"
        data: dict[str, Any] = r.json()
        return data

    def test_response_shape_is_feasts(self, client: httpx.Client) -> None:
        """Column-major results, the join key first (PRESENT, epoch stamps), NOT_FOUND nulls for unknown users."""
        data = self.get(client, [42, UNKNOWN_USER])
        assert data["metadata"]["feature_names"] == ["user_id", *FEATURES]
        key, *columns = data["results"]
        assert key == {"values": [42, UNKNOWN_USER], "statuses": ["PRESENT", "PRESENT"],
                       "event_timestamps": ["1970-01-01T00:00:00Z"] * 2}
        for name, column in zip(FEATURES, columns, strict=True):
            assert column["values"] == [pytest.approx(USERS[42][name]), None]
            assert column["statuses"] == ["PRESENT", "NOT_FOUND"]
            stamp, epoch = column["event_timestamps"]
            assert epoch == "1970-01-01T00:00:00Z"
            assert datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").year >= 2024

    def test_full_feature_names(self, client: httpx.Client) -> None:
        data = self.get(client, [1], full=True)
        assert data["metadata"]["feature_names"] == ["user_id", *(f"{USER_VIEW}__{f}" for f in FEATURES)]

    def test_reflects_a_push_and_ttl(self, client: httpx.Client) -> None:
        """After a push the values, PRESENT and the pushed event time (second precision) show; a stale row
        reads OUTSIDE_MAX_AGE with null values."""
        fresh, stale = 6001, 6002
        before = self.get(client, [fresh])
        assert [c["statuses"][0] for c in before["results"][1:]] == ["NOT_FOUND"] * 3
        now = datetime.now(UTC).replace(microsecond=0)
        df = {"user_id": [fresh, stale], "age": [51.0, 52.0], "tenure_months": [6.0, 7.0], "avg_spend": [12.25, 13.5],
              "event_timestamp": [iso(now), iso(now - timedelta(days=365))]}
        assert client.post("/features/push", json={"push_source_name": USER_VIEW, "df": df}).status_code == 200
        data = self.get(client, [fresh, stale])
        ages = data["results"][1]
        assert ages["values"] == [51.0, None]
        assert ages["statuses"] == ["PRESENT", "OUTSIDE_MAX_AGE"]
        assert ages["event_timestamps"][0] == now.strftime("%Y-%m-%dT%H:%M:%SZ")
        assert data["results"][3]["values"][0] == 12.25

    def test_unknown_feature_is_404_and_missing_entities_422(self, client: httpx.Client) -> None:
        r = client.post("/features/get-online-features", json={"features": [f"{USER_VIEW}:nope"], "entities": {"user_id": [1]}})
        assert r.status_code == 404 and "nope" in r.json()["error"]
        r = client.post("/features/get-online-features", json={"features": [f"{USER_VIEW}:age"]})
        assert r.status_code == 422 and "entities" in r.json()["error"]

    def test_admin_lists_the_demo_view(self, client: httpx.Client) -> None:
        views = {v["name"]: v for v in client.get("/admin/features/views").json()["views"]}
        assert views[USER_VIEW]["entity"] == "user_id"
        assert [f["name"] for f in views[USER_VIEW]["features"]] == list(FEATURES)


# --- Redis: a private redis-server per test, paused, killed and restarted ------------------------------


@dataclass
class Outcome:
    started: float  # monotonic
    latency_s: float
    status: int  # 0: transport error
    defaulted: str | None


class Load:
    """A few client threads sending entity-keyed predictions until stopped (bounded by max_requests)."""

    def __init__(self, url: str, threads: int = 4, max_requests: int = 20_000) -> None:
        self.url = url
        self.outcomes: list[Outcome] = []
        self._stop = threading.Event()
        self._max = max_requests
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)]

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=30)

    def _run(self, seed: int) -> None:
        body = {"instances": [{"user_id": 1 + seed, "amount": 10.0}]}
        with httpx.Client(base_url=self.url, timeout=10) as client:
            while not self._stop.is_set() and len(self.outcomes) < self._max:
                started = time.monotonic()
                try:
                    r = client.post("/v1/models/fraud:predict", json=body)
                    outcome = Outcome(started, time.monotonic() - started, r.status_code, r.headers.get(DEFAULTED))
                except httpx.TransportError:
                    outcome = Outcome(started, time.monotonic() - started, 0, None)
                with self._lock:
                    self.outcomes.append(outcome)

    def since(self, moment: float) -> list[Outcome]:
        with self._lock:
            return [o for o in self.outcomes if o.started >= moment]


def run_load(url: str, seconds: float) -> list[Outcome]:
    with Load(url) as load:
        time.sleep(seconds)
    return load.outcomes


@pytest.fixture
def private_redis() -> Iterator[list[RedisServer]]:
    """A redis-server only this test uses (it may be killed and restarted: the list holds the live one)."""
    servers = [start_redis_server()]
    yield servers
    for server in servers:
        stop_redis_server(server)


def redis_port(server: RedisServer) -> int:
    return int(server.url.rsplit(":", 1)[1].split("/")[0])


def start_redis_gateway(tmp_path: Path, server: RedisServer) -> GatewayProcess:
    return start_gateway(tmp_path / "gw", "--demo", "--redis", server.url, "--feature-timeout-ms", str(FEATURE_TIMEOUT_MS))


def set_policy(client: httpx.Client, **features: str) -> None:
    policy = {"model": "fraud", "arms": [{"version": "1", "weight": 1}], "features": features}
    r = client.put("/admin/routes/fraud", json=policy)
    assert r.status_code == 200, r.text


def ingest_users(gw: GatewayProcess, path: Path, server: RedisServer, users: range) -> dict[int, list[float]]:
    """Ingest users through the CLI into Redis; returns their feature rows."""
    rows = {u: [float(20 + u % 50), float(u % 90), round(u * 0.25, 2)] for u in users}
    path.write_text("user_id,age,tenure_months,avg_spend\n" + "".join(f"{u},{a},{t},{s}\n" for u, (a, t, s) in rows.items()))
    out = gw.cli("features", "ingest", USER_VIEW, str(path), "--redis", server.url).stdout
    assert f"ingested {len(rows):,} rows" in out
    return rows


class TestRedisFaults:
    def test_serves_rows_ingested_with_the_cli(self, tmp_path: Path, private_redis: list[RedisServer]) -> None:
        """`gateway features ingest` writes to Redis; the gateway reads them from there."""
        server = private_redis[0]
        gw = start_redis_gateway(tmp_path, server)
        try:
            rows = ingest_users(gw, tmp_path / "users.csv", server, range(7001, 7051))
            assert redis.Redis.from_url(server.url).exists(f"fv:{USER_VIEW}:7001") == 1
            with httpx.Client(base_url=gw.url, timeout=10) as client:
                r = predict(client, [{"user_id": 7001, "amount": 2.0}, {"user_id": 42, "amount": 3.0}])
            assert r.status_code == 200 and r.headers[DEFAULTED] == "0"
            want = expected([[*rows[7001], 2.0], demo_row(42, 3.0)])  # 42: seeded into Redis by --demo
            np.testing.assert_allclose(r.json()["predictions"], want, rtol=1e-5)
        finally:
            gw.stop()

    def test_killed_redis_fails_fast_or_defaults_then_recovers(self, tmp_path: Path, private_redis: list[RedisServer]) -> None:
        """Kill redis-server under load: on_store_error=error answers 503 well within a second (never hangs),
        on_store_error=default serves defaults; restarted on the same port, the gateway reconnects by itself."""
        server = private_redis[0]
        port = redis_port(server)
        gw = start_redis_gateway(tmp_path, server)
        try:
            with httpx.Client(base_url=gw.url, timeout=10) as client:
                set_policy(client, on_store_error="error")
                with Load(gw.url) as load:
                    time.sleep(1.0)
                    assert server.process is not None
                    alive_until = time.monotonic()
                    server.process.kill()  # SIGKILL: connections reset, reconnects refused
                    server.process.wait(timeout=10)
                    killed = time.monotonic()
                    time.sleep(1.5)
                # Answered while Redis was surely up (a request in flight at the kill may rightly be a 503:
                # on a loaded machine one started 0.2 s before the kill can still be waiting to run).
                before = [o for o in load.outcomes if o.started + o.latency_s < alive_until]
                after = load.since(killed + 0.05)
                bad = [o for o in before if o.status != 200 or o.defaulted != "0"]
                assert before and not bad, [(round(o.started - alive_until, 3), o) for o in bad[:5]]
                assert len(after) > 20
                assert {o.status for o in after} == {503}, sorted({o.status for o in after})
                worst = max(o.latency_s for o in load.outcomes)
                assert worst < 1.0, f"slowest request took {worst:.3f} s"
                r = predict(client, [{"user_id": 1, "amount": 1.0}])
                assert r.status_code == 503 and "unavailable" in r.json()["error"]

                set_policy(client, on_store_error="default")
                served = run_load(gw.url, 1.0)
                assert served and all(o.status == 200 and o.defaulted == "3" for o in served)
                assert max(o.latency_s for o in served) < 1.0

                set_policy(client, on_store_error="error")
                private_redis.append(start_redis_server(port))  # same port, empty (no persistence)
                restarted = time.monotonic()
                ingest_users(gw, tmp_path / "users.csv", private_redis[-1], range(1, 11))
                deadline = restarted + 10
                while True:
                    r = predict(client, [{"user_id": 1, "amount": 1.0}])
                    if r.status_code == 200 and r.headers[DEFAULTED] == "0":
                        break
                    assert time.monotonic() < deadline, f"no recovery within 10 s: {r.status_code} {r.text}"
                    time.sleep(0.05)
                assert time.monotonic() - restarted < 5.0
                recovered = run_load(gw.url, 0.5)
                assert recovered and all(o.status == 200 and o.defaulted == "0" for o in recovered)
        finally:
            gw.stop()

    def test_paused_redis_times_out_at_the_feature_timeout(self, tmp_path: Path, private_redis: list[RedisServer]) -> None:
        """A Redis that accepts but never answers (SIGSTOP): each read gives up after --feature-timeout-ms,
        so requests get 503 (or defaults) in well under a second, and are served again after SIGCONT."""
        server = private_redis[0]
        assert server.process is not None
        gw = start_redis_gateway(tmp_path, server)
        try:
            with httpx.Client(base_url=gw.url, timeout=10) as client:
                set_policy(client, on_store_error="error")
                assert predict(client, [{"user_id": 5, "amount": 1.0}]).status_code == 200
                server.process.send_signal(signal.SIGSTOP)
                try:
                    failed = run_load(gw.url, 1.0)
                    assert failed and {o.status for o in failed} == {503}
                    latencies = sorted(o.latency_s for o in failed)
                    assert latencies[len(latencies) // 2] >= FEATURE_TIMEOUT_MS / 1000 * 0.8  # it waited the budget...
                    assert latencies[-1] < 1.0, f"slowest request took {latencies[-1]:.3f} s"  # ...and no longer
                    assert "timed out" in predict(client, [{"user_id": 5, "amount": 1.0}]).json()["error"]
                    set_policy(client, on_store_error="default")
                    served = run_load(gw.url, 0.5)
                    assert served and all(o.status == 200 and o.defaulted == "3" for o in served)
                    assert max(o.latency_s for o in served) < 1.0
                finally:
                    server.process.send_signal(signal.SIGCONT)
                deadline = time.monotonic() + 10
                while predict(client, [{"user_id": 5, "amount": 1.0}]).headers.get(DEFAULTED) != "0":
                    assert time.monotonic() < deadline, "not served from Redis again within 10 s of SIGCONT"
                    time.sleep(0.05)
        finally:
            gw.stop()
