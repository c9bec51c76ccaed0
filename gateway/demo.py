"""Deterministic demo models built with onnx.helper (no download), and their registration."""

from __future__ import annotations

import itertools
import time

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from featurestore.online import OnlineStore
from featurestore.views import FeatureView
from gateway.reference import build_profile
from registry.artifacts import ArtifactStore
from registry.errors import ResourceDoesNotExist
from registry.registration import register_model_file
from registry.serving import ServingMetadata
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


def build_mlp(
    seed: int, *, features: int = CHURN_FEATURES, hidden: tuple[int, ...] = (64,), input_scale: tuple[float, ...] = ()
) -> bytes:
    """An MLP features -> hidden... -> 1 with ReLU and a sigmoid: input 'features' FP32 [batch, features],
    output 'probability' FP32 [batch, 1]; `input_scale` multiplies the inputs first (raw-unit features).
    Same seed, same bytes."""
    rng = np.random.default_rng(seed)
    sizes = (features, *hidden, 1)
    nodes, inits = [], []
    current = "features"
    if input_scale:
        inits.append(numpy_helper.from_array(np.asarray(input_scale, dtype=np.float32), "scale"))
        nodes.append(helper.make_node("Mul", ["features", "scale"], ["scaled_features"]))
        current = "scaled_features"
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
    meta = ServingMetadata(store)
    if USER_VIEW not in {v.name for v in meta.list_feature_views()}:
        meta.put_feature_view(USER_VIEW, USER_VIEW_SPEC, "demo")
        registered.append(f"feature view {USER_VIEW}")
    if missing(FRAUD):
        mv = register_model_file(store, artifacts, FRAUD, build_fraud(), description="demo model over online features")
        meta.set_model_features(FRAUD, mv.version, list(FRAUD_FEATURES))
        registered.append(f"{FRAUD} v{mv.version} (features: {', '.join(FRAUD_FEATURES)})")
    for name in (CHURN, FRAUD):
        names, matrix = reference_sample(name)
        for mv in store.list_model_versions(name):
            if meta.get_reference_profile(name, mv.version) is None:
                columns = {n: matrix[:, i] for i, n in enumerate(names)}
                profile = build_profile(artifacts.read_bytes(mv.artifact_sha256), mv.signature, columns)
                meta.put_reference_profile(name, mv.version, profile)
                registered.append(f"reference profile of {name} v{mv.version}")
    return registered


def build_fraud() -> bytes:
    """The demo feature model: [age, tenure_months, avg_spend, amount] -> probability."""
    return build_mlp(5, features=len(FRAUD_FEATURES), hidden=(16,), input_scale=(1 / 50, 1 / 60, 1 / 80, 1 / 60))


# --- feature-enriched demo: a view, its rows, and a model that declares features from it ---------

FRAUD = "fraud"
USER_VIEW = "user_features"
USER_VIEW_SPEC = {
    "entity": "user_id",
    "ttl_seconds": 30 * 24 * 3600,
    "features": [
        {"name": "age", "dtype": "float32", "default": 35.0},
        {"name": "tenure_months", "dtype": "float32", "default": 0.0},
        {"name": "avg_spend", "dtype": "float32", "default": 0.0},
    ],
}
FRAUD_FEATURES = ("user_features:age", "user_features:tenure_months", "user_features:avg_spend", "request:amount")
DEMO_USERS = 1000


def demo_user_rows(n: int = DEMO_USERS) -> list[dict[str, object]]:
    """Deterministic rows for users 1..n of the demo view."""
    rng = np.random.default_rng(11)
    age = rng.integers(18, 80, n)
    tenure = rng.integers(0, 120, n)
    spend = rng.gamma(2.0, 40.0, n).round(2)
    return [
        {"user_id": i + 1, "age": float(age[i]), "tenure_months": float(tenure[i]), "avg_spend": float(spend[i])}
        for i in range(n)
    ]


def reference_sample(model: str, n: int = 4000) -> tuple[list[str], np.ndarray]:
    """The training-like sample the demo models' reference profiles come from (column names, rows)."""
    rng = np.random.default_rng(21)
    if model == CHURN:
        return [f"f{i}" for i in range(CHURN_FEATURES)], rng.standard_normal((n, CHURN_FEATURES)).astype(np.float32)
    users = demo_user_rows()
    picks = rng.integers(0, len(users), n)
    matrix = np.array(
        [[users[i]["age"], users[i]["tenure_months"], users[i]["avg_spend"], rng.gamma(2.0, 30.0)] for i in picks],
        dtype=np.float32,
    )
    return list(FRAUD_FEATURES), matrix


async def seed_demo_features(store: OnlineStore) -> int:
    """Write the demo users into the online store (idempotent: rows are replaced)."""
    view = FeatureView.from_dict(USER_VIEW, USER_VIEW_SPEC)
    return await store.write(view, demo_user_rows(), time.time_ns() // 1_000_000)
