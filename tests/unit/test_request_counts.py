"""monitoring/requests.py exports exactly what prometheus-client's own Counter and Histogram export for
the same observations (the single-process fast path must not change a family, name, label or value)."""

from __future__ import annotations

import random

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from monitoring.metrics import LATENCY_BUCKETS
from monitoring.requests import DURATION, DURATION_DOC, REQUESTS, REQUESTS_DOC, RequestCounts

LABELS = ["route", "arm", "version", "protocol"]


def samples(registry: CollectorRegistry) -> set[tuple[str, tuple[tuple[str, str], ...], float]]:
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items())), s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if not s.name.endswith("_created")
    }


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_same_samples_as_prometheus_client(seed: int) -> None:
    rng = random.Random(seed)
    reference = CollectorRegistry()
    counter = Counter(REQUESTS, REQUESTS_DOC, [*LABELS, "code"], registry=reference)
    histogram = Histogram(DURATION, DURATION_DOC, LABELS, buckets=LATENCY_BUCKETS, registry=reference)
    fast = CollectorRegistry()
    counts = RequestCounts(LATENCY_BUCKETS)
    fast.register(counts)
    arms = [("churn", "champion", "1", "v1"), ("churn", "challenger", "2", "v2"), ("fraud", "default", "3", "v1")]
    for key in arms:  # created up front, as compiled arms are: a label set with no traffic exports zeros
        counts.arm(*key)
        counter.labels(*key, "200")
        histogram.labels(*key)
    for _ in range(2000):
        key = rng.choice(arms)
        # exact bucket bounds included: `le` means less than or equal
        seconds = rng.choice([rng.expovariate(300.0), rng.choice(LATENCY_BUCKETS), 7.5])
        counts.arm(*key).observe(seconds)
        counter.labels(*key, "200").inc()
        histogram.labels(*key).observe(seconds)
        if rng.random() < 0.05:
            code = rng.choice(["400", "404", "503"])
            counts.error(key[0], "", "", key[3], code)
            counter.labels(key[0], "", "", key[3], code).inc()
    got, want = samples(fast), samples(reference)
    assert len(want) > 50
    # sums are floats added in the same order: equal, not just close
    assert got == want
