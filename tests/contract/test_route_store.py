"""Route policy and audit contract of RegistryStore, written once and run against SQLite and PostgreSQL."""

from __future__ import annotations

import contextlib
import itertools
import json
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from registry.entities import AuditEntry, RouteRecord
from registry.errors import InvalidParameterValue, ResourceDoesNotExist
from registry.schema import route_audit, routes
from registry.store import RegistryStore, normalise_url

CANARY: dict[str, Any] = {
    "strategy": "canary",
    "arms": [
        {"version": "3", "weight": 0.9},
        {"version": "champion", "weight": 0.1, "match": {"headers": {"x-cohort": ["beta", "staff"]}}},
    ],
    "shadow": None,
    "sticky": True,
    "zeta_before_alpha": 1,
    "alpha": -2.5e-10,
    "big": 2**70,
    "text": "caf\u00e9 \u2615 nul\x00 lone\ud800",
    "empty": {"list": [], "dict": {}},
}
FIXED: dict[str, Any] = {"strategy": "fixed", "version": "2"}
POLICY_MAX_BYTES = 64 * 1024
Snapshot = tuple[int, list[RouteRecord], list[AuditEntry]]


def snapshot(store: RegistryStore) -> Snapshot:
    return store.change_counter(), store.list_routes(), store.list_audit(limit=10_000)


class TestRoundTrip:
    def test_put_get_list_delete(self, registry_store: RegistryStore) -> None:
        """A put route reads back equal, nested policy and key order included, then is gone after delete."""
        put = registry_store.put_route("churn-api", "churn", CANARY, "alice")
        got = registry_store.get_route("churn-api")
        assert got == put
        assert (got.name, got.model, got.updated_by, got.policy) == ("churn-api", "churn", "alice", CANARY)
        assert list(got.policy) == list(CANARY)
        assert json.dumps(got.policy) == json.dumps(CANARY)
        assert got.created_ms == got.updated_ms
        assert registry_store.list_routes() == [got]
        registry_store.delete_route("churn-api", "bob")
        assert registry_store.list_routes() == []
        with pytest.raises(ResourceDoesNotExist, match="Route 'churn-api' has no stored policy"):
            registry_store.get_route("churn-api")

    def test_model_need_not_be_registered(self, registry_store: RegistryStore) -> None:
        """A route may name a model the registry does not hold; the gateway validates that."""
        assert (
            registry_store.put_route("r", "not-registered-yet", FIXED, "alice").model == "not-registered-yet"
        )

    def test_list_is_sorted_by_name_in_byte_order(self, registry_store: RegistryStore) -> None:
        """Routes list in byte order on both backends, whatever order they were put in."""
        names = ["b", "B", "a", "a.b", "A-1", "_z"]
        for name in names:
            registry_store.put_route(name, "m", {"route": name}, "alice")
        listed = registry_store.list_routes()
        assert [r.name for r in listed] == sorted(names)
        assert all(r.policy == {"route": r.name} for r in listed)

    def test_stored_policy_is_a_copy(self, registry_store: RegistryStore) -> None:
        """Changing the caller's dict or a to_dict() result after a put changes neither store nor record."""
        policy: dict[str, Any] = {"arms": [{"version": "1"}]}
        put = registry_store.put_route("r", "m", policy, "alice")
        policy["arms"].append({"version": "2"})
        put.to_dict()["policy"]["arms"].clear()
        assert put.policy == {"arms": [{"version": "1"}]}
        assert registry_store.get_route("r").policy == {"arms": [{"version": "1"}]}

    def test_entities_to_dict_are_json_ready(self, registry_store: RegistryStore) -> None:
        """RouteRecord.to_dict and AuditEntry.to_dict hold every field and survive json.dumps/loads."""
        record = registry_store.put_route("r", "m", FIXED, "alice")
        entry = registry_store.list_audit()[0]
        assert json.loads(json.dumps(record.to_dict())) == {
            "name": "r",
            "model": "m",
            "policy": FIXED,
            "created_ms": record.created_ms,
            "updated_ms": record.updated_ms,
            "updated_by": "alice",
        }
        assert json.loads(json.dumps(entry.to_dict())) == {
            "id": entry.id,
            "route": "r",
            "action": "put",
            "actor": "alice",
            "at_ms": entry.at_ms,
            "old_policy": None,
            "new_policy": FIXED,
        }

    def test_policy_at_the_size_limit_is_accepted(self, registry_store: RegistryStore) -> None:
        """A policy whose compact JSON is exactly 64 KiB is stored; one byte more is refused."""
        exact = {"k": "x" * (POLICY_MAX_BYTES - len('{"k":""}'))}
        assert registry_store.put_route("r", "m", exact, "alice").policy == exact
        with pytest.raises(InvalidParameterValue, match="65537 bytes"):
            registry_store.put_route("r", "m", {"k": exact["k"] + "x"}, "alice")


class TestAudit:
    def test_replace_keeps_created_and_audits_old_and_new(self, registry_store: RegistryStore) -> None:
        """A second put replaces policy, model and updated_by, keeps created_ms, and audits old and new."""
        first = registry_store.put_route("r", "m1", FIXED, "alice")
        second = registry_store.put_route("r", "m2", CANARY, "bob")
        assert registry_store.get_route("r") == second
        assert (second.model, second.policy, second.updated_by) == ("m2", CANARY, "bob")
        assert second.created_ms == first.created_ms <= second.updated_ms
        newest, oldest = registry_store.list_audit()
        assert (oldest.action, oldest.actor, oldest.old_policy, oldest.new_policy) == (
            "put",
            "alice",
            None,
            FIXED,
        )
        assert (newest.action, newest.actor, newest.old_policy, newest.new_policy) == (
            "put",
            "bob",
            FIXED,
            CANARY,
        )
        assert newest.id > oldest.id
        assert newest.at_ms == second.updated_ms

    def test_delete_audits_the_old_policy(self, registry_store: RegistryStore) -> None:
        """A delete writes one audit entry with the old policy and no new one."""
        registry_store.put_route("r", "m", CANARY, "alice")
        registry_store.delete_route("r", "bob")
        entry = registry_store.list_audit(limit=1)[0]
        assert (entry.route, entry.action, entry.actor, entry.old_policy, entry.new_policy) == (
            "r",
            "delete",
            "bob",
            CANARY,
            None,
        )
        assert len(registry_store.list_audit()) == 2

    def test_delete_missing_route_writes_nothing(self, registry_store: RegistryStore) -> None:
        """Deleting a route with no policy raises ResourceDoesNotExist and changes neither counter nor audit."""
        registry_store.put_route("r", "m", FIXED, "alice")
        registry_store.delete_route("r", "alice")
        before = snapshot(registry_store)
        for name in ("r", "ghost"):
            with pytest.raises(ResourceDoesNotExist) as info:
                registry_store.delete_route(name, "alice")
            assert info.value.message == f"Route {name!r} has no stored policy"
            assert info.value.code == "RESOURCE_DOES_NOT_EXIST"
        assert snapshot(registry_store) == before

    def test_newest_first_filtered_and_limited(self, registry_store: RegistryStore) -> None:
        """list_audit returns entries newest first, only the given route's when asked, at most `limit`."""
        for n in range(3):
            registry_store.put_route("a", "m", {"n": n}, "alice")
            registry_store.put_route("b", "m", {"n": n}, "bob")
        everything = registry_store.list_audit()
        assert [(e.route, e.new_policy) for e in everything] == [
            (route, {"n": n}) for n in (2, 1, 0) for route in ("b", "a")
        ]
        assert [e.id for e in everything] == sorted((e.id for e in everything), reverse=True)
        only_a = registry_store.list_audit(route="a")
        assert [(e.route, e.new_policy) for e in only_a] == [
            ("a", {"n": 2}),
            ("a", {"n": 1}),
            ("a", {"n": 0}),
        ]
        assert registry_store.list_audit(route="a", limit=2) == only_a[:2]
        assert registry_store.list_audit(limit=1) == everything[:1]
        assert registry_store.list_audit(limit=10_000) == everything
        assert registry_store.list_audit(route="ghost") == []

    def test_default_limit_is_100(self, registry_store: RegistryStore) -> None:
        """Without a limit, list_audit returns the newest 100 entries."""
        for n in range(101):
            registry_store.put_route("r", "m", {"n": n}, "alice")
        entries = registry_store.list_audit()
        assert len(entries) == 100
        assert entries[0].new_policy == {"n": 100} and entries[-1].new_policy == {"n": 1}


class TestChangeCounter:
    def test_puts_and_deletes_bump_it_once_and_reads_do_not(self, registry_store: RegistryStore) -> None:
        """Each route put or delete adds exactly one to the counter; route reads leave it unchanged."""
        s = registry_store
        mutations: list[Callable[[], object]] = [
            lambda: s.put_route("r", "m", FIXED, "alice"),
            lambda: s.put_route("r", "m", CANARY, "alice"),
            lambda: s.put_route("r", "m", CANARY, "alice"),  # an unchanged put is still a change, and audited
            lambda: s.delete_route("r", "alice"),
        ]
        reads: list[Callable[[], object]] = [
            s.list_routes,
            s.list_audit,
            lambda: s.list_audit(route="r", limit=1),
            lambda: s.get_route("r"),
        ]
        counter = s.change_counter()
        for mutate in mutations:
            mutate()
            counter += 1
            assert s.change_counter() == counter
            for read in reads:
                with contextlib.suppress(ResourceDoesNotExist):  # get_route after the delete
                    read()
            assert s.change_counter() == counter
        assert len(s.list_audit()) == len(mutations)


INVALID: list[tuple[str, Callable[[RegistryStore], object]]] = [
    ("empty route name", lambda s: s.put_route("", "m", FIXED, "alice")),
    ("route name with slash", lambda s: s.put_route("a/b", "m", FIXED, "alice")),
    ("route name with space", lambda s: s.put_route("a b", "m", FIXED, "alice")),
    ("route name non-ascii", lambda s: s.put_route("caf\u00e9", "m", FIXED, "alice")),
    ("route name too long", lambda s: s.put_route("x" * 257, "m", FIXED, "alice")),
    ("route name with NUL", lambda s: s.put_route("a\x00b", "m", FIXED, "alice")),
    ("empty model name", lambda s: s.put_route("r", "", FIXED, "alice")),
    ("model name with space", lambda s: s.put_route("r", "a b", FIXED, "alice")),
    ("model name too long", lambda s: s.put_route("r", "x" * 257, FIXED, "alice")),
    ("empty actor", lambda s: s.put_route("r", "m", FIXED, "")),
    ("actor too long", lambda s: s.put_route("r", "m", FIXED, "x" * 257)),
    ("actor with NUL", lambda s: s.put_route("r", "m", FIXED, "al\x00ice")),
    ("policy a list", lambda s: s.put_route("r", "m", [FIXED], "alice")),  # type: ignore[arg-type]
    ("policy a string", lambda s: s.put_route("r", "m", json.dumps(FIXED), "alice")),  # type: ignore[arg-type]
    ("policy None", lambda s: s.put_route("r", "m", None, "alice")),  # type: ignore[arg-type]
    ("policy with NaN", lambda s: s.put_route("r", "m", {"w": float("nan")}, "alice")),
    ("policy with infinity", lambda s: s.put_route("r", "m", {"w": float("inf")}, "alice")),
    ("policy with a set", lambda s: s.put_route("r", "m", {"w": {1, 2}}, "alice")),
    ("policy with int keys", lambda s: s.put_route("r", "m", {1: "a"}, "alice")),  # type: ignore[dict-item]
    ("policy with a tuple", lambda s: s.put_route("r", "m", {"w": (1, 2)}, "alice")),
    ("policy over 64 KiB", lambda s: s.put_route("r", "m", {"k": "x" * POLICY_MAX_BYTES}, "alice")),
    ("delete with invalid name", lambda s: s.delete_route("a/b", "alice")),
    ("delete with empty actor", lambda s: s.delete_route("r", "")),
    ("delete with actor too long", lambda s: s.delete_route("r", "x" * 257)),
    ("audit limit 0", lambda s: s.list_audit(limit=0)),
    ("audit limit negative", lambda s: s.list_audit(limit=-1)),
    ("audit limit 10001", lambda s: s.list_audit(limit=10_001)),
    ("audit of an invalid route name", lambda s: s.list_audit(route="a\x00b")),
]


class TestValidation:
    @pytest.mark.parametrize("call", [call for _, call in INVALID], ids=[label for label, _ in INVALID])
    def test_invalid_input_is_refused_and_changes_nothing(
        self, registry_store: RegistryStore, call: Callable[[RegistryStore], object]
    ) -> None:
        """Invalid names, actors, policies and limits raise InvalidParameterValue; routes, audit and counter stay."""
        registry_store.put_route("r", "m", CANARY, "alice")
        before = snapshot(registry_store)
        with pytest.raises(InvalidParameterValue) as info:
            call(registry_store)
        assert info.value.code == "INVALID_PARAMETER_VALUE"
        assert snapshot(registry_store) == before

    @pytest.mark.parametrize(
        ("call", "message"),
        [
            (lambda s: s.put_route("a/b", "m", FIXED, "alice"), "Invalid route name 'a/b'"),
            (lambda s: s.put_route("", "m", FIXED, "alice"), "Route name cannot be empty"),
            (lambda s: s.put_route("r", "a b", FIXED, "alice"), "Invalid registered model name 'a b'"),
            (lambda s: s.put_route("r", "m", FIXED, "x" * 257), "Actor is longer than 256 characters"),
            (lambda s: s.put_route("r", "m", [], "alice"), "Route policy must be a JSON object, got list"),
            (lambda s: s.list_audit(limit=0), "Audit limit must be between 1 and 10000, got 0"),
        ],
    )
    def test_messages_name_the_thing(
        self, registry_store: RegistryStore, call: Callable[[RegistryStore], object], message: str
    ) -> None:
        """Each refusal names what was wrong: the route or model name, the actor, the policy, the limit."""
        with pytest.raises(InvalidParameterValue) as info:
            call(registry_store)
        assert info.value.message.startswith(message)

    @pytest.mark.parametrize("name", ["x" * 256, "a.b-c_D9", "v1"])
    def test_valid_route_names(self, registry_store: RegistryStore, name: str) -> None:
        """Route names follow model names: up to 256 characters of [A-Za-z0-9_.-]."""
        assert registry_store.put_route(name, "m", FIXED, "a" * 256).name == name
        assert registry_store.list_audit(route=name)[0].actor == "a" * 256


class TestDurability:
    def test_routes_survive_reopening(self, registry_url: str) -> None:
        """Routes, audit and counter written by one store are there for a new store on the same URL."""
        first = RegistryStore(registry_url)
        first.put_route("kept", "m", CANARY, "alice")
        first.put_route("gone", "m", FIXED, "alice")
        first.delete_route("gone", "bob")
        expected = snapshot(first)
        first.close()
        second = RegistryStore(registry_url)
        try:
            assert snapshot(second) == expected
            assert second.get_route("kept").policy == CANARY
            assert [e.action for e in second.list_audit()] == ["delete", "put", "put"]
        finally:
            second.close()

    def test_existing_database_gains_the_route_tables(self, registry_url: str) -> None:
        """Opening a registry created before routes existed adds their tables and keeps its models."""
        first = RegistryStore(registry_url)
        first.create_registered_model("churn")
        first.close()
        engine = sa.create_engine(normalise_url(registry_url), poolclass=NullPool)
        try:
            with engine.begin() as conn:
                route_audit.drop(conn)
                routes.drop(conn)
        finally:
            engine.dispose()
        second = RegistryStore(registry_url)
        try:
            assert [m.name for m in second.list_registered_models()] == ["churn"]
            second.put_route("r", "churn", FIXED, "alice")
            assert second.get_route("r").policy == FIXED
        finally:
            second.close()

    def test_concurrent_puts_each_write_one_audit_entry(self, registry_url: str) -> None:
        """Puts from 4 threads on two stores each write one audit entry, with distinct ids, chained in order."""
        stores = [RegistryStore(registry_url) for _ in range(2)]
        threads, per_thread = 4, 5
        barrier = threading.Barrier(threads)

        def put(i: int) -> None:
            barrier.wait()
            for n in range(per_thread):
                stores[i % len(stores)].put_route("hot", "m", {"thread": i, "n": n}, f"actor-{i}")

        try:
            with ThreadPoolExecutor(threads) as pool:
                list(pool.map(put, range(threads)))
            entries = list(reversed(stores[1].list_audit()))
            assert len(entries) == threads * per_thread
            assert len({e.id for e in entries}) == len(entries)
            written = sorted((e.new_policy["thread"], e.new_policy["n"]) for e in entries if e.new_policy)
            assert written == [(i, n) for i in range(threads) for n in range(per_thread)]
            # Writers serialise on the counter row, so each put saw the policy of the one before it.
            assert entries[0].old_policy is None
            assert all(
                later.old_policy == earlier.new_policy for earlier, later in itertools.pairwise(entries)
            )
            assert stores[0].get_route("hot").policy == entries[-1].new_policy
            assert stores[0].change_counter() == threads * per_thread
        finally:
            for store in stores:
                store.close()
