"""`python -m loadtests.bench`: run the benchmark (see loadtests/bench/harness.py)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from loadtests.bench.benchvenv import BenchVenvError
from loadtests.bench.harness import Options, run
from loadtests.bench.processes import ServerError
from loadtests.bench.wrk import WrkError


def parse(argv: list[str]) -> Options:
    p = argparse.ArgumentParser(prog="python -m loadtests.bench", description=__doc__)
    p.add_argument("--quick", action="store_true", help="smoke run: 1 round, 3 s per run, 8 connections, no profile")
    p.add_argument("--duration", type=float, help="seconds per measured run (default 8; --quick 3)")
    p.add_argument("--connections", type=int, help="wrk connections (default 32; --quick 8)")
    p.add_argument("--rounds", type=int, help="interleaved rounds (default 5; --quick 1)")
    p.add_argument("--warmup", type=float, help="seconds of warm-up per variant before round 1 (default 3; --quick 1)")
    p.add_argument("--out", type=Path, help="results file (default loadtests/results/bench.md; --quick bench-quick.md)")
    p.add_argument("--server-cpu", type=int, default=0)
    p.add_argument("--client-cpu", type=int, default=1)
    p.add_argument("--max-batch-delay-ms", type=float, default=0.0, help="passed to `gateway serve`")
    p.add_argument("--profile", choices=["auto", "always", "never"],
                   help="py-spy profiles: auto (default) when a target fails; --quick: never")
    p.add_argument("--profile-seconds", type=int, default=6)
    p.add_argument("--keep-profiles", type=Path, metavar="DIR", help="copy py-spy's raw folded stacks here")
    p.add_argument("--only", default="", help="comma-separated variant keys to measure (default: all)")
    p.add_argument("--note", default="", help="a sentence on the conditions, written into the results file")
    p.add_argument("--strict", action="store_true", help="exit 1 when a target fails")
    p.add_argument("--no-pairs", action="store_true",
                   help="skip the side-by-side pairs (drift gateway and a control twin, each beside the plain one)")
    a = p.parse_args(argv)
    q = a.quick
    return Options(
        quick=q,
        duration_s=a.duration if a.duration is not None else 3 if q else 8,
        connections=a.connections if a.connections is not None else 8 if q else 32,
        rounds=a.rounds if a.rounds is not None else 1 if q else 5,
        warmup_s=a.warmup if a.warmup is not None else 1 if q else 3,
        out=a.out if a.out is not None else Path("loadtests/results") / ("bench-quick.md" if q else "bench.md"),
        server_cpu=a.server_cpu,
        client_cpu=a.client_cpu,
        max_batch_delay_ms=a.max_batch_delay_ms,
        profile=a.profile if a.profile is not None else "never" if q else "auto",
        profile_s=a.profile_seconds,
        only=tuple(k for k in a.only.split(",") if k),
        note=a.note,
        strict=a.strict,
        keep_profiles=a.keep_profiles,
        pairs=not a.no_pairs,
    )


def main(argv: list[str]) -> int:
    options = parse(argv)
    try:
        return run(options)
    except (WrkError, ServerError, BenchVenvError, RuntimeError) as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
