"""The `gateway` command: serve, and manage the registry the running gateway follows.

Flags map 1:1 onto Config fields; every flag also reads GATEWAY_<FLAG> (click's auto_envvar_prefix),
and --data-dir / --registry read GATEWAY_DATA_DIR / GATEWAY_REGISTRY_URL on every subcommand.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import click
import orjson

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
@click.option("--request-timeout", "request_timeout_s", type=float, default=DEFAULTS.request_timeout_s,
              show_default=True, help="Per-request deadline in seconds (504 past it); v2 'timeout' (µs) may shorten it.")
@click.option("--max-queue-rows", type=int, default=DEFAULTS.max_queue_rows, show_default=True,
              help="Rows waiting per model beyond which requests get 503 with Retry-After.")
@click.option("--max-body-bytes", type=int, default=DEFAULTS.max_body_bytes, show_default=True,
              help="Larger request bodies get 413.")
@click.option("--poll-interval", "poll_interval_s", type=float, default=DEFAULTS.poll_interval_s, show_default=True,
              help="Seconds between checks of the registry for promotions and new versions.")
@click.option("--graceful-timeout", "graceful_timeout_s", type=float, default=DEFAULTS.graceful_timeout_s,
              show_default=True, help="Seconds to finish in-flight requests after SIGTERM.")
@click.option("--log-level", type=click.Choice(["critical", "error", "warning", "info", "debug"]),
              default=DEFAULTS.log_level, show_default=True)
@click.option("--redis", "redis_url", envvar="GATEWAY_REDIS_URL", default=None, metavar="URL",
              help="Redis for online features and shared drift windows (default: in-memory, per process).")
@click.option("--feature-timeout-ms", type=float, default=DEFAULTS.feature_timeout_ms, show_default=True,
              help="Budget of one online-feature read; past it the route's policy answers 503 or serves defaults.")
@click.option("--drift-window-requests", type=int, default=DEFAULTS.drift_window_requests, show_default=True,
              help="Rows per drift window when a route's policy sets none.")
@click.option("--drift-flush-interval", "drift_flush_interval_s", type=float,
              default=DEFAULTS.drift_flush_interval_s, show_default=True,
              help="Seconds between drift count flushes (binning and merging off the request path).")
@click.option("--admin-token", default=None, metavar="TOKEN",
              help="Bearer token for /admin (required when --host is not a loopback address).")
@click.option("--shadow-queue-size", type=int, default=DEFAULTS.shadow_queue_size, show_default=True,
              help="Shadow copies waiting beyond this are dropped and counted.")
@click.option("--shadow-workers", type=int, default=DEFAULTS.shadow_workers, show_default=True,
              help="Concurrent shadow copies in flight.")
@click.option("--shadow-timeout", "shadow_timeout_s", type=float, default=DEFAULTS.shadow_timeout_s,
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
              help="Bearer token required for writes (required when --host is not a loopback address).")
@registry_options
def registry_serve(host: str, port: int, admin_token: str | None, data_dir: Path, registry_url: str | None) -> None:
    """Serve /api/2.0/mlflow and /api/2.0/mlflow-artifacts (mlflow.set_tracking_uri("http://HOST:PORT"))."""
    import uvicorn

    from gateway.admin import WriteGuard
    from registry.api import create_registry_app

    config = _config(data_dir=data_dir, registry_url=registry_url, host=host, port=port, admin_token=admin_token)
    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = WriteGuard(create_registry_app(config.database_url, config.artifacts_dir), config.admin_token)
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
@registry_options
def register(name: str, file: Path, description: str, source: str | None, run_id: str | None,
             tags: tuple[str, ...], data_dir: Path, registry_url: str | None) -> None:
    """Register FILE (an ONNX model) as the next version of model NAME."""
    from registry.registration import register_model_file

    parsed: dict[str, str] = {}
    for tag in tags:
        key, sep, value = tag.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{tag!r} is not KEY=VALUE", param_hint="'--tag'")
        parsed[key] = value
    store, artifacts = _open(data_dir, registry_url)
    try:
        mv = register_model_file(store, artifacts, name, file.read_bytes(), source=source, run_id=run_id,
                                 description=description, tags=parsed)
    except RegistryError as exc:
        raise click.ClickException(exc.message) from exc
    finally:
        store.close()
    inputs = ", ".join(f"{t.name} {t.datatype}{list(t.shape)}" for t in mv.signature.inputs)
    click.echo(f"registered {mv.name} version {mv.version} (sha256 {mv.artifact_sha256[:12]}, inputs: {inputs})")


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
