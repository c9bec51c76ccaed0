"""Guard arithmetic for progressive rollouts (pure): a fixed-bucket latency histogram, per-arm count
snapshots and their differences ("over the last step"), p99 from buckets, and the guard decision.

Nothing here reads a clock or does I/O; gateway/rollouts.py takes the snapshots and acts on the verdict.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

# Latency bucket upper bounds: 10 µs growing by 12.5% per bucket up to ~80 s, so a p99 read from the
# buckets is within 12.5% of the true value at any scale a request can take.
GROWTH = 1.125
LATENCY_EDGES: tuple[float, ...] = tuple(1e-5 * GROWTH**i for i in range(136))
N_BUCKETS = len(LATENCY_EDGES) + 1  # the last bucket holds everything above the last edge

GuardName = Literal["error_rate", "p99_ratio", "disagreement", "psi"]
GUARDS: tuple[GuardName, ...] = ("error_rate", "p99_ratio", "disagreement", "psi")
Status = Literal["pass", "fail", "no_data", "off"]
Verdict = Literal["pass", "fail", "wait"]


def bucket_of(seconds: float) -> int:
    """The bucket index of a duration: the first edge >= seconds (N_BUCKETS - 1 past the last edge)."""
    return bisect_left(LATENCY_EDGES, seconds)


def quantile(counts: tuple[int, ...], q: float) -> float | None:
    """The upper edge of the bucket holding the q-quantile (0 < q <= 1); None when no counts. Past the
    last edge, the last edge (the bucket has no upper bound)."""
    total = sum(counts)
    if total == 0:
        return None
    rank = math.ceil(q * total)
    running = 0
    for index, count in enumerate(counts):
        running += count
        if running >= rank:
            return LATENCY_EDGES[min(index, len(LATENCY_EDGES) - 1)]
    return LATENCY_EDGES[-1]


@dataclass(frozen=True, slots=True)
class ArmCounts:
    """Cumulative counts of one version on one route at one moment. `requests`/`errors`/`latency` are
    live traffic it served as an arm; `shadow_*` are mirrored copies it ran as a shadow; `compared` and
    `agreement_sum` are comparisons of its answers with the other side's (rows agreeing, summed)."""

    requests: int = 0
    errors: int = 0
    latency: tuple[int, ...] = field(default=(0,) * N_BUCKETS, repr=False)
    shadow_runs: int = 0
    shadow_errors: int = 0
    shadow_latency: tuple[int, ...] = field(default=(0,) * N_BUCKETS, repr=False)
    compared: int = 0
    agreement_sum: float = 0.0

    def since(self, earlier: ArmCounts) -> ArmCounts:
        """What happened between `earlier` and this snapshot (counts only grow, so plain differences)."""
        return ArmCounts(
            self.requests - earlier.requests,
            self.errors - earlier.errors,
            tuple(a - b for a, b in zip(self.latency, earlier.latency, strict=True)),
            self.shadow_runs - earlier.shadow_runs,
            self.shadow_errors - earlier.shadow_errors,
            tuple(a - b for a, b in zip(self.shadow_latency, earlier.shadow_latency, strict=True)),
            self.compared - earlier.compared,
            self.agreement_sum - earlier.agreement_sum,
        )


@dataclass(frozen=True, slots=True)
class Side:
    """One side of a comparison over a window: requests, errors and the latency buckets."""

    requests: int
    errors: int
    latency: tuple[int, ...] = field(repr=False)

    @classmethod
    def live(cls, counts: ArmCounts) -> Side:
        return cls(counts.requests, counts.errors, counts.latency)

    @classmethod
    def shadow(cls, counts: ArmCounts) -> Side:
        return cls(counts.shadow_runs, counts.shadow_errors, counts.shadow_latency)

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.requests if self.requests else None

    @property
    def p99(self) -> float | None:
        return quantile(self.latency, 0.99)


@dataclass(frozen=True, slots=True)
class Limits:
    """The guards' limits; None turns a guard off. min_requests: candidate requests a window needs."""

    max_error_rate: float | None = 0.01
    max_p99_ratio: float | None = 1.5
    max_disagreement: float | None = 0.05
    max_psi: float | None = 0.25
    min_requests: int = 100

    def limit(self, guard: GuardName) -> float | None:
        return {"error_rate": self.max_error_rate, "p99_ratio": self.max_p99_ratio,
                "disagreement": self.max_disagreement, "psi": self.max_psi}[guard]


@dataclass(frozen=True, slots=True)
class Window:
    """What a guard check looks at: the candidate and stable sides, the comparisons between the two
    versions (rows compared, agreeing rows summed) and the candidate's PSI (None when unmeasured)."""

    candidate: Side
    stable: Side
    compared: int = 0
    agreement_sum: float = 0.0
    psi: float | None = None


@dataclass(frozen=True, slots=True)
class GuardResult:
    """One guard's figure, its limit and status; `detail` carries the figures it was computed from."""

    guard: GuardName
    status: Status
    value: float | None
    limit: float | None
    detail: Mapping[str, float | int | None]

    def to_dict(self) -> dict[str, object]:
        return {"status": self.status, "value": self.value, "limit": self.limit, **self.detail}


@dataclass(frozen=True, slots=True)
class Check:
    """A guard check: `verdict` is "fail" when any guard failed, "wait" when the candidate has not seen
    min_requests yet (and nothing failed), else "pass". `failed` names the first failing guard."""

    verdict: Verdict
    results: tuple[GuardResult, ...]
    candidate_requests: int
    min_requests: int

    @property
    def failed(self) -> GuardResult | None:
        return next((r for r in self.results if r.status == "fail"), None)

    def to_dict(self) -> dict[str, object]:
        return {r.guard: r.to_dict() for r in self.results}


def _judge(guard: GuardName, value: float | None, limit: float | None, detail: Mapping[str, float | int | None]) -> GuardResult:
    if limit is None:
        status: Status = "off"
    elif value is None:
        status = "no_data"
    else:
        status = "fail" if value > limit else "pass"
    return GuardResult(guard, status, value, limit, detail)


def evaluate(window: Window, limits: Limits) -> Check:
    """Judge one window. A guard whose signal is missing (no candidate traffic, no stable latency, no
    comparisons, no closed drift window) is "no_data" and does not block.

    Until the candidate has min_requests requests only a certain failure counts: errors so many that
    the error rate stays over its limit even if every request still to come to reach min_requests
    succeeds; otherwise the verdict is "wait"."""
    cand, stable = window.candidate, window.stable
    cand_p99, stable_p99 = cand.p99, stable.p99
    ratio = cand_p99 / stable_p99 if cand_p99 is not None and stable_p99 else None
    disagreement = 1.0 - window.agreement_sum / window.compared if window.compared else None
    results: tuple[GuardResult, ...] = (
        _judge("error_rate", cand.error_rate, limits.max_error_rate,
               {"candidate_requests": cand.requests, "candidate_errors": cand.errors,
                "stable_requests": stable.requests, "stable_errors": stable.errors}),
        _judge("p99_ratio", ratio, limits.max_p99_ratio, {"candidate_p99_s": cand_p99, "stable_p99_s": stable_p99}),
        _judge("disagreement", disagreement, limits.max_disagreement, {"compared": window.compared}),
        _judge("psi", window.psi, limits.max_psi, {}),
    )
    enough = cand.requests >= limits.min_requests
    if not enough:
        certain = (
            limits.max_error_rate is not None and limits.min_requests > 0
            and cand.errors / max(limits.min_requests, cand.requests) > limits.max_error_rate
        )
        if not certain:
            return Check("wait", results, cand.requests, limits.min_requests)
        results = tuple(r if r.guard == "error_rate" else _unjudged(r) for r in results)
        return Check("fail", results, cand.requests, limits.min_requests)
    verdict: Verdict = "fail" if any(r.status == "fail" for r in results) else "pass"
    return Check(verdict, results, cand.requests, limits.min_requests)


def _unjudged(result: GuardResult) -> GuardResult:
    # Before min_requests only the certain error-rate failure decides; the others are not judged yet.
    if result.status == "fail":
        return GuardResult(result.guard, "no_data", result.value, result.limit, result.detail)
    return result
