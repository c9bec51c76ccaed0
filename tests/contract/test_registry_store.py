"""RegistryStore contract, written once and run against SQLite and PostgreSQL."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from registry.entities import ModelVersion, Signature, TensorSpec
from registry.errors import (
    InvalidParameterValue,
    RegistryError,
    ResourceAlreadyExists,
    ResourceDoesNotExist,
    StoreUnavailable,
)
from registry.schema import metadata
from registry.store import RegistryStore

SIG = Signature(
    inputs=(TensorSpec("x", "FP32", (-1, 4)), TensorSpec("label", "BYTES", (-1,))),
    outputs=(TensorSpec("y", "FP32", (-1, 2)),),
)
SHA_A = "a" * 64
SHA_B = "0123456789abcdef" * 4


def add_versions(store: RegistryStore, name: str, count: int) -> list[ModelVersion]:
    return [store.create_model_version(name, SHA_A, SIG) for _ in range(count)]


class TestRegisteredModels:
    def test_create_then_get(self, registry_store: RegistryStore) -> None:
        """A created model reads back with its description, tags and equal create/update times."""
        before = int(time.time() * 1000)
        created = registry_store.create_registered_model("churn", "predicts churn", tags={"team": "risk"})
        got = registry_store.get_registered_model("churn")
        assert got == created
        assert (got.name, got.description, got.tags) == ("churn", "predicts churn", {"team": "risk"})
        assert before <= got.created_ms == got.updated_ms <= int(time.time() * 1000)

    def test_duplicate_name_is_rejected(self, registry_store: RegistryStore) -> None:
        """Creating a model twice raises ResourceAlreadyExists with its MLflow code."""
        registry_store.create_registered_model("churn")
        with pytest.raises(ResourceAlreadyExists) as info:
            registry_store.create_registered_model("churn")
        assert info.value.code == "RESOURCE_ALREADY_EXISTS"
        assert "churn" in info.value.message

    def test_missing_model(self, registry_store: RegistryStore) -> None:
        """Reading a missing model raises ResourceDoesNotExist naming it."""
        with pytest.raises(ResourceDoesNotExist) as info:
            registry_store.get_registered_model("nope")
        assert info.value.code == "RESOURCE_DOES_NOT_EXIST"
        assert info.value.message == "Registered model 'nope' not found"

    @pytest.mark.parametrize("name", ["", "a/b", "a b", "caf\u00e9", "x" * 257, "semi;colon"])
    def test_invalid_names(self, registry_store: RegistryStore, name: str) -> None:
        """Empty, over-long, and names outside [A-Za-z0-9_.-] are refused with INVALID_PARAMETER_VALUE."""
        with pytest.raises(InvalidParameterValue) as info:
            registry_store.create_registered_model(name)
        assert info.value.code == "INVALID_PARAMETER_VALUE"
        assert registry_store.list_registered_models() == []

    @pytest.mark.parametrize("name", ["x" * 256, "a.b-c_D9", "v1"])
    def test_valid_names(self, registry_store: RegistryStore, name: str) -> None:
        """Names up to 256 characters of [A-Za-z0-9_.-] are accepted."""
        assert registry_store.create_registered_model(name).name == name

    def test_list_is_sorted_by_name_in_byte_order(self, registry_store: RegistryStore) -> None:
        """Models list in byte order on both backends, whatever the database collation, with their tags."""
        names = ["b", "B", "a", "a.b", "A-1", "_z"]
        for name in names:
            registry_store.create_registered_model(name, tags={"n": name})
        listed = registry_store.list_registered_models()
        assert [m.name for m in listed] == sorted(names)
        assert all(m.tags == {"n": m.name} for m in listed)

    def test_invalid_tag_key(self, registry_store: RegistryStore) -> None:
        """An empty tag key is refused and nothing is created."""
        with pytest.raises(InvalidParameterValue):
            registry_store.create_registered_model("churn", tags={"": "x"})
        with pytest.raises(ResourceDoesNotExist):
            registry_store.get_registered_model("churn")


class TestModelVersions:
    def test_versions_count_from_one_per_model(self, registry_store: RegistryStore) -> None:
        """Each model numbers its versions 1, 2, 3 independently, and a first version creates the model."""
        assert [v.version for v in add_versions(registry_store, "a", 3)] == [1, 2, 3]
        assert [v.version for v in add_versions(registry_store, "b", 2)] == [1, 2]
        assert [m.name for m in registry_store.list_registered_models()] == ["a", "b"]

    def test_version_round_trip(self, registry_store: RegistryStore) -> None:
        """A version reads back with its signature, artifact, source, run, description, tags and stage None."""
        created = registry_store.create_model_version(
            "churn", SHA_B, SIG, source="runs:/r1/model", run_id="r1", description="first", tags={"k": "v"}
        )
        got = registry_store.get_model_version("churn", 1)
        assert got == created
        assert got.signature == SIG
        assert (got.artifact_sha256, got.stage, got.source, got.run_id) == (SHA_B, "None", "runs:/r1/model", "r1")
        assert (got.description, got.tags, got.aliases) == ("first", {"k": "v"}, ())

    def test_new_version_touches_model_update_time(self, registry_store: RegistryStore) -> None:
        """Adding a version advances the model's updated_ms, not its created_ms."""
        model = registry_store.create_registered_model("churn")
        time.sleep(0.005)
        registry_store.create_model_version("churn", SHA_A, SIG)
        after = registry_store.get_registered_model("churn")
        assert after.created_ms == model.created_ms
        assert after.updated_ms > model.updated_ms

    def test_list_versions_ascending(self, registry_store: RegistryStore) -> None:
        """list_model_versions returns every version in ascending order."""
        add_versions(registry_store, "churn", 3)
        assert [v.version for v in registry_store.list_model_versions("churn")] == [1, 2, 3]

    def test_list_versions_of_model_without_versions(self, registry_store: RegistryStore) -> None:
        """A model with no versions lists none; a missing model raises ResourceDoesNotExist."""
        registry_store.create_registered_model("empty")
        assert registry_store.list_model_versions("empty") == []
        with pytest.raises(ResourceDoesNotExist):
            registry_store.list_model_versions("nope")

    def test_missing_version(self, registry_store: RegistryStore) -> None:
        """Reading a version that does not exist raises ResourceDoesNotExist naming model and version."""
        add_versions(registry_store, "churn", 1)
        with pytest.raises(ResourceDoesNotExist) as info:
            registry_store.get_model_version("churn", 2)
        assert "2" in info.value.message and "churn" in info.value.message
        with pytest.raises(ResourceDoesNotExist, match="Registered model 'nope' not found"):
            registry_store.get_model_version("nope", 1)

    def test_without_create_model_needs_the_model(self, registry_store: RegistryStore) -> None:
        """With create_model=False a missing model raises ResourceDoesNotExist and nothing is created."""
        with pytest.raises(ResourceDoesNotExist):
            registry_store.create_model_version("churn", SHA_A, SIG, create_model=False)
        assert registry_store.list_registered_models() == []

    @pytest.mark.parametrize("sha", ["", "A" * 64, "a" * 63, "g" * 64])
    def test_invalid_artifact_digest(self, registry_store: RegistryStore, sha: str) -> None:
        """An artifact digest that is not 64 lowercase hex digits is refused."""
        with pytest.raises(InvalidParameterValue):
            registry_store.create_model_version("churn", sha, SIG)

    @pytest.mark.parametrize(
        "kwargs",
        [{"description": "a\x00b"}, {"source": "\x00"}, {"run_id": "r" * 65}, {"tags": {"k": "v\x00"}}, {"tags": {"": "v"}}],
    )
    def test_values_neither_backend_can_store_alike(self, registry_store: RegistryStore, kwargs: dict[str, Any]) -> None:
        """NUL characters, over-long run ids and empty tag keys are refused the same way on both backends."""
        with pytest.raises(InvalidParameterValue):
            registry_store.create_model_version("churn", SHA_A, SIG, **kwargs)
        assert registry_store.list_registered_models() == []

    def test_lookups_with_nul_raise_registry_errors(self, registry_store: RegistryStore) -> None:
        """A lookup by a name PostgreSQL cannot even compare raises a RegistryError, not a driver error."""
        add_versions(registry_store, "churn", 1)
        with pytest.raises(RegistryError):
            registry_store.get_registered_model("a\x00b")
        with pytest.raises(RegistryError):
            registry_store.resolve_version_ref("churn", "x\x00")

    def test_concurrent_registrations_get_distinct_consecutive_numbers(self, registry_url: str) -> None:
        """Versions registered from many threads at once, on a model none of them saw, are numbered 1..N."""
        stores = [RegistryStore(registry_url) for _ in range(2)]
        threads, per_thread = 8, 3
        barrier = threading.Barrier(threads)

        def register(i: int) -> list[int]:
            barrier.wait()
            store = stores[i % len(stores)]
            return [store.create_model_version("race", SHA_A, SIG).version for _ in range(per_thread)]

        try:
            with ThreadPoolExecutor(threads) as pool:
                numbers = [n for batch in pool.map(register, range(threads)) for n in batch]
            assert sorted(numbers) == list(range(1, threads * per_thread + 1))
            listed = stores[0].list_model_versions("race")
            assert [v.version for v in listed] == list(range(1, threads * per_thread + 1))
        finally:
            for store in stores:
                store.close()


class TestStages:
    def test_transition_normalises_case(self, registry_store: RegistryStore) -> None:
        """Stage names are accepted in any case and stored in canonical form."""
        add_versions(registry_store, "churn", 1)
        moved = registry_store.transition_stage("churn", 1, "production")
        assert moved.stage == "Production"
        assert registry_store.get_model_version("churn", 1).stage == "Production"
        assert registry_store.transition_stage("churn", 1, "NONE").stage == "None"

    def test_transition_touches_update_time(self, registry_store: RegistryStore) -> None:
        """A transition advances the version's updated_ms and keeps created_ms."""
        created = add_versions(registry_store, "churn", 1)[0]
        time.sleep(0.005)
        moved = registry_store.transition_stage("churn", 1, "Staging")
        assert moved.created_ms == created.created_ms
        assert moved.updated_ms > created.updated_ms

    @pytest.mark.parametrize("stage", ["Prod", "", "deployed"])
    def test_invalid_stage(self, registry_store: RegistryStore, stage: str) -> None:
        """An unknown stage raises InvalidParameterValue and leaves the version as it was."""
        add_versions(registry_store, "churn", 1)
        with pytest.raises(InvalidParameterValue, match="stage"):
            registry_store.transition_stage("churn", 1, stage)
        assert registry_store.get_model_version("churn", 1).stage == "None"

    def test_transition_missing_version(self, registry_store: RegistryStore) -> None:
        """Transitioning a version that does not exist raises ResourceDoesNotExist."""
        add_versions(registry_store, "churn", 1)
        with pytest.raises(ResourceDoesNotExist):
            registry_store.transition_stage("churn", 5, "Production")

    def test_without_archive_existing_versions_share_a_stage(self, registry_store: RegistryStore) -> None:
        """Without archive_existing, several versions may be in Production at once."""
        add_versions(registry_store, "churn", 2)
        registry_store.transition_stage("churn", 1, "Production")
        registry_store.transition_stage("churn", 2, "Production")
        assert [v.stage for v in registry_store.list_model_versions("churn")] == ["Production", "Production"]

    def test_archive_existing(self, registry_store: RegistryStore) -> None:
        """With archive_existing, the other versions in the target stage go to Archived; other stages stay."""
        add_versions(registry_store, "churn", 4)
        add_versions(registry_store, "other", 1)
        registry_store.transition_stage("churn", 1, "Production")
        registry_store.transition_stage("churn", 2, "Production")
        registry_store.transition_stage("churn", 3, "Staging")
        registry_store.transition_stage("other", 1, "Production")
        registry_store.transition_stage("churn", 4, "Production", archive_existing=True)
        stages = [v.stage for v in registry_store.list_model_versions("churn")]
        assert stages == ["Archived", "Archived", "Staging", "Production"]
        assert registry_store.get_model_version("other", 1).stage == "Production"

    def test_archive_existing_into_archived_touches_nothing_else(self, registry_store: RegistryStore) -> None:
        """archive_existing only acts for Staging and Production targets."""
        add_versions(registry_store, "churn", 2)
        registry_store.transition_stage("churn", 1, "Production")
        registry_store.transition_stage("churn", 2, "Archived", archive_existing=True)
        assert [v.stage for v in registry_store.list_model_versions("churn")] == ["Production", "Archived"]


class TestAliases:
    def test_set_get_move_delete(self, registry_store: RegistryStore) -> None:
        """An alias resolves to its version, moves when set again, and is gone after delete."""
        add_versions(registry_store, "churn", 2)
        registry_store.set_alias("churn", "champion", 1)
        assert registry_store.get_version_by_alias("churn", "champion").version == 1
        registry_store.set_alias("churn", "champion", 2)
        assert registry_store.get_version_by_alias("churn", "champion").version == 2
        assert registry_store.get_model_version("churn", 1).aliases == ()
        registry_store.delete_alias("churn", "champion")
        with pytest.raises(ResourceDoesNotExist, match="champion"):
            registry_store.get_version_by_alias("churn", "champion")

    def test_version_lists_its_aliases_sorted(self, registry_store: RegistryStore) -> None:
        """A version carries every alias that points at it, in name order, in get and list."""
        add_versions(registry_store, "churn", 2)
        for alias in ("prod", "champion", "blue"):
            registry_store.set_alias("churn", alias, 2)
        assert registry_store.get_model_version("churn", 2).aliases == ("blue", "champion", "prod")
        assert [v.aliases for v in registry_store.list_model_versions("churn")] == [(), ("blue", "champion", "prod")]

    def test_alias_needs_an_existing_version(self, registry_store: RegistryStore) -> None:
        """Setting an alias on a missing version or model raises ResourceDoesNotExist."""
        add_versions(registry_store, "churn", 1)
        with pytest.raises(ResourceDoesNotExist):
            registry_store.set_alias("churn", "champion", 7)
        with pytest.raises(ResourceDoesNotExist):
            registry_store.set_alias("nope", "champion", 1)

    @pytest.mark.parametrize("alias", ["", "3", "v3", "V12", "latest", "LATEST", "a/b", "a b"])
    def test_invalid_alias_names(self, registry_store: RegistryStore, alias: str) -> None:
        """Empty, version-like ("3", "v3"), reserved ("latest") and path-like aliases are refused."""
        add_versions(registry_store, "churn", 1)
        with pytest.raises(InvalidParameterValue) as info:
            registry_store.set_alias("churn", alias, 1)
        assert info.value.code == "INVALID_PARAMETER_VALUE"

    @pytest.mark.parametrize("alias", ["champion", "v1a", "prod-1", "x_2"])
    def test_valid_alias_names(self, registry_store: RegistryStore, alias: str) -> None:
        """Aliases of letters, digits, '_' and '-' that do not read as versions are accepted."""
        add_versions(registry_store, "churn", 1)
        registry_store.set_alias("churn", alias, 1)
        assert registry_store.get_version_by_alias("churn", alias).version == 1

    def test_delete_missing_alias_is_a_no_op(self, registry_store: RegistryStore) -> None:
        """Deleting an alias that is not set succeeds; on a missing model it raises ResourceDoesNotExist."""
        registry_store.create_registered_model("churn")
        registry_store.delete_alias("churn", "champion")
        with pytest.raises(ResourceDoesNotExist):
            registry_store.delete_alias("nope", "champion")

    def test_alias_on_missing_model(self, registry_store: RegistryStore) -> None:
        """get_version_by_alias on a missing model names the model."""
        with pytest.raises(ResourceDoesNotExist, match="Registered model 'nope' not found"):
            registry_store.get_version_by_alias("nope", "champion")


class TestResolution:
    def test_serving_precedence(self, registry_store: RegistryStore) -> None:
        """Serving picks the champion alias, else the newest Production version, else the newest version."""
        add_versions(registry_store, "churn", 4)
        assert registry_store.resolve_serving_version("churn").version == 4  # type: ignore[union-attr]
        registry_store.transition_stage("churn", 2, "Production")
        registry_store.transition_stage("churn", 3, "Production")
        assert registry_store.resolve_serving_version("churn").version == 3  # type: ignore[union-attr]
        registry_store.set_alias("churn", "champion", 1)
        champion = registry_store.resolve_serving_version("churn")
        assert champion is not None and champion.version == 1 and champion.aliases == ("champion",)
        registry_store.delete_alias("churn", "champion")
        assert registry_store.resolve_serving_version("churn").version == 3  # type: ignore[union-attr]

    def test_serving_other_aliases_do_not_count(self, registry_store: RegistryStore) -> None:
        """Aliases other than champion and stages other than Production do not change serving."""
        add_versions(registry_store, "churn", 3)
        registry_store.set_alias("churn", "challenger", 1)
        registry_store.transition_stage("churn", 2, "Staging")
        assert registry_store.resolve_serving_version("churn").version == 3  # type: ignore[union-attr]

    def test_serving_without_versions(self, registry_store: RegistryStore) -> None:
        """A model with no versions serves nothing (None); a missing model raises ResourceDoesNotExist."""
        registry_store.create_registered_model("empty")
        assert registry_store.resolve_serving_version("empty") is None
        with pytest.raises(ResourceDoesNotExist):
            registry_store.resolve_serving_version("nope")

    @pytest.mark.parametrize(
        ("ref", "expected"),
        [("2", 2), ("latest", 4), ("champion", 1), ("Production", 3), ("production", 3), ("STAGING", 2)],
    )
    def test_version_refs(self, registry_store: RegistryStore, ref: str, expected: int) -> None:
        """A ref is a version number, "latest", an alias, or a stage name (newest in it, any case)."""
        add_versions(registry_store, "churn", 4)
        registry_store.transition_stage("churn", 1, "Production")
        registry_store.transition_stage("churn", 3, "Production")
        registry_store.transition_stage("churn", 2, "Staging")
        registry_store.set_alias("churn", "champion", 1)
        assert registry_store.resolve_version_ref("churn", ref).version == expected

    @pytest.mark.parametrize("ref", ["9", "0", "Staging", "Archived", "ghost", ""])
    def test_unresolvable_refs(self, registry_store: RegistryStore, ref: str) -> None:
        """A ref that names no version raises ResourceDoesNotExist."""
        add_versions(registry_store, "churn", 2)
        with pytest.raises(ResourceDoesNotExist):
            registry_store.resolve_version_ref("churn", ref)

    def test_alias_wins_over_stage_name(self, registry_store: RegistryStore) -> None:
        """An alias spelled like a stage resolves to the alias's version, not the stage's."""
        add_versions(registry_store, "churn", 2)
        registry_store.transition_stage("churn", 2, "Staging")
        registry_store.set_alias("churn", "staging", 1)
        assert registry_store.resolve_version_ref("churn", "staging").version == 1
        assert registry_store.resolve_version_ref("churn", "Staging").version == 2

    def test_ref_on_missing_model(self, registry_store: RegistryStore) -> None:
        """Resolving a ref of a missing model names the model."""
        with pytest.raises(ResourceDoesNotExist, match="Registered model 'nope' not found"):
            registry_store.resolve_version_ref("nope", "1")


class TestChangeCounter:
    def test_every_mutation_bumps_it_once_and_reads_do_not(self, registry_store: RegistryStore) -> None:
        """Each mutation adds exactly one to the counter; reads leave it unchanged."""
        s = registry_store
        mutations: list[Callable[[], object]] = [
            lambda: s.create_registered_model("churn"),
            lambda: s.create_model_version("churn", SHA_A, SIG),
            lambda: s.create_model_version("churn", SHA_A, SIG),
            lambda: s.transition_stage("churn", 1, "Production", archive_existing=True),
            lambda: s.set_alias("churn", "champion", 2),
            lambda: s.set_alias("churn", "champion", 1),
            lambda: s.delete_alias("churn", "champion"),
        ]
        reads: list[Callable[[], object]] = [
            lambda: s.get_registered_model("churn"),
            s.list_registered_models,
            lambda: s.list_model_versions("churn"),
            lambda: s.get_model_version("churn", 1),
            lambda: s.resolve_serving_version("churn"),
            lambda: s.resolve_version_ref("churn", "latest"),
        ]
        counter = s.change_counter()
        assert counter == 0
        for mutate in mutations:
            mutate()
            assert s.change_counter() == counter + 1
            counter += 1
            for read in reads:
                with contextlib.suppress(ResourceDoesNotExist):  # version 1 does not exist yet after the first step
                    read()
            assert s.change_counter() == counter

    def test_failed_mutations_do_not_bump_it(self, registry_store: RegistryStore) -> None:
        """A mutation that raises leaves the counter where it was."""
        registry_store.create_registered_model("churn")
        counter = registry_store.change_counter()
        failing: list[Callable[[], object]] = [
            lambda: registry_store.create_registered_model("churn"),
            lambda: registry_store.transition_stage("churn", 1, "Production"),
            lambda: registry_store.set_alias("churn", "champion", 1),
            lambda: registry_store.create_model_version("nope", SHA_A, SIG, create_model=False),
        ]
        for mutate in failing:
            with pytest.raises((ResourceDoesNotExist, ResourceAlreadyExists)):
                mutate()
        assert registry_store.change_counter() == counter

    def test_seen_by_another_store_on_the_same_database(self, registry_url: str) -> None:
        """A follower's store sees the counter that a writer's store bumps."""
        writer, follower = RegistryStore(registry_url), RegistryStore(registry_url)
        try:
            before = follower.change_counter()
            writer.create_registered_model("churn")
            assert follower.change_counter() == before + 1
        finally:
            writer.close()
            follower.close()


class TestSchemaCreation:
    def test_reopening_keeps_data(self, registry_url: str) -> None:
        """Opening a second store on an existing database keeps its rows and counter."""
        first = RegistryStore(registry_url)
        first.create_model_version("churn", SHA_A, SIG)
        first.close()
        second = RegistryStore(registry_url)
        try:
            assert [v.version for v in second.list_model_versions("churn")] == [1]
            assert second.change_counter() == 1
        finally:
            second.close()

    def test_concurrent_first_start(self, registry_url: str) -> None:
        """Several stores created at once on an empty database all start, with one counter row."""
        barrier = threading.Barrier(4)

        def open_store(_: int) -> RegistryStore:
            barrier.wait()
            return RegistryStore(registry_url)

        with ThreadPoolExecutor(4) as pool:
            stores = list(pool.map(open_store, range(4)))
        try:
            assert {s.change_counter() for s in stores} == {0}
            stores[0].create_registered_model("churn")
            assert {s.change_counter() for s in stores} == {1}
        finally:
            for store in stores:
                store.close()


class TestUnavailable:
    def test_postgres_on_a_closed_port(self) -> None:
        """An unreachable PostgreSQL raises StoreUnavailable naming the database but not the password."""
        with pytest.raises(StoreUnavailable) as info:
            RegistryStore("postgresql://gateway:s3cret@127.0.0.1:1/registry")
        assert info.value.code == "TEMPORARILY_UNAVAILABLE"
        assert "127.0.0.1:1/registry" in info.value.message
        assert "s3cret" not in info.value.message
        assert isinstance(info.value.__cause__, sa.exc.OperationalError)

    @pytest.mark.parametrize("scheme", ["postgres", "postgresql", "postgresql+psycopg"])
    def test_postgres_url_spellings(self, scheme: str) -> None:
        """postgres://, postgresql:// and postgresql+psycopg:// all reach the psycopg driver."""
        with pytest.raises(StoreUnavailable, match=r"postgresql\+psycopg://"):
            RegistryStore(f"{scheme}://gateway@127.0.0.1:1/registry")

    def test_sqlite_path_is_a_directory(self, tmp_path: Path) -> None:
        """A SQLite path that cannot be opened as a file raises StoreUnavailable naming the path."""
        with pytest.raises(StoreUnavailable) as info:
            RegistryStore(f"sqlite:///{tmp_path}")
        assert str(tmp_path) in info.value.message

    def test_sqlite_parent_is_a_file(self, tmp_path: Path) -> None:
        """A SQLite path whose directory cannot be created raises StoreUnavailable."""
        blocker = tmp_path / "blocker"
        blocker.write_text("not a directory")
        with pytest.raises(StoreUnavailable):
            RegistryStore(f"sqlite:///{blocker / 'sub' / 'registry.db'}")

    def test_sqlite_creates_parent_directories(self, tmp_path: Path) -> None:
        """A SQLite path in directories that do not exist yet gets them created."""
        path = tmp_path / "a" / "b" / "registry.db"
        store = RegistryStore(f"sqlite:///{path}")
        try:
            assert store.change_counter() == 0
            assert path.is_file()
        finally:
            store.close()

    @pytest.mark.parametrize("url", ["mysql://u@h/db", "not a url"])
    def test_unsupported_urls(self, url: str) -> None:
        """A URL that is not SQLite or PostgreSQL raises InvalidParameterValue."""
        with pytest.raises(InvalidParameterValue):
            RegistryStore(url)

    def test_postgres_connection_lost_then_recovers(self, postgres_url: str) -> None:
        """A dropped server connection surfaces as StoreUnavailable, and the next call reconnects."""
        store = RegistryStore(postgres_url)
        admin = sa.create_engine(postgres_url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
        try:
            assert store.change_counter() == 0
            with admin.connect() as conn:
                killed = conn.execute(
                    sa.text(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                    )
                ).scalar_one()
            assert killed >= 1
            with pytest.raises(StoreUnavailable, match="is unavailable"):
                store.change_counter()
            assert store.change_counter() == 0
        finally:
            store.close()
            metadata.drop_all(admin)
            admin.dispose()
