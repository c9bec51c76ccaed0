"""Feature-enriched inference: entity-keyed instances -> one online-store read -> the model's input
tensor, with the route's policy deciding what missing entities and store outages do."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson
from prometheus_client import Counter, Histogram

from featurestore.errors import OnlineStoreUnavailable
from featurestore.online import OnlineStore
from featurestore.views import FeatureView, ReadPlan
from gateway.errors import InvalidInput, Unavailable
from gateway.protocol.v2 import InferRequest
from gateway.routing import FeaturePolicy

Instance = Mapping[str, object]


@dataclass(frozen=True, slots=True, eq=False)
class FeatureBinding:
    """How one model version gets its input: the compiled read plan of its declared features, the
    model input they fill, and the route's policy. Built off the request path, on registry changes."""

    plan: ReadPlan
    input_name: str
    policy: FeaturePolicy
    defaulted: Counter | None = None  # metric children of the route, bound once
    fetch_seconds: Histogram | None = None

    @property
    def request_fields(self) -> tuple[str, ...]:
        """The names a request must carry per instance: entity keys, then `request:` features."""
        return (*self.plan.entities, *(name for name, _ in self.plan.request_columns))


def instances_from_v1(body: bytes) -> list[Instance]:
    """{"instances": [{"user_id": 42, "amount": 12.5}, ...]} -> the instance dicts. Raises InvalidInput."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"request body is not valid JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise InvalidInput("request body must be a JSON object with 'instances'")
    instances = doc.get("instances")
    if not isinstance(instances, list) or not instances:
        raise InvalidInput("'instances' must be a non-empty list of objects keyed by entity and request fields")
    for i, instance in enumerate(instances):
        if not isinstance(instance, dict):
            raise InvalidInput(f"instances[{i}] must be an object, e.g. {{\"user_id\": 42}}")
    return instances


def instances_from_v2(request: InferRequest, fields: Sequence[str]) -> list[Instance]:
    """v2 inputs named after the entity keys and request features ([n] or [n, 1] each), or scalar
    request parameters of those names (one instance). Raises InvalidInput naming what is missing."""
    if all(f in request.parameters for f in fields) and not any(f in request.inputs for f in fields):
        return [{f: request.parameters[f] for f in fields}]
    columns: dict[str, list[object]] = {}
    n: int | None = None
    for field in fields:
        array = request.inputs.get(field)
        if array is None:
            raise InvalidInput(f"input '{field}': required (an entity key or request feature of this model)")
        values = array.reshape(-1)
        if n is not None and values.shape[0] != n:
            raise InvalidInput(f"input '{field}': {values.shape[0]} values, but other inputs have {n}")
        n = values.shape[0]
        columns[field] = [v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in values.tolist()]
    return [{f: columns[f][i] for f in fields} for i in range(n or 0)]


async def assemble(
    binding: FeatureBinding, store: OnlineStore, instances: Sequence[Instance]
) -> tuple[dict[str, npt.NDArray[Any]], int]:
    """The model's inputs for these instances, and how many feature values were defaulted.

    Raises Unavailable (503) when the store fails and the policy says so, EntityNotFound (404) for
    a missing entity under missing_entity="error", InvalidFeatureRequest (400) for bad request fields."""
    plan = binding.plan
    started = time.perf_counter()
    try:
        result = await store.read(plan, instances, time.time_ns() // 1_000_000)  # TTLs are wall-clock
    except OnlineStoreUnavailable as exc:
        if binding.policy.on_store_error == "error":
            raise Unavailable(f"online feature store unavailable: {exc.message}") from exc
        matrix = np.repeat(plan.defaults[None, :], len(instances), axis=0)
        defaulted = len(instances) * (plan.width - len(plan.request_columns))
    else:
        if binding.policy.missing_entity == "error":
            plan.check_found(result, instances)
        matrix, defaulted = result.rows, result.defaulted
    plan.fill_request(matrix, instances)
    if binding.fetch_seconds is not None:
        binding.fetch_seconds.observe(time.perf_counter() - started)
    if binding.defaulted is not None and defaulted:
        binding.defaulted.inc(defaulted)
    return {binding.input_name: matrix}, defaulted


class LiveCatalog:
    """The Feast API's view catalog: whatever the registry follower last swapped in (no services yet)."""

    def __init__(self) -> None:
        self.source: Callable[[], Mapping[str, FeatureView]] = lambda: _NO_VIEWS

    def views(self) -> Mapping[str, FeatureView]:
        return self.source()

    def feature_services(self) -> Mapping[str, Sequence[str]]:
        return _NO_SERVICES


_NO_VIEWS: Mapping[str, FeatureView] = MappingProxyType({})
_NO_SERVICES: Mapping[str, Sequence[str]] = MappingProxyType({})
