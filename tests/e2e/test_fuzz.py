"""Fuzzing a real `gateway serve --demo` on a socket: schemathesis cases for every operation of the
gateway's own /openapi.json (no 5xx, no hang), and hostile raw v2 bodies (always 4xx, server healthy
after, resident memory bounded).

Deterministic: hypothesis runs derandomized with no example database, so CI sees the same cases
every run. Only the explicit and generate phases run (no shrinking: a failure is reported with its
curl command as generated, and collecting every failure matters more here than minimal ones).
"""

from __future__ import annotations

import json
import math
import socket
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from tests.e2e.conftest import GatewayProcess, start_gateway

GROUPS = ("inference", "health", "admin", "features", "mlflow")
CASES_PER_GROUP = 2000
REQUEST_TIMEOUT_S = 10.0  # a request that takes longer is a hang
MAX_RSS_GROWTH_KB = 200 * 1024
# Names the demo serves: a third of the cases of operations with these path parameters use them, so
# bodies reach the decoders and the models instead of stopping at 404.
KNOWN_PATH = {"name": ["churn", "ticket_router"], "version": ["1", "2"], "model": ["churn"]}


def _settings(max_examples: int) -> settings:
    return settings(
        max_examples=max_examples,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )


@pytest.fixture(scope="module")
def fuzz_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """A private demo gateway on loopback, without an admin token, so admin and MLflow writes run."""
    gw = start_gateway(tmp_path_factory.mktemp("fuzz-gateway"), "--demo")
    yield gw
    gw.stop()


@pytest.fixture(scope="module")
def api_schema(fuzz_gateway: GatewayProcess) -> Any:
    return schemathesis.openapi.from_url(f"{fuzz_gateway.url}/openapi.json", timeout=10)


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for process {pid}")


def assert_healthy(gw: GatewayProcess) -> None:
    assert gw.proc.poll() is None, f"the gateway exited:\n{gw.output()[-4000:]}"
    assert httpx.get(f"{gw.url}/v2/health/ready", timeout=5).status_code == 200
    r = httpx.post(f"{gw.url}/v1/models/churn:predict", json={"instances": [[0.1] * 32]}, timeout=5)
    assert r.status_code == 200, r.text


def _strategies(operation: Any) -> st.SearchStrategy[Any]:
    """Positive and negative cases; for operations on a demo model, also cases addressed to it."""
    modes = [operation.as_strategy(GenerationMode.POSITIVE), operation.as_strategy(GenerationMode.NEGATIVE)]
    names = {p["name"] for p in operation.definition.raw.get("parameters", []) if p["in"] == "path"}
    if names and names <= set(KNOWN_PATH):
        fixed = {n: KNOWN_PATH[n][0] for n in names}
        modes.append(operation.as_strategy(GenerationMode.POSITIVE, path_parameters=fixed))
        modes.append(operation.as_strategy(GenerationMode.NEGATIVE, path_parameters=fixed))
        if "name" in names:
            other = {**fixed, "name": KNOWN_PATH["name"][1]}
            modes.append(operation.as_strategy(GenerationMode.POSITIVE, path_parameters=other))
    return st.one_of(modes)


def _varies(operation: Any) -> bool:
    raw = operation.definition.raw
    return bool(raw.get("parameters")) or "requestBody" in raw


def _fuzz_operation(operation: Any, session: requests.Session, max_examples: int, failures: list[str]) -> int:
    """Run the operation's cases; append each 5xx or hang to `failures`; return the number of cases."""
    label = operation.label
    count = 0

    @_settings(max_examples)
    @given(case=_strategies(operation))
    def run(case: Any) -> None:
        nonlocal count
        count += 1
        try:
            case.call_and_validate(session=session, checks=[not_a_server_error], timeout=REQUEST_TIMEOUT_S)
        except requests.Timeout:
            failures.append(f"{label}: no answer within {REQUEST_TIMEOUT_S} s\n  {case.as_curl_command()}")
        except AssertionError as exc:  # the check's failure group; keep going to find them all
            if len(failures) < 50:
                failures.append(f"{label}: {exc}\n  {case.as_curl_command()[:2000]}")

    run()
    return count


@pytest.mark.parametrize("group", GROUPS)
def test_schema_fuzz_no_server_error(group: str, fuzz_gateway: GatewayProcess, api_schema: Any) -> None:
    """At least 2,000 generated cases against the group's operations: none answers 5xx or takes
    longer than the request timeout, and the gateway is healthy afterwards."""
    operations = [r.ok() for r in api_schema.get_all_operations()]
    operations = [op for op in operations if op.definition.raw["tags"] == [group]]
    assert operations, f"no operations tagged {group!r} in /openapi.json"
    varying = [op for op in operations if _varies(op)]
    per_operation = math.ceil(CASES_PER_GROUP * 1.05 / max(1, len(varying)))
    counts: dict[str, int] = {}
    failures: list[str] = []
    with requests.Session() as session:
        for operation in operations:
            budget = per_operation if _varies(operation) else 5  # a fixed request needs no more
            counts[operation.label] = _fuzz_operation(operation, session, budget, failures)
    total = sum(counts.values())
    print(f"\n{group}: {total} cases", {k: v for k, v in counts.items()})
    assert not failures, f"{len(failures)} failing cases:\n" + "\n\n".join(failures[:20])
    assert total >= CASES_PER_GROUP, counts
    assert_healthy(fuzz_gateway)


# --- raw hostile v2 bodies ------------------------------------------------------------------------

CHURN = "/v2/models/churn/infer"
ROUTER = "/v2/models/ticket_router/infer"


def _binary(header: dict[str, Any], tail: bytes) -> tuple[bytes, int]:
    head = json.dumps(header).encode()  # the stdlib writes integers past 64 bits, which orjson refuses
    return head + tail, len(head)


def _fp32_header(shape: list[int], size: int) -> dict[str, Any]:
    return {"inputs": [{"name": "features", "shape": shape, "datatype": "FP32",
                        "parameters": {"binary_data_size": size}}]}


@st.composite
def lying_header_length(draw: st.DrawFn) -> tuple[str, bytes, dict[str, str]]:
    """A valid binary FP32 request whose Inference-Header-Content-Length lies (or is not a number)."""
    rows = draw(st.integers(1, 4))
    body, true_length = _binary(_fp32_header([rows, 32], rows * 128), bytes(rows * 128))
    lie = draw(st.one_of(
        st.integers(-(2**70), -1), st.integers(len(body) + 1, 2**70),
        st.integers(0, len(body)).filter(lambda n: n != true_length),
        st.sampled_from(["-0", "1e3", "0x10", "12abc", "+5", "1.0", "1" * 5000]),
    ))
    return CHURN, body, {"inference-header-content-length": str(lie)}


@st.composite
def huge_shape(draw: st.DrawFn) -> tuple[str, bytes, dict[str, str]]:
    """Declared shapes far beyond the bytes sent: element counts up to 2**120, rank up to 200."""
    dims = draw(st.lists(st.integers(0, 2**40), min_size=1, max_size=8))
    big = draw(st.integers(2**27, 2**120))
    shape = [*dims, big] if draw(st.booleans()) else [big, 32]
    if draw(st.booleans()):
        shape = [2] * draw(st.integers(65, 200))
    if draw(st.booleans()):
        body, length = _binary(_fp32_header(shape, draw(st.integers(0, 2**64))), bytes(draw(st.integers(0, 512))))
        return CHURN, body, {"inference-header-content-length": str(length)}
    doc = {"inputs": [{"name": "features", "shape": shape, "datatype": "FP32", "data": [0.5] * draw(st.integers(0, 64))}]}
    return CHURN, json.dumps(doc).encode(), {}


@st.composite
def invalid_utf8_bytes(draw: st.DrawFn) -> tuple[str, bytes, dict[str, str]]:
    """BYTES tensors whose elements are not UTF-8, in the binary block or raw inside the JSON."""
    junk = draw(st.lists(st.binary(min_size=1, max_size=16), min_size=1, max_size=3))
    junk = [b"\xff" + j for j in junk]  # never valid UTF-8
    if draw(st.booleans()):
        block = b"".join(struct.pack("<I", len(j)) + j for j in junk)
        header = {"inputs": [
            {"name": "category", "shape": [len(junk), 1], "datatype": "BYTES",
             "parameters": {"binary_data_size": len(block)}},
            {"name": "priority", "shape": [len(junk), 1], "datatype": "INT64", "data": [1] * len(junk)},
        ]}
        body, length = _binary(header, block)
        return ROUTER, body, {"inference-header-content-length": str(length)}
    head = b'{"inputs": [{"name": "category", "shape": [1, 1], "datatype": "BYTES", "data": ["'
    tail = b'"]}, {"name": "priority", "shape": [1, 1], "datatype": "INT64", "data": [1]}]}'
    return ROUTER, head + junk[0] + tail, {}


@st.composite
def non_finite_json(draw: st.DrawFn) -> tuple[str, bytes, dict[str, str]]:
    """NaN, Infinity and overflowing literals written as raw JSON bytes, where only finite numbers are JSON."""
    literal = draw(st.sampled_from([b"NaN", b"nan", b"Infinity", b"-Infinity", b"inf", b"1e999", b"-1e400",
                                    b"1" * 400, b"0x1p3", b"+1", b".5", b"01"]))
    position = draw(st.integers(0, 31))
    values = [b"0.5"] * 32
    values[position] = literal
    body = b'{"inputs": [{"name": "features", "shape": [1, 32], "datatype": "FP32", "data": [' + b",".join(values) + b"]}]}"
    return CHURN, body, {}


@st.composite
def deeply_nested(draw: st.DrawFn) -> tuple[str, bytes, dict[str, str]]:
    """JSON nested deeper than any parser here accepts, as the whole body or inside data or parameters."""
    depth = draw(st.integers(1100, 200_000))  # past the 1024 levels orjson parses (shallower is valid JSON)
    opener, closer = draw(st.sampled_from([(b"[", b"]"), (b'{"a":', b"}")]))
    nest = opener * depth + b"1" + closer * depth
    where = draw(st.sampled_from(["body", "data", "parameters"]))
    if where == "body":
        return CHURN, nest, {}
    if where == "data":
        return CHURN, b'{"inputs": [{"name": "features", "shape": [1, 32], "datatype": "FP32", "data": ' + nest + b"}]}", {}
    data = b",".join([b"0.5"] * 32)
    body = b'{"parameters": {"p": ' + nest + b'}, "inputs": [{"name": "features", "shape": [1, 32], '
    body += b'"datatype": "FP32", "data": [' + data + b"]}]}"
    return CHURN, body, {}


@st.composite
def oversized_headers(draw: st.DrawFn) -> tuple[str, bytes, dict[str, str]]:
    """A valid body with one enormous header value, or very many headers."""
    body = orjson.dumps({"inputs": [{"name": "features", "shape": [1, 32], "datatype": "FP32", "data": [0.5] * 32}]})
    size = draw(st.integers(512 * 1024, 2 * 1024 * 1024))  # past any head limit plus one socket read
    name = draw(st.sampled_from(["x-filler", "inference-header-content-length", "x-gateway-key", "content-encoding"]))
    return CHURN, body, {name: "9" * size}


HOSTILE = st.one_of(lying_header_length(), huge_shape(), invalid_utf8_bytes(), non_finite_json(), deeply_nested())


def test_hostile_v2_bodies_get_4xx_and_memory_stays_bounded(fuzz_gateway: GatewayProcess) -> None:
    """Lying lengths, huge shapes, invalid UTF-8 in BYTES, NaN/Inf literals and deep nesting: every one
    answers 4xx with the {"error"} body; the server stays healthy and its RSS grows < 200 MB."""
    gw = fuzz_gateway
    assert_healthy(gw)
    before = rss_kb(gw.proc.pid)
    seen: list[int] = []
    wrong: list[str] = []
    with httpx.Client(base_url=gw.url, timeout=REQUEST_TIMEOUT_S) as client:

        @_settings(600)
        @given(request=HOSTILE)
        def run(request: tuple[str, bytes, dict[str, str]]) -> None:
            path, body, headers = request
            r = client.post(path, content=body, headers=headers)
            seen.append(r.status_code)
            if not 400 <= r.status_code < 500 or "error" not in r.json():
                wrong.append(f"{r.status_code} {r.text[:300]} for {body[:200]!r} {dict((k, v[:40]) for k, v in headers.items())}")

        run()
    after = rss_kb(gw.proc.pid)
    assert not wrong, f"{len(wrong)} of {len(seen)} not refused with 4xx:\n" + "\n".join(wrong[:20])
    assert len(seen) >= 500
    assert after - before < MAX_RSS_GROWTH_KB, f"RSS grew from {before} kB to {after} kB"
    assert_healthy(gw)


def test_oversized_headers_are_refused(fuzz_gateway: GatewayProcess) -> None:
    """Header values from 512 KiB to 2 MiB: refused with 4xx or the connection closed by the server,
    never served or crashed; RSS stays bounded and the gateway answers afterwards."""
    gw = fuzz_gateway
    before = rss_kb(gw.proc.pid)
    outcomes: list[str] = []

    @_settings(20)
    @given(request=oversized_headers())
    def run(request: tuple[str, bytes, dict[str, str]]) -> None:
        path, body, headers = request
        try:
            r = httpx.post(f"{gw.url}{path}", content=body, headers=headers, timeout=REQUEST_TIMEOUT_S)
        except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError):
            outcomes.append("closed")
            return
        assert 400 <= r.status_code < 500, f"{r.status_code} {r.text[:200]} for a {len(next(iter(headers.values())))}-byte header"
        outcomes.append(str(r.status_code))

    run()
    assert outcomes
    assert rss_kb(gw.proc.pid) - before < MAX_RSS_GROWTH_KB
    assert_healthy(gw)


def test_lying_content_length_does_not_hang(fuzz_gateway: GatewayProcess) -> None:
    """A body shorter than its Content-Length, then a half-close: the server gives up on the request
    (no answer or 4xx), and keeps serving others."""
    gw = fuzz_gateway
    body = b'{"inputs": []}'
    with socket.create_connection(("127.0.0.1", gw.port), timeout=REQUEST_TIMEOUT_S) as sock:
        sock.sendall(b"POST " + CHURN.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n" + body)
        sock.shutdown(socket.SHUT_WR)
        reply = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            reply += chunk
    assert reply == b"" or reply.split(b" ", 2)[1].startswith(b"4"), reply[:200]
    with socket.create_connection(("127.0.0.1", gw.port), timeout=REQUEST_TIMEOUT_S) as sock:
        sock.sendall(b"POST " + CHURN.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999\r\n\r\n")
        status = sock.recv(65536).split(b" ", 2)[1]
    assert status == b"413"
    assert_healthy(gw)
