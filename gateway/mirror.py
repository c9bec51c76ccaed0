"""Mirroring served requests to shadow targets: offers a job per sampled shadow to the bounded
ShadowQueue, runs it on a loaded model or a remote v2 URL, and records the comparison as metrics."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Mapping, Sequence
from time import perf_counter
from typing import Any

import httpx
import numpy as np
import numpy.typing as npt
import orjson

from gateway.armstats import StatsBoard
from gateway.dataplane import ShadowTarget
from gateway.protocol.dtypes import array_from_json, datatype_of
from gateway.shadow import ShadowQueue, compare_outputs
from monitoring.metrics import GatewayMetrics

log = logging.getLogger("gateway.mirror")
Outputs = Sequence[tuple[str, npt.NDArray[Any]]]


def encode_v2_json(inputs: Mapping[str, npt.NDArray[Any]]) -> bytes:
    """A v2 JSON infer request for a remote shadow (BYTES as UTF-8 strings)."""
    tensors = []
    for name, array in inputs.items():
        datatype = datatype_of(array)
        flat = array.reshape(-1)
        data: Any = (
            [x.decode("utf-8", "replace") if isinstance(x, bytes) else str(x) for x in flat]
            if datatype == "BYTES"
            else np.ascontiguousarray(flat)
        )
        tensors.append({"name": name, "shape": list(array.shape), "datatype": datatype, "data": data})
    return orjson.dumps({"inputs": tensors}, option=orjson.OPT_SERIALIZE_NUMPY)


def decode_v2_outputs(body: bytes) -> list[tuple[str, npt.NDArray[Any]]]:
    """The outputs of a v2 JSON infer response, shaped. Raises ValueError/KeyError on a bad body."""
    doc = orjson.loads(body)
    outputs = []
    for out in doc["outputs"]:
        array = array_from_json(out["data"], out["datatype"], f"shadow output '{out['name']}'")
        outputs.append((str(out["name"]), array.reshape(out["shape"])))
    return outputs


class Mirror:
    """Offers shadow copies without waiting for them; full queue -> dropped and counted."""

    def __init__(self, queue: ShadowQueue, metrics: GatewayMetrics, http: httpx.AsyncClient, timeout_s: float,
                 board: StatsBoard | None = None) -> None:
        self.queue = queue
        self.metrics = metrics
        self.http = http
        self.timeout_s = timeout_s
        self.board = board  # rollouts: per-(route, version) counts of the shadows they watch

    def offer(self, route: str, targets: Sequence[ShadowTarget], inputs: Mapping[str, npt.NDArray[Any]], outputs: Outputs) -> None:
        for target in targets:
            job = functools.partial(self._run, route, target, inputs, outputs)
            if not self.queue.offer(job):
                self.metrics.shadow_requests.labels(route, target.label, "dropped").inc()

    async def _run(self, route: str, target: ShadowTarget, inputs: Mapping[str, npt.NDArray[Any]], primary: Outputs) -> None:
        outcome = "completed"
        started = perf_counter()
        try:
            async with asyncio.timeout(self.timeout_s):
                shadow = await (self._remote(target.url, inputs) if target.url else self._local(target, inputs))
        except TimeoutError:
            outcome = "timeout"
        except Exception as exc:  # a shadow's failure is recorded, never raised to anyone
            log.debug("shadow %s of route %s failed: %s", target.label, route, exc)
            outcome = "failed"
        self.metrics.shadow_requests.labels(route, target.label, outcome).inc()
        stats = self.board.get(route, target.model.version_str) if self.board and target.model else None
        if outcome != "completed":
            if stats is not None:
                stats.shadowed(None)
            return
        comparison = compare_outputs(primary, shadow)
        if stats is not None:
            rows = primary[0][1].shape[0] if primary and primary[0][1].ndim else 1
            stats.shadowed(perf_counter() - started, rows, comparison.agreement)
        if comparison.mean_abs_diff is None and comparison.agreement is None:
            self.metrics.shadow_mismatches.labels(route, target.label).inc()
            return
        if comparison.mean_abs_diff is not None:
            self.metrics.shadow_abs_diff.labels(route, target.label).observe(comparison.mean_abs_diff)
        if comparison.agreement is not None:
            self.metrics.shadow_agreement.labels(route, target.label).observe(comparison.agreement)

    async def _local(self, target: ShadowTarget, inputs: Mapping[str, npt.NDArray[Any]]) -> Outputs:
        assert target.model is not None
        return await target.model.infer(inputs)

    async def _remote(self, url: str, inputs: Mapping[str, npt.NDArray[Any]]) -> Outputs:
        response = await self.http.post(url, content=encode_v2_json(inputs), headers={"content-type": "application/json"})
        response.raise_for_status()
        return decode_v2_outputs(response.content)
