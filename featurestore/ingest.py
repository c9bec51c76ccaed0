"""Bulk ingestion: a CSV file (or Parquet, when pyarrow is installed) -> validated batches of rows ->
OnlineStore.write, one pipeline per batch. Re-running it on the same file with the same `now_ms`
leaves the store in the same state (writes are whole-row overwrites keyed by entity)."""

from __future__ import annotations

import asyncio
import csv
import importlib
import time
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

from featurestore.codec import ENCODERS, EVENT_TIMESTAMP, entity_token, to_epoch_ms
from featurestore.errors import IngestError
from featurestore.online import OnlineStore
from featurestore.views import FeatureView

Progress = Callable[[int, int | None], None]  # (rows written so far, total rows or an estimate)
Row = dict[str, object]
Batches = Generator[list[Row], None, None]
FileFormat = Literal["csv", "parquet"]

_TRUE: Final = frozenset({"true", "t", "yes", "y", "1"})
_FALSE: Final = frozenset({"false", "f", "no", "n", "0"})


@dataclass(frozen=True, slots=True)
class IngestReport:
    """What an ingest wrote, and how fast (seconds measured with perf_counter)."""

    view: str
    rows: int
    batches: int
    seconds: float

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0


def parse_text(dtype: str, text: str) -> object:
    """A CSV cell as a value of `dtype`; an empty cell is null. Raises ValueError naming the reason."""
    text = text.strip()
    if not text:
        return None
    if dtype == "string":
        return text
    if dtype == "bool":
        low = text.lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise ValueError(f"{text!r} is not a bool (true/false, 1/0, yes/no)")
    if dtype.startswith("int"):
        try:
            return int(text)
        except ValueError:
            number = _float(text, dtype)
            if number.is_integer():
                return int(number)
            raise ValueError(f"{text!r} is not an integer") from None
    return _float(text, dtype)


def _float(text: str, dtype: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a {dtype}") from None


def _columns(view: FeatureView, names: list[str], timestamp_column: str | None, source: str) -> str | None:
    """Check a file's columns against the view; returns the timestamp column to use, if any."""
    present = set(names)
    shown = ", ".join(names) or "none"
    if view.entity not in present:
        raise IngestError(
            f"{source} has no column '{view.entity}' (the entity key of feature view '{view.name}'); columns: {shown}"
        )
    absent = [f.name for f in view.features if f.name not in present]
    if absent:
        raise IngestError(f"{source} has no column for feature(s) {', '.join(absent)} of feature view '{view.name}'")
    if timestamp_column is not None and timestamp_column not in present:
        raise IngestError(f"{source} has no timestamp column '{timestamp_column}'; columns: {shown}")
    if timestamp_column is None and EVENT_TIMESTAMP in present:
        return EVENT_TIMESTAMP
    return timestamp_column


def iter_csv_batches(
    lines: Iterable[str],
    view: FeatureView,
    *,
    batch_size: int = 1000,
    timestamp_column: str | None = None,
    source: str = "CSV",
) -> Iterator[list[Row]]:
    """Parse CSV text (header first) into batches of rows for OnlineStore.write. A column named
    `event_timestamp` is the event time unless `timestamp_column` names another; columns the view
    doesn't know are ignored. Raises IngestError naming the line and the column."""
    reader = csv.reader(lines)
    header = [h.strip() for h in next(reader, [])]
    ts_column = _columns(view, header, timestamp_column, source)
    position = {name: i for i, name in enumerate(header)}
    entity_at = position[view.entity]
    spec = [(f.name, f.dtype, position[f.name], ENCODERS[f.dtype]) for f in view.features]
    ts_at = position[ts_column] if ts_column is not None else None
    batch: list[Row] = []
    for cells in reader:
        if not cells or (len(cells) == 1 and not cells[0].strip()):
            continue  # blank line
        where = f"{source} line {reader.line_num}"
        if len(cells) != len(header):
            raise IngestError(f"{where}: expected {len(header)} fields, got {len(cells)}")
        entity = cells[entity_at].strip()
        if not entity:
            raise IngestError(f"{where}, column '{view.entity}': the entity key is empty")
        row: Row = {view.entity: entity}
        for name, dtype, at, encode in spec:
            try:
                value = row[name] = parse_text(dtype, cells[at])
                encode(value)  # range checks (int32, float32) with the store's own encoder
            except ValueError as exc:
                raise IngestError(f"{where}, column '{name}' ({dtype}): {exc}") from None
        if ts_at is not None and cells[ts_at].strip():
            try:
                row[EVENT_TIMESTAMP] = to_epoch_ms(cells[ts_at])
            except ValueError as exc:
                raise IngestError(f"{where}, column '{ts_column}': {exc}") from None
        batch.append(row)
        if len(batch) >= batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def _csv_batches(path: Path, view: FeatureView, batch_size: int, timestamp_column: str | None) -> Batches:
    with path.open(newline="", encoding="utf-8-sig") as f:
        yield from iter_csv_batches(f, view, batch_size=batch_size, timestamp_column=timestamp_column, source=path.name)


def _parquet_batches(
    pq: Any, path: Path, view: FeatureView, batch_size: int, timestamp_column: str | None
) -> Batches:
    parquet = pq.ParquetFile(path)
    ts_column = _columns(view, list(parquet.schema_arrow.names), timestamp_column, path.name)
    spec = [(f.name, f.dtype, ENCODERS[f.dtype]) for f in view.features]
    wanted = [view.entity, *(f.name for f in view.features), *([ts_column] if ts_column else [])]
    number = 0
    for record_batch in parquet.iter_batches(batch_size=batch_size, columns=wanted):
        batch: list[Row] = []
        for raw in record_batch.to_pylist():
            number += 1
            where = f"{path.name} row {number}"
            try:
                entity_token(raw[view.entity])
            except ValueError as exc:
                raise IngestError(f"{where}, column '{view.entity}': {exc}") from None
            row: Row = {view.entity: raw[view.entity]}
            for name, dtype, encode in spec:
                try:
                    encode(raw[name])
                except ValueError as exc:
                    raise IngestError(f"{where}, column '{name}' ({dtype}): {exc}") from None
                row[name] = raw[name]
            if ts_column is not None and raw[ts_column] is not None:
                try:
                    row[EVENT_TIMESTAMP] = to_epoch_ms(raw[ts_column])
                except ValueError as exc:
                    raise IngestError(f"{where}, column '{ts_column}': {exc}") from None
            batch.append(row)
        if batch:
            yield batch


def _format_of(path: Path, file_format: FileFormat | None) -> FileFormat:
    if file_format is not None:
        return file_format
    return "parquet" if path.suffix.lower() in (".parquet", ".pq") else "csv"


def _count_csv_rows(path: Path) -> int:
    """Data rows in a CSV, counted as newlines minus the header (an estimate when quoted cells span lines)."""
    count, last = 0, b"\n"
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            count += chunk.count(b"\n")
            last = chunk[-1:]
    return max(0, count - 1 + (last != b"\n"))


def open_batches(
    path: str | Path,
    view: FeatureView,
    *,
    batch_size: int = 1000,
    timestamp_column: str | None = None,
    file_format: FileFormat | None = None,
) -> tuple[Batches, int | None]:
    """The file's batches and its row count (estimated for CSV). Parquet needs pyarrow, imported
    here and only here; without it this raises IngestError saying so."""
    path = Path(path)
    if not path.is_file():
        raise IngestError(f"{path}: no such file")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if _format_of(path, file_format) == "csv":
        return _csv_batches(path, view, batch_size, timestamp_column), _count_csv_rows(path)
    try:
        pq = importlib.import_module("pyarrow.parquet")
    except ImportError:
        raise IngestError(f"{path.name}: reading Parquet needs pyarrow (pip install pyarrow); CSV works without it") from None
    total = int(pq.ParquetFile(path).metadata.num_rows)
    return _parquet_batches(pq, path, view, batch_size, timestamp_column), total


async def ingest_file(
    store: OnlineStore,
    view: FeatureView,
    path: str | Path,
    *,
    now_ms: int,
    batch_size: int = 1000,
    timestamp_column: str | None = None,
    progress: Progress | None = None,
    file_format: FileFormat | None = None,
) -> IngestReport:
    """Write every row of the file to the view, one store.write (one pipeline) per batch; rows
    without an event time get `now_ms`. Parsing runs in a worker thread so the event loop stays
    free. Calls `progress(rows_written, total)` after each batch. Raises IngestError (before
    anything of the failing batch is written) or OnlineStoreUnavailable."""
    started = time.perf_counter()
    batches, total = await asyncio.to_thread(
        open_batches, path, view, batch_size=batch_size, timestamp_column=timestamp_column, file_format=file_format
    )
    rows = count = 0
    try:
        while (batch := await asyncio.to_thread(next, batches, None)) is not None:
            rows += await store.write(view, batch, now_ms)
            count += 1
            if progress is not None:
                progress(rows, total)
    finally:
        batches.close()
    return IngestReport(view.name, rows, count, time.perf_counter() - started)
