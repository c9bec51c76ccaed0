"""register_model_file against real stores: a valid file becomes a version, a bad one leaves no trace."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from onnx import TensorProto, helper

from registry.artifacts import ArtifactStore
from registry.entities import TensorSpec
from registry.errors import InvalidModelFile, InvalidParameterValue, ResourceDoesNotExist
from registry.registration import register_model_file
from registry.store import RegistryStore


def blob_files(artifacts: ArtifactStore) -> list[Path]:
    return [p for p in (artifacts.root / "blobs").rglob("*") if p.is_file()]


def assert_nothing_written(store: RegistryStore, artifacts: ArtifactStore, counter: int) -> None:
    assert blob_files(artifacts) == []
    assert store.list_registered_models() == []
    assert store.change_counter() == counter


def test_valid_file_becomes_a_version(
    registry_store: RegistryStore, artifact_store: ArtifactStore, demo_onnx_bytes: bytes
) -> None:
    """A valid model is stored by digest and recorded as version 1 with its extracted signature."""
    mv = register_model_file(registry_store, artifact_store, "demo", demo_onnx_bytes, source="upload", tags={"k": "v"})
    assert (mv.name, mv.version, mv.stage, mv.source, mv.tags) == ("demo", 1, "None", "upload", {"k": "v"})
    assert mv.artifact_sha256 == hashlib.sha256(demo_onnx_bytes).hexdigest()
    assert mv.signature.inputs == (TensorSpec("x", "FP32", (-1, 4)),)
    assert artifact_store.read_bytes(mv.artifact_sha256) == demo_onnx_bytes
    assert registry_store.get_model_version("demo", 1) == mv


def test_same_bytes_twice_share_one_blob(
    registry_store: RegistryStore, artifact_store: ArtifactStore, demo_onnx_bytes: bytes
) -> None:
    """Registering identical bytes again makes version 2 over the same single blob."""
    first = register_model_file(registry_store, artifact_store, "demo", demo_onnx_bytes)
    second = register_model_file(registry_store, artifact_store, "demo", demo_onnx_bytes)
    assert (first.version, second.version) == (1, 2)
    assert first.artifact_sha256 == second.artifact_sha256
    assert len(blob_files(artifact_store)) == 1


@pytest.mark.parametrize("kind", ["garbage", "empty", "truncated"])
def test_corrupt_file_leaves_no_blob_and_no_rows(
    registry_store: RegistryStore, artifact_store: ArtifactStore, demo_onnx_bytes: bytes, kind: str
) -> None:
    """A corrupt file raises InvalidModelFile and writes no blob, no model, no version, no counter bump."""
    data = {"garbage": b"\x00not onnx\xff" * 10, "empty": b"", "truncated": demo_onnx_bytes[:-7]}[kind]
    counter = registry_store.change_counter()
    with pytest.raises(InvalidModelFile):
        register_model_file(registry_store, artifact_store, "demo", data)
    assert_nothing_written(registry_store, artifact_store, counter)


def test_model_onnxruntime_cannot_load_is_refused(registry_store: RegistryStore, artifact_store: ArtifactStore) -> None:
    """A model that passes onnx.checker but not onnxruntime is refused before anything is written."""
    model = helper.make_model(
        helper.make_graph(
            [helper.make_node("Frobnicate", ["x"], ["y"], domain="com.example")],
            "g",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
        ),
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)],
    )
    model.ir_version = 9
    counter = registry_store.change_counter()
    with pytest.raises(InvalidModelFile, match="onnxruntime"):
        register_model_file(registry_store, artifact_store, "demo", model.SerializeToString())
    assert_nothing_written(registry_store, artifact_store, counter)


def test_database_refusal_removes_the_new_blob(
    registry_store: RegistryStore, artifact_store: ArtifactStore, demo_onnx_bytes: bytes
) -> None:
    """When the store refuses the version after the blob was written, the blob this call added is removed."""
    counter = registry_store.change_counter()
    with pytest.raises(InvalidParameterValue):
        register_model_file(registry_store, artifact_store, "bad/name", demo_onnx_bytes)
    assert_nothing_written(registry_store, artifact_store, counter)


def test_database_refusal_keeps_a_blob_in_use(
    registry_store: RegistryStore, artifact_store: ArtifactStore, demo_onnx_bytes: bytes
) -> None:
    """A failed registration keeps a blob that an earlier version already uses."""
    first = register_model_file(registry_store, artifact_store, "demo", demo_onnx_bytes)
    with pytest.raises(InvalidParameterValue):
        register_model_file(registry_store, artifact_store, "bad/name", demo_onnx_bytes)
    assert artifact_store.read_bytes(first.artifact_sha256) == demo_onnx_bytes
    with pytest.raises(ResourceDoesNotExist):
        registry_store.get_registered_model("bad/name")
