"""Deterministic demo models built with onnx.helper (no download), and their registration."""

from __future__ import annotations

import itertools

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from registry.artifacts import ArtifactStore
from registry.errors import ResourceDoesNotExist
from registry.registration import register_model_file
from registry.store import RegistryStore

CHURN = "churn"
TICKETS = "ticket_router"
CHURN_FEATURES = 32
TICKET_CATEGORIES = ("billing", "bug", "outage", "question")
QUEUES = ("general", "support", "engineering", "oncall")


def _model(graph: onnx.GraphProto, *, ml: bool = False) -> bytes:
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid("ai.onnx.ml", 3)] if ml else [])
    model = helper.make_model(graph, opset_imports=opsets, producer_name="gateway-demo")
    model.ir_version = 9  # readable by every onnxruntime this project supports
    onnx.checker.check_model(model)
    data: bytes = model.SerializeToString()
    return data


def build_mlp(seed: int, *, features: int = CHURN_FEATURES, hidden: tuple[int, ...] = (64,)) -> bytes:
    """An MLP features -> hidden... -> 1 with ReLU and a sigmoid: input 'features' FP32 [batch, features],
    output 'probability' FP32 [batch, 1]. Same seed, same bytes."""
    rng = np.random.default_rng(seed)
    sizes = (features, *hidden, 1)
    nodes, inits = [], []
    current = "features"
    for i, (n_in, n_out) in enumerate(itertools.pairwise(sizes)):
        w = (rng.standard_normal((n_in, n_out)) / np.sqrt(n_in)).astype(np.float32)
        b = (rng.standard_normal(n_out) * 0.1).astype(np.float32)
        inits += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(b, f"b{i}")]
        nodes.append(helper.make_node("Gemm", [current, f"w{i}", f"b{i}"], [f"z{i}"]))
        last = i == len(sizes) - 2
        current = "probability" if last else f"h{i}"
        nodes.append(helper.make_node("Sigmoid" if last else "Relu", [f"z{i}"], [current]))
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", features])],
        [helper.make_tensor_value_info("probability", TensorProto.FLOAT, ["batch", 1])],
        inits,
    )
    return _model(graph)


def build_ticket_router() -> bytes:
    """A model over strings and integers: 'category' BYTES [batch,1] and 'priority' INT64 [batch,1] ->
    'score' INT64 = 10 * category_id + priority, and 'queue' BYTES, the queue of the category."""
    ids = list(range(1, len(TICKET_CATEGORIES) + 1))
    nodes = [
        helper.make_node(
            "LabelEncoder", ["category"], ["category_id"], domain="ai.onnx.ml",
            keys_strings=list(TICKET_CATEGORIES), values_int64s=ids, default_int64=0,
        ),
        helper.make_node("Mul", ["category_id", "ten"], ["scaled"]),
        helper.make_node("Add", ["scaled", "priority"], ["score"]),
        helper.make_node(
            "LabelEncoder", ["category_id"], ["queue"], domain="ai.onnx.ml",
            keys_int64s=ids, values_strings=list(QUEUES), default_string="triage",
        ),
    ]
    graph = helper.make_graph(
        nodes,
        "ticket_router",
        [
            helper.make_tensor_value_info("category", TensorProto.STRING, ["batch", 1]),
            helper.make_tensor_value_info("priority", TensorProto.INT64, ["batch", 1]),
        ],
        [
            helper.make_tensor_value_info("score", TensorProto.INT64, ["batch", 1]),
            helper.make_tensor_value_info("queue", TensorProto.STRING, ["batch", 1]),
        ],
        [numpy_helper.from_array(np.array(10, dtype=np.int64), "ten")],
    )
    return _model(graph, ml=True)


def ensure_demo_models(store: RegistryStore, artifacts: ArtifactStore) -> list[str]:
    """Register the demo models when missing: churn v1 (alias champion) and v2 (alias challenger),
    ticket_router v1 in Production. Returns what it registered, empty when all were present."""
    registered: list[str] = []

    def missing(name: str) -> bool:
        try:
            return not store.list_model_versions(name)
        except ResourceDoesNotExist:
            return True

    if missing(CHURN):
        for seed, alias in ((1, "champion"), (2, "challenger")):
            mv = register_model_file(store, artifacts, CHURN, build_mlp(seed), description=f"demo MLP, seed {seed}")
            store.set_alias(CHURN, alias, mv.version)
            registered.append(f"{CHURN} v{mv.version} ({alias})")
    if missing(TICKETS):
        mv = register_model_file(store, artifacts, TICKETS, build_ticket_router(), description="demo string model")
        store.transition_stage(TICKETS, mv.version, "Production")
        registered.append(f"{TICKETS} v{mv.version} (Production)")
    return registered
