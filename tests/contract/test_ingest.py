"""Ingesting CSV files into every backend (memory, redis): batches, progress, idempotence, errors."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pytest
import redis

from featurestore.codec import FeatureStatus
from featurestore.errors import IngestError
from featurestore.ingest import IngestReport, ingest_file, iter_csv_batches, parse_text
from featurestore.online import OnlineStore, StoreOptions, open_online_store
from featurestore.views import Feature, FeatureView, compile_read_plan

T = TypeVar("T")
NOW = 1_767_225_600_000  # 2026-01-01T00:00:00Z
USERS = FeatureView(
    "users",
    "user_id",
    (Feature("age", "float32", -1.0), Feature("visits", "int32", 0), Feature("vip", "bool"), Feature("city", "string", "?")),
    ttl_seconds=86_400,
)
REFS = ["users:age", "users:visits", "users:vip", "users:city"]
PLAN = compile_read_plan(REFS, {"users": USERS}, dtype=object)


@pytest.fixture(params=["memory", "redis"])
def store_url(request: pytest.FixtureRequest) -> str:
    """Each ingest test runs once per backend."""
    if request.param == "memory":
        return "memory://"
    url: str = request.getfixturevalue("redis_url")
    return url


def run(url: str, scenario: Callable[[Any], Awaitable[T]]) -> T:
    async def main() -> T:
        store = open_online_store(url, StoreOptions(read_timeout_s=2.0))
        try:
            return await scenario(store)
        finally:
            await store.close()

    return asyncio.run(main())


def write_csv(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def big_csv(path: Path, rows: int) -> Path:
    lines = ["user_id,age,visits,vip,city"]
    lines += [f"{i},{i / 2},{i % 100},{'true' if i % 3 else 'false'},c{i % 7}" for i in range(rows)]
    return write_csv(path, "\n".join(lines) + "\n")


async def read_all(store: OnlineStore, ids: list[object], now_ms: int = NOW) -> list[list[object]]:
    result = await store.read(PLAN, [{"user_id": i} for i in ids], now_ms)
    return [[*row, *(FeatureStatus(s).name for s in status)] for row, status in zip(result.rows.tolist(), result.status, strict=True)]


class TestIngest:
    def test_rows_arrive_in_batches_with_progress(self, store_url: str, tmp_path: Path) -> None:
        """2,500 rows go in as three batches; progress reports cumulative rows against the total."""
        path = big_csv(tmp_path / "users.csv", 2_500)
        calls: list[tuple[int, int | None]] = []

        async def scenario(store: OnlineStore) -> tuple[IngestReport, list[list[object]]]:
            report = await ingest_file(store, USERS, path, now_ms=NOW, batch_size=1_000, progress=lambda n, t: calls.append((n, t)))
            if hasattr(store, "stats"):
                assert store.stats.write_pipelines == 3  # one pipeline per batch
            return report, await read_all(store, [0, 1, 2_499, 2_500])

        report, rows = run(store_url, scenario)
        assert (report.view, report.rows, report.batches) == ("users", 2_500, 3)
        assert report.rows_per_second > 0
        assert calls == [(1_000, 2_500), (2_000, 2_500), (2_500, 2_500)]
        assert rows == [
            [0.0, 0, False, "c0", *["PRESENT"] * 4],
            [0.5, 1, True, "c1", *["PRESENT"] * 4],
            [1249.5, 99, False, "c0", *["PRESENT"] * 4],
            [-1.0, 0, False, "?", *["NOT_FOUND"] * 4],
        ]

    def test_reingesting_gives_the_same_state(self, store_url: str, tmp_path: Path) -> None:
        """Ingesting a file again, even after other writes, restores exactly the state the file describes."""
        path = big_csv(tmp_path / "users.csv", 300)

        async def scenario(store: OnlineStore) -> None:
            await ingest_file(store, USERS, path, now_ms=NOW)
            first = await read_all(store, list(range(301)))
            await store.write(USERS, [{"user_id": 5, "age": 99.0, "city": "moved"}], NOW + 1)
            await ingest_file(store, USERS, path, now_ms=NOW, batch_size=7)
            assert await read_all(store, list(range(301))) == first

        run(store_url, scenario)

    def test_reingest_is_byte_identical_in_redis(self, redis_url: str, tmp_path: Path) -> None:
        """In Redis a second ingest of the same file leaves every key and every stored byte unchanged."""
        path = big_csv(tmp_path / "users.csv", 200)
        client = redis.Redis.from_url(redis_url)

        def dump() -> dict[Any, Any]:
            return {key: client.hgetall(key) for key in client.scan_iter(b"fv:users:*")}

        run(redis_url, lambda store: ingest_file(store, USERS, path, now_ms=NOW))
        first = dump()
        run(redis_url, lambda store: ingest_file(store, USERS, path, now_ms=NOW, batch_size=13))
        assert len(first) == 200 and dump() == first
        client.close()

    def test_timestamp_column_sets_event_time(self, store_url: str, tmp_path: Path) -> None:
        """An event_timestamp column is each row's event time, so the TTL counts from it; blank cells use now."""
        path = write_csv(tmp_path / "users.csv", (
            "user_id,age,visits,vip,city,event_timestamp\n"
            "1,30,1,yes,Oslo,2025-12-31T00:00:00Z\n"
            "2,40,2,no,Rome,2025-12-30T00:00:00\n"
            "3,50,3,1,Lima,\n"
        ))

        async def scenario(store: OnlineStore) -> None:
            await ingest_file(store, USERS, path, now_ms=NOW)
            result = await store.read(PLAN, [{"user_id": i} for i in (1, 2, 3)], NOW)
            assert result.event_ms[:, 0].tolist() == [NOW - 86_400_000, NOW - 2 * 86_400_000, NOW]
            assert result.found[:, 0].tolist() == [True, False, True]  # row 2 is older than the TTL
            assert FeatureStatus(result.status[1, 0]) is FeatureStatus.OUTSIDE_MAX_AGE

        run(store_url, scenario)

    def test_named_timestamp_column_and_extra_columns(self, store_url: str, tmp_path: Path) -> None:
        """timestamp_column picks another column; columns the view doesn't know are ignored."""
        path = write_csv(tmp_path / "users.csv", "\ufeffnote,user_id,age,visits,vip,city,ts\nhi,1,1.5,2,false,X,1970-01-01T00:00:01Z\n")

        async def scenario(store: OnlineStore) -> None:
            await ingest_file(store, USERS, path, now_ms=NOW, timestamp_column="ts")
            result = await store.read(PLAN, [{"user_id": 1}], 1_000)
            assert result.rows.tolist() == [[1.5, 2, False, "X"]] and result.event_ms.tolist() == [[1_000]]

        run(store_url, scenario)

    def test_empty_cells_are_nulls(self, store_url: str, tmp_path: Path) -> None:
        """An empty cell is written as null and reads NULL_VALUE with the default."""
        path = write_csv(tmp_path / "users.csv", "user_id,age,visits,vip,city\n1,,3,,\n\n")

        async def scenario(store: OnlineStore) -> None:
            assert (await ingest_file(store, USERS, path, now_ms=NOW)).rows == 1
            assert await read_all(store, [1]) == [[-1.0, 3, False, "?", "NULL_VALUE", "PRESENT", "NULL_VALUE", "NULL_VALUE"]]

        run(store_url, scenario)

    @pytest.mark.parametrize(
        ("text", "message"),
        [
            ("id,age,visits,vip,city\n1,2,3,true,x\n", "users.csv has no column 'user_id' .*columns: id, age, visits, vip, city"),
            ("user_id,age,vip\n1,2,true\n", "no column for feature\\(s\\) visits, city of feature view 'users'"),
            ("user_id,age,visits,vip,city\n1,2,3,true,x\n2,old,3,true,x\n", r"users.csv line 3, column 'age' \(float32\): 'old' is not a float32"),
            ("user_id,age,visits,vip,city\n1,2,3.5,true,x\n", r"line 2, column 'visits' \(int32\): '3.5' is not an integer"),
            ("user_id,age,visits,vip,city\n1,2,9999999999,true,x\n", r"line 2, column 'visits' \(int32\): 9999999999 is out of range"),
            ("user_id,age,visits,vip,city\n1,2,3,maybe,x\n", r"line 2, column 'vip' \(bool\): 'maybe' is not a bool"),
            ("user_id,age,visits,vip,city\n1,2,3\n", "line 2: expected 5 fields, got 3"),
            ("user_id,age,visits,vip,city\n ,2,3,true,x\n", "line 2, column 'user_id': the entity key is empty"),
            ("user_id,age,visits,vip,city,event_timestamp\n1,2,3,true,x,noon\n", "line 2, column 'event_timestamp': 'noon' is not an ISO 8601"),
        ],
    )
    def test_bad_files_name_the_line_and_column(self, text: str, message: str, store_url: str, tmp_path: Path) -> None:
        """A file that cannot be ingested raises IngestError naming where, and no row of it is written."""
        path = write_csv(tmp_path / "users.csv", text)

        async def scenario(store: OnlineStore) -> None:
            with pytest.raises(IngestError, match=message):
                await ingest_file(store, USERS, path, now_ms=NOW)
            assert (await store.read(PLAN, [{"user_id": 1}], NOW)).found.tolist() == [[False]]

        run(store_url, scenario)

    def test_missing_timestamp_column(self, tmp_path: Path) -> None:
        """A timestamp_column the file lacks is named."""
        path = big_csv(tmp_path / "users.csv", 1)
        with pytest.raises(IngestError, match="no timestamp column 'ts'"):
            run("memory://", lambda store: ingest_file(store, USERS, path, now_ms=NOW, timestamp_column="ts"))

    def test_missing_file(self, tmp_path: Path) -> None:
        """A path that is not a file is an IngestError naming it."""
        with pytest.raises(IngestError, match=r"nope\.csv: no such file"):
            run("memory://", lambda store: ingest_file(store, USERS, tmp_path / "nope.csv", now_ms=NOW))

    def test_parquet_ingests_like_the_same_csv(self, store_url: str, tmp_path: Path) -> None:
        """A Parquet file with the CSV's rows and columns leaves the store in the same state."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        ids = list(range(400))
        table = pa.table({
            "user_id": ids,
            "age": [i / 2 for i in ids],
            "visits": [i % 100 for i in ids],
            "vip": [bool(i % 3) for i in ids],
            "city": [f"c{i % 7}" for i in ids],
        })
        parquet = tmp_path / "users.parquet"
        pq.write_table(table, parquet)
        csv = big_csv(tmp_path / "users.csv", 400)

        async def scenario(store: OnlineStore) -> tuple[list[list[object]], list[list[object]]]:
            report = await ingest_file(store, USERS, parquet, now_ms=NOW, batch_size=150)
            assert (report.rows, report.batches) == (400, 3)
            from_parquet = await read_all(store, [*ids, 400])
            await ingest_file(store, USERS, csv, now_ms=NOW)
            return from_parquet, await read_all(store, [*ids, 400])

        from_parquet, from_csv = run(store_url, scenario)
        assert from_parquet == from_csv
        assert from_parquet[3] == [1.5, 3, False, "c3", *["PRESENT"] * 4]


class TestParsing:
    @pytest.mark.parametrize(
        ("dtype", "text", "value"),
        [
            ("float32", " 1.25 ", 1.25), ("float64", "-1e-3", -0.001), ("int64", "42", 42), ("int32", "7.0", 7),
            ("bool", "TRUE", True), ("bool", "0", False), ("bool", "No", False), ("string", " Oslo ", "Oslo"),
            ("float32", "", None), ("string", "", None),
        ],
    )
    def test_cells(self, dtype: str, text: str, value: object) -> None:
        """CSV cells parse into their dtype; blank cells are null."""
        assert parse_text(dtype, text) == value

    def test_batches_from_text(self) -> None:
        """iter_csv_batches turns CSV lines into batches of typed rows for OnlineStore.write."""
        lines = ["user_id,age,visits,vip,city", "1,1,1,t,a", "2,2,2,f,b", "3,3,3,y,c"]
        batches = list(iter_csv_batches(lines, USERS, batch_size=2))
        assert [len(b) for b in batches] == [2, 1]
        assert batches[1] == [{"user_id": "3", "age": 3.0, "visits": 3, "vip": True, "city": "c"}]
        assert np.float32(batches[0][0]["age"]) == 1.0  # type: ignore[arg-type]
