"""Guarded rollouts through real `gateway serve` processes: a good candidate is promoted; an erroring,
a slow and a disagreeing one are rolled back at the first guard check with the reason; errors count
against the arm that served them; a restart resumes a rollout; two replicas never both drive one.

The models are built here with onnx.helper (deterministic weights): x FP32 [batch, 4] -> y FP32
[batch, 2]. Request i sends x[0] = (i % 20) / 20, so the erroring candidate (an out-of-range Gather
once x[0] > 0.9) fails on exactly one request in 20.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from registry.rollouts import RolloutEvent, holders
from tests.e2e.conftest import GatewayProcess, run_cli, start_gateway

TOKEN = "rollout-admin-token-for-tests"
AUTH = {"authorization": f"Bearer {TOKEN}"}
W = np.array([[1.0, -1.0], [0.5, -0.5], [-0.3, 0.3], [0.2, -0.2]], np.float32)
FINAL = ("promoted", "rolled_back", "aborted")
WAIT_S = 40.0
NO_P99 = {"max_p99_ratio": None}


# --- models ---------------------------------------------------------------------------------------


def _model(nodes: list[onnx.NodeProto], inits: list[onnx.TensorProto]) -> bytes:
    graph = helper.make_graph(
        nodes, "rollout_test", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 2])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="gateway-tests")
    model.ir_version = 9
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())


def _const(name: str, value: Any, dtype: Any = np.float32) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value, dtype), name)


def linear(scale: float = 1.0) -> bytes:
    """y = x @ (scale * W): a positive scale keeps every decision (arg-max), -1 flips every one."""
    return _model([helper.make_node("MatMul", ["x", "w"], ["y"])], [_const("w", W * scale)])


def erroring(threshold: float = 0.9) -> bytes:
    """y = x @ W, plus 0 * Gather(table[2], 7 * (x[:, 0] > threshold)): index 7 is out of range, so a
    row past the threshold fails the run (onnxruntime INVALID_ARGUMENT)."""
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["base"]),
        helper.make_node("Slice", ["x", "start", "end", "axis"], ["first"]),
        helper.make_node("Greater", ["first", "threshold"], ["over"]),
        helper.make_node("Cast", ["over"], ["over_i"], to=TensorProto.INT64),
        helper.make_node("Mul", ["over_i", "seven"], ["index"]),
        helper.make_node("Gather", ["table", "index"], ["picked"], axis=0),
        helper.make_node("Mul", ["picked", "zero"], ["nothing"]),
        helper.make_node("Add", ["base", "nothing"], ["y"]),
    ]
    return _model(nodes, [
        _const("w", W), _const("start", [0], np.int64), _const("end", [1], np.int64), _const("axis", [1], np.int64),
        _const("threshold", threshold), _const("seven", 7, np.int64), _const("table", [1.0, 2.0]), _const("zero", 0.0)])


def slow(rounds: int = 24, size: int = 256) -> bytes:
    """y = x @ W, plus 0 * the sum of a chain of `rounds` 256x256 MatMuls seeded by sum(x) (so it cannot
    be folded away): a few milliseconds per request where the linear model takes microseconds."""
    m = (np.random.default_rng(7).standard_normal((size, size)) / size).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["base"]), helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0),
             helper.make_node("Mul", ["m", "s"], ["z0"])]
    nodes += [helper.make_node("MatMul", [f"z{i}", "m"], [f"z{i + 1}"]) for i in range(rounds)]
    nodes += [helper.make_node("ReduceSum", [f"z{rounds}"], ["total"], keepdims=0),
              helper.make_node("Mul", ["total", "zero"], ["nothing"]), helper.make_node("Add", ["base", "nothing"], ["y"])]
    return _model(nodes, [_const("w", W), _const("m", m), _const("zero", 0.0)])


CANDIDATES = {"good": linear(1.1), "erroring": erroring(), "slow": slow(), "negated": linear(-1.0), "idle": linear(1.2)}


def register(data_dir: Path, model: str, candidate: bytes, **env: str) -> None:
    """Version 1 (linear, alias champion) and version 2 (the candidate) of `model`, through the CLI."""
    for version, data in ((1, linear()), (2, candidate)):
        path = data_dir / f"{model}-v{version}.onnx"
        path.write_bytes(data)
        run_cli(data_dir, "models", "register", model, str(path), **env)
    run_cli(data_dir, "models", "promote", model, "1", "--alias", "champion", **env)


# --- traffic and polling --------------------------------------------------------------------------


class Traffic:
    """Requests to one or more gateways from a thread, until stopped; counts (status, version) pairs."""

    def __init__(self, urls: list[str], route: str) -> None:
        self.urls, self.route = urls, route
        self.seen: dict[tuple[int, str], int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        rng = np.random.default_rng(1)
        clients = [httpx.Client(base_url=url, timeout=10) for url in self.urls]
        i = 0
        while not self._stop.is_set():
            row = [(i % 20) / 20, *rng.standard_normal(3).round(3).tolist()]
            try:
                r = clients[i % len(clients)].post(f"/v1/models/{self.route}:predict", json={"instances": [row]})
                key = (r.status_code, r.headers.get("x-gateway-model-version", ""))
                self.seen[key] = self.seen.get(key, 0) + 1
            except httpx.TransportError:
                pass
            i += 1
            time.sleep(0.001)  # about 500 requests/s at most: enough for min_requests, gentle on shared CPUs
        for client in clients:
            client.close()

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def wait_state(url: str, name: str, states: tuple[str, ...], **match: Any) -> dict[str, Any]:
    """GET the rollout until its state is one of `states` (and its fields equal `match`); bounded."""
    deadline = time.monotonic() + WAIT_S
    view: dict[str, Any] = {}
    while time.monotonic() < deadline:
        view = httpx.get(f"{url}/admin/rollouts/{name}", headers=AUTH, timeout=10).json()
        if view["state"] in states and all(view.get(k) == v for k, v in match.items()):
            return view
        time.sleep(0.1)
    raise AssertionError(f"rollout {name} not in {states} {match} after {WAIT_S} s: {view}")


def alias_version(url: str, model: str, alias: str) -> str:
    r = httpx.get(f"{url}/api/2.0/mlflow/registered-models/alias", params={"name": model, "alias": alias}, timeout=10)
    assert r.status_code == 200, r.text
    return str(r.json()["model_version"]["version"])


def metric(url: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in httpx.get(f"{url}/metrics", timeout=10).text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def events(view: dict[str, Any]) -> list[RolloutEvent]:
    return [RolloutEvent(e["id"], view["name"], e["action"], e["actor"], e["at_ms"], {}) for e in view["history"]]


def spec(model: str, **overrides: Any) -> dict[str, Any]:
    """Short steps for tests: a 1 s shadow phase, then 50% and 100% for 1 s each, 30 requests a step."""
    body: dict[str, Any] = {"model": model, "candidate": "2", "steps": [50, 100], "step_seconds": 1, "min_requests": 30,
                            "guards": {"max_error_rate": 0.01, "max_p99_ratio": 1.5, "max_disagreement": 0.05}}
    guards = overrides.pop("guards", {})
    body["guards"].update(guards)
    return {**body, **overrides}


# --- one gateway for the single-replica cases --------------------------------------------------------


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    data_dir = tmp_path_factory.mktemp("rollouts-gw")
    for model, candidate in CANDIDATES.items():
        register(data_dir, model, candidate)
    g = start_gateway(data_dir, "--admin-token", TOKEN)
    yield g
    g.stop()


@pytest.fixture(scope="module")
def admin(gw: GatewayProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gw.url, headers=AUTH, timeout=30) as client:
        yield client


def test_a_good_candidate_reaches_100_percent_and_becomes_champion(gw: GatewayProcess, admin: httpx.Client) -> None:
    """Shadow, 50%, 100%, promote: champion moves to v2, previous names v1, the route serves v2 alone.

    The p99 guard is off here and in the restart and replica tests: both versions cost microseconds,
    and the p99 of a one-second step on a shared test machine is its scheduling noise (ratios up to
    5 were seen); the slow test below shows the guard catching a real breach of 1.5."""
    r = admin.put("/admin/rollouts/good", json=spec("good", guards=NO_P99))
    assert r.status_code == 201, r.text
    assert r.json()["state"] in ("pending", "shadow")
    with Traffic([gw.url], "good") as traffic:
        view = wait_state(gw.url, "good", FINAL)
    assert view["state"] == "promoted", (view["reason"], view["history"])
    assert [e["action"] for e in view["history"]] == ["create", "start", "step", "step", "promote"]
    assert [e.get("weight") for e in view["history"] if e["action"] == "step"] == [50, 100]
    assert {g: r["status"] for g, r in view["guards"].items()} == {
        "error_rate": "pass", "p99_ratio": "off", "disagreement": "pass", "psi": "no_data"}
    assert (alias_version(gw.url, "good", "champion"), alias_version(gw.url, "good", "previous")) == ("2", "1")
    assert {version for (code, version) in traffic.seen if code == 200} == {"1", "2"}
    served = admin.post("/v1/models/good:predict", json={"instances": [[0.1, 0.2, 0.3, 0.4]]})
    assert served.headers["x-gateway-model-version"] == "2"
    assert admin.get("/admin/routes/good").json()["policy"] is None  # following champion again
    audit = admin.get("/admin/audit", params={"route": "good"}).json()["entries"]
    assert len(audit) == 4 and all(e["actor"].startswith("rollout:good@") for e in audit)
    assert metric(gw.url, "gateway_rollout_steps_total", rollout="good", result="advanced") == 2
    assert metric(gw.url, "gateway_rollout_steps_total", rollout="good", result="promoted") == 1
    assert metric(gw.url, "gateway_rollout_candidate_weight", rollout="good") == 100
    assert metric(gw.url, "gateway_rollout_state", rollout="good", state="promoted") == 1


@pytest.mark.parametrize(("model", "guard", "guards"), [
    ("erroring", "error_rate", NO_P99),
    ("slow", "p99_ratio", {}),
    ("negated", "disagreement", NO_P99),
])
def test_a_bad_candidate_is_rolled_back_at_the_first_check(
    gw: GatewayProcess, admin: httpx.Client, model: str, guard: str, guards: dict[str, Any]
) -> None:
    """5% errors, a several-times-slower model, flipped decisions: each is rolled back when the shadow
    phase ends (the first guard check), naming the guard and its figures; the route is as before."""
    r = admin.put(f"/admin/rollouts/{model}", json=spec(model, guards=guards))
    assert r.status_code == 201, r.text
    with Traffic([gw.url], model):
        view = wait_state(gw.url, model, FINAL)
    assert view["state"] == "rolled_back", (view["reason"], view["history"])
    # "wait" when the shadow phase ended before min_requests copies were compared (the slow model)
    assert [e["action"] for e in view["history"] if e["action"] != "wait"] == ["create", "start", "rollback"]
    reason = view["reason"]
    assert (reason["guard"], reason["status"], reason["step"]) == (guard, "fail", "shadow")
    assert reason["value"] > reason["limit"]
    if guard == "error_rate":
        assert reason["candidate_requests"] >= 30 and 0.02 < reason["value"] < 0.1
    assert view["weight"] == 0
    assert admin.get(f"/admin/routes/{model}").json()["policy"] is None
    assert alias_version(gw.url, model, "champion") == "1"
    served = admin.post(f"/v1/models/{model}:predict", json={"instances": [[0.1, 0.2, 0.3, 0.4]]})
    assert served.headers["x-gateway-model-version"] == "1"
    assert metric(gw.url, "gateway_rollout_steps_total", rollout=model, result="rolled_back") == 1


def test_errors_after_the_arm_pick_count_against_that_arm(gw: GatewayProcess, admin: httpx.Client) -> None:
    """A model-run failure is labelled with the arm and version that served it, not an empty arm."""
    r = admin.put("/admin/routes/erroring-arm", json={"model": "erroring", "arms": [{"version": "2", "weight": 1}]})
    assert r.status_code == 200, r.text
    for _ in range(5):
        failed = admin.post("/v1/models/erroring-arm:predict", json={"instances": [[0.95, 0.0, 0.0, 0.0]]})
        assert failed.status_code >= 500
    labels = {"route": "erroring-arm", "protocol": "v1", "code": str(failed.status_code)}
    assert metric(gw.url, "gateway_requests_total", arm="2", version="2", **labels) == 5
    assert metric(gw.url, "gateway_requests_total", arm="", version="", **labels) == 0


class TestAdminAndCli:
    @pytest.mark.parametrize(("body", "needle"), [
        ({"model": "idle", "candidate": "2", "steps": [50, 10]}, "steps[1]"),
        ({"model": "idle", "candidate": "2", "steps": [50], "guards": {"max_error_rate": 5}}, "guards.max_error_rate"),
        ({"model": "nope", "candidate": "2", "steps": [50]}, "model"),
        ({"model": "idle", "candidate": "9", "steps": [50]}, "candidate"),
        ({"model": "idle", "candidate": "champion", "steps": [50]}, "candidate"),
        ({"model": "good", "candidate": "1", "steps": [50]}, "model"),
    ])
    def test_invalid_rollouts_are_422_naming_the_field_and_change_nothing(
        self, admin: httpx.Client, body: dict[str, Any], needle: str
    ) -> None:
        """Bad steps or guards, unknown model or version, candidate == stable, another model's route: 422."""
        r = admin.put("/admin/rollouts/idle", json=body)
        assert r.status_code == 422, r.text
        assert r.json()["error"].startswith(needle)
        assert admin.get("/admin/rollouts/idle").status_code == 404

    def test_writes_need_a_deployer(self, gw: GatewayProcess) -> None:
        """Without a token or with an unknown one rollouts answer 401; a reader may read them but not
        write (403); a deployer's write passes access control (here to the spec check, 422)."""
        assert httpx.get(f"{gw.url}/admin/rollouts").status_code == 401
        bad = {"authorization": "Bearer not-the-token"}
        assert httpx.put(f"{gw.url}/admin/rollouts/idle", json=spec("idle"), headers=bad).status_code == 401
        reader = {"authorization": "Bearer " + gw.cli("tokens", "create", "rollout-reader", "--role", "reader").stdout.strip()}
        deployer = {"authorization": "Bearer " + gw.cli("tokens", "create", "rollout-deployer", "--role", "deployer").stdout.strip()}
        deadline = time.monotonic() + 10
        while httpx.get(f"{gw.url}/admin/rollouts", headers=deployer).status_code != 200:  # tokens follow the registry
            assert time.monotonic() < deadline, "the new tokens never reached the gateway"
            time.sleep(0.05)
        assert httpx.get(f"{gw.url}/admin/rollouts", headers=reader).status_code == 200
        assert httpx.put(f"{gw.url}/admin/rollouts/idle", json=spec("idle"), headers=reader).status_code == 403
        invalid = {**spec("idle"), "steps": []}
        assert httpx.put(f"{gw.url}/admin/rollouts/idle", json=invalid, headers=deployer).status_code == 422

    def test_abort_rolls_back_at_once_and_a_second_start_is_409(self, gw: GatewayProcess, admin: httpx.Client) -> None:
        """Without traffic a rollout waits in its shadow phase; a second PUT is 409; DELETE restores the
        route; the CLI starts, shows and aborts the same way."""
        assert admin.put("/admin/rollouts/idle", json=spec("idle", min_requests=10**6)).status_code == 201
        waiting = wait_state(gw.url, "idle", ("shadow",))
        assert waiting["driver"]["holder"]
        assert admin.get("/admin/routes/idle").json()["policy"]["shadows"] == [{"version": "2", "sample": 1}]
        assert admin.put("/admin/rollouts/idle", json=spec("idle")).status_code == 409
        aborted = admin.delete("/admin/rollouts/idle")
        assert aborted.status_code == 200, aborted.text
        assert aborted.json()["state"] == "aborted"
        assert admin.get("/admin/routes/idle").json()["policy"] is None
        assert admin.delete("/admin/rollouts/idle").status_code == 409
        assert admin.delete("/admin/rollouts/never").status_code == 404
        listed = admin.get("/admin/rollouts").json()["rollouts"]
        assert {r["name"]: r["state"] for r in listed}["idle"] == "aborted"

        gw.cli("rollouts", "start", "idle", "--model", "idle", "--candidate", "2", "--steps", "20,100",
               "--step-seconds", "5", "--min-requests", "1000000", "--max-error-rate", "0.02")
        wait_state(gw.url, "idle", ("shadow",))
        status = gw.cli("rollouts", "status", "idle").stdout
        assert "idle  shadow  step=shadow  candidate v2 at 0%  stable v1" in status
        assert "start" in status
        assert "aborted" in gw.cli("rollouts", "abort", "idle").stdout
        assert wait_state(gw.url, "idle", ("aborted",))["spec"]["guards"]["max_error_rate"] == 0.02
        refused = gw.cli("rollouts", "abort", "idle", check=False)
        assert refused.returncode != 0 and "not running" in refused.stderr


    @pytest.mark.parametrize(("arms", "candidate", "needle"), [
        ([{"version": "1", "weight": 50}, {"version": "2", "weight": 50}], "2", "splits traffic over 2 arms"),
        ([{"version": "2", "weight": 1}], "1", "a rollout starts from the champion"),
    ])
    def test_a_route_not_on_its_champion_alone_is_409(
        self, admin: httpx.Client, arms: list[dict[str, Any]], candidate: str, needle: str
    ) -> None:
        """A route that splits traffic, or serves another version than champion, cannot start a rollout."""
        assert admin.put("/admin/routes/busy", json={"model": "idle", "arms": arms}).status_code == 200
        r = admin.put("/admin/rollouts/busy", json=spec("idle", candidate=candidate))
        assert r.status_code == 409, r.text
        assert needle in r.json()["error"]

    def test_a_stored_policy_comes_back_exactly_on_abort(self, gw: GatewayProcess, admin: httpx.Client) -> None:
        """A route with its own policy (another name than its model, a drift window) keeps its settings
        through the shadow phase and gets the very same policy back on abort."""
        original = {"model": "idle", "arms": [{"version": "champion", "weight": 1}], "split": "random",
                    "shadows": [], "drift": {"window_requests": 50}}
        assert admin.put("/admin/routes/idle-routed", json=original).status_code == 200
        assert admin.put("/admin/rollouts/idle-routed", json=spec("idle", min_requests=10**6)).status_code == 201
        wait_state(gw.url, "idle-routed", ("shadow",))
        during = admin.get("/admin/routes/idle-routed").json()["policy"]
        assert (during["drift"], during["shadows"]) == ({"window_requests": 50}, [{"version": "2", "sample": 1}])
        assert admin.delete("/admin/rollouts/idle-routed").status_code == 200
        assert admin.get("/admin/routes/idle-routed").json()["policy"] == original


# --- restart and replicas ------------------------------------------------------------------------


def test_a_restart_mid_rollout_resumes_it(tmp_path: Path) -> None:
    """Stopped during its 50% step, the rollout is resumed by the next gateway on the same data dir
    (a new holder, from the stored step) and promoted."""
    data_dir = tmp_path / "gw"
    data_dir.mkdir()
    register(data_dir, "resumed", linear(1.1))
    first = start_gateway(data_dir, "--admin-token", TOKEN)
    try:
        body = spec("resumed", step_seconds=1.5, guards=NO_P99)
        assert httpx.put(f"{first.url}/admin/rollouts/resumed", json=body, headers=AUTH).status_code == 201
        with Traffic([first.url], "resumed"):
            wait_state(first.url, "resumed", ("stepping",), weight=50)
    finally:
        first.stop()
    second = start_gateway(data_dir, "--admin-token", TOKEN)
    try:
        with Traffic([second.url], "resumed"):
            view = wait_state(second.url, "resumed", FINAL)
    finally:
        second.stop()
    assert view["state"] == "promoted", (view["reason"], view["history"])
    actions = [(e["action"], e.get("step")) for e in view["history"]]
    assert actions == [("create", None), ("start", "shadow"), ("step", "50%"), ("resume", "50%"), ("step", "100%"),
                       ("promote", None)]
    first_holder = view["history"][1]["actor"]
    assert view["history"][2]["actor"] == first_holder
    assert all(e["actor"] != first_holder for e in view["history"][3:])
    assert len(holders(events(view))) == 2


def test_two_replicas_never_both_drive_a_rollout(tmp_path: Path, fresh_postgres_url: str) -> None:
    """Two gateways on one PostgreSQL registry, traffic to both: one replica holds the lease and writes
    every step while the other follows. SIGKILLed during the 50% step, the driver's lease expires and
    the survivor resumes and promotes: the two never write interleaved."""
    env = {"GATEWAY_REGISTRY_URL": fresh_postgres_url}
    shared = tmp_path / "shared"
    shared.mkdir()
    register(shared, "replicated", linear(1.1), **env)
    a = start_gateway(shared, "--admin-token", TOKEN, **env)
    b = start_gateway(shared, "--admin-token", TOKEN, **env)
    try:
        body = spec("replicated", min_requests=15, step_seconds=1.5, guards=NO_P99)
        assert httpx.put(f"{a.url}/admin/rollouts/replicated", json=body, headers=AUTH).status_code == 201
        with Traffic([a.url, b.url], "replicated"):
            running = wait_state(b.url, "replicated", ("stepping",), weight=50)
            holder = running["driver"]["holder"]
            driver, survivor = (a, b) if f"as replica {holder}" in a.output() else (b, a)
            assert f"as replica {holder}" in driver.output() and "driving it" not in survivor.output()
            driver.proc.send_signal(signal.SIGKILL)
            driver.proc.wait(timeout=10)
            view = wait_state(survivor.url, "replicated", FINAL)
        assert view["state"] == "promoted", (view["reason"], view["history"])
        actors = [e["actor"].rsplit("@", 1)[1] for e in view["history"][1:]]
        taken = actors.index(next(x for x in actors if x != holder))
        assert set(actors[:taken]) == {holder} and holder not in actors[taken:]  # one after the other
        assert view["history"][1 + taken]["action"] == "resume"
        assert len(holders(events(view))) == 2
        audit = httpx.get(f"{survivor.url}/admin/audit", params={"route": "replicated"}, headers=AUTH).json()["entries"]
        assert {e["actor"] for e in audit} <= {f"rollout:replicated@{h}" for h in holders(events(view))}
        r = httpx.post(f"{survivor.url}/v1/models/replicated:predict", json={"instances": [[0.1, 0.2, 0.3, 0.4]]})
        assert r.headers["x-gateway-model-version"] == "2"
    finally:
        a.stop()
        b.stop()
