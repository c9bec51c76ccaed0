"""Rollout specs and phase policies (pure): validation names the field; every phase's policy is one
the route parser accepts, and keeps the original policy's other settings."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.guards import Limits
from gateway.rollout_plan import RolloutSpec, SpecError, promoted_policy, shadow_policy, step_policy
from gateway.routing import RoutePolicy

SPEC: dict[str, Any] = {
    "model": "churn", "candidate": "challenger", "steps": [10, 50, 100], "step_seconds": 300, "min_requests": 500,
    "guards": {"max_error_rate": 0.01, "max_p99_ratio": 1.5, "max_disagreement": 0.05, "max_psi": 0.25},
}


class TestSpec:
    def test_the_issue_example_parses_and_round_trips(self) -> None:
        """The example of issue #10 parses, and parse(to_dict()) is the same spec."""
        spec = RolloutSpec.parse(SPEC)
        assert spec.steps == (10, 50, 100)
        assert spec.limits == Limits(0.01, 1.5, 0.05, 0.25, 500)
        assert RolloutSpec.parse(spec.to_dict()) == spec

    def test_defaults_and_null_guards(self) -> None:
        """Omitted guards take their defaults; null turns one off; a version number is a reference."""
        spec = RolloutSpec.parse({"model": "m", "candidate": 3, "steps": [100], "guards": {"max_psi": None}})
        assert spec.candidate == "3"
        assert spec.step_seconds == 300
        assert spec.limits == Limits(max_psi=None)

    @pytest.mark.parametrize(("change", "field"), [
        ({"model": ""}, "model"),
        ({"candidate": None}, "candidate"),
        ({"steps": []}, "steps"),
        ({"steps": [10, 10]}, "steps[1]"),
        ({"steps": [0]}, "steps[0]"),
        ({"steps": [50, 101]}, "steps[1]"),
        ({"step_seconds": 0}, "step_seconds"),
        ({"step_seconds": "5"}, "step_seconds"),
        ({"min_requests": -1}, "min_requests"),
        ({"min_requests": 1.5}, "min_requests"),
        ({"guards": {"max_error_rate": 2}}, "guards.max_error_rate"),
        ({"guards": {"max_p99_ratio": 0}}, "guards.max_p99_ratio"),
        ({"guards": {"max_psi": -0.1}}, "guards.max_psi"),
        ({"guards": {"max_latency": 1}}, "guards"),
        ({"guards": []}, "guards"),
        ({"mirror_sample": 1.5}, "mirror_sample"),
        ({"colour": "blue"}, "rollout"),
    ])
    def test_invalid_fields_are_named(self, change: dict[str, Any], field: str) -> None:
        """Each invalid field is refused with a message that starts with its name."""
        with pytest.raises(SpecError) as caught:
            RolloutSpec.parse({**SPEC, **change})
        assert str(caught.value).startswith(field + ":")


ORIGINAL = {"model": "churn", "arms": [{"version": "champion", "weight": 1}], "split": "sticky", "sticky_key": "user",
            "shadows": [{"url": "http://127.0.0.1:9/v2/models/x/infer", "sample": 0.1}], "drift": {"window_requests": 50}}


class TestPolicies:
    @pytest.mark.parametrize("original", [None, ORIGINAL])
    def test_every_phase_parses_as_a_route_policy(self, original: dict[str, Any] | None) -> None:
        """Shadow, each step and the promoted policy are valid policies; the stable arm is "champion"."""
        kept = list(original["shadows"]) if original else []
        shadow = RoutePolicy.parse(shadow_policy("churn", original, kept, candidate=2, sample=1.0))
        assert [(a.version, a.weight) for a in shadow.arms] == [("champion", 100)]
        assert shadow.shadows[-1].version == "2"
        for weight in (10, 50, 100):
            step = RoutePolicy.parse(step_policy("churn", original, kept, stable=1, candidate=2, weight=weight, sample=1))
            assert [(a.version, a.weight) for a in step.arms] == [("champion", 100 - weight), ("2", weight)]
            assert step.shadows[-1].version == "1"
        promoted = promoted_policy(original, kept)
        if original is None:
            assert promoted is None
        else:
            parsed = RoutePolicy.parse(promoted)
            assert [a.version for a in parsed.arms] == ["champion"]

    def test_the_original_settings_are_kept(self) -> None:
        """Split, sticky key, drift window and unrelated shadows carry through every phase."""
        step = step_policy("churn", ORIGINAL, ORIGINAL["shadows"], stable=1, candidate=2, weight=10, sample=0.5)
        assert (step["split"], step["sticky_key"], step["drift"]) == ("sticky", "user", {"window_requests": 50})
        assert step["shadows"][0] == ORIGINAL["shadows"][0]
