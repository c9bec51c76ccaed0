"""gateway/watch.py: which tap the batcher gets for a version with reference profiles, and that both
count the same served batches."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from gateway.watch import DriftWatch, watch_for
from monitoring.drift import DriftTracker, WindowPolicy
from monitoring.psi import profile_from_sample
from monitoring.sinks import DriftFeed, MemoryCountSink
from registry.entities import Signature, TensorSpec


def feed(features: int = 3) -> DriftFeed:
    rng = np.random.default_rng(2)
    columns = [(f"f{i}", profile_from_sample(rng.normal(size=1000))) for i in range(features)]
    tracker = DriftTracker(columns, WindowPolicy(rows=50), outputs=[("p", profile_from_sample(rng.uniform(size=1000)))])
    return DriftFeed(tracker, MemoryCountSink())


def signature(*inputs: TensorSpec) -> Signature:
    return Signature(inputs, (TensorSpec("label", "INT64", (-1,)), TensorSpec("p", "FP32", (-1, 1))))


def test_one_float_matrix_gets_the_native_tap() -> None:
    f = feed()
    watch = watch_for(f, signature(TensorSpec("x", "FP32", (-1, 3))), ["f0", "f1", "f2"], ["p"])
    assert watch.native is not None and watch.batch_tap is watch.native
    assert watch_for(f, signature(TensorSpec("x", "FP32", (-1, 3))), ["f0", "f1", "f2"], ["p"]).native is watch.native

    x = np.random.default_rng(3).normal(size=(60, 3)).astype(np.float32)
    p = np.linspace(0, 1, 60, dtype=np.float32).reshape(-1, 1)
    for lo in range(0, 60, 6):
        watch.batch_tap([x[lo:lo + 6]], [np.zeros(6, np.int64), p[lo:lo + 6]])
    asyncio.run(f.flush(now=0.0, epoch=0.0))

    twin = feed()
    twin._direct = False  # the numpy path
    for lo in range(0, 60, 6):
        DriftWatch(twin, 0, (), (1,))([x[lo:lo + 6]], [np.zeros(6, np.int64), p[lo:lo + 6]])
    asyncio.run(twin.flush(now=0.0, epoch=0.0))
    assert [w.features for w in f.tracker.history()] == [w.features for w in twin.tracker.history()]
    assert f.tracker.windows_closed == 1 and f.tracker.current().rows == 10


@pytest.mark.parametrize(
    "inputs",
    [
        (TensorSpec("a", "FP32", (-1, 1)), TensorSpec("b", "FP32", (-1, 2))),  # columns from two inputs
        (TensorSpec("x", "INT64", (-1, 3)),),  # integer features
    ],
)
def test_other_models_get_the_python_watch(inputs: tuple[TensorSpec, ...]) -> None:
    watch = watch_for(feed(), signature(*inputs), ["f0", "f1", "f2"], ["p"])
    assert watch.native is None and watch.batch_tap is watch
