"""The rollout store on SQLite and PostgreSQL: one active rollout per name, a lease only one holder
gets until it expires, driver writes fenced by that lease, and an abort that a driver cannot undo."""

from __future__ import annotations

import time

import pytest

from registry.errors import ResourceAlreadyExists
from registry.rollouts import Change, LeaseLost, RolloutInactive, RolloutStore, holders
from registry.store import RegistryStore

POLICY = {"model": "m", "arms": [{"version": "champion", "weight": 100}], "split": "random", "shadows": []}


@pytest.fixture
def rollouts(registry_store: RegistryStore) -> RolloutStore:
    store = RolloutStore(registry_store)
    store.create("r", "m", {"steps": [50, 100]}, {"step": -1}, "tester")
    return store


class TestRollouts:
    def test_create_refuses_a_second_active_rollout_of_a_name(self, rollouts: RolloutStore) -> None:
        """While "r" is pending, creating "r" again raises and leaves the first as it was."""
        with pytest.raises(ResourceAlreadyExists):
            rollouts.create("r", "m", {"steps": [100]}, {}, "tester")
        record = rollouts.get("r")
        assert (record.status, record.spec) == ("pending", {"steps": [50, 100]})
        assert [r.name for r in rollouts.list_rollouts(active_only=True)] == ["r"]

    def test_only_one_holder_gets_the_lease_until_it_expires(self, rollouts: RolloutStore) -> None:
        """a takes it; b cannot while it is valid; a renews; once it expires b takes it, and a cannot."""
        assert rollouts.acquire("r", "a", ttl_ms=60_000)
        assert not rollouts.acquire("r", "b", ttl_ms=60_000)
        assert rollouts.acquire("r", "a", ttl_ms=1)
        time.sleep(0.01)
        assert rollouts.acquire("r", "b", ttl_ms=60_000)
        assert not rollouts.acquire("r", "a", ttl_ms=60_000)
        lease = rollouts.lease("r")
        assert lease is not None and lease.holder == "b"

    def test_writes_are_fenced_by_the_lease(self, rollouts: RolloutStore, registry_store: RegistryStore) -> None:
        """The holder's step writes the route, state and event in one go; a non-holder writes nothing."""
        assert rollouts.acquire("r", "a", ttl_ms=60_000)
        rollouts.advance("r", "a", 60_000, Change("shadow", {"step": -1}, "start", {"weight": 0}, route_policy=POLICY))
        with pytest.raises(LeaseLost):
            rollouts.advance("r", "b", 60_000, Change("stepping", {"step": 0}, "step", route_policy={**POLICY, "split": "x"}))
        assert rollouts.get("r").status == "shadow"
        assert registry_store.get_route("r").policy == POLICY
        events = rollouts.events("r")
        assert [e.action for e in events] == ["create", "start"]
        assert holders(events) == {"a"}
        assert registry_store.list_audit("r")[0].actor == "rollout:r@a"

    def test_an_abort_wins_over_the_driver(self, rollouts: RolloutStore, registry_store: RegistryStore) -> None:
        """After an abort the lease holder's next step raises RolloutInactive and changes nothing."""
        assert rollouts.acquire("r", "a", ttl_ms=60_000)
        rollouts.advance("r", "a", 60_000, Change("shadow", {"step": -1}, "start", route_policy=POLICY))
        rollouts.abort("r", "op", Change("aborted", {"step": -1}, "abort", delete_route=True))
        with pytest.raises(RolloutInactive):
            rollouts.advance("r", "a", 60_000, Change("stepping", {"step": 0}, "step", route_policy=POLICY))
        assert rollouts.get("r").status == "aborted"
        assert registry_store.list_routes() == []
        assert [e.action for e in rollouts.events("r")] == ["create", "start", "abort"]
        rollouts.create("r", "m", {"steps": [100]}, {}, "tester")  # a finished rollout can be started again
        assert rollouts.get("r").status == "pending"
