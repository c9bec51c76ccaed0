"""TrackingStore: MLflow experiments and runs with their params, metrics, tags and dataset inputs, in the
registry's database through RegistryStore's engine and transactions (SQLite WAL or PostgreSQL).

Every method is one transaction, committed before it returns, so an acknowledged write survives a
crash. Tracking writes leave the registry change counter alone: they never concern serving.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc
from sqlalchemy.engine import Connection

from registry import runlog
from registry.dialects import dialect_insert
from registry.entities import (
    RUN_STATUSES,
    VIEW_TYPES,
    DatasetInput,
    Experiment,
    LifecycleStage,
    Metric,
    Page,
    Run,
    RunInfo,
    RunStatus,
    ViewType,
)
from registry.errors import InvalidParameterValue, ResourceAlreadyExists, ResourceDoesNotExist
from registry.schema import (
    DEFAULT_EXPERIMENT_ID,
    EXPERIMENT_TAG_VALUE_LENGTH,
    NAME_LENGTH,
    RUN_NAME_LENGTH,
    experiment_tags,
    experiments,
    run_metrics,
    runs,
)
from registry.search import (
    EXPERIMENTS,
    RUNS,
    check_max_results,
    compile_experiment_filter,
    compile_experiment_order,
    compile_run_filter,
    compile_run_order,
    decode_page_token,
    encode_page_token,
    parse_filter,
    parse_order_by,
)
from registry.store import RegistryStore
from registry.versions import check_tags, check_text, now_ms

SEARCH_RUNS_MAX = 50_000  # MLflow's limits
SEARCH_EXPERIMENTS_MAX = 50_000
METRIC_HISTORY_MAX = 25_000
USER_TAG = "mlflow.user"
_ADJECTIVES = ("able", "bold", "brave", "bright", "calm", "clever", "eager", "fair", "gentle", "glad", "keen",
               "kind", "lively", "lucky", "merry", "nimble", "proud", "quick", "quiet", "sharp", "smart", "swift",
               "tidy", "warm", "wise")
_NOUNS = ("ant", "bass", "bear", "bird", "cat", "crab", "deer", "dove", "eel", "fox", "frog", "goat", "hare",
          "hawk", "lark", "lynx", "mole", "moth", "owl", "ram", "seal", "shark", "slug", "swan", "wolf")


def generate_run_name(rng: random.Random) -> str:
    """A readable name such as "brave-owl-42", as MLflow gives runs created without one."""
    return f"{rng.choice(_ADJECTIVES)}-{rng.choice(_NOUNS)}-{rng.randrange(1000)}"


def experiment_number(experiment_id: str) -> int:
    """The integer behind an experiment id string; ResourceDoesNotExist for anything else."""
    if not (experiment_id.isascii() and experiment_id.isdigit() and len(experiment_id) <= 18):
        raise ResourceDoesNotExist(f"No Experiment with id={experiment_id} exists")
    return int(experiment_id)


def _check_view_type(view_type: str) -> ViewType:
    if view_type not in VIEW_TYPES:
        raise InvalidParameterValue(f"Invalid view type {view_type!r}: expected one of {', '.join(VIEW_TYPES)}")
    return view_type


def _lifecycle_filter(column: Any, view_type: str) -> list[sa.ColumnElement[bool]]:
    checked = _check_view_type(view_type)
    if checked == "ACTIVE_ONLY":
        return [column == "active"]
    if checked == "DELETED_ONLY":
        return [column == "deleted"]
    return []


def _check_status(status: str) -> RunStatus:
    if status not in RUN_STATUSES:
        raise InvalidParameterValue(f"Invalid run status {status!r}: expected one of {', '.join(RUN_STATUSES)}")
    return status


def _check_experiment_name(name: str) -> None:
    if not name or not name.strip():
        raise InvalidParameterValue("Invalid experiment name: the name cannot be empty")
    check_text("Experiment name", name, NAME_LENGTH)


def _experiment_row(conn: Connection, number: int) -> Any:
    row = conn.execute(sa.select(experiments).where(experiments.c.experiment_id == number)).first()
    if row is None:
        raise ResourceDoesNotExist(f"No Experiment with id={number} exists")
    return row


def _experiment_tags(conn: Connection, numbers: list[int]) -> dict[int, dict[str, str]]:
    found: dict[int, dict[str, str]] = {}
    query = sa.select(experiment_tags).where(experiment_tags.c.experiment_id.in_(numbers)).order_by(experiment_tags.c.key)
    for row in conn.execute(query):
        found.setdefault(row.experiment_id, {})[row.key] = row.value
    return found


def _to_experiment(row: Any, tags: dict[str, str]) -> Experiment:
    return Experiment(
        experiment_id=str(row.experiment_id),
        name=row.name,
        artifact_location=row.artifact_location,
        lifecycle_stage=row.lifecycle_stage,
        creation_time=row.creation_time,
        last_update_time=row.last_update_time,
        tags=tags,
    )


def _run_row(conn: Connection, run_id: str) -> Any:
    row = conn.execute(sa.select(runs).where(runs.c.run_id == run_id)).first()
    if row is None:
        raise ResourceDoesNotExist(f"Run with id={run_id} not found")
    return row


def _active_run(conn: Connection, run_id: str) -> Any:
    row = _run_row(conn, run_id)
    if row.lifecycle_stage != "active":
        raise InvalidParameterValue(
            f"The run {run_id} must be in the 'active' state. Current state is {row.lifecycle_stage}."
        )
    return row


class TrackingStore:
    """MLflow tracking over a RegistryStore's database. Methods block (run them in a thread).

    Raises ResourceDoesNotExist, ResourceAlreadyExists and InvalidParameterValue with MLflow's meaning,
    and StoreUnavailable when the database cannot be reached.
    """

    def __init__(self, store: RegistryStore) -> None:
        self._store = store
        self._rng = random.Random()

    def __repr__(self) -> str:
        return f"TrackingStore({self._store!r})"

    # --- experiments ---

    def create_experiment(
        self, name: str, artifact_location: str | None = None, tags: Mapping[str, str] | None = None
    ) -> str:
        """Create an active experiment and return its id; without `artifact_location` its artifacts go
        through this server (mlflow-artifacts:/<id>)."""
        _check_experiment_name(name)
        if artifact_location:
            check_text("artifact_location", artifact_location)
        checked = check_tags(tags, EXPERIMENT_TAG_VALUE_LENGTH)
        try:
            with self._store.transaction(write=True) as conn:
                if conn.execute(sa.select(experiments.c.experiment_id).where(experiments.c.name == name)).first():
                    raise ResourceAlreadyExists(f"Experiment(name={name}) already exists.")
                now = now_ms()
                number = int(conn.execute(sa.insert(experiments).values(
                    name=name, artifact_location=artifact_location or "", lifecycle_stage="active",
                    creation_time=now, last_update_time=now,
                ).returning(experiments.c.experiment_id)).scalar_one())
                if not artifact_location:
                    conn.execute(
                        sa.update(experiments)
                        .where(experiments.c.experiment_id == number)
                        .values(artifact_location=f"mlflow-artifacts:/{number}")
                    )
                if checked:
                    conn.execute(sa.insert(experiment_tags), [
                        {"experiment_id": number, "key": k, "value": v} for k, v in checked.items()
                    ])
                return str(number)
        except exc.IntegrityError:  # a concurrent create of the same name won
            raise ResourceAlreadyExists(f"Experiment(name={name}) already exists.") from None

    def get_experiment(self, experiment_id: str) -> Experiment:
        number = experiment_number(experiment_id)
        with self._store.transaction() as conn:
            row = _experiment_row(conn, number)
            return _to_experiment(row, _experiment_tags(conn, [number]).get(number, {}))

    def get_experiment_by_name(self, name: str) -> Experiment:
        """The experiment called `name`, active or deleted."""
        with self._store.transaction() as conn:
            row = conn.execute(sa.select(experiments).where(experiments.c.name == name)).first()
            if row is None:
                raise ResourceDoesNotExist(f"Could not find experiment with name '{name}'")
            return _to_experiment(row, _experiment_tags(conn, [row.experiment_id]).get(row.experiment_id, {}))

    def search_experiments(
        self,
        view_type: str = "ACTIVE_ONLY",
        filter_string: str | None = None,
        max_results: int | None = None,
        order_by: Sequence[str] = (),
        page_token: str | None = None,
    ) -> Page[Experiment]:
        where = [*_lifecycle_filter(experiments.c.lifecycle_stage, view_type),
                 *compile_experiment_filter(parse_filter(filter_string, EXPERIMENTS))]
        order = compile_experiment_order(parse_order_by(order_by, EXPERIMENTS))
        limit = check_max_results(max_results, 1000, SEARCH_EXPERIMENTS_MAX)
        offset = decode_page_token(page_token)
        with self._store.transaction() as conn:
            rows = conn.execute(
                sa.select(experiments).where(*where).order_by(*order).offset(offset).limit(limit + 1)
            ).all()
            tags = _experiment_tags(conn, [row.experiment_id for row in rows[:limit]])
        found = tuple(_to_experiment(row, tags.get(row.experiment_id, {})) for row in rows[:limit])
        return Page(found, encode_page_token(offset + limit) if len(rows) > limit else None)

    def rename_experiment(self, experiment_id: str, new_name: str) -> None:
        number = experiment_number(experiment_id)
        _check_experiment_name(new_name)
        try:
            with self._store.transaction(write=True) as conn:
                row = _experiment_row(conn, number)
                if row.lifecycle_stage != "active":
                    raise InvalidParameterValue("Cannot rename a non-active experiment.")
                taken = conn.execute(sa.select(experiments.c.experiment_id).where(experiments.c.name == new_name)).first()
                if taken is not None and taken.experiment_id != number:
                    raise ResourceAlreadyExists(f"Experiment(name={new_name}) already exists.")
                conn.execute(sa.update(experiments).where(experiments.c.experiment_id == number)
                             .values(name=new_name, last_update_time=now_ms()))
        except exc.IntegrityError:
            raise ResourceAlreadyExists(f"Experiment(name={new_name}) already exists.") from None

    def set_experiment_tag(self, experiment_id: str, key: str, value: str) -> None:
        number = experiment_number(experiment_id)
        check_tags({key: value}, EXPERIMENT_TAG_VALUE_LENGTH)
        with self._store.transaction(write=True) as conn:
            if _experiment_row(conn, number).lifecycle_stage != "active":
                raise InvalidParameterValue(f"The experiment {number} must be in the 'active' state.")
            stmt = dialect_insert(conn, experiment_tags).values(experiment_id=number, key=key, value=value)
            conn.execute(stmt.on_conflict_do_update(index_elements=["experiment_id", "key"], set_={"value": value}))

    def delete_experiment_tag(self, experiment_id: str, key: str) -> None:
        number = experiment_number(experiment_id)
        with self._store.transaction(write=True) as conn:
            _experiment_row(conn, number)
            t = experiment_tags
            if conn.execute(sa.delete(t).where(t.c.experiment_id == number, t.c.key == key)).rowcount == 0:
                raise ResourceDoesNotExist(f"No tag with name: {key} in experiment with id {number}")

    def delete_experiment(self, experiment_id: str) -> None:
        """Mark the experiment and its active runs deleted (restorable); the Default experiment stays."""
        number = experiment_number(experiment_id)
        if number == DEFAULT_EXPERIMENT_ID:
            raise InvalidParameterValue("Cannot delete the default experiment '0'. This is an internally reserved experiment.")
        self._set_experiment_stage(number, "deleted")

    def restore_experiment(self, experiment_id: str) -> None:
        """Mark a deleted experiment active again, with the runs that its deletion deleted."""
        self._set_experiment_stage(experiment_number(experiment_id), "active")

    def _set_experiment_stage(self, number: int, stage: LifecycleStage) -> None:
        with self._store.transaction(write=True) as conn:
            row = _experiment_row(conn, number)
            if row.lifecycle_stage == stage:
                raise InvalidParameterValue(f"Experiment {number} is already {stage}.")
            now = now_ms()
            conn.execute(sa.update(experiments).where(experiments.c.experiment_id == number)
                         .values(lifecycle_stage=stage, last_update_time=now))
            in_experiment = runs.c.experiment_id == number
            if stage == "deleted":
                conn.execute(sa.update(runs).where(in_experiment, runs.c.lifecycle_stage == "active")
                             .values(lifecycle_stage="deleted", deleted_time=now, deleted_with_experiment=True))
            else:
                conn.execute(sa.update(runs).where(in_experiment, runs.c.deleted_with_experiment)
                             .values(lifecycle_stage="active", deleted_time=None, deleted_with_experiment=False))

    # --- runs ---

    def create_run(
        self,
        experiment_id: str,
        *,
        user_id: str = "",
        start_time: int | None = None,
        run_name: str = "",
        tags: Mapping[str, str] | Sequence[tuple[str, str]] | None = None,
    ) -> Run:
        """Start a RUNNING run; without a name (argument or mlflow.runName tag) one is generated, and the
        name is kept in the mlflow.runName tag as MLflow does."""
        number = experiment_number(experiment_id)
        pairs = runlog.tag_pairs(tags)
        for key, value in pairs:
            runlog.check_tag(key, value)
        tag_map = dict(pairs)
        tagged = tag_map.get(runlog.RUN_NAME_TAG)
        if run_name and tagged is not None and tagged != run_name:
            raise InvalidParameterValue(
                f"Both 'run_name' argument and 'mlflow.runName' tag are specified, but with different values "
                f"(run_name='{run_name}', mlflow.runName='{tagged}')."
            )
        name = run_name or tagged or generate_run_name(self._rng)
        check_text("Run name", name, RUN_NAME_LENGTH)
        tag_map[runlog.RUN_NAME_TAG] = name
        user = user_id or tag_map.get(USER_TAG, "")
        check_text("user_id", user, NAME_LENGTH)
        started = now_ms() if start_time is None else start_time
        runlog.check_int64("start_time", started)
        run_id = uuid.uuid4().hex
        with self._store.transaction(write=True) as conn:
            experiment = _experiment_row(conn, number)
            if experiment.lifecycle_stage != "active":
                raise InvalidParameterValue(f"The experiment {number} must be in the 'active' state.")
            conn.execute(sa.insert(runs).values(
                run_id=run_id, experiment_id=number, run_name=name, user_id=user, status="RUNNING",
                start_time=started, end_time=None, lifecycle_stage="active",
                artifact_uri=f"{experiment.artifact_location.rstrip('/')}/{run_id}/artifacts",
            ))
            runlog.write_tags(conn, run_id, list(tag_map.items()))
            return runlog.load_runs(conn, [_run_row(conn, run_id)])[0]

    def get_run(self, run_id: str) -> Run:
        with self._store.transaction() as conn:
            return runlog.load_runs(conn, [_run_row(conn, run_id)])[0]

    def update_run(
        self, run_id: str, *, status: str | None = None, end_time: int | None = None, run_name: str | None = None
    ) -> RunInfo:
        values: dict[str, Any] = {}
        if status:
            values["status"] = _check_status(status)
        if end_time is not None:
            runlog.check_int64("end_time", end_time)
            values["end_time"] = end_time
        if run_name:
            check_text("Run name", run_name, RUN_NAME_LENGTH)
        with self._store.transaction(write=True) as conn:
            _active_run(conn, run_id)
            if values:
                conn.execute(sa.update(runs).where(runs.c.run_id == run_id).values(values))
            if run_name:
                runlog.write_tags(conn, run_id, [(runlog.RUN_NAME_TAG, run_name)])
            return runlog.to_run_info(_run_row(conn, run_id))

    def delete_run(self, run_id: str) -> None:
        self._set_run_stage(run_id, "deleted")

    def restore_run(self, run_id: str) -> None:
        self._set_run_stage(run_id, "active")

    def _set_run_stage(self, run_id: str, stage: LifecycleStage) -> None:
        with self._store.transaction(write=True) as conn:
            _run_row(conn, run_id)
            deleted_time = now_ms() if stage == "deleted" else None
            conn.execute(sa.update(runs).where(runs.c.run_id == run_id)
                         .values(lifecycle_stage=stage, deleted_time=deleted_time, deleted_with_experiment=False))

    def log_param(self, run_id: str, key: str, value: str) -> None:
        self.log_batch(run_id, params=[(key, value)])

    def log_metric(self, run_id: str, metric: Metric) -> None:
        self.log_batch(run_id, metrics=[metric])

    def set_tag(self, run_id: str, key: str, value: str) -> None:
        self.log_batch(run_id, tags=[(key, value)])

    def log_batch(
        self,
        run_id: str,
        metrics: Sequence[Metric] = (),
        params: Sequence[tuple[str, str]] = (),
        tags: Sequence[tuple[str, str]] = (),
    ) -> None:
        """Write all of it in one transaction or nothing (MLflow's log-batch limits apply)."""
        runlog.check_batch(metrics, params, tags)
        with self._store.transaction(write=True) as conn:
            _active_run(conn, run_id)
            runlog.write_params(conn, run_id, params)
            runlog.write_metrics(conn, run_id, metrics)
            runlog.write_tags(conn, run_id, tags)

    def delete_tag(self, run_id: str, key: str) -> None:
        with self._store.transaction(write=True) as conn:
            _active_run(conn, run_id)
            runlog.delete_tag(conn, run_id, key)

    def log_inputs(self, run_id: str, inputs: Sequence[DatasetInput]) -> None:
        for item in inputs:
            runlog.check_dataset(item.dataset)
            for key, value in item.tags.items():
                runlog.check_tag(key, value)
        with self._store.transaction(write=True) as conn:
            row = _active_run(conn, run_id)
            runlog.write_inputs(conn, run_id, row.experiment_id, inputs)

    def get_metric_history(
        self, run_id: str, key: str, max_results: int | None = None, page_token: str | None = None
    ) -> Page[Metric]:
        """Every logged value of `key`, by step, then timestamp; all of it when `max_results` is None."""
        limit = None if max_results is None else check_max_results(max_results, METRIC_HISTORY_MAX, METRIC_HISTORY_MAX)
        offset = decode_page_token(page_token)
        m = run_metrics
        query = (
            sa.select(m).where(m.c.run_id == run_id, m.c.key == key)
            .order_by(m.c.step, m.c.timestamp, m.c.value).offset(offset)
        )
        if limit is not None:
            query = query.limit(limit + 1)
        with self._store.transaction() as conn:
            _run_row(conn, run_id)
            rows = conn.execute(query).all()
        if limit is None or len(rows) <= limit:
            return Page(tuple(runlog.to_metric(row) for row in rows))
        return Page(tuple(runlog.to_metric(row) for row in rows[:limit]), encode_page_token(offset + limit))

    def search_runs(
        self,
        experiment_ids: Sequence[str],
        filter_string: str | None = None,
        view_type: str = "ACTIVE_ONLY",
        max_results: int | None = None,
        order_by: Sequence[str] = (),
        page_token: str | None = None,
    ) -> Page[Run]:
        """Runs of the experiments matching an MLflow filter, ordered (default: newest first), one page
        at a time; unknown experiment ids match nothing."""
        numbers = [int(e) for e in experiment_ids if e.isascii() and e.isdigit() and len(e) <= 18]
        where = [runs.c.experiment_id.in_(numbers), *_lifecycle_filter(runs.c.lifecycle_stage, view_type),
                 *compile_run_filter(parse_filter(filter_string, RUNS))]
        order = compile_run_order(parse_order_by(order_by, RUNS))
        limit = check_max_results(max_results, 1000, SEARCH_RUNS_MAX)
        offset = decode_page_token(page_token)
        with self._store.transaction() as conn:
            rows = conn.execute(sa.select(runs).where(*where).order_by(*order).offset(offset).limit(limit + 1)).all()
            found = runlog.load_runs(conn, rows[:limit])
        return Page(tuple(found), encode_page_token(offset + limit) if len(rows) > limit else None)

