"""The gateway's configuration (pure): one frozen dataclass, validated once; errors name the flag."""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

LogLevel = Literal["critical", "error", "warning", "info", "debug"]
CONFIG_ENV = "GATEWAY_CONFIG_JSON"  # how `serve --workers N` hands the config to each worker process


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach; the admin API may go without a token there."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name other than localhost may resolve anywhere
        return False


class ConfigError(ValueError):
    """An invalid value or combination; `flag` names the command-line flag to fix."""

    def __init__(self, flag: str, reason: str) -> None:
        super().__init__(f"Invalid value for '{flag}': {reason}")
        self.flag = flag


@dataclass(frozen=True, slots=True)
class Config:
    """Everything `gateway serve` can be told; each field is one flag (--data-dir for data_dir, ...)."""

    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    data_dir: Path = Path(".gateway")
    registry_url: str | None = None  # None: SQLite under data_dir
    # The registry service (`gateway registry serve`) base URL: model files missing from this replica's
    # artifact store are fetched from it by sha256. None: every file must already be in the local store.
    artifact_source: str | None = None
    artifact_max_bytes: int = 2 * 1024**3  # a larger download is refused (ONNX protobufs stop at 2 GiB)
    artifact_timeout_s: float = 300.0  # one whole download; past it the fetch fails and is retried later
    demo: bool = False
    intra_op_threads: int = 1  # onnxruntime threads per session.run
    inference_threads: int = 1  # executor threads for models too slow to run on the event loop
    inline_threshold_us: float = 300.0  # models whose warm-up run is faster than this run on the loop
    max_batch_size: int = 64  # rows stacked into one session.run
    max_batch_delay_ms: float = 0.0  # 0: an idle model runs at once; > 0: it waits this long to fill a batch
    request_timeout_s: float = 30.0  # per-request deadline; a v2 request's `timeout` parameter (µs) may shorten it
    max_queue_rows: int = 4096  # rows waiting per model beyond which requests get 503 + Retry-After
    max_in_flight: int = 1024  # inference requests in flight per process beyond which 503 + Retry-After; 0: no bound
    max_body_bytes: int = 8 * 1024 * 1024
    poll_interval_s: float = 0.5  # how often followers check the registry for changes
    graceful_timeout_s: float = 30.0
    log_level: LogLevel = "info"
    redis_url: str | None = None  # online features and shared drift counts; None: in-memory, per process
    feature_timeout_ms: float = 50.0  # one online-store read; past it the route's policy decides (503 or defaults)
    drift_window_requests: int = 1000  # the default drift window when a route's policy sets none
    drift_flush_interval_s: float = 0.25  # how often queued drift rows are binned and merged
    admin_token: str | None = None  # the bootstrap admin credential; required on a non-loopback address
    require_api_key: bool = False  # inference, metadata and reads need a bearer token of any role
    max_artifact_bytes: int = 1024**3  # larger MLflow artifact uploads get 413 and leave nothing behind
    shadow_queue_size: int = 1024  # shadow copies waiting beyond this are dropped (and counted)
    shadow_workers: int = 2
    shadow_timeout_s: float = 5.0

    def __post_init__(self) -> None:
        checks: list[tuple[str, bool, str]] = [
            ("--port", 0 <= self.port <= 65535, "must be between 0 and 65535"),
            ("--workers", self.workers >= 1, "must be at least 1"),
            ("--intra-op-threads", self.intra_op_threads >= 0, "must be >= 0 (0: onnxruntime decides)"),
            ("--inference-threads", self.inference_threads >= 1, "must be at least 1"),
            ("--inline-threshold-us", self.inline_threshold_us >= 0, "must be >= 0"),
            ("--max-batch-size", self.max_batch_size >= 1, "must be at least 1"),
            ("--max-batch-delay-ms", 0 <= self.max_batch_delay_ms <= 1000, "must be between 0 and 1000"),
            ("--request-timeout", 0 < self.request_timeout_s <= 3600, "must be between 0 and 3600 seconds"),
            ("--max-queue-rows", self.max_queue_rows >= 1, "must be at least 1"),
            ("--max-in-flight", self.max_in_flight >= 0, "must be >= 0 (0: no bound)"),
            ("--max-body-bytes", self.max_body_bytes >= 1024, "must be at least 1024"),
            ("--poll-interval", 0.01 <= self.poll_interval_s <= 3600, "must be between 0.01 and 3600 seconds"),
            ("--graceful-timeout", self.graceful_timeout_s >= 0, "must be >= 0"),
            ("--artifact-max-bytes", self.artifact_max_bytes >= 1, "must be at least 1"),
            ("--artifact-timeout", 0 < self.artifact_timeout_s <= 86_400, "must be between 0 and 86400 seconds"),
            ("--feature-timeout-ms", 0 < self.feature_timeout_ms <= 60_000, "must be between 0 and 60000"),
            ("--drift-window-requests", self.drift_window_requests >= 1, "must be at least 1"),
            ("--drift-flush-interval", 0.01 <= self.drift_flush_interval_s <= 60, "must be between 0.01 and 60 seconds"),
            ("--shadow-queue-size", self.shadow_queue_size >= 1, "must be at least 1"),
            ("--shadow-workers", self.shadow_workers >= 1, "must be at least 1"),
            ("--shadow-timeout", self.shadow_timeout_s > 0, "must be > 0"),
            ("--max-artifact-bytes", self.max_artifact_bytes >= 1, "must be at least 1"),
            ("--admin-token", self.admin_token is None or len(self.admin_token) >= 16,
             "must be at least 16 characters"),
        ]
        for flag, ok, reason in checks:
            if not ok:
                raise ConfigError(flag, reason)
        if self.admin_token is None and not is_loopback(self.host):
            raise ConfigError(
                "--admin-token",
                f"required when binding to {self.host!r}, which is not a loopback address (set GATEWAY_ADMIN_TOKEN)",
            )
        if self.redis_url is not None and not self.redis_url.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigError("--redis", f"{self.redis_url!r} is not a Redis URL (redis://host:port/db)")
        if self.registry_url is not None and "://" not in self.registry_url:
            raise ConfigError("--registry", f"{self.registry_url!r} is not a database URL (sqlite:///path or postgresql://...)")
        if self.artifact_source is not None and not self.artifact_source.startswith(("http://", "https://")):
            raise ConfigError(
                "--artifact-source", f"{self.artifact_source!r} is not an http(s) URL of the registry service"
            )

    @property
    def access_control(self) -> bool:
        """Whether requests are checked against the role table (gateway/authz.py) at all."""
        return self.admin_token is not None or self.require_api_key

    @property
    def database_url(self) -> str:
        """The registry database: the given URL, else SQLite in the data directory."""
        return self.registry_url or f"sqlite:///{self.data_dir.resolve() / 'registry.db'}"

    @property
    def artifacts_dir(self) -> Path:
        return self.data_dir.resolve() / "artifacts"

    def __repr__(self) -> str:  # never print the admin token
        def shown(name: str) -> str:
            value = getattr(self, name)
            return "'***'" if name == "admin_token" and value else repr(value)

        return "Config(" + ", ".join(f"{f.name}={shown(f.name)}" for f in dataclasses.fields(self)) + ")"

    def to_json(self) -> str:
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        values["data_dir"] = str(self.data_dir)
        return json.dumps(values)

    @classmethod
    def from_json(cls, text: str) -> Config:
        values: dict[str, Any] = json.loads(text)
        values["data_dir"] = Path(values["data_dir"])
        return cls(**values)

    @classmethod
    def from_env(cls) -> Config:
        """The config a `serve --workers N` parent left in GATEWAY_CONFIG_JSON, else the defaults."""
        text = os.environ.get(CONFIG_ENV)
        return cls.from_json(text) if text else cls()
