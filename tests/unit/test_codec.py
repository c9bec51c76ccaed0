"""The online store codec: key layout, packed values, and decoding HMGET replies into rows (pure)."""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

import numpy as np
import pytest

from featurestore.codec import (
    NULL,
    TS_FIELD,
    FeatureStatus,
    ReadResult,
    encode_rows,
    encode_value,
    entity_token,
    key_ttl_ms,
    to_epoch_ms,
    value_decoder,
    view_key_prefix,
)
from featurestore.errors import InvalidFeatureRequest
from featurestore.views import Feature, FeatureView, ReadPlan, compile_read_plan

USERS = FeatureView(
    "users",
    "user_id",
    (
        Feature("age", "float32", -1.0),
        Feature("visits", "int64", 0),
        Feature("vip", "bool", False),
        Feature("score", "float64", 0.5),
        Feature("city", "string", "?"),
    ),
    ttl_seconds=60,
)
NUMERIC = ["users:age", "users:visits", "users:vip", "users:score"]
PRESENT, NOT_FOUND, NULL_VALUE, STALE = (int(s) for s in FeatureStatus)


def hmget(hashes: Mapping[bytes, Mapping[bytes, bytes]], plan: ReadPlan, rows: Sequence[Mapping[str, object]]) -> list[list[bytes | None]]:
    """What Redis answers to the plan's HMGETs over these hashes."""
    return [[hashes.get(key, {}).get(f) for f in fields] for key, fields in plan.lookups(rows)]


def store(*rows: Mapping[str, object], now_ms: int = 1_000, view: FeatureView = USERS) -> dict[bytes, dict[bytes, bytes]]:
    return {key: dict(zip(flat[::2], flat[1::2], strict=True)) for key, flat in encode_rows(view, rows, now_ms)}


def read(hashes: Mapping[bytes, Mapping[bytes, bytes]], refs: Sequence[str], ids: Sequence[object], now_ms: int = 2_000, dtype: object = np.float32) -> ReadResult:
    plan = compile_read_plan(refs, {"users": USERS}, dtype=dtype)  # type: ignore[arg-type]
    rows = [{"user_id": i} for i in ids]
    return plan.decode(hmget(hashes, plan, rows), len(rows), now_ms)


class TestKeys:
    def test_layout(self) -> None:
        """A key is b"fv:{view}:{entity}"."""
        assert view_key_prefix("users") + entity_token(42) == b"fv:users:42"

    @pytest.mark.parametrize("value", [42, "42", 42.0, np.int64(42), b"42"])
    def test_equivalent_entity_values(self, value: object) -> None:
        """An integer, an integral float, a string and bytes naming the same entity give one token."""
        assert entity_token(value) == b"42"

    @pytest.mark.parametrize("value", [True, None, 1.5, "", math.nan, [1], {"a": 1}])
    def test_rejected_entity_values(self, value: object) -> None:
        """Bools, None, fractional floats, empty strings and containers are not entity keys."""
        with pytest.raises(ValueError, match="entity key"):
            entity_token(value)


class TestValues:
    @pytest.mark.parametrize(
        ("dtype", "value", "width"),
        [("float32", 1.5, 4), ("float64", 0.1, 8), ("int32", -7, 4), ("int64", 2**62, 8), ("bool", True, 1), ("bool", False, 1)],
    )
    def test_numbers_pack_to_their_width_and_round_trip(self, dtype: str, value: object, width: int) -> None:
        """A number packs little-endian to its dtype's width and decodes to the same value."""
        raw = encode_value(dtype, value)
        assert len(raw) == width
        assert value_decoder(dtype, as_numpy_scalar=False)(raw) == value

    def test_strings_are_utf8(self) -> None:
        """A string is stored as its UTF-8 bytes."""
        assert encode_value("string", "Zürich") == "Zürich".encode()
        assert value_decoder("string", as_numpy_scalar=False)("Zürich".encode()) == "Zürich"

    def test_numpy_scalars_keep_the_feature_type(self) -> None:
        """With as_numpy_scalar a float32 decodes to np.float32 (whose JSON form stays short)."""
        value = value_decoder("float32", as_numpy_scalar=True)(encode_value("float32", 0.1))
        assert type(value) is np.float32 and value == np.float32(0.1)

    @pytest.mark.parametrize("dtype", ["float32", "float64", "int32", "int64", "bool", "string"])
    def test_none_is_null(self, dtype: str) -> None:
        """None packs to the NULL marker for every dtype."""
        assert encode_value(dtype, None) == NULL

    def test_null_never_collides_with_a_value(self) -> None:
        """No bool, empty string or number packs to the NULL marker."""
        packed = [encode_value("bool", True), encode_value("bool", False), encode_value("string", ""),
                  encode_value("float32", 0.0), encode_value("int64", -1)]
        assert NULL not in packed
        with pytest.raises(UnicodeDecodeError):
            NULL.decode()

    @pytest.mark.parametrize(
        ("dtype", "value", "reason"),
        [
            ("float32", "1.5", "not a number"),
            ("float32", 1e39, "out of range"),
            ("float64", True, "not a number"),
            ("int64", 1.5, "not an integer"),
            ("int64", False, "not a number"),
            ("int32", 2**31, "out of range"),
            ("bool", 2, "not a bool"),
            ("bool", "true", "not a bool"),
            ("string", 3, "not a string"),
        ],
    )
    def test_bad_values_name_the_reason(self, dtype: str, value: object, reason: str) -> None:
        """A value of the wrong type or range is a ValueError saying why."""
        with pytest.raises(ValueError, match=reason):
            encode_value(dtype, value)

    def test_integral_floats_are_integers(self) -> None:
        """2.0 for an int64 feature packs as the integer 2 (JSON and pandas produce such floats)."""
        assert encode_value("int64", 2.0) == struct.pack("<q", 2)

    def test_wrong_width_is_rejected_on_decode(self) -> None:
        """Bytes of another width (a dtype changed after writing) raise ValueError."""
        with pytest.raises(ValueError, match="do not hold a float64"):
            value_decoder("float64", as_numpy_scalar=False)(encode_value("float32", 1.0))


class TestTimestamps:
    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            ("1970-01-01T00:00:01Z", 1000),
            ("1970-01-01T00:00:01", 1000),
            ("1970-01-01T01:00:01+01:00", 1000),
            ("1970-01-01T00:00:01.5", 1500),
            (datetime(1970, 1, 1, 0, 0, 2, tzinfo=UTC), 2000),
            (datetime(1970, 1, 1, 0, 0, 2), 2000),
            (1234, 1234),
        ],
    )
    def test_event_times_become_epoch_ms(self, value: object, expected: int) -> None:
        """ISO strings (naive = UTC), datetimes and epoch ms all give epoch milliseconds."""
        assert to_epoch_ms(value) == expected

    @pytest.mark.parametrize("value", ["yesterday", 1.5, True, None])
    def test_other_values_are_rejected(self, value: object) -> None:
        """Anything else is a ValueError."""
        with pytest.raises(ValueError, match="timestamp"):
            to_epoch_ms(value)

    def test_key_ttl_outlives_the_view_ttl(self) -> None:
        """Redis keeps a key twice the view's TTL, and forever for a view without one."""
        assert key_ttl_ms(60) == 120_000
        assert key_ttl_ms(0) == 0


class TestEncodeRows:
    def test_one_hash_per_entity_with_a_timestamp(self) -> None:
        """A row becomes one key with a field per feature plus _ts (the write time by default)."""
        [(key, flat)] = encode_rows(USERS, [{"user_id": 7, "age": 31.0, "visits": 3, "vip": True, "score": 0.25, "city": "Oslo"}], 5_000)
        fields = dict(zip(flat[::2], flat[1::2], strict=True))
        assert key == b"fv:users:7"
        assert list(fields) == [b"age", b"visits", b"vip", b"score", b"city", TS_FIELD]
        assert fields[b"age"] == struct.pack("<f", 31.0)
        assert fields[TS_FIELD] == struct.pack("<q", 5_000)

    def test_event_timestamp_overrides_the_write_time(self) -> None:
        """A row's event_timestamp is stored as _ts."""
        [(_, flat)] = encode_rows(USERS, [{"user_id": 7, "event_timestamp": "1970-01-01T00:00:03Z"}], 5_000)
        assert flat[-1] == struct.pack("<q", 3_000)

    def test_absent_features_are_written_as_null(self) -> None:
        """A feature missing from the row is stored as NULL: a write replaces the entity's state."""
        [(_, flat)] = encode_rows(USERS, [{"user_id": 7, "age": 1.0}], 0)
        assert dict(zip(flat[::2], flat[1::2], strict=True))[b"city"] == NULL

    def test_missing_entity_names_the_row(self) -> None:
        """A row without the join key is rejected, naming the row and the key."""
        with pytest.raises(InvalidFeatureRequest, match="row 1: missing entity key 'user_id'"):
            encode_rows(USERS, [{"user_id": 1}, {"age": 2.0}], 0)

    def test_bad_value_names_row_and_column(self) -> None:
        """A value of the wrong type is rejected, naming the row, the column and its dtype."""
        with pytest.raises(InvalidFeatureRequest, match=r"row 0, column 'visits' \(int64\): 'many' is not a number"):
            encode_rows(USERS, [{"user_id": 1, "visits": "many"}], 0)


class TestDecode:
    def test_present_values_fill_the_row(self) -> None:
        """Stored values land in their plan columns with status PRESENT and the stored event time."""
        hashes = store({"user_id": 1, "age": 30.0, "visits": 4, "vip": True, "score": 0.75})
        result = read(hashes, NUMERIC, [1])
        assert result.rows.tolist() == [[30.0, 4.0, 1.0, 0.75]]
        assert result.rows.dtype == np.float32
        assert not result.missing.any() and (result.status == PRESENT).all()
        assert result.event_ms.tolist() == [[1_000]] and result.found.tolist() == [[True]]

    def test_missing_entity_gets_defaults(self) -> None:
        """An entity with no hash gets the defaults, NOT_FOUND, event time 0 and found False."""
        result = read({}, NUMERIC, [9])
        assert result.rows.tolist() == [[-1.0, 0.0, 0.0, 0.5]]
        assert (result.status == NOT_FOUND).all() and result.missing.all()
        assert result.event_ms.tolist() == [[0]] and result.found.tolist() == [[False]]
        assert result.defaulted == 4

    def test_ttl_is_enforced_at_read_time(self) -> None:
        """A row exactly TTL old is fresh; one millisecond older reads OUTSIDE_MAX_AGE with defaults."""
        hashes = store({"user_id": 1, "age": 30.0, "visits": 4, "vip": True, "score": 0.75}, now_ms=1_000)
        fresh = read(hashes, NUMERIC, [1], now_ms=61_000)
        stale = read(hashes, NUMERIC, [1], now_ms=61_001)
        assert (fresh.status == PRESENT).all()
        assert (stale.status == STALE).all() and stale.rows.tolist() == [[-1.0, 0.0, 0.0, 0.5]]
        assert stale.event_ms.tolist() == [[1_000]] and stale.found.tolist() == [[False]]

    def test_null_and_absent_fields(self) -> None:
        """A written null reads NULL_VALUE and a field absent from the hash NOT_FOUND, both defaulted."""
        hashes = store({"user_id": 1, "age": None, "visits": 4, "vip": None, "score": 0.75})
        del hashes[b"fv:users:1"][b"score"]
        result = read(hashes, NUMERIC, [1])
        assert result.status.tolist() == [[NULL_VALUE, PRESENT, NULL_VALUE, NOT_FOUND]]
        assert result.rows.tolist() == [[-1.0, 4.0, 0.0, 0.5]]
        assert result.found.tolist() == [[True]]

    def test_value_of_another_width_is_not_found(self) -> None:
        """A value written under another dtype is unusable: NOT_FOUND with the default."""
        hashes = store({"user_id": 1, "age": 30.0, "visits": 4, "vip": True, "score": 0.75})
        hashes[b"fv:users:1"][b"score"] = encode_value("float32", 1.0)
        result = read(hashes, NUMERIC, [1])
        assert result.status[0].tolist() == [PRESENT, PRESENT, PRESENT, NOT_FOUND]
        assert result.rows[0, 3] == 0.5

    def test_vectorised_and_row_paths_agree(self) -> None:
        """A batch big enough for the vectorised path, mixing complete rows, nulls (a bool null too),
        stale and absent entities, decodes each row as it decodes alone (value by value)."""
        full = {"age": 1.0, "visits": 2, "vip": False, "score": 3.0}
        hashes = store(
            {"user_id": 1, **full}, {"user_id": 2, **full, "vip": None}, {"user_id": 3, **full, "age": None},
            {"user_id": 5, **full, "visits": 9}, *({"user_id": i, **full, "score": i / 8} for i in range(10, 20)),
        )
        hashes.update(store({"user_id": 4, **full}, now_ms=-100_000))
        ids = [1, 2, 3, 4, 5, 6, *range(10, 20)]
        batch = read(hashes, NUMERIC, ids)
        for i, entity in enumerate(ids):
            alone = read(hashes, NUMERIC, [entity])
            assert batch.rows[i].tolist() == alone.rows[0].tolist()
            assert batch.status[i].tolist() == alone.status[0].tolist()
            assert batch.event_ms[i].tolist() == alone.event_ms[0].tolist()
        assert batch.status[:6, 2].tolist() == [PRESENT, NULL_VALUE, PRESENT, STALE, PRESENT, NOT_FOUND]
        assert batch.rows[4, 1] == 9.0 and batch.rows[6:, 3].tolist() == [i / 8 for i in range(10, 20)]

    def test_object_rows_keep_each_type(self) -> None:
        """Object rows hold numpy scalars of each feature's dtype and Python strings."""
        hashes = store({"user_id": 1, "age": 0.1, "visits": 2**60, "vip": True, "score": 0.2, "city": "Oslo"})
        result = read(hashes, [*NUMERIC, "users:city"], [1, 2], dtype=object)
        first = result.rows[0].tolist()
        assert [type(v) for v in first] == [np.float32, np.int64, np.bool_, np.float64, str]
        assert first[1] == 2**60 and first[4] == "Oslo"
        assert result.rows[1].tolist() == [-1.0, 0, False, 0.5, "?"]

    def test_no_ttl_never_goes_stale(self) -> None:
        """A view with ttl_seconds=0 serves values of any age."""
        forever = FeatureView("users", "user_id", (Feature("age", "float32"),))
        hashes = store({"user_id": 1, "age": 5.0}, now_ms=0, view=forever)
        plan = compile_read_plan(["users:age"], {"users": forever})
        result = plan.decode(hmget(hashes, plan, [{"user_id": 1}]), 1, 10**13)
        assert result.rows.tolist() == [[5.0]] and result.status.tolist() == [[PRESENT]]

    def test_reply_count_must_match(self) -> None:
        """Decoding the wrong number of replies is an error, never a silent shift of rows."""
        plan = compile_read_plan(NUMERIC, {"users": USERS})
        with pytest.raises(ValueError, match="expected 2 replies"):
            plan.decode([[None] * 5], 2, 0)

    def test_zero_rows(self) -> None:
        """Zero entities give empty arrays of the plan's width."""
        result = read({}, NUMERIC, [])
        assert result.rows.shape == (0, 4) and result.status.shape == (0, 4) and result.event_ms.shape == (0, 1)
