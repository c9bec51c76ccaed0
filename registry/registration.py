"""register_model_file: validate an ONNX file, store its blob, record the version with its serving
metadata in one transaction; nothing half-written."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

from registry.artifacts import ArtifactStore
from registry.entities import ModelVersion
from registry.onnxinfo import check_loadable, inspect_onnx
from registry.serving import VersionServing
from registry.store import RegistryStore


def register_model_file(
    store: RegistryStore,
    artifacts: ArtifactStore,
    name: str,
    data: bytes,
    *,
    source: str | None = None,
    run_id: str | None = None,
    description: str = "",
    tags: Mapping[str, str] | None = None,
    create_model: bool = True,
    serving: VersionServing | None = None,
) -> ModelVersion:
    """Register `data` (ONNX bytes) as the next version of `name`, creating the model if needed (with
    `create_model`; otherwise a missing model raises ResourceDoesNotExist, as MLflow's create_model_version).
    `serving` (declared features, reference profile) commits in the same transaction as the version.

    Raises InvalidModelFile before anything is written, and any store error after removing a blob
    this call added.
    """
    signature = inspect_onnx(data)
    check_loadable(data)
    digest = hashlib.sha256(data).hexdigest()
    existed = artifacts.exists(digest)
    artifacts.put_bytes(data)
    try:
        return store.create_model_version(
            name,
            digest,
            signature,
            source=source,
            run_id=run_id,
            description=description,
            tags=tags,
            create_model=create_model,
            then=serving.write if serving is not None else None,
        )
    except BaseException:
        # A blob that an earlier version already uses must stay; only our own write is undone.
        if not existed:
            artifacts.delete(digest)
        raise
