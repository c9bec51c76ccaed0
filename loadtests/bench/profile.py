"""py-spy profiles of a server under load, folded into where its CPU goes: every sample is charged to
the deepest frame that belongs to a known layer (onnxruntime, codec, Starlette, uvicorn, event loop...),
and the top self and inclusive frames are listed. Aggregation is pure; `record` runs py-spy."""

from __future__ import annotations

import subprocess
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

# a thread blocked in one of these (or parked in an executor's queue) is waiting, not working
IDLE_PYTHON_FRAMES = ("_worker (", "wait (", "get (")  # futures/thread.py _worker, threading wait, queue get
IDLE_LEAVES = ("epoll_wait", "epoll_pwait", "futex", "pthread_cond_wait", "pthread_cond_timedwait", "sem_wait",
               "do_futex_wait", "__futex_abstimed_wait")

# (layer, substrings of a frame's "function (file:line)" text); the first layer a frame matches is its layer
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("onnxruntime session.run", ("onnxruntime", "libonnxruntime")),
    ("orjson encode/decode", ("orjson",)),
    ("numpy (arrays, concat, split)", ("numpy", "_multiarray")),
    ("prometheus_client metrics", ("prometheus_client",)),
    ("gateway batching", ("gateway/batching.py",)),
    ("gateway models + signature check", ("gateway/models.py", "gateway/signature.py")),
    ("gateway protocol codecs", ("gateway/protocol/",)),
    ("gateway endpoints/dataplane/routing", ("gateway/inference.py", "gateway/endpoints.py", "gateway/dataplane.py",
                                             "gateway/routing.py",
                                             "gateway/errors.py", "gateway/app.py", "gateway/mirror.py")),
    ("gateway other", ("gateway/",)),
    ("pydantic / FastAPI", ("pydantic", "fastapi")),
    ("starlette (routing, Request, Response)", ("starlette/",)),
    ("uvicorn HTTP protocol + httptools", ("uvicorn/protocols", "httptools", "parser.c")),
    ("asyncio tasks/futures (Python + C)", ("asyncio/", "_asynciomodule", "TaskStep", "task_step")),
    ("uvloop event loop", ("loop.c", "uv__", "uv_", "libuv", "handles/", "sslproto")),
    ("CPython interpreter", ("libpython", "ceval", "Objects/", "Python/", ".h:")),
)


PROJECT = ("gateway/", "monitoring/", "registry/", "featurestore/")


@dataclass(frozen=True, slots=True)
class Profile:
    """Folded samples. `user` counts busy samples outside syscalls: the shares below are of those.
    Samples in a syscall (`syscall`) are counted apart: py-spy over-samples them (it showed getpid,
    a 0.1 µs call, at 5% of a gateway's samples), so kernel time is taken from /proc instead."""

    user: int
    syscall: int
    idle: int
    layers: list[tuple[str, int]]
    self_frames: list[tuple[str, int]]
    inclusive_frames: list[tuple[str, int]]
    project_frames: list[tuple[str, int]]


def _idle(frames: list[str]) -> bool:
    """Blocked in a wait: the leaf is a known wait, or the innermost Python frame is a known wait
    (py-spy's native unwinding names some libc waits only by address)."""
    if any(frames[-1].startswith(leaf) for leaf in IDLE_LEAVES):
        return True
    python = next((f for f in reversed(frames) if ".py:" in f), "")
    return python.startswith(IDLE_PYTHON_FRAMES) and ("threading.py" in python or "thread.py" in python
                                                      or "queue.py" in python)


def _layer(frame: str) -> str | None:
    for name, needles in LAYERS:
        if any(needle in frame for needle in needles):
            return name
    return None


def _short(frame: str, *, line: bool = True) -> str:
    """'fn (/site-packages/starlette/routing.py:12)' -> 'fn (starlette/routing.py:12)'; without the line
    number when `line` is false."""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    if not line:
        where = where.rpartition(":")[0] or where
    parts = where.split("/")
    return f"{name} ({'/'.join(parts[-2:]) if len(parts) > 1 else where})"


def _syscall(leaf: str) -> bool:
    """A libc entry point that is a system call (read, write, getpid, epoll_ctl...), named or not."""
    return "(libc.so" in leaf and not leaf.startswith(("malloc", "free", "mem", "str", "_int_", "cfree"))


def fold(raw: str, top: int = 15) -> Profile:
    """Fold py-spy's raw (collapsed) output: one 'frame;frame;...;leaf COUNT' line per distinct stack."""
    layers: Counter[str] = Counter()
    self_frames: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    project: Counter[str] = Counter()
    user = syscall = idle = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        if _idle(frames):
            idle += count
            continue
        if _syscall(frames[-1]):
            syscall += count
            continue
        user += count
        self_frames[_short(frames[-1])] += count
        python = {_short(f, line=False) for f in frames if ".py:" in f and "runpy" not in f}
        for short in python:
            inclusive[short] += count
        for short in {_short(f, line=False) for f in frames if ".py:" in f and any(p in f for p in PROJECT)}:
            project[short] += count
        layer = next((found for frame in reversed(frames) if (found := _layer(frame)) is not None), "other")
        layers[layer] += count
    # frames on (nearly) every stack are the server's main loop and entry points, not a cost
    def costs(counter: Counter[str]) -> list[tuple[str, int]]:
        return [(f, n) for f, n in counter.most_common() if n < 0.97 * user][:top]

    return Profile(user, syscall, idle, layers.most_common(), self_frames.most_common(top), costs(inclusive),
                   costs(project))


def record(py_spy: Path, pid: int, seconds: int, output: Path, *, cpu: int, rate: int = 250) -> None:
    """Sample `pid` for `seconds` with native frames, writing collapsed stacks to `output` (py-spy runs on `cpu`)."""
    command = ["taskset", "-c", str(cpu), str(py_spy), "record", "--pid", str(pid), "--duration", str(seconds),
               "--rate", str(rate), "--format", "raw", "--native", "--output", str(output)]
    subprocess.run(command, capture_output=True, check=True, timeout=seconds + 60)
