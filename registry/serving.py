"""Serving metadata kept beside the model versions: feature views, the input features a version
declares, and reference profiles for drift. Stored as JSON the registry does not interpret (the
gateway validates with featurestore/monitoring before writing); every write bumps the change counter
so replicas pick it up with their next poll."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from registry.entities import ModelVersion
from registry.errors import InvalidParameterValue, ResourceDoesNotExist
from registry.schema import feature_views, model_version_features, model_versions, reference_profiles
from registry.store import RegistryStore, _bump_counter
from registry.versions import check_name, now_ms

MAX_JSON_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class FeatureViewRecord:
    name: str
    spec: dict[str, Any]
    updated_ms: int
    updated_by: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, **self.spec, "updated_ms": self.updated_ms, "updated_by": self.updated_by}


def _encode(label: str, value: object) -> str:
    text = json.dumps(value, separators=(",", ":"), allow_nan=False)
    if len(text) > MAX_JSON_BYTES:
        raise InvalidParameterValue(f"{label} is larger than {MAX_JSON_BYTES} bytes")
    return text


def _replace_features(conn: sa.Connection, name: str, version: int, refs: list[str]) -> None:
    text = _encode("feature list", refs)
    conn.execute(sa.delete(model_version_features).where(
        model_version_features.c.name == name, model_version_features.c.version == version))
    conn.execute(sa.insert(model_version_features).values(name=name, version=version, features=text))


def _replace_profile(conn: sa.Connection, name: str, version: int, profile: dict[str, Any]) -> None:
    text, now = _encode("reference profile", profile), now_ms()
    conn.execute(sa.delete(reference_profiles).where(
        reference_profiles.c.name == name, reference_profiles.c.version == version))
    conn.execute(sa.insert(reference_profiles).values(name=name, version=version, profile=text, updated_ms=now))


@dataclass(frozen=True, slots=True)
class VersionServing:
    """What a version is registered with beyond its file: declared features and a reference profile.
    `write` is passed to RegistryStore.create_model_version (via register_model_file), so they commit in
    the version's own transaction and a follower never sees the version without them."""

    features: list[str] | None = None
    profile: dict[str, Any] | None = None

    def write(self, conn: sa.Connection, mv: ModelVersion) -> None:
        """Raises InvalidParameterValue for a value too large to store (the version is then rolled back)."""
        if self.features is not None:
            _replace_features(conn, mv.name, mv.version, self.features)
        if self.profile is not None:
            _replace_profile(conn, mv.name, mv.version, self.profile)


class ServingMetadata:
    """Reads and writes over a RegistryStore's engine; each method is one transaction. Blocking."""

    def __init__(self, store: RegistryStore) -> None:
        self.store = store

    # --- feature views -------------------------------------------------------------------------

    def put_feature_view(self, name: str, spec: dict[str, Any], actor: str) -> FeatureViewRecord:
        check_name(name, "feature view")
        text, now = _encode("feature view", spec), now_ms()
        with self.store.transaction(write=True) as conn:
            _bump_counter(conn)
            conn.execute(sa.delete(feature_views).where(feature_views.c.name == name))
            conn.execute(sa.insert(feature_views).values(name=name, spec=text, updated_ms=now, updated_by=actor))
        return FeatureViewRecord(name, spec, now, actor)

    def list_feature_views(self) -> list[FeatureViewRecord]:
        with self.store.transaction() as conn:
            rows = conn.execute(sa.select(feature_views).order_by(feature_views.c.name)).all()
        return [FeatureViewRecord(r.name, json.loads(r.spec), r.updated_ms, r.updated_by) for r in rows]

    def delete_feature_view(self, name: str) -> None:
        with self.store.transaction(write=True) as conn:
            _bump_counter(conn)
            if conn.execute(sa.delete(feature_views).where(feature_views.c.name == name)).rowcount == 0:
                raise ResourceDoesNotExist(f"Feature view {name!r} not found")

    # --- declared features -----------------------------------------------------------------------

    def set_model_features(self, name: str, version: int, refs: list[str]) -> None:
        _encode("feature list", refs)  # too large: refused before the transaction
        with self.store.transaction(write=True) as conn:
            _bump_counter(conn)
            self._require_version(conn, name, version)
            _replace_features(conn, name, version, refs)

    def get_model_features(self, name: str, version: int) -> tuple[str, ...] | None:
        """The declared input features of a version, in input-column order; None if it declares none."""
        with self.store.transaction() as conn:
            text = conn.execute(sa.select(model_version_features.c.features).where(
                model_version_features.c.name == name, model_version_features.c.version == version)).scalar()
        return tuple(json.loads(text)) if text is not None else None

    # --- reference profiles ----------------------------------------------------------------------

    def put_reference_profile(self, name: str, version: int, profile: dict[str, Any]) -> None:
        _encode("reference profile", profile)  # too large: refused before the transaction
        with self.store.transaction(write=True) as conn:
            _bump_counter(conn)
            self._require_version(conn, name, version)
            _replace_profile(conn, name, version, profile)

    def get_reference_profile(self, name: str, version: int) -> dict[str, Any] | None:
        with self.store.transaction() as conn:
            text = conn.execute(sa.select(reference_profiles.c.profile).where(
                reference_profiles.c.name == name, reference_profiles.c.version == version)).scalar()
        return dict(json.loads(text)) if text is not None else None

    @staticmethod
    def _require_version(conn: sa.Connection, name: str, version: int) -> None:
        found = conn.execute(sa.select(model_versions.c.version).where(
            model_versions.c.name == name, model_versions.c.version == version)).first()
        if found is None:
            raise ResourceDoesNotExist(f"Model version {version} of {name!r} not found")
