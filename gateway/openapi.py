"""The gateway's OpenAPI 3.0 document, built once and served at /openapi.json (schemathesis fuzzes the
running gateway against it). Request schemas are what the handlers accept; response schemas are
loose on purpose: they promise the shape, never more than the handlers guarantee.

Each operation carries one tag naming its endpoint group: inference, health, admin, features, mlflow.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from gateway.authz import access_for

Schema = dict[str, Any]

DATATYPES = ["BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
             "FP16", "FP32", "FP64", "BYTES"]
MLFLOW = "/api/2.0/mlflow"
ARTIFACTS = "/api/2.0/mlflow-artifacts/artifacts"


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: Schema, description: str) -> Schema:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _body(schema: Schema, required: bool = True) -> Schema:
    return {"required": required, "content": {"application/json": {"schema": schema}}}


def _path(name: str, description: str) -> Schema:
    return {"name": name, "in": "path", "required": True, "description": description, "schema": {"type": "string"}}


def _query(name: str, schema: Schema, required: bool = False) -> Schema:
    return {"name": name, "in": "query", "required": required, "schema": schema}


def _op(tag: str, summary: str, ok: Schema, errors: dict[str, str], *, error_schema: str = "Error",
        body: Schema | None = None, params: list[Schema] | None = None, ok_status: str = "200") -> Schema:
    """One operation: its success response, then each documented error status with the group's error shape."""
    responses: Schema = {ok_status: ok}
    for status, why in errors.items():
        responses[status] = _json(_ref(error_schema), why)
    op: Schema = {"tags": [tag], "summary": summary, "operationId": _operation_id(tag, summary), "responses": responses}
    if params:
        op["parameters"] = params
    if body is not None:
        op["requestBody"] = body
    return op


def _operation_id(tag: str, summary: str) -> str:
    words = "".join(c if c.isalnum() else " " for c in summary.lower()).split()
    return tag + "_" + "_".join(words)


_ANY_OBJECT: Schema = {"type": "object", "additionalProperties": True}
_MODEL = _path("name", "a route (v1/v2) or a registered model name")
_VERSION = _path("version", "a version number")
_INPUT_ERRORS = {"400": "malformed body, wrong datatype or shape", "401": "--require-api-key: no valid bearer token",
                 "404": "unknown route or version",
                 "413": "body over --max-body-bytes", "503": "loading, draining, or the queue is full (Retry-After)",
                 "504": "the request's deadline passed"}
_ADMIN_AUTH = {"401": "no bearer token, or an unknown or revoked one (access control on)",
               "403": "a valid token whose role is too low for this call"}
_MLFLOW_ERRORS = {"400": "INVALID_PARAMETER_VALUE or RESOURCE_ALREADY_EXISTS", "404": "RESOURCE_DOES_NOT_EXIST",
                  "503": "TEMPORARILY_UNAVAILABLE: the registry database cannot be reached"}


def _components() -> Schema:
    tensor: Schema = {
        "type": "object",
        "required": ["name", "shape", "datatype", "data"],
        "properties": {
            "name": {"type": "string"},
            "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
            "datatype": {"type": "string", "enum": DATATYPES},
            "parameters": _ANY_OBJECT,
            "data": {"type": "array", "items": {}},
        },
    }
    return {
        "schemas": {
            "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}},
            "MlflowError": {
                "type": "object", "required": ["error_code", "message"],
                "properties": {"error_code": {"type": "string"}, "message": {"type": "string"}},
            },
            "FeatureError": {
                "type": "object", "required": ["error"],
                "properties": {"error": {"type": "string"}, "code": {"type": "string"}},
            },
            "InferRequest": {
                "type": "object",
                "required": ["inputs"],
                "properties": {
                    "id": {"type": "string"},
                    "parameters": _ANY_OBJECT,
                    "inputs": {"type": "array", "items": _ref("RequestInput")},
                    "outputs": {
                        "type": "array",
                        "items": {
                            "type": "object", "required": ["name"],
                            "properties": {"name": {"type": "string"}, "parameters": _ANY_OBJECT},
                        },
                    },
                },
            },
            "RequestInput": tensor,
            "InferResponse": {
                "type": "object",
                "required": ["model_name", "outputs"],
                "properties": {
                    "model_name": {"type": "string"},
                    "model_version": {"type": "string"},
                    "id": {"type": "string"},
                    "parameters": _ANY_OBJECT,
                    "outputs": {"type": "array", "items": _ANY_OBJECT},
                },
            },
            "PredictRequest": {
                "type": "object",
                "required": ["instances"],
                "properties": {"instances": {"type": "array", "items": {}}},
            },
            "PredictResponse": {
                "type": "object", "required": ["predictions"],
                "properties": {"predictions": {"type": "array", "items": {}}},
            },
            "TensorMetadata": {
                "type": "object", "required": ["name", "datatype", "shape"],
                "properties": {
                    "name": {"type": "string"}, "datatype": {"type": "string"},
                    "shape": {"type": "array", "items": {"type": "integer"}},
                },
            },
            "ModelMetadata": {
                "type": "object", "required": ["name", "platform", "inputs", "outputs"],
                "properties": {
                    "name": {"type": "string"},
                    "versions": {"type": "array", "items": {"type": "string"}},
                    "platform": {"type": "string"},
                    "inputs": {"type": "array", "items": _ref("TensorMetadata")},
                    "outputs": {"type": "array", "items": _ref("TensorMetadata")},
                },
            },
            "RolloutSpec": {
                "type": "object",
                "required": ["model", "candidate", "steps"],
                "properties": {
                    "model": {"type": "string"},
                    "candidate": {"type": "string", "description": "version number, alias or stage"},
                    "steps": {"type": "array", "minItems": 1, "maxItems": 20,
                              "items": {"type": "number", "minimum": 0, "exclusiveMinimum": True, "maximum": 100}},
                    "step_seconds": {"type": "number", "minimum": 0, "exclusiveMinimum": True},
                    "min_requests": {"type": "integer", "minimum": 0},
                    "mirror_sample": {"type": "number", "minimum": 0, "maximum": 1},
                    "guards": {
                        "type": "object",
                        "properties": {
                            "max_error_rate": {"type": "number", "minimum": 0, "maximum": 1, "nullable": True},
                            "max_p99_ratio": {"type": "number", "minimum": 0, "exclusiveMinimum": True, "nullable": True},
                            "max_disagreement": {"type": "number", "minimum": 0, "maximum": 1, "nullable": True},
                            "max_psi": {"type": "number", "minimum": 0, "nullable": True},
                        },
                    },
                },
            },
            "RoutePolicy": {
                "type": "object",
                "required": ["model", "arms"],
                "properties": {
                    "model": {"type": "string"},
                    "arms": {
                        "type": "array", "minItems": 1,
                        "items": {
                            "type": "object", "required": ["version", "weight"],
                            "properties": {"version": {"type": "string"}, "weight": {"type": "number", "minimum": 0}},
                        },
                    },
                    "split": {"type": "string", "enum": ["random", "sticky"]},
                    "sticky_key": {"type": "string"},
                    "shadows": {
                        "type": "array",
                        "items": {
                            "type": "object", "required": ["sample"],
                            "properties": {
                                "version": {"type": "string"}, "url": {"type": "string"},
                                "sample": {"type": "number", "minimum": 0, "maximum": 1},
                            },
                        },
                    },
                    "features": _ANY_OBJECT,
                    "drift": _ANY_OBJECT,
                },
            },
            "RouteView": {
                "type": "object", "required": ["name"],
                "properties": {
                    "name": {"type": "string"},
                    "policy": {"type": "object", "nullable": True},
                    "serving": {"type": "object", "nullable": True},
                    "unavailable": {"type": "string", "nullable": True},
                },
            },
            "FeatureView": {
                "type": "object",
                "required": ["entity", "features"],
                "properties": {
                    "entity": {"type": "string"},
                    "ttl_seconds": {"type": "integer", "minimum": 0},
                    "description": {"type": "string"},
                    "features": {
                        "type": "array",
                        "items": {
                            "type": "object", "required": ["name", "dtype"],
                            "properties": {"name": {"type": "string"}, "dtype": {"type": "string"}, "default": {}},
                        },
                    },
                },
            },
            "KeyValue": {
                "type": "object", "required": ["key"],
                "properties": {"key": {"type": "string"}, "value": {"type": "string"}},
            },
            "Metric": {
                "type": "object", "required": ["key", "value"],
                "properties": {
                    "key": {"type": "string"}, "value": {"type": "number"},
                    "timestamp": {"type": "integer"}, "step": {"type": "integer"},
                },
            },
        },
    }


def _inference_paths() -> Schema:
    def infer(summary: str, params: list[Schema]) -> Schema:
        ok = _json(_ref("InferResponse"), "the outputs (binary tensors: application/octet-stream)")
        return {"post": _op("inference", summary, ok, _INPUT_ERRORS, body=_body(_ref("InferRequest")), params=params)}

    predict = _json(_ref("PredictResponse"), "one prediction per instance")
    return {
        "/v1/models/{name}:predict": {
            "post": _op("inference", "KServe v1 predict", predict, _INPUT_ERRORS,
                        body=_body(_ref("PredictRequest")), params=[_MODEL]),
        },
        "/v2/models/{name}/infer": infer("v2 infer on a route", [_MODEL]),
        "/v2/models/{name}/versions/{version}/infer": infer("v2 infer on a version", [_MODEL, _VERSION]),
    }


def _health_paths() -> Schema:
    ready = _json({"type": "object", "properties": {"ready": {"type": "boolean"}}}, "ready")
    named_ready = _json({"type": "object", "required": ["name", "ready"],
                         "properties": {"name": {"type": "string"}, "ready": {"type": "boolean"}}}, "the model is ready")
    metadata = _json(_ref("ModelMetadata"), "inputs and outputs of the version served")
    missing = {"404": "unknown route or version", "503": "loading, or the version failed to load"}
    text = {"description": "Prometheus text exposition", "content": {"text/plain": {"schema": {"type": "string"}}}}
    return {
        "/v2": {"get": _op("health", "v2 server metadata", _json(_ANY_OBJECT, "name, version, extensions"), {})},
        "/v2/health/live": {"get": _op("health", "v2 liveness", _json(_ANY_OBJECT, "live"), {})},
        "/v2/health/ready": {"get": _op("health", "v2 readiness", ready, {"503": "loading or draining"},
                                        error_schema="ReadyFalse")},
        "/v2/models/{name}": {"get": _op("health", "v2 model metadata", metadata, missing, params=[_MODEL])},
        "/v2/models/{name}/ready": {"get": _op("health", "v2 model ready", named_ready, missing, params=[_MODEL])},
        "/v2/models/{name}/versions/{version}": {
            "get": _op("health", "v2 version metadata", metadata, missing, params=[_MODEL, _VERSION]),
        },
        "/v2/models/{name}/versions/{version}/ready": {
            "get": _op("health", "v2 version ready", named_ready, missing, params=[_MODEL, _VERSION]),
        },
        "/v1/models": {"get": _op("health", "v1 list models", _json(_ANY_OBJECT, "the routes served"), {})},
        "/v1/models/{name}": {"get": _op("health", "v1 model status", named_ready, missing, params=[_MODEL])},
        "/health": {
            "get": _op("health", "gateway health details", _json(_ANY_OBJECT, "routes, load failures, registry_error"),
                       {"503": "not ready (same body)"}, error_schema="AnyObject"),
        },
        "/metrics": {"get": _op("health", "Prometheus metrics", text, {})},
        "/monitoring/drift": {
            "get": _op("health", "drift report", _json(_ANY_OBJECT, "windows, PSI and status per route"),
                       {"400": "history is not a non-negative integer"},
                       params=[_query("route", {"type": "string"}), _query("history", {"type": "string"})]),
        },
        "/features/health": {
            "get": _op("health", "feature store health", {"description": "the online store answers"},
                       {"503": "the online store is down"}, error_schema="FeatureError"),
        },
    }


def _admin_paths() -> Schema:
    route = _path("name", "the route's name")
    write_errors = {**_ADMIN_AUTH, "400": "not JSON, or too large", "422": "a policy that cannot apply",
                    "503": "the registry database cannot be reached"}
    read_errors = {**_ADMIN_AUTH, "503": "the registry database cannot be reached"}
    route_view = _json(_ref("RouteView"), "the stored policy and what this replica serves")
    rollout = _path("name", "the rollout's name: the route it drives")
    rollout_view = _json(_ANY_OBJECT, "state, step, weight, each guard's last figures, history")
    return {
        "/admin/routes": {
            "get": _op("admin", "list routes", _json(_ANY_OBJECT, "{routes: [...]}"), read_errors),
        },
        "/admin/routes/{name}": {
            "get": _op("admin", "get route", route_view, {**read_errors, "404": "no such route"}, params=[route]),
            "put": _op("admin", "set route policy", route_view, write_errors, params=[route],
                       body=_body(_ref("RoutePolicy"))),
            "delete": _op("admin", "delete route policy", _json(_ANY_OBJECT, "{name, deleted}"),
                          {**read_errors, "404": "no stored policy"}, params=[route]),
        },
        "/admin/rollouts": {
            "get": _op("admin", "list rollouts", _json(_ANY_OBJECT, "{rollouts: [...]}"), read_errors),
        },
        "/admin/rollouts/{name}": {
            "get": _op("admin", "get rollout", rollout_view, {**read_errors, "400": "not a valid name",
                                                              "404": "no such rollout"}, params=[rollout]),
            "put": _op("admin", "start rollout", rollout_view, {**write_errors, "409": "a rollout of that route is "
                       "running, or the route splits traffic / its champion is elsewhere"}, params=[rollout],
                       body=_body(_ref("RolloutSpec")), ok_status="201"),
            "delete": _op("admin", "abort rollout", rollout_view,
                          {**read_errors, "400": "not a valid name", "404": "no such rollout",
                           "409": "the rollout is not running"}, params=[rollout]),
        },
        "/admin/audit": {
            "get": _op("admin", "audit log", _json(_ANY_OBJECT, "{entries: [...]}"),
                       {**read_errors, "400": "limit is not a positive integer"},
                       params=[_query("route", {"type": "string"}), _query("limit", {"type": "string"})]),
        },
        "/admin/lineage/{model}/{version}": {
            "get": _op("admin", "lineage of a version", _json(_ANY_OBJECT, "version, run, datasets"),
                       {**read_errors, "400": "version is not an integer", "404": "no such version"},
                       params=[_path("model", "registered model"), _path("version", "version number")]),
        },
        "/admin/features/views": {
            "get": _op("admin", "list feature views", _json(_ANY_OBJECT, "{views: [...]}"), read_errors),
        },
        "/admin/features/views/{name}": {
            "put": _op("admin", "set feature view", _json(_ANY_OBJECT, "the stored view"),
                       write_errors, params=[_path("name", "the view's name")], body=_body(_ref("FeatureView"))),
        },
    }


def _features_paths() -> Schema:
    columns: Schema = {"type": "object", "additionalProperties": {"type": "array", "items": {}}}
    errors = {"400": "malformed body", "404": "unknown view, feature or service", "422": "invalid request",
              "503": "the online store is down or slow"}

    def post(summary: str, body: Schema, ok: Schema) -> Schema:
        return {"post": _op("features", summary, ok, errors, error_schema="FeatureError", body=_body(body))}

    return {
        "/features/get-online-features": post(
            "get online features",
            {"type": "object", "required": ["entities"], "properties": {
                "entities": columns, "features": {"type": "array", "items": {"type": "string"}},
                "feature_service": {"type": "string"}, "full_feature_names": {"type": "boolean"}}},
            _json({"type": "object", "properties": {"metadata": _ANY_OBJECT,
                                                    "results": {"type": "array", "items": _ANY_OBJECT}}},
                  "column-major values, statuses and event timestamps"),
        ),
        "/features/push": post(
            "push rows",
            {"type": "object", "required": ["push_source_name", "df"], "properties": {
                "push_source_name": {"type": "string"}, "df": columns,
                "to": {"type": "string", "enum": ["online", "offline", "online_and_offline"]}}},
            {"description": "written (empty body)"},
        ),
        "/features/write-to-online-store": post(
            "write to online store",
            {"type": "object", "required": ["feature_view_name", "df"], "properties": {
                "feature_view_name": {"type": "string"}, "df": columns}},
            _json({"nullable": True}, "written (body: null)"),
        ),
    }


def _mlflow_paths() -> Schema:
    def op(method: str, summary: str, fields: dict[str, Schema], required: list[str], ok: str) -> Schema:
        if method == "get":  # MLflow GET endpoints take their message from the query string
            params = [_query(name, schema, name in required) for name, schema in fields.items()]
            return {"get": _op("mlflow", summary, _json(_ANY_OBJECT, ok), _MLFLOW_ERRORS,
                               error_schema="MlflowError", params=params)}
        body = {"type": "object", "required": required, "properties": fields}
        return {method: _op("mlflow", summary, _json(_ANY_OBJECT, ok), _MLFLOW_ERRORS,
                            error_schema="MlflowError", body=_body(body))}

    s: Schema = {"type": "string"}
    i: Schema = {"type": "integer"}
    tags: Schema = {"type": "array", "items": _ref("KeyValue")}
    strings: Schema = {"type": "array", "items": s}
    return {
        f"{MLFLOW}/experiments/create": op("post", "create experiment", {"name": s, "artifact_location": s, "tags": tags},
                                           ["name"], "{experiment_id}"),
        f"{MLFLOW}/experiments/get": op("get", "get experiment", {"experiment_id": s}, ["experiment_id"], "{experiment}"),
        f"{MLFLOW}/experiments/get-by-name": op("get", "get experiment by name", {"experiment_name": s},
                                                ["experiment_name"], "{experiment}"),
        f"{MLFLOW}/runs/create": op("post", "create run", {"experiment_id": s, "user_id": s, "start_time": i,
                                                          "run_name": s, "tags": tags}, [], "{run}"),
        f"{MLFLOW}/runs/get": op("get", "get run", {"run_id": s}, ["run_id"], "{run}"),
        f"{MLFLOW}/runs/log-metric": op("post", "log metric", {"run_id": s, "key": s, "value": {"type": "number"},
                                                              "timestamp": i, "step": i},
                                        ["run_id", "key", "value"], "{}"),
        f"{MLFLOW}/runs/log-batch": op("post", "log batch", {"run_id": s, "metrics": {"type": "array", "items": _ref("Metric")},
                                                            "params": tags, "tags": tags}, ["run_id"], "{}"),
        f"{MLFLOW}/runs/search": op("post", "search runs", {"experiment_ids": strings, "filter": s, "max_results": i,
                                                           "order_by": strings, "page_token": s}, [], "{runs, next_page_token}"),
        f"{MLFLOW}/registered-models/create": op("post", "create registered model",
                                                 {"name": s, "description": s, "tags": tags}, ["name"], "{registered_model}"),
        f"{MLFLOW}/registered-models/get": op("get", "get registered model", {"name": s}, ["name"], "{registered_model}"),
        f"{MLFLOW}/model-versions/create": op("post", "create model version",
                                              {"name": s, "source": s, "run_id": s, "description": s, "tags": tags},
                                              ["name", "source"], "{model_version}"),
        f"{MLFLOW}/model-versions/get": op("get", "get model version", {"name": s, "version": s},
                                           ["name", "version"], "{model_version}"),
        f"{ARTIFACTS}": {"get": _op("mlflow", "list artifacts", _json(_ANY_OBJECT, "{files: [...]}"), _MLFLOW_ERRORS,
                                     error_schema="MlflowError", params=[_query("path", s)])},
        f"{ARTIFACTS}/{{path}}": {
            "get": _op("mlflow", "download artifact", {"description": "the file's bytes"}, _MLFLOW_ERRORS,
                       error_schema="MlflowError", params=[_path("path", "a relative path in the store")]),
            "put": _op("mlflow", "upload artifact", {"description": "stored"}, _MLFLOW_ERRORS, error_schema="MlflowError",
                       params=[_path("path", "a relative path in the store")],
                       body={"required": True, "content": {"application/octet-stream": {"schema": {"type": "string",
                                                                                                "format": "binary"}}}}),
        },
        f"{MLFLOW}/model-versions/search": op("get", "search model versions",
                                              {"filter": s, "max_results": i, "order_by": strings, "page_token": s},
                                              [], "{model_versions, next_page_token}"),
    }


def openapi_document() -> dict[str, Any]:
    """The document: every public endpoint group with its request and response shapes."""
    components = _components()
    components["schemas"]["ReadyFalse"] = {"type": "object", "properties": {"ready": {"type": "boolean"}}}
    components["schemas"]["AnyObject"] = _ANY_OBJECT
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "gateway",
            "version": "0.1.0",
            "description": "ONNX model serving (KServe v1, Open Inference Protocol v2), route admin, Feast-shaped "
                           "online features and the MLflow REST API subset.",
        },
        "tags": [{"name": t} for t in ("inference", "health", "admin", "features", "mlflow")],
        "components": {
            **components,
            "securitySchemes": {"bearer": {
                "type": "http", "scheme": "bearer",
                "description": "A token from `gateway tokens create NAME --role reader|deployer|admin`, or the "
                               "--admin-token. Each operation's x-gateway-role names the least role it needs "
                               "(reads and inference need one only with --require-api-key).",
            }},
        },
        "paths": _secured({**_inference_paths(), **_health_paths(), **_admin_paths(), **_features_paths(),
                           **_mlflow_paths()}),
    }


def _secured(paths: Schema) -> Schema:
    """Every operation but probes and scrapes takes a bearer token when access control is on (else
    none: `{}`), with the least role gateway/authz.py's table gives it."""
    for path, item in paths.items():
        for method, op in item.items():
            access = access_for(method.upper(), path)
            if access != "open":
                op["security"] = [{"bearer": []}, {}]
                op["x-gateway-role"] = "reader" if access == "public" else access
    return paths


_DOCUMENT = orjson.dumps(openapi_document())


async def openapi_json(request: Request) -> Response:
    return Response(_DOCUMENT, media_type="application/json")
