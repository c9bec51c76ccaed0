"""Model versions created through the MLflow API: find the ONNX file behind a version's `source` in the
artifact store and register it exactly as `gateway models register` does, so one registry serves both.

The rule: a source resolves to a path under the artifact store's files when it is `runs:/<run_id>/<path>`
(through the run's mlflow-artifacts:/ artifact_uri), `mlflow-artifacts:/<path>` (or
`mlflow-artifacts://host/<path>`), or a relative path. If that path is a `.onnx` file, or a directory
holding exactly one `.onnx` file (searched recursively), the version is servable: the file is validated,
stored as a content-addressed blob with its signature, and recorded through register_model_file. Any
other source (no .onnx file, s3://, an absolute path on some client's disk) still creates the version,
as MLflow does, but without a blob: it is recorded, listed and promotable, and never served.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import PurePosixPath
from urllib.parse import urlsplit

from registry.artifacts import ArtifactStore
from registry.entities import ModelVersion
from registry.errors import InvalidParameterValue
from registry.registration import register_model_file
from registry.store import RegistryStore
from registry.tracking import TrackingStore

MLFLOW_ARTIFACTS = "mlflow-artifacts"
ONNX_SUFFIX = ".onnx"
_MAX_DEPTH = 8  # how deep a source directory is searched for its .onnx file
_MAX_ENTRIES = 10_000


def artifact_relpath(uri: str) -> str | None:
    """The artifact-store path of an mlflow-artifacts URI or a relative path; None for anything else
    (another scheme, or an absolute path that only some client's filesystem knows)."""
    parts = urlsplit(uri)
    if parts.scheme == MLFLOW_ARTIFACTS:
        return parts.path.lstrip("/")
    if parts.scheme or uri.startswith("/"):
        return None
    return uri


def resolve_source(tracking: TrackingStore, source: str) -> str | None:
    """The artifact-store path `source` names, or None when it names nothing in this store.
    Raises ResourceDoesNotExist for a runs:/ source whose run does not exist."""
    parts = urlsplit(source)
    if parts.scheme != "runs":
        return artifact_relpath(source)
    # runs:/<run_id>/<path>: the path is relative to the run's artifact root.
    run_id, _, inner = (parts.netloc + parts.path).lstrip("/").partition("/")
    if not run_id:
        raise InvalidParameterValue(f"Invalid source {source!r}: expected runs:/<run_id>/<path>")
    root = artifact_relpath(tracking.get_run(run_id).info.artifact_uri)
    if root is None:
        return None
    return str(PurePosixPath(root, inner)) if inner.strip("/") else root


def find_onnx(artifacts: ArtifactStore, relpath: str) -> str | None:
    """The path of the one .onnx file at or under `relpath`; None when there is none. Raises
    InvalidParameterValue when there are several, naming them (which one to serve would be a guess)."""
    path = artifacts.resolve(relpath)
    if path.is_file():
        return relpath if relpath.endswith(ONNX_SUFFIX) else None
    found: list[str] = []
    pending = [(relpath, 0)]
    seen = 0
    while pending:
        directory, depth = pending.pop()
        for name, is_dir, _size in artifacts.list_dir(directory):
            seen += 1
            child = f"{directory}/{name}" if directory else name
            if is_dir and depth < _MAX_DEPTH:
                pending.append((child, depth + 1))
            elif not is_dir and name.endswith(ONNX_SUFFIX):
                found.append(child)
        if seen > _MAX_ENTRIES:
            break
    if len(found) > 1:
        listed = ", ".join(sorted(found)[:5])
        raise InvalidParameterValue(
            f"Source {relpath!r} holds {len(found)} .onnx files ({listed}): point the source at one of them"
        )
    return found[0] if found else None


def create_version_from_source(
    store: RegistryStore,
    tracking: TrackingStore,
    artifacts: ArtifactStore,
    name: str,
    source: str,
    *,
    run_id: str | None = None,
    description: str = "",
    tags: Mapping[str, str] | None = None,
) -> ModelVersion:
    """MLflow's create_model_version: the next version of existing model `name` from `source` (kept
    verbatim), servable when the source holds one ONNX file (see the module docstring).

    Raises ResourceDoesNotExist for a missing model or runs:/ run, InvalidModelFile for an .onnx file
    that does not validate, InvalidParameterValue for a source holding several .onnx files.
    """
    store.get_registered_model(name)  # MLflow never creates the model here
    relpath = resolve_source(tracking, source)
    onnx_path = find_onnx(artifacts, relpath) if relpath else None  # "" would search the whole store
    if onnx_path is None:
        return store.create_unservable_model_version(
            name, source, run_id=run_id, description=description, tags=tags
        )
    return register_model_file(
        store,
        artifacts,
        name,
        artifacts.read_file(onnx_path),
        source=source,
        run_id=run_id,
        description=description,
        tags=tags,
        create_model=False,
    )


def download_uri(tracking: TrackingStore, source: str) -> str:
    """Where a version's files can be downloaded from: runs:/ sources become the run's artifact URI."""
    parts = urlsplit(source)
    if parts.scheme != "runs":
        return source
    run_id, _, inner = (parts.netloc + parts.path).lstrip("/").partition("/")
    root = tracking.get_run(run_id).info.artifact_uri.rstrip("/")
    return f"{root}/{inner}" if inner.strip("/") else root
