"""The registry operations the MLflow API adds (rename, delete, tags, search, latest versions), versions
created from a source (servable or not, and how serving resolution treats them), and lineage; on
SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib

import pytest

from registry.artifacts import ArtifactStore
from registry.entities import Dataset, DatasetInput, Metric, Signature, TensorSpec
from registry.errors import (
    InvalidModelFile,
    InvalidParameterValue,
    ResourceAlreadyExists,
    ResourceDoesNotExist,
)
from registry.lineage import lineage
from registry.sources import create_version_from_source
from registry.store import RegistryStore
from registry.tracking import TrackingStore

SIG = Signature(inputs=(TensorSpec("x", "FP32", (-1, 4)),), outputs=(TensorSpec("y", "FP32", (-1, 2)),))
SHA = "a" * 64


class TestModelOperations:
    def test_rename_carries_versions_tags_and_aliases(self, registry_store: RegistryStore) -> None:
        """A renamed model keeps its versions, their tags and aliases; the old name is gone."""
        s = registry_store
        s.create_registered_model("old", tags={"team": "a"})
        s.create_model_version("old", SHA, SIG, tags={"k": "v"})
        s.set_alias("old", "champion", 1)
        renamed = s.rename_registered_model("old", "new")
        assert (renamed.name, renamed.tags) == ("new", {"team": "a"})
        mv = s.get_version_by_alias("new", "champion")
        assert (mv.name, mv.version, mv.tags) == ("new", 1, {"k": "v"})
        with pytest.raises(ResourceDoesNotExist):
            s.get_registered_model("old")
        s.create_registered_model("other")
        with pytest.raises(ResourceAlreadyExists):
            s.rename_registered_model("new", "other")

    def test_update_and_tags(self, registry_store: RegistryStore) -> None:
        """Descriptions update; model and version tags upsert and delete (a missing tag is no error)."""
        s = registry_store
        s.create_model_version("m", SHA, SIG)
        assert s.update_registered_model("m", "about m").description == "about m"
        assert s.update_model_version("m", 1, "first").description == "first"
        s.set_registered_model_tag("m", "k", "1")
        s.set_registered_model_tag("m", "k", "2")
        s.set_model_version_tag("m", 1, "q", "x")
        assert s.get_registered_model("m").tags == {"k": "2"}
        assert s.get_model_version("m", 1).tags == {"q": "x"}
        s.delete_registered_model_tag("m", "k")
        s.delete_model_version_tag("m", 1, "q")
        s.delete_model_version_tag("m", 1, "never-set")
        assert (s.get_registered_model("m").tags, s.get_model_version("m", 1).tags) == ({}, {})
        with pytest.raises(ResourceDoesNotExist):
            s.set_model_version_tag("m", 9, "k", "v")

    def test_version_numbers_are_never_reused(self, registry_store: RegistryStore) -> None:
        """After deleting the newest version, or the whole model, numbering continues past the deleted ones."""
        s = registry_store
        for _ in range(3):
            s.create_model_version("m", SHA, SIG)
        s.delete_model_version("m", 3)
        assert [mv.version for mv in s.list_model_versions("m")] == [1, 2]
        assert s.create_model_version("m", SHA, SIG).version == 4
        s.delete_registered_model("m")
        with pytest.raises(ResourceDoesNotExist):
            s.get_model_version("m", 1)
        assert s.create_model_version("m", SHA, SIG).version == 5

    def test_latest_versions(self, registry_store: RegistryStore) -> None:
        """latest_versions gives the newest version per stage, of the asked stages (any case) or all."""
        s = registry_store
        for _ in range(4):
            s.create_model_version("m", SHA, SIG)
        s.transition_stage("m", 1, "Production")
        s.transition_stage("m", 2, "Production")
        s.transition_stage("m", 3, "Staging")
        assert [(mv.version, mv.stage) for mv in s.latest_versions("m", ["production"])] == [(2, "Production")]
        assert [(mv.version, mv.stage) for mv in s.latest_versions("m")] == [(4, "None"), (3, "Staging"), (2, "Production")]
        with pytest.raises(InvalidParameterValue):
            s.latest_versions("m", ["Gold"])

    def test_mutations_bump_the_change_counter(self, registry_store: RegistryStore) -> None:
        """Each new mutation bumps the counter that gateway followers poll."""
        s = registry_store
        s.create_model_version("m", SHA, SIG)
        before = s.change_counter()
        s.set_registered_model_tag("m", "k", "v")
        s.update_model_version("m", 1, "d")
        s.create_unservable_model_version("m", "s3://b/model")
        s.delete_model_version("m", 2)
        s.rename_registered_model("m", "n")
        assert s.change_counter() == before + 5


class TestSearch:
    def test_registered_models(self, registry_store: RegistryStore) -> None:
        """Model search filters by name and tags and pages through its tokens."""
        s = registry_store
        for name in ("churn-a", "churn-b", "fraud"):
            s.create_registered_model(name, tags={"domain": name.split("-")[0]})
        assert [m.name for m in s.search_registered_models("name LIKE 'churn%'").items] == ["churn-a", "churn-b"]
        assert [m.name for m in s.search_registered_models("tags.domain = 'fraud'").items] == ["fraud"]
        first = s.search_registered_models(max_results=2)
        second = s.search_registered_models(max_results=2, page_token=first.next_page_token)
        assert [m.name for m in (*first.items, *second.items)] == ["churn-a", "churn-b", "fraud"]
        assert second.next_page_token is None
        with pytest.raises(InvalidParameterValue):
            s.search_registered_models("run_id = 'x'")

    def test_model_versions(self, registry_store: RegistryStore) -> None:
        """Version search filters by name, run_id and LIKE, newest version first per model."""
        s = registry_store
        s.create_model_version("a", SHA, SIG, run_id="r1")
        s.create_model_version("a", SHA, SIG, run_id="r2")
        s.create_model_version("ab", SHA, SIG, run_id="r1")
        found = s.search_model_versions("name='a'").items
        assert [(mv.name, mv.version) for mv in found] == [("a", 2), ("a", 1)]
        assert [(mv.name, mv.version) for mv in s.search_model_versions("run_id = 'r1'").items] == [("a", 1), ("ab", 1)]
        assert len(s.search_model_versions("name LIKE 'a%'").items) == 3
        page = s.search_model_versions(max_results=2)
        assert len(page.items) == 2 and page.next_page_token
        with pytest.raises(InvalidParameterValue, match="model version search"):
            s.search_model_versions("metrics.x > 1")


class TestUnservableVersions:
    def test_recorded_but_never_served(self, registry_store: RegistryStore) -> None:
        """A version without an ONNX blob is listed and promotable, but serving passes it over."""
        s = registry_store
        s.create_model_version("m", SHA, SIG)
        mv = s.create_unservable_model_version("m", "s3://bucket/model", run_id="r")
        assert (mv.version, mv.artifact_sha256, mv.servable, mv.source) == (2, "", False, "s3://bucket/model")
        assert s.get_model_version("m", 2) == mv
        s.transition_stage("m", 2, "Production")
        s.set_alias("m", "champion", 2)
        assert s.resolve_serving_version("m").version == 1  # type: ignore[union-attr]
        assert s.resolve_version_ref("m", "latest").version == 1
        with pytest.raises(ResourceDoesNotExist):
            s.resolve_version_ref("m", "Production")
        for ref in ("2", "champion"):
            with pytest.raises(InvalidParameterValue, match="cannot be served"):
                s.resolve_version_ref("m", ref)

    def test_model_with_only_unservable_versions(self, registry_store: RegistryStore) -> None:
        """A model whose versions are all unservable serves nothing; the model itself must exist."""
        s = registry_store
        s.create_registered_model("m")
        s.create_unservable_model_version("m", "s3://bucket/model")
        assert s.resolve_serving_version("m") is None
        with pytest.raises(ResourceDoesNotExist):
            s.create_unservable_model_version("nope", "s3://x")


class TestVersionsFromSources:
    @pytest.fixture
    def run_id(self, registry_store: RegistryStore) -> str:
        tracking = TrackingStore(registry_store)
        return tracking.create_run(tracking.create_experiment("exp")).info.run_id

    def _log(self, artifacts: ArtifactStore, run_id: str, relpath: str, data: bytes) -> None:
        artifacts.write_file(f"1/{run_id}/artifacts/{relpath}", data)

    def test_runs_source_with_onnx_is_servable(
        self, registry_store: RegistryStore, artifact_store: ArtifactStore, run_id: str, demo_onnx_bytes: bytes
    ) -> None:
        """runs:/<id>/model holding one .onnx file registers it like `gateway models register`."""
        self._log(artifact_store, run_id, "model/model.onnx", demo_onnx_bytes)
        self._log(artifact_store, run_id, "model/MLmodel", b"flavors: {}")
        registry_store.create_registered_model("m")
        mv = create_version_from_source(
            registry_store, TrackingStore(registry_store), artifact_store, "m", f"runs:/{run_id}/model", run_id=run_id
        )
        assert mv.servable and mv.artifact_sha256 == hashlib.sha256(demo_onnx_bytes).hexdigest()
        assert artifact_store.read_bytes(mv.artifact_sha256) == demo_onnx_bytes
        assert [t.name for t in mv.signature.inputs] == ["x"]
        assert (mv.source, mv.run_id) == (f"runs:/{run_id}/model", run_id)
        assert registry_store.resolve_serving_version("m") == mv

    @pytest.mark.parametrize("source", ["mlflow-artifacts:/1/{rid}/artifacts/net.onnx", "1/{rid}/artifacts"])
    def test_other_sources_that_resolve(
        self, registry_store: RegistryStore, artifact_store: ArtifactStore, run_id: str, demo_onnx_bytes: bytes, source: str
    ) -> None:
        """An mlflow-artifacts URI of the file, or a store-relative directory, finds the .onnx file too."""
        self._log(artifact_store, run_id, "net.onnx", demo_onnx_bytes)
        registry_store.create_registered_model("m")
        mv = create_version_from_source(
            registry_store, TrackingStore(registry_store), artifact_store, "m", source.format(rid=run_id)
        )
        assert mv.servable

    @pytest.mark.parametrize("source", ["runs:/{rid}/model", "s3://bucket/model", "/abs/path/model", "mlflow-artifacts:/"])
    def test_sources_without_onnx_are_recorded(
        self, registry_store: RegistryStore, artifact_store: ArtifactStore, run_id: str, source: str
    ) -> None:
        """A source holding no .onnx file (or outside the store) still creates a version, unservable."""
        self._log(artifact_store, run_id, "model/model.pkl", b"pickle")
        registry_store.create_registered_model("m")
        mv = create_version_from_source(
            registry_store, TrackingStore(registry_store), artifact_store, "m", source.format(rid=run_id)
        )
        assert (mv.version, mv.servable, mv.source) == (1, False, source.format(rid=run_id))

    def test_refusals(
        self, registry_store: RegistryStore, artifact_store: ArtifactStore, run_id: str, demo_onnx_bytes: bytes
    ) -> None:
        """A missing model or run, two .onnx files, or a corrupt one are refused and register nothing."""
        tracking = TrackingStore(registry_store)
        with pytest.raises(ResourceDoesNotExist, match="Registered model"):
            create_version_from_source(registry_store, tracking, artifact_store, "m", f"runs:/{run_id}/model")
        registry_store.create_registered_model("m")
        with pytest.raises(ResourceDoesNotExist, match="Run with id"):
            create_version_from_source(registry_store, tracking, artifact_store, "m", "runs:/" + "0" * 32 + "/model")
        self._log(artifact_store, run_id, "two/a.onnx", demo_onnx_bytes)
        self._log(artifact_store, run_id, "two/sub/b.onnx", demo_onnx_bytes)
        with pytest.raises(InvalidParameterValue, match=r"2 \.onnx files"):
            create_version_from_source(registry_store, tracking, artifact_store, "m", f"runs:/{run_id}/two")
        self._log(artifact_store, run_id, "bad/model.onnx", b"not onnx")
        with pytest.raises(InvalidModelFile):
            create_version_from_source(registry_store, tracking, artifact_store, "m", f"runs:/{run_id}/bad")
        assert registry_store.list_model_versions("m") == []


class TestLineage:
    def test_version_to_run_to_datasets(
        self, registry_store: RegistryStore, artifact_store: ArtifactStore, demo_onnx_bytes: bytes
    ) -> None:
        """Lineage links a version to its run (params, latest metrics, tags) and the run's datasets."""
        tracking = TrackingStore(registry_store)
        eid = tracking.create_experiment("churn")
        run = tracking.create_run(eid, run_name="train")
        rid = run.info.run_id
        tracking.log_batch(rid, [Metric("auc", 0.8, 1, 0), Metric("auc", 0.9, 2, 1)], [("depth", "6")])
        data = Dataset("churn-2024", "abc", "s3", "s3://b/churn.parquet")
        tracking.log_inputs(rid, [DatasetInput(data, {"mlflow.data.context": "training"})])
        artifact_store.write_file(f"{eid}/{rid}/artifacts/model/model.onnx", demo_onnx_bytes)
        registry_store.create_registered_model("churn")
        create_version_from_source(registry_store, tracking, artifact_store, "churn", f"runs:/{rid}/model", run_id=rid)
        chain = lineage(registry_store, "churn", 1)
        assert chain["model_version"]["servable"] is True and chain["model_version"]["run_id"] == rid
        assert {k: chain["run"][k] for k in ("run_id", "run_name", "experiment_name", "params", "metrics")} == {
            "run_id": rid, "run_name": "train", "experiment_name": "churn", "params": {"depth": "6"},
            "metrics": {"auc": 0.9},
        }
        assert chain["datasets"] == [
            {"name": "churn-2024", "digest": "abc", "source_type": "s3", "source": "s3://b/churn.parquet", "context": "training"}
        ]

    def test_version_without_run(self, registry_store: RegistryStore) -> None:
        """A version with no run (or an unknown one) has a null run and no datasets; a missing version raises."""
        registry_store.create_model_version("m", SHA, SIG)
        registry_store.create_model_version("m", SHA, SIG, run_id="f" * 32)
        for version in (1, 2):
            chain = lineage(registry_store, "m", version)
            assert (chain["run"], chain["datasets"]) == (None, [])
        with pytest.raises(ResourceDoesNotExist):
            lineage(registry_store, "m", 3)
