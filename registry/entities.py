"""Registry value objects (pure): frozen, slotted dataclasses with readable reprs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, get_args

Stage = Literal["None", "Staging", "Production", "Archived"]
STAGES: tuple[Stage, ...] = get_args(Stage)


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
    """One immutable ONNX artifact of a model. `version` counts from 1 per model."""

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
