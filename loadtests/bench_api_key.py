"""Microbenchmark: the per-request CPU cost of --require-api-key on the inference path.

    .venv/bin/python -m loadtests.bench_api_key [--repeat 7] [--number 200000] [--out loadtests/results/api_key.md]

Times exactly what gateway/inference.py does per request before reading the body: with keys off,
RequestHeaders over the request's header list; with keys on, KeyedRequestHeaders over the same list
plus Keyring.authenticate (one sha256 of the token and one dict lookup, then compare_digest) against
a keyring of 1,000 tokens. The header list is what httpx sends for a v1 predict, plus Authorization.
Reports the best and the median of `--repeat` runs, in nanoseconds per request.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import timeit
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType

from gateway.access import Keyring, Principal, digest
from gateway.inference import KeyedRequestHeaders, RequestHeaders
from registry.tokens import new_token


def build() -> tuple[list[tuple[bytes, bytes]], Keyring]:
    tokens = [new_token() for _ in range(1000)]
    keyring = Keyring(None)
    keyring.table = MappingProxyType({digest(t.encode()): Principal(f"t{i}", "reader", digest(t.encode()))
                                      for i, t in enumerate(tokens)})
    headers = [
        (b"host", b"127.0.0.1:8000"), (b"accept", b"*/*"), (b"accept-encoding", b"gzip, deflate"),
        (b"connection", b"keep-alive"), (b"user-agent", b"python-httpx/0.28.1"), (b"content-length", b"180"),
        (b"content-type", b"application/json"), (b"authorization", b"Bearer " + tokens[500].encode()),
    ]
    return headers, keyring


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--number", type=int, default=200_000)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    headers, keyring = build()

    def off() -> None:
        RequestHeaders(headers)

    def on() -> None:
        keyring.authenticate(KeyedRequestHeaders(headers).authorization, "reader")

    on()  # a wrong setup fails here, not in the numbers
    results: dict[str, list[float]] = {"off": [], "on": []}
    for _ in range(args.repeat):  # interleaved, so drift in machine load hits both alike
        for name, fn in (("off", off), ("on", on)):
            results[name].append(timeit.timeit(fn, number=args.number) / args.number * 1e9)
    best = {k: min(v) for k, v in results.items()}
    median = {k: statistics.median(v) for k, v in results.items()}
    lines = [
        f"# --require-api-key: CPU per inference request ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC)",
        "",
        f"`python -m loadtests.bench_api_key --repeat {args.repeat} --number {args.number}`; "
        f"Python {platform.python_version()}, {platform.machine()}, shared machine (2 cores).",
        "",
        "| keys | best ns/request | median ns/request |",
        "|---|---|---|",
        f"| off (RequestHeaders) | {best['off']:.0f} | {median['off']:.0f} |",
        f"| on (KeyedRequestHeaders + Keyring.authenticate, 1,000 tokens) | {best['on']:.0f} | {median['on']:.0f} |",
        f"| added by API keys | {best['on'] - best['off']:.0f} | {median['on'] - median['off']:.0f} |",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if args.out is not None:
        args.out.write_text(text)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
