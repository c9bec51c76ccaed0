"""Per-(route, version) counters for rollout guards, kept in process: requests, errors and latency
buckets of live traffic, the same for mirrored shadow runs, and decision agreement with the other side.

Only the (route, version)s a running rollout watches have an ArmStats; the request path reaches one
through the arm's metrics children (monitoring/metrics.py TappedRequestMetrics), so a route without a
rollout pays nothing. Everything runs on the event loop: plain ints, no locks.
"""

from __future__ import annotations

from collections.abc import Iterable

from gateway.guards import N_BUCKETS, ArmCounts, bucket_of


class ArmStats:
    """Cumulative counts of one version on one route; snapshot() copies them for a guard window."""

    __slots__ = ("_latency", "_shadow_latency", "agreement_sum", "compared", "errors", "requests",
                 "shadow_errors", "shadow_runs")

    def __init__(self) -> None:
        self.requests = 0
        self.errors = 0
        self._latency = [0] * N_BUCKETS
        self.shadow_runs = 0
        self.shadow_errors = 0
        self._shadow_latency = [0] * N_BUCKETS
        self.compared = 0
        self.agreement_sum = 0.0

    def served(self, seconds: float) -> None:
        """A live request this version answered."""
        self.requests += 1
        self._latency[bucket_of(seconds)] += 1

    def failed(self) -> None:
        """A live request that failed after this version's arm was picked."""
        self.requests += 1
        self.errors += 1

    def shadowed(self, seconds: float | None, rows: int = 0, agreement: float | None = None) -> None:
        """A mirrored copy this version ran: seconds None when it failed or timed out; `agreement` is the
        share of its `rows` decisions equal to the primary's."""
        self.shadow_runs += 1
        if seconds is None:
            self.shadow_errors += 1
            return
        self._shadow_latency[bucket_of(seconds)] += 1
        self.compare(rows, agreement)

    def compare(self, rows: int, agreement: float | None) -> None:
        if agreement is not None and rows > 0:
            self.compared += rows
            self.agreement_sum += agreement * rows

    def snapshot(self) -> ArmCounts:
        return ArmCounts(self.requests, self.errors, tuple(self._latency), self.shadow_runs, self.shadow_errors,
                         tuple(self._shadow_latency), self.compared, self.agreement_sum)


class StatsBoard:
    """The ArmStats of every watched (route, version); the rollout driver adds and drops entries, the
    request path and the mirror look them up. Versions are keyed by their decimal text."""

    def __init__(self) -> None:
        self._stats: dict[tuple[str, str], ArmStats] = {}

    def watch(self, route: str, versions: Iterable[int]) -> None:
        """Start counting for these versions of `route` (existing counts are kept)."""
        for version in versions:
            self._stats.setdefault((route, str(version)), ArmStats())

    def unwatch(self, route: str) -> None:
        for key in [k for k in self._stats if k[0] == route]:
            del self._stats[key]

    def get(self, route: str, version: str) -> ArmStats | None:
        return self._stats.get((route, version))

    def snapshot(self, route: str, version: int) -> ArmCounts:
        stats = self._stats.get((route, str(version)))
        return stats.snapshot() if stats is not None else ArmCounts()
