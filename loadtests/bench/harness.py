"""The run: start the servers pinned to one CPU, check and warm up every variant, measure them in
interleaved rounds with wrk pinned to another CPU, profile what misses its target, write the report."""

from __future__ import annotations

import contextlib
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import orjson

from loadtests.bench import lineup, targets
from loadtests.bench.benchvenv import ensure_bench_venv, py_spy
from loadtests.bench.payloads import Payload
from loadtests.bench.processes import Server
from loadtests.bench.profile import Profile, fold, record
from loadtests.bench.report import (
    Check,
    InProcess,
    Pair,
    Results,
    Sample,
    Variant,
    inprocess_table,
    pairs_table,
    profile_section,
    table,
)
from loadtests.bench.wrk import find_wrk, run_wrk, run_wrk_together, write_script, wrk_command

FINDINGS_MARKER = "<!-- findings: written by hand; the harness keeps everything below this line when it rewrites the file -->"
T = TypeVar("T")
SETTLE_S = 0.25  # after wrk exits, let the server close its connections inside the measured window


@dataclass(frozen=True, slots=True)
class Options:
    quick: bool
    duration_s: float
    connections: int
    rounds: int
    warmup_s: float
    out: Path
    server_cpu: int
    client_cpu: int
    max_batch_delay_ms: float
    profile: str  # auto | always | never
    profile_s: int
    only: tuple[str, ...]
    note: str
    strict: bool
    keep_profiles: Path | None
    pairs: bool = True  # side-by-side pairs (lineup.PAIRS) in every round, when their variants are chosen


def say(text: str) -> None:
    print(text, flush=True)


def machine() -> list[str]:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor() or "unknown")
    return [f"- Machine: {os.cpu_count()} CPUs ({model}), Linux {platform.release()}, "
            f"Python {platform.python_version()}", f"- Code: {revision()}"]


def revision() -> str:
    """The commit measured, and whether the work tree differed from it (read-only git commands)."""
    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], capture_output=True, text=True, timeout=30, cwd=lineup.ROOT)
        return done.stdout.strip() if done.returncode == 0 else ""

    head = git("rev-parse", "--short", "HEAD") or "unknown"
    changed = [line for line in git("status", "--porcelain", "--untracked-files=no").splitlines() if line]
    return f"commit {head}" + (f" plus uncommitted changes to {len(changed)} tracked file(s)" if changed else "")


def versions(bench_python: Path) -> str:
    script = ("import importlib.metadata as m; print(', '.join(f'{p} {m.version(p)}' for p in "
              "('fastapi', 'pydantic', 'starlette')))")
    bench = subprocess.run([str(bench_python), "-c", script], capture_output=True, text=True, timeout=60).stdout.strip()
    from importlib.metadata import version

    own = ", ".join(f"{p} {version(p)}" for p in ("starlette", "uvicorn", "uvloop", "httptools", "onnxruntime", "numpy"))
    return f"- Gateway venv: {own}. Benchmark venv (textbook server): {bench}."


class Bench:
    def __init__(self, options: Options, wrk: str, tmp: Path) -> None:
        self.o = options
        self.wrk = wrk
        self.tmp = tmp
        self.samples: list[Sample] = []
        self.inprocess: list[InProcess] = []
        self.pairs: list[Pair] = []
        self.scripts: dict[str, Path] = {}

    def run_once(self, variant: Variant, server: Server, seconds: float, round_: int | None) -> Sample:
        server.check_alive()
        command = wrk_command(self.wrk, self.o.client_cpu, variant.connections, seconds,
                              self.scripts[variant.key], server.base_url + variant.path)
        batches_before = lineup.batch_totals(server, variant.model) if variant.model else None  # outside the window
        before, started = server.usage(), time.perf_counter()
        result = run_wrk(command, timeout_s=seconds + 30)
        time.sleep(SETTLE_S)
        wall, after = time.perf_counter() - started, server.usage()
        batches_after = lineup.batch_totals(server, variant.model) if batches_before is not None else None
        rows_per_run = None
        if batches_before is not None and batches_after is not None and batches_after[1] > batches_before[1]:
            rows_per_run = (batches_after[0] - batches_before[0]) / (batches_after[1] - batches_before[1])
        sample = Sample(variant.key, round_ if round_ is not None else -1, result, after - before, wall, rows_per_run)
        if round_ is not None:
            self.samples.append(sample)
        return sample

    def run_pair(self, name: str, a: tuple[Variant, Server], b: tuple[Variant, Server], seconds: float,
                 round_: int) -> Pair:
        """Both variants at once, each server driven by its own wrk (both wrk on the client CPU)."""
        sides = (a, b)
        for _, server in sides:
            server.check_alive()
        commands = [wrk_command(self.wrk, self.o.client_cpu, v.connections, seconds, self.scripts[v.key],
                                server.base_url + v.path) for v, server in sides]
        before, started = [server.usage() for _, server in sides], time.perf_counter()
        results = run_wrk_together(commands, timeout_s=seconds + 30)
        time.sleep(SETTLE_S)
        wall, after = time.perf_counter() - started, [server.usage() for _, server in sides]
        samples = [Sample(v.key, round_, result, end - start, wall)
                   for (v, _), result, start, end in zip(sides, results, before, after, strict=True)]
        pair = Pair(name, round_, samples[0], samples[1])
        self.pairs.append(pair)
        return pair

    def measure_inprocess(self, models: lineup.Models) -> None:
        command = ["taskset", "-c", str(self.o.server_cpu), sys.executable, "-m", "loadtests.bench.inprocess",
                   "--model", f"small={models.small_v1}", "--model", f"heavy={models.heavy}",
                   "--budget", "0.3" if self.o.quick else "0.8"]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=True, cwd=lineup.ROOT)
        self.inprocess.append(orjson.loads(done.stdout))

    def profile(self, variant: Variant, server: Server) -> Profile:
        """py-spy on the server while wrk drives `variant` (py-spy and wrk share the client CPU)."""
        command = wrk_command(self.wrk, self.o.client_cpu, variant.connections, self.o.profile_s + 3,
                              self.scripts[variant.key], server.base_url + variant.path)
        output = self.tmp / f"profile-{variant.key}.txt"
        load = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            time.sleep(1)
            record(py_spy(), server.pid, self.o.profile_s, output, cpu=self.o.client_cpu)
        finally:
            load.wait(self.o.profile_s + 30)
        if self.o.keep_profiles is not None:
            self.o.keep_profiles.mkdir(parents=True, exist_ok=True)
            shutil.copy(output, self.o.keep_profiles / output.name)
        return fold(output.read_text())


def round_order(chosen: list[T], round_: int) -> list[T]:
    """The lineup forwards in even rounds and backwards in odd ones: a variant's cost can depend on
    what ran just before it on the same core (caches, the other servers' timers), so each pair of
    rows is measured in both orders and per-round ratios are not biased by a fixed position."""
    return list(chosen) if round_ % 2 == 0 else list(reversed(chosen))


def side_by_side(options: Options, chosen: list[tuple[Variant, Payload]]) -> list[lineup.PairSpec]:
    """The pairs this run measures: the drift pair when both its variants are chosen, and then the null
    pair beside it (it only calibrates the other)."""
    keys = {v.key for v, _ in chosen}
    if not options.pairs or not {targets.GW_V1_DRIFT, targets.GW_V1} <= keys:
        return []
    return list(lineup.PAIRS)


def profiles_wanted(options: Options, checks: list[Check]) -> list[str]:
    """Which variants to profile: the gateway variants whose targets failed, and the ceiling beside them."""
    if options.profile == "never":
        return []
    failed = {c.name for c in checks if c.passed is False}
    wanted: list[str] = []
    if options.profile == "always" or any(n.startswith("small model") for n in failed):
        wanted += [targets.SMALL_GATEWAY, targets.GW_V1, targets.CEILING]  # GW_V1: the drift-off twin
    if options.profile == "always" or any(n.startswith("heavy model") for n in failed):
        wanted += [targets.GW_HEAVY]
    if options.profile == "always" or any(n.startswith("v2 binary") for n in failed):
        wanted += [targets.GW_V2_BINARY, targets.GW_V2_JSON]
    return wanted


def run(options: Options) -> int:
    wrk = find_wrk()  # WrkError with the install command when missing
    if shutil.which("taskset") is None:
        raise RuntimeError("taskset is not installed (Debian package util-linux)")
    allowed = os.sched_getaffinity(0)
    if options.server_cpu not in allowed or options.client_cpu not in allowed or options.server_cpu == options.client_cpu:
        raise RuntimeError(f"need two distinct CPUs for the server ({options.server_cpu}) and wrk "
                           f"({options.client_cpu}); this process may use {sorted(allowed)}")
    known = [v.key for v, _ in lineup.variants(options.connections)]
    if unknown := [k for k in options.only if k not in known]:
        raise RuntimeError(f"--only: unknown variant(s) {', '.join(unknown)}; choose from {', '.join(known)}")
    command_line = shlex.join(sys.orig_argv)
    started_at, load_before = datetime.now(UTC), os.getloadavg()
    bench_python = ensure_bench_venv(say)
    with tempfile.TemporaryDirectory(prefix="gateway-bench-") as tmp_name, contextlib.ExitStack() as stack:
        tmp = Path(tmp_name)
        models = lineup.build_models(tmp)
        lineup.register(tmp / "gateway-data", models)
        cmds = lineup.commands(bench_python, models, tmp / "gateway-data", options.max_batch_delay_ms)
        chosen = [(v, p) for v, p in lineup.variants(options.connections) if not options.only or v.key in options.only]
        pairs = side_by_side(options, chosen)
        paired = {v.key: (v, p) for v, p in [*chosen, lineup.control_variant(options.connections)]}
        extra = [paired[k] for k in dict.fromkeys(k for spec in pairs for k in (spec.a, spec.b))
                 if k not in {v.key for v, _ in chosen}]  # measured only in pairs: the control twin
        needed = {v.server for v, _ in [*chosen, *extra]}
        say(f"starting {', '.join(sorted(needed))} on CPU {options.server_cpu}")
        servers = lineup.start_all({k: c for k, c in cmds.items() if k in needed}, options.server_cpu, tmp, say)
        for server in servers.values():
            stack.callback(server.stop)
        if "gateway" in servers:
            lineup.set_canary(servers["gateway"])
        bench = Bench(options, wrk, tmp)
        for variant, payload in [*chosen, *extra]:
            lineup.verify(variant, payload, servers[variant.server])
            bench.scripts[variant.key] = write_script(tmp, variant.key, payload)
        say(f"warm-up: {options.warmup_s:g} s per variant")
        for variant, _ in [*chosen, *extra]:
            bench.run_once(variant, servers[variant.server], options.warmup_s, None)
        for r in range(options.rounds):
            bench.measure_inprocess(models)
            for variant, _ in round_order(chosen, r):
                s = bench.run_once(variant, servers[variant.server], options.duration_s, r)
                say(f"round {r + 1}/{options.rounds}  {variant.key:<18} {s.wrk.rps:>9,.0f} req/s  "
                    f"p50 {s.wrk.p50_s * 1e3:6.2f} ms  p99 {s.wrk.p99_s * 1e3:6.2f} ms  "
                    f"{s.cpu_us_per_request:6.0f} µs CPU/req  errors {s.wrk.non_2xx + s.wrk.socket_errors}")
            for spec in pairs:
                a, b = paired[spec.a][0], paired[spec.b][0]
                pair = bench.run_pair(spec.name, (a, servers[a.server]), (b, servers[b.server]), options.duration_s, r)
                say(f"round {r + 1}/{options.rounds}  side by side {spec.a} / {spec.b}: "
                    f"{pair.a.cpu_us_per_request:.1f} / {pair.b.cpu_us_per_request:.1f} µs CPU/req = {pair.ratio:.3f}  "
                    f"({pair.a.wrk.rps:,.0f} + {pair.b.wrk.rps:,.0f} req/s, errors "
                    f"{sum(s.wrk.non_2xx + s.wrk.socket_errors for s in (pair.a, pair.b))})")
        results = Results([v for v, _ in chosen], bench.samples, bench.inprocess, bench.pairs)
        checks = targets.checks(results, options.max_batch_delay_ms)
        profiled: list[str] = []
        for key in profiles_wanted(options, checks):
            if not results.of(key):
                continue
            variant = results.variant(key)
            say(f"profiling {key} with py-spy for {options.profile_s} s")
            try:
                prof = bench.profile(variant, servers[variant.server])
            except (subprocess.SubprocessError, OSError) as exc:
                profiled += [f"### {variant.label}", "", f"py-spy failed: {exc}", ""]
                continue
            profiled += profile_section(variant.label, prof,
                                        results.spread(key, lambda s: s.user_us_per_request).median,
                                        results.spread(key, lambda s: s.system_us_per_request).median,
                                        f"`py-spy record --native --rate 250` for {options.profile_s} s on the server "
                                        f"(pid of `{variant.server}`) while wrk drove `{variant.path}` "
                                        f"({variant.body}, {variant.connections} connections).")
        gateway_argv = " ".join(["gateway serve", *lineup.gateway_flags(options.max_batch_delay_ms)])
    text = render(options, command_line, started_at, load_before, os.getloadavg(), results, checks, profiled,
                  versions(bench_python), gateway_argv)
    options.out.parent.mkdir(parents=True, exist_ok=True)
    previous = options.out.read_text() if options.out.exists() else ""
    if FINDINGS_MARKER in previous:  # hand-written analysis of an earlier run: keep it, dated as it is
        text += "\n" + previous[previous.index(FINDINGS_MARKER):]
    options.out.write_text(text)
    say("")
    say(text)
    say(f"wrote {options.out}")
    return 1 if options.strict and any(c.passed is False for c in checks) else 0


def render(options: Options, command_line: str, started_at: datetime, load_before: tuple[float, ...],
           load_after: tuple[float, ...], results: Results, checks: list[Check], profiled: list[str],
           versions_line: str, gateway_argv: str) -> str:
    kind = "smoke run (--quick): numbers are indicative only" if options.quick else "full run"
    lines = [
        "# Benchmark: framework ceiling vs textbook server vs gateway",
        "",
        f"- Command: `{command_line}` ({kind})",
        f"- Date: {started_at:%Y-%m-%d %H:%M} UTC",
        *machine(),
        versions_line,
        f"- Load: each server pinned to CPU {options.server_cpu} (taskset), wrk pinned to CPU {options.client_cpu}: "
        f"`wrk -t1 -c<conns> -d{round(options.duration_s)}s --latency -s <POST body>`; {options.rounds} interleaved "
        f"round(s) over every row below (in table order in odd rounds, reversed in even ones), {options.warmup_s:g} s warm-up per row first. Values are medians over rounds.",
        "- CPU µs/req: utime + stime of the server's whole process group (/proc/<pid>/stat) over the wrk run, "
        "divided by the requests wrk completed.",
        f"- Gateway: `{gateway_argv}` (SQLite registry in a temp dir; route `small` = 90/10 canary of v1/v2 set by "
        "PUT /admin/routes/small). Textbook server: FastAPI + pydantic `instances: list[list[float]]`, plain `def` "
        "handler, session.run per request, intra_op_num_threads=1.",
        f"- Conditions: load average {load_before[0]:.2f} before, {load_after[0]:.2f} after (1 min)."
        + (f" {options.note}" if options.note else ""),
        "",
        "## Results",
        "",
        *table(results),
        "",
        *(["## Side by side (both servers on CPU "
            f"{options.server_cpu}, each with its own wrk on CPU {options.client_cpu}, the same seconds; once per round)",
            "", *pairs_table(results, {spec.name: spec.label for spec in lineup.PAIRS}), ""] if results.pairs else []),
        "## In-process limit (onnxruntime, intra_op_num_threads=1, pinned like the servers; median [range] over rounds)",
        "",
        *inprocess_table(results, [lineup.SMALL, lineup.HEAVY]),
        "",
        "## Ratios and targets (per-round ratios: median [min-max])",
        "",
        "```",
        *[c.line for c in checks],
        "```",
        "",
    ]
    if profiled:
        lines += ["## Profiles (py-spy)", "", *profiled]
    return "\n".join(lines)
