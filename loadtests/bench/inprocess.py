"""The in-process limit: microseconds of one session.run on one row, and per row in a batch of 64,
with intra_op_num_threads=1. Run pinned to the servers' CPU: `python -m loadtests.bench.inprocess
--model small=PATH --model heavy=PATH` prints one JSON object."""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable

import onnxruntime as ort
import orjson

from loadtests.bench.payloads import INPUT, rows

BATCH = 64


def time_us(fn: Callable[[], object], budget_s: float, blocks: int = 7) -> float:
    """Median over `blocks` timed blocks of the mean microseconds per call; `budget_s` bounds the total."""
    for _ in range(20):  # first runs allocate
        fn()
    started = time.perf_counter()
    fn()
    once = max(time.perf_counter() - started, 1e-7)
    per_block = max(1, int(budget_s / blocks / once))
    means = []
    for _ in range(blocks):
        started = time.perf_counter()
        for _ in range(per_block):
            fn()
        means.append((time.perf_counter() - started) / per_block * 1e6)
    return statistics.median(means)


def measure(model_path: str, budget_s: float) -> dict[str, float]:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    session = ort.InferenceSession(model_path, options, providers=["CPUExecutionProvider"])
    one, batch = rows(1), rows(BATCH)
    row1_us = time_us(lambda: session.run(None, {INPUT: one}), budget_s / 2)
    batch_us = time_us(lambda: session.run(None, {INPUT: batch}), budget_s / 2)
    return {"row1_us": row1_us, "batch64_us": batch_us, "row64_us": batch_us / BATCH}


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", action="append", required=True, metavar="NAME=PATH")
    parser.add_argument("--budget", type=float, default=0.6, help="seconds of timing per model")
    args = parser.parse_args(argv)
    results = {}
    for spec in args.model:
        name, _, path = spec.partition("=")
        results[name] = measure(path, args.budget)
    sys.stdout.write(orjson.dumps(results).decode() + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
