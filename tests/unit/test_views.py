"""Feature views, feature refs and compiled read plans (pure)."""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
import pytest

from featurestore.codec import FeatureStatus, ReadResult
from featurestore.errors import (
    EntityNotFound,
    InvalidFeatureRequest,
    InvalidFeatureView,
    PlanMismatch,
    UnknownFeature,
    UnknownView,
)
from featurestore.views import Feature, FeatureRef, FeatureView, compile_read_plan

CONTRACT: dict[str, Any] = {
    "entity": "user_id",
    "ttl_seconds": 86400,
    "features": [
        {"name": "age", "dtype": "float32", "default": 0.0},
        {"name": "tenure", "dtype": "int64", "default": -1},
        {"name": "vip", "dtype": "bool", "default": False},
        {"name": "city", "dtype": "string", "default": "unknown"},
    ],
}
USERS = FeatureView.from_dict("user_features", CONTRACT)
TXN = FeatureView.from_dict("txn_features", {"entity": "user_id", "features": [{"name": "avg_amount", "dtype": "float64", "default": 1.5}]})
SHOPS = FeatureView.from_dict("shop_features", {"entity": "shop_id", "features": [{"name": "rating", "dtype": "float32"}]})
VIEWS = {v.name: v for v in (USERS, TXN, SHOPS)}


def with_changes(path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    """The contract example with the item at `path` replaced (or removed when value is ...)."""
    data = copy.deepcopy(CONTRACT)
    target = data
    for step in path[:-1]:
        target = target[step]
    if value is ...:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return data


class TestFeatureView:
    def test_contract_shape_round_trips(self) -> None:
        """from_dict then to_dict gives back the contract shape."""
        assert USERS.to_dict() == CONTRACT
        assert FeatureView.from_dict("user_features", USERS.to_dict()) == USERS

    def test_defaults_take_the_feature_dtype(self) -> None:
        """An int default of a float feature becomes a float; a missing default is the dtype's zero."""
        view = FeatureView.from_dict("v", {"entity": "id", "features": [
            {"name": "a", "dtype": "float64", "default": 3}, {"name": "b", "dtype": "int32"},
            {"name": "c", "dtype": "string"}, {"name": "d", "dtype": "bool"}, {"name": "e", "dtype": "int64", "default": 2.0},
        ]})
        assert [(f.default, type(f.default)) for f in view.features] == [
            (3.0, float), (0, int), ("", str), (False, bool), (2, int)
        ]
        assert view.ttl_seconds == 0

    def test_null_default_of_a_float_is_nan(self) -> None:
        """A null default asks float features for NaN, which serialises back as null."""
        view = FeatureView.from_dict("v", {"entity": "id", "features": [{"name": "a", "dtype": "float32", "default": None}]})
        assert isinstance(view.features[0].default, float) and math.isnan(view.features[0].default)
        assert view.to_dict()["features"] == [{"name": "a", "dtype": "float32", "default": None}]

    def test_description_is_kept(self) -> None:
        """The optional description of a view and of a feature survive a round trip."""
        data = with_changes(("description",), "per-user aggregates")
        data["features"][0]["description"] = "years"
        assert FeatureView.from_dict("v", data).to_dict() == data

    @pytest.mark.parametrize(
        ("path", "value", "message"),
        [
            (("entity",), ..., "entity: required"),
            (("features",), ..., "features: required"),
            (("entity",), 7, "entity: expected a string"),
            (("entity",), "user:id", "entity 'user:id' is not a valid name"),
            (("ttl_seconds",), -1, "ttl_seconds: -1 is not between 0"),
            (("ttl_seconds",), "1d", "ttl_seconds: expected an integer"),
            (("ttl_seconds",), True, "ttl_seconds: expected an integer"),
            (("features",), {}, "features: expected a list"),
            (("features",), [], "features: a view needs at least one feature"),
            (("features", 0), "age", r"features\[0\]: expected an object"),
            (("features", 1, "dtype"), "float16", r"features\[1\].dtype: 'float16' is not one of float32"),
            (("features", 1, "dtype"), ..., r"features\[1\].dtype: required"),
            (("features", 1, "name"), "_ts", r"features\[1\].name: feature name '_ts' is not a valid name"),
            (("features", 1, "name"), "age", r"features\[1\].name: 'age' appears twice"),
            (("features", 1, "name"), "user_id", r"features\[1\].name: 'user_id' is the entity key"),
            (("features", 0, "default"), "zero", r"features\[0\].default: 'zero' is not a float32"),
            (("features", 1, "default"), 1.5, r"features\[1\].default: 1.5 is not a int64"),
            (("features", 1), {"name": "n", "dtype": "int32", "default": 2**40}, r"features\[1\].default: \d+ is out of range for int32"),
            (("features", 2, "default"), 1, r"features\[2\].default: 1 is not a bool"),
            (("features", 3, "default"), None, r"features\[3\].default: None is not a string"),
            (("owner",), "me", "owner: unknown field"),
            (("features", 0, "unit"), "years", r"features\[0\].unit: unknown field"),
        ],
    )
    def test_invalid_definitions_name_the_field(self, path: tuple[Any, ...], value: Any, message: str) -> None:
        """Each invalid definition is rejected with a message naming the view and the field."""
        data = with_changes(path, value)
        with pytest.raises(InvalidFeatureView, match="feature view 'user_features': " + message):
            FeatureView.from_dict("user_features", data)

    @pytest.mark.parametrize("name", ["request", "a:b", "", "9lives", "x" * 129])
    def test_invalid_view_names(self, name: str) -> None:
        """Reserved, empty, colon-bearing, digit-first and overlong view names are rejected."""
        with pytest.raises(InvalidFeatureView):
            FeatureView.from_dict(name, CONTRACT)

    def test_not_an_object(self) -> None:
        """A definition that is not an object is rejected."""
        with pytest.raises(InvalidFeatureView, match="expected an object, got list"):
            FeatureView.from_dict("v", [])

    def test_direct_construction_is_validated(self) -> None:
        """Building a FeatureView in code runs the same checks."""
        with pytest.raises(InvalidFeatureView, match="at least one feature"):
            FeatureView("v", "id", ())
        with pytest.raises(InvalidFeatureView, match="'x'"):
            Feature("x", "int32", "seven")

    def test_feature_lookup(self) -> None:
        """feature() finds by name, and an unknown name lists the view's features."""
        assert USERS.feature("tenure").dtype == "int64"
        with pytest.raises(UnknownFeature, match=r"'user_features' has no feature 'height' \(it has: age, tenure, vip, city\)"):
            USERS.feature("height")


class TestFeatureRef:
    def test_parse(self) -> None:
        """'view:feature' parses into its parts, with Feast's full name view__feature."""
        ref = FeatureRef.parse("user_features:age")
        assert (ref.view, ref.feature, ref.is_request) == ("user_features", "age", False)
        assert str(ref) == "user_features:age" and ref.full_name == "user_features__age"

    def test_request_refs(self) -> None:
        """'request:name' names a value the request supplies."""
        assert FeatureRef.parse("request:amount").is_request

    @pytest.mark.parametrize("text", ["age", ":age", "users:", "a:b:c", ""])
    def test_malformed(self, text: str) -> None:
        """A ref without exactly one view and one feature is rejected, quoting it."""
        with pytest.raises(InvalidFeatureRequest, match="expected 'view:feature'"):
            FeatureRef.parse(text)


DECLARED = ["user_features:age", "txn_features:avg_amount", "request:amount", "user_features:tenure", "shop_features:rating"]


class TestCompileReadPlan:
    def test_groups_reads_by_view_and_keeps_column_order(self) -> None:
        """Each view is read once, with its fields encoded once (+ _ts), landing in declared columns."""
        plan = compile_read_plan(DECLARED, VIEWS)
        assert plan.names == tuple(DECLARED) and plan.width == 5
        assert [(v.view, v.prefix, v.fields, v.columns.tolist()) for v in plan.views] == [
            ("user_features", b"fv:user_features:", (b"age", b"tenure", b"_ts"), [0, 3]),
            ("txn_features", b"fv:txn_features:", (b"avg_amount", b"_ts"), [1]),
            ("shop_features", b"fv:shop_features:", (b"rating", b"_ts"), [4]),
        ]
        assert plan.request_columns == (("amount", 2),)
        assert plan.entities == ("user_id", "shop_id")
        assert plan.views[0].ttl_ms == 86_400_000

    def test_default_vector(self) -> None:
        """The default row holds each feature's default in the row dtype, NaN for request columns."""
        plan = compile_read_plan(DECLARED, VIEWS)
        assert plan.dtype == np.float32 and plan.defaults.dtype == np.float32
        assert plan.defaults[[0, 1, 3, 4]].tolist() == [0.0, 1.5, -1.0, 0.0]
        assert math.isnan(plan.defaults[2])
        assert not plan.defaults.flags.writeable

    def test_row_dtype_can_be_chosen(self) -> None:
        """Rows can be assembled as float64, or as objects that keep strings."""
        assert compile_read_plan(DECLARED, VIEWS, dtype=np.float64).defaults.dtype == np.float64
        plan = compile_read_plan(["user_features:city", "user_features:age"], VIEWS, dtype=object)
        assert plan.defaults.tolist() == ["unknown", 0.0] and type(plan.defaults[1]) is np.float32

    def test_string_feature_in_numeric_rows(self) -> None:
        """A string feature cannot be assembled into float32 rows."""
        with pytest.raises(PlanMismatch, match="'user_features:city' is a string"):
            compile_read_plan(["user_features:city"], VIEWS)

    def test_unknown_view_and_feature(self) -> None:
        """Unknown views and features are named."""
        with pytest.raises(UnknownView, match="no feature view named 'nope'"):
            compile_read_plan(["nope:age"], VIEWS)
        with pytest.raises(UnknownFeature, match="has no feature 'height'"):
            compile_read_plan(["user_features:height"], VIEWS)

    def test_duplicate_ref(self) -> None:
        """A feature declared twice is rejected."""
        with pytest.raises(InvalidFeatureRequest, match="'user_features:age' is listed twice"):
            compile_read_plan(["user_features:age", "user_features:age"], VIEWS)

    def test_lookups_are_view_major(self) -> None:
        """One (key, fields) per (view, entity row): all rows of view 0, then view 1, ..."""
        plan = compile_read_plan(["user_features:age", "shop_features:rating"], VIEWS)
        rows = [{"user_id": 1, "shop_id": "s1"}, {"user_id": "2", "shop_id": 3}]
        assert [key for key, _ in plan.lookups(rows)] == [
            b"fv:user_features:1", b"fv:user_features:2", b"fv:shop_features:s1", b"fv:shop_features:3"
        ]

    def test_lookups_need_every_join_key(self) -> None:
        """A row without a needed join key is rejected, naming the row, the key and its view."""
        plan = compile_read_plan(["user_features:age", "shop_features:rating"], VIEWS)
        with pytest.raises(InvalidFeatureRequest, match=r"instance 1: missing entity key 'shop_id'.*'shop_features'"):
            plan.lookups([{"user_id": 1, "shop_id": 2}, {"user_id": 1}])
        with pytest.raises(InvalidFeatureRequest, match="instance 0, entity key 'user_id'"):
            plan.lookups([{"user_id": None, "shop_id": 2}])

    def test_fill_request(self) -> None:
        """Request features are copied into their columns; absent or non-numeric ones are named."""
        plan = compile_read_plan(["user_features:age", "request:amount"], VIEWS)
        rows = np.repeat(plan.defaults[None, :], 2, axis=0)
        plan.fill_request(rows, [{"amount": 12.5}, {"amount": 3}])
        assert rows.tolist() == [[0.0, 12.5], [0.0, 3.0]]
        with pytest.raises(InvalidFeatureRequest, match="instance 1: missing request feature 'amount'"):
            plan.fill_request(rows, [{"amount": 1}, {}])
        with pytest.raises(InvalidFeatureRequest, match="instance 0, request feature 'amount': 'lots'"):
            plan.fill_request(rows, [{"amount": "lots"}, {"amount": 1}])

    def test_check_found_names_the_entity(self) -> None:
        """check_found raises EntityNotFound for the first entity missing from a view."""
        plan = compile_read_plan(["user_features:age", "txn_features:avg_amount"], VIEWS)
        found = np.array([[True, True], [True, False]])
        result = ReadResult(
            rows=np.zeros((2, 2), np.float32), missing=~found, status=np.full((2, 2), FeatureStatus.PRESENT, np.uint8),
            event_ms=np.zeros((2, 2), np.int64), found=found,
        )
        with pytest.raises(EntityNotFound, match="user_id=42 not found in feature view 'txn_features'"):
            plan.check_found(result, [{"user_id": 1}, {"user_id": 42}])
        found[1, 1] = True
        plan.check_found(result, [{"user_id": 1}, {"user_id": 42}])


class TestCheckAgainst:
    def test_matching_input(self) -> None:
        """A float32 input as wide as the declared list passes, ints and bools included."""
        compile_read_plan(DECLARED, VIEWS).check_against(5, np.float32)
        compile_read_plan(["user_features:vip"], VIEWS).check_against(1, "float32")

    def test_width_mismatch_lists_the_features(self) -> None:
        """A width mismatch says both widths and lists the declared features."""
        with pytest.raises(PlanMismatch, match=r"has 4 columns but 5 features are declared \(user_features:age, txn"):
            compile_read_plan(DECLARED, VIEWS).check_against(4, np.float32)

    def test_dtype_mismatch(self) -> None:
        """Rows assembled in another dtype than the input's are a mismatch."""
        with pytest.raises(PlanMismatch, match="assembled as float32 but the model input is float64"):
            compile_read_plan(DECLARED, VIEWS).check_against(5, np.float64)

    def test_feature_kinds_must_fit_the_input(self) -> None:
        """A float feature cannot feed an int input, nor a string feature a numeric one; all problems are listed."""
        plan = compile_read_plan(["user_features:age", "user_features:tenure"], VIEWS, dtype=np.int64)
        with pytest.raises(PlanMismatch, match="'user_features:age' is float32, which a int64 input cannot take"):
            plan.check_against(2, np.int64)
        objects = compile_read_plan(["user_features:city", "user_features:age"], VIEWS, dtype=object)
        with pytest.raises(PlanMismatch) as info:
            objects.check_against(3, np.float32)
        assert "has 3 columns" in info.value.message and "'user_features:city' is string" in info.value.message
