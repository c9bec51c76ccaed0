"""Static checks of deploy/grafana/: every metric the dashboard and the alert rules query is one the gateway exports."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from monitoring.collectors import DriftCollector, DriftRegistry
from monitoring.metrics import GatewayMetrics

GRAFANA = Path(__file__).resolve().parents[2] / "deploy" / "grafana"
DASHBOARD = GRAFANA / "gateway-dashboard.json"
ALERTS = GRAFANA / "alerts.yaml"
METRIC_NAME = re.compile(r"\bgateway_[a-z0-9_]+\b")
SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created"), "gauge": ("",)}


def exported_samples() -> set[str]:
    """Every sample name /metrics can carry: GatewayMetrics' families and the drift collector's."""
    registry = CollectorRegistry()
    GatewayMetrics(registry)
    families = [*registry.collect(), *DriftCollector(DriftRegistry()).describe()]
    return {family.name + suffix for family in families for suffix in SUFFIXES[family.type]}


def dashboard_exprs() -> Iterator[str]:
    def walk(node: Any) -> Iterator[str]:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("expr", "definition") and isinstance(value, str):
                    yield value
                else:
                    yield from walk(value)
        elif isinstance(node, list):
            for item in node:
                yield from walk(item)

    yield from walk(json.loads(DASHBOARD.read_text()))


def alert_rules() -> list[dict[str, Any]]:
    rule = yaml.safe_load(ALERTS.read_text())
    return [r for group in rule["spec"]["groups"] for r in group["rules"]]


class TestDashboard:
    def test_every_queried_metric_is_exported(self) -> None:
        """Each gateway_* name in a panel or variable query is a sample name the gateway exports."""
        exported = exported_samples()
        used = {name for expr in dashboard_exprs() for name in METRIC_NAME.findall(expr)}
        assert used, "the dashboard queries no gateway_* metric"
        assert used <= exported, f"not exported: {sorted(used - exported)}"

    @pytest.mark.parametrize("metric", [
        "gateway_requests_total", "gateway_request_duration_seconds_bucket", "gateway_batch_size_rows_count",
        "gateway_shadow_decision_agreement_ratio_sum", "gateway_drift_psi", "gateway_drift_status",
        "gateway_inflight_requests", "gateway_registry_last_sync_timestamp_seconds",
        "gateway_registry_changes_applied_total",
        "gateway_rollout_candidate_weight", "gateway_rollout_state", "gateway_rollout_guard_value",
        "gateway_rollout_steps_total",
    ])
    def test_covers(self, metric: str) -> None:
        """The dashboard shows the traffic split, latency percentiles, batch size, shadow agreement, PSI,
        in-flight requests, the registry sync lag, and each rollout's weight, state, guard figures and
        check results."""
        assert any(metric in expr for expr in dashboard_exprs())

    def test_panel_ids_are_unique(self) -> None:
        """Grafana needs distinct panel ids."""
        ids = [p["id"] for p in json.loads(DASHBOARD.read_text())["panels"]]
        assert len(ids) == len(set(ids))

    def test_panels_tile_the_grid(self) -> None:
        """Every panel lies inside Grafana's 24 columns and no two overlap (the render lays them out alike)."""
        cells: dict[tuple[int, int], str] = {}
        for panel in json.loads(DASHBOARD.read_text())["panels"]:
            g = panel["gridPos"]
            assert g["x"] >= 0 and g["w"] > 0 and g["x"] + g["w"] <= 24, panel["title"]
            for x in range(g["x"], g["x"] + g["w"]):
                for y in range(g["y"], g["y"] + g["h"]):
                    assert (x, y) not in cells, f"{panel['title']!r} overlaps {cells[(x, y)]!r}"
                    cells[(x, y)] = panel["title"]


class TestAlerts:
    def test_every_queried_metric_is_exported(self) -> None:
        """Each gateway_* name in an alert expression is a sample name the gateway exports."""
        exported = exported_samples()
        used = {name for rule in alert_rules() for name in METRIC_NAME.findall(rule["expr"])}
        assert used <= exported, f"not exported: {sorted(used - exported)}"

    @pytest.mark.parametrize("metric", [
        "gateway_drift_status", "gateway_requests_total", "gateway_queue_rejections_total", "gateway_model_loads_total",
        "gateway_registry_last_sync_timestamp_seconds",
    ])
    def test_covers(self, metric: str) -> None:
        """There are rules for drift, error ratio, queue rejections, model load failures and sync lag."""
        assert any(metric in rule["expr"] for rule in alert_rules())

    def test_rules_are_named_and_summarised(self) -> None:
        """Every rule has an alert name, a severity and a summary."""
        for rule in alert_rules():
            assert rule["alert"] and rule["labels"]["severity"] and rule["annotations"]["summary"]
