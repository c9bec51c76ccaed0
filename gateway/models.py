"""ModelPool: (model, version) -> LoadedModel. Loading, warm-up and the run function live here."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Mapping
from concurrent.futures import Executor
from dataclasses import dataclass
from time import monotonic
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
from prometheus_client import Counter

from gateway.batching import Arrays, DeadlineExceeded, MicroBatcher, QueueFull, RunFn, Tap
from gateway.config import Config
from gateway.errors import GatewayTimeout, InvalidInput, Overloaded
from gateway.protocol.dtypes import DATATYPE_OF_ORT, numpy_dtype
from gateway.protocol.v1 import PredictDecoder, compile_predict_decoder
from gateway.signature import InputValidator, compile_validator
from monitoring.metrics import GatewayMetrics
from registry.artifacts import ArtifactStore
from registry.client import RegistryClient
from registry.entities import ModelVersion, Signature, TensorSpec
from registry.errors import ArtifactFetchFailed

log = logging.getLogger("gateway.models")
# A failed download (--artifact-source) is retried after this delay, doubling per failure up to the cap,
# so a tampered or oversized file is not downloaded again on every poll.
FETCH_RETRY_FIRST_S = 1.0
FETCH_RETRY_MAX_S = 60.0


@dataclass(frozen=True, slots=True, eq=False)
class LoadedModel:
    """A warmed-up version, ready to serve. Built once at load; never mutated."""

    name: str
    version: int
    signature: Signature
    validator: InputValidator
    batcher: MicroBatcher
    output_names: tuple[str, ...]
    inline: bool  # runs on the event loop (fast model) rather than on the executor
    warmup_us: float
    rejections: Counter
    decode_v1: PredictDecoder  # v1.decode_predict compiled for this signature's inputs

    @property
    def version_str(self) -> str:
        return str(self.version)

    async def infer(
        self, inputs: Mapping[str, npt.NDArray[np.generic]], deadline: float | None = None, tap: Tap | None = None
    ) -> list[tuple[str, npt.NDArray[np.generic]]]:
        """Validate, queue for the batcher, and name the outputs. `deadline` is a time.monotonic() value: a request
        still queued past it is dropped unrun, and one answered past it is abandoned (504). `tap` sees the
        served rows (validated inputs and outputs, in model order) of the batch it ran in.
        Raises InvalidInput, Overloaded, GatewayTimeout."""
        arrays = self.validator.validate(inputs)
        try:
            outputs = await self.batcher.submit(arrays, deadline, tap)
        except QueueFull as exc:
            self.rejections.inc()
            raise Overloaded(f"model '{self.name}' version {self.version} is overloaded: {exc}") from exc
        except DeadlineExceeded as exc:
            raise GatewayTimeout(f"request exceeded its deadline before model '{self.name}' ran it ({exc})") from exc
        if deadline is not None and monotonic() > deadline:
            raise GatewayTimeout(f"request exceeded its deadline while model '{self.name}' ran it")
        return list(zip(self.output_names, outputs, strict=True))


def _session_options(config: Config) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.intra_op_num_threads = config.intra_op_threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return options


def _string_input(arr: npt.NDArray[np.generic], name: str) -> npt.NDArray[np.generic]:
    """onnxruntime reads string tensors as str; binary BYTES arrive as bytes and are decoded here."""
    flat = arr.reshape(-1)
    if flat.size and isinstance(flat[0], str) and all(isinstance(x, str) for x in flat):
        return arr
    try:
        decoded = [x.decode("utf-8") if isinstance(x, bytes | bytearray) else str(x) for x in flat]
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"input '{name}': BYTES element is not valid UTF-8 ({exc.reason})") from exc
    return np.array(decoded, dtype=object).reshape(arr.shape)


def _warmup_inputs(inputs: tuple[TensorSpec, ...]) -> Arrays:
    """One row of zeros (empty strings for BYTES) per input; dynamic dims become 1."""
    arrays: Arrays = []
    for spec in inputs:
        shape = tuple(1 if d < 0 else d for d in spec.shape)
        if spec.datatype == "BYTES":
            arrays.append(np.full(shape, "", dtype=object))
        else:
            arrays.append(np.zeros(shape, dtype=numpy_dtype(spec.datatype)))
    return arrays


def _batchable(signature: Signature) -> bool:
    """Stacking requests needs a leading dynamic dim on every input and output."""
    return all(t.shape and t.shape[0] == -1 for t in (*signature.inputs, *signature.outputs))


def _uniform(signature: Signature) -> bool:
    """Every validated request has the same dtypes and non-batch dims (no BYTES input, whose arrays may
    be object, str or bytes; no dynamic dim past dim 0), so the batcher need not compare them."""
    return all(t.datatype != "BYTES" and all(d >= 0 for d in t.shape[1:]) for t in signature.inputs)


class ModelMismatch(Exception):
    """A version's stored file or its signature is not what the registry recorded for it."""


def check_signature(session: ort.InferenceSession, signature: Signature) -> None:
    """The session's inputs and outputs must be the registered ones: same names, same element types
    (the registry's row may come from another writer, or the file may have been replaced)."""
    def described(args: Any) -> list[tuple[str, str]]:
        return [(a.name, DATATYPE_OF_ORT.get(a.type, a.type)) for a in args]

    for what, have, want in (("inputs", described(session.get_inputs()), [(t.name, t.datatype) for t in signature.inputs]),
                             ("outputs", described(session.get_outputs()), [(t.name, t.datatype) for t in signature.outputs])):
        if sorted(have) != sorted(want):
            raise ModelMismatch(f"the model's {what} are {have}, the registry's signature says {want}")


def load_model(
    mv: ModelVersion, artifacts: ArtifactStore, config: Config, executor: Executor, metrics: GatewayMetrics
) -> LoadedModel:
    """Blocking: check the file and its signature, create the session, run the warm-up inference, and
    pick inline vs executor by its time. Raises ModelMismatch when the stored file is not the registered
    one or does not have the registered signature (the route then keeps its previous version)."""
    data = artifacts.read_bytes(mv.artifact_sha256)
    actual = hashlib.sha256(data).hexdigest()
    if actual != mv.artifact_sha256:
        raise ModelMismatch(f"the stored file hashes to {actual[:12]}, not the registered {mv.artifact_sha256[:12]}")
    session = ort.InferenceSession(data, _session_options(config), providers=["CPUExecutionProvider"])
    check_signature(session, mv.signature)
    input_names = [t.name for t in mv.signature.inputs]
    output_names = tuple(t.name for t in mv.signature.outputs)
    string_inputs = {i for i, t in enumerate(mv.signature.inputs) if t.datatype == "BYTES"}

    def run_any(arrays: Arrays) -> Arrays:
        feed = {
            name: _string_input(arr, name) if i in string_inputs else arr
            for i, (name, arr) in enumerate(zip(input_names, arrays, strict=True))
        }
        return list(session.run(output_names, feed))

    run: RunFn = run_any
    if len(input_names) == 1 and not string_inputs:  # the common case, without the general feed loop
        only_input, session_run = input_names[0], session.run

        def run_one(arrays: Arrays) -> Arrays:
            (array,) = arrays
            return list(session_run(output_names, {only_input: array}))

        run = run_one

    sample = _warmup_inputs(mv.signature.inputs)
    run(sample)  # first run allocates; time the second
    started = time.perf_counter()
    run(sample)
    warmup_us = (time.perf_counter() - started) * 1e6
    inline = warmup_us < config.inline_threshold_us
    batcher = MicroBatcher(
        run,
        max_batch_size=config.max_batch_size,
        max_delay_s=config.max_batch_delay_ms / 1000,
        executor=None if inline else executor,
        batchable=_batchable(mv.signature),
        max_queue_rows=config.max_queue_rows,
        concurrency=config.inference_threads,
        observe=metrics.batch_observer(mv.name, str(mv.version)),
        uniform=_uniform(mv.signature),
    )
    log.info("loaded %s v%d (warm-up %.0f us, %s)", mv.name, mv.version, warmup_us, "inline" if inline else "executor")
    return LoadedModel(
        name=mv.name,
        version=mv.version,
        signature=mv.signature,
        validator=compile_validator(mv.signature),
        batcher=batcher,
        output_names=output_names,
        inline=inline,
        warmup_us=warmup_us,
        rejections=metrics.queue_rejections.labels(mv.name, str(mv.version)),
        decode_v1=compile_predict_decoder(mv.signature.inputs),
    )


class ModelPool:
    """The loaded versions. Loads run in a thread, one at a time per version; failures are remembered.

    With `config.artifact_source`, a model file missing from the local store is first downloaded from the
    registry service (in the same thread). A failed download is a failure too, but a retryable one:
    `retry_due` turns true after a backoff, and the caller may then load again."""

    def __init__(self, artifacts: ArtifactStore, config: Config, executor: Executor, metrics: GatewayMetrics) -> None:
        self._metrics = metrics
        self._artifacts = artifacts
        self._config = config
        self._executor = executor
        self._loaded: dict[tuple[str, int], LoadedModel] = {}
        self._loading: dict[tuple[str, int], asyncio.Future[LoadedModel]] = {}
        self.failures: dict[tuple[str, int], str] = {}
        self._source = (
            RegistryClient(config.artifact_source, max_bytes=config.artifact_max_bytes, timeout_s=config.artifact_timeout_s)
            if config.artifact_source is not None else None
        )
        self._retry: dict[tuple[str, int], tuple[float, int]] = {}  # key -> (monotonic time due, failures so far)

    def get(self, name: str, version: int) -> LoadedModel | None:
        return self._loaded.get((name, version))

    def loaded(self) -> list[LoadedModel]:
        return list(self._loaded.values())

    async def load(self, mv: ModelVersion) -> LoadedModel:
        """The loaded model for `mv`, loading it (off the loop) if needed. Raises what loading raised."""
        key = (mv.name, mv.version)
        if (model := self._loaded.get(key)) is not None:
            return model
        if (pending := self._loading.get(key)) is not None:
            return await asyncio.shield(pending)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[LoadedModel] = loop.create_future()
        self._loading[key] = future
        try:
            model = await asyncio.to_thread(self._fetch_and_load, mv)
        except Exception as exc:
            self.failures[key] = f"{type(exc).__name__}: {exc}"
            if isinstance(exc, ArtifactFetchFailed):
                count = self._retry.get(key, (0.0, 0))[1] + 1
                delay = min(FETCH_RETRY_FIRST_S * 2 ** (count - 1), FETCH_RETRY_MAX_S)
                self._retry[key] = (monotonic() + delay, count)
                log.error("failed to load %s v%d: %s (retrying in %.0f s)", mv.name, mv.version, exc, delay)
            else:
                log.error("failed to load %s v%d: %s", mv.name, mv.version, exc)
            future.set_exception(exc)
            future.exception()  # mark retrieved: the caller re-raises it below
            raise
        finally:
            del self._loading[key]
        self.failures.pop(key, None)
        self._retry.pop(key, None)
        self._loaded[key] = model
        future.set_result(model)
        return model

    def _fetch_and_load(self, mv: ModelVersion) -> LoadedModel:
        """Blocking: download the file if this replica lacks it and has a source, then load it."""
        if self._source is not None and not self._artifacts.exists(mv.artifact_sha256):
            self._source.fetch_artifact(mv.artifact_sha256, self._artifacts)
        return load_model(mv, self._artifacts, self._config, self._executor, self._metrics)

    def retry_due(self, name: str, version: int) -> bool:
        """True when the version's last load failed on its download and the backoff has passed."""
        due = self._retry.get((name, version))
        return due is not None and monotonic() >= due[0]

    def any_retry_due(self) -> bool:
        now = monotonic()
        return any(now >= due for due, _ in self._retry.values())

    def forget_fetch_failures(self, keep: set[tuple[str, int]]) -> None:
        """Drop the failed downloads of versions outside `keep` (no longer needed): a later need tries afresh."""
        for key in [k for k in self._retry if k not in keep]:
            del self._retry[key]
            self.failures.pop(key, None)

    def unload(self, name: str, version: int) -> None:
        """Forget a version; requests already holding it finish on their reference."""
        self._loaded.pop((name, version), None)
