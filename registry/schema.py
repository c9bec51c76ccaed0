"""The registry's tables and indexes (SQLAlchemy Core), in one place for SQLite and PostgreSQL:
models, versions, aliases and routes for serving; experiments, runs and their logs for tracking.
"""

from __future__ import annotations

import sqlalchemy as sa

from registry.entities import AUDIT_ACTIONS, LIFECYCLE_STAGES, RUN_STATUSES, STAGES

# Stable constraint names, so a later migration can refer to them on both dialects.
NAMING_CONVENTION: dict[str, str] = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)

# SQLite assigns ids only to an INTEGER PRIMARY KEY (a 64-bit rowid alias), never to BIGINT.
_AUTO_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

# MLflow's limits: names 256, tag keys 250, tag values 5000 characters.
NAME_LENGTH = 256
TAG_KEY_LENGTH = 250
RUN_ID_LENGTH = 64
ACTOR_LENGTH = 256
# MLflow's tracking limits: run tag values 8000, param values 6000, experiment tag values 5000.
RUN_TAG_VALUE_LENGTH = 8000
PARAM_VALUE_LENGTH = 6000
EXPERIMENT_TAG_VALUE_LENGTH = 5000
RUN_NAME_LENGTH = 250
DATASET_NAME_LENGTH = 500
DATASET_DIGEST_LENGTH = 36
DATASET_SOURCE_TYPE_LENGTH = 36

registered_models = sa.Table(
    "registered_models",
    metadata,
    sa.Column("name", sa.String(NAME_LENGTH), primary_key=True),
    sa.Column("description", sa.Text, nullable=False, server_default=""),
    sa.Column("created_ms", sa.BigInteger, nullable=False),
    sa.Column("updated_ms", sa.BigInteger, nullable=False),
)

registered_model_tags = sa.Table(
    "registered_model_tags",
    metadata,
    sa.Column(
        "name",
        sa.String(NAME_LENGTH),
        sa.ForeignKey("registered_models.name", ondelete="CASCADE", onupdate="CASCADE"),
        primary_key=True,
    ),
    sa.Column("key", sa.String(TAG_KEY_LENGTH), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)

model_versions = sa.Table(
    "model_versions",
    metadata,
    sa.Column(
        "name",
        sa.String(NAME_LENGTH),
        sa.ForeignKey("registered_models.name", ondelete="CASCADE", onupdate="CASCADE"),
        primary_key=True,
    ),
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("artifact_sha256", sa.CHAR(64), nullable=False),
    sa.Column("signature", sa.Text, nullable=False),  # Signature.to_dict() as JSON
    sa.Column("stage", sa.String(20), nullable=False, server_default="None"),
    sa.Column("source", sa.Text, nullable=True),
    sa.Column("run_id", sa.String(RUN_ID_LENGTH), nullable=True),
    sa.Column("description", sa.Text, nullable=False, server_default=""),
    sa.Column("created_ms", sa.BigInteger, nullable=False),
    sa.Column("updated_ms", sa.BigInteger, nullable=False),
    sa.CheckConstraint(sa.column("stage").in_(STAGES), name="stage"),
    # Serving resolution asks for "newest version in stage S of model M".
    sa.Index(None, "name", "stage", "version"),
    # Registration cleanup and garbage collection ask "is this blob still referenced?".
    sa.Index(None, "artifact_sha256"),
)

model_version_tags = sa.Table(
    "model_version_tags",
    metadata,
    sa.Column("name", sa.String(NAME_LENGTH), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("key", sa.String(TAG_KEY_LENGTH), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
    sa.ForeignKeyConstraint(
        ["name", "version"],
        ["model_versions.name", "model_versions.version"],
        ondelete="CASCADE",
        onupdate="CASCADE",
    ),
)

model_aliases = sa.Table(
    "model_aliases",
    metadata,
    sa.Column("name", sa.String(NAME_LENGTH), primary_key=True),
    sa.Column("alias", sa.String(NAME_LENGTH), primary_key=True),
    sa.Column("version", sa.Integer, nullable=False),
    sa.ForeignKeyConstraint(
        ["name", "version"],
        ["model_versions.name", "model_versions.version"],
        ondelete="CASCADE",
        onupdate="CASCADE",
    ),
    # Loading a version's aliases looks them up by (name, version).
    sa.Index(None, "name", "version"),
)

# The highest version number deleted from each model name (no foreign key: it outlives the model), so
# a number is never issued twice for a name and (name, version) always means one artifact.
version_high_water = sa.Table(
    "version_high_water",
    metadata,
    sa.Column("name", sa.String(NAME_LENGTH), primary_key=True),
    sa.Column("version", sa.Integer, nullable=False),
)

# One row, id=1. Every mutation bumps `counter` in its own transaction, so followers notice any
# change with one primary-key read instead of diffing tables.
registry_changes = sa.Table(
    "registry_changes",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("counter", sa.BigInteger, nullable=False),
    sa.CheckConstraint(sa.column("id") == 1, name="single_row"),
)

CHANGES_ROW_ID = 1

# One row per route that has a stored policy. `model` names a registered model without a foreign key:
# the gateway validates a policy against the registry before storing it.
routes = sa.Table(
    "routes",
    metadata,
    sa.Column("name", sa.String(NAME_LENGTH), primary_key=True),
    sa.Column("model", sa.String(NAME_LENGTH), nullable=False),
    sa.Column("policy", sa.Text, nullable=False),  # the policy dict as JSON
    sa.Column("created_ms", sa.BigInteger, nullable=False),
    sa.Column("updated_ms", sa.BigInteger, nullable=False),
    sa.Column("updated_by", sa.String(ACTOR_LENGTH), nullable=False),
)

# Append-only: one row per route put or delete, written in the same transaction as the change.
route_audit = sa.Table(
    "route_audit",
    metadata,
    sa.Column("id", _AUTO_ID, primary_key=True, autoincrement=True),
    sa.Column("route", sa.String(NAME_LENGTH), nullable=False),
    sa.Column("action", sa.String(16), nullable=False),
    sa.Column("actor", sa.String(ACTOR_LENGTH), nullable=False),
    sa.Column("at_ms", sa.BigInteger, nullable=False),
    sa.Column("old_policy", sa.Text, nullable=True),  # JSON; NULL when the route had no policy
    sa.Column("new_policy", sa.Text, nullable=True),  # JSON; NULL for a delete
    sa.CheckConstraint(sa.column("action").in_(AUDIT_ACTIONS), name="action"),
    # The audit of one route, newest first.
    sa.Index(None, "route", "id"),
    # AUTOINCREMENT: like a PostgreSQL sequence, SQLite then never reuses the id of a deleted newest row.
    sqlite_autoincrement=True,
)


# --- tracking ----------------------------------------------------------------------------------

DEFAULT_EXPERIMENT_ID = 0  # MLflow's "Default" experiment, seeded with the schema
DEFAULT_EXPERIMENT_NAME = "Default"

experiments = sa.Table(
    "experiments",
    metadata,
    sa.Column("experiment_id", _AUTO_ID, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(NAME_LENGTH), nullable=False, unique=True),
    sa.Column("artifact_location", sa.Text, nullable=False),
    sa.Column("lifecycle_stage", sa.String(16), nullable=False),
    sa.Column("creation_time", sa.BigInteger, nullable=False),
    sa.Column("last_update_time", sa.BigInteger, nullable=False),
    sa.CheckConstraint(sa.column("lifecycle_stage").in_(LIFECYCLE_STAGES), name="lifecycle_stage"),
    # AUTOINCREMENT: ids are never reused, like a PostgreSQL sequence.
    sqlite_autoincrement=True,
)

experiment_tags = sa.Table(
    "experiment_tags",
    metadata,
    sa.Column(
        "experiment_id",
        _AUTO_ID,
        sa.ForeignKey("experiments.experiment_id", ondelete="CASCADE"),
        primary_key=True,
        autoincrement=False,
    ),
    sa.Column("key", sa.String(TAG_KEY_LENGTH), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)

runs = sa.Table(
    "runs",
    metadata,
    sa.Column("run_id", sa.String(32), primary_key=True),
    sa.Column(
        "experiment_id", _AUTO_ID, sa.ForeignKey("experiments.experiment_id", ondelete="CASCADE"), nullable=False
    ),
    sa.Column("run_name", sa.String(RUN_NAME_LENGTH), nullable=False),
    sa.Column("user_id", sa.String(NAME_LENGTH), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("start_time", sa.BigInteger, nullable=False),
    sa.Column("end_time", sa.BigInteger, nullable=True),
    sa.Column("lifecycle_stage", sa.String(16), nullable=False),
    sa.Column("deleted_time", sa.BigInteger, nullable=True),
    # Deleted along with its experiment (not on its own), so restoring the experiment restores it.
    sa.Column("deleted_with_experiment", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("artifact_uri", sa.Text, nullable=False),
    sa.CheckConstraint(sa.column("status").in_(RUN_STATUSES), name="status"),
    sa.CheckConstraint(sa.column("lifecycle_stage").in_(LIFECYCLE_STAGES), name="lifecycle_stage"),
    # Run search: the runs of some experiments, newest first.
    sa.Index(None, "experiment_id", "start_time"),
)


def _run_fk() -> sa.ForeignKey:
    return sa.ForeignKey("runs.run_id", ondelete="CASCADE")


run_params = sa.Table(
    "run_params",
    metadata,
    sa.Column("run_id", sa.String(32), _run_fk(), primary_key=True),
    sa.Column("key", sa.String(TAG_KEY_LENGTH), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)

run_tags = sa.Table(
    "run_tags",
    metadata,
    sa.Column("run_id", sa.String(32), _run_fk(), primary_key=True),
    sa.Column("key", sa.String(TAG_KEY_LENGTH), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)

# Every logged value; an exact repeat (same key, step, timestamp, value) is stored once, as in MLflow.
# SQLite stores NaN as NULL, so NaN is `is_nan` with value 0 on both backends.
run_metrics = sa.Table(
    "run_metrics",
    metadata,
    sa.Column("run_id", sa.String(32), _run_fk(), primary_key=True),
    sa.Column("key", sa.String(TAG_KEY_LENGTH), primary_key=True),
    sa.Column("step", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("timestamp", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("value", sa.Float(precision=53), primary_key=True),
    sa.Column("is_nan", sa.Boolean, primary_key=True),
)

# The newest value per (run, key): the greatest (step, timestamp, value), as MLflow's latest_metrics.
run_latest_metrics = sa.Table(
    "run_latest_metrics",
    metadata,
    sa.Column("run_id", sa.String(32), _run_fk(), primary_key=True),
    sa.Column("key", sa.String(TAG_KEY_LENGTH), primary_key=True),
    sa.Column("step", sa.BigInteger, nullable=False),
    sa.Column("timestamp", sa.BigInteger, nullable=False),
    sa.Column("value", sa.Float(precision=53), nullable=False),
    sa.Column("is_nan", sa.Boolean, nullable=False),
    # Run search filters and sorts on one key's latest value.
    sa.Index(None, "key", "value"),
)

# A dataset is recorded once per experiment by (name, digest); runs link to it through run_inputs.
datasets = sa.Table(
    "datasets",
    metadata,
    sa.Column("dataset_id", _AUTO_ID, primary_key=True, autoincrement=True),
    sa.Column(
        "experiment_id", _AUTO_ID, sa.ForeignKey("experiments.experiment_id", ondelete="CASCADE"), nullable=False
    ),
    sa.Column("name", sa.String(DATASET_NAME_LENGTH), nullable=False),
    sa.Column("digest", sa.String(DATASET_DIGEST_LENGTH), nullable=False),
    sa.Column("source_type", sa.String(DATASET_SOURCE_TYPE_LENGTH), nullable=False),
    sa.Column("source", sa.Text, nullable=False),
    sa.Column("schema", sa.Text, nullable=False),
    sa.Column("profile", sa.Text, nullable=False),
    sa.UniqueConstraint("experiment_id", "name", "digest"),
    sqlite_autoincrement=True,
)

run_inputs = sa.Table(
    "run_inputs",
    metadata,
    sa.Column("run_id", sa.String(32), _run_fk(), primary_key=True),
    sa.Column(
        "dataset_id",
        _AUTO_ID,
        sa.ForeignKey("datasets.dataset_id", ondelete="CASCADE"),
        primary_key=True,
        autoincrement=False,
    ),
)

# Tags of one run's use of one dataset, e.g. mlflow.data.context = "training".
run_input_tags = sa.Table(
    "run_input_tags",
    metadata,
    sa.Column("run_id", sa.String(32), primary_key=True),
    sa.Column("dataset_id", _AUTO_ID, primary_key=True, autoincrement=False),
    sa.Column("key", sa.String(TAG_KEY_LENGTH), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
    sa.ForeignKeyConstraint(
        ["run_id", "dataset_id"], ["run_inputs.run_id", "run_inputs.dataset_id"], ondelete="CASCADE"
    ),
)

# --- serving metadata: feature views, the features a version declares, reference profiles ---------

# Feature views shared by every replica; `spec` is the view's JSON contract shape.
feature_views = sa.Table(
    "feature_views",
    metadata,
    sa.Column("name", sa.String(NAME_LENGTH), primary_key=True),
    sa.Column("spec", sa.Text, nullable=False),
    sa.Column("updated_ms", sa.BigInteger, nullable=False),
    sa.Column("updated_by", sa.String(256), nullable=False),
)

# The input features a model version declares, in input-column order ("view:feature", "request:name").
model_version_features = sa.Table(
    "model_version_features",
    metadata,
    sa.Column("name", sa.String(NAME_LENGTH), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("features", sa.Text, nullable=False),  # JSON list of refs
    sa.ForeignKeyConstraint(
        ["name", "version"], ["model_versions.name", "model_versions.version"], ondelete="CASCADE", onupdate="CASCADE"
    ),
)

# Reference profiles (bin edges and expected shares) of a version's inputs and outputs, for drift.
reference_profiles = sa.Table(
    "reference_profiles",
    metadata,
    sa.Column("name", sa.String(NAME_LENGTH), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("profile", sa.Text, nullable=False),  # JSON, monitoring's ProfileSet.to_dict()
    sa.Column("updated_ms", sa.BigInteger, nullable=False),
    sa.ForeignKeyConstraint(
        ["name", "version"], ["model_versions.name", "model_versions.version"], ondelete="CASCADE", onupdate="CASCADE"
    ),
)

# --- rollouts ------------------------------------------------------------------------------------

# One row per guarded rollout, named for the route it drives. `status` is the state's name (indexed:
# every replica asks for the active ones each tick); `state` holds the rest as JSON.
rollouts = sa.Table(
    "rollouts",
    metadata,
    sa.Column("name", sa.String(NAME_LENGTH), primary_key=True),
    sa.Column("model", sa.String(NAME_LENGTH), nullable=False),
    sa.Column("spec", sa.Text, nullable=False),  # the validated spec as JSON
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("state", sa.Text, nullable=False),  # JSON: step, weight, versions, original policy, last guards
    sa.Column("created_ms", sa.BigInteger, nullable=False),
    sa.Column("updated_ms", sa.BigInteger, nullable=False),
    sa.Column("updated_by", sa.String(ACTOR_LENGTH), nullable=False),
    sa.Index(None, "status"),
)

# Which replica drives a rollout, until when. Taken and renewed by conditional UPDATE/INSERT.
rollout_leases = sa.Table(
    "rollout_leases",
    metadata,
    sa.Column("name", sa.String(NAME_LENGTH), primary_key=True),
    sa.Column("holder", sa.String(ACTOR_LENGTH), nullable=False),
    sa.Column("expires_ms", sa.BigInteger, nullable=False),
)

# Append-only history of every rollout: start, resume, step, wait, promote, rollback, abort.
rollout_events = sa.Table(
    "rollout_events",
    metadata,
    sa.Column("id", _AUTO_ID, primary_key=True, autoincrement=True),
    sa.Column("rollout", sa.String(NAME_LENGTH), nullable=False),
    sa.Column("action", sa.String(16), nullable=False),
    sa.Column("actor", sa.String(ACTOR_LENGTH), nullable=False),
    sa.Column("at_ms", sa.BigInteger, nullable=False),
    sa.Column("detail", sa.Text, nullable=False),  # JSON
    sa.Index(None, "rollout", "id"),
    sqlite_autoincrement=True,
)

# --- access tokens (logic in registry/tokens.py) --------------------------------------------------

# API tokens by name; only the sha256 of each token is stored, never the token itself.
api_tokens = sa.Table(
    "api_tokens",
    metadata,
    sa.Column("id", _AUTO_ID, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(64), nullable=False, unique=True),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("token_hash", sa.CHAR(64), nullable=False, unique=True),  # sha256 hex of the token
    sa.Column("created_ms", sa.BigInteger, nullable=False),
    sa.Column("created_by", sa.String(ACTOR_LENGTH), nullable=False),
    sa.Column("revoked_ms", sa.BigInteger, nullable=True),  # NULL while the token is valid
    sa.CheckConstraint(sa.column("role").in_(("reader", "deployer", "admin")), name="role"),
    sqlite_autoincrement=True,
)

# Append-only: one row per token create or revoke, in the same transaction as the change.
token_audit = sa.Table(
    "token_audit",
    metadata,
    sa.Column("id", _AUTO_ID, primary_key=True, autoincrement=True),
    sa.Column("token_name", sa.String(64), nullable=False),
    sa.Column("action", sa.String(16), nullable=False),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("actor", sa.String(ACTOR_LENGTH), nullable=False),
    sa.Column("at_ms", sa.BigInteger, nullable=False),
    sa.CheckConstraint(sa.column("action").in_(("create", "revoke")), name="action"),
    sqlite_autoincrement=True,
)

# --- write audit (logic in registry/writelog.py) -------------------------------------------------

# Append-only: one row per write request that succeeded through the gateway's or the registry
# service's HTTP API (MLflow writes, artifact uploads, /admin writes, feature pushes), recorded before
# the response is sent. Routes, rollouts and tokens also keep their own detailed audits.
write_audit = sa.Table(
    "write_audit",
    metadata,
    sa.Column("id", _AUTO_ID, primary_key=True, autoincrement=True),
    sa.Column("at_ms", sa.BigInteger, nullable=False),
    sa.Column("actor", sa.String(ACTOR_LENGTH), nullable=False),
    sa.Column("method", sa.String(8), nullable=False),
    sa.Column("path", sa.String(512), nullable=False),
    sa.Column("status", sa.Integer, nullable=False),
    sqlite_autoincrement=True,
)
