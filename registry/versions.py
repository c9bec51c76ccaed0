"""Registered models and their versions as functions over a Connection in the caller's transaction:
validation, rows -> entities, and mutations (RegistryStore bumps the change counter before each).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from registry.dialects import binary_collation, dialect_insert
from registry.entities import STAGES, ModelVersion, RegisteredModel, Signature, Stage
from registry.errors import InvalidParameterValue, ResourceAlreadyExists, ResourceDoesNotExist
from registry.schema import (
    NAME_LENGTH,
    TAG_KEY_LENGTH,
    model_aliases,
    model_version_tags,
    model_versions,
    registered_model_tags,
    registered_models,
    version_high_water,
)

CHAMPION = "champion"
LATEST = "latest"  # a version ref meaning the newest version; reserved as an alias name, as in MLflow
TAG_VALUE_LENGTH = 5000
NO_ARTIFACT = ""  # artifact_sha256 of a version whose source holds no ONNX file: recorded, never served

_NAME_RE = re.compile(r"[A-Za-z0-9_.\-]+")
_ALIAS_RE = re.compile(r"[A-Za-z0-9_\-]+")
_VERSION_LIKE_ALIAS_RE = re.compile(r"[vV]?\d+")  # MLflow reserves these so "v3" and "3" stay version refs
SHA256_RE = re.compile(r"[0-9a-f]{64}")
STAGE_BY_LOWER: dict[str, Stage] = {s.lower(): s for s in STAGES}
# Serving considers only versions with an ONNX blob; PostgreSQL pads CHAR(64), and compares without padding.
SERVABLE: sa.ColumnElement[bool] = model_versions.c.artifact_sha256 != NO_ARTIFACT


# --- validation --------------------------------------------------------------------------------


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def check_name(name: str, noun: str = "registered model") -> None:
    if not name:
        raise InvalidParameterValue(f"{noun.capitalize()} name cannot be empty")
    if len(name) > NAME_LENGTH:
        raise InvalidParameterValue(f"{noun.capitalize()} name is longer than {NAME_LENGTH} characters")
    if not _NAME_RE.fullmatch(name):
        raise InvalidParameterValue(
            f"Invalid {noun} name {name!r}: use only letters, digits, '_', '.' and '-'"
        )


def check_alias(alias: str) -> None:
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


def check_text(label: str, value: str, limit: int | None = None) -> None:
    # PostgreSQL text cannot hold NUL while SQLite can; refusing it keeps both backends alike.
    if "\x00" in value:
        raise InvalidParameterValue(f"{label} contains a NUL character")
    if limit is not None and len(value) > limit:
        raise InvalidParameterValue(f"{label} is longer than {limit} characters")


def check_tags(tags: Mapping[str, str] | None, value_limit: int = TAG_VALUE_LENGTH) -> dict[str, str]:
    checked = dict(tags or {})
    for key, value in checked.items():
        if not key:
            raise InvalidParameterValue("Tag key cannot be empty")
        check_text(f"Tag key {key!r}", key, TAG_KEY_LENGTH)
        check_text(f"Tag {key!r} value", value, value_limit)
    return checked


def normalise_stage(stage: str) -> Stage:
    try:
        return STAGE_BY_LOWER[stage.lower()]
    except KeyError:
        raise InvalidParameterValue(f"Invalid stage {stage!r}: expected one of {', '.join(STAGES)}") from None


# --- rows -> entities ------------------------------------------------------------------------


def model_row(conn: Connection, name: str) -> sa.Row[Any]:
    row = conn.execute(sa.select(registered_models).where(registered_models.c.name == name)).first()
    if row is None:
        raise ResourceDoesNotExist(f"Registered model {name!r} not found")
    return row


def model_exists(conn: Connection, name: str) -> bool:
    query = sa.select(registered_models.c.name).where(registered_models.c.name == name)
    return conn.execute(query).first() is not None


def model_tags(conn: Connection, names: Sequence[str] | None = None) -> dict[str, dict[str, str]]:
    """Tags by model name, of `names` only when given."""
    query = sa.select(registered_model_tags)
    if names is not None:
        query = query.where(registered_model_tags.c.name.in_(names))
    tags: dict[str, dict[str, str]] = {}
    for row in conn.execute(query):
        tags.setdefault(row.name, {})[row.key] = row.value
    return tags


def to_model(row: sa.Row[Any], tags: dict[str, str]) -> RegisteredModel:
    return RegisteredModel(
        name=row.name, description=row.description, created_ms=row.created_ms, updated_ms=row.updated_ms, tags=tags
    )


def versions_from_rows(conn: Connection, rows: Sequence[sa.Row[Any]]) -> list[ModelVersion]:
    """model_versions rows (of any models) as ModelVersions with their tags and aliases, in row order."""
    if not rows:
        return []
    names = sorted({row.name for row in rows})
    numbers = sorted({row.version for row in rows})
    tags: dict[tuple[str, int], dict[str, str]] = {}
    tag_query = sa.select(model_version_tags).where(
        model_version_tags.c.name.in_(names), model_version_tags.c.version.in_(numbers)
    )
    for tag in conn.execute(tag_query):
        tags.setdefault((tag.name, tag.version), {})[tag.key] = tag.value
    aliases: dict[tuple[str, int], list[str]] = {}
    alias_query = (
        sa.select(model_aliases)
        .where(model_aliases.c.name.in_(names), model_aliases.c.version.in_(numbers))
        .order_by(model_aliases.c.alias.collate(binary_collation(conn)))
    )
    for alias in conn.execute(alias_query):
        aliases.setdefault((alias.name, alias.version), []).append(alias.alias)
    return [
        ModelVersion(
            name=row.name,
            version=row.version,
            artifact_sha256=row.artifact_sha256.strip(),  # PostgreSQL pads an empty CHAR(64) with spaces
            signature=Signature.from_dict(json.loads(row.signature)),
            stage=normalise_stage(row.stage),
            created_ms=row.created_ms,
            updated_ms=row.updated_ms,
            source=row.source,
            run_id=row.run_id,
            description=row.description,
            tags=tags.get((row.name, row.version), {}),
            aliases=tuple(aliases.get((row.name, row.version), ())),
        )
        for row in rows
    ]


def load_versions(
    conn: Connection, name: str, *where: sa.ColumnElement[bool], newest_only: bool = False
) -> list[ModelVersion]:
    """Versions of `name` matching `where`, ascending (or only the newest), with their tags and aliases."""
    query = sa.select(model_versions).where(model_versions.c.name == name, *where)
    if newest_only:
        query = query.order_by(model_versions.c.version.desc()).limit(1)
    else:
        query = query.order_by(model_versions.c.version)
    return versions_from_rows(conn, conn.execute(query).all())


def one_version(conn: Connection, name: str, version: int) -> ModelVersion:
    found = load_versions(conn, name, model_versions.c.version == version)
    if not found:
        model_row(conn, name)  # a missing model gets the more useful message
        raise ResourceDoesNotExist(f"Model version {version} of {name!r} not found")
    return found[0]


def newest(conn: Connection, name: str, *where: sa.ColumnElement[bool]) -> ModelVersion | None:
    found = load_versions(conn, name, *where, newest_only=True)
    return found[0] if found else None


def by_alias(conn: Connection, name: str, alias: str) -> ModelVersion | None:
    number = sa.select(model_aliases.c.version).where(model_aliases.c.name == name, model_aliases.c.alias == alias)
    found = load_versions(conn, name, model_versions.c.version == number.scalar_subquery())
    return found[0] if found else None


def latest_per_stage(conn: Connection, name: str, stages: Sequence[Stage] = STAGES) -> list[ModelVersion]:
    """The newest version in each of `stages` that has one, in `stages` order (MLflow's latest_versions)."""
    found = [newest(conn, name, model_versions.c.stage == stage) for stage in dict.fromkeys(stages)]
    return [mv for mv in found if mv is not None]


# --- mutations (the caller has bumped the change counter) ----------------------------------------


def insert_model(conn: Connection, name: str, description: str, tags: dict[str, str]) -> RegisteredModel:
    if model_exists(conn, name):
        raise ResourceAlreadyExists(f"Registered model {name!r} already exists")
    now = now_ms()
    conn.execute(
        sa.insert(registered_models).values(name=name, description=description, created_ms=now, updated_ms=now)
    )
    if tags:
        conn.execute(sa.insert(registered_model_tags), [{"name": name, "key": k, "value": v} for k, v in tags.items()])
    return RegisteredModel(name=name, description=description, created_ms=now, updated_ms=now, tags=tags)


def insert_version(conn: Connection, draft: ModelVersion, create_model: bool) -> ModelVersion:
    """Insert `draft` as version max+1 of its model, stamped now."""
    if not model_exists(conn, draft.name):
        if not create_model:
            raise ResourceDoesNotExist(f"Registered model {draft.name!r} not found")
        insert_model(conn, draft.name, "", {})
    latest = conn.execute(
        sa.select(sa.func.max(model_versions.c.version)).where(model_versions.c.name == draft.name)
    ).scalar()
    deleted = conn.execute(
        sa.select(version_high_water.c.version).where(version_high_water.c.name == draft.name)
    ).scalar()
    now = now_ms()
    mv = replace(draft, version=max(latest or 0, deleted or 0) + 1, created_ms=now, updated_ms=now)
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
    touch_model(conn, mv.name, now)
    return mv


def touch_model(conn: Connection, name: str, at_ms: int) -> None:
    conn.execute(sa.update(registered_models).where(registered_models.c.name == name).values(updated_ms=at_ms))


def touch_version(conn: Connection, name: str, version: int, at_ms: int) -> None:
    conn.execute(
        sa.update(model_versions)
        .where(model_versions.c.name == name, model_versions.c.version == version)
        .values(updated_ms=at_ms)
    )


def rename_model(conn: Connection, name: str, new_name: str) -> None:
    """Rename the model; its versions, tags and aliases follow (ON UPDATE CASCADE). Stored route policies
    name models by name and are not rewritten."""
    model_row(conn, name)
    if new_name != name and model_exists(conn, new_name):
        raise ResourceAlreadyExists(f"Registered model {new_name!r} already exists")
    conn.execute(
        sa.update(registered_models).where(registered_models.c.name == name).values(name=new_name, updated_ms=now_ms())
    )


def delete_model(conn: Connection, name: str) -> None:
    """Delete the model with its versions, tags and aliases (ON DELETE CASCADE); blobs stay in the store.
    A model created later under the same name numbers its versions after the deleted ones."""
    model_row(conn, name)
    latest = conn.execute(sa.select(sa.func.max(model_versions.c.version)).where(model_versions.c.name == name)).scalar()
    if latest:
        _retire(conn, name, latest)
    conn.execute(sa.delete(registered_models).where(registered_models.c.name == name))


def _retire(conn: Connection, name: str, version: int) -> None:
    """Remember the highest number deleted from `name`, so no later version of that name reuses it."""
    stmt = dialect_insert(conn, version_high_water).values(name=name, version=version)
    conn.execute(stmt.on_conflict_do_update(
        index_elements=["name"],
        set_={"version": sa.case(
            (stmt.excluded.version > version_high_water.c.version, stmt.excluded.version),
            else_=version_high_water.c.version,
        )},
    ))


def set_model_tag(conn: Connection, name: str, key: str, value: str) -> None:
    model_row(conn, name)
    stmt = dialect_insert(conn, registered_model_tags).values(name=name, key=key, value=value)
    conn.execute(stmt.on_conflict_do_update(index_elements=["name", "key"], set_={"value": value}))
    touch_model(conn, name, now_ms())


def delete_model_tag(conn: Connection, name: str, key: str) -> None:
    """Remove a model tag; a missing tag is not an error, a missing model is."""
    model_row(conn, name)
    t = registered_model_tags
    conn.execute(sa.delete(t).where(t.c.name == name, t.c.key == key))


def set_version_tag(conn: Connection, name: str, version: int, key: str, value: str) -> None:
    one_version(conn, name, version)
    stmt = dialect_insert(conn, model_version_tags).values(name=name, version=version, key=key, value=value)
    conn.execute(stmt.on_conflict_do_update(index_elements=["name", "version", "key"], set_={"value": value}))
    touch_version(conn, name, version, now_ms())


def delete_version_tag(conn: Connection, name: str, version: int, key: str) -> None:
    one_version(conn, name, version)
    t = model_version_tags
    conn.execute(sa.delete(t).where(t.c.name == name, t.c.version == version, t.c.key == key))


def delete_version(conn: Connection, name: str, version: int) -> None:
    """Delete one version with its tags and aliases; its number is never issued again, so (name, version)
    always means one artifact to the gateway's model pool."""
    one_version(conn, name, version)
    _retire(conn, name, version)
    conn.execute(sa.delete(model_versions).where(model_versions.c.name == name, model_versions.c.version == version))
    touch_model(conn, name, now_ms())
