"""The IR: frozen dataclasses, one per construct of the surface language, each keeping the
source span it was written at.

The IR holds no decisions: `check` validates it and `generate` turns it into files. Expression
nodes carry a `kind` tag, so a whole spec dumps to plain JSON data and loads back (`to_data`,
`from_data`: what `ectc diff` compares and splices). `children` and `walk` are the one way to
visit nodes (as sqlglot's `Expression.walk`), for every module that reads the IR.

Plain dataclasses rather than pydantic models: the lowerer builds every node from typed parser
tokens, so validation would only cost time (importing pydantic and building its models was
~0.1 s of a ~0.25 s cold `ectc check`); tests/test_ir.py checks what the lowerer builds against
the annotations below.
"""

from __future__ import annotations

import dataclasses
import functools
import typing
from typing import Any, Iterator, Literal, Optional, Union

from .errors import NO_SPAN, Span

# Every node: immutable and hashable (frozen), built with keywords (kw_only: a base field
# without a default may precede a subclass's `kind` default), no per-instance dict (slots).
node = dataclasses.dataclass(frozen=True, kw_only=True, slots=True)


@node
class Node:
    span: Span


# ---- expressions ----------------------------------------------------------------------


@node
class Num(Node):
    kind: Literal["num"] = "num"
    value: float
    is_int: bool


@node
class Str(Node):
    kind: Literal["str"] = "str"
    value: str


@node
class Bool(Node):
    kind: Literal["bool"] = "bool"
    value: bool


@node
class Name(Node):
    kind: Literal["name"] = "name"
    id: str


@node
class ListExpr(Node):
    kind: Literal["list"] = "list"
    items: tuple[Expr, ...]


@node
class Call(Node):
    kind: Literal["call"] = "call"
    func: str
    args: tuple[Expr, ...]


@node
class Attr(Node):
    kind: Literal["attr"] = "attr"
    obj: Expr
    attr: str


@node
class Index(Node):
    kind: Literal["index"] = "index"
    obj: Expr
    index: Expr


@node
class Unary(Node):
    kind: Literal["unary"] = "unary"
    op: Literal["-", "not"]
    operand: Expr


@node
class Binary(Node):
    kind: Literal["binary"] = "binary"
    op: Literal["+", "-", "*", "/", "%", "==", "!=", "<", "<=", ">", ">=", "and", "or", "in"]
    left: Expr
    right: Expr


@node
class IfElse(Node):
    kind: Literal["if"] = "if"
    cond: Expr
    then: Expr
    orelse: Expr


# An expression node; its `kind` says which (and survives a dump to JSON).
Expr = Union[Num, Str, Bool, Name, ListExpr, Call, Attr, Index, Unary, Binary, IfElse]


# ---- settings: `key value` or `key { ... }`, validated against a schema in check ------------


@node
class Setting(Node):
    key: str
    value: Optional[Expr] = None
    block: Optional[tuple[Setting, ...]] = None


# ---- the experiment -------------------------------------------------------------------


@node
class Template(Node):
    """A jinja2 template given in the spec (label, prompt, system, rubric)."""

    text: str


@node
class Interval(Node):
    low: float
    high: float
    low_closed: bool
    high_closed: bool

    def contains(self, x: float) -> bool:
        above = x >= self.low if self.low_closed else x > self.low
        below = x <= self.high if self.high_closed else x < self.high
        return above and below


@node
class AxisValue(Node):
    name: str
    description: Optional[str] = None


@node
class Axis(Node):
    name: str
    type: Literal["real", "int", "enum"]
    domain: Optional[Interval] = None
    values: tuple[AxisValue, ...] = ()
    train: Optional[Expr] = None
    holdout_intervals: tuple[Interval, ...] = ()
    holdout_values: tuple[Name, ...] = ()
    deploy: Optional[Expr] = None


@node
class Source(Node):
    type: Literal["generate", "jsonl", "csv", "disk", "llm"]
    arg: Optional[str] = None


@node
class DataField(Node):
    name: str
    type: str
    type_span: Span
    expr: Optional[Expr] = None
    fallback: Optional[Expr] = None


@node
class Assign(Node):
    name: str
    expr: Expr


@node
class DataBlock(Node):
    name: str
    source: Source
    fields: tuple[DataField, ...] = ()
    assigns: tuple[Assign, ...] = ()
    settings: tuple[Setting, ...] = ()


@node
class Response(Node):
    type: Literal["choice", "text"]
    choices: tuple[str, ...] = ()
    other: Optional[str] = None  # a choice response's outcome for any answer outside `choices`
    settings: tuple[Setting, ...] = ()


@node
class Feedback(Node):
    assigns: tuple[Assign, ...]


@node
class VerdictField(Node):
    name: str
    type: Literal["int", "real", "bool", "text", "enum"]
    low: Optional[float] = None
    high: Optional[float] = None
    values: tuple[str, ...] = ()


@node
class Monitor(Node):
    name: str
    name_span: Span = NO_SPAN
    type: Literal["llm", "lexicon", "expr"]
    model: Optional[str] = None
    expr: Optional[Expr] = None
    settings: tuple[Setting, ...] = ()
    returns: tuple[VerdictField, ...] = ()


@node
class ArmPart(Node):
    """One `key value` of an arm; kept as written so check can point at it."""

    key: Literal["label", "label_fixed", "encode", "filter", "reuse", "infer"]
    word: Optional[str] = None
    expr: Optional[Expr] = None


@node
class Arm(Node):
    name: str
    parts: tuple[ArmPart, ...]

    def part(self, key: str) -> Optional[ArmPart]:
        found = [p for p in self.parts if p.key == key]
        return found[-1] if found else None


@node
class Model(Node):
    type: Literal["tiny", "hf", "gguf"]
    path: Optional[str] = None
    package: Optional[str] = None  # gguf: the installed package that ships the file `path`
    settings: tuple[Setting, ...] = ()


@node
class Profile(Node):
    name: str
    default: bool = False
    models: tuple[Model, ...] = ()
    settings: tuple[Setting, ...] = ()
    # What it starts from, as written: another profile of the experiment (`extends NAME`) or a
    # shipped one (`from "ectc:SPEC/PROFILE"`); profiles.resolve merges the settings in.
    extends: Optional[Name] = None
    library: Optional[Str] = None


@node
class Metric(Node):
    name: str
    expr: Expr
    where: Optional[Expr] = None


@node
class Sweep(Node):
    axis: str
    axis_span: Span = NO_SPAN  # where the axis is named, for a caret under it
    low: Optional[float] = None
    high: Optional[float] = None
    step: Optional[float] = None
    values: tuple[Name, ...] = ()


@node
class Comparison(Node):
    pairs: tuple[tuple[Name, Name], ...]
    metrics: tuple[Name, ...]


@node
class Probe(Node):
    name: str
    name_span: Span = NO_SPAN
    settings: tuple[Setting, ...] = ()
    assigns: tuple[Assign, ...] = ()


@node
class Require(Node):
    """`require PROBE OP NUMBER`: a bound on a probe's share, checked before any arm trains."""
    probe: Name
    op: str
    value: float


@node
class Evaluate(Node):
    probes: tuple[Probe, ...] = ()
    metrics: tuple[Metric, ...] = ()
    sweeps: tuple[Sweep, ...] = ()
    comparisons: tuple[Comparison, ...] = ()
    settings: tuple[Setting, ...] = ()
    requires: tuple[Require, ...] = ()


@node
class Experiment(Node):
    name: str
    descriptions: tuple[Template, ...] = ()
    axes: tuple[Axis, ...] = ()
    labels: tuple[Template, ...] = ()
    unlabeled: tuple[Template, ...] = ()
    systems: tuple[Template, ...] = ()
    prompts: tuple[Template, ...] = ()
    data: tuple[DataBlock, ...] = ()
    responses: tuple[Response, ...] = ()
    feedbacks: tuple[Feedback, ...] = ()
    monitors: tuple[Monitor, ...] = ()
    arms: tuple[Arm, ...] = ()
    profiles: tuple[Profile, ...] = ()
    evaluates: tuple[Evaluate, ...] = ()

    # Singletons are stored as tuples so check can point at a duplicate; these read the one.
    @property
    def axis(self) -> Optional[Axis]:
        return self.axes[0] if self.axes else None

    @property
    def label(self) -> Optional[Template]:
        return self.labels[0] if self.labels else None

    @property
    def prompt(self) -> Optional[Template]:
        return self.prompts[0] if self.prompts else None

    @property
    def system(self) -> Optional[Template]:
        return self.systems[0] if self.systems else None

    @property
    def response(self) -> Optional[Response]:
        return self.responses[0] if self.responses else None

    @property
    def feedback(self) -> Optional[Feedback]:
        return self.feedbacks[0] if self.feedbacks else None

    @property
    def evaluate(self) -> Optional[Evaluate]:
        return self.evaluates[0] if self.evaluates else None


@node
class Spec(Node):
    experiments: tuple[Experiment, ...]


# ---- visiting, and the IR as plain data --------------------------------------------------


@functools.cache
def _field_names(cls: type) -> Optional[tuple[str, ...]]:
    """The fields of a node (or Span) class in declaration order; None for anything else."""
    if not dataclasses.is_dataclass(cls):
        return None
    return tuple(f.name for f in dataclasses.fields(cls))


def _nodes_in(value: Any, out: list[Node]) -> None:
    if isinstance(value, Node):
        out.append(value)
    elif type(value) is tuple:
        for item in value:
            _nodes_in(item, out)


def children(n: Node) -> list[Node]:
    """The nodes directly below `n`, in field order (spans are not nodes)."""
    out: list[Node] = []
    for name in _field_names(type(n)):
        if name != "span":
            _nodes_in(getattr(n, name), out)
    return out


def walk(n: Node) -> Iterator[Node]:
    """`n` and every node below it, depth first, each parent before its children."""
    stack = [n]
    while stack:
        current = stack.pop()
        yield current
        stack.extend(reversed(children(current)))


def to_data(value: Any) -> Any:
    """Nodes (and spans) as dicts of their fields in declaration order, tuples as lists: JSON data."""
    names = _field_names(type(value))
    if names is not None:
        return {name: to_data(getattr(value, name)) for name in names}
    if isinstance(value, (tuple, list)):
        return [to_data(v) for v in value]
    return value


# Source positions, which no comparison of meaning looks at.
SPAN_FIELDS = frozenset({"span", "type_span", "axis_span", "name_span"})


def from_data(tp: Any, data: Any) -> Any:
    """The inverse of `to_data` for a value of type `tp` (e.g. `Spec`), also for data spliced
    together from such dumps, as `ectc diff` does. The data is trusted, not validated."""
    return _loader(tp)(data)


def _identity(data: Any) -> Any:
    return data


@functools.cache
def _expr_kinds() -> dict[str, type]:
    return {cls.__dataclass_fields__["kind"].default: cls for cls in typing.get_args(Expr)}


@functools.cache
def _loader(tp: Any):
    """A function that loads data of type `tp`, worked out once per type from the annotations."""
    origin = typing.get_origin(tp)
    if origin is Union:
        options = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(options) == 1:
            inner = _loader(options[0])
            return lambda d: None if d is None else inner(d)
        by_kind = {kind: _loader(cls) for kind, cls in _expr_kinds().items()}
        return lambda d: None if d is None else by_kind[d["kind"]](d)
    if origin is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            item = _loader(args[0])
            return lambda d: tuple(item(x) for x in d)
        items = [_loader(a) for a in args]
        return lambda d: tuple(f(x) for f, x in zip(items, d))
    if dataclasses.is_dataclass(tp):
        fields: dict[str, Any] = {}  # filled on first use: node types refer to themselves

        def load(d: dict) -> Any:
            if not fields:
                hints = typing.get_type_hints(tp)
                fields.update({name: _loader(hints[name]) for name in _field_names(tp)})
            values = {k: fields[k](v) for k, v in d.items()}
            for name in SPAN_FIELDS & fields.keys() - values.keys():
                values[name] = NO_SPAN  # span-free data, as `ectc diff` compares it
            return tp(**values)
        return load
    return _identity
