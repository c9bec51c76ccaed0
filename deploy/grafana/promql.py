"""(pure) A tiny PromQL evaluator for exactly the forms deploy/grafana/gateway-dashboard.json uses, over
scrapes held in memory: selectors with label matchers, rate/increase over range selectors,
sum/max/min/avg [by (...)], histogram_quantile, time(), numbers and + - * / with ignoring/on/group_left.

Not general PromQL. rate() and increase() do not extrapolate to the window's edges as Prometheus does:
increase is the counter's rise between the window's first and last sample (resets handled), and rate is
that rise over the time between them; a series with fewer than two samples in the window has no value.
"""

from __future__ import annotations

import bisect
import itertools
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

Labels = tuple[tuple[str, str], ...]  # sorted (name, value) pairs; "__name__" holds the sample name
Vector = dict[Labels, float]


@dataclass(frozen=True, slots=True)
class Scrape:
    """One scrape at Unix time `t`: every sample, grouped by sample name."""

    t: float
    samples: Mapping[str, Sequence[tuple[Labels, float]]]


def labels_of(name: str, labels: Mapping[str, str]) -> Labels:
    return tuple(sorted({**labels, "__name__": name}.items()))


# --- syntax -------------------------------------------------------------------------------------

class PromQLError(ValueError):
    """An expression outside the supported subset, or malformed."""


TOKEN = re.compile(r"""
    \s*(?:
      (?P<duration>\d+(?:ms|[smhdwy])\b)
    | (?P<number>\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+)
    | (?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)
    | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
    | (?P<op>=~|!~|!=|==|[=(){}\[\],/*+-])
    )""", re.VERBOSE)
SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
AGGREGATIONS = {"sum", "max", "min", "avg"}
FUNCTIONS = {"rate", "increase", "histogram_quantile", "time"}


@dataclass(frozen=True, slots=True)
class Number:
    value: float


@dataclass(frozen=True, slots=True)
class Matcher:
    label: str
    op: str  # = != =~ !~
    value: str
    pattern: re.Pattern[str] | None = field(default=None, compare=False)

    def matches(self, value: str) -> bool:
        if self.op == "=":
            return value == self.value
        if self.op == "!=":
            return value != self.value
        assert self.pattern is not None
        return (self.pattern.fullmatch(value) is not None) == (self.op == "=~")  # PromQL regexes are anchored


@dataclass(frozen=True, slots=True)
class Selector:
    name: str
    matchers: tuple[Matcher, ...] = ()
    range_s: float | None = None


@dataclass(frozen=True, slots=True)
class Call:
    func: str
    args: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Aggregate:
    op: str
    by: tuple[str, ...] | None
    expr: Node


@dataclass(frozen=True, slots=True)
class Binary:
    op: str
    lhs: Node
    rhs: Node
    on: tuple[str, ...] | None = None
    ignoring: tuple[str, ...] = ()
    group_left: bool = False


Node = Number | Selector | Call | Aggregate | Binary


def tokenize(text: str) -> list[tuple[str, str]]:
    tokens, pos, text = [], 0, text.rstrip()
    while pos < len(text):
        m = TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            raise PromQLError(f"unexpected character at {pos}: {text[pos:pos + 20]!r}")
        kind = m.lastgroup
        assert kind is not None
        tokens.append((kind, m.group(kind)))
        pos = m.end()
    return tokens


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = tokenize(text)
        self.i = 0

    def peek(self) -> tuple[str, str]:
        return self.tokens[self.i] if self.i < len(self.tokens) else ("end", "")

    def take(self, value: str | None = None, kind: str | None = None) -> str:
        k, v = self.peek()
        if (value is not None and v != value) or (kind is not None and k != kind) or k == "end":
            raise PromQLError(f"expected {value or kind}, got {v or 'the end'!r}")
        self.i += 1
        return v

    def accept(self, value: str) -> bool:
        if self.peek()[1] == value:
            self.i += 1
            return True
        return False

    def parse(self) -> Node:
        node = self.binary(("+", "-"))
        if self.peek()[0] != "end":
            raise PromQLError(f"unsupported or unexpected {self.peek()[1]!r}")
        return node

    def binary(self, ops: tuple[str, ...]) -> Node:
        lower = ("*", "/") if ops == ("+", "-") else None
        node = self.binary(lower) if lower else self.unary()
        while self.peek()[1] in ops:
            op = self.take()
            on: tuple[str, ...] | None = None
            ignoring: tuple[str, ...] = ()
            group_left = False
            if self.accept("on"):
                on = self.label_list()
            elif self.accept("ignoring"):
                ignoring = self.label_list()
            if self.accept("group_left"):
                group_left = True
                if self.peek()[1] == "(":
                    self.label_list()  # extra labels to copy from the right: the dashboard copies none
            rhs = self.binary(lower) if lower else self.unary()
            node = Binary(op, node, rhs, on, ignoring, group_left)
        return node

    def label_list(self) -> tuple[str, ...]:
        self.take("(")
        names: list[str] = []
        while not self.accept(")"):
            names.append(self.take(kind="ident"))
            self.accept(",")
        return tuple(names)

    def unary(self) -> Node:
        kind, value = self.peek()
        if kind == "number":
            self.i += 1
            return Number(float(value))
        if value == "(":
            self.i += 1
            node = self.binary(("+", "-"))
            self.take(")")
            return node
        if kind != "ident":
            raise PromQLError(f"unexpected {value or 'end'!r}")
        self.i += 1
        if value in AGGREGATIONS:
            by = self.label_list() if self.accept("by") else None
            self.take("(")
            expr = self.binary(("+", "-"))
            self.take(")")
            if by is None and self.accept("by"):
                by = self.label_list()
            return Aggregate(value, by, expr)
        if value in FUNCTIONS and self.peek()[1] == "(":
            self.i += 1
            args: list[Node] = []
            while not self.accept(")"):
                args.append(self.binary(("+", "-")))
                self.accept(",")
            return Call(value, tuple(args))
        return self.selector(value)

    def selector(self, name: str) -> Selector:
        matchers: list[Matcher] = []
        if self.accept("{"):
            while not self.accept("}"):
                label = self.take(kind="ident")
                op = self.take()
                if op not in ("=", "!=", "=~", "!~"):
                    raise PromQLError(f"label matcher {label}: unknown operator {op!r}")
                raw = self.take(kind="string")[1:-1].encode().decode("unicode_escape")
                pattern = re.compile(raw) if op in ("=~", "!~") else None
                matchers.append(Matcher(label, op, raw, pattern))
                self.accept(",")
        range_s = None
        if self.accept("["):
            duration = self.take(kind="duration")
            unit = "ms" if duration.endswith("ms") else duration[-1]
            range_s = float(duration[: -len(unit)]) * SECONDS[unit]
            self.take("]")
        return Selector(name, tuple(matchers), range_s)


def parse(text: str, variables: Mapping[str, str] | None = None) -> Node:
    """Parse `text` after replacing each `$name` of `variables` (longest names first)."""
    for name in sorted(variables or {}, key=len, reverse=True):
        text = text.replace(f"${name}", (variables or {})[name])
    return _Parser(text).parse()


# --- evaluation -----------------------------------------------------------------------------------

def rise(values: Sequence[float]) -> float:
    """A counter's increase over consecutive samples; a drop is a reset, after which it counts from 0."""
    total = 0.0
    for prev, cur in itertools.pairwise(values):
        total += cur - prev if cur >= prev else cur
    return total


def bucket_quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float:
    """Prometheus's histogram_quantile over (upper bound, cumulative count) pairs, the last one +Inf:
    linear interpolation inside the bucket that holds rank q * total (from 0 for the first bucket);
    the highest finite bound when the rank falls in +Inf; NaN without observations."""
    if q < 0:
        return -math.inf
    if q > 1:
        return math.inf
    ordered = sorted(buckets)
    if len(ordered) < 2 or not math.isinf(ordered[-1][0]):
        return math.nan
    counts: list[float] = []
    for _, c in ordered:  # rates of separately scraped buckets can be slightly non-monotonic
        counts.append(max(c, counts[-1]) if counts else c)
    total = counts[-1]
    if total <= 0:
        return math.nan
    rank = q * total
    b = next(i for i, c in enumerate(counts) if c >= rank)
    if b == len(ordered) - 1:
        return ordered[-2][0]
    upper = ordered[b][0]
    if b == 0 and upper <= 0:
        return upper
    lower, below = (0.0, 0.0) if b == 0 else (ordered[b - 1][0], counts[b - 1])
    return lower + (upper - lower) * (rank - below) / (counts[b] - below)


def _without(labels: Labels, drop: set[str]) -> Labels:
    return tuple((k, v) for k, v in labels if k not in drop)


def _only(labels: Labels, keep: Sequence[str]) -> Labels:
    return tuple((k, v) for k, v in labels if k in keep)


def _divide(a: float, b: float) -> float:
    if b == 0:
        return math.nan if a == 0 or math.isnan(a) else math.copysign(math.inf, a)
    return a / b


ARITHMETIC: dict[str, Callable[[float, float], float]] = {
    "+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b, "/": _divide,
}

REDUCERS: dict[str, Callable[[list[float]], float]] = {
    "sum": lambda xs: float(sum(xs)), "max": max, "min": min, "avg": lambda xs: sum(xs) / len(xs),
}


class Evaluator:
    """Evaluates parsed expressions at the time of any scrape of `history` (sorted by time)."""

    def __init__(self, history: Sequence[Scrape]) -> None:
        self.history = history
        self.times = [s.t for s in history]

    def at(self, node: Node, t: float) -> Vector | float:
        """The instant value at time `t`: a vector, or a float for scalar expressions."""
        if isinstance(node, Number):
            return node.value
        if isinstance(node, Selector):
            if node.range_s is not None:
                raise PromQLError(f"range selector {node.name}[...] outside rate()/increase()")
            i = bisect.bisect_right(self.times, t) - 1
            return self._select(node, self.history[i]) if i >= 0 else {}
        if isinstance(node, Call):
            return self._call(node, t)
        if isinstance(node, Aggregate):
            return self._aggregate(node, t)
        return self._binary(node, t)

    def range(self, node: Node) -> dict[Labels, list[tuple[float, float]]]:
        """Every series of `node` evaluated at each scrape time (a Grafana range query, step = scrape)."""
        out: dict[Labels, list[tuple[float, float]]] = {}
        for t in self.times:
            value = self.at(node, t)
            vector = {(): value} if isinstance(value, float) else value
            for labels, v in vector.items():
                out.setdefault(labels, []).append((t, v))
        return out

    def _select(self, node: Selector, scrape: Scrape) -> Vector:
        out: Vector = {}
        for labels, value in scrape.samples.get(node.name, ()):
            got = dict(labels)
            if all(m.matches(got.get(m.label, "")) for m in node.matchers):
                out[labels] = value
        return out

    def _call(self, node: Call, t: float) -> Vector | float:
        if node.func == "time":
            return float(t)
        if node.func in ("rate", "increase"):
            (arg,) = node.args
            if not isinstance(arg, Selector) or arg.range_s is None:
                raise PromQLError(f"{node.func}() takes a range selector")
            lo = bisect.bisect_right(self.times, t - arg.range_s)
            hi = bisect.bisect_right(self.times, t)
            points: dict[Labels, list[tuple[float, float]]] = {}
            for scrape in self.history[lo:hi]:
                for labels, value in self._select(arg, scrape).items():
                    points.setdefault(_without(labels, {"__name__"}), []).append((scrape.t, value))
            out: Vector = {}
            for labels, series in points.items():
                if len(series) < 2:
                    continue
                grown = rise([v for _, v in series])
                out[labels] = grown if node.func == "increase" else grown / (series[-1][0] - series[0][0])
            return out
        if node.func == "histogram_quantile":
            q_node, v_node = node.args
            q, vector = self.at(q_node, t), self.at(v_node, t)
            if not isinstance(q, float) or isinstance(vector, float):
                raise PromQLError("histogram_quantile(scalar, vector)")
            groups: dict[Labels, list[tuple[float, float]]] = {}
            for labels, value in vector.items():
                le = dict(labels).get("le")
                if le is not None:
                    groups.setdefault(_without(labels, {"le", "__name__"}), []).append((float(le), value))
            return {labels: bucket_quantile(q, buckets) for labels, buckets in groups.items()}
        raise PromQLError(f"unsupported function {node.func}()")

    def _aggregate(self, node: Aggregate, t: float) -> Vector:
        value = self.at(node.expr, t)
        if isinstance(value, float):
            raise PromQLError(f"{node.op}() of a scalar")
        groups: dict[Labels, list[float]] = {}
        for labels, v in value.items():
            key = _only(labels, node.by) if node.by is not None else ()
            groups.setdefault(key, []).append(v)
        return {key: REDUCERS[node.op](vs) for key, vs in groups.items()}

    def _binary(self, node: Binary, t: float) -> Vector | float:
        op = ARITHMETIC[node.op]
        lhs, rhs = self.at(node.lhs, t), self.at(node.rhs, t)
        if isinstance(lhs, float) and isinstance(rhs, float):
            return op(lhs, rhs)
        if isinstance(lhs, float):
            assert not isinstance(rhs, float)
            return {_without(k, {"__name__"}): op(lhs, v) for k, v in rhs.items()}
        if isinstance(rhs, float):
            return {_without(k, {"__name__"}): op(v, rhs) for k, v in lhs.items()}

        def key(labels: Labels) -> Labels:
            if node.on is not None:
                return _only(labels, node.on)
            return _without(labels, {"__name__", *node.ignoring})

        right: dict[Labels, float] = {}
        for labels, v in rhs.items():
            k = key(labels)
            if k in right:
                raise PromQLError("many-to-many matching: the right side has duplicate label sets")
            right[k] = v
        out: Vector = {}
        for labels, v in lhs.items():
            k = key(labels)
            if k not in right:
                continue
            result = _without(labels, {"__name__"}) if node.group_left else k
            if result in out:
                raise PromQLError("one-to-one matching found several left series for one label set: use group_left")
            out[result] = op(v, right[k])
        return out


def format_legend(template: str, labels: Labels) -> str:
    """Grafana's legendFormat: `{{label}}` replaced by the label's value (empty when absent)."""
    values = dict(labels)
    text = re.sub(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}", lambda m: values.get(m.group(1), ""), template)
    return " ".join(text.split())
