"""Lineage of a model version: the version, the run that produced it (params, latest metrics, tags) and
the datasets that run was trained on, as one JSON-ready dict."""

from __future__ import annotations

import math
from typing import Any

from registry.entities import ModelVersion, Run
from registry.errors import ResourceDoesNotExist
from registry.store import RegistryStore
from registry.tracking import TrackingStore

DATASET_CONTEXT_TAG = "mlflow.data.context"


def _number(value: float) -> float | str:
    """JSON has no NaN or infinity; MLflow spells them as strings."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return value


def _version_part(mv: ModelVersion) -> dict[str, Any]:
    return {
        "name": mv.name,
        "version": mv.version,
        "stage": mv.stage,
        "aliases": list(mv.aliases),
        "source": mv.source,
        "run_id": mv.run_id,
        "servable": mv.servable,
        "artifact_sha256": mv.artifact_sha256 or None,
        "created_ms": mv.created_ms,
    }


def _run_part(run: Run, experiment_name: str | None) -> dict[str, Any]:
    info = run.info
    return {
        "run_id": info.run_id,
        "run_name": info.run_name,
        "experiment_id": info.experiment_id,
        "experiment_name": experiment_name,
        "status": info.status,
        "start_time": info.start_time,
        "end_time": info.end_time,
        "params": dict(run.params),
        "metrics": {m.key: _number(m.value) for m in run.metrics},
        "tags": dict(run.tags),
    }


def lineage(store: RegistryStore, model: str, version: int) -> dict[str, Any]:
    """{"model_version": {...}, "run": {...} | None, "datasets": [{name, digest, source_type, source,
    context}]}. `run` is None (and `datasets` empty) when the version names no run or the run is gone.

    Raises ResourceDoesNotExist for a missing model or version.
    """
    mv = store.get_model_version(model, version)
    result: dict[str, Any] = {"model_version": _version_part(mv), "run": None, "datasets": []}
    if not mv.run_id:
        return result
    tracking = TrackingStore(store)
    try:
        run = tracking.get_run(mv.run_id)
    except ResourceDoesNotExist:
        return result
    try:
        experiment_name: str | None = tracking.get_experiment(run.info.experiment_id).name
    except ResourceDoesNotExist:
        experiment_name = None
    result["run"] = _run_part(run, experiment_name)
    result["datasets"] = [
        {
            "name": item.dataset.name,
            "digest": item.dataset.digest,
            "source_type": item.dataset.source_type,
            "source": item.dataset.source,
            "context": item.tags.get(DATASET_CONTEXT_TAG),
        }
        for item in run.inputs
    ]
    return result
