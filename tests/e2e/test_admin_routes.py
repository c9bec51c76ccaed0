"""Route policies over the admin API against real gateways: auth, validation, canary and sticky splits,
shadows (local and remote, fast and slow), atomic swaps under load, persistence and replicas."""

from __future__ import annotations

import http.server
import json
import statistics
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.e2e.conftest import GatewayProcess, run_cli, start_gateway

TOKEN = "s3cret-admin-token-for-tests"
AUTH = {"authorization": f"Bearer {TOKEN}"}
ROW = {"instances": [[0.25] * 32]}


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """A gateway with an admin token and the demo models; tests own distinct route names."""
    g = start_gateway(tmp_path_factory.mktemp("admin-gw"), "--demo", "--admin-token", TOKEN)
    yield g
    g.stop()


@pytest.fixture(scope="module")
def admin(gw: GatewayProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gw.url, headers=AUTH, timeout=30) as client:
        yield client


def predict(client: httpx.Client, route: str, key: str | None = None) -> httpx.Response:
    headers = {"x-gateway-key": key} if key is not None else {}
    r = client.post(f"/v1/models/{route}:predict", json=ROW, headers=headers)
    assert r.status_code == 200, r.text
    return r


def metric(text: str, name: str, **labels: str) -> float:
    """The sum of a metric's samples whose labels include `labels`."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


class TestAuth:
    def test_missing_or_wrong_token_is_401(self, gw: GatewayProcess) -> None:
        """Without a bearer token, or with one nobody issued, the admin API answers 401 (403 is for a
        valid token whose role is too low: tests/e2e/test_roles.py)."""
        assert httpx.get(f"{gw.url}/admin/routes").status_code == 401
        r = httpx.get(f"{gw.url}/admin/routes", headers={"authorization": "Bearer wrong-token-wrong-token"})
        assert r.status_code == 401
        assert "error" in r.json()
        assert httpx.get(f"{gw.url}/admin/routes", headers=AUTH).status_code == 200

    def test_non_loopback_bind_without_token_refuses_to_start(self, tmp_path: Path) -> None:
        """`serve --host 0.0.0.0` with no admin token exits at once, naming the flag."""
        proc = run_cli(tmp_path, "serve", "--host", "0.0.0.0", "--port", "1", check=False)
        assert proc.returncode == 2
        assert "--admin-token" in proc.stderr


class TestValidation:
    @pytest.mark.parametrize(
        ("policy", "status", "needle"),
        [
            ({"model": "nope", "arms": [{"version": "1", "weight": 1}]}, 422, "nope"),
            ({"model": "churn", "arms": [{"version": "99", "weight": 1}]}, 422, "99"),
            ({"model": "churn", "arms": [{"version": "1", "weight": -1}]}, 422, "weight"),
            ({"model": "churn", "arms": [{"version": "1", "weight": 0}, {"version": "2", "weight": 0}]}, 422, "zero"),
            ({"model": "churn", "arms": [{"version": "1", "weight": 1}], "split": "sticky"}, 422, "sticky_key"),
            ({"model": "churn", "arms": [{"version": "1", "weight": 1}], "shadows": [{"version": "champion", "sample": 1}]},
             422, "primary"),
            ({"model": "churn", "arms": [{"version": "2", "weight": 1}], "shadows": [{"version": "challenger", "sample": 1}]},
             422, "primary"),
        ],
    )
    def test_invalid_policies_are_refused_and_change_nothing(
        self, admin: httpx.Client, policy: dict[str, object], status: int, needle: str
    ) -> None:
        """Unknown models or versions, bad weights, sticky without a key and shadow == arm get 422; nothing changes."""
        admin.put("/admin/routes/validated", json={"model": "churn", "arms": [{"version": "1", "weight": 1}]})
        before = admin.get("/admin/audit", params={"route": "validated"}).json()["entries"]
        r = admin.put("/admin/routes/validated", json=policy)
        assert r.status_code == status, r.text
        assert needle in r.json()["error"]
        assert admin.get("/admin/routes/validated").json()["policy"]["arms"] == [{"version": "1", "weight": 1}]
        assert admin.get("/admin/audit", params={"route": "validated"}).json()["entries"] == before

    def test_malformed_json_is_400(self, admin: httpx.Client) -> None:
        """A body that is not JSON is a 400."""
        r = admin.put("/admin/routes/validated", content=b"{not json")
        assert r.status_code == 400


class TestCanary:
    def test_weights_split_traffic_and_headers_name_arm_and_version(self, admin: httpx.Client) -> None:
        """A 70/30 canary sends about 70% of 2,000 requests to the champion and names arm and version."""
        r = admin.put("/admin/routes/canary", json={
            "model": "churn", "arms": [{"version": "champion", "weight": 70}, {"version": "2", "weight": 30}]})
        assert r.status_code == 200, r.text
        assert r.json()["serving"]["arms"] == [
            {"arm": "champion", "version": "1", "weight": 70}, {"arm": "2", "version": "2", "weight": 30}]
        seen = Counter()
        for _ in range(2000):
            resp = predict(admin, "canary")
            seen[(resp.headers["x-gateway-arm"], resp.headers["x-gateway-model-version"])] += 1
        assert set(seen) == {("champion", "1"), ("2", "2")}
        share = seen[("champion", "1")] / 2000
        assert abs(share - 0.70) < 0.04, seen  # 4 pp is > 3.9 standard deviations at n=2000

    def test_v2_response_names_served_version(self, admin: httpx.Client) -> None:
        """The v2 response's model_version is the version the picked arm served."""
        admin.put("/admin/routes/canary2", json={"model": "churn", "arms": [{"version": "2", "weight": 1}]})
        body = {"inputs": [{"name": "features", "shape": [1, 32], "datatype": "FP32", "data": [0.1] * 32}]}
        r = admin.post("/v2/models/canary2/infer", json=body)
        assert r.status_code == 200, r.text
        assert r.json()["model_version"] == "2"
        assert r.headers["x-gateway-arm"] == "2"

    def test_alias_move_is_followed_by_the_route(self, gw: GatewayProcess, admin: httpx.Client) -> None:
        """An arm that names an alias follows the alias when it moves."""
        admin.put("/admin/routes/follows", json={"model": "churn", "arms": [{"version": "challenger", "weight": 1}]})
        assert predict(admin, "follows").headers["x-gateway-model-version"] == "2"
        gw.cli("models", "promote", "churn", "1", "--alias", "challenger")
        try:
            deadline = time.monotonic() + 2
            while predict(admin, "follows").headers["x-gateway-model-version"] != "1":
                assert time.monotonic() < deadline, "the route did not follow the alias within 2 s"
                time.sleep(0.05)
        finally:
            gw.cli("models", "promote", "churn", "2", "--alias", "challenger")


class TestSticky:
    def test_same_key_same_arm_and_minimal_movement(self, admin: httpx.Client) -> None:
        """Keys stick to arms; moving 90/10 -> 80/20 moves about 10% of keys, all toward the grown arm."""
        def assign(weights: tuple[int, int]) -> dict[str, str]:
            r = admin.put("/admin/routes/ab", json={
                "model": "churn", "split": "sticky", "sticky_key": "user_id",
                "arms": [{"version": "1", "weight": weights[0]}, {"version": "2", "weight": weights[1]}]})
            assert r.status_code == 200, r.text
            return {k: predict(admin, "ab", k).headers["x-gateway-arm"] for k in keys}

        keys = [f"user-{i}" for i in range(1500)]
        first = assign((90, 10))
        again = {k: predict(admin, "ab", k).headers["x-gateway-arm"] for k in keys[:200]}
        assert all(first[k] == again[k] for k in again), "the same key reaches the same arm"
        assert abs(Counter(first.values())["1"] / len(keys) - 0.9) < 0.04
        second = assign((80, 20))
        moved = [k for k in keys if first[k] != second[k]]
        assert 0.06 < len(moved) / len(keys) < 0.14, len(moved)
        assert all(first[k] == "1" and second[k] == "2" for k in moved)

    def test_key_from_v2_parameters_and_entity_input(self, admin: httpx.Client) -> None:
        """The sticky key can come from v2 request parameters or an input tensor named like the key."""
        admin.put("/admin/routes/ab2", json={
            "model": "churn", "split": "sticky", "sticky_key": "user_id",
            "arms": [{"version": "1", "weight": 50}, {"version": "2", "weight": 50}]})
        features = {"name": "features", "shape": [1, 32], "datatype": "FP32", "data": [0.1] * 32}
        by_header, by_param, by_input = {}, {}, {}
        for i in range(40):
            key = f"u{i}"
            by_header[key] = predict(admin, "ab2", key).headers["x-gateway-arm"]
            r = admin.post("/v2/models/ab2/infer", json={"inputs": [features], "parameters": {"user_id": key}})
            by_param[key] = r.headers["x-gateway-arm"]
            entity = {"name": "user_id", "shape": [1], "datatype": "BYTES", "data": [key]}
            r = admin.post("/v2/models/ab2/infer", json={"inputs": [features, entity]})
            assert r.status_code == 200, r.text
            by_input[key] = r.headers["x-gateway-arm"]
        assert by_header == by_param == by_input
        assert set(by_header.values()) == {"1", "2"}


class TestShadow:
    def test_local_shadow_is_compared_and_never_answers(self, gw: GatewayProcess, admin: httpx.Client) -> None:
        """A shadow on v2 runs after each answer; callers only see v1, and the comparison is exported."""
        admin.put("/admin/routes/mirrored", json={
            "model": "churn", "arms": [{"version": "1", "weight": 1}], "shadows": [{"version": "2", "sample": 1.0}]})
        for _ in range(50):
            assert predict(admin, "mirrored").headers["x-gateway-model-version"] == "1"
        deadline = time.monotonic() + 5
        while True:
            text = httpx.get(f"{gw.url}/metrics").text
            done = metric(text, "gateway_shadow_requests_total", route="mirrored", shadow="2", outcome="completed")
            if done >= 50 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert done == 50
        assert metric(text, "gateway_shadow_mean_abs_diff_count", route="mirrored") == 50
        assert metric(text, "gateway_shadow_mean_abs_diff_sum", route="mirrored") > 0  # v1 and v2 differ
        assert metric(text, "gateway_shadow_decision_agreement_ratio_count", route="mirrored") == 50

    def test_failing_remote_shadow_never_affects_the_caller(self, gw: GatewayProcess, admin: httpx.Client) -> None:
        """A remote shadow on a closed port fails, is counted, and every caller still gets 200."""
        admin.put("/admin/routes/badshadow", json={
            "model": "churn", "arms": [{"version": "1", "weight": 1}],
            "shadows": [{"url": "http://127.0.0.1:9/v2/models/x/infer", "sample": 1.0}]})
        for _ in range(20):
            predict(admin, "badshadow")
        deadline = time.monotonic() + 5
        while metric(httpx.get(f"{gw.url}/metrics").text, "gateway_shadow_requests_total",
                     route="badshadow", outcome="failed") < 20:
            assert time.monotonic() < deadline
            time.sleep(0.05)


class SlowShadowHandler(http.server.BaseHTTPRequestHandler):
    """A remote shadow that takes 300 ms per request."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["content-length"]))
        time.sleep(0.3)
        body = json.dumps({"model_name": "slow", "outputs": [
            {"name": "probability", "shape": [1, 1], "datatype": "FP32", "data": [0.5]}]}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def p99_latency(url: str, route: str, n: int) -> float:
    latencies = []
    with httpx.Client(base_url=url, timeout=30) as client:
        for _ in range(n):
            started = time.perf_counter()
            predict(client, route)
            latencies.append(time.perf_counter() - started)
    return float(np.percentile(latencies, 99))


def test_slow_shadow_does_not_slow_the_primary(tmp_path: Path) -> None:
    """With a 300 ms remote shadow on every request, primary p99 stays near the no-shadow p99;
    the small shadow queue drops and counts the overflow."""
    slow = http.server.ThreadingHTTPServer(("127.0.0.1", 0), SlowShadowHandler)
    threading.Thread(target=slow.serve_forever, daemon=True).start()
    gw = start_gateway(tmp_path / "gw", "--demo", "--shadow-queue-size", "4", "--shadow-workers", "1")
    try:
        with httpx.Client(base_url=gw.url, timeout=30) as admin:
            admin.put("/admin/routes/plain", json={"model": "churn", "arms": [{"version": "1", "weight": 1}]})
            admin.put("/admin/routes/shadowed", json={
                "model": "churn", "arms": [{"version": "1", "weight": 1}],
                "shadows": [{"url": f"http://127.0.0.1:{slow.server_port}/v2/models/slow/infer", "sample": 1.0}]})
        p99_latency(gw.url, "plain", 50)  # warm-up
        rounds = [(p99_latency(gw.url, "plain", 300), p99_latency(gw.url, "shadowed", 300)) for _ in range(2)]
        without = statistics.median(r[0] for r in rounds)
        with_shadow = statistics.median(r[1] for r in rounds)
        text = httpx.get(f"{gw.url}/metrics").text
        dropped = metric(text, "gateway_shadow_requests_total", route="shadowed", outcome="dropped")
        assert dropped > 400, "most copies of 600 requests could not wait behind a 300 ms shadow"
        # Shared 2-core machine: allow noise, but a blocking shadow would add >= 300 ms to p99.
        assert with_shadow < max(3 * without, without + 0.05), f"p99 without {without * 1e3:.2f} ms, with {with_shadow * 1e3:.2f} ms"
        print(f"\nprimary p99 without shadow {without * 1e3:.2f} ms, with a 300 ms shadow {with_shadow * 1e3:.2f} ms; dropped {dropped:.0f}")
    finally:
        gw.stop()
        slow.shutdown()


class Traffic:
    def __init__(self, url: str, route: str, threads: int = 4) -> None:
        self.url, self.route = url, route
        self.stop = threading.Event()
        self.pairs: list[tuple[str, str]] = []
        self.errors: list[str] = []
        self.threads = [threading.Thread(target=self._loop, daemon=True) for _ in range(threads)]

    def _loop(self) -> None:
        with httpx.Client(base_url=self.url, timeout=10) as client:
            while not self.stop.is_set():
                try:
                    r = client.post(f"/v1/models/{self.route}:predict", json=ROW)
                    if r.status_code != 200:
                        self.errors.append(f"{r.status_code} {r.text}")
                    else:
                        self.pairs.append((r.headers["x-gateway-arm"], r.headers["x-gateway-model-version"]))
                except httpx.HTTPError as exc:
                    self.errors.append(repr(exc))

    def __enter__(self) -> Traffic:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=30)


def test_policy_changes_under_load_are_atomic_and_lose_nothing(gw: GatewayProcess, admin: httpx.Client) -> None:
    """Twenty policy changes while four clients send traffic: zero errors, and every answer is
    consistent with one whole table (arm labels always map to their own version)."""
    tables = [
        [{"version": "champion", "weight": 90}, {"version": "challenger", "weight": 10}],
        [{"version": "1", "weight": 50}, {"version": "2", "weight": 50}],
        [{"version": "challenger", "weight": 1}],
    ]
    admin.put("/admin/routes/swapping", json={"model": "churn", "arms": tables[0]})
    with Traffic(gw.url, "swapping") as traffic:
        for i in range(20):
            r = admin.put("/admin/routes/swapping", json={"model": "churn", "arms": tables[i % 3]})
            assert r.status_code == 200, r.text
            time.sleep(0.05)
    assert traffic.errors == []
    assert len(traffic.pairs) > 100
    assert set(traffic.pairs) <= {("champion", "1"), ("challenger", "2"), ("1", "1"), ("2", "2")}


def test_audit_records_who_when_old_and_new(admin: httpx.Client) -> None:
    """Every change is audited with the token's name (the bootstrap token's is 'admin-token'), the time,
    and the old and new policy."""
    admin.put("/admin/routes/audited", json={"model": "churn", "arms": [{"version": "1", "weight": 1}]})
    admin.put("/admin/routes/audited", json={"model": "churn", "arms": [{"version": "2", "weight": 1}]})
    admin.delete("/admin/routes/audited")
    entries = admin.get("/admin/audit", params={"route": "audited"}).json()["entries"]
    assert [e["action"] for e in entries[:3]] == ["delete", "put", "put"]
    assert all(e["actor"] == "token:admin-token" for e in entries[:3])
    assert entries[1]["old_policy"]["arms"] == [{"version": "1", "weight": 1}]
    assert entries[1]["new_policy"]["arms"] == [{"version": "2", "weight": 1}]
    assert entries[0]["new_policy"] is None
    assert admin.delete("/admin/routes/audited").status_code == 404


def test_policies_survive_restart_and_reach_other_replicas(tmp_path: Path) -> None:
    """Two gateways on one registry: a change through one reaches the other; both keep it after a restart."""
    data = tmp_path / "shared"
    a = start_gateway(data, "--demo")
    b = start_gateway(data)
    try:
        r = httpx.put(f"{a.url}/admin/routes/churn", json={"model": "churn", "arms": [{"version": "2", "weight": 1}]})
        assert r.status_code == 200, r.text
        deadline = time.monotonic() + 2
        while predict(httpx.Client(base_url=b.url), "churn").headers["x-gateway-model-version"] != "2":
            assert time.monotonic() < deadline, "replica b did not follow within 2 s"
            time.sleep(0.05)
    finally:
        a.stop()
        b.stop()
    c = start_gateway(data)
    try:
        assert predict(httpx.Client(base_url=c.url), "churn").headers["x-gateway-model-version"] == "2"
    finally:
        c.stop()


def test_cli_routes_commands(tmp_path: Path) -> None:
    """`gateway routes set/get/list/audit/delete` manage the same stored policies."""
    model = tmp_path / "m.onnx"
    from gateway.demo import build_mlp

    model.write_bytes(build_mlp(1))
    run_cli(tmp_path, "models", "register", "scorer", str(model))
    run_cli(tmp_path, "models", "register", "scorer", str(model))
    policy = json.dumps({"model": "scorer", "arms": [{"version": "1", "weight": 80}, {"version": "2", "weight": 20}]})
    assert "scorer" in run_cli(tmp_path, "routes", "set", "web", "--json", policy).stdout
    assert json.loads(run_cli(tmp_path, "routes", "get", "web").stdout)["arms"][1] == {"version": "2", "weight": 20}
    assert "web" in run_cli(tmp_path, "routes", "list").stdout
    bad = run_cli(tmp_path, "routes", "set", "web", "--json", '{"model": "scorer", "arms": []}', check=False)
    assert bad.returncode == 1 and "arms" in bad.stderr
    run_cli(tmp_path, "routes", "delete", "web")
    lines = run_cli(tmp_path, "routes", "audit").stdout.strip().splitlines()
    assert [json.loads(line)["action"] for line in lines] == ["delete", "put"]
    assert json.loads(lines[0])["actor"].startswith("cli:")
