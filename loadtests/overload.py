"""Overload, measured: find the rate one pinned core sustains (closed loop), then offer an open-loop
constant arrival rate at fractions and multiples of it and report what the accepted requests waited,
how many were shed with 503 + Retry-After and how fast, and whether any request outlived its deadline.

    python -m loadtests.overload            # ~2 min; writes loadtests/results/overload.md
    python -m loadtests.overload --quick    # ~40 s smoke run; writes loadtests/results/overload-quick.md

The gateway runs on CPU 0 (taskset), this generator on CPU 1 (uvloop, raw HTTP/1.1 keep-alive
connections). The generator keeps the arrival schedule whatever the answers do: request i is due at
t0 + i/rate and is sent on an idle connection (or a new one) when due; its latency is counted from when
it was due, so generator lag shows as latency rather than hiding it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shlex
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from loadtests.bench.harness import machine
from loadtests.bench.lineup import ROOT
from loadtests.bench.payloads import rows, v2_binary
from loadtests.bench.processes import Server, free_port, http, start_server, wait_ready
from loadtests.bench.procstat import Usage

MODEL = "heavy"
PATH = f"/v2/models/{MODEL}/infer"
MARKER = "<!-- findings: written by hand; the run keeps everything below this line when it rewrites the file -->"
NO_ANSWER = 0  # status recorded for a request that got no HTTP answer (connection error or client give-up)
NOT_SENT = -1  # due while all of the generator's connections were busy: a limit of the generator, not sent


# ---- one keep-alive HTTP/1.1 connection, just enough for fixed requests and Content-Length answers ----

class Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Connection:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def exchange(self, request: bytes) -> tuple[int, bool, bool]:
        """Send one request, read its answer: (status, has Retry-After, server keeps the connection)."""
        self.writer.write(request)
        head = (await self.reader.readuntil(b"\r\n\r\n")).lower()
        status = int(head[9:12])
        at = head.find(b"\r\ncontent-length:")
        length = int(head[at + 17 : head.index(b"\r\n", at + 2)]) if at >= 0 else 0
        await self.reader.readexactly(length)
        return status, b"\r\nretry-after:" in head, b"\r\nconnection: close" not in head

    def close(self) -> None:
        self.writer.close()


def request_bytes(rows_per_request: int) -> bytes:
    """A v2 binary infer request (tritonclient's wire form) for `rows_per_request` rows of 32 features."""
    payload = v2_binary(rows(rows_per_request))
    head = [f"POST {PATH} HTTP/1.1", "Host: 127.0.0.1", f"Content-Length: {len(payload.body)}",
            *(f"{k}: {v}" for k, v in payload.headers.items())]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + payload.body


# ---- closed loop: the sustainable rate ----

async def closed_loop(port: int, request: bytes, connections: int, duration_s: float) -> dict[int, int]:
    """`connections` clients, each sending its next request when the last is answered; status counts."""
    counts: dict[int, int] = {}
    conns = [await Connection.open(port) for _ in range(connections)]
    stop = time.perf_counter() + duration_s

    async def client(conn: Connection) -> None:
        while time.perf_counter() < stop:
            status, _, _ = await conn.exchange(request)
            counts[status] = counts.get(status, 0) + 1

    try:
        await asyncio.gather(*(client(c) for c in conns))
    finally:
        for c in conns:
            c.close()
    return counts


# ---- open loop: a constant arrival rate ----

@dataclass(slots=True)
class Outcome:
    status: int
    due_s: float  # when it was due, from the start of the phase
    latency_s: float  # from when it was due to when its answer was read
    retry_after: bool


@dataclass(slots=True)
class OpenLoopRun:
    rate: float
    duration_s: float
    outcomes: list[Outcome] = field(default_factory=list)
    max_send_lag_s: float = 0.0  # the latest any request left the generator after it was due
    connections_opened: int = 0
    stale_retries: int = 0  # sent again on a new connection: the server had closed an idle keep-alive one


async def open_loop(port: int, request: bytes, rate: float, duration_s: float, *, max_connections: int,
                    give_up_s: float, warm_connections: int) -> OpenLoopRun:
    """Send `rate` x `duration_s` requests on schedule; wait at most `give_up_s` for the last answers.
    A request due while `max_connections` are all busy is not sent and counts as NOT_SENT."""
    run = OpenLoopRun(rate, duration_s)
    idle = [await Connection.open(port) for _ in range(warm_connections)]
    run.connections_opened = live = len(idle)
    pending: set[asyncio.Task[None]] = set()

    async def one(conn: Connection | None, due: float) -> None:
        nonlocal live
        for reused in (conn is not None, False):
            try:
                if conn is None:
                    conn = await Connection.open(port)
                    run.connections_opened += 1
                status, retry_after, keep = await conn.exchange(request)
                break
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
                if conn is not None:
                    conn.close()
                conn = None
                stale = isinstance(exc, OSError) or (isinstance(exc, asyncio.IncompleteReadError) and not exc.partial)
                if reused and stale:  # an idle keep-alive connection the server closed: once more on a new one
                    run.stale_retries += 1
                    continue
                run.outcomes.append(Outcome(NO_ANSWER, due - t0, time.perf_counter() - due, False))
                live -= 1
                return
        run.outcomes.append(Outcome(status, due - t0, time.perf_counter() - due, retry_after))
        if keep and conn is not None:
            idle.append(conn)
        else:
            if conn is not None:
                conn.close()
            live -= 1

    total = int(rate * duration_s)
    interval = 1.0 / rate
    t0 = time.perf_counter() + 0.05
    i = 0
    while i < total:
        now = time.perf_counter()
        while i < total and t0 + i * interval <= now:
            due = t0 + i * interval
            run.max_send_lag_s = max(run.max_send_lag_s, now - due)
            i += 1
            if idle:
                conn: Connection | None = idle.pop()
            elif live < max_connections:
                conn, live = None, live + 1
            else:
                run.outcomes.append(Outcome(NOT_SENT, due - t0, 0.0, False))
                continue
            task = asyncio.create_task(one(conn, due))
            pending.add(task)
            task.add_done_callback(pending.discard)
        if i < total:
            await asyncio.sleep(max(0.0, t0 + i * interval - time.perf_counter()))
    if pending:
        _, late = await asyncio.wait(set(pending), timeout=give_up_s)
        for task in late:
            task.cancel()
        run.outcomes.extend(Outcome(NO_ANSWER, duration_s, give_up_s, False) for _ in range(len(late)))
    for conn in idle:
        conn.close()
    return run


# ---- figures (pure) ----

def quantile(values: Sequence[float], q: float) -> float:
    """The q-quantile by the nearest-rank method (no interpolation toward smaller values); 0 when empty."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(q * len(ordered) + 0.999999) - 1))]


@dataclass(frozen=True, slots=True)
class Summary:
    label: str
    offered_rps: float
    due: int
    not_sent: int  # the generator's connection cap, not the gateway
    ok: int
    shed: int  # 503
    shed_with_retry_after: int
    timed_out: int  # 504
    other: int
    no_answer: int
    ok_rps: float
    ok_p50_ms: float
    ok_p99_ms: float
    ok_max_ms: float
    shed_p50_ms: float
    shed_p99_ms: float
    shed_max_ms: float
    max_any_ms: float
    over_deadline: int  # answered (any status) later than the gateway's request timeout after it was due
    max_send_lag_ms: float
    connections: int
    stale_retries: int
    server_busy: float  # share of one core the gateway's process group used
    server_waited: float  # share of the phase the gateway's event loop was runnable but not running


def summarize(label: str, run: OpenLoopRun, timeout_s: float, usage: Usage, waited_s: float, wall_s: float) -> Summary:
    ok = [o.latency_s for o in run.outcomes if o.status == 200]
    shed = [o for o in run.outcomes if o.status == 503]
    shed_s = [o.latency_s for o in shed]
    answered = [o.latency_s for o in run.outcomes if o.status > NO_ANSWER]
    counted = {200, 503, 504, NO_ANSWER, NOT_SENT}
    return Summary(
        label=label, offered_rps=run.rate, due=len(run.outcomes), not_sent=sum(o.status == NOT_SENT for o in run.outcomes),
        ok=len(ok), shed=len(shed),
        shed_with_retry_after=sum(o.retry_after for o in shed),
        timed_out=sum(o.status == 504 for o in run.outcomes),
        other=sum(o.status not in counted for o in run.outcomes),
        no_answer=sum(o.status == NO_ANSWER for o in run.outcomes),
        ok_rps=len(ok) / run.duration_s,
        ok_p50_ms=quantile(ok, 0.5) * 1e3, ok_p99_ms=quantile(ok, 0.99) * 1e3, ok_max_ms=max(ok, default=0) * 1e3,
        shed_p50_ms=quantile(shed_s, 0.5) * 1e3, shed_p99_ms=quantile(shed_s, 0.99) * 1e3,
        shed_max_ms=max(shed_s, default=0) * 1e3, max_any_ms=max(answered, default=0) * 1e3,
        over_deadline=sum(x > timeout_s for x in answered), max_send_lag_ms=run.max_send_lag_s * 1e3,
        connections=run.connections_opened, stale_retries=run.stale_retries, server_busy=usage.cpu_s / wall_s,
        server_waited=waited_s / wall_s,
    )


def table(summaries: Sequence[Summary]) -> list[str]:
    lines = [
        "| load | offered req/s | due | 200 | 200 req/s | 200 p50 ms | 200 p99 ms | 200 max ms | 503 (with Retry-After) "
        "| 503 p50 / p99 / max ms | 504 | other / no answer | answered past the deadline | not sent (generator cap) "
        "| generator lag max ms | connections (stale retries) | gateway CPU busy | event loop waiting for its CPU |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in summaries:
        shed_share = s.shed / s.due if s.due else 0.0
        shed_lat = f"{s.shed_p50_ms:.1f} / {s.shed_p99_ms:.1f} / {s.shed_max_ms:.1f}" if s.shed else "-"
        lines.append(
            f"| {s.label} | {s.offered_rps:,.0f} | {s.due:,} | {s.ok:,} | {s.ok_rps:,.0f} | {s.ok_p50_ms:.1f} "
            f"| {s.ok_p99_ms:.1f} | {s.ok_max_ms:.1f} | {s.shed:,} = {shed_share:.0%} ({s.shed_with_retry_after:,}) "
            f"| {shed_lat} | {s.timed_out:,} | {s.other:,} / {s.no_answer:,} | {s.over_deadline:,} "
            f"| {s.not_sent:,} | {s.max_send_lag_ms:.1f} | {s.connections:,} ({s.stale_retries:,}) | {s.server_busy:.0%} "
            f"| {s.server_waited:.0%} |")
    return lines


def timeline(run: OpenLoopRun, step_s: float = 1.0) -> list[str]:
    """Per `step_s` of due time: sent, 200s with their p50/p99, 503s with their p99, in ms; shows whether the
    latency of accepted requests levels off (a bounded queue) or keeps growing (an unbounded one)."""
    lines = ["| second | due | 200 | 200 p50 ms | 200 p99 ms | 503 | 503 p99 ms | other |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    steps = max(1, round(run.duration_s / step_s))
    for k in range(steps):
        part = [o for o in run.outcomes if k * step_s <= o.due_s < (k + 1) * step_s or (k == steps - 1 and o.due_s >= k * step_s)]
        ok = [o.latency_s for o in part if o.status == 200]
        shed = [o.latency_s for o in part if o.status == 503]
        lines.append(f"| {k * step_s:g}-{(k + 1) * step_s:g} | {len(part):,} | {len(ok):,} | {quantile(ok, 0.5) * 1e3:.1f} "
                     f"| {quantile(ok, 0.99) * 1e3:.1f} | {len(shed):,} | {quantile(shed, 0.99) * 1e3:.1f} "
                     f"| {len(part) - len(ok) - len(shed):,} |")
    return lines


# ---- the run ----

@dataclass(frozen=True, slots=True)
class Options:
    quick: bool
    rows: int
    closed_connections: int
    closed_s: float
    factors: tuple[float, ...]
    duration_s: float
    max_connections: int
    server_cpu: int
    client_cpu: int
    gateway_args: tuple[str, ...]
    out: Path
    note: str


def parse(argv: Sequence[str] | None) -> Options:
    p = argparse.ArgumentParser(prog="python -m loadtests.overload", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="short phases (smoke run)")
    p.add_argument("--rows", type=int, default=32, help="rows per request (v2 binary, 32 FP32 features each)")
    p.add_argument("--closed-connections", type=int, default=32, help="connections of the closed-loop phase")
    p.add_argument("--closed-seconds", type=float, default=None, help="closed-loop phase length (default 8, quick 3)")
    p.add_argument("--factors", default="0.8,2", help="open-loop rates as multiples of the sustainable rate")
    p.add_argument("--duration", type=float, default=None, help="seconds per open-loop phase (default 15, quick 4)")
    p.add_argument("--max-connections", type=int, default=1024, help="the generator's connection cap")
    p.add_argument("--server-cpu", type=int, default=0)
    p.add_argument("--client-cpu", type=int, default=1)
    p.add_argument("--gateway-arg", action="append", default=[], help="extra `gateway serve` flag (repeatable)")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--note", default="", help="a sentence on the conditions, copied into the report")
    a = p.parse_args(argv)
    quick = bool(a.quick)
    out = a.out or ROOT / "loadtests" / "results" / ("overload-quick.md" if quick else "overload.md")
    return Options(
        quick=quick, rows=a.rows, closed_connections=a.closed_connections,
        closed_s=a.closed_seconds or (3.0 if quick else 8.0),
        factors=tuple(float(x) for x in a.factors.split(",")), duration_s=a.duration or (4.0 if quick else 15.0),
        max_connections=a.max_connections, server_cpu=a.server_cpu, client_cpu=a.client_cpu,
        gateway_args=tuple(shlex.split(" ".join(a.gateway_arg))), out=out, note=a.note,
    )


def gateway_argv(data_dir: Path, port: int, extra: Sequence[str]) -> list[str]:
    """The same one-worker, one-thread settings as loadtests/bench; the admission defaults unless `extra` sets them."""
    return [sys.executable, "-m", "gateway", "serve", "--host", "127.0.0.1", "--port", str(port),
            "--data-dir", str(data_dir), "--workers", "1", "--intra-op-threads", "1", "--inference-threads", "1",
            "--log-level", "warning", *extra]


def flag_value(args: Sequence[str], flag: str, default: float) -> float:
    """The value `args` give `flag` (last wins), else the default."""
    value = default
    for i, arg in enumerate(args):
        if arg == flag and i + 1 < len(args):
            value = float(args[i + 1])
        elif arg.startswith(flag + "="):
            value = float(arg.split("=", 1)[1])
    return value


def metric(server: Server, name: str) -> float:
    """The sum over children of a counter or histogram series of the heavy model, from /metrics."""
    _, _, body = http("GET", server.base_url + "/metrics")
    total = 0.0
    for line in body.decode().splitlines():
        if line.startswith(name + "{") and f'model="{MODEL}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def runqueue_wait_s(pid: int) -> float:
    """Seconds the main thread of process `pid` (the gateway's event loop) has so far spent runnable but
    waiting for a CPU (schedstat's run_delay): on a shared machine, the time other processes took from it."""
    return int(Path(f"/proc/{pid}/task/{pid}/schedstat").read_text().split()[1]) / 1e9


def say(text: str) -> None:
    print(text, flush=True)


def register(data_dir: Path) -> None:
    """The heavy MLP 32->1024->1024->1 of loadtests/bench, registered as `heavy` v1."""
    import subprocess

    from gateway.demo import build_mlp

    model = data_dir.parent / "heavy.onnx"
    model.write_bytes(build_mlp(3, features=32, hidden=(1024, 1024)))
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    subprocess.run([sys.executable, "-m", "gateway", "models", "register", MODEL, str(model), "--data-dir",
                    str(data_dir)], check=True, capture_output=True, cwd=ROOT, env=env, timeout=120)


async def measure(o: Options, server: Server, timeout_s: float,
                  ) -> tuple[float, dict[int, int], tuple[float, float], list[Summary], list[OpenLoopRun]]:
    request = request_bytes(o.rows)
    counts = await closed_loop(server.port, request, o.closed_connections, 1.0)  # warm-up
    before, waited, started = server.usage(), runqueue_wait_s(server.pid), time.perf_counter()
    counts = await closed_loop(server.port, request, o.closed_connections, o.closed_s)
    wall = time.perf_counter() - started
    sustainable = counts.get(200, 0) / wall
    busy = (server.usage() - before).cpu_s / wall
    closed_waited = (runqueue_wait_s(server.pid) - waited) / wall
    say(f"closed loop, {o.closed_connections} connections: {sustainable:,.0f} req/s of 200s {counts} "
        f"(gateway CPU busy {busy:.0%}, event loop waiting for its CPU {closed_waited:.0%})")
    summaries, runs = [], []
    for factor in o.factors:
        rate = factor * sustainable
        await asyncio.sleep(1.0)  # let the queue empty between phases
        before, waited, started = server.usage(), runqueue_wait_s(server.pid), time.perf_counter()
        run = await open_loop(server.port, request, rate, o.duration_s, max_connections=o.max_connections,
                              give_up_s=timeout_s + 5, warm_connections=min(o.max_connections, int(rate * 0.1) + 64))
        s = summarize(f"{factor:g}x", run, timeout_s, server.usage() - before, runqueue_wait_s(server.pid) - waited,
                      time.perf_counter() - started)
        summaries.append(s)
        runs.append(run)
        say("\n".join(table([s])[2:]))
        if factor > 1:
            say("\n".join(timeline(run)))
        server.check_alive()
    return sustainable, counts, (busy, closed_waited), summaries, runs


def main(argv: Sequence[str] | None = None) -> None:
    o = parse(argv)
    os.sched_setaffinity(0, {o.client_cpu})
    import uvloop

    timeout_s = flag_value(o.gateway_args, "--request-timeout", 30.0)
    started_at, load_before = datetime.now(UTC), os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="gateway-overload-") as tmp:
        data_dir = Path(tmp) / "gw"
        register(data_dir)
        port = free_port()
        argv_ = gateway_argv(data_dir, port, o.gateway_args)
        env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
        server = start_server("gateway", argv_, cpu=o.server_cpu, port=port, log=Path(tmp) / "gateway.log", env=env,
                              cwd=ROOT)
        try:
            wait_ready(server, "/v2/health/ready", 90.0)
            sustainable, counts, busy, summaries, runs = uvloop.run(measure(o, server, timeout_s))
            rejections = metric(server, "gateway_queue_rejections_total")
            batch_rows = metric(server, "gateway_batch_size_rows_sum")
            batches = metric(server, "gateway_batch_size_rows_count")
            log_tail = server.log_tail(5)
        finally:
            server.stop()
    lines = [
        "# Overload: open-loop arrivals at multiples of the sustainable rate",
        "",
        f"- Command: `python -m loadtests.overload {' '.join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))}`",
        f"- Date: {started_at:%Y-%m-%d %H:%M} UTC",
        *machine(),
        f"- Gateway (pinned to CPU {o.server_cpu}): `{' '.join(argv_[1:]).replace(str(data_dir), '<tmp>')}`; "
        f"request timeout {timeout_s:g} s",
        f"- Model: heavy MLP 32->1024->1024->1 (loadtests/bench), {o.rows} rows per request, v2 binary tensors "
        f"({len(request_bytes(o.rows)):,} request bytes)",
        f"- Generator (pinned to CPU {o.client_cpu}): uvloop, raw HTTP/1.1 keep-alive; closed loop with "
        f"{o.closed_connections} connections for {o.closed_s:g} s, then open loop at {', '.join(f'{f:g}x' for f in o.factors)} "
        f"for {o.duration_s:g} s each, at most {o.max_connections} connections; latency counted from when each "
        "request was due",
        f"- Conditions: load average {load_before[0]:.2f} before, {os.getloadavg()[0]:.2f} after (1 min). {o.note}".rstrip(),
        "",
        "## Results",
        "",
        f"Sustainable rate (closed loop, {o.closed_connections} connections): **{sustainable:,.0f} req/s** "
        f"(statuses {dict(sorted(counts.items()))}; gateway CPU busy {busy[0]:.0%}, event loop waiting for its CPU {busy[1]:.0%}).",
        "",
        *table(summaries),
        "",
        f"Over the whole run /metrics counted {rejections:,.0f} queue rejections and {batches:,.0f} session runs of "
        f"{batch_rows / batches if batches else 0:.1f} rows on average.",
        "",
    ]
    for factor, run in zip(o.factors, runs, strict=True):
        if factor > 1:
            lines += [f"### {factor:g}x, second by second (by when each request was due)", "", *timeline(run), ""]
    if log_tail.strip():
        lines += ["Last lines of the gateway log:", "", "```", log_tail, "```", ""]
    previous = o.out.read_text() if o.out.exists() else ""
    findings = previous[previous.index(MARKER):] if MARKER in previous else MARKER + "\n"
    o.out.parent.mkdir(parents=True, exist_ok=True)
    o.out.write_text("\n".join(lines) + "\n" + findings)
    say(f"wrote {o.out}")


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
