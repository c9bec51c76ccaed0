"""The MLflow wire format (registry/wire.py): reading request messages and the response shapes the client needs."""

from __future__ import annotations

import math

import pytest

from registry import wire
from registry.entities import Experiment, Metric, ModelVersion, Page, Run, RunInfo, Signature
from registry.errors import InvalidParameterValue
from registry.wire import Message

EMPTY_SIG = Signature(inputs=(), outputs=())


class TestMessage:
    def test_query_string_values(self) -> None:
        """GET messages: int64 arrive as decimal strings, repeated keys repeat, the last scalar wins."""
        msg = Message.from_query([("max_results", "10000"), ("order_by", "a"), ("order_by", "b DESC"), ("name", "x")])
        assert msg.int64("max_results") == 10000
        assert msg.texts("order_by") == ["a", "b DESC"]
        assert msg.text("name") == "x" and msg.text("absent") == ""

    def test_json_values(self) -> None:
        """JSON messages: int64 as numbers or strings, booleans, nested messages and key/value pairs."""
        msg = Message({"step": 5, "timestamp": "17", "archive": True, "tags": [{"key": "k", "value": "v"}]})
        assert (msg.int64("step"), msg.int64("timestamp"), msg.boolean("archive")) == (5, 17, True)
        assert msg.pairs("tags") == [("k", "v")]

    def test_run_id_falls_back_to_run_uuid(self) -> None:
        """run_id is read from run_id, else from the deprecated run_uuid; neither is an error."""
        assert Message({"run_uuid": "abc"}).run_id() == "abc"
        assert Message({"run_id": "x", "run_uuid": "y"}).run_id() == "x"
        with pytest.raises(InvalidParameterValue, match="Missing value for required parameter 'run_uuid'"):
            Message({}).run_id()

    @pytest.mark.parametrize(
        ("fields", "call"),
        [
            ({"n": "abc"}, lambda m: m.int64("n")),
            ({"n": True}, lambda m: m.int64("n")),
            ({"n": 2**63}, lambda m: m.int64("n")),
            ({"n": 1.5}, lambda m: m.int64("n")),
            ({"b": "yes"}, lambda m: m.boolean("b")),
            ({"s": {"a": 1}}, lambda m: m.text("s")),
            ({"l": "x"}, lambda m: m.messages("l")),
            ({"l": [1, 2]}, lambda m: m.texts("l")),
            ({"version": "one"}, lambda m: m.version()),
            ({"version": "-1"}, lambda m: m.version()),
            ({}, lambda m: m.text("name", required=True)),
        ],
    )
    def test_type_errors_name_the_field(self, fields: dict[str, object], call: object) -> None:
        """A value of the wrong type raises InvalidParameterValue naming the field."""
        with pytest.raises(InvalidParameterValue) as info:
            call(Message(fields))  # type: ignore[operator]
        assert any(name in info.value.message for name in fields) or "required" in info.value.message


class TestMetricValues:
    @pytest.mark.parametrize(
        ("value", "expected"), [(0.5, 0.5), (3, 3.0), ("NaN", math.nan), ("Infinity", math.inf), ("-Infinity", -math.inf)]
    )
    def test_accepted(self, value: object, expected: float) -> None:
        """Numbers and protobuf's spellings of non-finite doubles are metric values."""
        got = wire.read_metric(Message({"key": "m", "value": value, "timestamp": 1}), 0).value
        assert got == expected or (math.isnan(got) and math.isnan(expected))

    @pytest.mark.parametrize("value", ["abc", "0.5", True, None, [1]])
    def test_refused(self, value: object) -> None:
        """Anything else, a numeric string included, is INVALID_PARAMETER_VALUE naming the metric."""
        with pytest.raises(InvalidParameterValue, match=r"metric 'm'|required parameter 'value'"):
            wire.read_metric(Message({"key": "m", "value": value, "timestamp": 1}), 0)

    def test_defaults(self) -> None:
        """A metric without timestamp takes the given default; without step, step 0."""
        assert wire.read_metric(Message({"key": "m", "value": 1}), 42) == Metric("m", 1.0, 42, 0)


class TestShapes:
    def test_model_version_is_ready_with_a_string_version(self) -> None:
        """Versions render with a string version and status READY (else the client polls for minutes);
        an unservable one says why in status_message."""
        mv = ModelVersion("m", 3, "", EMPTY_SIG, "Production", 1, 2, source="s3://x", aliases=("champion",))
        out = wire.model_version(mv)
        assert (out["version"], out["status"], out["current_stage"], out["aliases"]) == ("3", "READY", "Production", ["champion"])
        assert "no .onnx file" in out["status_message"]
        assert "aliases" not in wire.model_version(mv, with_aliases=False)

    def test_run_has_run_id_and_artifact_uri(self) -> None:
        """A run renders info.run_id (and run_uuid), artifact_uri, and non-finite metrics as strings."""
        info = RunInfo("a" * 32, "1", "n", "u", "RUNNING", 5, None, "mlflow-artifacts:/1/x/artifacts", "active")
        out = wire.run(Run(info, metrics=(Metric("m", math.nan, 1, 0),), params={"p": "1"}))
        assert out["info"]["run_id"] == out["info"]["run_uuid"] == "a" * 32
        assert "end_time" not in out["info"] and out["info"]["artifact_uri"].startswith("mlflow-artifacts:/")
        assert out["data"]["metrics"] == [{"key": "m", "value": "NaN", "timestamp": 1, "step": 0}]
        assert out["data"]["params"] == [{"key": "p", "value": "1"}]

    def test_experiment_and_paging(self) -> None:
        """Experiments carry lifecycle_stage; the last page carries no next_page_token."""
        e = Experiment("1", "x", "mlflow-artifacts:/1", "active", 1, 2)
        assert wire.experiment(e)["lifecycle_stage"] == "active"
        assert wire.paged("experiments", Page((e,)), wire.experiment).keys() == {"experiments"}
        assert wire.paged("experiments", Page((e,), "tok"), wire.experiment)["next_page_token"] == "tok"

    def test_latest_per_stage(self) -> None:
        """latest_versions holds the newest version of each stage."""
        versions = [ModelVersion("m", v, "", EMPTY_SIG, stage, 1, 1) for v, stage in
                    [(1, "Production"), (2, "Production"), (3, "None"), (4, "Staging")]]
        assert [(mv.version, mv.stage) for mv in wire.latest_per_stage(versions)] == [(3, "None"), (2, "Production"), (4, "Staging")]
