"""MLflow search grammar (pure): filter and order_by strings parsed into a small AST, checked against
what each search allows, compiled into SQLAlchemy clauses over the registry's tables; opaque page tokens.

Supported: `<entity>.<key> <op> <value>` clauses joined by AND (any case), where the key may be quoted
in backticks or double quotes; ops = != < <= > >= for numbers, = != LIKE ILIKE for strings, and
IN / NOT IN ('a', 'b') for string attributes. OR, parentheses around clauses and NOT LIKE are refused.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import sqlalchemy as sa

from registry.errors import InvalidParameterValue
from registry.schema import (
    datasets,
    experiment_tags,
    experiments,
    model_version_tags,
    model_versions,
    registered_model_tags,
    registered_models,
    run_input_tags,
    run_inputs,
    run_latest_metrics,
    run_params,
    run_tags,
    runs,
)

Entity = Literal["metric", "param", "tag", "attribute", "dataset"]
Kind = Literal["number", "string"]
Op = Literal["=", "!=", "<", "<=", ">", ">=", "LIKE", "ILIKE", "IN", "NOT IN"]
Value = str | float | tuple[str, ...]

NUMBER_OPS: frozenset[str] = frozenset({"=", "!=", "<", "<=", ">", ">="})
STRING_OPS: frozenset[str] = frozenset({"=", "!=", "LIKE", "ILIKE"})
LIST_OPS: frozenset[str] = frozenset({"IN", "NOT IN"})
DATASET_CONTEXT_TAG = "mlflow.data.context"


@dataclass(frozen=True, slots=True)
class Comparison:
    """One clause: `entity`.`key` `op` `value` (a float for numbers, a tuple for IN lists)."""

    entity: Entity
    key: str
    op: Op
    value: Value


@dataclass(frozen=True, slots=True)
class OrderKey:
    entity: Entity
    key: str
    ascending: bool


@dataclass(frozen=True, slots=True)
class Grammar:
    """What one search accepts. `bare` is the entity of an identifier without a prefix (None: a prefix
    is required); `attributes` maps each accepted name to (column name, kind); `orderable` lists the
    attribute names order_by accepts."""

    noun: str
    prefixes: Mapping[str, Entity]
    bare: Entity | None
    attributes: Mapping[str, tuple[str, Kind]]
    orderable: frozenset[str]
    dataset_keys: frozenset[str] = frozenset()


_TAG_PREFIXES: dict[str, Entity] = {"tag": "tag", "tags": "tag"}
_ATTRIBUTE_PREFIXES: dict[str, Entity] = {"attribute": "attribute", "attributes": "attribute", "attr": "attribute"}

RUNS = Grammar(
    noun="run",
    prefixes={
        "metric": "metric", "metrics": "metric",
        "param": "param", "params": "param", "parameter": "param", "parameters": "param",
        "run": "attribute", "dataset": "dataset", "datasets": "dataset",
        **_TAG_PREFIXES, **_ATTRIBUTE_PREFIXES,
    },
    bare=None,
    attributes={
        "run_id": ("run_id", "string"), "run_name": ("run_name", "string"), "status": ("status", "string"),
        "user_id": ("user_id", "string"), "artifact_uri": ("artifact_uri", "string"),
        "start_time": ("start_time", "number"), "end_time": ("end_time", "number"),
        "created": ("start_time", "number"), "Created": ("start_time", "number"),
    },
    orderable=frozenset({"run_id", "run_name", "status", "user_id", "artifact_uri", "start_time", "end_time",
                         "created", "Created"}),
    dataset_keys=frozenset({"name", "digest", "context"}),
)
EXPERIMENTS = Grammar(
    noun="experiment",
    prefixes={**_TAG_PREFIXES, **_ATTRIBUTE_PREFIXES},
    bare="attribute",
    attributes={
        "name": ("name", "string"), "creation_time": ("creation_time", "number"),
        "last_update_time": ("last_update_time", "number"),
    },
    orderable=frozenset({"name", "experiment_id", "creation_time", "last_update_time"}),
)
MODEL_VERSIONS = Grammar(
    noun="model version",
    prefixes=dict(_TAG_PREFIXES),
    bare="attribute",
    attributes={
        "name": ("name", "string"), "run_id": ("run_id", "string"), "source_path": ("source", "string"),
        "version_number": ("version", "number"),
    },
    orderable=frozenset({"name", "version_number", "creation_timestamp", "last_updated_timestamp"}),
)
REGISTERED_MODELS = Grammar(
    noun="registered model",
    prefixes=dict(_TAG_PREFIXES),
    bare="attribute",
    attributes={"name": ("name", "string")},
    orderable=frozenset({"name", "timestamp", "creation_timestamp", "last_updated_timestamp"}),
)

# --- tokens ------------------------------------------------------------------------------------

_TOKEN_RE = re.compile(
    r"""
      (?P<space>\s+)
    | (?P<op><=|>=|!=|<>|==|=|<|>)
    | (?P<string>'[^']*'|"[^"]*")
    | (?P<backtick>`[^`]*`)
    | (?P<number>[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)
    | (?P<lparen>\() | (?P<rparen>\)) | (?P<comma>,)
    | (?P<word>[A-Za-z_][A-Za-z0-9_.\-:/]*)
    """,
    re.VERBOSE,
)
_OP_ALIASES = {"==": "=", "<>": "!="}


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str
    text: str


def _invalid(noun: str, text: str, reason: str) -> InvalidParameterValue:
    return InvalidParameterValue(f"Invalid {noun} search {text!r}: {reason}")


def tokenize(text: str, noun: str = "search") -> list[_Token]:
    tokens: list[_Token] = []
    position = 0
    while position < len(text):
        match = _TOKEN_RE.match(text, position)
        if match is None:
            raise _invalid(noun, text, f"unexpected character {text[position]!r} at position {position}")
        kind = match.lastgroup or ""
        if kind != "space":
            tokens.append(_Token(kind, match.group()))
        position = match.end()
    return tokens


class _Cursor:
    """Tokens with a position; every error names the search and the offending text."""

    def __init__(self, text: str, grammar: Grammar) -> None:
        self.text = text
        self.grammar = grammar
        self.tokens = tokenize(text, grammar.noun)
        self.i = 0

    def error(self, reason: str) -> InvalidParameterValue:
        return _invalid(self.grammar.noun, self.text, reason)

    def peek(self) -> _Token | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self, what: str) -> _Token:
        token = self.peek()
        if token is None:
            raise self.error(f"expected {what}, found the end")
        self.i += 1
        return token

    def keyword(self, *words: str) -> bool:
        token = self.peek()
        if token is not None and token.kind == "word" and token.text.upper() in words:
            self.i += 1
            return True
        return False

    def identifier(self) -> tuple[Entity, str]:
        """`prefix.key`, `prefix.`quoted key``, or (where the grammar allows) a bare attribute name."""
        grammar = self.grammar
        token = self.take("an identifier such as metrics.auc")
        quoted = token.kind == "backtick" or (token.kind == "string" and token.text.startswith('"'))
        if token.kind != "word" and not quoted:
            raise self.error(f"expected an identifier, found {token.text!r}")
        prefix, dot, key = token.text.partition(".")
        if quoted or not dot:
            if grammar.bare is None:
                valid = ", ".join(sorted(grammar.prefixes))
                raise self.error(f"{token.text!r} needs an entity prefix ({valid}), as in metrics.auc")
            return grammar.bare, token.text[1:-1] if quoted else token.text
        entity = grammar.prefixes.get(prefix.lower())
        if entity is None:
            valid = ", ".join(sorted(grammar.prefixes))
            raise self.error(f"invalid entity type {prefix!r} in {token.text!r}: expected one of {valid}")
        if not key:  # `metrics.` followed by a quoted key
            after = self.take(f"a key after {token.text!r}")
            if after.kind != "backtick" and not (after.kind == "string" and after.text.startswith('"')):
                raise self.error(f"expected a key after {token.text!r}, found {after.text!r}")
            key = after.text[1:-1]
        if not key:
            raise self.error(f"{token.text!r} names an empty key")
        return entity, key


# --- filters -----------------------------------------------------------------------------------


def _kind(cursor: _Cursor, entity: Entity, key: str) -> Kind:
    grammar = cursor.grammar
    if entity == "metric":
        return "number"
    if entity == "attribute":
        if key not in grammar.attributes:
            valid = ", ".join(sorted(grammar.attributes))
            raise cursor.error(f"invalid attribute {key!r}: expected one of {valid}")
        return grammar.attributes[key][1]
    if entity == "dataset" and key not in grammar.dataset_keys:
        raise cursor.error(f"invalid dataset key {key!r}: expected one of {', '.join(sorted(grammar.dataset_keys))}")
    return "string"


def _operator(cursor: _Cursor) -> Op:
    token = cursor.take("a comparison operator")
    if token.kind == "op":
        return _OP_ALIASES.get(token.text, token.text)  # type: ignore[return-value]
    word = token.text.upper() if token.kind == "word" else ""
    if word in ("LIKE", "ILIKE", "IN"):
        return word  # type: ignore[return-value]
    if word == "NOT" and cursor.keyword("IN"):
        return "NOT IN"
    raise cursor.error(f"expected a comparison operator (=, !=, <, <=, >, >=, LIKE, ILIKE, IN), found {token.text!r}")


def _value(cursor: _Cursor, op: Op) -> Value:
    if op in LIST_OPS:
        if cursor.take("'('").kind != "lparen":
            raise cursor.error(f"{op} needs a parenthesised list of quoted strings")
        items: list[str] = []
        while True:
            item = cursor.take("a quoted string")
            if item.kind != "string":
                raise cursor.error(f"{op} lists hold quoted strings, found {item.text!r}")
            items.append(item.text[1:-1])
            separator = cursor.take("',' or ')'")
            if separator.kind == "rparen":
                return tuple(items)
            if separator.kind != "comma":
                raise cursor.error(f"expected ',' or ')' in the {op} list, found {separator.text!r}")
    token = cursor.take("a value")
    if token.kind == "string":
        return token.text[1:-1]
    if token.kind == "number":
        return float(token.text)
    raise cursor.error(f"expected a quoted string or a number, found {token.text!r}")


def _check(cursor: _Cursor, entity: Entity, key: str, op: Op, value: Value) -> None:
    kind = _kind(cursor, entity, key)
    label = f"{entity} {key!r}" if entity != "attribute" else f"attribute {key!r}"
    if kind == "number":
        if op not in NUMBER_OPS:
            raise cursor.error(f"{label} is a number: use =, !=, <, <=, > or >=, not {op}")
        if not isinstance(value, float):
            raise cursor.error(f"{label} is compared with a number, got the string {value!r}")
        return
    allowed = STRING_OPS | (LIST_OPS if entity in ("attribute", "dataset") else frozenset())
    if op not in allowed:
        raise cursor.error(f"{label} is a string: use {', '.join(sorted(allowed))}, not {op}")
    if isinstance(value, float):
        raise cursor.error(f"{label} is compared with a string: quote the value, as in {key} = 'x'")


def parse_filter(text: str | None, grammar: Grammar) -> tuple[Comparison, ...]:
    """Parse a filter string into comparisons (empty for an empty filter). Raises InvalidParameterValue
    naming the search, the filter and the reason."""
    if text is None or not text.strip():
        return ()
    cursor = _Cursor(text, grammar)
    found: list[Comparison] = []
    while True:
        entity, key = cursor.identifier()
        op = _operator(cursor)
        value = _value(cursor, op)
        _check(cursor, entity, key, op, value)
        found.append(Comparison(entity, key, op, value))
        token = cursor.peek()
        if token is None:
            return tuple(found)
        if not cursor.keyword("AND"):
            hint = " (only AND is supported)" if token.text.upper() == "OR" else ""
            raise cursor.error(f"expected AND between clauses, found {token.text!r}{hint}")


def parse_order_by(clauses: Sequence[str], grammar: Grammar) -> tuple[OrderKey, ...]:
    """Parse order_by entries such as "metrics.auc DESC" or "attributes.start_time"."""
    keys: list[OrderKey] = []
    for clause in clauses:
        cursor = _Cursor(clause, grammar)
        entity, key = cursor.identifier()
        if entity in ("dataset",):
            raise cursor.error("datasets cannot be ordered by")
        if entity == "attribute" and key not in grammar.orderable:
            raise cursor.error(f"cannot order by {key!r}: expected one of {', '.join(sorted(grammar.orderable))}")
        ascending = not cursor.keyword("DESC")
        if ascending:
            cursor.keyword("ASC")
        extra = cursor.peek()
        if extra is not None:
            raise cursor.error(f"expected ASC or DESC after the key, found {extra.text!r}")
        keys.append(OrderKey(entity, key, ascending))
    return tuple(keys)


# --- compilation -------------------------------------------------------------------------------


def _compare(column: Any, op: Op, value: Value) -> sa.ColumnElement[bool]:
    if op == "LIKE":
        return column.like(value)  # type: ignore[no-any-return]
    if op == "ILIKE":
        return column.ilike(value)  # type: ignore[no-any-return]
    if op == "IN":
        return column.in_(value)  # type: ignore[no-any-return]
    if op == "NOT IN":
        return column.not_in(value)  # type: ignore[no-any-return]
    operators: dict[str, Any] = {
        "=": column.__eq__, "!=": column.__ne__, "<": column.__lt__,
        "<=": column.__le__, ">": column.__gt__, ">=": column.__ge__,
    }
    return operators[op](value)  # type: ignore[no-any-return]


def _attribute(table: sa.Table, grammar: Grammar, key: str) -> sa.Column[Any]:
    return table.c[grammar.attributes[key][0]]


def compile_run_filter(comparisons: Sequence[Comparison]) -> list[sa.ColumnElement[bool]]:
    """WHERE clauses over `runs`; metrics compare each key's latest value (NaN never matches)."""
    clauses: list[sa.ColumnElement[bool]] = []
    for c in comparisons:
        if c.entity == "attribute":
            clauses.append(_compare(_attribute(runs, RUNS, c.key), c.op, c.value))
        elif c.entity == "metric":
            m = run_latest_metrics
            clauses.append(sa.exists().where(
                m.c.run_id == runs.c.run_id, m.c.key == c.key, sa.not_(m.c.is_nan), _compare(m.c.value, c.op, c.value)
            ))
        elif c.entity in ("param", "tag"):
            t = run_params if c.entity == "param" else run_tags
            clauses.append(sa.exists().where(t.c.run_id == runs.c.run_id, t.c.key == c.key, _compare(t.c.value, c.op, c.value)))
        elif c.key == "context":
            it = run_input_tags
            clauses.append(sa.exists().where(
                it.c.run_id == runs.c.run_id, it.c.key == DATASET_CONTEXT_TAG, _compare(it.c.value, c.op, c.value)
            ))
        else:
            clauses.append(sa.exists().where(
                run_inputs.c.run_id == runs.c.run_id,
                datasets.c.dataset_id == run_inputs.c.dataset_id,
                _compare(datasets.c[c.key], c.op, c.value),
            ))
    return clauses


def _sorted(expression: Any, ascending: bool, nulls_last: bool) -> list[sa.ColumnElement[Any]]:
    """ORDER BY terms; with `nulls_last`, rows without a value come last in either direction."""
    terms: list[sa.ColumnElement[Any]] = []
    if nulls_last:
        terms.append(sa.case((expression.is_(None), 1), else_=0))
    terms.append(expression.asc() if ascending else expression.desc())
    return terms


def compile_run_order(keys: Sequence[OrderKey]) -> list[sa.ColumnElement[Any]]:
    """ORDER BY terms over `runs`, then MLflow's tie-breakers start_time DESC, run_id."""
    terms: list[sa.ColumnElement[Any]] = []
    for k in keys:
        if k.entity == "attribute":
            column = _attribute(runs, RUNS, k.key)
            terms += _sorted(column, k.ascending, nulls_last=column.nullable is True)
        elif k.entity == "metric":
            m = run_latest_metrics
            value = sa.select(m.c.value).where(m.c.run_id == runs.c.run_id, m.c.key == k.key, sa.not_(m.c.is_nan))
            terms += _sorted(value.scalar_subquery(), k.ascending, nulls_last=True)
        else:
            t = run_params if k.entity == "param" else run_tags
            value = sa.select(t.c.value).where(t.c.run_id == runs.c.run_id, t.c.key == k.key)
            terms += _sorted(value.scalar_subquery(), k.ascending, nulls_last=True)
    return [*terms, runs.c.start_time.desc(), runs.c.run_id.asc()]


def compile_experiment_filter(comparisons: Sequence[Comparison]) -> list[sa.ColumnElement[bool]]:
    clauses: list[sa.ColumnElement[bool]] = []
    for c in comparisons:
        if c.entity == "attribute":
            clauses.append(_compare(_attribute(experiments, EXPERIMENTS, c.key), c.op, c.value))
        else:
            t = experiment_tags
            clauses.append(sa.exists().where(
                t.c.experiment_id == experiments.c.experiment_id, t.c.key == c.key, _compare(t.c.value, c.op, c.value)
            ))
    return clauses


_EXPERIMENT_ORDER = {"name": "name", "experiment_id": "experiment_id", "creation_time": "creation_time",
                     "last_update_time": "last_update_time"}


def compile_experiment_order(keys: Sequence[OrderKey]) -> list[sa.ColumnElement[Any]]:
    """ORDER BY terms over `experiments` (attributes only); default newest first, then by id."""
    terms: list[sa.ColumnElement[Any]] = []
    for k in keys:
        if k.entity != "attribute":
            raise InvalidParameterValue(f"Experiments can be ordered by attributes only, not by {k.entity} {k.key!r}")
        column = experiments.c[_EXPERIMENT_ORDER[k.key]]
        terms.append(column.asc() if k.ascending else column.desc())
    return [*terms, experiments.c.creation_time.desc(), experiments.c.experiment_id.asc()]


def compile_model_version_filter(comparisons: Sequence[Comparison]) -> list[sa.ColumnElement[bool]]:
    clauses: list[sa.ColumnElement[bool]] = []
    for c in comparisons:
        if c.entity == "attribute":
            clauses.append(_compare(_attribute(model_versions, MODEL_VERSIONS, c.key), c.op, c.value))
        else:
            t = model_version_tags
            clauses.append(sa.exists().where(
                t.c.name == model_versions.c.name, t.c.version == model_versions.c.version,
                t.c.key == c.key, _compare(t.c.value, c.op, c.value),
            ))
    return clauses


_VERSION_ORDER = {"name": "name", "version_number": "version", "creation_timestamp": "created_ms",
                  "last_updated_timestamp": "updated_ms"}


def compile_model_version_order(keys: Sequence[OrderKey]) -> list[sa.ColumnElement[Any]]:
    """ORDER BY terms over `model_versions`; default by name, newest version first."""
    terms: list[sa.ColumnElement[Any]] = []
    for k in keys:
        if k.entity != "attribute":
            raise InvalidParameterValue(f"Model versions can be ordered by attributes only, not by {k.entity} {k.key!r}")
        column = model_versions.c[_VERSION_ORDER[k.key]]
        terms.append(column.asc() if k.ascending else column.desc())
    return [*terms, model_versions.c.name.asc(), model_versions.c.version.desc()]


def compile_registered_model_filter(comparisons: Sequence[Comparison]) -> list[sa.ColumnElement[bool]]:
    clauses: list[sa.ColumnElement[bool]] = []
    for c in comparisons:
        if c.entity == "attribute":
            clauses.append(_compare(registered_models.c.name, c.op, c.value))
        else:
            t = registered_model_tags
            clauses.append(sa.exists().where(
                t.c.name == registered_models.c.name, t.c.key == c.key, _compare(t.c.value, c.op, c.value)
            ))
    return clauses


_MODEL_ORDER = {"name": "name", "timestamp": "updated_ms", "creation_timestamp": "created_ms",
                "last_updated_timestamp": "updated_ms"}


def compile_registered_model_order(keys: Sequence[OrderKey]) -> list[sa.ColumnElement[Any]]:
    """ORDER BY terms over `registered_models`; default by name."""
    terms: list[sa.ColumnElement[Any]] = []
    for k in keys:
        if k.entity != "attribute":
            raise InvalidParameterValue(f"Registered models can be ordered by attributes only, not by {k.entity} {k.key!r}")
        column = registered_models.c[_MODEL_ORDER[k.key]]
        terms.append(column.asc() if k.ascending else column.desc())
    return [*terms, registered_models.c.name.asc()]


# --- paging ------------------------------------------------------------------------------------


def encode_page_token(offset: int) -> str:
    """An opaque token for the page that starts at `offset`."""
    return base64.urlsafe_b64encode(json.dumps({"offset": offset}).encode()).decode()


def decode_page_token(token: str | None) -> int:
    """The offset a token from encode_page_token stands for; None or "" is the first page (0).
    Raises InvalidParameterValue for anything else."""
    if not token:
        return 0
    try:
        decoded = json.loads(base64.urlsafe_b64decode(token.encode("ascii")))
    except (UnicodeEncodeError, binascii.Error, ValueError):
        raise InvalidParameterValue(f"Invalid page token {token!r}: not a token this server issued") from None
    offset = decoded.get("offset") if isinstance(decoded, dict) else None
    if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
        raise InvalidParameterValue(f"Invalid page token {token!r}: not a token this server issued")
    return offset


def check_max_results(value: int | None, default: int, limit: int) -> int:
    """`value` (or `default` when None) if it lies in 1..limit; else InvalidParameterValue."""
    if value is None:
        return default
    if not 1 <= value <= limit:
        raise InvalidParameterValue(f"Invalid value {value} for parameter 'max_results': expected 1 to {limit}")
    return value
