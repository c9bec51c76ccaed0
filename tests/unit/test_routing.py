"""Route policies: parsing, bucket assignment, arm picks and shadow sampling."""

from __future__ import annotations

import copy
import math
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import numpy as np
import pytest

from gateway.routing import (
    BUCKETS,
    ArmSpec,
    CompiledRoute,
    PolicyError,
    RoutePolicy,
    ShadowSpec,
    assign_buckets,
    bucket_of,
    check_shadows_distinct,
    compile_route,
)

EXAMPLE: dict[str, Any] = {
    "model": "churn_classifier",
    "arms": [{"version": "champion", "weight": 90}, {"version": "4", "weight": 10}],
    "split": "sticky",
    "sticky_key": "user_id",
    "shadows": [
        {"version": "challenger", "sample": 0.5},
        {"url": "http://127.0.0.1:9000/v2/models/x/infer", "sample": 0.1},
    ],
}

N = 100_000
KEYS = [str(i).encode() for i in range(N)]
WEIGHT_SETS = [(90, 10), (50, 50), (70, 20, 10), (1, 99)]


def policy(weights: Sequence[float], split: str = "random", shadows: Sequence[float] = ()) -> RoutePolicy:
    """A policy over arms named v0, v1, ... with these weights, and version shadows s0, s1, ... sampled at these rates."""
    spec: dict[str, Any] = {
        "model": "m",
        "arms": [{"version": f"v{i}", "weight": w} for i, w in enumerate(weights)],
        "split": split,
        "shadows": [{"version": f"s{i}", "sample": rate} for i, rate in enumerate(shadows)],
    }
    if split == "sticky":
        spec["sticky_key"] = "user_id"
    return RoutePolicy.parse(spec)


def route(
    weights: Sequence[float], split: str = "random", shadows: Sequence[float] = ()
) -> CompiledRoute[str, str]:
    """A compiled route whose arm targets are the arm labels and shadow targets s0, s1, ..."""
    p = policy(weights, split, shadows)
    return compile_route("r", p, [a.version for a in p.arms], [f"s{i}" for i in range(len(shadows))])


def sticky_picks(compiled: CompiledRoute[str, str]) -> list[int]:
    """The arm of each of the N test keys."""
    return [compiled.pick(key, 0.0) for key in KEYS]


def edited(change: Callable[[dict[str, Any]], object]) -> dict[str, Any]:
    """A deep copy of EXAMPLE with `change` applied."""
    spec = copy.deepcopy(EXAMPLE)
    change(spec)
    return spec


class TestParse:
    def test_accepts_example(self) -> None:
        """The documented example parses into the matching specs."""
        p = RoutePolicy.parse(EXAMPLE)
        assert p.model == "churn_classifier"
        assert p.arms == (ArmSpec("champion", 90.0), ArmSpec("4", 10.0))
        assert p.split == "sticky"
        assert p.sticky_key == "user_id"
        assert p.shadows == (
            ShadowSpec("challenger", None, 0.5),
            ShadowSpec(None, "http://127.0.0.1:9000/v2/models/x/infer", 0.1),
        )

    def test_round_trips(self) -> None:
        """to_dict() gives back the example, and parsing that gives the same policy."""
        p = RoutePolicy.parse(EXAMPLE)
        assert p.to_dict() == EXAMPLE
        assert RoutePolicy.parse(p.to_dict()) == p

    def test_defaults(self) -> None:
        """split defaults to random, shadows to none, and to_dict writes both out."""
        p = RoutePolicy.parse({"model": "m", "arms": [{"version": "1", "weight": 1}]})
        assert p.split == "random"
        assert p.sticky_key is None
        assert p.shadows == ()
        assert p.to_dict() == {
            "model": "m",
            "arms": [{"version": "1", "weight": 1}],
            "split": "random",
            "shadows": [],
        }

    def test_integer_version_becomes_string(self) -> None:
        """A version given as a JSON number is kept as its string reference."""
        p = RoutePolicy.parse({"model": "m", "arms": [{"version": 4, "weight": 2.5}]})
        assert p.arms == (ArmSpec("4", 2.5),)
        assert p.to_dict()["arms"] == [{"version": "4", "weight": 2.5}]

    def test_zero_weight_arm_allowed(self) -> None:
        """An arm may have weight 0 as long as another arm has weight."""
        assert policy((0, 1)).arms[0].weight == 0.0

    @pytest.mark.parametrize(
        ("spec", "message"),
        [
            ([], r"^policy: must be an object$"),
            ("{}", r"^policy: must be an object$"),
            (edited(lambda s: s.update(weights=[])), r"^policy: unknown field 'weights'"),
            (edited(lambda s: s.pop("model")), r"^model: must be a non-empty string$"),
            (edited(lambda s: s.update(model="")), r"^model: must be a non-empty string$"),
            (edited(lambda s: s.update(model=3)), r"^model: must be a non-empty string$"),
            (edited(lambda s: s.pop("arms")), r"^arms: must be a non-empty list$"),
            (edited(lambda s: s.update(arms=[])), r"^arms: must be a non-empty list$"),
            (
                edited(lambda s: s.update(arms={"version": "1", "weight": 1})),
                r"^arms: must be a non-empty list$",
            ),
            (
                edited(lambda s: s.update(arms=[{"version": str(i), "weight": 1} for i in range(17)])),
                r"^arms: at most 16 arms, got 17$",
            ),
            (edited(lambda s: s["arms"].__setitem__(0, "champion")), r"^arms\[0\]: must be an object$"),
            (edited(lambda s: s["arms"][0].update(weigth=1)), r"^arms\[0\]: unknown field 'weigth'"),
            (edited(lambda s: s["arms"][1].update(weight=-1)), r"^arms\[1\]\.weight: must be a number >= 0$"),
            (
                edited(lambda s: s["arms"][1].update(weight="10")),
                r"^arms\[1\]\.weight: must be a number >= 0$",
            ),
            (
                edited(lambda s: s["arms"][1].update(weight=True)),
                r"^arms\[1\]\.weight: must be a number >= 0$",
            ),
            (
                edited(lambda s: s["arms"][1].update(weight=None)),
                r"^arms\[1\]\.weight: must be a number >= 0$",
            ),
            (edited(lambda s: s["arms"][1].pop("weight")), r"^arms\[1\]\.weight: must be a number >= 0$"),
            (
                edited(lambda s: s["arms"][1].update(weight=math.nan)),
                r"^arms\[1\]\.weight: must be a number >= 0$",
            ),
            (
                edited(lambda s: s["arms"][1].update(weight=math.inf)),
                r"^arms\[1\]\.weight: must be a number >= 0$",
            ),
            (edited(lambda s: s["arms"][0].update(version="")), r"^arms\[0\]\.version: must be"),
            (edited(lambda s: s["arms"][0].pop("version")), r"^arms\[0\]\.version: must be"),
            (edited(lambda s: s["arms"][0].update(version=True)), r"^arms\[0\]\.version: must be"),
            (edited(lambda s: s["arms"][0].update(version=1.5)), r"^arms\[0\]\.version: must be"),
            (edited(lambda s: s["arms"][1].update(version="champion")), r"^arms\[1\]\.version: .*arms\[0\]$"),
            (
                edited(lambda s: [arm.update(weight=0) for arm in s["arms"]]),
                r"^arms: weights must not all be zero$",
            ),
            (edited(lambda s: s.update(split="canary")), r"^split: must be 'random' or 'sticky'"),
            (edited(lambda s: s.pop("sticky_key")), r"^sticky_key: required when split is 'sticky'$"),
            (edited(lambda s: s.update(sticky_key=None)), r"^sticky_key: required when split is 'sticky'$"),
            (edited(lambda s: s.update(sticky_key="")), r"^sticky_key: must be a non-empty string$"),
            (edited(lambda s: s.update(sticky_key=7)), r"^sticky_key: must be a non-empty string$"),
            (edited(lambda s: s.update(shadows={})), r"^shadows: must be a list$"),
            (edited(lambda s: s["shadows"].__setitem__(0, 0.5)), r"^shadows\[0\]: must be an object$"),
            (
                edited(lambda s: s["shadows"][0].update(url="http://h/infer")),
                r"^shadows\[0\]: give exactly one of 'version' or 'url'$",
            ),
            (
                edited(lambda s: s["shadows"][0].pop("version")),
                r"^shadows\[0\]: give exactly one of 'version' or 'url'$",
            ),
            (
                edited(lambda s: s["shadows"][0].update(sample=1.5)),
                r"^shadows\[0\]\.sample: must be between 0 and 1$",
            ),
            (
                edited(lambda s: s["shadows"][0].update(sample=-0.1)),
                r"^shadows\[0\]\.sample: must be between 0 and 1$",
            ),
            (
                edited(lambda s: s["shadows"][0].update(sample="0.5")),
                r"^shadows\[0\]\.sample: must be between 0 and 1$",
            ),
            (
                edited(lambda s: s["shadows"][0].update(sample=True)),
                r"^shadows\[0\]\.sample: must be between 0 and 1$",
            ),
            (
                edited(lambda s: s["shadows"][0].pop("sample")),
                r"^shadows\[0\]\.sample: must be between 0 and 1$",
            ),
            (
                edited(lambda s: s["shadows"][1].update(url="ftp://h/x")),
                r"^shadows\[1\]\.url: must be an http\(s\) URL$",
            ),
            (
                edited(lambda s: s["shadows"][1].update(url="not a url")),
                r"^shadows\[1\]\.url: must be an http\(s\) URL$",
            ),
            (
                edited(lambda s: s["shadows"][1].update(url="http://")),
                r"^shadows\[1\]\.url: must be an http\(s\) URL$",
            ),
            (
                edited(lambda s: s["shadows"][1].update(url="http://[::1/x")),
                r"^shadows\[1\]\.url: must be an http\(s\) URL$",
            ),
            (
                edited(lambda s: s["shadows"][1].update(url=5)),
                r"^shadows\[1\]\.url: must be an http\(s\) URL$",
            ),
            (
                edited(lambda s: s["shadows"][0].update(version="champion")),
                r"^shadows\[0\]: version 'champion' is already a primary arm$",
            ),
            (
                edited(lambda s: s["shadows"].append({"version": "challenger", "sample": 1})),
                r"^shadows\[2\]: duplicates shadows\[0\]$",
            ),
            (edited(lambda s: s["shadows"][0].update(weight=1)), r"^shadows\[0\]: unknown field 'weight'"),
        ],
    )
    def test_refuses(self, spec: object, message: str) -> None:
        """Each invalid policy raises PolicyError whose message names the field and the reason."""
        with pytest.raises(PolicyError, match=message):
            RoutePolicy.parse(spec)

    def test_policy_error_is_value_error(self) -> None:
        """Callers that catch ValueError also catch PolicyError."""
        assert issubclass(PolicyError, ValueError)


class TestCheckShadowsDistinct:
    def test_distinct_passes(self) -> None:
        """Shadows on versions no arm serves, and URL shadows, are accepted."""
        check_shadows_distinct(RoutePolicy.parse(EXAMPLE), [3, 4], [5, None])

    def test_shadow_on_primary_version(self) -> None:
        """A shadow that resolves to an arm's version is refused, naming the shadow and the version."""
        with pytest.raises(PolicyError, match=r"^shadows\[0\]: version 4 is already a primary arm$"):
            check_shadows_distinct(RoutePolicy.parse(EXAMPLE), [3, 4], [4, None])

    def test_two_shadows_on_one_version(self) -> None:
        """Two shadows that resolve to the same version are refused."""
        p = policy((1,), shadows=(0.5, 0.5))
        with pytest.raises(PolicyError, match=r"^shadows\[1\]: version 7 is already shadows\[0\]$"):
            check_shadows_distinct(p, [1], [7, 7])


class TestBucketOf:
    @pytest.mark.parametrize(("key", "bucket"), [(b"", 9876), (b"user-1", 3768), (b"42", 1738)])
    def test_stable(self, key: bytes, bucket: int) -> None:
        """Known keys map to the buckets computed once, in another process."""
        assert bucket_of(key) == bucket

    def test_in_range(self) -> None:
        """Every bucket lies in [0, BUCKETS) and nearly all buckets are used."""
        buckets = {bucket_of(key) for key in KEYS}
        assert min(buckets) >= 0
        assert max(buckets) < BUCKETS
        assert len(buckets) > 0.99 * BUCKETS


class TestAssignBuckets:
    @pytest.mark.parametrize(
        ("weights", "sizes"),
        [
            ((90, 10), [9000, 1000]),
            ((50, 50), [5000, 5000]),
            ((70, 20, 10), [7000, 2000, 1000]),
            ((1, 99), [100, 9900]),
            ((1, 1, 1), [3333, 3334, 3333]),
            ((0.3, 0.7), [3000, 7000]),
        ],
    )
    def test_contiguous_ranges_by_share(self, weights: tuple[float, ...], sizes: list[int]) -> None:
        """Each arm owns one contiguous range, in arm order, sized by its rounded share."""
        table = assign_buckets(weights)
        assert len(table) == BUCKETS
        expected: list[int] = []
        for arm, size in enumerate(sizes):
            expected += [arm] * size
        assert list(table) == expected

    @pytest.mark.parametrize("weights", [(0, 50, 0, 50), (0, 1), (1, 0), (1, 0, 0, 1)])
    def test_zero_weight_gets_nothing(self, weights: tuple[float, ...]) -> None:
        """Zero-weight arms own no bucket."""
        owners = set(assign_buckets(weights))
        assert owners == {i for i, w in enumerate(weights) if w > 0}

    def test_weight_change_moves_only_the_boundary(self) -> None:
        """90/10 -> 80/20 moves exactly the buckets between 8000 and 9000, from arm 0 to arm 1."""
        before, after = assign_buckets((90, 10)), assign_buckets((80, 20))
        moved = [b for b in range(BUCKETS) if before[b] != after[b]]
        assert moved == list(range(8000, 9000))
        assert all(before[b] == 0 and after[b] == 1 for b in moved)

    @pytest.mark.parametrize("weights", [(), (0, 0), (-1, 2), (math.nan, 1), (math.inf, 1)])
    def test_refuses_invalid(self, weights: tuple[float, ...]) -> None:
        """Weights that cannot be split raise ValueError."""
        with pytest.raises(ValueError, match="weights must"):
            assign_buckets(weights)


class TestCompileRoute:
    def test_holds_compiled_form(self) -> None:
        """The compiled route keeps targets, labels, normalized cumulative weights and shadow rates."""
        p = RoutePolicy.parse(EXAMPLE)
        compiled = compile_route("churn", p, ["A", "B"], ["C", "D"])
        assert compiled.name == "churn"
        assert compiled.policy is p
        assert compiled.arms == ("A", "B")
        assert compiled.arm_labels == ("champion", "4")
        assert compiled.cumulative == pytest.approx((0.9, 1.0))
        assert compiled.shadows == ("C", "D")
        assert compiled.shadow_samples == (0.5, 0.1)
        assert compiled.split == "sticky"
        assert compiled.sticky_key == "user_id"
        assert compiled.buckets == bytes(assign_buckets((90, 10)))

    @pytest.mark.parametrize("weights", [(0.1, 0.2, 0.3, 0.4), (1, 1, 1), (0.7, 0.1, 0.1, 0.1), (5, 0, 0)])
    def test_cumulative_ends_at_one(self, weights: tuple[float, ...]) -> None:
        """Cumulative weights rise monotonically and end at exactly 1.0, whatever the float error."""
        cumulative = route(weights).cumulative
        assert cumulative[-1] == 1.0
        assert list(cumulative) == sorted(cumulative)

    @pytest.mark.parametrize(
        ("arms", "shadows"), [(["A"], ["C", "D"]), (["A", "B", "X"], ["C", "D"]), (["A", "B"], [])]
    )
    def test_refuses_misaligned_targets(self, arms: list[str], shadows: list[str]) -> None:
        """Targets that do not align with the policy's arms and shadows raise ValueError."""
        with pytest.raises(ValueError, match="'churn'"):
            compile_route("churn", RoutePolicy.parse(EXAMPLE), arms, shadows)

    def test_repr_omits_bucket_table(self) -> None:
        """The repr stays readable: the 10,000-entry bucket table is left out."""
        assert "buckets" not in repr(route((1, 1)))


class TestPickRandom:
    @pytest.mark.parametrize("weights", [*WEIGHT_SETS, (50, 0, 50), (0, 30, 70), (40, 60, 0)])
    def test_shares_follow_weights(self, weights: tuple[float, ...]) -> None:
        """Over 100,000 seeded draws each arm's share is within 1 point of its weight; zero-weight arms get none."""
        compiled = route(weights)
        rng = np.random.default_rng(20240601)
        counts = Counter(compiled.pick(None, float(u)) for u in rng.random(N))
        total = sum(weights)
        for arm, weight in enumerate(weights):
            assert abs(counts[arm] / N - weight / total) < 0.01
            if weight == 0:
                assert counts[arm] == 0

    @pytest.mark.parametrize(
        ("weights", "u", "arm"),
        [
            ((0, 1), 0.0, 1),
            ((1, 0), 0.999999, 0),
            ((1, 0), 1.0, 0),
            ((1, 0, 1), 0.5, 2),
            ((1, 0, 1), 0.4999, 0),
            ((90, 10), 0.0, 0),
            ((90, 10), 0.95, 1),
        ],
    )
    def test_edges_skip_zero_weight(self, weights: tuple[float, ...], u: float, arm: int) -> None:
        """Draws at the range edges land on an arm with weight."""
        assert route(weights).pick(None, u) == arm

    def test_ignores_key(self) -> None:
        """A random split uses the draw even when a key is given."""
        compiled = route((50, 50))
        assert {compiled.pick(b"user-1", u) for u in (0.1, 0.9)} == {0, 1}


class TestPickSticky:
    def test_same_key_same_arm(self) -> None:
        """A key gets the same arm whatever the draw."""
        compiled = route((50, 50), "sticky")
        for key in KEYS[:200]:
            assert len({compiled.pick(key, u) for u in (0.0, 0.3, 0.7, 0.999)}) == 1

    def test_no_key_falls_back_to_draw(self) -> None:
        """Without a key a sticky route splits by the draw."""
        compiled = route((50, 50), "sticky")
        assert compiled.pick(None, 0.1) == 0
        assert compiled.pick(None, 0.9) == 1

    @pytest.mark.parametrize("weights", [*WEIGHT_SETS, (50, 0, 50)])
    def test_keys_spread_by_weight(self, weights: tuple[float, ...]) -> None:
        """Keys 0..99,999 spread within 1 point of the weights; zero-weight arms get none."""
        counts = Counter(sticky_picks(route(weights, "sticky")))
        total = sum(weights)
        for arm, weight in enumerate(weights):
            assert abs(counts[arm] / N - weight / total) < 0.01
            if weight == 0:
                assert counts[arm] == 0

    def test_weight_change_moves_few_keys(self) -> None:
        """90/10 -> 80/20 moves 9-11% of keys, all from arm 0 to arm 1."""
        before = sticky_picks(route((90, 10), "sticky"))
        after = sticky_picks(route((80, 20), "sticky"))
        moved = [(a, b) for a, b in zip(before, after, strict=True) if a != b]
        assert 0.09 * N <= len(moved) <= 0.11 * N
        assert set(moved) == {(0, 1)}

    @pytest.mark.parametrize(
        ("old", "new"), [((50, 50), (50, 50)), ((90, 10), (90, 10, 0)), ((90, 10), (9, 1))]
    )
    def test_equivalent_weights_move_nothing(self, old: tuple[float, ...], new: tuple[float, ...]) -> None:
        """Recompiling the same shares, or adding a zero-weight arm, moves no key."""
        assert sticky_picks(route(old, "sticky")) == sticky_picks(route(new, "sticky"))


class TestSampledShadows:
    def test_rates_respected(self) -> None:
        """Over 100,000 seeded draws each shadow is chosen at its sample rate, within 1 point."""
        rates = (0.5, 0.1, 0.0, 1.0, 0.95)
        compiled = route((1,), shadows=rates)
        rng = np.random.default_rng(7)
        counts: Counter[str] = Counter()
        for us in rng.random((N, len(rates))):
            counts.update(compiled.sampled_shadows(us.tolist()))
        for i, rate in enumerate(rates):
            assert abs(counts[f"s{i}"] / N - rate) < 0.01
        assert counts["s2"] == 0
        assert counts["s3"] == N

    def test_order_kept(self) -> None:
        """Chosen shadows come back in policy order."""
        compiled = route((1,), shadows=(1.0, 1.0, 1.0))
        assert compiled.sampled_shadows([0.5, 0.1, 0.9]) == ["s0", "s1", "s2"]

    def test_no_shadows(self) -> None:
        """A route without shadows mirrors nothing."""
        assert route((1,)).sampled_shadows(()) == []

    def test_draws_must_align(self) -> None:
        """One draw per shadow is required; a short list raises ValueError."""
        with pytest.raises(ValueError):
            route((1,), shadows=(0.5, 0.5)).sampled_shadows([0.1])


class TestFeatureAndDriftPolicy:
    BASE: ClassVar[dict[str, object]] = {"model": "m", "arms": [{"version": "1", "weight": 1}]}

    def test_defaults_serve_missing_entities_and_fail_on_store_errors(self) -> None:
        """Without a features block: missing entities get defaults, a store outage is a 503."""
        policy = RoutePolicy.parse(self.BASE)
        assert (policy.features.missing_entity, policy.features.on_store_error) == ("default", "error")
        assert "features" not in policy.to_dict() and "drift" not in policy.to_dict()

    @pytest.mark.parametrize(
        "extra",
        [
            {"features": {"missing_entity": "error", "on_store_error": "default"}},
            {"drift": {"window_requests": 500}},
            {"drift": {"window_seconds": 2.5}},
        ],
    )
    def test_round_trip(self, extra: dict[str, object]) -> None:
        """features and drift blocks survive parse -> to_dict unchanged."""
        spec = {**self.BASE, **extra}
        assert {k: v for k, v in RoutePolicy.parse(spec).to_dict().items() if k in extra} == extra

    @pytest.mark.parametrize(
        ("extra", "field"),
        [
            ({"features": {"missing_entity": "ignore"}}, "features.missing_entity"),
            ({"features": {"on_store_error": 1}}, "features.on_store_error"),
            ({"features": {"nope": 1}}, "features"),
            ({"drift": {"window_requests": 0}}, "drift.window_requests"),
            ({"drift": {"window_requests": 2.5}}, "drift.window_requests"),
            ({"drift": {"window_seconds": -1}}, "drift.window_seconds"),
            ({"drift": {"window_requests": 5, "window_seconds": 5}}, "drift"),
            ({"drift": []}, "drift"),
        ],
    )
    def test_invalid_blocks_name_the_field(self, extra: dict[str, object], field: str) -> None:
        """Bad features/drift blocks raise PolicyError naming the field."""
        with pytest.raises(PolicyError, match=field.replace(".", r"\.")):
            RoutePolicy.parse({**self.BASE, **extra})
