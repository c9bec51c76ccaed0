"""HTTP for the MLflow REST API subset and the mlflow-artifacts proxy: routes that bind each endpoint to
a blocking handler run in Starlette's threadpool, the {code: status} table, and a standalone app.

GET requests carry their message in the query string, the others as a JSON body. Errors are MLflow's
{"error_code", "message"}; an unknown path under either prefix is 404 ENDPOINT_NOT_FOUND, never a 5xx
(which the client retries for minutes).
"""

from __future__ import annotations

import errno
import json
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from registry.artifacts import ArtifactStore, Upload
from registry.errors import ArtifactTooLarge, InvalidParameterValue, RegistryError, ResourceDoesNotExist
from registry.handlers import Handler, MlflowHandlers
from registry.store import RegistryStore
from registry.wire import Message

log = logging.getLogger("registry.api")

API = "/api/2.0/mlflow"
ARTIFACTS = "/api/2.0/mlflow-artifacts/artifacts"
BLOBS = "/api/2.0/gateway/blobs"  # GET BLOBS/<sha256>: a model file by content hash, for gateway replicas
ENDPOINT_NOT_FOUND = "ENDPOINT_NOT_FOUND"
INTERNAL_ERROR = "INTERNAL_ERROR"
# The one table from error code to HTTP status, as the real MLflow server answers.
STATUS_BY_CODE: dict[str, int] = {
    "RESOURCE_DOES_NOT_EXIST": 404,
    "INVALID_PARAMETER_VALUE": 400,
    "RESOURCE_ALREADY_EXISTS": 400,
    "TEMPORARILY_UNAVAILABLE": 503,
    "RESOURCE_EXHAUSTED": 413,  # an artifact upload over the size limit
    ENDPOINT_NOT_FOUND: 404,
    INTERNAL_ERROR: 500,
}
# OS errors that mean the path itself is unusable (a component too long, a file where a directory is
# needed, a symlink loop): the caller's mistake, answered 400 like any invalid artifact path.
_BAD_PATH_ERRNOS = frozenset({errno.ENAMETOOLONG, errno.ENOTDIR, errno.EEXIST, errno.EISDIR, errno.ELOOP})
_ALL_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
_JSON_HEADERS = {"content-type": "application/json"}
DEFAULT_MAX_ARTIFACT_BYTES = 1024**3


def error_response(code: str, message: str) -> Response:
    body = orjson.dumps({"error_code": code, "message": message})
    return Response(body, STATUS_BY_CODE.get(code, 500), headers=_JSON_HEADERS)


def _json(body: dict[str, Any]) -> Response:
    return Response(orjson.dumps(body), 200, headers=_JSON_HEADERS)


async def _message(request: Request) -> Message:
    if request.method == "GET":
        return Message.from_query(request.query_params.multi_items())
    body = await request.body()
    if not body.strip():
        return Message({})
    try:
        fields = json.loads(body)  # the stdlib parser reads NaN and Infinity, which the client may send
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidParameterValue(f"Malformed request body: not JSON ({exc})") from None
    if not isinstance(fields, dict):
        raise InvalidParameterValue("Malformed request body: expected a JSON object")
    return Message(fields)


def _endpoint(handler: Handler) -> Callable[[Request], Any]:
    async def endpoint(request: Request) -> Response:
        try:
            return _json(await run_in_threadpool(handler, await _message(request)))
        except RegistryError as exc:
            return error_response(exc.code, exc.message)
        except Exception:
            log.exception("%s %s failed", request.method, request.url.path)
            return error_response(INTERNAL_ERROR, "Internal error; see the server log")

    return endpoint


def _bad_path(relpath: str, exc: OSError) -> Response:
    """400 for an artifact path the filesystem refuses; any other OS error (disk full...) propagates."""
    if exc.errno not in _BAD_PATH_ERRNOS:
        raise exc
    return error_response(InvalidParameterValue.code, f"Artifact path {relpath!r} cannot be used: {exc.strerror}")


async def _not_found(request: Request) -> Response:
    return error_response(ENDPOINT_NOT_FOUND, f"No endpoint {request.method} {request.url.path}")


class ArtifactProxy:
    """The mlflow-artifacts endpoints over the ArtifactStore's path-keyed files (escape-proof).
    Uploads stream to a temp file (memory stays flat for any size) and stop at `max_bytes`."""

    def __init__(self, artifacts: ArtifactStore, max_bytes: int = DEFAULT_MAX_ARTIFACT_BYTES) -> None:
        self.artifacts = artifacts
        self.max_bytes = max_bytes

    async def upload(self, request: Request) -> Response:
        relpath = request.path_params["path"]
        try:
            declared = request.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > self.max_bytes:  # refuse before reading a byte
                raise self._too_large()
            upload = await run_in_threadpool(self.artifacts.open_upload, relpath)
            await self._receive(request, upload)
        except RegistryError as exc:
            return error_response(exc.code, exc.message)
        except OSError as exc:
            return _bad_path(relpath, exc)
        except ClientDisconnect:  # the upload was aborted and removed; nobody reads this answer
            return Response(b"", 400)
        return Response(b"", 200)  # what MLflow answers; the client only checks the status

    async def _receive(self, request: Request, upload: Upload) -> None:
        """Stream the body into `upload` and commit it; on any failure (too large, client gone) the
        temp file is removed and nothing appears at the path."""
        try:
            size = 0
            async for chunk in request.stream():
                size += len(chunk)
                if size > self.max_bytes:
                    raise self._too_large()
                if chunk:
                    await run_in_threadpool(upload.write, chunk)
            await run_in_threadpool(upload.commit)
        except BaseException:
            await run_in_threadpool(upload.abort)
            raise

    def _too_large(self) -> ArtifactTooLarge:
        return ArtifactTooLarge(f"Artifact upload exceeds the limit of {self.max_bytes} bytes (--max-artifact-bytes)")

    async def download(self, request: Request) -> Response:
        relpath = request.path_params["path"]
        try:
            path = await run_in_threadpool(self.artifacts.resolve, relpath)
            if not await run_in_threadpool(path.is_file):
                raise ResourceDoesNotExist(f"Artifact {relpath!r} not found")
        except RegistryError as exc:
            return error_response(exc.code, exc.message)
        except OSError as exc:
            return _bad_path(relpath, exc)
        return FileResponse(path)

    async def blob(self, request: Request) -> Response:
        """A content-addressed model file. Read-only; the digest must be 64 lowercase hex digits, so no
        request names anything outside blobs/."""
        digest = request.path_params["sha256"]
        try:
            path = self.artifacts.path_for(digest)
            if not await run_in_threadpool(path.is_file):
                raise ResourceDoesNotExist(f"Artifact {digest} not found")
        except RegistryError as exc:
            return error_response(exc.code, exc.message)
        return FileResponse(path, media_type="application/octet-stream")

    async def list(self, request: Request) -> Response:
        relpath = request.query_params.get("path", "").strip("/")
        try:
            entries = await run_in_threadpool(self.artifacts.list_dir, relpath)
        except RegistryError as exc:
            return error_response(exc.code, exc.message)
        except OSError as exc:
            return _bad_path(relpath, exc)
        files = [
            {"path": name, "is_dir": True} if is_dir else {"path": name, "is_dir": False, "file_size": size}
            for name, is_dir, size in entries
        ]
        return _json({"files": files})


def create_mlflow_routes(store: RegistryStore, artifacts: ArtifactStore, *,
                         max_artifact_bytes: int = DEFAULT_MAX_ARTIFACT_BYTES) -> list[BaseRoute]:
    """Routes for /api/2.0/mlflow/..., /api/2.0/mlflow-artifacts/... and the blob read under /api/2.0/gateway/,
    ending in catch-alls that answer 404 ENDPOINT_NOT_FOUND (also for a known path with the wrong method, as
    MLflow does). Mount them before any catch-all of the host app."""
    h = MlflowHandlers(store, artifacts)
    table: list[tuple[str, list[str], Handler]] = [
        ("/experiments/create", ["POST"], h.create_experiment),
        ("/experiments/get", ["GET"], h.get_experiment),
        ("/experiments/get-by-name", ["GET"], h.get_experiment_by_name),
        ("/experiments/search", ["GET", "POST"], h.search_experiments),
        ("/experiments/update", ["POST"], h.update_experiment),
        ("/experiments/delete", ["POST"], h.delete_experiment),
        ("/experiments/restore", ["POST"], h.restore_experiment),
        ("/experiments/set-experiment-tag", ["POST"], h.set_experiment_tag),
        ("/experiments/delete-experiment-tag", ["POST"], h.delete_experiment_tag),
        ("/runs/create", ["POST"], h.create_run),
        ("/runs/get", ["GET"], h.get_run),
        ("/runs/update", ["POST"], h.update_run),
        ("/runs/delete", ["POST"], h.delete_run),
        ("/runs/restore", ["POST"], h.restore_run),
        ("/runs/search", ["GET", "POST"], h.search_runs),
        ("/runs/log-parameter", ["POST"], h.log_parameter),
        ("/runs/log-metric", ["POST"], h.log_metric),
        ("/runs/log-batch", ["POST"], h.log_batch),
        ("/runs/set-tag", ["POST"], h.set_tag),
        ("/runs/delete-tag", ["POST"], h.delete_tag),
        ("/runs/log-inputs", ["POST"], h.log_inputs),
        ("/metrics/get-history", ["GET"], h.get_metric_history),
        ("/logged-models/search", ["POST"], h.search_logged_models),
        ("/registered-models/create", ["POST"], h.create_registered_model),
        ("/registered-models/get", ["GET"], h.get_registered_model),
        ("/registered-models/rename", ["POST"], h.rename_registered_model),
        ("/registered-models/update", ["PATCH"], h.update_registered_model),
        ("/registered-models/delete", ["DELETE"], h.delete_registered_model),
        ("/registered-models/search", ["GET"], h.search_registered_models),
        ("/registered-models/get-latest-versions", ["GET", "POST"], h.get_latest_versions),
        ("/registered-models/set-tag", ["POST"], h.set_registered_model_tag),
        ("/registered-models/delete-tag", ["DELETE"], h.delete_registered_model_tag),
        ("/registered-models/alias", ["POST"], h.set_alias),
        ("/registered-models/alias", ["DELETE"], h.delete_alias),
        ("/registered-models/alias", ["GET"], h.get_version_by_alias),
        ("/model-versions/create", ["POST"], h.create_model_version),
        ("/model-versions/get", ["GET"], h.get_model_version),
        ("/model-versions/update", ["PATCH"], h.update_model_version),
        ("/model-versions/delete", ["DELETE"], h.delete_model_version),
        ("/model-versions/search", ["GET"], h.search_model_versions),
        ("/model-versions/transition-stage", ["POST"], h.transition_stage),
        ("/model-versions/set-tag", ["POST"], h.set_model_version_tag),
        ("/model-versions/delete-tag", ["DELETE"], h.delete_model_version_tag),
        ("/model-versions/get-download-uri", ["GET"], h.get_download_uri),
    ]
    proxy = ArtifactProxy(artifacts, max_artifact_bytes)
    routes: list[BaseRoute] = [Route(API + path, _endpoint(handler), methods=methods) for path, methods, handler in table]
    routes += [
        Route(ARTIFACTS, proxy.list, methods=["GET"]),
        Route(ARTIFACTS + "/{path:path}", proxy.upload, methods=["PUT"]),
        Route(ARTIFACTS + "/{path:path}", proxy.download, methods=["GET"]),
        Route(BLOBS + "/{sha256}", proxy.blob, methods=["GET"]),
        Route(API + "/{rest:path}", _not_found, methods=_ALL_METHODS),
        Route("/api/2.0/gateway/{rest:path}", _not_found, methods=_ALL_METHODS),
        Route("/api/2.0/mlflow-artifacts/{rest:path}", _not_found, methods=_ALL_METHODS),
    ]
    return routes


async def _health(request: Request) -> Response:
    return PlainTextResponse("OK")


def create_registry_app(database_url: str, artifacts_dir: Path, *,
                        max_artifact_bytes: int = DEFAULT_MAX_ARTIFACT_BYTES) -> Starlette:
    """The registry alone (`gateway registry serve`): the MLflow API and artifact proxy plus GET /health.
    Opens the database (creating the schema) now, as `app.state.store`; closes it when the app shuts down."""
    store = RegistryStore(database_url)
    artifacts = ArtifactStore(artifacts_dir)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            store.close()

    routes = [Route("/health", _health, methods=["GET"]),
              *create_mlflow_routes(store, artifacts, max_artifact_bytes=max_artifact_bytes)]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.store = store
    return app
