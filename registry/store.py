"""RegistryStore: models, versions, stages, aliases and route policies over one SQLAlchemy engine,
SQLite (WAL) or PostgreSQL; every mutation bumps the change counter that followers poll.
"""

from __future__ import annotations

import json
import re
import sqlite3
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event, exc
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, Connection, Engine

from registry import routes
from registry.entities import STAGES, AuditEntry, ModelVersion, RegisteredModel, RouteRecord, Signature, Stage
from registry.errors import (
    InvalidParameterValue,
    ResourceAlreadyExists,
    ResourceDoesNotExist,
    StoreUnavailable,
)
from registry.schema import (
    CHANGES_ROW_ID,
    NAME_LENGTH,
    RUN_ID_LENGTH,
    TAG_KEY_LENGTH,
    metadata,
    model_aliases,
    model_version_tags,
    model_versions,
    registered_model_tags,
    registered_models,
    registry_changes,
)

SQLITE_BUSY_TIMEOUT_MS = 10_000
POSTGRES_CONNECT_TIMEOUT_S = 5
CHAMPION = "champion"
LATEST = "latest"  # a version ref meaning the newest version; reserved as an alias name, as in MLflow
TAG_VALUE_LENGTH = 5000

_NAME_RE = re.compile(r"[A-Za-z0-9_.\-]+")
_ALIAS_RE = re.compile(r"[A-Za-z0-9_\-]+")
_VERSION_LIKE_ALIAS_RE = re.compile(r"[vV]?\d+")  # MLflow reserves these so "v3" and "3" stay version refs
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_STAGE_BY_LOWER: dict[str, Stage] = {s.lower(): s for s in STAGES}
# Stages that may be asked for by name in a version ref; "None" would read as "no version".
_REF_STAGES: tuple[Stage, ...] = ("Production", "Staging", "Archived")
_CREATE_RETRIES = 5
_SQLITE_IMMEDIATE = "registry_sqlite_immediate"
_VERSION_RETRIES = 5


# --- dialect specifics -------------------------------------------------------------------------


def normalise_url(url: str) -> str:
    """Spell PostgreSQL URLs with the psycopg 3 driver; other URLs pass through unchanged."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def _sqlite_enable_wal(cursor: Any) -> None:
    """WAL lets readers and the writer proceed together. The mode is stored in the file, so only the
    first connection switches it; that switch needs the file to itself and reports "database is
    locked" at once instead of waiting out busy_timeout, hence the short retry loop."""
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            if cursor.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    # The sqlite3 module's own transaction handling only BEGINs before DML, so reads would run
    # outside the transaction; take control of BEGIN instead (SQLAlchemy docs, "sqlite_transactions").
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        _sqlite_enable_wal(cursor)
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")  # durable across process crashes in WAL mode
    finally:
        cursor.close()


def _sqlite_on_begin(conn: Connection) -> None:
    # Schema creation reads the catalog before it writes; IMMEDIATE takes the write lock first, so a
    # process starting alongside waits out busy_timeout instead of failing on a stale read snapshot.
    # Mutations need no such option: their first statement is already a write (_bump_counter).
    immediate = conn.get_execution_options().get(_SQLITE_IMMEDIATE, False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def _create_sqlite_engine(url: URL) -> Engine:
    database = url.database or ""
    if database and database != ":memory:" and not database.startswith("file:"):
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(url)
    event.listen(engine, "connect", _sqlite_on_connect)
    event.listen(engine, "begin", _sqlite_on_begin)
    return engine


def _create_postgres_engine(url: URL) -> Engine:
    connect_args: dict[str, Any] = {}
    if "connect_timeout" not in url.query:
        connect_args["connect_timeout"] = POSTGRES_CONNECT_TIMEOUT_S  # an unreachable host fails fast
    # Mutations serialise on the change-counter row; under READ COMMITTED each later statement then
    # sees the writes of the transaction it waited for, which REPEATABLE READ would turn into errors.
    return sa.create_engine(url, connect_args=connect_args, isolation_level="READ COMMITTED")


def _insert(conn: Connection, table: sa.Table) -> Any:
    """The dialect's INSERT, which has on_conflict_do_nothing/do_update on both SQLite and PostgreSQL."""
    return (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(table)


def _binary_collation(conn: Connection) -> str:
    """A byte-order collation, so both backends list names in the same order."""
    return "C" if conn.dialect.name == "postgresql" else "BINARY"


_PG_DUPLICATE_SQLSTATES = frozenset({"42P07", "42710", "23505"})  # duplicate table / object / catalog key


def _is_create_race(error: exc.DBAPIError) -> bool:
    """Another process created the same table or index between our existence check and CREATE."""
    if getattr(error.orig, "sqlstate", None) in _PG_DUPLICATE_SQLSTATES:
        return True
    return isinstance(error, exc.OperationalError) and "already exists" in str(error.orig)


def _first_line(error: exc.DBAPIError) -> str:
    """The driver's message without SQLAlchemy's statement dump and background link."""
    lines = str(error.orig).strip().splitlines()
    return lines[0] if lines else type(error.orig).__name__


# --- validation --------------------------------------------------------------------------------


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _check_name(name: str, noun: str = "registered model") -> None:
    if not name:
        raise InvalidParameterValue(f"{noun.capitalize()} name cannot be empty")
    if len(name) > NAME_LENGTH:
        raise InvalidParameterValue(f"{noun.capitalize()} name is longer than {NAME_LENGTH} characters")
    if not _NAME_RE.fullmatch(name):
        raise InvalidParameterValue(
            f"Invalid {noun} name {name!r}: use only letters, digits, '_', '.' and '-'"
        )


def _check_alias(alias: str) -> None:
    if not alias:
        raise InvalidParameterValue("Alias name cannot be empty")
    if len(alias) > NAME_LENGTH:
        raise InvalidParameterValue(f"Alias name is longer than {NAME_LENGTH} characters")
    if not _ALIAS_RE.fullmatch(alias):
        raise InvalidParameterValue(f"Invalid alias name {alias!r}: use only letters, digits, '_' and '-'")
    if _VERSION_LIKE_ALIAS_RE.fullmatch(alias):
        raise InvalidParameterValue(f"Invalid alias name {alias!r}: it reads as a version number")
    if alias.lower() == LATEST:
        raise InvalidParameterValue(f"Alias name {alias!r} is reserved")


def _check_text(label: str, value: str, limit: int | None = None) -> None:
    # PostgreSQL text cannot hold NUL while SQLite can; refusing it keeps both backends alike.
    if "\x00" in value:
        raise InvalidParameterValue(f"{label} contains a NUL character")
    if limit is not None and len(value) > limit:
        raise InvalidParameterValue(f"{label} is longer than {limit} characters")


def _check_tags(tags: Mapping[str, str] | None) -> dict[str, str]:
    checked = dict(tags or {})
    for key, value in checked.items():
        if not key:
            raise InvalidParameterValue("Tag key cannot be empty")
        _check_text(f"Tag key {key!r}", key, TAG_KEY_LENGTH)
        _check_text(f"Tag {key!r} value", value, TAG_VALUE_LENGTH)
    return checked


def _normalise_stage(stage: str) -> Stage:
    try:
        return _STAGE_BY_LOWER[stage.lower()]
    except KeyError:
        raise InvalidParameterValue(f"Invalid stage {stage!r}: expected one of {', '.join(STAGES)}") from None


# --- rows -> entities ------------------------------------------------------------------------


def _model_row(conn: Connection, name: str) -> sa.Row[Any]:
    row = conn.execute(sa.select(registered_models).where(registered_models.c.name == name)).first()
    if row is None:
        raise ResourceDoesNotExist(f"Registered model {name!r} not found")
    return row


def _model_exists(conn: Connection, name: str) -> bool:
    query = sa.select(registered_models.c.name).where(registered_models.c.name == name)
    return conn.execute(query).first() is not None


def _model_tags(conn: Connection, name: str | None = None) -> dict[str, dict[str, str]]:
    query = sa.select(registered_model_tags)
    if name is not None:
        query = query.where(registered_model_tags.c.name == name)
    tags: dict[str, dict[str, str]] = {}
    for row in conn.execute(query):
        tags.setdefault(row.name, {})[row.key] = row.value
    return tags


def _to_model(row: sa.Row[Any], tags: dict[str, str]) -> RegisteredModel:
    return RegisteredModel(
        name=row.name, description=row.description, created_ms=row.created_ms, updated_ms=row.updated_ms, tags=tags
    )


def _load_versions(
    conn: Connection, name: str, *where: sa.ColumnElement[bool], newest_only: bool = False
) -> list[ModelVersion]:
    """Versions of `name` matching `where`, ascending (or only the newest), with their tags and aliases."""
    query = sa.select(model_versions).where(model_versions.c.name == name, *where)
    if newest_only:
        query = query.order_by(model_versions.c.version.desc()).limit(1)
    else:
        query = query.order_by(model_versions.c.version)
    rows = conn.execute(query).all()
    if not rows:
        return []
    numbers = [row.version for row in rows]
    tags: dict[int, dict[str, str]] = {}
    tag_query = sa.select(model_version_tags).where(
        model_version_tags.c.name == name, model_version_tags.c.version.in_(numbers)
    )
    for tag in conn.execute(tag_query):
        tags.setdefault(tag.version, {})[tag.key] = tag.value
    aliases: dict[int, list[str]] = {}
    alias_query = (
        sa.select(model_aliases.c.version, model_aliases.c.alias)
        .where(model_aliases.c.name == name, model_aliases.c.version.in_(numbers))
        .order_by(model_aliases.c.alias.collate(_binary_collation(conn)))
    )
    for alias in conn.execute(alias_query):
        aliases.setdefault(alias.version, []).append(alias.alias)
    return [
        ModelVersion(
            name=row.name,
            version=row.version,
            artifact_sha256=row.artifact_sha256,
            signature=Signature.from_dict(json.loads(row.signature)),
            stage=_normalise_stage(row.stage),
            created_ms=row.created_ms,
            updated_ms=row.updated_ms,
            source=row.source,
            run_id=row.run_id,
            description=row.description,
            tags=tags.get(row.version, {}),
            aliases=tuple(aliases.get(row.version, ())),
        )
        for row in rows
    ]


def _one_version(conn: Connection, name: str, version: int) -> ModelVersion:
    found = _load_versions(conn, name, model_versions.c.version == version)
    if not found:
        _model_row(conn, name)  # a missing model gets the more useful message
        raise ResourceDoesNotExist(f"Model version {version} of {name!r} not found")
    return found[0]


def _newest(conn: Connection, name: str, *where: sa.ColumnElement[bool]) -> ModelVersion | None:
    found = _load_versions(conn, name, *where, newest_only=True)
    return found[0] if found else None


def _by_alias(conn: Connection, name: str, alias: str) -> ModelVersion | None:
    number = sa.select(model_aliases.c.version).where(model_aliases.c.name == name, model_aliases.c.alias == alias)
    found = _load_versions(conn, name, model_versions.c.version == number.scalar_subquery())
    return found[0] if found else None


def _bump_counter(conn: Connection) -> None:
    # First statement of every mutation: it takes the write lock (SQLite) or the row lock
    # (PostgreSQL) up front, so mutations run one at a time and version numbers cannot collide.
    conn.execute(
        sa.update(registry_changes)
        .where(registry_changes.c.id == CHANGES_ROW_ID)
        .values(counter=registry_changes.c.counter + 1)
    )


def _insert_model(conn: Connection, name: str, description: str, tags: dict[str, str]) -> RegisteredModel:
    if _model_exists(conn, name):
        raise ResourceAlreadyExists(f"Registered model {name!r} already exists")
    now = _now_ms()
    conn.execute(
        sa.insert(registered_models).values(name=name, description=description, created_ms=now, updated_ms=now)
    )
    if tags:
        conn.execute(sa.insert(registered_model_tags), [{"name": name, "key": k, "value": v} for k, v in tags.items()])
    return RegisteredModel(name=name, description=description, created_ms=now, updated_ms=now, tags=tags)


def _insert_version(conn: Connection, draft: ModelVersion, create_model: bool) -> ModelVersion:
    """Insert `draft` as version max+1 of its model, stamped now."""
    _bump_counter(conn)
    if not _model_exists(conn, draft.name):
        if not create_model:
            raise ResourceDoesNotExist(f"Registered model {draft.name!r} not found")
        _insert_model(conn, draft.name, "", {})
    latest = conn.execute(
        sa.select(sa.func.max(model_versions.c.version)).where(model_versions.c.name == draft.name)
    ).scalar()
    now = _now_ms()
    mv = replace(draft, version=(latest or 0) + 1, created_ms=now, updated_ms=now)
    conn.execute(
        sa.insert(model_versions).values(
            name=mv.name,
            version=mv.version,
            artifact_sha256=mv.artifact_sha256,
            signature=json.dumps(mv.signature.to_dict(), separators=(",", ":")),
            stage=mv.stage,
            source=mv.source,
            run_id=mv.run_id,
            description=mv.description,
            created_ms=now,
            updated_ms=now,
        )
    )
    if mv.tags:
        rows = [{"name": mv.name, "version": mv.version, "key": k, "value": v} for k, v in mv.tags.items()]
        conn.execute(sa.insert(model_version_tags), rows)
    conn.execute(sa.update(registered_models).where(registered_models.c.name == mv.name).values(updated_ms=now))
    return mv


class RegistryStore:
    """The registry's system of record. Methods block (run them in a thread); each is one transaction.

    Raises StoreUnavailable when the database cannot be reached, and the other RegistryErrors for
    missing, duplicate or invalid things.
    """

    def __init__(self, url: str) -> None:
        try:
            self._url = sa.make_url(normalise_url(url))
        except exc.ArgumentError as error:
            raise InvalidParameterValue(f"Invalid registry database URL {url!r}") from error
        self._label = self._url.render_as_string(hide_password=True)
        backend = self._url.get_backend_name()
        try:
            if backend == "sqlite":
                self._engine = _create_sqlite_engine(self._url)
            elif backend == "postgresql":
                self._engine = _create_postgres_engine(self._url)
            else:
                raise InvalidParameterValue(
                    f"Unsupported registry database {self._label}: use sqlite:///path or postgresql://..."
                )
        except OSError as error:  # the SQLite file's directory cannot be created
            raise StoreUnavailable(f"Registry database {self._label} is unavailable: {error}") from error
        except exc.ArgumentError as error:
            raise InvalidParameterValue(f"Invalid registry database URL {self._label}: {error}") from error
        self._create_schema()

    def __repr__(self) -> str:
        return f"RegistryStore({self._label!r})"

    def close(self) -> None:
        self._engine.dispose()

    def _unavailable(self, error: exc.DBAPIError) -> StoreUnavailable:
        return StoreUnavailable(f"Registry database {self._label} is unavailable: {_first_line(error)}")

    @contextmanager
    def _tx(self) -> Iterator[Connection]:
        try:
            with self._engine.begin() as conn:
                yield conn
        except (exc.OperationalError, exc.InterfaceError) as error:
            raise self._unavailable(error) from error
        except exc.DataError as error:  # a value the database cannot store, e.g. NUL in a PostgreSQL lookup
            raise InvalidParameterValue(f"Invalid value for the registry database: {_first_line(error)}") from error

    def _create_schema(self) -> None:
        """Idempotent, and safe when several processes start on an empty database at once."""
        attempt = 1
        while True:
            try:
                with self._engine.connect() as conn, conn.execution_options(**{_SQLITE_IMMEDIATE: True}).begin():
                    metadata.create_all(conn)
                    stmt = _insert(conn, registry_changes).values(id=CHANGES_ROW_ID, counter=0)
                    conn.execute(stmt.on_conflict_do_nothing())
                return
            except exc.DBAPIError as error:
                if attempt < _CREATE_RETRIES and _is_create_race(error):
                    # The other process's CREATE has committed; the next create_all finds its tables.
                    attempt += 1
                    continue
                if isinstance(error, exc.OperationalError | exc.InterfaceError):
                    raise self._unavailable(error) from error
                raise

    # --- registered models ---

    def create_registered_model(
        self, name: str, description: str = "", tags: Mapping[str, str] | None = None
    ) -> RegisteredModel:
        _check_name(name)
        checked_tags = _check_tags(tags)
        _check_text("description", description)
        with self._tx() as conn:
            _bump_counter(conn)
            return _insert_model(conn, name, description, checked_tags)

    def get_registered_model(self, name: str) -> RegisteredModel:
        with self._tx() as conn:
            return _to_model(_model_row(conn, name), _model_tags(conn, name).get(name, {}))

    def list_registered_models(self) -> list[RegisteredModel]:
        """All models, by name in byte order."""
        with self._tx() as conn:
            query = sa.select(registered_models).order_by(registered_models.c.name.collate(_binary_collation(conn)))
            rows = conn.execute(query).all()
            tags = _model_tags(conn)
        return [_to_model(row, tags.get(row.name, {})) for row in rows]

    # --- versions ---

    def create_model_version(
        self,
        name: str,
        artifact_sha256: str,
        signature: Signature,
        *,
        source: str | None = None,
        run_id: str | None = None,
        description: str = "",
        tags: Mapping[str, str] | None = None,
        create_model: bool = True,
    ) -> ModelVersion:
        """Add version max+1 of `name` in stage "None", creating the model first when `create_model`."""
        _check_name(name)
        checked_tags = _check_tags(tags)
        _check_text("description", description)
        if source is not None:
            _check_text("source", source)
        if run_id is not None:
            _check_text("run_id", run_id, RUN_ID_LENGTH)
        if not _SHA256_RE.fullmatch(artifact_sha256):
            raise InvalidParameterValue(f"artifact_sha256 {artifact_sha256!r} is not 64 lowercase hex digits")
        draft = ModelVersion(
            name=name,
            version=0,
            artifact_sha256=artifact_sha256,
            signature=signature,
            stage="None",
            created_ms=0,
            updated_ms=0,
            source=source,
            run_id=run_id,
            description=description,
            tags=checked_tags,
        )
        attempt = 1
        while True:
            try:
                with self._tx() as conn:
                    return _insert_version(conn, draft, create_model)
            except exc.IntegrityError:
                # Mutations serialise on the counter row, but a writer that bypasses this class could
                # take the same number; start over with a fresh max.
                if attempt >= _VERSION_RETRIES:
                    raise
                attempt += 1

    def get_model_version(self, name: str, version: int) -> ModelVersion:
        with self._tx() as conn:
            return _one_version(conn, name, version)

    def list_model_versions(self, name: str) -> list[ModelVersion]:
        """All versions of `name`, ascending. Raises ResourceDoesNotExist for an unknown model."""
        with self._tx() as conn:
            _model_row(conn, name)
            return _load_versions(conn, name)

    def transition_stage(
        self, name: str, version: int, stage: str, archive_existing: bool = False
    ) -> ModelVersion:
        """Move a version to `stage` (any case: "production" -> "Production"). With `archive_existing`,
        the other versions in a Staging/Production target stage move to Archived."""
        target = _normalise_stage(stage)
        with self._tx() as conn:
            _bump_counter(conn)
            _one_version(conn, name, version)
            now = _now_ms()
            if archive_existing and target in ("Staging", "Production"):
                conn.execute(
                    sa.update(model_versions)
                    .where(
                        model_versions.c.name == name,
                        model_versions.c.stage == target,
                        model_versions.c.version != version,
                    )
                    .values(stage="Archived", updated_ms=now)
                )
            conn.execute(
                sa.update(model_versions)
                .where(model_versions.c.name == name, model_versions.c.version == version)
                .values(stage=target, updated_ms=now)
            )
            return _one_version(conn, name, version)

    # --- aliases ---

    def set_alias(self, name: str, alias: str, version: int) -> None:
        """Point `alias` at `version`, moving it if it pointed elsewhere."""
        _check_alias(alias)
        with self._tx() as conn:
            _bump_counter(conn)
            _one_version(conn, name, version)
            stmt = _insert(conn, model_aliases).values(name=name, alias=alias, version=version)
            conn.execute(stmt.on_conflict_do_update(index_elements=["name", "alias"], set_={"version": version}))

    def delete_alias(self, name: str, alias: str) -> None:
        """Remove `alias`; a missing alias is not an error (as in MLflow), a missing model is."""
        with self._tx() as conn:
            _bump_counter(conn)
            _model_row(conn, name)
            conn.execute(sa.delete(model_aliases).where(model_aliases.c.name == name, model_aliases.c.alias == alias))

    def get_version_by_alias(self, name: str, alias: str) -> ModelVersion:
        with self._tx() as conn:
            found = _by_alias(conn, name, alias)
            if found is None:
                _model_row(conn, name)
                raise ResourceDoesNotExist(f"Alias {alias!r} of registered model {name!r} not found")
            return found

    # --- resolution ---

    def resolve_serving_version(self, name: str) -> ModelVersion | None:
        """The version a route with no policy serves: the `champion` alias, else the newest Production
        version, else the newest version; None when the model has no versions."""
        with self._tx() as conn:
            _model_row(conn, name)
            return (
                _by_alias(conn, name, CHAMPION)
                or _newest(conn, name, model_versions.c.stage == "Production")
                or _newest(conn, name)
            )

    def resolve_version_ref(self, name: str, ref: str) -> ModelVersion:
        """`ref` is a version number ("3"), "latest", an alias ("champion"), or a stage name
        ("Production", any case; the newest version in it). Aliases win over stage names."""
        with self._tx() as conn:
            _model_row(conn, name)
            found: ModelVersion | None
            if ref.isascii() and ref.isdigit():
                found = _newest(conn, name, model_versions.c.version == int(ref))
            elif ref.lower() == LATEST:
                found = _newest(conn, name)
            else:
                found = _by_alias(conn, name, ref)
                stage = _STAGE_BY_LOWER.get(ref.lower())
                if found is None and stage in _REF_STAGES:
                    found = _newest(conn, name, model_versions.c.stage == stage)
            if found is None:
                raise ResourceDoesNotExist(f"No version of registered model {name!r} matches {ref!r}")
            return found

    # --- route policies (logic in registry/routes.py) ---

    def put_route(self, name: str, model: str, policy: dict[str, Any], actor: str) -> RouteRecord:
        """Store `policy` (a JSON object of at most 64 KiB) as route `name`'s, replacing any, and audit it.
        `model` need not be registered: the gateway validates policies before storing them."""
        _check_name(name, "route")
        _check_name(model)
        with self._tx() as conn:
            _bump_counter(conn)
            return routes.put_route(conn, name, model, policy, actor, _now_ms())[0]

    def delete_route(self, name: str, actor: str) -> None:
        """Remove route `name`'s policy and audit it; ResourceDoesNotExist when it has none."""
        _check_name(name, "route")
        with self._tx() as conn:
            _bump_counter(conn)
            routes.delete_route(conn, name, actor, _now_ms())

    def get_route(self, name: str) -> RouteRecord:
        with self._tx() as conn:
            return routes.get_route(conn, name)

    def list_routes(self) -> list[RouteRecord]:
        """All stored routes, by name in byte order."""
        with self._tx() as conn:
            return routes.list_routes(conn)

    def list_audit(self, route: str | None = None, limit: int = 100) -> list[AuditEntry]:
        """The newest `limit` (1..10000) route audit entries, of `route` only when given, newest first."""
        if route is not None:
            _check_name(route, "route")
        with self._tx() as conn:
            return routes.list_audit(conn, route, limit)

    # --- followers ---

    def change_counter(self) -> int:
        """A number that grows with every committed mutation; equal values mean nothing changed."""
        with self._tx() as conn:
            query = sa.select(registry_changes.c.counter).where(registry_changes.c.id == CHANGES_ROW_ID)
            return int(conn.execute(query).scalar_one())
