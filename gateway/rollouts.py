"""Guarded progressive rollouts: validating a rollout against the registry, aborting one, and the
driver task that steps the candidate's weight while its guards hold.

Every replica runs a RolloutDriver. Each tick it lists the active rollouts and tries to take each
one's lease; the holder drives it, the others only follow the route policies it writes. The driver
watches the stable and candidate versions of the route on this replica's StatsBoard, and at the end
of each step compares the two over the step (differences of snapshots) with gateway/guards.py.
In-process counts are this replica's traffic only: with several replicas, the driving replica's
share of the traffic stands for the whole. A replica that takes over (restart, lost lease) resumes
from the stored step and starts that step's window afresh.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from dataclasses import dataclass
from typing import Any

from gateway.armstats import StatsBoard
from gateway.errors import InvalidPolicy
from gateway.guards import ArmCounts, Check, Side, Window, evaluate
from gateway.rollout_plan import (
    PREVIOUS_ALIAS,
    STABLE_REF,
    RolloutSpec,
    SpecError,
    describe_step,
    json_number,
    promoted_policy,
    shadow_policy,
    step_policy,
)
from gateway.routing import PolicyError, RoutePolicy
from gateway.sync import RegistryFollower
from monitoring.collectors import DriftRegistry
from monitoring.metrics import GatewayMetrics
from registry.errors import RegistryError, ResourceDoesNotExist
from registry.rollouts import Change, LeaseLost, RolloutEvent, RolloutInactive, RolloutRecord, RolloutStore
from registry.rollouts import Lease as LeaseRecord
from registry.store import RegistryStore

log = logging.getLogger("gateway.rollouts")

STATES = ("pending", "shadow", "stepping", "promoted", "rolled_back", "aborted")


class RolloutConflict(Exception):
    """The request conflicts with the route's or the rollout's current state (answered 409)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


# --- starting and aborting (blocking: run in a thread) ------------------------------------------


def prepare(store: RegistryStore, name: str, body: object) -> tuple[RolloutSpec, dict[str, Any]]:
    """Validate a rollout of route `name` against the registry; returns the spec and the initial state.
    Raises InvalidPolicy (422) naming the field, or RolloutConflict (409)."""
    try:
        spec = RolloutSpec.parse(body)
    except SpecError as exc:
        raise InvalidPolicy(str(exc)) from exc
    try:
        store.get_registered_model(spec.model)
    except ResourceDoesNotExist as exc:
        raise InvalidPolicy(f"model: '{spec.model}' is not a registered model") from exc

    def resolve(where: str, ref: str) -> int:
        try:
            return store.resolve_version_ref(spec.model, ref).version
        except RegistryError as exc:
            raise InvalidPolicy(f"{where}: '{ref}' does not name a version of '{spec.model}' ({exc.message})") from exc

    candidate = resolve("candidate", spec.candidate)
    try:
        route = store.get_route(name)
    except ResourceDoesNotExist:
        route = None
    original: dict[str, Any] | None = None
    kept: list[dict[str, Any]] = []
    if route is None:
        if name != spec.model:
            raise InvalidPolicy(f"model: route '{name}' has no policy, so it serves model '{name}', not '{spec.model}'")
        serving = store.resolve_serving_version(spec.model)
        if serving is None:
            raise InvalidPolicy(f"model: '{spec.model}' has no version to roll out from")
        stable = serving.version
    else:
        if route.model != spec.model:
            raise InvalidPolicy(f"model: route '{name}' serves model '{route.model}', not '{spec.model}'")
        try:
            policy = RoutePolicy.parse(route.policy)
        except PolicyError as exc:
            raise RolloutConflict(f"route '{name}' has a policy that cannot be served: {exc}") from exc
        live = [arm for arm in policy.arms if arm.weight > 0]
        if len(live) != 1:
            raise RolloutConflict(f"route '{name}' splits traffic over {len(live)} arms; a rollout starts from one")
        stable = resolve("model", live[0].version)
        original = route.policy
        for shadow in route.policy.get("shadows", []):
            ref = shadow.get("version")
            try:
                mirrored = store.resolve_version_ref(spec.model, str(ref)).version if ref is not None else None
            except RegistryError:
                mirrored = None  # unresolvable: the follower drops it as before
            if mirrored not in (stable, candidate):
                kept.append(shadow)  # a shadow of either version would mirror it twice
    if candidate == stable:
        raise InvalidPolicy(f"candidate: '{spec.candidate}' is version {stable}, which route '{name}' serves already")
    try:
        champion: int | None = store.get_version_by_alias(spec.model, STABLE_REF).version
    except ResourceDoesNotExist:
        champion = None
    if champion is not None and champion != stable:
        raise RolloutConflict(
            f"route '{name}' serves version {stable} but alias '{STABLE_REF}' names version {champion}: "
            f"a rollout starts from the champion")
    state = {
        "stable": stable, "candidate": candidate, "original_policy": original, "kept_shadows": kept,
        "set_champion": champion is None, "step": -1, "weight": 0, "guards": None, "waiting": None,
        "reason": None, "holder": None,
    }
    return spec, state


def abort(store: RegistryStore, name: str, actor: str) -> RolloutRecord:
    """Roll an active rollout back to its original route policy, as `actor`. Raises ResourceDoesNotExist
    or RolloutConflict when it is not active."""
    rollouts = RolloutStore(store)
    record = rollouts.get(name)
    if not record.active:
        raise RolloutConflict(f"rollout '{name}' is {record.status}, not running")
    state = {**record.state, "weight": 0, "waiting": None, "reason": {"aborted_by": actor}}
    try:
        rollouts.abort(name, actor, _restore(record, "aborted", state, "abort", {"by": actor}))
    except RolloutInactive as exc:
        raise RolloutConflict(f"rollout '{name}' finished meanwhile: {exc.message}") from exc
    return rollouts.get(name)


def _restore(record: RolloutRecord, status: str, state: dict[str, Any], action: str, detail: dict[str, Any]) -> Change:
    """A change back to the route's original policy (or to none)."""
    original = record.state.get("original_policy")
    if record.status == "pending":  # nothing was written to the route yet
        return Change(status, state, action, detail)
    return Change(status, state, action, detail, route_policy=original, delete_route=original is None)


def rollout_view(record: RolloutRecord, events: list[RolloutEvent], lease: LeaseRecord | None) -> dict[str, Any]:
    """The JSON of GET /admin/rollouts/{name}."""
    state, spec = record.state, record.spec
    step = int(state.get("step", -1))
    return {
        "name": record.name,
        "model": record.model,
        "state": record.status,
        "step": step,
        "phase": describe_step(step, spec["steps"]),
        "weight": state.get("weight", 0),
        "stable": {"version": state.get("stable")},
        "candidate": {"ref": spec["candidate"], "version": state.get("candidate")},
        "guards": state.get("guards"),
        "waiting": state.get("waiting"),
        "reason": state.get("reason"),
        "spec": spec,
        "driver": {"holder": lease.holder, "expires_ms": lease.expires_ms} if lease and record.active else None,
        "created_ms": record.created_ms,
        "updated_ms": record.updated_ms,
        "updated_by": record.updated_by,
        "history": [e.to_dict() for e in events],
    }


# --- the driver -----------------------------------------------------------------------------------


@dataclass
class _Run:
    """What this replica knows of a rollout it drives; lost on restart (the stored state is not)."""

    record: RolloutRecord
    spec: RolloutSpec
    stable: int
    candidate: int
    step: int
    baseline: dict[int, ArmCounts]
    psi_windows: int
    started: float
    last_stable: Side | None = None
    waiting: bool = False


class RolloutDriver:
    """Drives the active rollouts whose lease this replica holds; see the module docstring."""

    def __init__(self, store: RegistryStore, follower: RegistryFollower, board: StatsBoard, metrics: GatewayMetrics,
                 drift: DriftRegistry, interval_s: float, lease_s: float | None = None) -> None:
        self.rollouts = RolloutStore(store)
        self.follower = follower
        self.board = board
        self.metrics = metrics
        self.drift = drift
        self.interval_s = interval_s
        self.holder = secrets.token_hex(6)  # this replica (process), for the lease and the audit
        self.ttl_ms = int(1000 * (lease_s if lease_s is not None else max(3.0, 10 * interval_s)))
        self._runs: dict[str, _Run] = {}
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """Tick now (a rollout was just created here)."""
        self._wake.set()

    async def run(self) -> None:
        while True:
            try:
                await self.tick()
            except RegistryError as exc:
                log.warning("rollouts: registry unavailable: %s", exc)
            except Exception:  # a bug must not end rollouts on this replica; the next tick retries
                log.exception("rollout tick failed")
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval_s)

    async def close(self) -> None:
        """Hand the leases back, so another replica (or this one restarted) resumes at once."""
        for name in list(self._runs):
            try:
                await asyncio.to_thread(self.rollouts.release, name, self.holder)
            except RegistryError as exc:
                log.warning("rollout %s: lease not released: %s", name, exc)
        self._runs.clear()

    async def tick(self) -> None:
        active = await asyncio.to_thread(self.rollouts.list_rollouts, active_only=True)
        names = {record.name for record in active}
        for name in [n for n in self._runs if n not in names]:  # finished or aborted elsewhere
            await self._forget(name)
            try:
                record = await asyncio.to_thread(self.rollouts.get, name)
                self._publish(name, record.status, int(record.state.get("weight", 0)))
            except ResourceDoesNotExist:
                pass
        for record in active:
            try:
                if await asyncio.to_thread(self.rollouts.acquire, record.name, self.holder, self.ttl_ms):
                    await self._drive(record)
                elif record.name in self._runs:
                    log.warning("rollout %s: lease taken by another replica; following it", record.name)
                    await self._forget(record.name)
            except (LeaseLost, RolloutInactive) as exc:
                log.info("rollout %s: %s", record.name, exc)
                await self._forget(record.name)

    async def _drive(self, record: RolloutRecord) -> None:
        run = self._runs.get(record.name)
        if run is None:
            await self._start(record)
            return
        if time.monotonic() - run.started < run.spec.step_seconds:
            return
        check, stable_side = self._check(run)
        state = {**run.record.state, "guards": check.to_dict(), "holder": self.holder}
        self._publish_guards(record.name, check)
        if check.verdict == "wait":
            if not run.waiting:
                run.waiting = True
                state["waiting"] = {"candidate_requests": check.candidate_requests, "min_requests": check.min_requests}
                await self._write(run, Change(run.record.status, state, "wait", {
                    "step": describe_step(run.step, run.spec.steps), **state["waiting"]}))
                self.metrics.rollout_steps.labels(record.name, "waiting").inc()
            return
        state["waiting"] = None
        failed = check.failed
        if failed is not None:
            reason = {"guard": failed.guard, **failed.to_dict(), "step": describe_step(run.step, run.spec.steps)}
            state.update(weight=0, reason=reason)
            await self._write(run, _restore(run.record, "rolled_back", state, "rollback", {**reason, "guards": check.to_dict()}))
            await self._finish(record.name, "rolled_back", 0)
            return
        if stable_side.requests >= max(1, run.spec.limits.min_requests):
            run.last_stable = stable_side
        if run.step == len(run.spec.steps) - 1:
            original = run.record.state.get("original_policy")
            policy = promoted_policy(original, run.record.state.get("kept_shadows", []))
            state.update(weight=100, reason=None)
            change = Change("promoted", state, "promote", {"champion": run.candidate, PREVIOUS_ALIAS: run.stable,
                                                          "guards": check.to_dict()},
                            route_policy=policy, delete_route=policy is None,
                            aliases=((PREVIOUS_ALIAS, run.stable), (STABLE_REF, run.candidate)))
            await self._write(run, change)
            await self._finish(record.name, "promoted", 100)
            return
        step = run.step + 1
        weight = json_number(run.spec.steps[step])
        state.update(step=step, weight=weight)
        policy = step_policy(run.spec.model, run.record.state.get("original_policy"), run.record.state.get("kept_shadows", []),
                             run.stable, run.candidate, weight, run.spec.mirror_sample)
        RoutePolicy.parse(policy)  # a bug here must fail before it reaches the registry
        await self._write(run, Change("stepping", state, "step", {"step": describe_step(step, run.spec.steps),
                                                                  "weight": weight, "guards": check.to_dict()},
                                      route_policy=policy))
        self.metrics.rollout_steps.labels(record.name, "advanced").inc()
        await self.follower.sync_once()
        self._restart_window(run, step)
        self._publish(record.name, "stepping", weight)

    async def _start(self, record: RolloutRecord) -> None:
        """Take up a rollout: from "pending" write its shadow phase; else resume its stored step."""
        spec = RolloutSpec.parse(record.spec)
        state = dict(record.state)
        stable, candidate = int(state["stable"]), int(state["candidate"])
        self.board.watch(record.name, (stable, candidate))
        run = _Run(record, spec, stable, candidate, int(state.get("step", -1)), {}, 0, 0.0)
        self._runs[record.name] = run
        state.update(holder=self.holder, waiting=None)
        if record.status == "pending":
            policy = shadow_policy(spec.model, state.get("original_policy"), state.get("kept_shadows", []),
                                   candidate, spec.mirror_sample)
            RoutePolicy.parse(policy)
            aliases = ((STABLE_REF, stable),) if state.get("set_champion") else ()
            state.update(step=-1, weight=0)
            change = Change("shadow", state, "start", {"step": "shadow", "weight": 0, "stable": stable,
                                                       "candidate": candidate}, route_policy=policy, aliases=aliases)
        else:
            change = Change(record.status, state, "resume", {"step": describe_step(run.step, spec.steps),
                                                             "weight": state.get("weight", 0)})
        await self._write(run, change)
        log.info("rollout %s: driving it as replica %s (%s)", record.name, self.holder, change.action)
        await self.follower.sync_once()  # recompile the arms, now tapped
        self._restart_window(run, run.step)
        self._publish(record.name, change.status, int(state.get("weight", 0)))

    async def _write(self, run: _Run, change: Change) -> None:
        await asyncio.to_thread(self.rollouts.advance, run.record.name, self.holder, self.ttl_ms, change)
        run.record = RolloutRecord(run.record.name, run.record.model, run.record.spec, change.status, change.state,
                                   run.record.created_ms, run.record.updated_ms, run.record.updated_by)

    def _restart_window(self, run: _Run, step: int) -> None:
        run.step = step
        run.baseline = {v: self.board.snapshot(run.record.name, v) for v in (run.stable, run.candidate)}
        tracker = self.drift.get(run.record.name, str(run.candidate))
        run.psi_windows = tracker.windows_closed if tracker is not None else 0
        run.started = time.monotonic()
        run.waiting = False

    def _check(self, run: _Run) -> tuple[Check, Side]:
        """Judge the window since the step began. The candidate side is its shadow runs during the
        shadow phase (latency of the model run only, so the p99 ratio errs in the candidate's favour),
        its live requests after; the stable side is always its live requests, or, while it takes too
        few for min_requests (a 100% step), its last window that had enough."""
        name = run.record.name
        cand = self.board.snapshot(name, run.candidate).since(run.baseline[run.candidate])
        stable = self.board.snapshot(name, run.stable).since(run.baseline[run.stable])
        stable_side = Side.live(stable)
        if stable_side.requests < max(1, run.spec.limits.min_requests) and run.last_stable is not None:
            stable_side = run.last_stable
        window = Window(
            candidate=Side.shadow(cand) if run.step < 0 else Side.live(cand),
            stable=stable_side,
            compared=cand.compared + stable.compared,
            agreement_sum=cand.agreement_sum + stable.agreement_sum,
            psi=self._psi(run) if run.step >= 0 else None,
        )
        return evaluate(window, run.spec.limits), stable_side

    def _psi(self, run: _Run) -> float | None:
        """The worst input-feature PSI of the candidate's last drift window closed during this step."""
        tracker = self.drift.get(run.record.name, str(run.candidate))
        if tracker is None or tracker.windows_closed <= run.psi_windows:
            return None
        last = tracker.last()
        values = [f.psi for f in last.features if f.role == "input" and f.psi is not None] if last else []
        return max(values) if values else None

    async def _finish(self, name: str, status: str, weight: int) -> None:
        self.metrics.rollout_steps.labels(name, status).inc()
        self._publish(name, status, weight)
        await self._forget(name)
        try:
            await asyncio.to_thread(self.rollouts.release, name, self.holder)
        except RegistryError as exc:
            log.warning("rollout %s: lease not released: %s", name, exc)

    async def _forget(self, name: str) -> None:
        self._runs.pop(name, None)
        self.board.unwatch(name)
        await self.follower.sync_once()  # recompile the route's arms without taps

    def _publish(self, name: str, status: str, weight: float) -> None:
        for state in STATES:
            self.metrics.rollout_state.labels(name, state).set(1 if state == status else 0)
        self.metrics.rollout_candidate_weight.labels(name).set(weight)

    def _publish_guards(self, name: str, check: Check) -> None:
        for result in check.results:
            if result.value is not None:
                self.metrics.rollout_guard_value.labels(name, result.guard).set(result.value)
