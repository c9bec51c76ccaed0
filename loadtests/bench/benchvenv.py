"""The benchmark's own virtual environment (loadtests/bench/.venv, git-ignored): FastAPI and pydantic for
the textbook server and py-spy for profiles, so the gateway's venv stays lean. Created on first use
with `python -m venv` and pip; uvicorn, uvloop, httptools, onnxruntime and numpy are pinned to the
versions the gateway runs with, so the comparison differs only in the framework."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

VENV = Path(__file__).resolve().parent / ".venv"
PINNED_LIKE_GATEWAY = ("uvicorn", "uvloop", "httptools", "onnxruntime", "numpy")
UNPINNED = ("fastapi", "pydantic", "py-spy")


class BenchVenvError(RuntimeError):
    """The benchmark venv could not be created or installed into."""


def requirements() -> list[str]:
    """pip requirement strings: the gateway's own versions where it has the package, latest otherwise."""
    reqs = []
    for name in PINNED_LIKE_GATEWAY:
        try:
            reqs.append(f"{name}=={version(name)}")
        except PackageNotFoundError:
            reqs.append(name)
    return [*reqs, *UNPINNED]


def ensure_bench_venv(say: Callable[[str], None] = print) -> Path:
    """The venv's python, creating or updating the venv when its requirements changed (minutes at most)."""
    reqs = requirements()
    stamp = VENV / ".installed"
    digest = hashlib.sha256("\n".join(reqs).encode()).hexdigest()
    python = VENV / "bin" / "python"
    if python.exists() and stamp.exists() and stamp.read_text() == digest:
        return python
    say(f"creating the benchmark venv {VENV} ({', '.join(reqs)})")
    try:
        if not python.exists():
            subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True, timeout=120)
        subprocess.run(
            [str(python), "-m", "pip", "--disable-pip-version-check", "-q", "install", *reqs],
            check=True, timeout=600,
        )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        raise BenchVenvError(f"could not set up {VENV}: {exc}") from exc
    stamp.write_text(digest)
    return python


def py_spy() -> Path:
    return VENV / "bin" / "py-spy"
