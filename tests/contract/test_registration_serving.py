"""Registering a version with its declared features and reference profile is one transaction, on SQLite
and PostgreSQL: a follower sees all of it or none of it."""

from __future__ import annotations

from pathlib import Path

import pytest

from registry.artifacts import ArtifactStore
from registry.errors import InvalidParameterValue
from registry.registration import register_model_file
from registry.serving import MAX_JSON_BYTES, ServingMetadata, VersionServing
from registry.store import RegistryStore

FEATURES = ["user:age", "user:score", "request:a", "request:b"]
PROFILE = {"features": [{"name": "user:age", "edges": [0.0, 1.0], "shares": [0.5, 0.5, 0.0]}]}


def blob_files(artifacts: ArtifactStore) -> list[Path]:
    return [p for p in (artifacts.root / "blobs").rglob("*") if p.is_file()]


def test_version_features_and_profile_arrive_in_one_change(
    registry_store: RegistryStore, artifact_store: ArtifactStore, demo_onnx_bytes: bytes
) -> None:
    """The version, its features and its profile are all stored, and the change counter moves once:
    a follower polling the counter never syncs a state holding the version without the rest."""
    before = registry_store.change_counter()
    mv = register_model_file(registry_store, artifact_store, "demo", demo_onnx_bytes,
                             serving=VersionServing(FEATURES, PROFILE))
    meta = ServingMetadata(registry_store)
    assert meta.get_model_features("demo", mv.version) == tuple(FEATURES)
    assert meta.get_reference_profile("demo", mv.version) == PROFILE
    assert registry_store.change_counter() == before + 1


def test_failure_in_the_last_part_leaves_no_version(
    registry_store: RegistryStore, artifact_store: ArtifactStore, demo_onnx_bytes: bytes
) -> None:
    """A profile the registry refuses (too large), written after the version row and the features,
    rolls everything back: no model, no version, no features, no blob, no counter change."""
    register_model_file(registry_store, artifact_store, "other", demo_onnx_bytes)  # same bytes: one blob
    blobs = blob_files(artifact_store)
    before = registry_store.change_counter()
    huge = {"features": [{"name": "x" * (MAX_JSON_BYTES + 1)}]}
    with pytest.raises(InvalidParameterValue, match="reference profile is larger"):
        register_model_file(registry_store, artifact_store, "demo", demo_onnx_bytes,
                            serving=VersionServing(FEATURES, huge))
    assert [m.name for m in registry_store.list_registered_models()] == ["other"]
    assert ServingMetadata(registry_store).get_model_features("demo", 1) is None
    assert registry_store.change_counter() == before
    assert blob_files(artifact_store) == blobs  # the blob "other" uses stays; nothing new


def test_failure_removes_a_blob_it_added(
    registry_store: RegistryStore, artifact_store: ArtifactStore, demo_onnx_bytes: bytes
) -> None:
    """When the refused version was the blob's first user, its file is removed too."""
    with pytest.raises(InvalidParameterValue):
        register_model_file(registry_store, artifact_store, "demo", demo_onnx_bytes,
                            serving=VersionServing(None, {"x": "y" * (MAX_JSON_BYTES + 1)}))
    assert registry_store.list_registered_models() == []
    assert blob_files(artifact_store) == []


def test_next_version_after_a_rollback_takes_the_free_number(
    registry_store: RegistryStore, artifact_store: ArtifactStore, demo_onnx_bytes: bytes
) -> None:
    """A rolled-back registration consumes no version number."""
    register_model_file(registry_store, artifact_store, "demo", demo_onnx_bytes)
    with pytest.raises(InvalidParameterValue):
        register_model_file(registry_store, artifact_store, "demo", demo_onnx_bytes,
                            serving=VersionServing(FEATURES, {"x": "y" * (MAX_JSON_BYTES + 1)}))
    mv = register_model_file(registry_store, artifact_store, "demo", demo_onnx_bytes, serving=VersionServing(FEATURES))
    assert mv.version == 2
    assert ServingMetadata(registry_store).get_model_features("demo", 2) == tuple(FEATURES)
    assert ServingMetadata(registry_store).get_reference_profile("demo", 2) is None
