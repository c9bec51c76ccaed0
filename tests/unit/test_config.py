"""Config validation: bad values are refused with the flag's name; defaults are embedded."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import Config, ConfigError


class TestConfig:
    def test_defaults_are_embedded(self) -> None:
        """With nothing set, the registry is SQLite under ./.gateway and the bind is loopback."""
        config = Config()
        assert config.host == "127.0.0.1" and config.port == 8000
        assert config.database_url.startswith("sqlite:///") and config.database_url.endswith(".gateway/registry.db")
        assert config.artifacts_dir == Path(".gateway").resolve() / "artifacts"

    @pytest.mark.parametrize(
        ("field", "value", "flag"),
        [
            ("port", 70000, "--port"),
            ("workers", 0, "--workers"),
            ("max_batch_size", 0, "--max-batch-size"),
            ("max_body_bytes", 10, "--max-body-bytes"),
            ("poll_interval_s", 0, "--poll-interval"),
            ("registry_url", "just-a-path", "--registry"),
            ("artifact_source", "gateway-registry:5000", "--artifact-source"),
            ("artifact_max_bytes", 0, "--artifact-max-bytes"),
            ("artifact_timeout_s", 0, "--artifact-timeout"),
        ],
    )
    def test_invalid_values_name_the_flag(self, field: str, value: object, flag: str) -> None:
        """Each invalid value raises ConfigError whose message names the flag to fix."""
        with pytest.raises(ConfigError) as info:
            Config(**{field: value})  # type: ignore[arg-type]
        assert info.value.flag == flag
        assert f"'{flag}'" in str(info.value)

    def test_json_round_trip(self) -> None:
        """The config survives the JSON hand-off to worker processes unchanged."""
        config = Config(port=9001, data_dir=Path("/tmp/x"), registry_url="postgresql://u@h/db", max_batch_delay_ms=2.0)
        assert Config.from_json(config.to_json()) == config
