"""The registry's tables and indexes (SQLAlchemy Core), in one place for SQLite and PostgreSQL.

Experiments and runs will join this module as their own tables; nothing here depends on them.
"""

from __future__ import annotations

import sqlalchemy as sa

from registry.entities import AUDIT_ACTIONS, STAGES

# Stable constraint names, so a later migration can refer to them on both dialects.
NAMING_CONVENTION: dict[str, str] = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)

# MLflow's limits: names 256, tag keys 250, tag values 5000 characters.
NAME_LENGTH = 256
TAG_KEY_LENGTH = 250
RUN_ID_LENGTH = 64
ACTOR_LENGTH = 256

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
    # SQLite assigns ids only to an INTEGER PRIMARY KEY (a 64-bit rowid alias), never to BIGINT.
    sa.Column(
        "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True
    ),
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
