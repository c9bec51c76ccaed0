"""Streaming drift for one (route, version): bin counts per feature over tumbling windows, PSI on close (pure).

A `DriftTracker` compiles its profiles once into flat arrays: every monitored column (the input
features, then the outputs) owns a slice of one int64 count vector, k bins then one slot for
missing values (NaN/None). A batch becomes a (rows, columns) matrix of slot indices and one
`np.bincount` adds it to the window: no per-row Python work. A numeric value's bin is the number
of interior edges <= it, i.e. `np.searchsorted(edges, x, side="right")` as in monitoring/psi.py,
computed for all numeric columns at once by comparison against the padded edge matrix (one 3-D
comparison for small batches, one pass per edge over cache-sized row blocks for large ones), which
beats a searchsorted per column several times over. Categorical columns map each distinct value once.

Windows tumble by rows (`WindowPolicy.rows`; a request of B rows counts B) and/or by time
(`WindowPolicy.seconds`, on the caller's monotonic `now`), whichever limit comes first. A
by-rows window closes at exactly N rows: a batch that crosses the limit is split. A by-time window
closes at the first `add_batch`/`tick` at or after its end; windows that saw no rows are not
recorded. On close, PSI and a status are computed per column and a `ClosedWindow` goes into a
bounded history.

Several processes merge their windows through a CountSink (monitoring/sinks.py): they `count`
batches here, send the counts there, and `close` windows with the merged totals.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from monitoring.psi import (
    CategoricalProfile,
    NumericProfile,
    Profile,
    Status,
    Thresholds,
    categorical_indices,
    floored_shares,
    psi_of_counts,
)

Role = Literal["input", "output"]
Columns = Mapping[str, npt.ArrayLike] | npt.NDArray[Any]
"""A batch: named 1-D columns (or [rows, 1]), or one 2-D array whose columns follow the tracker's order."""

DEFAULT_HISTORY = 32
_BROADCAST_CELLS = 1 << 12  # rows * numeric columns * edges up to which one 3-D comparison beats a loop over edges
_BLOCK_CELLS = 1 << 16  # rows * columns per block of the edge loop (fits L2 with its temporaries)
_SEVERITY: Mapping[Status, int] = {"insufficient_data": 0, "stable": 1, "moderate": 2, "significant": 3}


@dataclass(frozen=True, slots=True)
class WindowPolicy:
    """When a window closes: after `rows` rows, after `seconds` seconds, or whichever comes first."""

    rows: int | None = None
    seconds: float | None = None

    def __post_init__(self) -> None:
        if self.rows is None and self.seconds is None:
            raise ValueError("drift window: set window_requests (rows) or window_seconds, or both")
        if self.rows is not None and (isinstance(self.rows, bool) or not isinstance(self.rows, int) or self.rows < 1):
            raise ValueError(f"drift window: window_requests must be a positive integer, got {self.rows!r}")
        if self.seconds is not None and (
            isinstance(self.seconds, bool) or not isinstance(self.seconds, int | float) or not 0 < self.seconds < math.inf
        ):
            raise ValueError(f"drift window: window_seconds must be a positive number, got {self.seconds!r}")

    @classmethod
    def parse(cls, spec: Mapping[str, Any] | None, default: WindowPolicy | None = None) -> WindowPolicy:
        """From a route policy's `"drift"` object: `{"window_requests": N}` and/or `{"window_seconds": T}`.

        None or `{}` gives `default` (the server-wide policy). Raises ValueError naming a bad key or value.
        """
        if not spec:
            if default is None:
                raise ValueError("drift window: no policy given and no default")
            return default
        unknown = set(spec) - {"window_requests", "window_seconds"}
        if unknown:
            raise ValueError(f"drift: unknown key(s) {sorted(unknown)}; expected window_requests, window_seconds")
        rows = spec.get("window_requests")
        if isinstance(rows, float) and rows.is_integer():  # JSON numbers may arrive as floats (500.0)
            rows = int(rows)
        return cls(rows, spec.get("window_seconds"))

    def to_dict(self) -> dict[str, Any]:
        return {"window_requests": self.rows, "window_seconds": self.seconds}


@dataclass(frozen=True, slots=True, eq=False)
class BinCounts:
    """Counts for a batch or a window: `rows`, and per column name k bin counts then the missing count.

    Arrays may be shorter than k+1 (a sink returns only the bins it saw); trackers pad them with zeros.
    """

    rows: int
    bins: Mapping[str, npt.NDArray[np.int64]]


@dataclass(frozen=True, slots=True)
class MonitoredColumn:
    """One monitored column as compiled: where its k bins and missing slot sit in the count vector."""

    name: str
    role: Role
    profile: Profile
    offset: int
    min_rows: int

    @property
    def n_bins(self) -> int:
        return self.profile.n_bins


@dataclass(frozen=True, slots=True)
class FeatureWindow:
    """One column in one window: rows counted (n, missing excluded), counts per bin, PSI and status."""

    name: str
    role: Role
    n: int
    counts: tuple[int, ...]
    missing: int
    psi: float | None
    status: Status


@dataclass(frozen=True, slots=True)
class ClosedWindow:
    """A closed window: its id, span (caller's clock), rows, per-column results and the worst input feature."""

    window: int
    start: float
    end: float
    rows: int
    features: tuple[FeatureWindow, ...]
    worst: str | None
    status: Status

    def psi(self) -> dict[str, float | None]:
        return {f.name: f.psi for f in self.features}

    def statuses(self) -> dict[str, Status]:
        return {f.name: f.status for f in self.features}

    def feature(self, name: str) -> FeatureWindow:
        for f in self.features:
            if f.name == name:
                return f
        raise KeyError(name)


@dataclass(frozen=True, slots=True)
class CurrentWindow:
    """The open window so far: id, start (None before its first row), rows and per-column counts."""

    window: int
    start: float | None
    rows: int
    counts: Mapping[str, tuple[int, ...]]
    missing: Mapping[str, int]


class _Group:
    """The compiled binning of one group of columns (inputs or outputs): numeric edges padded into
    one matrix, categorical lookups, and each column's offset in the tracker's count vector."""

    def __init__(self, columns: Sequence[MonitoredColumn]) -> None:
        self.names = tuple(c.name for c in columns)
        self.width = len(columns)
        numeric = [(i, c) for i, c in enumerate(columns) if isinstance(c.profile, NumericProfile)]
        self.numeric_pos = np.array([i for i, _ in numeric], np.intp)
        self.numeric_names = tuple(c.name for _, c in numeric)
        self.all_numeric = len(numeric) == self.width
        longest = max((c.profile.n_bins - 1 for _, c in numeric), default=0)
        # Padding with NaN: `x >= nan` is false, so padded edges never count.
        self.edges = np.full((len(numeric), max(longest, 1)), np.nan)
        for row, (_, c) in enumerate(numeric):
            assert isinstance(c.profile, NumericProfile)
            self.edges[row, : c.profile.edges.size] = c.profile.edges
        # For float32 input, the smallest float32 >= each edge gives exactly the float64 comparison
        # (x >= e iff x >= ceil32(e) for any float32 x), without converting the batch.
        edges32 = self.edges.astype(np.float32)
        self.edges32 = np.where(edges32 < self.edges, np.nextafter(edges32, np.float32(np.inf)), edges32)
        self.offsets = np.array([c.offset for _, c in numeric], np.intp)
        self.missing = np.array([c.offset + c.n_bins for _, c in numeric], np.intp)
        self.categorical = [
            (i, c.name, c.offset, c.profile.categories)
            for i, c in enumerate(columns)
            if isinstance(c.profile, CategoricalProfile)
        ]

    def fill(self, columns: Columns, out: npt.NDArray[np.intp], first: int) -> None:
        """Write each row's slot index for this group's columns into out[:, first:first + width]."""
        rows = out.shape[0]
        block = out[:, first : first + self.width]
        if isinstance(columns, np.ndarray):
            matrix = columns if columns.ndim == 2 else columns.reshape(rows, -1 if columns.ndim > 2 else 1)
            if matrix.shape[1] != self.width:
                raise ValueError(f"drift: a 2-D batch needs {self.width} columns ({', '.join(self.names)}), got {matrix.shape[1]}")
            numeric = matrix if self.all_numeric else matrix[:, self.numeric_pos]
            categorical = [matrix[:, pos] for pos, *_ in self.categorical]
        else:
            numeric = self._stack(columns, rows)
            categorical = [self._column(columns, name, rows) for _, name, *_ in self.categorical]
        if numeric.size:
            if self.all_numeric:
                self._numeric_slots(numeric, block)
            else:
                slots = np.empty(numeric.shape, np.intp)
                self._numeric_slots(numeric, slots)
                block[:, self.numeric_pos] = slots
        for (pos, _, offset, categories), values in zip(self.categorical, categorical, strict=True):
            block[:, pos] = categorical_indices(categories, values) + offset

    def _stack(self, columns: Mapping[str, npt.ArrayLike], rows: int) -> npt.NDArray[Any]:
        """The numeric columns as a (rows, k) matrix; `np.array` of the list beats column_stack 4x."""
        try:
            stacked = np.array([columns[name] for name in self.numeric_names])
        except KeyError as exc:
            raise ValueError(f"drift: batch has no column {exc.args[0]!r}") from None
        except ValueError:  # ragged: let the per-column check name the culprit
            stacked = np.array([self._column(columns, name, rows) for name in self.numeric_names])
        if stacked.size != rows * len(self.numeric_names):
            for name in self.numeric_names:
                self._column(columns, name, rows)
        return stacked.reshape(len(self.numeric_names), rows).T

    def _column(self, columns: Mapping[str, npt.ArrayLike], name: str, rows: int) -> npt.NDArray[Any]:
        try:
            column = np.asarray(columns[name])
        except KeyError:
            raise ValueError(f"drift: batch has no column {name!r}") from None
        if column.size != rows:
            raise ValueError(f"drift: column {name!r} has {column.size} values, expected {rows} (one per row)")
        return column.reshape(rows)

    def _numeric_slots(self, x: npt.NDArray[Any], out: npt.NDArray[np.intp]) -> None:
        """Write the slot of every value of the (rows, numeric columns) matrix `x` into `out`."""
        if x.dtype != np.float32:
            x = x.astype(np.float64, copy=False)
        edges = self.edges32 if x.dtype == np.float32 else self.edges
        rows, width = x.shape
        if rows * width * edges.shape[1] <= _BROADCAST_CELLS:
            out[...] = np.count_nonzero(x[:, :, None] >= edges, axis=2)
            out += self.offsets
        else:
            # One pass per edge, counting into uint8, over row blocks that stay in cache: several
            # times faster than a searchsorted per column.
            step = max(1, _BLOCK_CELLS // width)
            above = np.empty((min(step, rows), width), np.bool_)
            acc = np.empty((min(step, rows), width), np.uint8 if edges.shape[1] < 255 else np.uint16)
            for lo in range(0, rows, step):
                part = x[lo : lo + step]
                n = part.shape[0]
                acc[:n] = 0
                for edge in edges.T:
                    np.greater_equal(part, edge, out=above[:n])
                    acc[:n] += above[:n].view(np.uint8)
                np.add(acc[:n], self.offsets, out=out[lo : lo + n])
        if x.dtype.kind == "f":
            nan = np.isnan(x)
            if nan.any():
                np.copyto(out, np.broadcast_to(self.missing, out.shape), where=nan)


def decision_column(array: npt.ArrayLike) -> npt.NDArray[Any]:
    """One value per row of a model output: its only column, else the arg-max class (pure)."""
    values = np.asarray(array)
    flat = values.reshape(values.shape[0], -1) if values.ndim else values.reshape(1, 1)
    return flat[:, 0] if flat.shape[1] == 1 else np.argmax(flat, axis=1)


def _rows_of(columns: Columns) -> int:
    if isinstance(columns, np.ndarray):
        return int(columns.shape[0]) if columns.ndim else 1
    for value in columns.values():
        return int(np.shape(value)[0]) if np.ndim(value) else 1
    return 0


class DriftTracker:
    """Window counts, PSI and history for one (route, version); see the module docstring.

    Not thread-safe: one event loop (or one thread) feeds it. `features` gives the input columns in
    the order of a 2-D batch; `outputs` the prediction columns (names must differ from the features').
    """

    def __init__(
        self,
        features: Mapping[str, Profile] | Sequence[tuple[str, Profile]],
        policy: WindowPolicy,
        *,
        outputs: Mapping[str, Profile] | Sequence[tuple[str, Profile]] | None = None,
        thresholds: Thresholds | None = None,
        history: int = DEFAULT_HISTORY,
        route: str = "",
        model: str = "",
        version: str = "",
    ) -> None:
        self.route, self.model, self.version = route, model, version
        self.policy = policy
        self.thresholds = thresholds if thresholds is not None else Thresholds()
        inputs = list(features.items() if isinstance(features, Mapping) else features)
        extra = list((outputs.items() if isinstance(outputs, Mapping) else outputs) if outputs else [])
        if not inputs:
            raise ValueError("drift: a tracker needs at least one feature")
        names = [n for n, _ in inputs] + [n for n, _ in extra]
        if len(set(names)) != len(names):
            raise ValueError(f"drift: column names must be distinct across features and outputs: {names}")
        if history < 1:
            raise ValueError(f"drift: history must be >= 1, got {history}")
        columns: list[MonitoredColumn] = []
        offset = 0
        groups: tuple[tuple[Role, list[tuple[str, Profile]]], ...] = (("input", inputs), ("output", extra))
        for role, group in groups:
            for name, profile in group:
                columns.append(MonitoredColumn(name, role, profile, offset, self.thresholds.min_rows_for(profile.n_bins)))
                offset += profile.n_bins + 1
        self.columns: tuple[MonitoredColumn, ...] = tuple(columns)
        # Per column, precomputed for window closes: (offset, bins, expected shares as psi floors them).
        self._closing = tuple((c.offset, c.n_bins, floored_shares(c.profile.expected, self.thresholds.eps)) for c in columns)
        self._by_name = {c.name: c for c in columns}
        self.feature_names = tuple(n for n, _ in inputs)
        self.output_names = tuple(n for n, _ in extra)
        self._size = offset  # slot `offset` itself is the dump for absent outputs
        self._inputs = _Group(columns[: len(inputs)])
        self._outputs = _Group(columns[len(inputs) :]) if extra else None
        self._counts = np.zeros(self._size, np.int64)
        self._rows = 0
        self._start: float | None = None
        self._window = 0
        self._closed = 0
        self._history: deque[ClosedWindow] = deque(maxlen=history)
        self.fingerprint = _fingerprint(self.columns)

    # --- counting (pure functions of the batch) ---

    def locate(self, columns: Columns, outputs: Columns | None = None) -> npt.NDArray[np.intp]:
        """Slot index per (row, column) in the count vector; rows without outputs point at the dump slot."""
        rows = _rows_of(columns)
        slots = np.empty((rows, len(self.columns)), np.intp)
        self._inputs.fill(columns, slots, 0)
        if self._outputs is not None:
            if outputs is None or rows == 0:
                slots[:, self._inputs.width :] = self._size
            else:
                if _rows_of(outputs) != rows:
                    raise ValueError(f"drift: outputs have {_rows_of(outputs)} rows, inputs {rows}")
                self._outputs.fill(outputs, slots, self._inputs.width)
        return slots

    def tally(self, slots: npt.NDArray[np.intp]) -> npt.NDArray[np.int64]:
        """The count vector (all columns' slots) of a slot matrix from `locate`."""
        return np.bincount(slots.reshape(-1), minlength=self._size + 1)[: self._size].astype(np.int64, copy=False)

    def count(self, columns: Columns, outputs: Columns | None = None) -> BinCounts:
        """A batch's counts per column, for a CountSink; changes nothing here."""
        slots = self.locate(columns, outputs)
        return self.split(self.tally(slots), slots.shape[0])

    def split(self, vector: npt.NDArray[np.int64], rows: int) -> BinCounts:
        """A count vector as BinCounts keyed by column name (each k bins + missing)."""
        return BinCounts(rows, {c.name: vector[c.offset : c.offset + c.n_bins + 1] for c in self.columns})

    def join(self, counts: BinCounts) -> npt.NDArray[np.int64]:
        """BinCounts (possibly with short or absent arrays) as one count vector; unknown names raise."""
        vector = np.zeros(self._size, np.int64)
        for name, array in counts.bins.items():
            column = self._by_name.get(name)
            if column is None:
                raise ValueError(f"drift: counts for unknown column {name!r}")
            values = np.asarray(array, np.int64).reshape(-1)
            if values.size > column.n_bins + 1:
                raise ValueError(f"drift: {values.size} counts for column {name!r}, which has {column.n_bins} bins + missing")
            vector[column.offset : column.offset + values.size] = values
        return vector

    # --- windows ---

    def add_batch(self, columns: Columns, outputs: Columns | None = None, *, now: float) -> list[ClosedWindow]:
        """Count a batch into the current window, closing windows as limits are reached; returns those closed."""
        closed = self._roll(now)
        slots = self.locate(columns, outputs)
        rows = slots.shape[0]
        if self._start is None:
            self._start = now
        limit = self.policy.rows
        done = 0
        while done < rows:
            take = rows - done if limit is None else min(rows - done, limit - self._rows)
            self._counts += self.tally(slots[done : done + take])
            self._rows += take
            done += take
            if limit is not None and self._rows >= limit:
                closed.append(self._close(now, self._counts, self._rows, now))
        return closed

    def add_counts(self, counts: BinCounts, *, now: float, window: int | None = None) -> None:
        """Add counts made elsewhere (`count`) to the current window without closing it (merged mode);
        `window` sets the open window's id."""
        if window is not None:
            self._window = window
        if self._start is None:
            self._start = now
        self._counts += self.join(counts)
        self._rows += counts.rows

    def tick(self, now: float) -> ClosedWindow | None:
        """Close the current window if its time is up (local mode); call it periodically."""
        closed = self._roll(now)
        return closed[0] if closed else None

    def close(self, now: float, merged: BinCounts | None = None, *, window: int | None = None) -> ClosedWindow:
        """Close the current window now; PSI from `merged` counts (all replicas) if given, else local ones.

        `window` sets the closed window's id (the shared id in merged mode); the next one follows it.
        """
        if window is not None:
            self._window = window
        if merged is None:
            return self._close(now, self._counts, self._rows, now)
        return self._close(now, self.join(merged), merged.rows, now)

    def _roll(self, now: float) -> list[ClosedWindow]:
        seconds = self.policy.seconds
        if seconds is None or self._start is None or now < self._start + seconds:
            return []
        next_start = self._start + math.floor((now - self._start) / seconds) * seconds
        if not self._rows:  # nothing to report: just move onto the grid
            self._start = next_start
            return []
        return [self._close(self._start + seconds, self._counts, self._rows, next_start)]

    def _close(self, end: float, vector: npt.NDArray[np.int64], rows: int, next_start: float) -> ClosedWindow:
        values = vector.tolist()  # one conversion; each column then works on a plain list slice
        results = tuple(self._evaluate(c, values, closing) for c, closing in zip(self.columns, self._closing, strict=True))
        inputs = [f for f in results if f.role == "input"]
        rated = [f for f in inputs if f.status != "insufficient_data" and f.psi is not None]
        worst = max(rated, key=lambda f: f.psi or 0.0) if rated else None
        status = max((f.status for f in inputs), key=_SEVERITY.__getitem__)
        start = self._start if self._start is not None else end
        window = ClosedWindow(self._window, start, end, rows, results, worst.name if worst else None, status)
        self._history.append(window)
        self._closed += 1
        self._window += 1
        self._counts = np.zeros(self._size, np.int64)
        self._rows = 0
        self._start = next_start
        return window

    def _evaluate(self, column: MonitoredColumn, values: list[int],
                  closing: tuple[int, int, tuple[float, ...]]) -> FeatureWindow:
        offset, bins, expected = closing
        counts = values[offset : offset + bins]
        missing = values[offset + bins]
        n = sum(counts)
        value = psi_of_counts(expected, counts, self.thresholds.eps) if n else None
        if value is None or n < column.min_rows:
            status: Status = "insufficient_data"
        else:
            status = self.thresholds.status(value)
        return FeatureWindow(column.name, column.role, n, tuple(counts), missing, value, status)

    # --- accessors ---

    def current(self) -> CurrentWindow:
        return CurrentWindow(
            self._window,
            self._start,
            self._rows,
            {c.name: tuple(self._counts[c.offset : c.offset + c.n_bins].tolist()) for c in self.columns},
            {c.name: int(self._counts[c.offset + c.n_bins]) for c in self.columns},
        )

    def history(self) -> tuple[ClosedWindow, ...]:
        """Closed windows, oldest first, at most `history` of them."""
        return tuple(self._history)

    def last(self) -> ClosedWindow | None:
        return self._history[-1] if self._history else None

    @property
    def history_size(self) -> int:
        return self._history.maxlen or 0

    @property
    def windows_closed(self) -> int:
        return self._closed

    def __repr__(self) -> str:
        return (
            f"DriftTracker(route={self.route!r}, version={self.version!r}, features={len(self.feature_names)}, "
            f"outputs={len(self.output_names)}, policy={self.policy})"
        )


def _fingerprint(columns: Iterable[MonitoredColumn]) -> str:
    """A short hash of the bins, so counts from different profiles never share storage."""
    spec = [[c.name, c.role, c.profile.to_dict()] for c in columns]
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]
