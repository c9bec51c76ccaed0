"""RegistryStore: models, versions, stages, aliases and route policies over one SQLAlchemy engine,
SQLite (WAL) or PostgreSQL; every mutation bumps the change counter that followers poll.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event, exc
from sqlalchemy.engine import URL, Connection, Engine

from registry import routes
from registry import versions as v
from registry.dialects import binary_collation, dialect_insert
from registry.entities import (
    STAGES,
    AuditEntry,
    ModelVersion,
    Page,
    RegisteredModel,
    RouteRecord,
    Signature,
    Stage,
)
from registry.errors import InvalidParameterValue, ResourceDoesNotExist, StoreUnavailable
from registry.schema import (
    CHANGES_ROW_ID,
    DEFAULT_EXPERIMENT_ID,
    DEFAULT_EXPERIMENT_NAME,
    RUN_ID_LENGTH,
    experiments,
    metadata,
    model_aliases,
    model_versions,
    registered_models,
    registry_changes,
)
from registry.search import (
    MODEL_VERSIONS,
    REGISTERED_MODELS,
    check_max_results,
    compile_model_version_filter,
    compile_model_version_order,
    compile_registered_model_filter,
    compile_registered_model_order,
    decode_page_token,
    encode_page_token,
    parse_filter,
    parse_order_by,
)

SQLITE_BUSY_TIMEOUT_MS = 10_000
POSTGRES_CONNECT_TIMEOUT_S = 5
CHAMPION = v.CHAMPION
LATEST = v.LATEST
TAG_VALUE_LENGTH = v.TAG_VALUE_LENGTH
SEARCH_MODELS_MAX = 1000  # MLflow's limits on one page of registered models / model versions
SEARCH_VERSIONS_MAX = 200_000

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
        cursor.execute("PRAGMA case_sensitive_like=ON")  # LIKE as in PostgreSQL and MLflow; ILIKE ignores case
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


def _bump_counter(conn: Connection) -> None:
    # First statement of every mutation: it takes the write lock (SQLite) or the row lock
    # (PostgreSQL) up front, so mutations run one at a time and version numbers cannot collide.
    conn.execute(
        sa.update(registry_changes)
        .where(registry_changes.c.id == CHANGES_ROW_ID)
        .values(counter=registry_changes.c.counter + 1)
    )


def _seed_rows(conn: Connection) -> None:
    """The rows every database starts with: the change counter and MLflow's "Default" experiment."""
    conn.execute(dialect_insert(conn, registry_changes).values(id=CHANGES_ROW_ID, counter=0).on_conflict_do_nothing())
    now = v.now_ms()
    default = dialect_insert(conn, experiments).values(
        experiment_id=DEFAULT_EXPERIMENT_ID,
        name=DEFAULT_EXPERIMENT_NAME,
        artifact_location=f"mlflow-artifacts:/{DEFAULT_EXPERIMENT_ID}",
        lifecycle_stage="active",
        creation_time=now,
        last_update_time=now,
    )
    conn.execute(default.on_conflict_do_nothing())


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
        self._sqlite = backend == "sqlite"
        self._sqlite_writer = threading.Lock()
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
    def transaction(self, *, write: bool = False) -> Iterator[Connection]:
        """One transaction, committed when the block exits normally. With `write`, SQLite takes its write
        lock at BEGIN (BEGIN IMMEDIATE), which writers whose first statement is a read need: upgrading a
        read lock later fails at once when another writer got in first, instead of waiting busy_timeout.

        SQLite writers of this process also queue on a lock first: SQLite's own busy handler retries by
        sleeping up to 100 ms at a time, which gives concurrent writers long tail latencies.

        Translates driver errors: OperationalError -> StoreUnavailable, DataError -> InvalidParameterValue.
        """
        try:
            with ExitStack() as stack:
                if write and self._sqlite:
                    stack.enter_context(self._sqlite_writer)
                conn = stack.enter_context(self._engine.connect())
                if write:
                    conn.execution_options(**{_SQLITE_IMMEDIATE: True})
                with conn.begin():
                    yield conn
        except (exc.OperationalError, exc.InterfaceError) as error:
            raise self._unavailable(error) from error
        except exc.DataError as error:  # a value the database cannot store, e.g. NUL in a PostgreSQL lookup
            raise InvalidParameterValue(f"Invalid value for the registry database: {_first_line(error)}") from error

    _tx = transaction

    def _create_schema(self) -> None:
        """Idempotent, and safe when several processes start on an empty database at once."""
        attempt = 1
        while True:
            try:
                with self._engine.connect() as conn, conn.execution_options(**{_SQLITE_IMMEDIATE: True}).begin():
                    metadata.create_all(conn)
                    _seed_rows(conn)
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
        v.check_name(name)
        checked_tags = v.check_tags(tags)
        v.check_text("description", description)
        with self._tx() as conn:
            _bump_counter(conn)
            return v.insert_model(conn, name, description, checked_tags)

    def get_registered_model(self, name: str) -> RegisteredModel:
        with self._tx() as conn:
            return v.to_model(v.model_row(conn, name), v.model_tags(conn, [name]).get(name, {}))

    def list_registered_models(self) -> list[RegisteredModel]:
        """All models, by name in byte order."""
        with self._tx() as conn:
            query = sa.select(registered_models).order_by(registered_models.c.name.collate(binary_collation(conn)))
            rows = conn.execute(query).all()
            tags = v.model_tags(conn)
        return [v.to_model(row, tags.get(row.name, {})) for row in rows]

    def rename_registered_model(self, name: str, new_name: str) -> RegisteredModel:
        """Rename a model; its versions, tags and aliases follow. Route policies naming it are not rewritten."""
        v.check_name(new_name)
        with self._tx() as conn:
            _bump_counter(conn)
            v.rename_model(conn, name, new_name)
            return v.to_model(v.model_row(conn, new_name), v.model_tags(conn, [new_name]).get(new_name, {}))

    def update_registered_model(self, name: str, description: str) -> RegisteredModel:
        v.check_text("description", description)
        with self._tx() as conn:
            _bump_counter(conn)
            v.model_row(conn, name)
            conn.execute(
                sa.update(registered_models)
                .where(registered_models.c.name == name)
                .values(description=description, updated_ms=v.now_ms())
            )
            return v.to_model(v.model_row(conn, name), v.model_tags(conn, [name]).get(name, {}))

    def delete_registered_model(self, name: str) -> None:
        """Delete a model with all its versions, tags and aliases (blobs stay in the artifact store)."""
        with self._tx() as conn:
            _bump_counter(conn)
            v.delete_model(conn, name)

    def set_registered_model_tag(self, name: str, key: str, value: str) -> None:
        v.check_tags({key: value})
        with self._tx() as conn:
            _bump_counter(conn)
            v.set_model_tag(conn, name, key, value)

    def delete_registered_model_tag(self, name: str, key: str) -> None:
        """Remove a tag; a missing tag is not an error (as in MLflow), a missing model is."""
        with self._tx() as conn:
            _bump_counter(conn)
            v.delete_model_tag(conn, name, key)

    def search_registered_models(
        self,
        filter_string: str | None = None,
        max_results: int | None = None,
        order_by: Sequence[str] = (),
        page_token: str | None = None,
    ) -> Page[RegisteredModel]:
        """Models matching an MLflow filter (`name LIKE '%x%'`, `tags.k = 'v'`), one page at a time."""
        where = compile_registered_model_filter(parse_filter(filter_string, REGISTERED_MODELS))
        order = compile_registered_model_order(parse_order_by(order_by, REGISTERED_MODELS))
        limit = check_max_results(max_results, 100, SEARCH_MODELS_MAX)
        offset = decode_page_token(page_token)
        with self._tx() as conn:
            query = sa.select(registered_models).where(*where).order_by(*order).offset(offset).limit(limit + 1)
            rows = conn.execute(query).all()
            tags = v.model_tags(conn, [row.name for row in rows[:limit]])
        models = tuple(v.to_model(row, tags.get(row.name, {})) for row in rows[:limit])
        return Page(models, encode_page_token(offset + limit) if len(rows) > limit else None)

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
        then: Callable[[Connection, ModelVersion], None] | None = None,
    ) -> ModelVersion:
        """Add version max+1 of `name` in stage "None", creating the model first when `create_model`.
        `then` writes what belongs with the version in the same transaction: if it raises, nothing is kept."""
        if not v.SHA256_RE.fullmatch(artifact_sha256):
            raise InvalidParameterValue(f"artifact_sha256 {artifact_sha256!r} is not 64 lowercase hex digits")
        return self._add_version(name, artifact_sha256, signature, source, run_id, description, tags, create_model, then)

    def create_unservable_model_version(
        self,
        name: str,
        source: str,
        *,
        run_id: str | None = None,
        description: str = "",
        tags: Mapping[str, str] | None = None,
    ) -> ModelVersion:
        """Record a version whose source holds no ONNX file (MLflow registers any source): it has no blob
        (artifact_sha256 "") and an empty signature, and serving resolution never picks it. The model must
        exist (ResourceDoesNotExist otherwise), as in MLflow."""
        empty = Signature(inputs=(), outputs=())
        return self._add_version(name, v.NO_ARTIFACT, empty, source, run_id, description, tags, False)

    def _add_version(
        self,
        name: str,
        artifact_sha256: str,
        signature: Signature,
        source: str | None,
        run_id: str | None,
        description: str,
        tags: Mapping[str, str] | None,
        create_model: bool,
        then: Callable[[Connection, ModelVersion], None] | None = None,
    ) -> ModelVersion:
        v.check_name(name)
        checked_tags = v.check_tags(tags)
        v.check_text("description", description)
        if source is not None:
            v.check_text("source", source)
        if run_id is not None:
            v.check_text("run_id", run_id, RUN_ID_LENGTH)
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
                    _bump_counter(conn)
                    mv = v.insert_version(conn, draft, create_model)
                    if then is not None:
                        then(conn, mv)
                    return mv
            except exc.IntegrityError:
                # Mutations serialise on the counter row, but a writer that bypasses this class could
                # take the same number; start over with a fresh max.
                if attempt >= _VERSION_RETRIES:
                    raise
                attempt += 1

    def get_model_version(self, name: str, version: int) -> ModelVersion:
        with self._tx() as conn:
            return v.one_version(conn, name, version)

    def list_model_versions(self, name: str) -> list[ModelVersion]:
        """All versions of `name` (servable or not), ascending. Raises ResourceDoesNotExist for an unknown model."""
        with self._tx() as conn:
            v.model_row(conn, name)
            return v.load_versions(conn, name)

    def latest_versions(self, name: str, stages: Sequence[str] = ()) -> list[ModelVersion]:
        """The newest version in each of `stages` (any case; all stages when empty), in STAGES order."""
        wanted = [v.normalise_stage(stage) for stage in stages]
        with self._tx() as conn:
            v.model_row(conn, name)
            return v.latest_per_stage(conn, name, [s for s in STAGES if not wanted or s in wanted])

    def update_model_version(self, name: str, version: int, description: str) -> ModelVersion:
        v.check_text("description", description)
        with self._tx() as conn:
            _bump_counter(conn)
            v.one_version(conn, name, version)
            conn.execute(
                sa.update(model_versions)
                .where(model_versions.c.name == name, model_versions.c.version == version)
                .values(description=description, updated_ms=v.now_ms())
            )
            return v.one_version(conn, name, version)

    def delete_model_version(self, name: str, version: int) -> None:
        """Delete one version with its tags and aliases; its number is never issued again for `name`."""
        with self._tx() as conn:
            _bump_counter(conn)
            v.delete_version(conn, name, version)

    def set_model_version_tag(self, name: str, version: int, key: str, value: str) -> None:
        v.check_tags({key: value})
        with self._tx() as conn:
            _bump_counter(conn)
            v.set_version_tag(conn, name, version, key, value)

    def delete_model_version_tag(self, name: str, version: int, key: str) -> None:
        with self._tx() as conn:
            _bump_counter(conn)
            v.delete_version_tag(conn, name, version, key)

    def search_model_versions(
        self,
        filter_string: str | None = None,
        max_results: int | None = None,
        order_by: Sequence[str] = (),
        page_token: str | None = None,
    ) -> Page[ModelVersion]:
        """Versions matching an MLflow filter (`name='x'`, `run_id = '...'`, `tags.k = 'v'`), one page at
        a time; by name, newest version first unless `order_by` says otherwise."""
        where = compile_model_version_filter(parse_filter(filter_string, MODEL_VERSIONS))
        order = compile_model_version_order(parse_order_by(order_by, MODEL_VERSIONS))
        limit = check_max_results(max_results, 10_000, SEARCH_VERSIONS_MAX)
        offset = decode_page_token(page_token)
        with self._tx() as conn:
            query = sa.select(model_versions).where(*where).order_by(*order).offset(offset).limit(limit + 1)
            rows = conn.execute(query).all()
            found = v.versions_from_rows(conn, rows[:limit])
        return Page(tuple(found), encode_page_token(offset + limit) if len(rows) > limit else None)

    def transition_stage(
        self, name: str, version: int, stage: str, archive_existing: bool = False
    ) -> ModelVersion:
        """Move a version to `stage` (any case: "production" -> "Production"). With `archive_existing`,
        the other versions in a Staging/Production target stage move to Archived."""
        target = v.normalise_stage(stage)
        with self._tx() as conn:
            _bump_counter(conn)
            v.one_version(conn, name, version)
            now = v.now_ms()
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
            return v.one_version(conn, name, version)

    # --- aliases ---

    def set_alias(self, name: str, alias: str, version: int) -> None:
        """Point `alias` at `version`, moving it if it pointed elsewhere."""
        v.check_alias(alias)
        with self._tx() as conn:
            _bump_counter(conn)
            v.one_version(conn, name, version)
            stmt = dialect_insert(conn, model_aliases).values(name=name, alias=alias, version=version)
            conn.execute(stmt.on_conflict_do_update(index_elements=["name", "alias"], set_={"version": version}))

    def delete_alias(self, name: str, alias: str) -> None:
        """Remove `alias`; a missing alias is not an error (as in MLflow), a missing model is."""
        with self._tx() as conn:
            _bump_counter(conn)
            v.model_row(conn, name)
            conn.execute(sa.delete(model_aliases).where(model_aliases.c.name == name, model_aliases.c.alias == alias))

    def get_version_by_alias(self, name: str, alias: str) -> ModelVersion:
        with self._tx() as conn:
            found = v.by_alias(conn, name, alias)
            if found is None:
                v.model_row(conn, name)
                raise ResourceDoesNotExist(f"Alias {alias!r} of registered model {name!r} not found")
            return found

    # --- resolution (servable versions only) ---

    def resolve_serving_version(self, name: str) -> ModelVersion | None:
        """The version a route with no policy serves: the `champion` alias, else the newest Production
        version, else the newest version; None when the model has none.

        Only servable versions (with an ONNX blob) count: a champion alias on an unservable version is
        passed over, as are unservable versions in Production and among the newest.
        """
        servable = v.SERVABLE
        with self._tx() as conn:
            v.model_row(conn, name)
            champion = v.by_alias(conn, name, CHAMPION)
            return (
                (champion if champion is not None and champion.servable else None)
                or v.newest(conn, name, servable, model_versions.c.stage == "Production")
                or v.newest(conn, name, servable)
            )

    def resolve_version_ref(self, name: str, ref: str) -> ModelVersion:
        """`ref` is a version number ("3"), "latest", an alias ("champion"), or a stage name
        ("Production", any case; the newest version in it). Aliases win over stage names.

        Only servable versions (with an ONNX blob) resolve: "latest" and stage names skip unservable
        versions, and a number or alias naming one raises InvalidParameterValue saying it cannot be served.
        """
        with self._tx() as conn:
            v.model_row(conn, name)
            found: ModelVersion | None
            if ref.isascii() and ref.isdigit():
                found = v.newest(conn, name, model_versions.c.version == int(ref))
            elif ref.lower() == LATEST:
                found = v.newest(conn, name, v.SERVABLE)
            else:
                found = v.by_alias(conn, name, ref)
                stage = v.STAGE_BY_LOWER.get(ref.lower())
                if found is None and stage in _REF_STAGES:
                    found = v.newest(conn, name, v.SERVABLE, model_versions.c.stage == stage)
            if found is None:
                raise ResourceDoesNotExist(f"No version of registered model {name!r} matches {ref!r}")
            if not found.servable:
                raise InvalidParameterValue(
                    f"Version {found.version} of registered model {name!r} ({ref!r}) cannot be served: "
                    "its source holds no .onnx file"
                )
            return found

    # --- route policies (logic in registry/routes.py) ---

    def put_route(self, name: str, model: str, policy: dict[str, Any], actor: str) -> RouteRecord:
        """Store `policy` (a JSON object of at most 64 KiB) as route `name`'s, replacing any, and audit it.
        `model` need not be registered: the gateway validates policies before storing them."""
        v.check_name(name, "route")
        v.check_name(model)
        with self._tx() as conn:
            _bump_counter(conn)
            return routes.put_route(conn, name, model, policy, actor, v.now_ms())[0]

    def delete_route(self, name: str, actor: str) -> None:
        """Remove route `name`'s policy and audit it; ResourceDoesNotExist when it has none."""
        v.check_name(name, "route")
        with self._tx() as conn:
            _bump_counter(conn)
            routes.delete_route(conn, name, actor, v.now_ms())

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
            v.check_name(route, "route")
        with self._tx() as conn:
            return routes.list_audit(conn, route, limit)

    # --- followers ---

    def change_counter(self) -> int:
        """A number that grows with every committed mutation; equal values mean nothing changed."""
        with self._tx() as conn:
            query = sa.select(registry_changes.c.counter).where(registry_changes.c.id == CHANGES_ROW_ID)
            return int(conn.execute(query).scalar_one())
