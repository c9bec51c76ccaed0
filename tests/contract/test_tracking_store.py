"""TrackingStore contract (experiments, runs, params, metrics, tags, inputs, search), written once and
run against SQLite and PostgreSQL."""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from typing import ClassVar

import pytest

from registry.entities import Dataset, DatasetInput, Metric
from registry.errors import InvalidParameterValue, ResourceAlreadyExists, ResourceDoesNotExist
from registry.store import RegistryStore
from registry.tracking import TrackingStore


@pytest.fixture
def tracking(registry_store: RegistryStore) -> Iterator[TrackingStore]:
    yield TrackingStore(registry_store)


@pytest.fixture
def run_id(tracking: TrackingStore) -> str:
    return tracking.create_run(tracking.create_experiment("exp")).info.run_id


class TestExperiments:
    def test_default_experiment_exists(self, tracking: TrackingStore) -> None:
        """A new database holds MLflow's active "Default" experiment with id "0"."""
        default = tracking.get_experiment("0")
        assert (default.name, default.lifecycle_stage, default.artifact_location) == ("Default", "active", "mlflow-artifacts:/0")
        assert tracking.get_experiment_by_name("Default") == default

    def test_create_then_get(self, tracking: TrackingStore) -> None:
        """Created experiments get increasing decimal ids from 1 and an mlflow-artifacts location."""
        first = tracking.create_experiment("churn", tags={"team": "risk"})
        second = tracking.create_experiment("fraud", artifact_location="s3://bucket/fraud")
        assert (first, second) == ("1", "2")
        got = tracking.get_experiment(first)
        assert (got.name, got.artifact_location, got.lifecycle_stage, got.tags) == (
            "churn", "mlflow-artifacts:/1", "active", {"team": "risk"}
        )
        assert got.creation_time == got.last_update_time > 0
        assert tracking.get_experiment(second).artifact_location == "s3://bucket/fraud"

    def test_duplicate_name(self, tracking: TrackingStore) -> None:
        """A second experiment with a taken name raises ResourceAlreadyExists."""
        tracking.create_experiment("churn")
        with pytest.raises(ResourceAlreadyExists, match="churn"):
            tracking.create_experiment("churn")

    def test_missing_experiment(self, tracking: TrackingStore) -> None:
        """Unknown or malformed experiment ids raise ResourceDoesNotExist."""
        for experiment_id in ["99", "abc", "", "-1", "1" * 30]:
            with pytest.raises(ResourceDoesNotExist):
                tracking.get_experiment(experiment_id)

    def test_missing_name(self, tracking: TrackingStore) -> None:
        """get_experiment_by_name of an unknown name raises ResourceDoesNotExist quoting it."""
        with pytest.raises(ResourceDoesNotExist, match="Could not find experiment with name 'nope'"):
            tracking.get_experiment_by_name("nope")

    def test_tags_rename(self, tracking: TrackingStore) -> None:
        """Experiment tags upsert and delete; renaming keeps the id and refuses a taken name."""
        eid = tracking.create_experiment("a")
        tracking.create_experiment("b")
        tracking.set_experiment_tag(eid, "k", "1")
        tracking.set_experiment_tag(eid, "k", "2")
        assert tracking.get_experiment(eid).tags == {"k": "2"}
        tracking.delete_experiment_tag(eid, "k")
        assert tracking.get_experiment(eid).tags == {}
        tracking.rename_experiment(eid, "a2")
        assert tracking.get_experiment_by_name("a2").experiment_id == eid
        with pytest.raises(ResourceAlreadyExists):
            tracking.rename_experiment(eid, "b")

    def test_delete_and_restore_cascade_to_runs(self, tracking: TrackingStore) -> None:
        """Deleting an experiment deletes its active runs; restoring brings back those runs only."""
        eid = tracking.create_experiment("a")
        kept = tracking.create_run(eid).info.run_id
        gone_before = tracking.create_run(eid).info.run_id
        tracking.delete_run(gone_before)
        tracking.delete_experiment(eid)
        assert tracking.get_experiment(eid).lifecycle_stage == "deleted"
        assert tracking.get_run(kept).info.lifecycle_stage == "deleted"
        with pytest.raises(InvalidParameterValue):
            tracking.create_run(eid)
        tracking.restore_experiment(eid)
        assert tracking.get_run(kept).info.lifecycle_stage == "active"
        assert tracking.get_run(gone_before).info.lifecycle_stage == "deleted"

    def test_default_cannot_be_deleted(self, tracking: TrackingStore) -> None:
        """The Default experiment is reserved."""
        with pytest.raises(InvalidParameterValue, match="default experiment"):
            tracking.delete_experiment("0")

    def test_search(self, tracking: TrackingStore) -> None:
        """Experiment search filters by name and tags, hides deleted ones by default, and pages."""
        for name in ("churn-a", "churn-b", "fraud"):
            tracking.create_experiment(name, tags={"kind": name.split("-")[0]})
        tracking.delete_experiment(tracking.get_experiment_by_name("churn-b").experiment_id)
        names = [e.name for e in tracking.search_experiments(filter_string="name LIKE 'churn%'").items]
        assert names == ["churn-a"]
        both = tracking.search_experiments("ALL", "tags.kind = 'churn'", order_by=["name DESC"])
        assert [e.name for e in both.items] == ["churn-b", "churn-a"]
        first = tracking.search_experiments("ALL", max_results=2, order_by=["name"])
        assert [e.name for e in first.items] == ["Default", "churn-a"] and first.next_page_token
        rest = tracking.search_experiments("ALL", max_results=2, order_by=["name"], page_token=first.next_page_token)
        assert [e.name for e in rest.items] == ["churn-b", "fraud"] and rest.next_page_token is None


class TestRuns:
    def test_create_defaults(self, tracking: TrackingStore) -> None:
        """A run gets a 32-hex id, RUNNING status, a generated name kept in mlflow.runName, and an
        artifact_uri under its experiment's location."""
        eid = tracking.create_experiment("exp")
        run = tracking.create_run(eid, tags={"mlflow.user": "ana"}, start_time=1234)
        info = run.info
        assert len(info.run_id) == 32 and int(info.run_id, 16) >= 0
        assert (info.status, info.start_time, info.end_time, info.user_id) == ("RUNNING", 1234, None, "ana")
        assert info.artifact_uri == f"mlflow-artifacts:/{eid}/{info.run_id}/artifacts"
        assert info.run_name and run.tags["mlflow.runName"] == info.run_name
        assert tracking.get_run(info.run_id) == run

    def test_run_name_sources(self, tracking: TrackingStore) -> None:
        """The name comes from run_name or the mlflow.runName tag; two different ones are refused."""
        eid = tracking.create_experiment("exp")
        assert tracking.create_run(eid, run_name="a").tags["mlflow.runName"] == "a"
        assert tracking.create_run(eid, tags={"mlflow.runName": "b"}).info.run_name == "b"
        with pytest.raises(InvalidParameterValue, match="different values"):
            tracking.create_run(eid, run_name="a", tags={"mlflow.runName": "b"})

    def test_create_in_missing_experiment(self, tracking: TrackingStore) -> None:
        """A run in an unknown experiment raises ResourceDoesNotExist."""
        with pytest.raises(ResourceDoesNotExist):
            tracking.create_run("42")

    def test_missing_run(self, tracking: TrackingStore) -> None:
        """Reading or writing an unknown run raises ResourceDoesNotExist naming it."""
        with pytest.raises(ResourceDoesNotExist, match="Run with id=" + "0" * 32 + " not found"):
            tracking.get_run("0" * 32)
        with pytest.raises(ResourceDoesNotExist):
            tracking.log_param("0" * 32, "p", "1")

    def test_update_and_rename(self, tracking: TrackingStore, run_id: str) -> None:
        """update_run sets status and end_time; a new name also rewrites the mlflow.runName tag."""
        info = tracking.update_run(run_id, status="FINISHED", end_time=99, run_name="final")
        assert (info.status, info.end_time, info.run_name) == ("FINISHED", 99, "final")
        assert tracking.get_run(run_id).tags["mlflow.runName"] == "final"
        with pytest.raises(InvalidParameterValue, match="status"):
            tracking.update_run(run_id, status="DONE")

    def test_deleted_run_refuses_writes(self, tracking: TrackingStore, run_id: str) -> None:
        """Writes to a deleted run are refused until it is restored."""
        tracking.delete_run(run_id)
        with pytest.raises(InvalidParameterValue, match="must be in the 'active' state"):
            tracking.set_tag(run_id, "k", "v")
        tracking.restore_run(run_id)
        tracking.set_tag(run_id, "k", "v")
        assert tracking.get_run(run_id).tags["k"] == "v"


class TestParams:
    def test_params_are_immutable(self, tracking: TrackingStore, run_id: str) -> None:
        """Re-logging a param with its value is a no-op; with another value it is INVALID_PARAMETER_VALUE."""
        tracking.log_param(run_id, "depth", "6")
        tracking.log_param(run_id, "depth", "6")
        with pytest.raises(InvalidParameterValue, match="Changing param values is not allowed") as info:
            tracking.log_param(run_id, "depth", "7")
        assert info.value.code == "INVALID_PARAMETER_VALUE"
        assert tracking.get_run(run_id).params == {"depth": "6"}

    def test_batch_is_all_or_nothing(self, tracking: TrackingStore, run_id: str) -> None:
        """A batch with one conflicting param writes none of its metrics, params or tags."""
        tracking.log_param(run_id, "depth", "6")
        with pytest.raises(InvalidParameterValue):
            tracking.log_batch(run_id, [Metric("m", 1.0, 1)], [("lr", "0.1"), ("depth", "7")], [("t", "x")])
        run = tracking.get_run(run_id)
        assert (run.params, run.metrics, "t" in run.tags) == ({"depth": "6"}, (), False)

    def test_invalid_keys(self, tracking: TrackingStore, run_id: str) -> None:
        """Names outside MLflow's rules are refused, for params, metrics and tags alike."""
        for key in ["", "a/../b", "../up", "/abs", "a//b", "bad\nkey", "x" * 251, "semi;colon"]:
            with pytest.raises(InvalidParameterValue):
                tracking.log_param(run_id, key, "v")
            with pytest.raises(InvalidParameterValue):
                tracking.log_metric(run_id, Metric(key, 1.0, 1))
            with pytest.raises(InvalidParameterValue):
                tracking.set_tag(run_id, key, "v")
        assert tracking.get_run(run_id).params == {}

    def test_batch_limits(self, tracking: TrackingStore, run_id: str) -> None:
        """More than 1000 metrics or 100 params in a batch, or two values for one key, are refused."""
        with pytest.raises(InvalidParameterValue, match="at most 1000 metrics"):
            tracking.log_batch(run_id, [Metric("m", 1.0, 1, i) for i in range(1001)])
        with pytest.raises(InvalidParameterValue, match="at most 100 params"):
            tracking.log_batch(run_id, params=[(f"p{i}", "v") for i in range(101)])
        with pytest.raises(InvalidParameterValue, match="Duplicate parameter keys"):
            tracking.log_batch(run_id, params=[("p", "1"), ("p", "2")])


class TestMetrics:
    def test_history_and_latest(self, tracking: TrackingStore, run_id: str) -> None:
        """The history keeps every value by step; the run shows the value with the greatest step."""
        for step, value in [(0, 0.9), (2, 0.5), (1, 0.7)]:
            tracking.log_metric(run_id, Metric("loss", value, 1000 + step, step))
        history = tracking.get_metric_history(run_id, "loss").items
        assert [(m.step, m.value) for m in history] == [(0, 0.9), (1, 0.7), (2, 0.5)]
        assert tracking.get_run(run_id).metrics == (Metric("loss", 0.5, 1002, 2),)

    def test_exact_repeats_are_stored_once(self, tracking: TrackingStore, run_id: str) -> None:
        """Logging the same (value, timestamp, step) twice, e.g. a retried request, keeps one entry."""
        tracking.log_batch(run_id, [Metric("m", 1.0, 5, 0), Metric("m", 1.0, 5, 0)])
        tracking.log_metric(run_id, Metric("m", 1.0, 5, 0))
        assert len(tracking.get_metric_history(run_id, "m").items) == 1

    def test_non_finite_values(self, tracking: TrackingStore, run_id: str) -> None:
        """NaN and infinities round-trip on both backends."""
        tracking.log_batch(run_id, [Metric("nan", math.nan, 1), Metric("inf", math.inf, 1), Metric("ninf", -math.inf, 1)])
        values = {m.key: m.value for m in tracking.get_run(run_id).metrics}
        assert math.isnan(values["nan"]) and values["inf"] == math.inf and values["ninf"] == -math.inf

    def test_history_paging(self, tracking: TrackingStore, run_id: str) -> None:
        """History pages follow their tokens to the end; a missing run or foreign token is refused."""
        tracking.log_batch(run_id, [Metric("m", float(i), i, i) for i in range(5)])
        page = tracking.get_metric_history(run_id, "m", max_results=2)
        seen = [m.step for m in page.items]
        while page.next_page_token:
            page = tracking.get_metric_history(run_id, "m", max_results=2, page_token=page.next_page_token)
            seen += [m.step for m in page.items]
        assert seen == [0, 1, 2, 3, 4]
        assert tracking.get_metric_history(run_id, "other").items == ()
        with pytest.raises(InvalidParameterValue, match="page token"):
            tracking.get_metric_history(run_id, "m", page_token="garbage!")
        with pytest.raises(ResourceDoesNotExist):
            tracking.get_metric_history("f" * 32, "m")

    def test_concurrent_writers_lose_nothing(self, tracking: TrackingStore, run_id: str) -> None:
        """Eight threads logging batches to one run at once: every value lands, latest is the top step."""
        def write(worker: int) -> None:
            for i in range(10):
                step = worker * 10 + i
                tracking.log_batch(run_id, [Metric("shared", float(step), step, step), Metric(f"w{worker}", 1.0, i, i)],
                                   params=[(f"p{worker}-{i}", str(i))], tags=[("last", str(worker))])

        threads = [threading.Thread(target=write, args=(w,)) for w in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(tracking.get_metric_history(run_id, "shared").items) == 80
        run = tracking.get_run(run_id)
        assert len(run.params) == 80
        latest = {m.key: m for m in run.metrics}
        assert latest["shared"].step == 79 and len(latest) == 9


class TestTagsAndInputs:
    def test_tags(self, tracking: TrackingStore, run_id: str) -> None:
        """Tags upsert, and deleting a missing tag raises ResourceDoesNotExist."""
        tracking.set_tag(run_id, "team", "a")
        tracking.set_tag(run_id, "team", "b")
        assert tracking.get_run(run_id).tags["team"] == "b"
        tracking.delete_tag(run_id, "team")
        assert "team" not in tracking.get_run(run_id).tags
        with pytest.raises(ResourceDoesNotExist):
            tracking.delete_tag(run_id, "team")

    def test_inputs(self, tracking: TrackingStore, run_id: str) -> None:
        """Dataset inputs record name, digest and source once, with the input's context tag."""
        data = Dataset("churn-2024", "d1g3st", "s3", "s3://b/churn.parquet", schema='{"x": "f"}')
        tracking.log_inputs(run_id, [DatasetInput(data, {"mlflow.data.context": "training"})])
        tracking.log_inputs(run_id, [DatasetInput(data, {"mlflow.data.context": "training"})])
        assert tracking.get_run(run_id).inputs == (DatasetInput(data, {"mlflow.data.context": "training"}),)

    def test_invalid_dataset(self, tracking: TrackingStore, run_id: str) -> None:
        """A dataset needs a name and a digest of at most 36 characters."""
        with pytest.raises(InvalidParameterValue):
            tracking.log_inputs(run_id, [DatasetInput(Dataset("d", ""))])
        with pytest.raises(InvalidParameterValue):
            tracking.log_inputs(run_id, [DatasetInput(Dataset("d", "x" * 37))])


class TestSearchRuns:
    @pytest.fixture
    def populated(self, tracking: TrackingStore) -> tuple[TrackingStore, str, dict[str, str]]:
        eid = tracking.create_experiment("exp")
        ids: dict[str, str] = {}
        for i, (name, auc, model) in enumerate([("alpha", 0.7, "tree"), ("beta", 0.9, "linear"), ("gamma", None, "tree")]):
            rid = tracking.create_run(eid, run_name=name, start_time=1000 + i).info.run_id
            ids[name] = rid
            tracking.log_param(rid, "model", model)
            if auc is not None:
                tracking.log_metric(rid, Metric("auc", auc, 1))
        tracking.update_run(ids["beta"], status="FINISHED")
        tracking.log_inputs(ids["alpha"], [DatasetInput(Dataset("train", "abc"), {"mlflow.data.context": "training"})])
        return tracking, eid, ids

    FILTERS: ClassVar[list[tuple[str, list[str]]]] = [
        ("", ["gamma", "beta", "alpha"]),
        ("metrics.auc > 0.8", ["beta"]),
        ("metrics.auc >= 0.7 AND params.model = 'tree'", ["alpha"]),
        ("params.model != 'tree'", ["beta"]),
        ("attributes.status = 'FINISHED'", ["beta"]),
        ("attribute.run_name LIKE '%a%'", ["gamma", "beta", "alpha"]),
        ("attributes.run_name LIKE 'A%'", []),
        ("attributes.run_name ILIKE 'A%'", ["alpha"]),
        ("tags.`mlflow.runName` = 'gamma'", ["gamma"]),
        ("attributes.start_time > 1000 and metrics.auc < 1", ["beta"]),
        ("datasets.digest = 'abc' and datasets.context = 'training'", ["alpha"]),
        ("attributes.run_name IN ('alpha', 'gamma')", ["gamma", "alpha"]),
    ]

    def test_filters(self, populated: tuple[TrackingStore, str, dict[str, str]]) -> None:
        """Each filter clause narrows the runs; LIKE is case-sensitive on both backends, ILIKE is not."""
        tracking, eid, _ = populated
        for filter_string, expected in self.FILTERS:
            found = tracking.search_runs([eid], filter_string)
            assert [r.info.run_name for r in found.items] == expected, filter_string

    def test_order_by_metric_puts_missing_last(self, populated: tuple[TrackingStore, str, dict[str, str]]) -> None:
        """Ordering by a metric sorts by its latest value, runs without it last in either direction."""
        tracking, eid, _ = populated
        desc = tracking.search_runs([eid], order_by=["metrics.auc DESC"]).items
        asc = tracking.search_runs([eid], order_by=["metrics.auc"]).items
        assert [r.info.run_name for r in desc] == ["beta", "alpha", "gamma"]
        assert [r.info.run_name for r in asc] == ["alpha", "beta", "gamma"]
        by_start = tracking.search_runs([eid], order_by=["attributes.start_time ASC"]).items
        assert [r.info.run_name for r in by_start] == ["alpha", "beta", "gamma"]

    def test_paging_and_view_type(self, populated: tuple[TrackingStore, str, dict[str, str]]) -> None:
        """Pages chain through their tokens; deleted runs show only for DELETED_ONLY and ALL."""
        tracking, eid, ids = populated
        first = tracking.search_runs([eid], max_results=2)
        second = tracking.search_runs([eid], max_results=2, page_token=first.next_page_token)
        assert len(first.items) == 2 and len(second.items) == 1 and second.next_page_token is None
        tracking.delete_run(ids["alpha"])
        assert [r.info.run_name for r in tracking.search_runs([eid], view_type="DELETED_ONLY").items] == ["alpha"]
        assert len(tracking.search_runs([eid], view_type="ALL").items) == 3
        assert tracking.search_runs(["999", "nope"]).items == ()

    def test_search_returns_run_data(self, populated: tuple[TrackingStore, str, dict[str, str]]) -> None:
        """Search results carry the same data as get_run."""
        tracking, eid, ids = populated
        found = tracking.search_runs([eid], "attributes.run_name = 'alpha'").items
        assert found == (tracking.get_run(ids["alpha"]),)

    def test_invalid_filter_and_order(self, tracking: TrackingStore) -> None:
        """A filter or order_by outside the grammar raises InvalidParameterValue quoting it."""
        for bad in ["metrics.auc > 'x'", "params.model = 1", "foo.bar = 'x'", "metrics.auc > 1 OR metrics.auc < 0"]:
            with pytest.raises(InvalidParameterValue, match="Invalid run search"):
                tracking.search_runs(["0"], bad)
        with pytest.raises(InvalidParameterValue, match="cannot order by"):
            tracking.search_runs(["0"], order_by=["attributes.nope"])
