"""Run data as functions over a Connection in the caller's transaction: validated writes of params,
metrics, tags and dataset inputs with MLflow's rules, and the batch loader that turns run rows into Runs.
"""

from __future__ import annotations

import math
import posixpath
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from registry.dialects import dialect_insert, insert_many_ignoring_duplicates
from registry.entities import Dataset, DatasetInput, Metric, Run, RunInfo
from registry.errors import InvalidParameterValue, ResourceDoesNotExist
from registry.schema import (
    DATASET_DIGEST_LENGTH,
    DATASET_NAME_LENGTH,
    DATASET_SOURCE_TYPE_LENGTH,
    PARAM_VALUE_LENGTH,
    RUN_TAG_VALUE_LENGTH,
    TAG_KEY_LENGTH,
    datasets,
    run_input_tags,
    run_inputs,
    run_latest_metrics,
    run_metrics,
    run_params,
    run_tags,
    runs,
)
from registry.versions import check_text

RUN_NAME_TAG = "mlflow.runName"
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
# MLflow's limits on one log-batch request.
MAX_BATCH_METRICS = 1000
MAX_BATCH_PARAMS = 100
MAX_BATCH_TAGS = 100
MAX_BATCH_ENTITIES = 1000

_KEY_RE = re.compile(r"[/\w.\- :]*")  # MLflow's metric, param and tag names
_HISTORY_COLUMNS = ("run_id", "key", "step", "timestamp", "value", "is_nan")


# --- validation (pure) -------------------------------------------------------------------------


def check_key(kind: str, key: str) -> None:
    """A metric, param or tag name as MLflow accepts it: 1..250 characters of letters, digits, '_',
    '-', '.', ' ', ':' and '/', not starting with '/' and without '..' or '//' segments."""
    if not key:
        raise InvalidParameterValue(f"Invalid {kind} name: the name cannot be empty")
    if len(key) > TAG_KEY_LENGTH:
        raise InvalidParameterValue(f"Invalid {kind} name {key[:40]!r}...: longer than {TAG_KEY_LENGTH} characters")
    if not _KEY_RE.fullmatch(key):
        raise InvalidParameterValue(
            f"Invalid {kind} name {key!r}: names may only contain alphanumerics, underscores (_), dashes (-), "
            "periods (.), spaces ( ), colons (:) and slashes (/)"
        )
    normal = posixpath.normpath(key)
    if normal != key or normal == "." or normal.startswith(("..", "/")):
        raise InvalidParameterValue(f"Invalid {kind} name {key!r}: it would refer to a different path")


def check_int64(label: str, value: int) -> None:
    if not INT64_MIN <= value <= INT64_MAX:
        raise InvalidParameterValue(f"{label} {value} does not fit in a signed 64-bit integer")


def check_metric(metric: Metric) -> None:
    check_key("metric", metric.key)
    if not isinstance(metric.value, int | float) or isinstance(metric.value, bool):
        raise InvalidParameterValue(f"Got invalid value {metric.value!r} for metric {metric.key!r}: expected a number")
    check_int64(f"Metric {metric.key!r} timestamp", metric.timestamp)
    check_int64(f"Metric {metric.key!r} step", metric.step)


def check_param(key: str, value: str) -> None:
    check_key("param", key)
    check_text(f"Param {key!r} value", value, PARAM_VALUE_LENGTH)


def check_tag(key: str, value: str) -> None:
    check_key("tag", key)
    check_text(f"Tag {key!r} value", value, RUN_TAG_VALUE_LENGTH)


def check_dataset(dataset: Dataset) -> None:
    for label, value, limit in (
        ("name", dataset.name, DATASET_NAME_LENGTH),
        ("digest", dataset.digest, DATASET_DIGEST_LENGTH),
        ("source_type", dataset.source_type, DATASET_SOURCE_TYPE_LENGTH),
        ("source", dataset.source, None),
        ("schema", dataset.schema, None),
        ("profile", dataset.profile, None),
    ):
        check_text(f"Dataset {label}", value, limit)
    if not dataset.name or not dataset.digest:
        raise InvalidParameterValue("A dataset needs a name and a digest")


def check_batch(metrics: Sequence[Metric], params: Sequence[tuple[str, str]], tags: Sequence[tuple[str, str]]) -> None:
    """MLflow's log-batch limits, and one value per param key."""
    for label, count, limit in (("metrics", len(metrics), MAX_BATCH_METRICS), ("params", len(params), MAX_BATCH_PARAMS),
                                ("tags", len(tags), MAX_BATCH_TAGS)):
        if count > limit:
            raise InvalidParameterValue(f"A batch logging request can contain at most {limit} {label}. Got {count}")
    total = len(metrics) + len(params) + len(tags)
    if total > MAX_BATCH_ENTITIES:
        raise InvalidParameterValue(
            f"A batch logging request can contain at most {MAX_BATCH_ENTITIES} metrics, params and tags in total. Got {total}"
        )
    for key in {m.key for m in metrics}:  # a batch repeats few keys over many steps
        check_key("metric", key)
    for m in metrics:
        if not isinstance(m.value, int | float) or isinstance(m.value, bool):
            raise InvalidParameterValue(f"Got invalid value {m.value!r} for metric {m.key!r}: expected a number")
        if not (INT64_MIN <= m.timestamp <= INT64_MAX and INT64_MIN <= m.step <= INT64_MAX):
            check_int64(f"Metric {m.key!r} timestamp", m.timestamp)
            check_int64(f"Metric {m.key!r} step", m.step)
    seen: dict[str, str] = {}
    for key, value in params:
        check_param(key, value)
        if seen.setdefault(key, value) != value:
            raise InvalidParameterValue(
                f"Duplicate parameter keys have been submitted: {key!r}. Please ensure the request contains only "
                "one param value per param key."
            )
    for key, value in tags:
        check_tag(key, value)


def _stored_value(value: float) -> tuple[float, bool]:
    """(value, is_nan) as stored: SQLite turns NaN into NULL, so NaN is stored as 0 with the flag."""
    return (0.0, True) if math.isnan(value) else (float(value), False)


def _latest(metrics: Iterable[Metric]) -> dict[str, Metric]:
    """Per key, the metric with the greatest (step, timestamp, value): MLflow's latest_metrics rule."""
    latest: dict[str, Metric] = {}
    for m in metrics:
        held = latest.get(m.key)
        if held is None or (m.step, m.timestamp, _stored_value(m.value)[0]) >= (
            held.step, held.timestamp, _stored_value(held.value)[0]
        ):
            latest[m.key] = m
    return latest


# --- writes ------------------------------------------------------------------------------------


def write_params(conn: Connection, run_id: str, params: Sequence[tuple[str, str]]) -> None:
    """Insert params; re-logging a key with the same value is a no-op, with another value an error."""
    if not params:
        return
    wanted = dict(sorted(params))  # sorted: concurrent writers lock keys in one order
    rows = [{"run_id": run_id, "key": k, "value": v} for k, v in wanted.items()]
    conn.execute(dialect_insert(conn, run_params).on_conflict_do_nothing(), rows)
    stored = conn.execute(
        sa.select(run_params.c.key, run_params.c.value).where(
            run_params.c.run_id == run_id, run_params.c.key.in_(list(wanted))
        )
    ).all()
    for key, value in stored:
        if value != wanted[key]:
            raise InvalidParameterValue(
                f"Changing param values is not allowed. Param with key={key!r} was already logged with "
                f"value={value!r} for run ID={run_id!r}. Attempted logging new value {wanted[key]!r}."
            )


def write_metrics(conn: Connection, run_id: str, metrics: Sequence[Metric]) -> None:
    """Append to the history (an exact repeat is stored once) and move each key's latest value forward."""
    if not metrics:
        return
    history = sorted({(m.key, m.step, m.timestamp, *_stored_value(m.value)) for m in metrics})  # one order: no deadlocks
    insert_many_ignoring_duplicates(conn, run_metrics, _HISTORY_COLUMNS, [(run_id, *entry) for entry in history])
    stmt = dialect_insert(conn, run_latest_metrics)
    table = run_latest_metrics.c
    upsert = stmt.on_conflict_do_update(
        index_elements=["run_id", "key"],
        set_={"step": stmt.excluded.step, "timestamp": stmt.excluded.timestamp, "value": stmt.excluded.value,
              "is_nan": stmt.excluded.is_nan},
        where=sa.tuple_(stmt.excluded.step, stmt.excluded.timestamp, stmt.excluded.value)
        >= sa.tuple_(table.step, table.timestamp, table.value),
    )
    latest = _latest(metrics)
    rows = []
    for key in sorted(latest):
        m = latest[key]
        value, is_nan = _stored_value(m.value)
        rows.append({"run_id": run_id, "key": key, "step": m.step, "timestamp": m.timestamp, "value": value,
                     "is_nan": is_nan})
    conn.execute(upsert, rows)


def write_tags(conn: Connection, run_id: str, tags: Sequence[tuple[str, str]]) -> None:
    """Upsert tags (the last value of a repeated key wins); mlflow.runName also renames the run."""
    if not tags:
        return
    wanted = dict(tags)
    stmt = dialect_insert(conn, run_tags)
    upsert = stmt.on_conflict_do_update(index_elements=["run_id", "key"], set_={"value": stmt.excluded.value})
    conn.execute(upsert, [{"run_id": run_id, "key": k, "value": wanted[k]} for k in sorted(wanted)])
    if RUN_NAME_TAG in wanted:
        conn.execute(sa.update(runs).where(runs.c.run_id == run_id).values(run_name=wanted[RUN_NAME_TAG]))


def delete_tag(conn: Connection, run_id: str, key: str) -> None:
    deleted = conn.execute(sa.delete(run_tags).where(run_tags.c.run_id == run_id, run_tags.c.key == key))
    if deleted.rowcount == 0:
        raise ResourceDoesNotExist(f"No tag with name: {key} in run with id {run_id}")


def write_inputs(conn: Connection, run_id: str, experiment_id: int, inputs: Sequence[DatasetInput]) -> None:
    """Record each dataset once per experiment (by name and digest), link it to the run, and upsert the
    tags of that link (e.g. mlflow.data.context)."""
    for item in inputs:
        d = item.dataset
        conn.execute(
            dialect_insert(conn, datasets)
            .values(experiment_id=experiment_id, name=d.name, digest=d.digest, source_type=d.source_type,
                    source=d.source, schema=d.schema, profile=d.profile)
            .on_conflict_do_nothing()
        )
        dataset_id = conn.execute(
            sa.select(datasets.c.dataset_id).where(
                datasets.c.experiment_id == experiment_id, datasets.c.name == d.name, datasets.c.digest == d.digest
            )
        ).scalar_one()
        conn.execute(dialect_insert(conn, run_inputs).values(run_id=run_id, dataset_id=dataset_id).on_conflict_do_nothing())
        if item.tags:
            stmt = dialect_insert(conn, run_input_tags)
            upsert = stmt.on_conflict_do_update(
                index_elements=["run_id", "dataset_id", "key"], set_={"value": stmt.excluded.value}
            )
            conn.execute(upsert, [{"run_id": run_id, "dataset_id": dataset_id, "key": k, "value": v}
                                  for k, v in sorted(item.tags.items())])


# --- reads -------------------------------------------------------------------------------------


def to_metric(row: Any) -> Metric:
    return Metric(key=row.key, value=math.nan if row.is_nan else row.value, timestamp=row.timestamp, step=row.step)


def to_run_info(row: Any) -> RunInfo:
    return RunInfo(
        run_id=row.run_id,
        experiment_id=str(row.experiment_id),
        run_name=row.run_name,
        user_id=row.user_id,
        status=row.status,
        start_time=row.start_time,
        end_time=row.end_time,
        artifact_uri=row.artifact_uri,
        lifecycle_stage=row.lifecycle_stage,
    )


def _by_run(conn: Connection, table: sa.Table, ids: list[str]) -> dict[str, dict[str, str]]:
    found: dict[str, dict[str, str]] = {}
    for row in conn.execute(sa.select(table).where(table.c.run_id.in_(ids)).order_by(table.c.key)):
        found.setdefault(row.run_id, {})[row.key] = row.value
    return found


def _inputs(conn: Connection, ids: list[str]) -> dict[str, list[DatasetInput]]:
    tags: dict[tuple[str, int], dict[str, str]] = {}
    for row in conn.execute(sa.select(run_input_tags).where(run_input_tags.c.run_id.in_(ids))):
        tags.setdefault((row.run_id, row.dataset_id), {})[row.key] = row.value
    query = (
        sa.select(run_inputs.c.run_id, datasets)
        .join(datasets, datasets.c.dataset_id == run_inputs.c.dataset_id)
        .where(run_inputs.c.run_id.in_(ids))
        .order_by(datasets.c.dataset_id)
    )
    found: dict[str, list[DatasetInput]] = {}
    for row in conn.execute(query):
        dataset = Dataset(row.name, row.digest, row.source_type, row.source, row.schema, row.profile)
        found.setdefault(row.run_id, []).append(DatasetInput(dataset, tags.get((row.run_id, row.dataset_id), {})))
    return found


def load_runs(conn: Connection, rows: Sequence[Any]) -> list[Run]:
    """`runs` rows as Runs with their data and inputs, in row order, in five queries whatever the count."""
    if not rows:
        return []
    ids = [row.run_id for row in rows]
    metrics: dict[str, list[Metric]] = {}
    query = sa.select(run_latest_metrics).where(run_latest_metrics.c.run_id.in_(ids)).order_by(run_latest_metrics.c.key)
    for row in conn.execute(query):
        metrics.setdefault(row.run_id, []).append(to_metric(row))
    params = _by_run(conn, run_params, ids)
    tags = _by_run(conn, run_tags, ids)
    inputs = _inputs(conn, ids)
    return [
        Run(
            info=to_run_info(row),
            metrics=tuple(metrics.get(row.run_id, ())),
            params=params.get(row.run_id, {}),
            tags=tags.get(row.run_id, {}),
            inputs=tuple(inputs.get(row.run_id, ())),
        )
        for row in rows
    ]


def tag_pairs(tags: Mapping[str, str] | Sequence[tuple[str, str]] | None) -> list[tuple[str, str]]:
    if tags is None:
        return []
    return list(tags.items()) if isinstance(tags, Mapping) else list(tags)
