"""MLflow REST wire format (pure): typed reads of a request message (a GET's query string or a JSON body)
and the JSON shapes of experiments, runs, metrics, registered models and model versions.

The client parses responses with protobuf's ParseDict: unknown fields are ignored, missing ones take
their defaults, int64 may be a number, and non-finite doubles are the strings "NaN", "Infinity".
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from registry.entities import (
    Dataset,
    DatasetInput,
    Experiment,
    Metric,
    ModelVersion,
    Page,
    RegisteredModel,
    Run,
    RunInfo,
)
from registry.errors import InvalidParameterValue

_SPECIAL_FLOATS = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
_STATUS_MESSAGE_UNSERVABLE = "Registered without an ONNX file: the source holds no .onnx file, so the gateway does not serve it"


def _missing(name: str) -> InvalidParameterValue:
    return InvalidParameterValue(
        f"Missing value for required parameter '{name}'. See the API docs for more information about request parameters."
    )


def _kind(value: object) -> str:
    return "null" if value is None else type(value).__name__


class Message:
    """One request message. From a query string every value is a list of strings (a repeated key
    repeats); from JSON, values keep their JSON types. Readers raise InvalidParameterValue naming the field."""

    __slots__ = ("_fields", "_query")

    def __init__(self, fields: Mapping[str, Any], *, query: bool = False) -> None:
        self._fields = fields
        self._query = query

    @classmethod
    def from_query(cls, items: Sequence[tuple[str, str]]) -> Message:
        fields: dict[str, list[str]] = {}
        for key, value in items:
            fields.setdefault(key, []).append(value)
        return cls(fields, query=True)

    def __repr__(self) -> str:
        return f"Message({dict(self._fields)!r})"

    @property
    def fields(self) -> Mapping[str, Any]:
        return self._fields

    def _scalar(self, name: str) -> Any:
        value = self._fields.get(name)
        if self._query and isinstance(value, list):
            return value[-1] if value else None
        return value

    def has(self, name: str) -> bool:
        return self._scalar(name) is not None

    def text(self, name: str, *, required: bool = False, default: str = "") -> str:
        value = self._scalar(name)
        if value is None or (required and value == ""):
            if required:
                raise _missing(name)
            return default
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise InvalidParameterValue(f"Invalid value for parameter '{name}': expected a string, got {_kind(value)}")
        return str(value)

    def run_id(self) -> str:
        """`run_id`, or the deprecated `run_uuid` the client sends beside it."""
        return self.text("run_id") or self.text("run_uuid", required=True)

    def int64(self, name: str, *, required: bool = False) -> int | None:
        value = self._scalar(name)
        if value is None or value == "":
            if required:
                raise _missing(name)
            return None
        if isinstance(value, str) and value.lstrip("-").isascii() and value.lstrip("-").isdigit():
            value = int(value)
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidParameterValue(f"Invalid value {value!r} for parameter '{name}': expected an integer")
        if not -(2**63) <= value < 2**63:
            raise InvalidParameterValue(f"Invalid value {value} for parameter '{name}': outside the int64 range")
        return value

    def version(self, name: str = "version") -> int:
        """A model version number, sent as a string ("3")."""
        text = self.text(name, required=True)
        if not (text.isascii() and text.isdigit()) or len(text) > 9:
            raise InvalidParameterValue(f"Parameter '{name}' must be a positive integer, got {text!r}")
        return int(text)

    def boolean(self, name: str, default: bool = False) -> bool:
        value = self._scalar(name)
        if value is None:
            return default
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise InvalidParameterValue(f"Invalid value {value!r} for parameter '{name}': expected true or false")

    def double(self, name: str, *, what: str) -> float:
        """A double: a JSON number or one of "NaN", "Infinity", "-Infinity" (as protobuf JSON allows)."""
        value = self._scalar(name)
        if value is None:
            raise _missing(name)
        if isinstance(value, str) and self._query:
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, str) and value in _SPECIAL_FLOATS:
            return _SPECIAL_FLOATS[value]
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidParameterValue(
                f"Got invalid value {value!r} for {what}. Please specify value as a valid double (64-bit floating point)"
            )
        return float(value)

    def texts(self, name: str) -> list[str]:
        """A repeated string field (empty when absent)."""
        value = self._fields.get(name)
        if value is None:
            return []
        if isinstance(value, str):
            return [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise InvalidParameterValue(f"Invalid value for parameter '{name}': expected a list of strings")
        return list(value)

    def messages(self, name: str) -> list[Message]:
        """A repeated message field of a JSON body (empty when absent)."""
        value = self._fields.get(name)
        if value is None:
            return []
        if self._query or not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            raise InvalidParameterValue(f"Invalid value for parameter '{name}': expected a list of objects")
        return [Message(v) for v in value]

    def message(self, name: str) -> Message:
        value = self._fields.get(name)
        if value is None:
            return Message({})
        if not isinstance(value, dict):
            raise InvalidParameterValue(f"Invalid value for parameter '{name}': expected an object")
        return Message(value)

    def pairs(self, name: str) -> list[tuple[str, str]]:
        """A repeated {key, value} field (tags, params) as (key, value) pairs in request order."""
        return [(m.text("key", required=True), m.text("value")) for m in self.messages(name)]


# --- request entities --------------------------------------------------------------------------


def read_metrics(m: Message, name: str, timestamp_default: int) -> list[Metric]:
    """A repeated Metric field; well-typed entries (the client's) take a fast path, the rest the checked one.
    Keys and int64 ranges are checked later, once per batch."""
    metrics: list[Metric] = []
    for item in m.messages(name):
        f = item.fields
        key, value, timestamp, step = f.get("key"), f.get("value"), f.get("timestamp"), f.get("step", 0)
        if type(key) is str and key and type(value) in (float, int) and type(timestamp) is int and type(step) is int:
            metrics.append(Metric(key, float(value), timestamp, step))  # type: ignore[arg-type]
        else:
            metrics.append(read_metric(item, timestamp_default))
    return metrics


def read_metric(m: Message, timestamp_default: int) -> Metric:
    key = m.text("key", required=True)
    timestamp = m.int64("timestamp")
    return Metric(
        key=key,
        value=m.double("value", what=f"metric '{key}'"),
        timestamp=timestamp_default if timestamp is None else timestamp,
        step=m.int64("step") or 0,
    )


def read_dataset_input(m: Message) -> DatasetInput:
    d = m.message("dataset")
    dataset = Dataset(
        name=d.text("name", required=True),
        digest=d.text("digest", required=True),
        source_type=d.text("source_type"),
        source=d.text("source"),
        schema=d.text("schema"),
        profile=d.text("profile"),
    )
    return DatasetInput(dataset, dict(m.pairs("tags")))


# --- response shapes ---------------------------------------------------------------------------


def double(value: float) -> float | str:
    if math.isfinite(value):
        return value
    if math.isnan(value):
        return "NaN"
    return "Infinity" if value > 0 else "-Infinity"


def tag_list(tags: Mapping[str, str]) -> list[dict[str, str]]:
    return [{"key": k, "value": v} for k, v in tags.items()]


def experiment(e: Experiment) -> dict[str, Any]:
    out: dict[str, Any] = {
        "experiment_id": e.experiment_id,
        "name": e.name,
        "artifact_location": e.artifact_location,
        "lifecycle_stage": e.lifecycle_stage,
        "last_update_time": e.last_update_time,
        "creation_time": e.creation_time,
    }
    if e.tags:
        out["tags"] = tag_list(e.tags)
    return out


def metric(m: Metric) -> dict[str, Any]:
    return {"key": m.key, "value": double(m.value), "timestamp": m.timestamp, "step": m.step}


def run_info(info: RunInfo) -> dict[str, Any]:
    out: dict[str, Any] = {
        "run_id": info.run_id,
        "run_uuid": info.run_id,
        "run_name": info.run_name,
        "experiment_id": info.experiment_id,
        "user_id": info.user_id,
        "status": info.status,
        "start_time": info.start_time,
        "artifact_uri": info.artifact_uri,
        "lifecycle_stage": info.lifecycle_stage,
    }
    if info.end_time is not None:
        out["end_time"] = info.end_time
    return out


def dataset_input(item: DatasetInput) -> dict[str, Any]:
    d = item.dataset
    dataset: dict[str, Any] = {"name": d.name, "digest": d.digest, "source_type": d.source_type, "source": d.source}
    if d.schema:
        dataset["schema"] = d.schema
    if d.profile:
        dataset["profile"] = d.profile
    return {"tags": tag_list(item.tags), "dataset": dataset}


def run(r: Run) -> dict[str, Any]:
    return {
        "info": run_info(r.info),
        "data": {
            "metrics": [metric(m) for m in r.metrics],
            "params": tag_list(r.params),
            "tags": tag_list(r.tags),
        },
        "inputs": {"dataset_inputs": [dataset_input(i) for i in r.inputs]} if r.inputs else {},
        "outputs": {},
    }


def model_version(mv: ModelVersion, *, with_aliases: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": mv.name,
        "version": str(mv.version),
        "creation_timestamp": mv.created_ms,
        "last_updated_timestamp": mv.updated_ms,
        "user_id": "",
        "current_stage": mv.stage,
        "description": mv.description,
        "source": mv.source or "",
        "run_id": mv.run_id or "",
        "status": "READY",  # anything else makes the client poll model-versions/get for minutes
        "run_link": "",
        "tags": tag_list(mv.tags),
    }
    if not mv.servable:
        out["status_message"] = _STATUS_MESSAGE_UNSERVABLE
    if with_aliases:
        out["aliases"] = list(mv.aliases)
    return out


def latest_per_stage(versions: Sequence[ModelVersion]) -> list[ModelVersion]:
    """The newest version in each stage that has one, by stage name, as MLflow's latest_versions."""
    newest: dict[str, ModelVersion] = {}
    for mv in versions:
        held = newest.get(mv.stage)
        if held is None or mv.version > held.version:
            newest[mv.stage] = mv
    return [newest[stage] for stage in sorted(newest)]


def registered_model(m: RegisteredModel, versions: Sequence[ModelVersion] | None = None) -> dict[str, Any]:
    """A registered model; with `versions` (all of its versions) also latest_versions and aliases."""
    out: dict[str, Any] = {
        "name": m.name,
        "creation_timestamp": m.created_ms,
        "last_updated_timestamp": m.updated_ms,
        "description": m.description,
        "tags": tag_list(m.tags),
    }
    if versions is not None:
        out["latest_versions"] = [model_version(mv, with_aliases=False) for mv in latest_per_stage(versions)]
        out["aliases"] = [{"alias": a, "version": str(mv.version)} for mv in versions for a in mv.aliases]
    return out


def paged(field: str, page: Page[Any], render: Any) -> dict[str, Any]:
    """{field: [...], "next_page_token": ...}; the token is left out on the last page, which stops
    the client's paging."""
    out: dict[str, Any] = {field: [render(item) for item in page.items]}
    if page.next_page_token:
        out["next_page_token"] = page.next_page_token
    return out
