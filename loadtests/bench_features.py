"""Benchmark: what online features cost. Ingest rows/s into Redis with `gateway features ingest`, and the
added latency and CPU of a feature-enriched v1 request over a plain v1 request carrying the same row.

    .venv/bin/python -m loadtests.bench_features [--rows 100000] [--seconds 5] [--rounds 3]
        [--connections 1,32] [--out loadtests/results/features.md] [--note TEXT]

Everything runs here, on loopback: a private redis-server (no persistence) and one `gateway serve --redis`,
with a fresh SQLite registry in a temp dir. Two routes serve the same ONNX bytes (gateway.demo.build_fraud,
FP32 [batch, 4]): `fraud` declares user_features:age,tenure_months,avg_spend + request:amount and gets
{"instances": [{"user_id": u, "amount": a}]}; `fraud_plain` declares nothing and gets the assembled row
{"instances": [[age, tenure, spend, a]]} for the same users. Both have a drift reference profile, so the
only difference is the feature read. The two alternate within each round (order flipped every round), so
machine noise hits both alike; figures are medians over rounds.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import orjson
import redis

from gateway.demo import FRAUD_FEATURES, USER_VIEW, USER_VIEW_SPEC, build_fraud
from loadtests.bench.processes import Server, ServerError, free_port, http, start_server, wait_ready
from loadtests.bench.procstat import Usage
from loadtests.bench.wrk import WrkResult, find_wrk, run_wrk, wrk_command

ROOT = Path(__file__).resolve().parent.parent
ENRICHED, PLAIN = "fraud", "fraud_plain"
BODY_USERS = 1000  # distinct request bodies per variant (random users among the ingested ones)


@dataclass(frozen=True, slots=True)
class Measure:
    """One wrk run against one route, with the CPU the gateway and Redis used meanwhile."""

    route: str
    connections: int
    wrk: WrkResult
    gateway: Usage
    redis_cpu_s: float
    redis_commands: int

    @property
    def cpu_us(self) -> float:
        return self.gateway.cpu_s / max(self.wrk.requests, 1) * 1e6

    @property
    def redis_us(self) -> float:
        return self.redis_cpu_s / max(self.wrk.requests, 1) * 1e6

    @property
    def errors(self) -> int:
        return self.wrk.non_2xx + self.wrk.socket_errors


@dataclass(frozen=True, slots=True)
class Ingest:
    batch_size: int
    rows: int
    seconds: float  # as the CLI measured it (reading, encoding, pipelined writes)
    rows_per_s: float
    wall_s: float  # the whole command, Python start-up and registry read included


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# --- setup: redis, registry, ingest, gateway -------------------------------------------------------


def cli(data_dir: Path, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env["GATEWAY_DATA_DIR"] = str(data_dir)
    done = subprocess.run([sys.executable, "-m", "gateway", *args], env=env, capture_output=True, text=True,
                          timeout=300, cwd=ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"gateway {' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
    return done.stdout


@contextlib.contextmanager
def redis_server(cpu: int, workdir: Path) -> Iterator[tuple[Server, str]]:
    port = free_port()
    server = start_server("redis", ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                    "--appendonly", "no", "--protected-mode", "no", "--loglevel", "warning"],
                          cpu=cpu, port=port, log=workdir / "redis.log")
    url = f"redis://127.0.0.1:{port}/0"
    try:
        client = redis.Redis.from_url(url)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                server.check_alive()
                if time.monotonic() > deadline:
                    raise ServerError(f"redis-server on {port} did not answer PING") from None
                time.sleep(0.02)
        yield server, url
    finally:
        server.stop()


def user_rows(n: int) -> np.ndarray:
    """Rows [age, tenure_months, avg_spend] for users 1..n (row i is user i + 1)."""
    rng = np.random.default_rng(11)
    return np.column_stack([rng.integers(18, 80, n), rng.integers(0, 120, n), rng.gamma(2.0, 40.0, n).round(2)])


def prepare(data_dir: Path, workdir: Path, users: np.ndarray) -> Path:
    """The view, both models (with reference profiles), and the users CSV; returns the CSV's path."""
    views = workdir / "views.json"
    views.write_bytes(orjson.dumps([{"name": USER_VIEW, **USER_VIEW_SPEC}]))
    cli(data_dir, "features", "apply", str(views))
    model = workdir / "fraud.onnx"
    model.write_bytes(build_fraud())
    rng = np.random.default_rng(3)
    sample = users[rng.integers(0, len(users), 4000)]
    amounts = rng.gamma(2.0, 30.0, len(sample)).round(2)
    reference = workdir / "reference.csv"
    reference.write_text("age,tenure_months,avg_spend,amount\n" + "".join(
        f"{a:g},{t:g},{s:g},{m:g}\n" for (a, t, s), m in zip(sample.tolist(), amounts.tolist(), strict=True)))
    cli(data_dir, "models", "register", ENRICHED, str(model), "--features", ",".join(FRAUD_FEATURES),
        "--reference", str(reference))
    cli(data_dir, "models", "register", PLAIN, str(model), "--reference", str(reference))
    path = workdir / "users.csv"
    with path.open("w") as f:
        f.write("user_id,age,tenure_months,avg_spend\n")
        f.writelines(f"{i + 1},{a:g},{t:g},{s:g}\n" for i, (a, t, s) in enumerate(users.tolist()))
    return path


_INGESTED = re.compile(r"ingested ([\d,]+) rows .*: ([\d.]+) s, ([\d,]+) rows/s")


def ingest(data_dir: Path, csv: Path, redis_url: str, batch_size: int) -> Ingest:
    started = time.perf_counter()
    out = cli(data_dir, "features", "ingest", USER_VIEW, str(csv), "--redis", redis_url, "--batch-size", str(batch_size))
    wall = time.perf_counter() - started
    match = _INGESTED.search(out)
    if match is None:
        raise RuntimeError(f"unexpected ingest output: {out!r}")
    rows, seconds, rate = (float(g.replace(",", "")) for g in match.groups())
    return Ingest(batch_size, int(rows), seconds, rate, wall)


def start_gateway(data_dir: Path, redis_url: str, cpu: int, workdir: Path, feature_timeout_ms: float) -> Server:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env["GATEWAY_DATA_DIR"] = str(data_dir)
    server = start_server("gateway", [sys.executable, "-m", "gateway", "serve", "--port", str(port), "--redis", redis_url,
                                      "--log-level", "warning", "--intra-op-threads", "1", "--inference-threads", "1",
                                      "--feature-timeout-ms", f"{feature_timeout_ms:g}"],
                          cpu=cpu, port=port, log=workdir / "gateway.log", env=env, cwd=ROOT)
    wait_ready(server, "/v2/health/ready", 60)
    return server


# --- requests --------------------------------------------------------------------------------------


def bodies(users: np.ndarray, n: int) -> tuple[list[bytes], list[bytes]]:
    """`n` (enriched, plain) body pairs for random users: the same rows, keyed or spelled out."""
    rng = np.random.default_rng(5)
    picks = rng.integers(0, len(users), n)
    amounts = rng.gamma(2.0, 30.0, n).round(2)
    enriched = [orjson.dumps({"instances": [{"user_id": int(i) + 1, "amount": float(a)}]}) for i, a in zip(picks, amounts, strict=True)]
    plain = [orjson.dumps({"instances": [[*map(float, users[i]), float(a)]]}) for i, a in zip(picks, amounts, strict=True)]
    return enriched, plain


def check_equivalent(base: str, enriched: bytes, plain: bytes) -> None:
    """Both routes answer 200 with the same prediction, and the enriched one defaulted nothing."""
    s1, h1, b1 = http("POST", f"{base}/v1/models/{ENRICHED}:predict", enriched)
    s2, _, b2 = http("POST", f"{base}/v1/models/{PLAIN}:predict", plain)
    if s1 != 200 or s2 != 200 or h1.get("x-gateway-features-defaulted") != "0":
        raise RuntimeError(f"sanity check failed: {s1} {h1} {b1!r} / {s2} {b2!r}")
    p1, p2 = orjson.loads(b1)["predictions"], orjson.loads(b2)["predictions"]
    if not np.allclose(p1, p2, rtol=1e-5):
        raise RuntimeError(f"the routes disagree on the same row: {p1} vs {p2}")


def lua_script(path: Path, items: list[bytes]) -> Path:
    """A wrk script POSTing a random body of `items` per request (Lua level-1 long strings hold the JSON as is)."""
    lines = ['wrk.method = "POST"', 'wrk.headers["Content-Type"] = "application/json"', "math.randomseed(7)",
             "local bodies = {", *(f"[=[{b.decode()}]=]," for b in items), "}", "local n = #bodies",
             "request = function() return wrk.format(nil, nil, nil, bodies[math.random(n)]) end"]
    path.write_text("\n".join(lines) + "\n")
    return path


_REQUESTS = re.compile(r'^gateway_requests_total\{(?P<labels>[^}]*)\} (?P<value>[0-9.e+]+)$')


def failures(base: str) -> dict[str, int]:
    """Non-200 answers the gateway counted, as "route code" -> count (from /metrics)."""
    _, _, body = http("GET", f"{base}/metrics")
    out: dict[str, int] = {}
    for line in body.decode().splitlines():
        match = _REQUESTS.match(line)
        if match is None:
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', match["labels"]))
        if labels.get("code") != "200" and float(match["value"]) > 0:
            key = f"{labels.get('route')} {labels.get('code')}"
            out[key] = out.get(key, 0) + int(float(match["value"]))
    return out


def redis_commands(url: str) -> int:
    client = redis.Redis.from_url(url)
    try:
        return int(client.info("stats")["total_commands_processed"])
    finally:
        client.close()


def measure(wrk: str, cpu: int, gateway: Server, redis_proc: Server, redis_url: str, route: str, script: Path,
            connections: int, seconds: float) -> Measure:
    url = f"{gateway.base_url}/v1/models/{route}:predict"
    g0, r0, c0 = gateway.usage(), redis_proc.usage(), redis_commands(redis_url)
    result = run_wrk(wrk_command(wrk, cpu, connections, seconds, script, url), timeout_s=seconds + 30)
    g1, r1, c1 = gateway.usage(), redis_proc.usage(), redis_commands(redis_url)
    return Measure(route, connections, result, g1 - g0, (r1 - r0).cpu_s, c1 - c0 - 1)  # -1: the INFO itself


# --- report ----------------------------------------------------------------------------------------


def med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def report(args: argparse.Namespace, command: str, ingests: list[Ingest], runs: list[Measure],
           load: tuple[float, float], failed: dict[str, int]) -> str:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), "unknown CPU")
    lines = [
        "# Benchmark: online features (ingest rows/s, added latency and CPU of a feature-enriched request)",
        "",
        f"- Command: `{command}`",
        f"- Date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        f"- Machine: {os.cpu_count()} CPUs ({model}), Linux {platform.release()}, Python {platform.python_version()}, "
        f"redis-server {redis_version()}",
        f"- Conditions: load average {load[0]:.2f} before, {load[1]:.2f} after (1 min)." + (f" {args.note}" if args.note else ""),
        "- Gateway (`gateway serve --redis <private redis> --intra-op-threads 1 --inference-threads 1 --log-level warning "
        f"--feature-timeout-ms {args.feature_timeout_ms:g}`) pinned to CPU {args.server_cpu}; wrk (`-t1 -c<conns> -d{args.seconds:g}s --latency`, "
        f"a Lua script picking one of {BODY_USERS} bodies per request) and redis-server pinned to CPU {args.client_cpu}.",
        f"- Routes: `{ENRICHED}` declares {', '.join(FRAUD_FEATURES)} and gets `{{\"instances\": [{{\"user_id\": u, "
        f"\"amount\": a}}]}}`; `{PLAIN}` is the same ONNX file with no declared features and gets "
        "`{\"instances\": [[age, tenure_months, avg_spend, a]]}` for the same users (predictions checked equal "
        "before the run). Both carry a drift reference profile, so both queue drift rows.",
        f"- {args.rounds} interleaved round(s) per connection count after a 2 s warm-up of each route; the order flips "
        "every round. Values are medians over rounds; 'added' is the median of the per-round differences.",
        "- CPU µs/req: utime + stime of the gateway's process group (/proc) over the wrk run / requests completed; "
        "Redis the same for redis-server. Redis commands/req from INFO total_commands_processed (HMGETs, and the "
        "drift count merges of both routes).",
        "",
        f"## Ingest: `gateway features ingest {USER_VIEW} users.csv --redis URL` ({ingests[0].rows:,} rows, 3 float32 "
        "features, HSET + PEXPIRE per row, one pipeline per batch)",
        "",
        "| batch size | run | rows | seconds (CLI's own) | rows/s | whole command incl. start-up, s |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    for i, ing in enumerate(ingests):
        kind = "first (new keys)" if i == 0 else "re-run (overwrite)"
        lines.append(f"| {ing.batch_size:,} | {kind} | {ing.rows:,} | {ing.seconds:.2f} | {ing.rows_per_s:,.0f} | {ing.wall_s:.2f} |")
    lines += ["", "## Enriched vs plain v1 predict", "",
              "| route | conns | req/s | p50 ms | p99 ms | gateway CPU µs/req | Redis CPU µs/req | Redis commands/req | errors |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for conns in args.connections:
        for route in (PLAIN, ENRICHED):
            rs = [m for m in runs if m.connections == conns and m.route == route]
            lines.append(
                f"| {route} | {conns} | {med([m.wrk.rps for m in rs]):,.0f} | {med([m.wrk.p50_s * 1e3 for m in rs]):.3f} | "
                f"{med([m.wrk.p99_s * 1e3 for m in rs]):.3f} | {med([m.cpu_us for m in rs]):.0f} | "
                f"{med([m.redis_us for m in rs]):.1f} | {med([m.redis_commands / max(m.wrk.requests, 1) for m in rs]):.2f} | "
                f"{sum(m.errors for m in rs)} |")
    lines += ["", "## Added by the feature read (enriched minus plain, per round; median [min-max])", "", "```"]
    for conns in args.connections:
        pairs = list(zip([m for m in runs if m.connections == conns and m.route == PLAIN],
                         [m for m in runs if m.connections == conns and m.route == ENRICHED], strict=True))

        def spread(values: list[float], unit: str, digits: int) -> str:
            return f"{med(values):+.{digits}f} {unit} [{min(values):+.{digits}f} .. {max(values):+.{digits}f}]"

        lines.append(f"{conns:>3} conns: p50 {spread([(e.wrk.p50_s - p.wrk.p50_s) * 1e3 for p, e in pairs], 'ms', 3)}, "
                     f"p99 {spread([(e.wrk.p99_s - p.wrk.p99_s) * 1e3 for p, e in pairs], 'ms', 3)}, "
                     f"gateway CPU {spread([e.cpu_us - p.cpu_us for p, e in pairs], 'µs/req', 0)}, "
                     f"throughput {med([e.wrk.rps / p.wrk.rps for p, e in pairs]):.2f} x plain")
    lines += ["```", ""]
    shown = ", ".join(f"{k}: {v}" for k, v in sorted(failed.items())) or "none"
    lines += [f"Non-200 answers over the whole run, warm-ups included (route, status: count, from /metrics): {shown}. "
              "A 503 on the enriched route is a feature read that passed --feature-timeout-ms (the route's default "
              "policy, on_store_error=error, fails fast); with redis-server sharing wrk's CPU, a busy machine delays "
              "some replies past 50 ms.", ""]
    return "\n".join(lines)


def redis_version() -> str:
    out = subprocess.run(["redis-server", "--version"], capture_output=True, text=True, check=False).stdout
    match = re.search(r"v=(\S+)", out)
    return match.group(1) if match else "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, default=100_000, help="users ingested (and requested from)")
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=lambda s: [int(x) for x in s.split(",")], default=[1, 32])
    parser.add_argument("--feature-timeout-ms", type=float, default=50.0, help="the gateway's online-read budget")
    parser.add_argument("--server-cpu", type=int, default=0)
    parser.add_argument("--client-cpu", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None, help="write the markdown report here")
    parser.add_argument("--note", default="", help="free text for the Conditions line")
    args = parser.parse_args(argv)
    command = shlex.join([".venv/bin/python", "-m", "loadtests.bench_features", *(sys.argv[1:] if argv is None else argv)])
    wrk = find_wrk()
    load_before = os.getloadavg()[0]
    users = user_rows(args.rows)
    with tempfile.TemporaryDirectory(prefix="bench-features-") as tmp:
        workdir = Path(tmp)
        data_dir = workdir / "registry"
        say("registering the view and the two models")
        csv = prepare(data_dir, workdir, users)
        with redis_server(args.client_cpu, workdir) as (redis_proc, redis_url):
            ingests = []
            for batch_size in (1000, 1000, 5000):
                ingests.append(ingest(data_dir, csv, redis_url, batch_size))
                say(f"ingest batch {batch_size}: {ingests[-1].rows:,} rows in {ingests[-1].seconds:.2f} s, "
                    f"{ingests[-1].rows_per_s:,.0f} rows/s")
            gateway = start_gateway(data_dir, redis_url, args.server_cpu, workdir, args.feature_timeout_ms)
            try:
                enriched, plain = bodies(users, BODY_USERS)
                check_equivalent(gateway.base_url, enriched[0], plain[0])
                scripts = {ENRICHED: lua_script(workdir / "enriched.lua", enriched),
                           PLAIN: lua_script(workdir / "plain.lua", plain)}
                runs: list[Measure] = []
                for conns in args.connections:
                    for route in (PLAIN, ENRICHED):  # warm-up, not recorded
                        measure(wrk, args.client_cpu, gateway, redis_proc, redis_url, route, scripts[route], conns, 2)
                    for r in range(args.rounds):
                        for route in (PLAIN, ENRICHED) if r % 2 == 0 else (ENRICHED, PLAIN):
                            m = measure(wrk, args.client_cpu, gateway, redis_proc, redis_url, route, scripts[route],
                                        conns, args.seconds)
                            runs.append(m)
                            say(f"{conns:>3} conns round {r + 1} {route:<12} {m.wrk.rps:8,.0f} req/s  "
                                f"p50 {m.wrk.p50_s * 1e3:6.3f} ms  p99 {m.wrk.p99_s * 1e3:6.3f} ms  "
                                f"{m.cpu_us:5.0f} µs CPU/req  redis {m.redis_us:4.1f} µs/req  errors {m.errors}")
                gateway.check_alive()
                failed = failures(gateway.base_url)
            finally:
                gateway.stop()
    text = report(args, command, ingests, runs, (load_before, os.getloadavg()[0]), failed)
    print(text)
    if args.out is not None:
        args.out.write_text(text)
        say(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
