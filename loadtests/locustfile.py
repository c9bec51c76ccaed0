"""Locust scenarios for the gateway: KServe v1 and OIP v2 predictions and a canary rollout under load by
default; entity-keyed predictions (tag `features`) and MLflow tracking writes (tag `tracking`) on request.

    locust -f loadtests/locustfile.py --headless -u 20 -r 10 -t 20s --host http://127.0.0.1:8000

The default mix runs against a plain `gateway serve --demo` (no token, no Redis) with zero failures:
V1PredictUser and V2InferUser (FastHttpUser, no think time) and one AdminCanaryUser that steps the
`churn` route 10% -> 50% -> 100% -> back to what it was, and restores it when the run stops. Against a
gateway with an admin token, pass it as --admin-token / LOCUST_ADMIN_TOKEN (GATEWAY_ADMIN_TOKEN is read
too); without one the admin user disables itself after one probe. Opt-in users run only when their tag
is selected (`--tags features`, `--tags tracking`, or LOCUST_TAGS) or their class is named on the
command line. The scenario options (--rows, --think-time, --admin-token, --canary-*, --feature-*,
--tracking-*) are defined in `_add_options` below, each with its LOCUST_* variable; locust's --help, which
runs before the locustfile loads, does not list them.
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
import urllib.error
import urllib.request
from argparse import Namespace
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from typing import Any, cast

from locust import FastHttpUser, HttpUser, events, tag, task
from locust.argument_parser import LocustArgumentParser
from locust.env import Environment
from locust.exception import StopUser
from locust.user.users import User

log = logging.getLogger("loadtests")

JSON_HEADERS = {"content-type": "application/json"}
CHURN_FEATURES = 32  # the demo churn model: input 'features' FP32 [batch, 32]
TICKET_CATEGORIES = ("billing", "bug", "outage", "question", "other")
VARIANTS = 64  # distinct pre-encoded bodies per payload kind: varied inputs, no encoding cost per request


@events.init_command_line_parser.add_listener  # type: ignore[untyped-decorator]  # locust's EventHook is untyped
def _add_options(parser: LocustArgumentParser) -> None:
    # on the parser itself, not an argument group: only LocustArgumentParser.add_argument knows is_secret
    parser.add_argument("--rows", type=int, default=1, env_var="LOCUST_ROWS",
                        help="Rows per prediction request (default 1).")
    parser.add_argument("--think-time", type=float, default=0.0, env_var="LOCUST_THINK_TIME",
                        help="Seconds each prediction user waits between requests (default 0: closed loop).")
    parser.add_argument("--admin-token", default=None, env_var="LOCUST_ADMIN_TOKEN", is_secret=True,
                        help="Bearer token for /admin (else GATEWAY_ADMIN_TOKEN; none: a loopback gateway's open admin API).")
    parser.add_argument("--canary-route", default="churn", env_var="LOCUST_CANARY_ROUTE",
                        help="Route whose policy the admin user steps (default churn); restored at the end.")
    parser.add_argument("--canary-stable", default="champion", env_var="LOCUST_CANARY_STABLE",
                        help="Version, alias or stage of the stable arm (default champion).")
    parser.add_argument("--canary-candidate", default="challenger", env_var="LOCUST_CANARY_CANDIDATE",
                        help="Version, alias or stage of the canary arm (default challenger).")
    parser.add_argument("--canary-step-seconds", type=float, default=2.0, env_var="LOCUST_CANARY_STEP_SECONDS",
                        help="Seconds between canary steps (default 2).")
    parser.add_argument("--feature-route", default=None, env_var="LOCUST_FEATURE_ROUTE",
                        help="Route of a model that declares features (required with --tags features).")
    parser.add_argument("--feature-entities", type=int, default=1000, env_var="LOCUST_FEATURE_ENTITIES",
                        help="user_id values are drawn from 1..N (default 1000).")
    parser.add_argument("--tracking-host", default=None, env_var="LOCUST_TRACKING_HOST",
                        help="Base URL of the MLflow-compatible API (default: --host).")
    parser.add_argument("--tracking-experiment", default="locust-tracking", env_var="LOCUST_TRACKING_EXPERIMENT",
                        help="Experiment the tracking users log into (created when missing).")


def _options(environment: Environment) -> Namespace:
    """Parsed options, or the defaults when locust runs as a library without a command line."""
    if environment.parsed_options is not None:
        return cast(Namespace, environment.parsed_options)
    parser = LocustArgumentParser()
    _add_options(parser)
    return cast(Namespace, parser.parse_args([]))


def _admin_token(options: Namespace) -> str | None:
    token: str | None = options.admin_token or os.environ.get("GATEWAY_ADMIN_TOKEN") or None
    return token


# -- which users run -------------------------------------------------------------------------------------


def _runnable(user_class: type[User], tags: set[str] | None, exclude: set[str]) -> bool:
    """Whether any task of the class survives locust's --tags / --exclude-tags filter."""
    for fn in user_class.tasks:
        tagset: set[str] = getattr(fn, "locust_tag_set", set())
        if (tags is None or tagset & tags) and not tagset & exclude:
            return True
    return False


@events.init.add_listener  # type: ignore[untyped-decorator]  # locust's EventHook is untyped
def _select_users(environment: Environment, **_: Any) -> None:
    """Drop opt-in users that were not asked for, and users that the tag filter leaves without tasks
    (locust would spawn them and fail); check that what the chosen users need was given."""
    options = _options(environment)
    tags = set(options.tags) if getattr(options, "tags", None) else None
    exclude = set(getattr(options, "exclude_tags", None) or [])
    named = set(getattr(options, "user_classes", None) or [])
    chosen = []
    for user_class in environment.user_classes:
        opt_in: str | None = getattr(user_class, "opt_in_tag", None)
        if opt_in is not None and opt_in not in (tags or set()) and user_class.__name__ not in named:
            continue
        if _runnable(user_class, tags, exclude):
            chosen.append(user_class)
    if not chosen:
        raise ValueError(f"no user class has tasks left after --tags {sorted(tags or [])} --exclude-tags {sorted(exclude)}")
    if EntityPredictUser in chosen and not options.feature_route:
        raise ValueError("EntityPredictUser needs --feature-route or LOCUST_FEATURE_ROUTE: the route of a model that declares features")
    if options.rows < 1:
        raise ValueError(f"--rows must be at least 1, got {options.rows}")
    environment.user_classes[:] = chosen
    log.info("gateway scenarios: %s", ", ".join(u.__name__ for u in chosen))


# -- payloads --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Payloads:
    """Pre-encoded request bodies for the demo models, VARIANTS of each, `rows` rows per body."""

    v1_churn: tuple[bytes, ...]
    v1_tickets: tuple[bytes, ...]
    v2_churn: tuple[bytes, ...]
    v2_tickets: tuple[bytes, ...]


@cache
def payloads(rows: int) -> Payloads:
    rng = random.Random(8)  # same bodies on every run
    v1_churn, v1_tickets, v2_churn, v2_tickets = [], [], [], []
    for _ in range(VARIANTS):
        features = [[round(rng.gauss(0.0, 1.0), 4) for _ in range(CHURN_FEATURES)] for _ in range(rows)]
        categories = [rng.choice(TICKET_CATEGORIES) for _ in range(rows)]
        priorities = [rng.randint(0, 5) for _ in range(rows)]
        v1_churn.append(json.dumps({"instances": features}).encode())
        v1_tickets.append(json.dumps({"instances": [
            {"category": [c], "priority": [p]} for c, p in zip(categories, priorities, strict=True)
        ]}).encode())
        v2_churn.append(json.dumps({"inputs": [
            {"name": "features", "shape": [rows, CHURN_FEATURES], "datatype": "FP32", "data": [x for r in features for x in r]},
        ]}).encode())
        v2_tickets.append(json.dumps({"inputs": [
            {"name": "category", "shape": [rows, 1], "datatype": "BYTES", "data": categories},
            {"name": "priority", "shape": [rows, 1], "datatype": "INT64", "data": priorities},
        ]}).encode())
    return Payloads(tuple(v1_churn), tuple(v1_tickets), tuple(v2_churn), tuple(v2_tickets))


class PredictionUser(FastHttpUser):
    """Closed-loop prediction traffic (no think time unless --think-time); checks status and body shape."""

    abstract = True
    connection_timeout = 5.0
    network_timeout = 30.0

    def on_start(self) -> None:
        options = _options(self.environment)
        self.think_time: float = options.think_time
        self.bodies = payloads(options.rows)

    def wait_time(self) -> float:
        return self.think_time

    def post(self, path: str, body: bytes, expect: bytes, name: str | None = None) -> None:
        """POST `body`; a non-200 status or a body without `expect` counts as a failure."""
        # pre-encoded bytes: locust's hint says str | dict, its docstring and geventhttpclient take bytes
        with self.client.post(path, data=body, headers=JSON_HEADERS, name=name,  # type: ignore[arg-type]
                              catch_response=True) as response:
            content = response.content or b""
            if response.status_code != 200:
                response.failure(f"{response.status_code}: {content[:200]!r}")
            elif expect not in content:
                response.failure(f"no {expect.decode()} in the answer: {content[:200]!r}")
            else:
                response.success()


class V1PredictUser(PredictionUser):
    """KServe v1 `:predict` on the demo models (JSON rows and JSON objects by input name)."""

    weight = 1

    @tag("v1")
    @task(3)
    def churn(self) -> None:
        self.post("/v1/models/churn:predict", random.choice(self.bodies.v1_churn), b'"predictions"')

    @tag("v1")
    @task(1)
    def ticket_router(self) -> None:
        self.post("/v1/models/ticket_router:predict", random.choice(self.bodies.v1_tickets), b'"predictions"')


class V2InferUser(PredictionUser):
    """Open Inference Protocol v2 `/infer` on the demo models, JSON tensors (FP32, BYTES, INT64)."""

    weight = 1

    @tag("v2")
    @task(3)
    def churn(self) -> None:
        self.post("/v2/models/churn/infer", random.choice(self.bodies.v2_churn), b'"outputs"')

    @tag("v2")
    @task(1)
    def ticket_router(self) -> None:
        self.post("/v2/models/ticket_router/infer", random.choice(self.bodies.v2_tickets), b'"outputs"')


# -- admin: a canary rollout while the other users predict ------------------------------------------------

# route -> (base URL, headers, policy to put back or None to delete): what a stopped run must still undo
_PENDING_RESTORES: dict[str, tuple[str, dict[str, str], dict[str, Any] | None]] = {}


def _restore_request(original: dict[str, Any] | None) -> tuple[str, bytes | None]:
    if original is None:
        return "DELETE", None
    return "PUT", json.dumps(original).encode()


class AdminCanaryUser(HttpUser):
    """One user (fixed_count) stepping the canary route's weights 10% -> 50% -> 100% -> back to the
    policy it found (none: DELETE), one step per --canary-step-seconds, and restoring it on stop."""

    fixed_count = 1
    STEPS: tuple[tuple[str, tuple[int, ...]], ...] = (("10%", (90, 10)), ("50%", (50, 50)), ("100%", (100,)), ("restore", ()))

    def on_start(self) -> None:
        options = _options(self.environment)
        self.route: str = options.canary_route
        self.stable: str = options.canary_stable
        self.candidate: str = options.canary_candidate
        self.step_seconds: float = options.canary_step_seconds
        token = _admin_token(options)
        self.headers = {**JSON_HEADERS, **({"authorization": f"Bearer {token}"} if token else {})}
        self.path = f"/admin/routes/{self.route}"
        self.step = 0
        self.original: dict[str, Any] | None = None
        with self.client.get(self.path, headers=self.headers, name="/admin/routes/[route]", catch_response=True) as r:
            view: dict[str, Any] | None = r.json() if r.status_code == 200 else None
            if view is not None:
                r.success()
            elif r.status_code in (401, 403) and token is None:
                r.success()  # an expected answer: this gateway needs a token we were not given
                log.warning("AdminCanaryUser disabled: %s needs an admin token (set LOCUST_ADMIN_TOKEN)", self.host)
            else:
                r.failure(f"{r.status_code}: {r.text[:200]}")
        if view is None:
            raise StopUser()
        self.original = view.get("policy")
        serving = view.get("serving") or {}
        self.model: str = (self.original or {}).get("model") or serving.get("model") or self.route
        _PENDING_RESTORES[self.route] = (self.host or "", self.headers, self.original)

    def wait_time(self) -> float:
        return self.step_seconds

    @tag("admin")
    @task
    def canary_step(self) -> None:
        label, weights = self.STEPS[self.step % len(self.STEPS)]
        self.step += 1
        if label == "restore":
            self.restore()
            return
        versions = (self.stable, self.candidate) if len(weights) == 2 else (self.candidate,)
        policy = {"model": self.model, "split": "random",
                  "arms": [{"version": v, "weight": w} for v, w in zip(versions, weights, strict=True)]}
        _PENDING_RESTORES[self.route] = (self.host or "", self.headers, self.original)
        with self.client.put(self.path, json=policy, headers=self.headers, name=f"/admin/routes/[route] canary {label}",
                             catch_response=True) as r:
            if r.status_code != 200:
                r.failure(f"{r.status_code}: {r.text[:200]}")
                return
            served = [arm["weight"] for arm in (r.json().get("serving") or {}).get("arms", [])]
            if served != list(weights):
                r.failure(f"the replica serves weights {served}, expected {list(weights)}")

    def restore(self) -> None:
        """Put back the policy the run found (DELETE when there was none); 404 on DELETE means already gone."""
        method, body = _restore_request(self.original)
        with self.client.request(method, self.path, data=body, headers=self.headers,
                                 name="/admin/routes/[route] restore", catch_response=True) as r:
            if r.status_code == 200 or (method == "DELETE" and r.status_code == 404):
                r.success()
                _PENDING_RESTORES.pop(self.route, None)
            else:
                r.failure(f"{r.status_code}: {r.text[:200]}")

    def on_stop(self) -> None:
        if self.route in _PENDING_RESTORES:
            self.restore()


@events.test_stop.add_listener  # type: ignore[untyped-decorator]  # locust's EventHook is untyped
def _restore_routes(**_: Any) -> None:
    """Last resort when a user was killed before its on_stop finished: put the routes back outside stats."""
    for route, (host, headers, original) in list(_PENDING_RESTORES.items()):
        method, body = _restore_request(original)
        request = urllib.request.Request(f"{host}/admin/routes/{route}", data=body, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=10):
                pass
        except urllib.error.HTTPError as exc:
            if not (method == "DELETE" and exc.code == 404):
                log.error("could not restore route %s: %s %s", route, exc.code, exc.reason)
                continue
        except OSError as exc:
            log.error("could not restore route %s: %s", route, exc)
            continue
        _PENDING_RESTORES.pop(route, None)


# -- opt-in: entity-keyed predictions (tag `features`) ----------------------------------------------------


class EntityPredictUser(FastHttpUser):
    """Opt-in (`--tags features`; needs LOCUST_FEATURE_ROUTE and a gateway with feature views): v1
    predictions that carry entity keys, `{"instances": [{"user_id": 42, "amount": 12.5}]}`, and let the
    gateway fetch the features."""

    opt_in_tag = "features"
    connection_timeout = 5.0
    network_timeout = 30.0

    def on_start(self) -> None:
        options = _options(self.environment)
        self.path = f"/v1/models/{options.feature_route}:predict"
        self.entities: int = options.feature_entities
        self.rows: int = options.rows
        self.think_time: float = options.think_time

    def wait_time(self) -> float:
        return self.think_time

    @tag("features")
    @task
    def predict_by_entity(self) -> None:
        instances = [{"user_id": random.randint(1, self.entities), "amount": round(random.uniform(1, 500), 2)}
                     for _ in range(self.rows)]
        with self.client.post(self.path, data=json.dumps({"instances": instances}), headers=JSON_HEADERS,
                              name="/v1/models/[feature_route]:predict", catch_response=True) as r:
            content = r.content or b""
            if r.status_code != 200 or b'"predictions"' not in content:
                r.failure(f"{r.status_code}: {content[:200]!r}")
            else:
                r.success()


# -- opt-in: MLflow tracking writes (tag `tracking`) ------------------------------------------------------

MLFLOW = "/api/2.0/mlflow"


def _now_ms() -> int:
    return int(time.time() * 1000)


class TrackingUser(HttpUser):
    """Opt-in (`--tags tracking`; needs the MLflow-compatible API): each task is one run's life as the
    mlflow client drives it: runs/create, log-parameter, log-batch x5 (10 metrics each), set-tag,
    runs/update FINISHED."""

    opt_in_tag = "tracking"
    BATCHES = 5
    METRICS_PER_BATCH = 10

    def on_start(self) -> None:
        options = _options(self.environment)
        self.base = (options.tracking_host or "").rstrip("/")
        self.think_time: float = options.think_time
        self.experiment_id = self._experiment(options.tracking_experiment)

    def wait_time(self) -> float:
        return self.think_time

    def _call(self, method: str, path: str, name: str | None = None, ok: Iterable[int] = (200,),
              **kwargs: Any) -> Any:
        with self.client.request(method, f"{self.base}{MLFLOW}{path}", name=name or f"{MLFLOW}{path}",
                                 catch_response=True, **kwargs) as r:
            # a tolerated error status counts only in MLflow's shape ({"error_code": ...}), not a bare 404
            passed = r.status_code in ok and (r.status_code == 200 or '"error_code"' in r.text)
            if passed:
                r.success()
            else:
                r.failure(f"{r.status_code}: {r.text[:200]}")
        if not passed:
            raise StopUser()  # a run without its id can't go on; stop this user, the others carry on
        return r.json() if r.status_code == 200 else None

    def _experiment(self, name: str) -> str:
        """The experiment's id, creating it when missing (another user may create it first)."""
        for _ in range(3):
            found = self._call("GET", "/experiments/get-by-name", params={"experiment_name": name}, ok=(200, 404))
            if found is not None:
                return str(found["experiment"]["experiment_id"])
            created = self._call("POST", "/experiments/create", json={"name": name}, ok=(200, 400))
            if created is not None:
                return str(created["experiment_id"])
        raise StopUser()

    @tag("tracking")
    @task
    def run_lifecycle(self) -> None:
        run = self._call("POST", "/runs/create", json={
            "experiment_id": self.experiment_id, "start_time": _now_ms(), "run_name": f"locust-{random.getrandbits(32):08x}",
            "tags": [{"key": "source", "value": "locust"}]})
        run_id = run["run"]["info"]["run_id"]
        self._call("POST", "/runs/log-parameter", json={"run_id": run_id, "key": "lr", "value": "0.01"})
        for batch in range(self.BATCHES):
            metrics = [{"key": f"m{i}", "value": random.random(), "timestamp": _now_ms(), "step": batch}
                       for i in range(self.METRICS_PER_BATCH)]
            self._call("POST", "/runs/log-batch", json={"run_id": run_id, "metrics": metrics})
        self._call("POST", "/runs/set-tag", json={"run_id": run_id, "key": "done", "value": "true"})
        self._call("POST", "/runs/update", json={"run_id": run_id, "status": "FINISHED", "end_time": _now_ms()})
