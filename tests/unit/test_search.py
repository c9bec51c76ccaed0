"""The MLflow search grammar (registry/search.py): parsing, checking, compiling and page tokens."""

from __future__ import annotations

import base64

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from registry.errors import InvalidParameterValue
from registry.schema import runs
from registry.search import (
    EXPERIMENTS,
    MODEL_VERSIONS,
    REGISTERED_MODELS,
    RUNS,
    Comparison,
    OrderKey,
    check_max_results,
    compile_model_version_filter,
    compile_registered_model_filter,
    compile_run_filter,
    compile_run_order,
    decode_page_token,
    encode_page_token,
    parse_filter,
    parse_order_by,
)


def sql(clauses: list[sa.ColumnElement[bool]], dialect: sa.Dialect) -> str:
    query = sa.select(runs.c.run_id).where(*clauses)
    return str(query.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))


class TestParseRunFilter:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("metrics.x > 0.5", Comparison("metric", "x", ">", 0.5)),
            ("metric.loss <= -1e-3", Comparison("metric", "loss", "<=", -0.001)),
            ("params.p = 'v'", Comparison("param", "p", "=", "v")),
            ('param.p = "double quoted"', Comparison("param", "p", "=", "double quoted")),
            ("tags.t != 'v'", Comparison("tag", "t", "!=", "v")),
            ("tags.mlflow.runName = 'a'", Comparison("tag", "mlflow.runName", "=", "a")),
            ("tags.`my tag` = 'a'", Comparison("tag", "my tag", "=", "a")),
            ('metrics."f1 score" >= 1', Comparison("metric", "f1 score", ">=", 1.0)),
            ("attributes.status = 'FINISHED'", Comparison("attribute", "status", "=", "FINISHED")),
            ("attribute.run_name LIKE '%a%'", Comparison("attribute", "run_name", "LIKE", "%a%")),
            ("attr.run_name ilike 'A%'", Comparison("attribute", "run_name", "ILIKE", "A%")),
            ("attributes.start_time >= 1700000000000", Comparison("attribute", "start_time", ">=", 1.7e12)),
            ("attributes.run_id IN ('a', 'b')", Comparison("attribute", "run_id", "IN", ("a", "b"))),
            ("attributes.run_id not in ('a')", Comparison("attribute", "run_id", "NOT IN", ("a",))),
            ("datasets.digest = 'abc'", Comparison("dataset", "digest", "=", "abc")),
            ("metrics.x == 1", Comparison("metric", "x", "=", 1.0)),
            ("metrics.x <> 1", Comparison("metric", "x", "!=", 1.0)),
        ],
    )
    def test_one_clause(self, text: str, expected: Comparison) -> None:
        """Each supported spelling parses to one comparison with the value's type."""
        assert parse_filter(text, RUNS) == (expected,)

    def test_and_joins_clauses_in_any_case(self) -> None:
        """Clauses are joined by AND in any letter case, and kept in order."""
        parsed = parse_filter("metrics.a > 1 and params.b = 'x' AnD tags.c LIKE 'y%'", RUNS)
        assert [(c.entity, c.key) for c in parsed] == [("metric", "a"), ("param", "b"), ("tag", "c")]

    @pytest.mark.parametrize("text", ["", "   ", None])
    def test_empty_filter(self, text: str | None) -> None:
        """An empty or missing filter has no clauses."""
        assert parse_filter(text, RUNS) == ()

    @pytest.mark.parametrize(
        ("text", "reason"),
        [
            ("metrics.x > 'a'", "compared with a number"),
            ("params.p = 5", "quote the value"),
            ("tags.t > 'a'", "is a string"),
            ("metrics.x LIKE '%'", "is a number"),
            ("params.p IN ('a')", "is a string"),
            ("attributes.start_time = 'x'", "compared with a number"),
            ("attributes.nope = 'x'", "invalid attribute 'nope'"),
            ("foo.x = 1", "invalid entity type 'foo'"),
            ("x = 1", "needs an entity prefix"),
            ("metrics.x > 1 OR metrics.y > 2", "only AND is supported"),
            ("metrics.x > 1 metrics.y > 2", "expected AND"),
            ("metrics.x >", "found the end"),
            ("metrics.x 5", "comparison operator"),
            ("metrics.x > 1 AND", "found the end"),
            ("(metrics.x > 1)", "expected an identifier"),
            ("metrics.x > 1;", "unexpected character ';'"),
            ("params.p = 'unterminated", "unexpected character"),
            ("attributes.run_id IN 'a'", "parenthesised list"),
            ("attributes.run_id IN ('a' 'b')", "expected ',' or ')'"),
            ("datasets.color = 'x'", "invalid dataset key"),
            ("metrics. = 1", "expected a key"),
        ],
    )
    def test_invalid_filters_name_the_reason(self, text: str, reason: str) -> None:
        """An invalid filter raises InvalidParameterValue quoting the filter and saying what is wrong."""
        with pytest.raises(InvalidParameterValue) as info:
            parse_filter(text, RUNS)
        assert info.value.code == "INVALID_PARAMETER_VALUE"
        assert reason in info.value.message
        assert repr(text) in info.value.message


class TestOtherGrammars:
    def test_model_versions(self) -> None:
        """Version search takes bare attributes and tags, and refuses run entities."""
        assert parse_filter("name='churn'", MODEL_VERSIONS) == (Comparison("attribute", "name", "=", "churn"),)
        assert parse_filter("name LIKE 'ch%' and run_id = 'r'", MODEL_VERSIONS)[1] == Comparison(
            "attribute", "run_id", "=", "r"
        )
        assert parse_filter("version_number > 2", MODEL_VERSIONS)[0].value == 2.0
        assert parse_filter("tags.k = 'v'", MODEL_VERSIONS)[0].entity == "tag"
        with pytest.raises(InvalidParameterValue, match="invalid entity type 'metrics'"):
            parse_filter("metrics.x > 1", MODEL_VERSIONS)

    def test_registered_models_and_experiments(self) -> None:
        """Registered models filter by name and tags; experiments also by times."""
        assert parse_filter("name LIKE '%x%'", REGISTERED_MODELS) == (Comparison("attribute", "name", "LIKE", "%x%"),)
        with pytest.raises(InvalidParameterValue, match="invalid attribute 'run_id'"):
            parse_filter("run_id = 'x'", REGISTERED_MODELS)
        assert parse_filter("attributes.creation_time > 5", EXPERIMENTS)[0].key == "creation_time"


class TestOrderBy:
    def test_keys_and_directions(self) -> None:
        """order_by entries give a key and a direction, ascending by default."""
        assert parse_order_by(["metrics.auc DESC", "attributes.start_time", "params.`p q` asc"], RUNS) == (
            OrderKey("metric", "auc", False),
            OrderKey("attribute", "start_time", True),
            OrderKey("param", "p q", True),
        )

    @pytest.mark.parametrize(
        ("clause", "reason"),
        [("attributes.nope", "cannot order by"), ("metrics.auc DOWN", "ASC or DESC"), ("datasets.name", "datasets")],
    )
    def test_invalid(self, clause: str, reason: str) -> None:
        """Unknown attributes, directions and dataset keys are refused."""
        with pytest.raises(InvalidParameterValue, match=reason):
            parse_order_by([clause], RUNS)

    def test_compiled_order_ends_with_tie_breakers(self) -> None:
        """Run ordering ends with MLflow's start_time DESC, run_id tie-breakers, missing metrics last."""
        order = compile_run_order(parse_order_by(["metrics.auc DESC"], RUNS))
        text = str(sa.select(runs.c.run_id).order_by(*order).compile(dialect=sqlite.dialect()))
        assert "CASE WHEN" in text and text.rstrip().endswith("runs.start_time DESC, runs.run_id ASC")


class TestCompile:
    def test_metrics_params_tags_are_exists_subqueries(self) -> None:
        """Metric, param and tag clauses become correlated EXISTS over their tables; NaN never matches."""
        clauses = compile_run_filter(parse_filter("metrics.auc > 0.5 and params.p = 'v' and tags.t != 'x'", RUNS))
        text = sql(clauses, sqlite.dialect())
        assert text.count("EXISTS") == 3
        assert "run_latest_metrics.value > 0.5" in text and "run_latest_metrics.is_nan = 0" in text
        assert "run_params.value = 'v'" in text and "run_tags.value != 'x'" in text

    def test_like_and_ilike(self) -> None:
        """LIKE stays LIKE; ILIKE is native on PostgreSQL and lower() LIKE lower() on SQLite."""
        clauses = compile_run_filter(parse_filter("attributes.run_name LIKE 'a%' and attributes.run_name ILIKE 'B%'", RUNS))
        assert "runs.run_name LIKE 'a%'" in sql(clauses, sqlite.dialect())
        assert "lower(runs.run_name) LIKE lower('B%')" in sql(clauses, sqlite.dialect())
        assert "runs.run_name ILIKE 'B%%'" in sql(clauses, postgresql.dialect())  # psycopg escapes %

    def test_registry_filters(self) -> None:
        """Version and model filters compile to their columns (source_path is the source column)."""
        versions = compile_model_version_filter(parse_filter("source_path = 's' and version_number >= 2", MODEL_VERSIONS))
        text = " ".join(str(c.compile(compile_kwargs={"literal_binds": True})) for c in versions)
        assert "model_versions.source = 's'" in text and "model_versions.version >= 2" in text
        (model,) = compile_registered_model_filter(parse_filter("name = 'x'", REGISTERED_MODELS))
        assert str(model.compile(compile_kwargs={"literal_binds": True})) == "registered_models.name = 'x'"


class TestPaging:
    @pytest.mark.parametrize("offset", [0, 1, 1000, 2**40])
    def test_round_trip(self, offset: int) -> None:
        """A token decodes to the offset it was made from."""
        assert decode_page_token(encode_page_token(offset)) == offset

    @pytest.mark.parametrize("token", [None, ""])
    def test_no_token_is_the_first_page(self, token: str | None) -> None:
        """A missing or empty token starts at offset 0."""
        assert decode_page_token(token) == 0

    @pytest.mark.parametrize(
        "token",
        [
            "not base64!",
            base64.urlsafe_b64encode(b"[1]").decode(),
            base64.urlsafe_b64encode(b'{"offset": -1}').decode(),
            base64.urlsafe_b64encode(b'{"offset": "3"}').decode(),
            base64.urlsafe_b64encode(b'{"offset": true}').decode(),
            base64.urlsafe_b64encode(b"\xff\xfe").decode(),
            "caf\u00e9",
        ],
    )
    def test_foreign_tokens_are_refused(self, token: str) -> None:
        """A token this server did not issue raises InvalidParameterValue."""
        with pytest.raises(InvalidParameterValue, match="Invalid page token"):
            decode_page_token(token)

    def test_max_results(self) -> None:
        """max_results defaults when missing and must lie in 1..limit."""
        assert check_max_results(None, 100, 1000) == 100
        assert check_max_results(1000, 100, 1000) == 1000
        for bad in (0, -1, 1001):
            with pytest.raises(InvalidParameterValue, match="max_results"):
                check_max_results(bad, 100, 1000)
