"""The `gateway` command: serve, and manage the registry the running gateway follows.

Flags map 1:1 onto Config fields; every flag also reads GATEWAY_<FLAG> (click's auto_envvar_prefix),
and --data-dir / --registry read GATEWAY_DATA_DIR / GATEWAY_REGISTRY_URL on every subcommand.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import click
import orjson

from gateway.authz import ROLES
from gateway.config import Config, ConfigError
from registry.entities import STAGES
from registry.errors import RegistryError

F = TypeVar("F", bound=Callable[..., Any])
DEFAULTS = Config()


def registry_options(fn: F) -> F:
    """--data-dir and --registry, shared by every subcommand so the CLI and a gateway share one registry."""
    fn = click.option(
        "--registry", "registry_url", envvar="GATEWAY_REGISTRY_URL", default=None, metavar="URL",
        help="Registry database URL (sqlite:///path or postgresql://user@host/db). Default: SQLite in --data-dir.",
    )(fn)
    fn = click.option(
        "--data-dir", envvar="GATEWAY_DATA_DIR", type=click.Path(path_type=Path), default=DEFAULTS.data_dir,
        show_default=True, help="Directory for the embedded registry database and the artifact store.",
    )(fn)
    return fn


def _config(**values: Any) -> Config:
    try:
        return Config(**values)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from exc


def _open(data_dir: Path, registry_url: str | None) -> tuple[Any, Any]:
    from registry.artifacts import ArtifactStore
    from registry.store import RegistryStore

    config = _config(data_dir=data_dir, registry_url=registry_url)
    return RegistryStore(config.database_url), ArtifactStore(config.artifacts_dir)


@click.group(context_settings={"auto_envvar_prefix": "GATEWAY", "help_option_names": ["-h", "--help"]})
def main() -> None:
    """gateway: serve ONNX models over KServe v1 and the Open Inference Protocol v2, from a registry."""


@main.command(context_settings={"auto_envvar_prefix": "GATEWAY"})  # GATEWAY_PORT, not GATEWAY_SERVE_PORT
@click.option("--host", default=DEFAULTS.host, show_default=True, help="Address to bind.")
@click.option("--port", type=int, default=DEFAULTS.port, show_default=True, help="Port to bind.")
@click.option("--workers", type=int, default=DEFAULTS.workers, show_default=True, help="Worker processes sharing the port.")
@registry_options
@click.option("--demo", is_flag=True, help="Register the demo models (churn, ticket_router) if they are missing.")
@click.option("--artifact-source", default=None, metavar="URL",
              help="Base URL of the registry service (`gateway registry serve`): model files missing from the "
                   "local store are downloaded from it and checked against their registered sha256.")
@click.option("--artifact-max-bytes", type=int, default=DEFAULTS.artifact_max_bytes, show_default=True,
              help="Largest model file --artifact-source may deliver.")
@click.option("--artifact-timeout", "artifact_timeout_s", envvar="GATEWAY_ARTIFACT_TIMEOUT", type=float,
              default=DEFAULTS.artifact_timeout_s, show_default=True,
              help="Seconds one model file download may take; a failed download is retried on a later sync.")
@click.option("--intra-op-threads", type=int, default=DEFAULTS.intra_op_threads, show_default=True,
              help="onnxruntime threads per inference (0: onnxruntime decides).")
@click.option("--inference-threads", type=int, default=DEFAULTS.inference_threads, show_default=True,
              help="Executor threads for models too slow to run on the event loop.")
@click.option("--inline-threshold-us", type=float, default=DEFAULTS.inline_threshold_us, show_default=True,
              help="Models whose warm-up inference takes less than this run on the event loop.")
@click.option("--max-batch-size", type=int, default=DEFAULTS.max_batch_size, show_default=True,
              help="Most rows stacked into one inference.")
@click.option("--max-batch-delay-ms", type=float, default=DEFAULTS.max_batch_delay_ms, show_default=True,
              help="Wait this long to fill a batch (0: batch what arrives in the same event-loop turn).")
@click.option("--request-timeout", "request_timeout_s", envvar="GATEWAY_REQUEST_TIMEOUT", type=float, default=DEFAULTS.request_timeout_s,
              show_default=True, help="Per-request deadline in seconds (504 past it); v2 'timeout' (µs) may shorten it.")
@click.option("--max-queue-rows", type=int, default=DEFAULTS.max_queue_rows, show_default=True,
              help="Rows waiting per model beyond which requests get 503 with Retry-After.")
@click.option("--max-in-flight", type=int, default=DEFAULTS.max_in_flight, show_default=True,
              help="Inference requests in flight per process beyond which requests get 503 with Retry-After "
                   "before their body is read (0: no bound).")
@click.option("--max-body-bytes", type=int, default=DEFAULTS.max_body_bytes, show_default=True,
              help="Larger request bodies get 413.")
@click.option("--poll-interval", "poll_interval_s", envvar="GATEWAY_POLL_INTERVAL", type=float, default=DEFAULTS.poll_interval_s, show_default=True,
              help="Seconds between checks of the registry for promotions and new versions.")
@click.option("--graceful-timeout", "graceful_timeout_s", envvar="GATEWAY_GRACEFUL_TIMEOUT", type=float, default=DEFAULTS.graceful_timeout_s,
              show_default=True, help="Seconds to finish in-flight requests after SIGTERM.")
@click.option("--log-level", type=click.Choice(["critical", "error", "warning", "info", "debug"]),
              default=DEFAULTS.log_level, show_default=True)
@click.option("--redis", "redis_url", envvar="GATEWAY_REDIS_URL", default=None, metavar="URL",
              help="Redis for online features and shared drift windows (default: in-memory, per process).")
@click.option("--feature-timeout-ms", type=float, default=DEFAULTS.feature_timeout_ms, show_default=True,
              help="Budget of one online-feature read; past it the route's policy answers 503 or serves defaults.")
@click.option("--drift-window-requests", type=int, default=DEFAULTS.drift_window_requests, show_default=True,
              help="Rows per drift window when a route's policy sets none.")
@click.option("--drift-flush-interval", "drift_flush_interval_s", envvar="GATEWAY_DRIFT_FLUSH_INTERVAL", type=float,
              default=DEFAULTS.drift_flush_interval_s, show_default=True,
              help="Seconds between drift count flushes (binning and merging off the request path).")
@click.option("--admin-token", default=None, metavar="TOKEN",
              help="Bootstrap admin token (role admin); with it, /admin and writes need a token of the right role. "
                   "Required when --host is not a loopback address.")
@click.option("--require-api-key", is_flag=True, default=DEFAULTS.require_api_key,
              help="Inference, metadata, /monitoring and MLflow reads need 'Authorization: Bearer <token>' (any role).")
@click.option("--max-artifact-bytes", type=int, default=DEFAULTS.max_artifact_bytes, show_default=True,
              help="Larger MLflow artifact uploads get 413 and leave nothing behind.")
@click.option("--shadow-queue-size", type=int, default=DEFAULTS.shadow_queue_size, show_default=True,
              help="Shadow copies waiting beyond this are dropped and counted.")
@click.option("--shadow-workers", type=int, default=DEFAULTS.shadow_workers, show_default=True,
              help="Concurrent shadow copies in flight.")
@click.option("--shadow-timeout", "shadow_timeout_s", envvar="GATEWAY_SHADOW_TIMEOUT", type=float, default=DEFAULTS.shadow_timeout_s,
              show_default=True, help="Seconds a shadow copy may take before it counts as failed.")
def serve(**values: Any) -> None:
    """Run the gateway (with no flags: embedded SQLite registry under ./.gateway, 127.0.0.1:8000)."""
    config = _config(**values)
    logging.basicConfig(level=config.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if config.demo:
        from gateway.demo import ensure_demo_models

        store, artifacts = _open(config.data_dir, config.registry_url)
        try:
            for line in ensure_demo_models(store, artifacts):
                click.echo(f"registered demo model {line}")
        finally:
            store.close()
    from gateway.server import serve as run_server

    run_server(config)


@main.group()
def registry() -> None:
    """The MLflow-compatible tracking and model-registry API on its own (no serving)."""


@registry.command("serve", context_settings={"auto_envvar_prefix": "GATEWAY_REGISTRY"})
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", type=int, default=5000, show_default=True, help="Port to bind.")
@click.option("--admin-token", envvar="GATEWAY_ADMIN_TOKEN", default=None, metavar="TOKEN",
              help="Bootstrap admin token; with it, writes need a token of the right role (required when --host "
                   "is not a loopback address).")
@click.option("--max-artifact-bytes", envvar="GATEWAY_MAX_ARTIFACT_BYTES", type=int,
              default=DEFAULTS.max_artifact_bytes, show_default=True, help="Larger artifact uploads get 413.")
@registry_options
def registry_serve(host: str, port: int, admin_token: str | None, max_artifact_bytes: int, data_dir: Path,
                   registry_url: str | None) -> None:
    """Serve /api/2.0/mlflow and /api/2.0/mlflow-artifacts (mlflow.set_tracking_uri("http://HOST:PORT"))."""
    import uvicorn

    from gateway.access import AccessGuard, Keyring, PollingRefresh, WriteAuditor
    from registry.api import create_registry_app

    config = _config(data_dir=data_dir, registry_url=registry_url, host=host, port=port, admin_token=admin_token,
                     max_artifact_bytes=max_artifact_bytes)
    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    registry_app = create_registry_app(config.database_url, config.artifacts_dir, max_artifact_bytes=max_artifact_bytes)
    keyring = Keyring(config.admin_token)
    refresh = PollingRefresh(keyring, registry_app.state.store, config.poll_interval_s)
    app = AccessGuard(registry_app, keyring, enabled=config.access_control, require_api_key=False, refresh=refresh,
                      auditor=WriteAuditor(registry_app.state.store))
    uvicorn.run(app, host=host, port=port, loop="uvloop", http="httptools", access_log=False, server_header=False)


@main.group()
def models() -> None:
    """Register, list and promote model versions."""


@models.command("register")
@click.argument("name")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--description", default="", help="Free text stored with the version.")
@click.option("--source", default=None, help="Where the file came from (e.g. runs:/<run_id>/model).")
@click.option("--run-id", default=None, help="The training run that produced the file.")
@click.option("--tag", "tags", multiple=True, metavar="KEY=VALUE", help="A version tag; repeatable.")
@click.option("--features", "feature_refs", default=None, metavar="REFS",
              help="Declared input features in input-column order, comma-separated 'view:feature' or "
                   "'request:name' (supplied by the request); checked against the model's input width and dtype.")
@click.option("--reference", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              metavar="FILE.csv", help="A training-like sample (CSV with a header) stored as the drift reference profile.")
@click.option("--bins", type=click.IntRange(2, 1000), default=10, show_default=True,
              help="Quantile bins per numeric column of the reference profile.")
@registry_options
def register(name: str, file: Path, description: str, source: str | None, run_id: str | None,
             tags: tuple[str, ...], feature_refs: str | None, reference: Path | None, bins: int,
             data_dir: Path, registry_url: str | None) -> None:
    """Register FILE (an ONNX model) as the next version of model NAME.

    With --features, the declared features are checked against the registered feature views and the
    model's input before anything is written; with --reference, so is the reference sample."""
    from registry.onnxinfo import inspect_onnx
    from registry.registration import register_model_file
    from registry.serving import VersionServing

    parsed: dict[str, str] = {}
    for tag in tags:
        key, sep, value = tag.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{tag!r} is not KEY=VALUE", param_hint="'--tag'")
        parsed[key] = value
    refs = _parse_refs(feature_refs) if feature_refs is not None else None
    data = file.read_bytes()
    store, artifacts = _open(data_dir, registry_url)
    try:
        signature = inspect_onnx(data)  # registration checks it again; the checks below need it first
        if refs is not None:
            _check_declared(signature, refs, _stored_views(store))
        profile = _reference_profile(data, signature, refs, reference, bins) if reference is not None else None
        # One transaction: a follower never sees the version without its features and profile.
        mv = register_model_file(store, artifacts, name, data, source=source, run_id=run_id,
                                 description=description, tags=parsed, serving=VersionServing(refs, profile))
    except RegistryError as exc:
        raise click.ClickException(exc.message) from exc
    finally:
        store.close()
    inputs = ", ".join(f"{t.name} {t.datatype}{list(t.shape)}" for t in mv.signature.inputs)
    click.echo(f"registered {mv.name} version {mv.version} (sha256 {mv.artifact_sha256[:12]}, inputs: {inputs})")
    if refs is not None:
        click.echo(f"declared features: {', '.join(refs)}")
    if profile is not None:
        click.echo(f"reference profile: {_describe_profile(profile)}")


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")


@models.command("list")
@click.argument("name", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@registry_options
def list_models(name: str | None, as_json: bool, data_dir: Path, registry_url: str | None) -> None:
    """List every version of every model (or of NAME), with stage and aliases."""
    store, _ = _open(data_dir, registry_url)
    try:
        names = [name] if name else [m.name for m in store.list_registered_models()]
        versions = [mv for n in names for mv in store.list_model_versions(n)]
        serving = {n: store.resolve_serving_version(n) for n in names}
    except RegistryError as exc:
        raise click.ClickException(exc.message) from exc
    finally:
        store.close()
    if as_json:
        click.echo(orjson.dumps([
            {"name": mv.name, "version": mv.version, "stage": mv.stage, "aliases": list(mv.aliases),
             "serving": (s := serving[mv.name]) is not None and s.version == mv.version,
             "sha256": mv.artifact_sha256, "created_ms": mv.created_ms,
             "signature": mv.signature.to_dict()} for mv in versions
        ], option=orjson.OPT_INDENT_2).decode())
        return
    rows = [("MODEL", "VERSION", "STAGE", "ALIASES", "SERVING", "CREATED (UTC)", "SHA256")]
    for mv in versions:
        s = serving[mv.name]
        rows.append((mv.name, str(mv.version), mv.stage, ",".join(mv.aliases) or "-",
                     "*" if s is not None and s.version == mv.version else "", _when(mv.created_ms), mv.artifact_sha256[:12]))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip())


@models.command("promote")
@click.argument("name")
@click.argument("version", type=int)
@click.option("--stage", type=click.Choice(list(STAGES), case_sensitive=False), help="Move the version to this stage.")
@click.option("--alias", help="Point this alias (e.g. champion) at the version.")
@click.option("--archive-existing", is_flag=True, help="With --stage: archive the versions now in that stage.")
@registry_options
def promote(name: str, version: int, stage: str | None, alias: str | None, archive_existing: bool,
            data_dir: Path, registry_url: str | None) -> None:
    """Promote VERSION of NAME by stage or alias; running gateways follow within their poll interval."""
    if (stage is None) == (alias is None):
        raise click.UsageError("give exactly one of --stage or --alias")
    store, _ = _open(data_dir, registry_url)
    try:
        if stage is not None:
            mv = store.transition_stage(name, version, stage, archive_existing=archive_existing)
            click.echo(f"{name} version {mv.version} is now in stage {mv.stage}")
        else:
            assert alias is not None
            store.set_alias(name, alias, version)
            click.echo(f"{name}@{alias} now points at version {version}")
    except RegistryError as exc:
        raise click.ClickException(exc.message) from exc
    finally:
        store.close()


@main.group()
def routes() -> None:
    """Show and change route policies (canary weights, sticky A/B splits, shadows)."""


def _policy_json(policy: str | None, file: Path | None) -> object:
    if (policy is None) == (file is None):
        raise click.UsageError("give the policy as --json TEXT or --file PATH")
    text = policy if policy is not None else file.read_text() if file is not None else ""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise click.BadParameter(f"not valid JSON: {exc}", param_hint="'--json'/'--file'") from exc


def _actor() -> str:
    import getpass

    return f"cli:{getpass.getuser()}"


@routes.command("list")
@registry_options
def list_routes(data_dir: Path, registry_url: str | None) -> None:
    """List the stored route policies (routes without one serve their model's default version)."""
    store, _ = _open(data_dir, registry_url)
    try:
        records = store.list_routes()
    finally:
        store.close()
    for record in records:
        arms = ", ".join(f"{a['version']}:{a['weight']}" for a in record.policy["arms"])
        click.echo(f"{record.name}  model={record.model}  split={record.policy['split']}  arms=[{arms}]"
                   f"  shadows={len(record.policy.get('shadows', []))}  by={record.updated_by}")


@routes.command("get")
@click.argument("name")
@registry_options
def get_route(name: str, data_dir: Path, registry_url: str | None) -> None:
    """Print the stored policy of route NAME as JSON."""
    store, _ = _open(data_dir, registry_url)
    try:
        record = store.get_route(name)
    except RegistryError as exc:
        raise click.ClickException(exc.message) from exc
    finally:
        store.close()
    click.echo(orjson.dumps(record.policy, option=orjson.OPT_INDENT_2).decode())


@routes.command("set")
@click.argument("name")
@click.option("--json", "policy", metavar="TEXT", help="The policy as JSON text.")
@click.option("--file", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="A JSON file with the policy.")
@registry_options
def set_route(name: str, policy: str | None, file: Path | None, data_dir: Path, registry_url: str | None) -> None:
    """Store the policy of route NAME (validated against the registry, audited); gateways follow it."""
    from gateway.admin import validate_policy
    from gateway.errors import GatewayError

    spec = _policy_json(policy, file)
    store, _ = _open(data_dir, registry_url)
    try:
        checked = validate_policy(store, spec)
        store.put_route(name, checked.model, checked.to_dict(), _actor())
    except (GatewayError, RegistryError) as exc:
        raise click.ClickException(exc.message) from exc
    finally:
        store.close()
    click.echo(f"route {name} -> {checked.model}: " + ", ".join(f"{a.version} {a.weight:g}" for a in checked.arms))


@routes.command("delete")
@click.argument("name")
@registry_options
def delete_route(name: str, data_dir: Path, registry_url: str | None) -> None:
    """Delete the stored policy of route NAME (it falls back to its model's default version)."""
    store, _ = _open(data_dir, registry_url)
    try:
        store.delete_route(name, _actor())
    except RegistryError as exc:
        raise click.ClickException(exc.message) from exc
    finally:
        store.close()
    click.echo(f"route {name}: policy deleted")


@routes.command("audit")
@click.option("--route", default=None, help="Only this route's changes.")
@click.option("--limit", type=int, default=20, show_default=True)
@registry_options
def audit(route: str | None, limit: int, data_dir: Path, registry_url: str | None) -> None:
    """Show route changes, newest first: who, when, old and new policy."""
    store, _ = _open(data_dir, registry_url)
    try:
        entries = store.list_audit(route, limit)
    except RegistryError as exc:
        raise click.ClickException(exc.message) from exc
    finally:
        store.close()
    for entry in entries:
        click.echo(orjson.dumps(entry.to_dict()).decode())


# --- guarded rollouts: stored in the registry; a running gateway's driver steps them -------------


@main.group()
def rollouts() -> None:
    """Start, watch and abort guarded rollouts (the gateways drive them from the registry)."""


def _float_list(text: str) -> list[float]:
    try:
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError as exc:
        raise click.BadParameter("a comma-separated list of percentages, e.g. 10,50,100", param_hint="'--steps'") from exc


def _rollout_line(view: dict[str, Any]) -> str:
    return (f"{view['name']}  {view['state']}  step={view['phase']}  candidate v{view['candidate']['version']} "
            f"at {view['weight']}%  stable v{view['stable']['version']}")


@rollouts.command("start")
@click.argument("name")
@click.option("--model", default=None, help="The registered model the route NAME serves.")
@click.option("--candidate", default=None, help="The version to roll out: number, alias or stage.")
@click.option("--steps", default=None, help="Candidate weights in percent, e.g. 10,50,100.")
@click.option("--step-seconds", type=float, default=None, help="How long each step (and the shadow phase) lasts.")
@click.option("--min-requests", type=int, default=None, help="Candidate requests a step needs before its guards decide.")
@click.option("--max-error-rate", type=float, default=None, help="Guard: candidate error rate (default 0.01).")
@click.option("--max-p99-ratio", type=float, default=None, help="Guard: candidate p99 / stable p99 (default 1.5).")
@click.option("--max-disagreement", type=float, default=None, help="Guard: share of differing decisions (default 0.05).")
@click.option("--max-psi", type=float, default=None, help="Guard: PSI of the candidate's inputs (default 0.25).")
@click.option("--file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A JSON spec as PUT /admin/rollouts takes; flags override its fields.")
@registry_options
def start_rollout(name: str, model: str | None, candidate: str | None, steps: str | None, step_seconds: float | None,
                  min_requests: int | None, max_error_rate: float | None, max_p99_ratio: float | None,
                  max_disagreement: float | None, max_psi: float | None, file: Path | None,
                  data_dir: Path, registry_url: str | None) -> None:
    """Start a guarded rollout of route NAME (validated against the registry, audited)."""
    from gateway.errors import GatewayError
    from gateway.rollouts import RolloutConflict, prepare
    from registry.rollouts import RolloutStore

    spec: dict[str, Any] = {}
    if file is not None:
        loaded = _policy_json(None, file)
        if not isinstance(loaded, dict):
            raise click.BadParameter("the spec must be a JSON object", param_hint="'--file'")
        spec = loaded
    flags = {"model": model, "candidate": candidate, "steps": _float_list(steps) if steps is not None else None,
             "step_seconds": step_seconds, "min_requests": min_requests}
    spec.update({k: v for k, v in flags.items() if v is not None})
    guards = {"max_error_rate": max_error_rate, "max_p99_ratio": max_p99_ratio,
              "max_disagreement": max_disagreement, "max_psi": max_psi}
    if any(v is not None for v in guards.values()):
        spec["guards"] = {**spec.get("guards", {}), **{k: v for k, v in guards.items() if v is not None}}
    store, _ = _open(data_dir, registry_url)
    try:
        checked, state = prepare(store, name, spec)
        RolloutStore(store).create(name, checked.model, checked.to_dict(), state, _actor())
    except (GatewayError, RegistryError, RolloutConflict) as exc:
        raise click.ClickException(exc.message) from exc
    finally:
        store.close()
    click.echo(f"rollout {name}: v{state['candidate']} over v{state['stable']} in steps "
               f"{','.join(f'{s:g}' for s in checked.steps)} of {checked.step_seconds:g} s; a running gateway starts it")


@rollouts.command("status")
@click.argument("name", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print the full state, guards and history as JSON.")
@registry_options
def rollout_status(name: str | None, as_json: bool, data_dir: Path, registry_url: str | None) -> None:
    """Show rollout NAME (state, step, guards, history), or every rollout without NAME."""
    from gateway.rollouts import rollout_view
    from registry.rollouts import RolloutStore

    store, _ = _open(data_dir, registry_url)
    try:
        rollouts = RolloutStore(store)
        records = [rollouts.get(name)] if name is not None else rollouts.list_rollouts()
        views = [rollout_view(r, rollouts.events(r.name), rollouts.lease(r.name)) for r in records]
    except RegistryError as exc:
        raise click.ClickException(exc.message) from exc
    finally:
        store.close()
    for view in views:
        if as_json:
            click.echo(orjson.dumps(view, option=orjson.OPT_INDENT_2).decode())
            continue
        click.echo(_rollout_line(view))
        if name is None:
            continue
        if view["reason"]:
            click.echo(f"  reason: {orjson.dumps(view['reason']).decode()}")
        for guard, result in (view["guards"] or {}).items():
            click.echo(f"  {guard}: {result['status']} value={result['value']} limit={result['limit']}")
        for event in view["history"]:
            click.echo(f"  {_when(event['at_ms'])}  {event['action']}  {event.get('step', '')}  by {event['actor']}")


@rollouts.command("abort")
@click.argument("name")
@registry_options
def abort_rollout(name: str, data_dir: Path, registry_url: str | None) -> None:
    """Abort rollout NAME: its route goes back to the policy it had before (0% candidate), audited."""
    from gateway.rollouts import RolloutConflict, abort

    store, _ = _open(data_dir, registry_url)
    try:
        record = abort(store, name, _actor())
    except (RegistryError, RolloutConflict) as exc:
        raise click.ClickException(exc.message) from exc
    finally:
        store.close()
    click.echo(f"rollout {name}: {record.status}; route {name} is back on version {record.state['stable']}")


# --- online features: views, ingestion, declared features and reference profiles ------------------

NO_REDIS = (
    "--redis URL (or GATEWAY_REDIS_URL) is required: without Redis, each `gateway serve` process keeps its own "
    "in-memory online store, which this command cannot reach. Start the gateways with --redis and ingest there, "
    "or write rows to a running gateway with POST /features/push."
)


def redis_option(fn: F) -> F:
    """--redis, as `gateway serve` reads it (GATEWAY_REDIS_URL)."""
    return click.option(
        "--redis", "redis_url", envvar="GATEWAY_REDIS_URL", default=None, metavar="URL",
        help="The Redis online store the gateways read (redis://host:port/db).",
    )(fn)


def _parse_refs(text: str) -> list[str]:
    from featurestore.errors import InvalidFeatureRequest
    from featurestore.views import FeatureRef

    refs = [part.strip() for part in text.split(",") if part.strip()]
    if not refs:
        raise click.BadParameter("expected comma-separated 'view:feature' or 'request:name'", param_hint="'--features'")
    try:
        return [str(FeatureRef.parse(ref)) for ref in refs]
    except InvalidFeatureRequest as exc:
        raise click.BadParameter(exc.message, param_hint="'--features'") from exc


def _stored_views(store: Any) -> dict[str, Any]:
    """The registry's feature views, validated (a stored view that no longer validates is skipped, as
    gateways skip it)."""
    from featurestore.errors import InvalidFeatureView
    from featurestore.views import FeatureView
    from registry.serving import ServingMetadata

    views = {}
    for record in ServingMetadata(store).list_feature_views():
        try:
            views[record.name] = FeatureView.from_dict(record.name, record.spec)
        except InvalidFeatureView as exc:
            click.echo(f"warning: stored {exc.message}; ignored", err=True)
    return views


def _check_declared(signature: Any, refs: list[str], views: dict[str, Any]) -> None:
    """Raise ClickException unless the declared features fill the model's one [batch, N] input, as
    gateways will read them (same plan compiler, same dtype rules)."""
    from featurestore.errors import FeatureStoreError
    from featurestore.views import compile_read_plan
    from gateway.protocol.dtypes import numpy_dtype

    where = "--features"
    if len(signature.inputs) != 1:
        names = ", ".join(t.name for t in signature.inputs)
        raise click.ClickException(f"{where}: declared features fill one [batch, N] input; the model has "
                                   f"{len(signature.inputs)} inputs ({names})")
    spec = signature.inputs[0]
    if len(spec.shape) != 2:
        raise click.ClickException(f"{where}: declared features fill a [batch, N] input; input '{spec.name}' "
                                   f"has shape {list(spec.shape)}")
    try:
        dtype = numpy_dtype(spec.datatype)
        plan = compile_read_plan(refs, views, dtype=dtype)
        plan.check_against(spec.shape[1] if spec.shape[1] > 0 else plan.width, dtype)
    except FeatureStoreError as exc:
        raise click.ClickException(f"{where}: {exc.message}; nothing was registered") from exc
    except ValueError as exc:  # an input dtype rows cannot be assembled as (FP16, ...)
        raise click.ClickException(f"{where}: input '{spec.name}' ({spec.datatype}): {exc}; nothing was registered") from exc


def _input_columns(signature: Any) -> int:
    """The model's input columns, the inputs concatenated and each flattened past the batch dim (as
    drift watching counts them)."""
    total = 0
    for spec in signature.inputs:
        inner = spec.shape[1:]
        total += int(math.prod(inner)) if inner and all(d > 0 for d in inner) else 1
    return total


def _reference_profile(data: bytes, signature: Any, refs: list[str] | None, path: Path, bins: int,
                       outcome: str = "nothing was registered") -> dict[str, Any]:
    """The drift reference profile of a CSV sample: the declared features' columns (by "view:feature"
    or the feature's name), else every column of the CSV, which must be the model's input columns in order."""
    from gateway.reference import build_profile, pick_columns, read_reference_csv

    try:
        columns = read_reference_csv(path)
        if refs is not None:
            columns = pick_columns(columns, refs)
        elif len(columns) != _input_columns(signature):
            raise ValueError(f"it has {len(columns)} columns ({', '.join(columns)}) but the model's inputs have "
                             f"{_input_columns(signature)}; give exactly the input columns, in order")
        return build_profile(data, signature, columns, bins)
    except (ValueError, OSError, UnicodeDecodeError) as exc:
        raise click.ClickException(f"{path}: {exc}; {outcome}") from exc


def _describe_profile(profile: dict[str, Any]) -> str:
    features = [str(f.get("name", "?")) for f in profile.get("features", [])]
    outputs = [str(o.get("name", "?")) for o in profile.get("outputs", [])]
    return f"{len(features)} columns ({', '.join(features)}), outputs: {', '.join(outputs) or 'none'}"


@models.command("profile")
@click.argument("name")
@click.argument("version", type=int)
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path), metavar="FILE.csv")
@click.option("--bins", type=click.IntRange(2, 1000), default=10, show_default=True,
              help="Quantile bins per numeric column.")
@registry_options
def profile_version(name: str, version: int, file: Path, bins: int, data_dir: Path, registry_url: str | None) -> None:
    """Store the drift reference profile of VERSION of NAME, built from a CSV sample (its declared
    features' columns, else its input columns in order); running gateways watch drift against it."""
    from registry.serving import ServingMetadata

    store, artifacts = _open(data_dir, registry_url)
    try:
        mv = store.get_model_version(name, version)
        meta = ServingMetadata(store)
        refs = meta.get_model_features(name, version)
        profile = _reference_profile(artifacts.read_bytes(mv.artifact_sha256), mv.signature,
                                     list(refs) if refs is not None else None, file, bins, "nothing was stored")
        meta.put_reference_profile(name, version, profile)
    except RegistryError as exc:
        raise click.ClickException(exc.message) from exc
    finally:
        store.close()
    click.echo(f"{name} version {version}: reference profile stored, {_describe_profile(profile)}")


@main.group()
def features() -> None:
    """Feature views (shared through the registry) and their rows in the Redis online store."""


def _load_views_file(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """(name, spec) per view of a YAML or JSON list of {"name", "entity", "ttl_seconds", "features"}.
    JSON needs nothing; YAML needs pyyaml (JSON is tried first)."""
    raw = path.read_bytes()
    try:
        document: object = orjson.loads(raw)
    except orjson.JSONDecodeError as json_error:
        if path.suffix.lower() == ".json":
            raise click.ClickException(f"{path}: not valid JSON: {json_error}") from json_error
        try:
            import yaml
        except ImportError:
            raise click.ClickException(
                f"{path} is not JSON, and reading YAML needs pyyaml (pip install pyyaml)") from None
        try:
            document = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise click.ClickException(f"{path}: not valid YAML: {exc}") from exc
    if isinstance(document, dict) and "views" in document:
        document = document["views"]
    if not isinstance(document, list) or not document:
        raise click.ClickException(f"{path}: expected a non-empty list of feature views "
                                   '({"name": ..., "entity": ..., "ttl_seconds": ..., "features": [...]})')
    views: list[tuple[str, dict[str, Any]]] = []
    for i, item in enumerate(document):
        if not isinstance(item, dict):
            raise click.ClickException(f"{path}: views[{i}]: expected an object, got {item!r}")
        spec = dict(item)
        name = spec.pop("name", None)
        if not isinstance(name, str) or not name:
            raise click.ClickException(f"{path}: views[{i}].name: required (the feature view's name)")
        if any(name == seen for seen, _ in views):
            raise click.ClickException(f"{path}: views[{i}].name: '{name}' appears twice")
        views.append((name, spec))
    return views


def _broken_declarations(store: Any, views: dict[str, Any]) -> list[str]:
    """Versions whose declared features no longer compile against `views` (gateways would keep their
    previous route table), as readable lines."""
    from featurestore.errors import FeatureStoreError
    from featurestore.views import compile_read_plan
    from gateway.protocol.dtypes import numpy_dtype
    from registry.serving import ServingMetadata

    meta = ServingMetadata(store)
    broken = []
    for model in store.list_registered_models():
        for mv in store.list_model_versions(model.name):
            refs = meta.get_model_features(mv.name, mv.version)
            if refs is None or len(mv.signature.inputs) != 1:
                continue
            try:
                compile_read_plan(list(refs), views, dtype=numpy_dtype(mv.signature.inputs[0].datatype))
            except (FeatureStoreError, ValueError) as exc:
                broken.append(f"{mv.name} v{mv.version}: {exc}")
    return broken


def _ttl_text(seconds: int) -> str:
    if seconds == 0:
        return "none"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


@features.command("apply")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@registry_options
def apply_views(file: Path, data_dir: Path, registry_url: str | None) -> None:
    """Create or replace the feature views in FILE (YAML or JSON: a list of {"name", "entity",
    "ttl_seconds", "features": [{"name", "dtype", "default"}]}). Every view is validated before any is
    stored; unchanged views are left alone. Running gateways follow within their poll interval."""
    from featurestore.errors import InvalidFeatureView
    from featurestore.views import FeatureView
    from registry.serving import ServingMetadata

    parsed = []
    for name, spec in _load_views_file(file):
        try:
            parsed.append(FeatureView.from_dict(name, spec))
        except InvalidFeatureView as exc:
            raise click.ClickException(f"{file}: {exc.message}; no view was stored") from exc
    store, _ = _open(data_dir, registry_url)
    try:
        meta = ServingMetadata(store)
        stored = {record.name: record.spec for record in meta.list_feature_views()}
        actor = _actor()
        for view in parsed:
            spec = view.to_dict()
            outcome = "unchanged" if stored.get(view.name) == spec else "updated" if view.name in stored else "created"
            if outcome != "unchanged":
                meta.put_feature_view(view.name, spec, actor)
            click.echo(f"feature view {view.name}: {outcome} (entity {view.entity}, {len(view.features)} features, "
                       f"ttl {_ttl_text(view.ttl_seconds)})")
        for line in _broken_declarations(store, _stored_views(store)):
            click.echo(f"warning: {line}; gateways keep serving its previous route table", err=True)
    except RegistryError as exc:
        raise click.ClickException(exc.message) from exc
    finally:
        store.close()


@features.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@registry_options
def list_views(as_json: bool, data_dir: Path, registry_url: str | None) -> None:
    """List the registered feature views: entity key, TTL, features (name:dtype=default)."""
    from registry.serving import ServingMetadata

    store, _ = _open(data_dir, registry_url)
    try:
        records = ServingMetadata(store).list_feature_views()
    except RegistryError as exc:
        raise click.ClickException(exc.message) from exc
    finally:
        store.close()
    if as_json:
        click.echo(orjson.dumps([r.to_dict() for r in records], option=orjson.OPT_INDENT_2).decode())
        return
    rows = [("VIEW", "ENTITY", "TTL", "UPDATED (UTC)", "BY", "FEATURES")]
    for r in records:
        feats = ", ".join(f"{f['name']}:{f['dtype']}={f.get('default')}" for f in r.spec.get("features", []))
        rows.append((r.name, str(r.spec.get("entity")), _ttl_text(int(r.spec.get("ttl_seconds", 0))),
                     _when(r.updated_ms), r.updated_by, feats))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


@features.command("ingest")
@click.argument("view_name", metavar="VIEW")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--batch-size", type=click.IntRange(min=1), default=1000, show_default=True,
              help="Rows per pipelined write (one round trip each).")
@click.option("--timestamp-column", default=None, metavar="COLUMN",
              help="The column holding each row's event time (default: 'event_timestamp' if present, else now).")
@click.option("--format", "file_format", type=click.Choice(["csv", "parquet"]), default=None,
              help="The file's format (default: by extension; Parquet needs pyarrow).")
@redis_option
@registry_options
def ingest(view_name: str, file: Path, batch_size: int, timestamp_column: str | None, file_format: str | None,
           redis_url: str | None, data_dir: Path, registry_url: str | None) -> None:
    """Write the rows of FILE (CSV with a header, or Parquet) into feature view VIEW in Redis.

    Columns: the view's entity key and every feature (others are ignored); an empty cell is null.
    Each row replaces the entity's row, so a re-run leaves the same values."""
    import asyncio

    if redis_url is None:
        raise click.UsageError(NO_REDIS)
    _config(data_dir=data_dir, registry_url=registry_url, redis_url=redis_url)  # names '--redis' when invalid
    store, _ = _open(data_dir, registry_url)
    try:
        views = _stored_views(store)
    except RegistryError as exc:
        raise click.ClickException(exc.message) from exc
    finally:
        store.close()
    view = views.get(view_name)
    if view is None:
        known = ", ".join(sorted(views)) or "none; create one with `gateway features apply`"
        raise click.ClickException(f"no feature view named '{view_name}' (registered: {known})")
    asyncio.run(_ingest(view, file, redis_url, batch_size, timestamp_column, file_format))


async def _ingest(view: Any, file: Path, redis_url: str, batch_size: int, timestamp_column: str | None,
                  file_format: str | None) -> None:
    from featurestore.errors import FeatureStoreError, IngestError
    from featurestore.ingest import ingest_file
    from featurestore.online import StoreOptions, open_online_store

    online = open_online_store(redis_url, StoreOptions(write_timeout_s=30.0))
    written = 0
    try:
        await online.ping()
        with click.progressbar(length=0, label=f"ingesting {file.name} into {view.name}", file=sys.stderr,
                               show_pos=True, show_percent=True) as bar:

            def progress(rows: int, total: int | None) -> None:
                nonlocal written
                if total is not None and bar.length != max(total, rows):
                    bar.length = max(total, rows)
                bar.update(rows - written)
                written = rows

            report = await ingest_file(
                online, view, file, now_ms=time.time_ns() // 1_000_000, batch_size=batch_size,
                timestamp_column=timestamp_column, progress=progress,
                file_format="parquet" if file_format == "parquet" else "csv" if file_format == "csv" else None,
            )
    except IngestError as exc:
        done = f"; the {written:,} rows before it were written (re-runs are idempotent)" if written else ""
        raise click.ClickException(f"{exc.message}{done}") from exc
    except FeatureStoreError as exc:
        done = f" ({written:,} rows were written before it; re-runs are idempotent)" if written else ""
        raise click.ClickException(f"{exc.message}{done}") from exc
    finally:
        await online.close()
    click.echo(f"ingested {report.rows:,} rows into {view.name} in {report.batches:,} batches: "
               f"{report.seconds:.2f} s, {report.rows_per_second:,.0f} rows/s")


# --- access tokens ---------------------------------------------------------------------------------


@main.group()
def tokens() -> None:
    """Create, list and revoke API tokens (stored hashed in the registry; gateways follow within a poll)."""


@tokens.command("create")
@click.argument("name")
@click.option("--role", type=click.Choice(ROLES), required=True,
              help="reader: reads and inference; deployer: also routes, rollouts, promotions; admin: every write.")
@registry_options
def create_token(name: str, role: str, data_dir: Path, registry_url: str | None) -> None:
    """Create token NAME and print it once: only its sha256 is stored, so it cannot be shown again."""
    from registry.tokens import TokenStore

    store, _ = _open(data_dir, registry_url)
    try:
        record, token = TokenStore(store).create(name, role, _actor())
    except RegistryError as exc:
        raise click.ClickException(exc.message) from exc
    finally:
        store.close()
    click.echo(f"created token {record.name} (role {record.role}); store it now, it is not shown again:", err=True)
    click.echo(token)


@tokens.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per token.")
@registry_options
def list_tokens(as_json: bool, data_dir: Path, registry_url: str | None) -> None:
    """List tokens by name: role, when and by whom created, whether revoked (never the tokens)."""
    from registry.tokens import TokenStore

    store, _ = _open(data_dir, registry_url)
    try:
        records = TokenStore(store).list_tokens()
    finally:
        store.close()
    for record in records:
        if as_json:
            click.echo(orjson.dumps(record.to_dict()).decode())
            continue
        state = f"revoked {_when(record.revoked_ms)}" if record.revoked_ms is not None else "active"
        click.echo(f"{record.name}  role={record.role}  created={_when(record.created_ms)} by {record.created_by}  {state}")


@tokens.command("revoke")
@click.argument("name")
@registry_options
def revoke_token(name: str, data_dir: Path, registry_url: str | None) -> None:
    """Revoke token NAME; every gateway refuses it after its next registry poll."""
    from registry.tokens import TokenStore

    store, _ = _open(data_dir, registry_url)
    try:
        TokenStore(store).revoke(name, _actor())
    except RegistryError as exc:
        raise click.ClickException(exc.message) from exc
    finally:
        store.close()
    click.echo(f"token {name}: revoked")


@tokens.command("audit")
@click.option("--limit", type=int, default=20, show_default=True)
@registry_options
def token_audit(limit: int, data_dir: Path, registry_url: str | None) -> None:
    """Show token creates and revokes, newest first: which token, role, who, when."""
    from registry.tokens import TokenStore

    store, _ = _open(data_dir, registry_url)
    try:
        entries = TokenStore(store).audit(limit)
    except RegistryError as exc:
        raise click.ClickException(exc.message) from exc
    finally:
        store.close()
    for entry in entries:
        click.echo(orjson.dumps(entry.to_dict()).decode())
