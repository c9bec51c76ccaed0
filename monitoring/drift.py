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

import functools
import hashlib
import json
import math
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from monitoring.psi import (
    CategoricalProfile,
    NumericProfile,
    Profile,
    SegmentedPsi,
    Status,
    Thresholds,
    categorical_indices,
)

Role = Literal["input", "output"]


Columns = Mapping[str, npt.ArrayLike] | npt.NDArray[Any]
"""A batch: named 1-D columns (or [rows, 1]), or one 2-D array whose columns follow the tracker's order."""

_bin_batch: Callable[..., None] | None
_bin_batches: Callable[..., tuple[int, int, int]] | None
try:  # the one-pass binning kernel (monitoring/_binning.c); absent where it could not be compiled
    from monitoring import _binning

    _bin_batch = _binning.bin_batch
    _bin_batches = _binning.bin_batches
    _KERNEL_WIDTH = _binning.edge_width()
except ImportError:  # pragma: no cover - depends on the build
    _bin_batch = _bin_batches = None
    _KERNEL_WIDTH = 0

DEFAULT_HISTORY = 32
_BROADCAST_CELLS = 1 << 12  # rows * numeric columns * edges up to which one 3-D comparison beats a loop over edges
_BLOCK_CELLS = 1 << 20  # values per block of the edge loop (bounds its temporaries: 1 MB of flags)
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


@dataclass(frozen=True, slots=True)
class Layout:
    """Where each column's k bins and its missing slot sit in a tracker's count vector:
    (name, offset, k + 1) per column, in the tracker's order; `size` is the vector's length."""

    columns: tuple[tuple[str, int, int], ...]
    size: int


class BinCounts:
    """Counts for a batch or a window: `rows`, and per column name k bin counts then the missing count.

    A tracker's counts (`DriftTracker.split`) hold one count vector in the tracker's `Layout`, and
    `bins` are views of it made on first use: sinks that know the layout merge whole vectors, one
    numpy add per window instead of one per column. Counts built from a mapping (a sink that stores
    fields) have no vector; their arrays may be shorter than k+1 (trailing zero bins omitted), and
    trackers pad them with zeros.
    """

    __slots__ = ("_bins", "layout", "rows", "vector")

    def __init__(
        self,
        rows: int,
        bins: Mapping[str, npt.NDArray[np.int64]] | None = None,
        *,
        vector: npt.NDArray[np.int64] | None = None,
        layout: Layout | None = None,
    ) -> None:
        if (vector is None) == (bins is None) or (vector is None) != (layout is None):
            raise ValueError("bin counts: give either bins, or a vector with its layout")
        if vector is not None and layout is not None and vector.shape != (layout.size,):
            raise ValueError(f"bin counts: a vector of {vector.size} for a layout of {layout.size}")
        self.rows = rows
        self.vector = vector
        self.layout = layout
        self._bins = bins

    @property
    def bins(self) -> Mapping[str, npt.NDArray[np.int64]]:
        if self._bins is None:
            assert self.vector is not None and self.layout is not None
            vector = self.vector
            self._bins = {name: vector[offset : offset + width] for name, offset, width in self.layout.columns}
        return self._bins

    def __repr__(self) -> str:
        return f"BinCounts(rows={self.rows}, bins={dict(self.bins)!r})"


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


Rated = tuple[tuple[FeatureWindow, ...], str | None, Status]  # a closed window's features, worst and status


class ClosedWindow:
    """A closed window: its id, span (caller's clock), rows, per-column results and the worst input feature.

    Built with `rate`, which works the results out (PSI included) on first use: a scrape,
    /monitoring/drift, a rollout's guard. At tens of windows a second most windows are never
    read before the bounded history drops them, and building a result per column was most of what
    closing a window cost on the serving loop."""

    __slots__ = ("_rate", "_rated", "end", "rows", "start", "window")

    def __init__(self, window: int, start: float, end: float, rows: int, rate: Callable[[], Rated]) -> None:
        self.window, self.start, self.end, self.rows = window, start, end, rows
        self._rate: Callable[[], Rated] | None = rate
        self._rated: Rated | None = None

    def _results(self) -> Rated:
        rated = self._rated
        if rated is None:
            assert self._rate is not None
            rated = self._rated = self._rate()
            self._rate = None
        return rated

    @property
    def features(self) -> tuple[FeatureWindow, ...]:
        return self._results()[0]

    @property
    def worst(self) -> str | None:
        return self._results()[1]

    @property
    def status(self) -> Status:
        return self._results()[2]

    def _key(self) -> tuple[Any, ...]:
        return (self.window, self.start, self.end, self.rows, *self._results())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ClosedWindow) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return (f"ClosedWindow(window={self.window}, start={self.start}, end={self.end}, rows={self.rows}, "
                f"status={self.status!r}, worst={self.worst!r})")

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

    def __init__(self, columns: Sequence[MonitoredColumn], slot_dtype: type[np.unsignedinteger[Any]] | type[np.intp]) -> None:
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
        self.edges32 = _ceil32(self.edges)
        self.offsets = np.array([c.offset for _, c in numeric], slot_dtype)
        self.missing = np.array([c.offset + c.n_bins for _, c in numeric], slot_dtype)
        self.categorical = [
            (i, c.name, c.offset, c.profile.categories)
            for i, c in enumerate(columns)
            if isinstance(c.profile, CategoricalProfile)
        ]

    def fill(self, columns: Columns, out: npt.NDArray[np.integer[Any]], first: int) -> None:
        """Write each row's slot index for this group's columns into out[first:first + width, :]
        (column-major: one row of `out` per monitored column)."""
        rows = out.shape[1]
        block = out[first : first + self.width]
        if isinstance(columns, np.ndarray):
            matrix = columns if columns.ndim == 2 else columns.reshape(rows, -1 if columns.ndim > 2 else 1)
            if matrix.shape[1] != self.width:
                raise ValueError(f"drift: a 2-D batch needs {self.width} columns ({', '.join(self.names)}), got {matrix.shape[1]}")
            numeric = np.ascontiguousarray((matrix if self.all_numeric else matrix[:, self.numeric_pos]).T)
            categorical = [matrix[:, pos] for pos, *_ in self.categorical]
        else:
            numeric = self._stack(columns, rows)
            categorical = [self._column(columns, name, rows) for _, name, *_ in self.categorical]
        if numeric.size:
            if self.all_numeric:
                self._numeric_slots(numeric, block)
            else:
                slots = np.empty(numeric.shape, out.dtype)
                self._numeric_slots(numeric, slots)
                block[self.numeric_pos] = slots
        for (pos, _, offset, categories), values in zip(self.categorical, categorical, strict=True):
            block[pos] = categorical_indices(categories, values) + offset

    def _stack(self, columns: Mapping[str, npt.ArrayLike], rows: int) -> npt.NDArray[Any]:
        """The numeric columns as a (k, rows) matrix; `np.array` of the list beats column_stack 4x."""
        try:
            stacked = np.array([columns[name] for name in self.numeric_names])
        except KeyError as exc:
            raise ValueError(f"drift: batch has no column {exc.args[0]!r}") from None
        except ValueError:  # ragged: let the per-column check name the culprit
            stacked = np.array([self._column(columns, name, rows) for name in self.numeric_names])
        if stacked.size != rows * len(self.numeric_names):
            for name in self.numeric_names:
                self._column(columns, name, rows)
        return stacked.reshape(len(self.numeric_names), rows)

    def _column(self, columns: Mapping[str, npt.ArrayLike], name: str, rows: int) -> npt.NDArray[Any]:
        try:
            column = np.asarray(columns[name])
        except KeyError:
            raise ValueError(f"drift: batch has no column {name!r}") from None
        if column.size != rows:
            raise ValueError(f"drift: column {name!r} has {column.size} values, expected {rows} (one per row)")
        return column.reshape(rows)

    def _numeric_slots(self, x: npt.NDArray[Any], out: npt.NDArray[np.integer[Any]]) -> None:
        """Write the slot of every value of the (numeric columns, rows) matrix `x` into `out`."""
        if x.dtype != np.float32:
            x = x.astype(np.float64, copy=False)
        edges = self.edges32 if x.dtype == np.float32 else self.edges
        width, rows = x.shape
        if rows * width * edges.shape[1] <= _BROADCAST_CELLS:
            out[...] = np.count_nonzero(x[:, :, None] >= edges[:, None, :], axis=2)
            out += self.offsets[:, None]
        else:
            # One pass per edge over whole rows of `x` (a column each, contiguous) against that
            # column's edge: long SIMD runs, a few times faster than a searchsorted per column or
            # comparing row-major batches (inner loops as short as the row). Blocks bound the
            # temporaries for very large flushes.
            step = max(1, _BLOCK_CELLS // width)
            counter = np.uint8 if edges.shape[1] < 255 else np.uint16
            for lo in range(0, rows, step):
                part = x[:, lo : lo + step] if rows > step else x
                above = np.empty(part.shape, np.bool_)
                flags = above.view(np.uint8)
                acc = np.zeros(part.shape, counter)
                for j in range(edges.shape[1]):
                    np.greater_equal(part, edges[:, j : j + 1], out=above)
                    acc += flags
                np.add(acc, self.offsets[:, None], out=out[:, lo : lo + step])
        if x.dtype.kind == "f":
            nan = np.isnan(x)
            if nan.any():
                np.copyto(out, self.missing[:, None], where=nan)


def _ceil32(edges: npt.NDArray[np.float64]) -> npt.NDArray[np.float32]:
    """The smallest float32 >= each edge: for float32 x, x >= e exactly when x >= ceil32(e), so float32
    batches are compared without converting them (NaN and infinities map to themselves)."""
    rounded = edges.astype(np.float32)
    return np.where(rounded < edges, np.nextafter(rounded, np.float32(np.inf)), rounded)


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
        self.layout = Layout(tuple((c.name, c.offset, c.n_bins + 1) for c in columns), offset)
        # For window closes: every column's bins (missing slots left out), rated in one pass.
        self._bin_slots = np.concatenate([np.arange(c.offset, c.offset + c.n_bins) for c in columns])
        self._rate = SegmentedPsi([c.profile.expected for c in columns], self.thresholds.eps)
        self._by_name = {c.name: c for c in columns}
        self.feature_names = tuple(n for n, _ in inputs)
        self.output_names = tuple(n for n, _ in extra)
        self._size = offset  # slot `offset` itself is the dump for absent outputs
        # Slot matrices are kept between binning and a flush: two bytes per cell when the vector allows.
        self.slot_dtype: type[np.unsignedinteger[Any]] | type[np.intp] = np.uint16 if offset < 0xFFFF else np.intp
        self._inputs = _Group(columns[: len(inputs)], self.slot_dtype)
        self._outputs = _Group(columns[len(inputs) :], self.slot_dtype) if extra else None
        # The compiled kernel's plan, when it can bin every column (all numeric with fewer edges than its
        # fixed width, slots that fit uint16).
        self.compiled = _bin_batch is not None and self.slot_dtype is np.uint16 and all(
            isinstance(c.profile, NumericProfile) and c.n_bins <= _KERNEL_WIDTH for c in columns)
        edges = np.full((len(columns), _KERNEL_WIDTH), np.inf)
        for i, c in enumerate(columns):
            if isinstance(c.profile, NumericProfile) and c.n_bins <= _KERNEL_WIDTH:
                edges[i, : c.profile.edges.size] = c.profile.edges
        self._kernel_plan = np.array([(c.n_bins - 1, c.offset, c.offset + c.n_bins) for c in columns], np.int32).tobytes()
        self._kernel_edges = edges.tobytes()
        self._kernel_edges32 = _ceil32(edges).tobytes()
        self._counts = np.zeros(self._size, np.int64)
        self._rows = 0
        self._start: float | None = None
        self._window = 0
        self._closed = 0
        self._history: deque[ClosedWindow] = deque(maxlen=history)
        self.fingerprint = _fingerprint(self.columns)

    # --- counting (pure functions of the batch) ---

    def locate(self, columns: Columns, outputs: Columns | None = None) -> npt.NDArray[np.integer[Any]]:
        """Slot index per (column, row) in the count vector (column-major: `slots[:, a:b]` are rows a..b);
        rows without outputs point at the dump slot."""
        rows = _rows_of(columns)
        slots = np.empty((len(self.columns), rows), self.slot_dtype)
        self._inputs.fill(columns, slots, 0)
        if self._outputs is not None:
            if outputs is None or rows == 0:
                slots[self._inputs.width :] = self._size
            else:
                if _rows_of(outputs) != rows:
                    raise ValueError(f"drift: outputs have {_rows_of(outputs)} rows, inputs {rows}")
                self._outputs.fill(outputs, slots, self._inputs.width)
        return slots

    def bin_batch(self, matrix: Any, outputs: tuple[Any, ...], counts: Any, slots: Any, row: int) -> None:
        """With the compiled kernel (`compiled`): count a batch, the float32/float64 (rows, features)
        `matrix` and one float array of one value per row for each output, into the int64 buffer
        `counts`, and write each row's slots (as `locate` gives them) into rows row.. of the uint16
        (capacity, columns) buffer `slots`. Raises TypeError, ValueError or BufferError for a batch it
        cannot take, having changed nothing."""
        assert _bin_batch is not None
        _bin_batch(matrix, outputs, self._kernel_plan, self._kernel_edges, self._kernel_edges32, counts, slots, row)

    def tap(self, input_index: int, output_indices: tuple[int, ...], chunk_rows: int, max_pending_rows: int,
            fallback: Callable[[Sequence[Any], Sequence[Any]], object]) -> _binning.Tap:
        """With the compiled kernel (`compiled`): a batcher tap, tap(inputs, outputs), that bins the
        batch's inputs[input_index] matrix and outputs[i] for i in output_indices (one value per row)
        in one C call into chunks of `chunk_rows`, for `take()`; `fallback` gets every batch from the
        first one it cannot take."""
        assert _bin_batch is not None
        return _binning.Tap(self._kernel_plan, self._kernel_edges, self._kernel_edges32, self._size, input_index,
                            output_indices, chunk_rows, max_pending_rows, fallback)

    def bin_batches(self, batches: list[tuple[Any, ...]], start: int, counts: Any, slots: Any,
                    row: int) -> tuple[int, int, int]:
        """`bin_batch` over `batches[start:]`, (matrix, outputs, ...) tuples, in one call, each batch's slots after the last's from slot row
        `row`. Returns (index stopped at, rows binned, why): 0 at the end, 1 at a batch the slots have no
        room for, 2 at a batch the kernel does not take; the batches before the index are counted."""
        assert _bin_batches is not None
        return _bin_batches(batches, start, self._kernel_plan, self._kernel_edges, self._kernel_edges32, counts, slots, row)

    def tally(self, slots: npt.NDArray[np.integer[Any]]) -> npt.NDArray[np.int64]:
        """The count vector (all columns' slots) of a slot matrix from `locate`."""
        return np.bincount(slots.reshape(-1), minlength=self._size + 1)[: self._size].astype(np.int64, copy=False)

    def count(self, columns: Columns, outputs: Columns | None = None) -> BinCounts:
        """A batch's counts per column, for a CountSink; changes nothing here."""
        slots = self.locate(columns, outputs)
        return self.split(self.tally(slots), slots.shape[1])

    def split(self, vector: npt.NDArray[np.int64], rows: int) -> BinCounts:
        """A count vector as BinCounts in this tracker's layout (each column k bins + missing)."""
        return BinCounts(rows, vector=vector, layout=self.layout)

    def join(self, counts: BinCounts) -> npt.NDArray[np.int64]:
        """BinCounts (possibly with short or absent arrays) as one count vector; unknown names raise.
        Counts in this tracker's layout give their own vector (not a copy)."""
        if counts.vector is not None and (counts.layout is self.layout or counts.layout == self.layout):
            return counts.vector
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
        rows = slots.shape[1]
        if self._start is None:
            self._start = now
        limit = self.policy.rows
        done = 0
        while done < rows:
            take = rows - done if limit is None else min(rows - done, limit - self._rows)
            self._counts += self.tally(slots[:, done : done + take])
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
        start = self._start if self._start is not None else end
        # The window's own copy of the counts: a merged vector may be the sink's, which a late flush adds to.
        window = ClosedWindow(self._window, start, end, rows, functools.partial(self._results, vector.copy()))
        self._history.append(window)
        self._closed += 1
        self._window += 1
        self._counts = np.zeros(self._size, np.int64)
        self._rows = 0
        self._start = next_start
        return window

    def _results(self, vector: npt.NDArray[np.int64]) -> Rated:
        """PSI and a status per column of a closed window's count vector, its worst input and status."""
        values, totals = self._rate(vector[self._bin_slots])
        counts = vector.tolist()  # one conversion; each column then slices a plain list
        status_of = self.thresholds.status
        results = tuple(
            FeatureWindow(
                c.name, c.role, n, tuple(counts[c.offset : c.offset + c.n_bins]), counts[c.offset + c.n_bins],
                None if n == 0 else value,
                "insufficient_data" if n < c.min_rows or n == 0 else status_of(value),
            )
            for c, value, n in zip(self.columns, values.tolist(), totals.tolist(), strict=True)
        )
        inputs = [f for f in results if f.role == "input"]
        rated = [f for f in inputs if f.status != "insufficient_data" and f.psi is not None]
        worst = max(rated, key=lambda f: f.psi or 0.0) if rated else None
        status = max((f.status for f in inputs), key=_SEVERITY.__getitem__)
        return results, worst.name if worst else None, status

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
