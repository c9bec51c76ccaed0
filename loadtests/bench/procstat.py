"""Resource use of a process group from /proc: utime and stime of every live member (all threads),
plus what the group leader collected from reaped children (cutime, cstime); and the read/write
syscall counts from /proc/<pid>/io, which show how many socket reads and writes a request costs."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PROC = Path("/proc")


@dataclass(frozen=True, slots=True)
class Usage:
    """Cumulative counters; subtract two readings to get a window's use."""

    user_s: float = 0.0
    system_s: float = 0.0
    read_calls: int = 0
    write_calls: int = 0

    @property
    def cpu_s(self) -> float:
        return self.user_s + self.system_s

    def __sub__(self, earlier: Usage) -> Usage:
        return Usage(self.user_s - earlier.user_s, self.system_s - earlier.system_s,
                     self.read_calls - earlier.read_calls, self.write_calls - earlier.write_calls)


def _fields(stat: str) -> list[str]:
    """The fields after the command name, which may itself contain spaces and parentheses."""
    return stat[stat.rindex(")") + 2 :].split()


def _io(pid_dir: Path) -> tuple[int, int]:
    counts = dict(line.split(": ") for line in (pid_dir / "io").read_text().splitlines())
    return int(counts["syscr"]), int(counts["syscw"])


def group_usage(pgid: int) -> Usage:
    """What the processes whose process group is `pgid` have used so far."""
    user = system = reads = writes = 0
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = _fields((entry / "stat").read_text())
            # fields[0] is field 3 (state) of proc(5): pgrp is field 5, utime 14, stime 15, cutime 16, cstime 17
            if int(fields[2]) != pgid:
                continue
            r, w = _io(entry)
        except (FileNotFoundError, ProcessLookupError, PermissionError, ValueError, KeyError):
            continue  # exited while we looked, or not ours to read
        user += int(fields[11])
        system += int(fields[12])
        if int(entry.name) == pgid:
            user += int(fields[13])
            system += int(fields[14])
        reads += r
        writes += w
    return Usage(user / CLOCK_TICKS, system / CLOCK_TICKS, reads, writes)
