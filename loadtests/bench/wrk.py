"""wrk: the Lua script that POSTs a fixed body, the pinned command line, and the parser of its
--latency report (pure but for `run_wrk`, which runs it)."""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from loadtests.bench.payloads import Payload

INSTALL_HINT = "apt-get update && apt-get install -y wrk"
_UNITS_S = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_NUMBER_UNIT = re.compile(r"^([0-9.]+)(us|ms|s|m|h)$")


class WrkError(RuntimeError):
    """wrk is missing, failed, or printed a report this parser does not recognise."""


@dataclass(frozen=True, slots=True)
class WrkResult:
    """One wrk run: completed requests, its own duration, req/s and latency percentiles in seconds."""

    requests: int
    duration_s: float
    rps: float
    p50_s: float
    p99_s: float
    non_2xx: int
    socket_errors: int


def find_wrk() -> str:
    """The wrk executable. Raises WrkError with the install command when it is not on PATH."""
    path = shutil.which("wrk")
    if path is None:
        raise WrkError(f"wrk is not installed (Debian/Ubuntu package 'wrk'); install it with:\n    {INSTALL_HINT}")
    return path


def write_script(directory: Path, name: str, payload: Payload) -> Path:
    """A Lua script that makes every wrk request a POST of `payload` (the body is read from a file,
    so binary bodies pass through unchanged)."""
    body_path = directory / f"{name}.body"
    body_path.write_bytes(payload.body)
    lines = [
        'wrk.method = "POST"',
        f"local f = assert(io.open([[{body_path}]], \"rb\"))",
        'wrk.body = f:read("*a")',
        "f:close()",
        *(f'wrk.headers["{key}"] = "{value}"' for key, value in payload.headers.items()),
    ]
    script = directory / f"{name}.lua"
    script.write_text("\n".join(lines) + "\n")
    return script


def wrk_command(wrk: str, cpu: int, connections: int, duration_s: float, script: Path, url: str) -> list[str]:
    """One wrk thread pinned to `cpu`; whole seconds, as wrk takes them."""
    seconds = max(1, round(duration_s))
    return ["taskset", "-c", str(cpu), wrk, "-t1", f"-c{connections}", f"-d{seconds}s", "--latency",
            "-s", str(script), url]


def run_wrk(command: list[str], timeout_s: float) -> WrkResult:
    """Run wrk to completion (bounded by `timeout_s`) and parse its report."""
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired as exc:
        raise WrkError(f"wrk ran past {timeout_s:.0f} s: {' '.join(command)}") from exc
    if done.returncode != 0 or done.stderr.strip():  # a Lua error is printed, and wrk then sends GETs
        raise WrkError(f"wrk exited with {done.returncode}: {done.stderr.strip() or done.stdout.strip()}")
    return parse_wrk(done.stdout)


def run_wrk_together(commands: list[list[str]], timeout_s: float) -> list[WrkResult]:
    """Start every wrk at once and wait for all of them (each bounded by `timeout_s`): for servers
    measured side by side over the same seconds."""
    procs = [subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for c in commands]
    outputs: list[tuple[int, str, str]] = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=timeout_s)
            outputs.append((proc.returncode, out, err))
    except subprocess.TimeoutExpired as exc:
        raise WrkError(f"wrk ran past {timeout_s:.0f} s: {' '.join(map(str, exc.cmd))}") from exc
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    results = []
    for command, (code, out, err) in zip(commands, outputs, strict=True):
        if code != 0 or err.strip():
            raise WrkError(f"wrk exited with {code}: {err.strip() or out.strip()} ({' '.join(command)})")
        results.append(parse_wrk(out))
    return results


def _seconds(text: str) -> float:
    match = _NUMBER_UNIT.match(text)
    if match is None:
        raise WrkError(f"unrecognised wrk duration {text!r}")
    return float(match.group(1)) * _UNITS_S[match.group(2)]


def parse_wrk(text: str) -> WrkResult:
    """Parse wrk's report as printed with --latency. Raises WrkError when a needed line is missing."""
    percentiles: dict[str, float] = {}
    requests = duration = rps = None
    non_2xx = socket_errors = 0
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] in ("50%", "75%", "90%", "99%"):
            percentiles[parts[0]] = _seconds(parts[1])
        elif len(parts) >= 4 and parts[1] == "requests" and parts[2] == "in":
            requests = int(parts[0])
            duration = _seconds(parts[3].rstrip(","))
        elif line.startswith("Requests/sec:"):
            rps = float(parts[1])
        elif line.strip().startswith("Non-2xx or 3xx responses:"):
            non_2xx = int(parts[-1])
        elif line.strip().startswith("Socket errors:"):
            socket_errors = sum(int(n) for n in re.findall(r"\d+", line))
    if requests is None or duration is None or rps is None or "50%" not in percentiles or "99%" not in percentiles:
        raise WrkError("wrk's report lacks the requests, Requests/sec or --latency lines:\n" + text)
    return WrkResult(requests, duration, rps, percentiles["50%"], percentiles["99%"], non_2xx, socket_errors)
