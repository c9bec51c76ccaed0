"""What is compared: the ONNX models (gateway.demo builders), the three servers with their command lines,
and the variants (endpoint + body + connections) that each round measures, in round order."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import orjson

from loadtests.bench import targets as t
from loadtests.bench.payloads import Payload, rows, v1_predict, v2_binary, v2_json
from loadtests.bench.processes import Server, ServerError, free_port, http, start_server, wait_ready
from loadtests.bench.report import Variant

SMALL, HEAVY = "small", "heavy"
DRIFT_SERVER = "gateway-drift"  # a second gateway whose registry holds reference profiles: drift on 32 features
CONTROL_SERVER = "gateway-control"  # a third gateway, the plain one's twin: the side-by-side null pair's other half
PREDICT = f"/v1/models/{SMALL}:predict"
CANARY = {"model": SMALL, "arms": [{"version": "1", "weight": 90}, {"version": "2", "weight": 10}]}
READY_TIMEOUT_S = 90.0
ROOT = Path(__file__).resolve().parents[2]  # the repository: servers run from here so `-m loadtests...` imports


@dataclass(frozen=True, slots=True)
class Models:
    small_v1: Path
    small_v2: Path
    heavy: Path


def build_models(directory: Path) -> Models:
    """Small MLP 32->64->1 (seeds 1 and 2: the canary's two versions) and heavy 32->1024->1024->1 (seed 3)."""
    from gateway.demo import build_mlp

    models = Models(directory / "small-v1.onnx", directory / "small-v2.onnx", directory / "heavy.onnx")
    models.small_v1.write_bytes(build_mlp(1, features=32, hidden=(64,)))
    models.small_v2.write_bytes(build_mlp(2, features=32, hidden=(64,)))
    models.heavy.write_bytes(build_mlp(3, features=32, hidden=(1024, 1024)))
    return models


def drift_data_dir(data_dir: Path) -> Path:
    """The drift gateway's registry, beside the plain one's."""
    return data_dir.with_name(data_dir.name + "-drift")


def control_data_dir(data_dir: Path) -> Path:
    """The control gateway's registry (the plain one's copy), beside the plain one's."""
    return data_dir.with_name(data_dir.name + "-control")


def register(data_dir: Path, models: Models) -> None:
    """The gateway's registry in `data_dir`: small v1 and v2, heavy v1 (what `gateway models register` does);
    and the same in `drift_data_dir(data_dir)`, with a reference profile of 32 standard-normal features (and
    the output) for each small version, so that gateway tracks drift on the small route; and a plain copy in
    `control_data_dir(data_dir)` for the control gateway."""
    _register(data_dir, models, profiles=False)
    _register(drift_data_dir(data_dir), models, profiles=True)
    _register(control_data_dir(data_dir), models, profiles=False)


def _register(data_dir: Path, models: Models, *, profiles: bool) -> None:
    import numpy as np

    from gateway.config import Config
    from gateway.reference import build_profile
    from registry.artifacts import ArtifactStore
    from registry.registration import register_model_file
    from registry.serving import ServingMetadata
    from registry.store import RegistryStore

    config = Config(data_dir=data_dir)
    store = RegistryStore(config.database_url)
    try:
        artifacts = ArtifactStore(config.artifacts_dir)
        sample = np.random.default_rng(21).standard_normal((4000, 32)).astype(np.float32)
        columns = {f"f{i}": sample[:, i] for i in range(sample.shape[1])}
        for name, path in ((SMALL, models.small_v1), (SMALL, models.small_v2), (HEAVY, models.heavy)):
            mv = register_model_file(store, artifacts, name, path.read_bytes(), description="benchmark model")
            if profiles and name == SMALL:
                profile = build_profile(path.read_bytes(), mv.signature, columns)
                ServingMetadata(store).put_reference_profile(name, mv.version, profile)
    finally:
        store.close()


def gateway_flags(max_batch_delay_ms: float) -> list[str]:
    """ONNX threads set explicitly: one intra-op thread per run, one executor thread, one worker."""
    return ["--workers", "1", "--intra-op-threads", "1", "--inference-threads", "1",
            "--max-batch-delay-ms", f"{max_batch_delay_ms:g}", "--log-level", "warning"]


def commands(bench_python: Path, models: Models, data_dir: Path, max_batch_delay_ms: float) -> dict[str, list[str]]:
    """Each server's argv without its port (added at start)."""
    return {
        t.FLOOR: [sys.executable, "-m", "loadtests.bench.servers.floor", "--path", PREDICT],
        t.CEILING: [sys.executable, "-m", "loadtests.bench.servers.ceiling", "--path", PREDICT],
        t.TEXTBOOK: [str(bench_python), "-m", "loadtests.bench.servers.textbook", "--path", PREDICT,
                     "--model", str(models.small_v1)],
        "gateway": [sys.executable, "-m", "gateway", "serve", "--host", "127.0.0.1", "--data-dir", str(data_dir),
                    *gateway_flags(max_batch_delay_ms)],
        DRIFT_SERVER: [sys.executable, "-m", "gateway", "serve", "--host", "127.0.0.1",
                       "--data-dir", str(drift_data_dir(data_dir)), *gateway_flags(max_batch_delay_ms)],
        CONTROL_SERVER: [sys.executable, "-m", "gateway", "serve", "--host", "127.0.0.1",
                         "--data-dir", str(control_data_dir(data_dir)), *gateway_flags(max_batch_delay_ms)],
    }


@dataclass(frozen=True, slots=True)
class PairSpec:
    """Two variants measured side by side (report.Pair); `a / b` is the ratio reported."""

    name: str
    label: str
    a: str
    b: str


# The drift cost is measured side by side against the plain twin; the null pair (two identical plain
# gateways) shows how far from 1.0 the method itself strays.
PAIRS = (
    PairSpec(t.DRIFT_PAIR, "drift on 32 features vs its twin, side by side", t.GW_V1_DRIFT, t.GW_V1),
    PairSpec(t.NULL_PAIR, "null pair: two identical plain gateways, side by side", t.GW_V1_CONTROL, t.GW_V1),
)


def control_variant(connections: int) -> tuple[Variant, Payload]:
    """GW_V1 on the control gateway: measured only in the null pair, never in the sequential rounds."""
    return (Variant(t.GW_V1_CONTROL, "gateway /v1 predict, small, 90/10 canary (control twin)", CONTROL_SERVER,
                    PREDICT, "v1, 1 row", connections, SMALL), v1_predict(rows(1)))


def variants(connections: int) -> list[tuple[Variant, Payload]]:
    """The round order. Bodies: one row for /v1 (the same bytes for all three servers), 64 rows for v2."""
    one, many = rows(1), rows(64)
    v1 = v1_predict(one)
    return [
        (Variant(t.FLOOR, "raw ASGI no-op on uvicorn (reference floor)", t.FLOOR, PREDICT, "v1, 1 row", connections),
         v1),
        (Variant(t.CEILING, "empty Starlette (framework ceiling)", t.CEILING, PREDICT, "v1, 1 row", connections), v1),
        (Variant(t.TEXTBOOK, "textbook FastAPI + pydantic, small MLP", t.TEXTBOOK, PREDICT, "v1, 1 row",
                 connections), v1),
        (Variant(t.GW_V1, "gateway /v1 predict, small, 90/10 canary", "gateway", PREDICT, "v1, 1 row",
                 connections, SMALL), v1),
        (Variant(t.GW_V2_JSON, "gateway /v2 infer JSON, small, 90/10 canary", "gateway",
                 f"/v2/models/{SMALL}/infer", "v2 JSON, 64 rows", connections, SMALL), v2_json(many)),
        (Variant(t.GW_V2_BINARY, "gateway /v2 infer binary, small, 90/10 canary", "gateway",
                 f"/v2/models/{SMALL}/infer", "v2 binary, 64 rows", connections, SMALL), v2_binary(many)),
        (Variant(t.GW_HEAVY, "gateway /v1 predict, heavy, dynamic batching", "gateway",
                 f"/v1/models/{HEAVY}:predict", "v1, 1 row", connections, HEAVY), v1),
        (Variant(t.GW_HEAVY_1, "gateway /v1 predict, heavy, 1 connection", "gateway",
                 f"/v1/models/{HEAVY}:predict", "v1, 1 row", 1, HEAVY), v1),
        (Variant(t.GW_V1_DRIFT, "gateway /v1 predict, small, 90/10 canary, drift on 32 features", DRIFT_SERVER,
                 PREDICT, "v1, 1 row", connections, SMALL), v1),
    ]


def start_all(cmds: dict[str, list[str]], cpu: int, log_dir: Path, say: Callable[[str], None]) -> dict[str, Server]:
    """Start every server pinned to `cpu`, then wait for each to be ready. Stops them all on failure."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}  # the flags alone configure it
    health = {t.FLOOR: "/", t.CEILING: "/health", t.TEXTBOOK: "/health", "gateway": "/v2/health/ready",
              DRIFT_SERVER: "/v2/health/ready", CONTROL_SERVER: "/v2/health/ready"}
    servers: dict[str, Server] = {}
    try:
        for name, argv in cmds.items():
            port = free_port()
            servers[name] = start_server(name, [*argv, "--port", str(port)], cpu=cpu, port=port,
                                         log=log_dir / f"{name}.log", env=env, cwd=ROOT)
        for name, server in servers.items():
            wait_ready(server, health[name], READY_TIMEOUT_S)
            if name in (DRIFT_SERVER, CONTROL_SERVER):  # the harness sets the plain gateway's canary itself
                set_canary(server)
            say(f"  {name} ready on {server.base_url} (pid {server.pid})")
    except BaseException:
        for server in servers.values():
            server.stop()
        raise
    return servers


def set_canary(gateway: Server) -> None:
    status, _, body = http("PUT", f"{gateway.base_url}/admin/routes/{SMALL}", orjson.dumps(CANARY),
                           {"Content-Type": "application/json"})
    if status != 200:
        raise ServerError(f"PUT /admin/routes/{SMALL} answered {status}: {body[:300]!r}")


def verify(variant: Variant, payload: Payload, server: Server) -> None:
    """One request must succeed before wrk sends thousands; the canary must serve both arms."""
    canary = variant.key in (t.GW_V1, t.GW_V1_DRIFT, t.GW_V1_CONTROL)
    tries = 200 if canary else 1
    arms = set()
    for _ in range(tries):
        status, headers, body = http("POST", server.base_url + variant.path, payload.body, payload.headers)
        if status != 200:
            raise ServerError(f"{variant.key}: POST {variant.path} answered {status}: {body[:300]!r}")
        arms.add(headers.get("x-gateway-arm"))
    if canary and arms != {"1", "2"}:
        raise ServerError(f"{variant.key}: the 90/10 canary served arms {sorted(map(str, arms))} in {tries} requests")
    if variant.key == t.GW_V1_DRIFT:
        check_drift(server)


def check_drift(gateway: Server) -> None:
    """The drift gateway must track both small versions on 32 features (plus the output)."""
    status, _, body = http("GET", f"{gateway.base_url}/monitoring/drift?route={SMALL}&history=0")
    entries = orjson.loads(body)["drift"] if status == 200 else []
    inputs = {e["version"]: sum(f["role"] == "input" for f in e["features"]) for e in entries}
    if inputs != {"1": 32, "2": 32}:
        raise ServerError(f"{DRIFT_SERVER}: expected drift on 32 features for small v1 and v2, /monitoring/drift "
                          f"answered {status} with {inputs}")


def batch_totals(gateway: Server, model: str) -> tuple[float, float] | None:
    """(rows, runs) so far for `model`, all versions, from the gateway's gateway_batch_size_rows histogram;
    None when /metrics does not have it."""
    status, _, body = http("GET", gateway.base_url + "/metrics")
    if status != 200:
        return None
    rows = runs = 0.0
    found = False
    label = f'model="{model}"'
    for line in body.decode("utf-8", "replace").splitlines():
        if label not in line:
            continue
        if line.startswith("gateway_batch_size_rows_sum{"):
            rows += float(line.rsplit(" ", 1)[1])
            found = True
        elif line.startswith("gateway_batch_size_rows_count{"):
            runs += float(line.rsplit(" ", 1)[1])
    return (rows, runs) if found else None
