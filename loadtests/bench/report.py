"""Medians over rounds, within-round ratios, the issue's target checks and the Markdown report (pure)."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from loadtests.bench.procstat import Usage
from loadtests.bench.profile import Profile
from loadtests.bench.wrk import WrkResult


@dataclass(frozen=True, slots=True)
class Variant:
    """One server endpoint under one load: what the table's row names."""

    key: str
    label: str
    server: str
    path: str
    body: str  # what the body holds, for the table
    connections: int
    model: str = ""  # the gateway model whose batches the variant drives ("" for the other servers)


@dataclass(frozen=True, slots=True)
class Sample:
    """One measured wrk run of one variant in one round, with the server's CPU over the window."""

    variant: str
    round: int
    wrk: WrkResult
    usage: Usage
    wall_s: float
    rows_per_run: float | None = None  # mean rows per session.run, from the gateway's batch histogram

    @property
    def cpu_s(self) -> float:
        return self.usage.cpu_s

    @property
    def cpu_us_per_request(self) -> float:
        return self.cpu_s / max(self.wrk.requests, 1) * 1e6

    @property
    def user_us_per_request(self) -> float:
        return self.usage.user_s / max(self.wrk.requests, 1) * 1e6

    @property
    def system_us_per_request(self) -> float:
        return self.usage.system_s / max(self.wrk.requests, 1) * 1e6

    @property
    def system_share(self) -> float:
        return self.usage.system_s / self.cpu_s if self.cpu_s else 0.0

    @property
    def syscalls_per_request(self) -> tuple[float, float]:
        """(read, write) syscalls per completed request."""
        n = max(self.wrk.requests, 1)
        return self.usage.read_calls / n, self.usage.write_calls / n

    @property
    def utilization(self) -> float:
        return self.cpu_s / self.wall_s if self.wall_s > 0 else 0.0


@dataclass(frozen=True, slots=True)
class Pair:
    """Two variants measured side by side in one round: both servers pinned to the one server CPU, each
    driven by its own wrk over the same seconds, so whatever the machine does in those seconds (other
    tenants, frequency, the other server's caches) falls on both. Their CPU/request ratio is far steadier
    than the ratio of two runs a few seconds apart."""

    name: str
    round: int
    a: Sample
    b: Sample

    @property
    def ratio(self) -> float:
        """a's CPU/request over b's."""
        return self.a.cpu_us_per_request / self.b.cpu_us_per_request


@dataclass(frozen=True, slots=True)
class Spread:
    """The median of some per-round values, with their range."""

    median: float
    low: float
    high: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        return cls(statistics.median(values), min(values), max(values)) if values else cls(float("nan"), 0, 0)

    def fmt(self, digits: int = 2) -> str:
        return f"{self.median:.{digits}f} [{self.low:.{digits}f}-{self.high:.{digits}f}]"


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    passed: bool | None  # None: not measured in this run
    detail: str

    @property
    def line(self) -> str:
        verdict = "PASS" if self.passed else "FAIL" if self.passed is not None else "N/A "
        return f"{verdict}  {self.name}: {self.detail}"


InProcess = dict[str, dict[str, float]]  # model -> {"row1_us", "batch64_us", "row64_us"}


class Results:
    """Every sample of a run and the in-process timings of each round; answers medians and ratios."""

    def __init__(self, variants: Sequence[Variant], samples: Sequence[Sample], inprocess: Sequence[InProcess],
                 pairs: Sequence[Pair] = ()) -> None:
        self.variants = list(variants)
        self.samples = list(samples)
        self.inprocess = list(inprocess)
        self.pairs = list(pairs)
        self.rounds = sorted({s.round for s in samples})

    def pairs_named(self, name: str) -> list[Pair]:
        return [p for p in self.pairs if p.name == name]

    def pair_ratio(self, name: str) -> Spread:
        """a/b CPU per request of the side-by-side pair `name`, median [range] over rounds."""
        return Spread.of([p.ratio for p in self.pairs_named(name) if p.b.cpu_us_per_request])

    def variant(self, key: str) -> Variant:
        return next(v for v in self.variants if v.key == key)

    def of(self, key: str) -> list[Sample]:
        return [s for s in self.samples if s.variant == key]

    def spread(self, key: str, value: Callable[[Sample], float]) -> Spread:
        return Spread.of([value(s) for s in self.of(key)])

    def by_round(self, key: str) -> dict[int, Sample]:
        return {s.round: s for s in self.of(key)}

    def ratio(self, a: str, b: str, value: Callable[[Sample], float]) -> Spread:
        """value(a) / value(b) within each round, then the median over rounds."""
        ra, rb = self.by_round(a), self.by_round(b)
        return Spread.of([value(ra[r]) / value(rb[r]) for r in self.rounds if r in ra and r in rb and value(rb[r])])

    def inprocess_spread(self, model: str, field: str) -> Spread:
        return Spread.of([r[model][field] for r in self.inprocess if model in r])


def cpu(s: Sample) -> float:
    return s.cpu_us_per_request


def p99(s: Sample) -> float:
    return s.wrk.p99_s


def rps(s: Sample) -> float:
    return s.wrk.rps


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.2f}"


def table(results: Results) -> list[str]:
    lines = [
        "| server / endpoint | body | conns | req/s | p50 ms | p99 ms | CPU µs/req | CPU µs/req range | kernel share "
        "| read/write syscalls per req | rows per session.run | server CPU busy | errors |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for v in results.variants:
        samples = results.of(v.key)
        if not samples:
            continue
        c = results.spread(v.key, cpu)
        errors = sum(s.wrk.non_2xx + s.wrk.socket_errors for s in samples)
        batch = [s.rows_per_run for s in samples if s.rows_per_run is not None]
        rows_text = f"{statistics.median(batch):.1f}" if batch else "-"
        lines.append(
            f"| {v.label} | {v.body} | {v.connections} | {results.spread(v.key, rps).median:,.0f} "
            f"| {ms(results.spread(v.key, lambda s: s.wrk.p50_s).median)} | {ms(results.spread(v.key, p99).median)} "
            f"| {c.median:.0f} | {c.low:.0f}-{c.high:.0f} | {results.spread(v.key, lambda s: s.system_share).median:.0%} "
            f"| {results.spread(v.key, lambda s: s.syscalls_per_request[0]).median:.2f} / "
            f"{results.spread(v.key, lambda s: s.syscalls_per_request[1]).median:.2f} | {rows_text} "
            f"| {results.spread(v.key, lambda s: s.utilization).median:.0%} | {errors} |"
        )
    return lines


def pairs_table(results: Results, labels: dict[str, str]) -> list[str]:
    """One row per side-by-side pair: each side's CPU/request and req/s (medians), and the per-round ratios."""
    lines = ["| pair | a | b | a CPU µs/req | b CPU µs/req | a / b per round: median [range] | per round | a, b req/s |",
             "|---|---|---|---:|---:|---:|---|---:|"]
    for name in dict.fromkeys(p.name for p in results.pairs):
        pairs = results.pairs_named(name)
        a, b = pairs[0].a.variant, pairs[0].b.variant
        lines.append(
            f"| {labels.get(name, name)} | {a} | {b} | {Spread.of([p.a.cpu_us_per_request for p in pairs]).median:.1f} "
            f"| {Spread.of([p.b.cpu_us_per_request for p in pairs]).median:.1f} | {results.pair_ratio(name).fmt(3)} "
            f"| {', '.join(f'{p.ratio:.3f}' for p in pairs)} "
            f"| {Spread.of([p.a.wrk.rps for p in pairs]).median:,.0f}, {Spread.of([p.b.wrk.rps for p in pairs]).median:,.0f} |")
    return lines


def inprocess_table(results: Results, models: Sequence[str]) -> list[str]:
    lines = ["| model | 1 row µs | batch of 64 µs | per row in a batch of 64 µs |", "|---|---:|---:|---:|"]
    for m in models:
        lines.append(f"| {m} | {results.inprocess_spread(m, 'row1_us').fmt(1)} | "
                     f"{results.inprocess_spread(m, 'batch64_us').fmt(1)} | {results.inprocess_spread(m, 'row64_us').fmt(2)} |")
    return lines


def profile_section(title: str, profile: Profile, user_us: float, system_us: float, note: str) -> list[str]:
    """Where the CPU goes: user-space shares of py-spy's samples scaled to the measured user CPU per
    request; kernel time per request from /proc, since py-spy over-samples syscalls."""
    n = max(profile.user, 1)
    lines = [f"### {title}", "", note, "",
             f"Measured (median over rounds, /proc): {user_us:.0f} µs/req user + {system_us:.0f} µs/req kernel. "
             f"py-spy: {profile.user} user-space samples, {profile.syscall} in syscalls, {profile.idle} idle (dropped). "
             "A sample's layer is its deepest frame that belongs to a known layer; µs = share x user µs/req.", "",
             "| layer | share of user CPU | ≈ µs/req |", "|---|---:|---:|",
             f"| kernel: syscalls (socket read/write, epoll), from /proc stime | - | {system_us:.0f} |"]
    lines += [f"| {layer} | {c / n:.1%} | {c / n * user_us:.1f} |" for layer, c in profile.layers]
    if profile.project_frames:
        lines += ["", "Project functions, inclusive (callees included):", "", "| function | share of user CPU | ≈ µs/req |",
                  "|---|---:|---:|"]
        lines += [f"| `{f}` | {c / n:.1%} | {c / n * user_us:.1f} |" for f, c in profile.project_frames]
    lines += ["", "Top self frames (leaf, syscalls excluded):", "", "| frame | share of user CPU |", "|---|---:|"]
    lines += [f"| `{f}` | {c / n:.1%} |" for f, c in profile.self_frames]
    lines += ["", "Top inclusive Python frames (entry points omitted):", "", "| frame | share of user CPU |", "|---|---:|"]
    lines += [f"| `{f}` | {c / n:.1%} |" for f, c in profile.inclusive_frames[:10]]
    return [*lines, ""]
