"""Registry value objects (pure): frozen, slotted dataclasses with readable reprs."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar, get_args

Stage = Literal["None", "Staging", "Production", "Archived"]
STAGES: tuple[Stage, ...] = get_args(Stage)
AuditAction = Literal["put", "delete"]
AUDIT_ACTIONS: tuple[AuditAction, ...] = get_args(AuditAction)
RunStatus = Literal["RUNNING", "SCHEDULED", "FINISHED", "FAILED", "KILLED"]
RUN_STATUSES: tuple[RunStatus, ...] = get_args(RunStatus)
LifecycleStage = Literal["active", "deleted"]
LIFECYCLE_STAGES: tuple[LifecycleStage, ...] = get_args(LifecycleStage)
ViewType = Literal["ACTIVE_ONLY", "DELETED_ONLY", "ALL"]
VIEW_TYPES: tuple[ViewType, ...] = get_args(ViewType)

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """One model input or output: `datatype` is the Open Inference Protocol name (FP32, INT64, BYTES, ...);
    `shape` holds -1 for a dynamic dimension; dim 0 is the batch dimension when it is dynamic."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TensorSpec:
        return cls(name=str(d["name"]), datatype=str(d["datatype"]), shape=tuple(int(x) for x in d["shape"]))


@dataclass(frozen=True, slots=True)
class Signature:
    """The input and output tensors of a model, in the model's order."""

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"inputs": [t.to_dict() for t in self.inputs], "outputs": [t.to_dict() for t in self.outputs]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Signature:
        return cls(
            inputs=tuple(TensorSpec.from_dict(t) for t in d["inputs"]),
            outputs=tuple(TensorSpec.from_dict(t) for t in d["outputs"]),
        )


@dataclass(frozen=True, slots=True)
class RegisteredModel:
    name: str
    description: str
    created_ms: int
    updated_ms: int
    tags: dict[str, str] = field(default_factory=dict, hash=False)


@dataclass(frozen=True, slots=True)
class ModelVersion:
    """One immutable ONNX artifact of a model. `version` counts from 1 per model.

    A version registered through the MLflow API from a source that holds no .onnx file records the
    source only: its `artifact_sha256` is "" and its signature empty, and it is never served.
    """

    name: str
    version: int
    artifact_sha256: str
    signature: Signature
    stage: Stage
    created_ms: int
    updated_ms: int
    source: str | None = None
    run_id: str | None = None
    description: str = ""
    tags: dict[str, str] = field(default_factory=dict, hash=False)
    aliases: tuple[str, ...] = ()

    @property
    def servable(self) -> bool:
        """Whether the gateway can serve this version: it has an ONNX blob in the artifact store."""
        return self.artifact_sha256 != ""


@dataclass(frozen=True, slots=True)
class RouteRecord:
    """The stored policy of one route: the gateway routes `name` to registered model `model` by `policy`.
    Times are Unix epoch milliseconds; `updated_by` is the actor of the last put."""

    name: str
    model: str
    policy: dict[str, Any] = field(hash=False)
    created_ms: int
    updated_ms: int
    updated_by: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "model": self.model,
            "policy": copy.deepcopy(self.policy),
            "created_ms": self.created_ms,
            "updated_ms": self.updated_ms,
            "updated_by": self.updated_by,
        }


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One put or delete of a route's policy. `id` grows with every entry; `old_policy` is None when the
    route had none, `new_policy` is None for a delete."""

    id: int
    route: str
    action: AuditAction
    actor: str
    at_ms: int
    old_policy: dict[str, Any] | None = field(hash=False)
    new_policy: dict[str, Any] | None = field(hash=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "route": self.route,
            "action": self.action,
            "actor": self.actor,
            "at_ms": self.at_ms,
            "old_policy": copy.deepcopy(self.old_policy),
            "new_policy": copy.deepcopy(self.new_policy),
        }


# --- tracking ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Experiment:
    """An MLflow experiment; `experiment_id` is the decimal string of an integer. Times are epoch ms."""

    experiment_id: str
    name: str
    artifact_location: str
    lifecycle_stage: LifecycleStage
    creation_time: int
    last_update_time: int
    tags: dict[str, str] = field(default_factory=dict, hash=False)


@dataclass(frozen=True, slots=True)
class Metric:
    """One logged value of a metric; `timestamp` is epoch ms, `step` any int64."""

    key: str
    value: float
    timestamp: int
    step: int = 0


@dataclass(frozen=True, slots=True)
class Dataset:
    """A dataset as MLflow's log_input describes it: `digest` identifies its content."""

    name: str
    digest: str
    source_type: str = ""
    source: str = ""
    schema: str = ""
    profile: str = ""


@dataclass(frozen=True, slots=True)
class DatasetInput:
    """One run's use of a dataset, with tags such as mlflow.data.context = "training"."""

    dataset: Dataset
    tags: dict[str, str] = field(default_factory=dict, hash=False)


@dataclass(frozen=True, slots=True)
class RunInfo:
    """A run's attributes; `run_id` is 32 hex digits, times are epoch ms (`end_time` None while running)."""

    run_id: str
    experiment_id: str
    run_name: str
    user_id: str
    status: RunStatus
    start_time: int
    end_time: int | None
    artifact_uri: str
    lifecycle_stage: LifecycleStage


@dataclass(frozen=True, slots=True)
class Run:
    """A run with its data: the latest value of each metric (by key), all params and tags, its inputs."""

    info: RunInfo
    metrics: tuple[Metric, ...] = ()
    params: dict[str, str] = field(default_factory=dict, hash=False)
    tags: dict[str, str] = field(default_factory=dict, hash=False)
    inputs: tuple[DatasetInput, ...] = ()


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of a search; `next_page_token` is None on the last page."""

    items: tuple[T, ...]
    next_page_token: str | None = None
