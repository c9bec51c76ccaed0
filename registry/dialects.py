"""The few SQL spellings that differ between SQLite and PostgreSQL, as small named functions."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection


def dialect_insert(conn: Connection, table: sa.Table) -> Any:
    """The dialect's INSERT, which has on_conflict_do_nothing/do_update on both SQLite and PostgreSQL."""
    return (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(table)


def binary_collation(conn: Connection) -> str:
    """A byte-order collation, so both backends sort names in the same order."""
    return "C" if conn.dialect.name == "postgresql" else "BINARY"


def insert_many_ignoring_duplicates(
    conn: Connection, table: sa.Table, columns: Sequence[str], rows: Sequence[tuple[Any, ...]]
) -> None:
    """INSERT `rows` (tuples in `columns` order), skipping those whose key already exists, in one round
    trip: PostgreSQL takes one array per column through unnest (row-by-row executemany costs a protocol
    exchange per row), SQLite an executemany in the driver. Both bypass SQLAlchemy's per-row bind
    processing, which costs more than the insert itself for a 1000-row log-batch."""
    if not rows:
        return
    quote = conn.dialect.identifier_preparer.quote
    names = ", ".join(quote(c) for c in columns)
    if conn.dialect.name == "postgresql":
        arrays = ", ".join(
            f"%({c})s::{table.c[c].type.compile(dialect=conn.dialect)}[]" for c in columns
        )
        sql = f"INSERT INTO {quote(table.name)} ({names}) SELECT * FROM unnest({arrays}) ON CONFLICT DO NOTHING"
        conn.exec_driver_sql(sql, {c: [row[i] for row in rows] for i, c in enumerate(columns)})
        return
    marks = ", ".join("?" for _ in columns)
    sql = f"INSERT INTO {quote(table.name)} ({names}) VALUES ({marks}) ON CONFLICT DO NOTHING"
    conn.exec_driver_sql(sql, list(rows))
