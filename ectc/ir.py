"""The IR: frozen, declarative pydantic models that keep the source span of every construct.

The IR mirrors the surface language one class per construct. It holds no decisions: `check`
validates it and `generate` turns it into files. Expression nodes carry a `kind` tag so a whole
spec serialises to JSON and back (the basis of hashing and `ectc diff`).

`construct`, `to_data` and `from_data` do what `model_construct`, `model_dump(mode="json")`
and `model_validate` do, for trusted data, without building pydantic's validators and
serialisers: that build alone costs ~0.2 s per process, more than a cold `ectc check` may
take. tests/test_ir.py holds them equal to pydantic's own.
"""

from __future__ import annotations

import functools
import typing
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field

from .errors import Span


class Node(BaseModel):
    # defer_build: schemas are built on first use, not at import, which keeps `ectc check` fast.
    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)

    span: Span


# ---- expressions ----------------------------------------------------------------------


class Num(Node):
    kind: Literal["num"] = "num"
    value: float
    is_int: bool


class Str(Node):
    kind: Literal["str"] = "str"
    value: str


class Bool(Node):
    kind: Literal["bool"] = "bool"
    value: bool


class Name(Node):
    kind: Literal["name"] = "name"
    id: str


class ListExpr(Node):
    kind: Literal["list"] = "list"
    items: tuple["Expr", ...]


class Call(Node):
    kind: Literal["call"] = "call"
    func: str
    args: tuple["Expr", ...]


class Attr(Node):
    kind: Literal["attr"] = "attr"
    obj: "Expr"
    attr: str


class Index(Node):
    kind: Literal["index"] = "index"
    obj: "Expr"
    index: "Expr"


class Unary(Node):
    kind: Literal["unary"] = "unary"
    op: Literal["-", "not"]
    operand: "Expr"


class Binary(Node):
    kind: Literal["binary"] = "binary"
    op: Literal["+", "-", "*", "/", "%", "==", "!=", "<", "<=", ">", ">=", "and", "or", "in"]
    left: "Expr"
    right: "Expr"


class IfElse(Node):
    kind: Literal["if"] = "if"
    cond: "Expr"
    then: "Expr"
    orelse: "Expr"


Expr = Annotated[
    Union[Num, Str, Bool, Name, ListExpr, Call, Attr, Index, Unary, Binary, IfElse],
    Field(discriminator="kind"),
]


# ---- settings: `key value` or `key { ... }`, validated against a schema in check ------------


class Setting(Node):
    key: str
    value: Optional[Expr] = None
    block: Optional[tuple["Setting", ...]] = None


# ---- the experiment -------------------------------------------------------------------


class Template(Node):
    """A jinja2 template given in the spec (label, prompt, system, rubric)."""

    text: str


class Interval(Node):
    low: float
    high: float
    low_closed: bool
    high_closed: bool

    def contains(self, x: float) -> bool:
        above = x >= self.low if self.low_closed else x > self.low
        below = x <= self.high if self.high_closed else x < self.high
        return above and below


class AxisValue(Node):
    name: str
    description: Optional[str] = None


class Axis(Node):
    name: str
    type: Literal["real", "int", "enum"]
    domain: Optional[Interval] = None
    values: tuple[AxisValue, ...] = ()
    train: Optional[Expr] = None
    holdout_intervals: tuple[Interval, ...] = ()
    holdout_values: tuple[Name, ...] = ()
    deploy: Optional[Expr] = None


class Source(Node):
    type: Literal["generate", "jsonl", "csv", "disk", "llm"]
    arg: Optional[str] = None


class DataField(Node):
    name: str
    type: str
    type_span: Span
    expr: Optional[Expr] = None
    fallback: Optional[Expr] = None


class Assign(Node):
    name: str
    expr: Expr


class DataBlock(Node):
    name: str
    source: Source
    fields: tuple[DataField, ...] = ()
    assigns: tuple[Assign, ...] = ()
    settings: tuple[Setting, ...] = ()


class Response(Node):
    type: Literal["choice", "text"]
    choices: tuple[str, ...] = ()
    settings: tuple[Setting, ...] = ()


class Feedback(Node):
    assigns: tuple[Assign, ...]


class VerdictField(Node):
    name: str
    type: Literal["int", "real", "bool", "text", "enum"]
    low: Optional[float] = None
    high: Optional[float] = None
    values: tuple[str, ...] = ()


class Monitor(Node):
    name: str
    type: Literal["llm", "lexicon", "expr"]
    model: Optional[str] = None
    expr: Optional[Expr] = None
    settings: tuple[Setting, ...] = ()
    returns: tuple[VerdictField, ...] = ()


class ArmPart(Node):
    """One `key value` of an arm; kept as written so check can point at it."""

    key: Literal["label", "label_fixed", "encode", "filter", "reuse", "infer"]
    word: Optional[str] = None
    expr: Optional[Expr] = None


class Arm(Node):
    name: str
    parts: tuple[ArmPart, ...]

    def part(self, key: str) -> Optional[ArmPart]:
        found = [p for p in self.parts if p.key == key]
        return found[-1] if found else None


class Model(Node):
    type: Literal["tiny", "hf", "gguf"]
    path: Optional[str] = None
    package: Optional[str] = None  # gguf: the installed package that ships the file `path`
    settings: tuple[Setting, ...] = ()


class Profile(Node):
    name: str
    default: bool = False
    models: tuple[Model, ...] = ()
    settings: tuple[Setting, ...] = ()


class Metric(Node):
    name: str
    expr: Expr
    where: Optional[Expr] = None


class Sweep(Node):
    axis: str
    low: Optional[float] = None
    high: Optional[float] = None
    step: Optional[float] = None
    values: tuple[Name, ...] = ()


class Comparison(Node):
    pairs: tuple[tuple[Name, Name], ...]
    metrics: tuple[Name, ...]


class Probe(Node):
    name: str
    settings: tuple[Setting, ...] = ()
    assigns: tuple[Assign, ...] = ()


class Evaluate(Node):
    probes: tuple[Probe, ...] = ()
    metrics: tuple[Metric, ...] = ()
    sweeps: tuple[Sweep, ...] = ()
    comparisons: tuple[Comparison, ...] = ()
    settings: tuple[Setting, ...] = ()


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


class Spec(Node):
    experiments: tuple[Experiment, ...]




# ---- fast construction and (de)serialisation for trusted data ------------------------------

_MISSING = object()
_set = object.__setattr__


@functools.cache
def _field_defaults(cls) -> tuple[tuple[str, Any], ...]:
    return tuple((name, _MISSING if field.is_required() else field.get_default(call_default_factory=True))
                 for name, field in cls.__pydantic_fields__.items())


def construct(cls, **fields):
    """`cls.model_construct(**fields)` in a quarter of the time (no alias handling: the IR has
    no aliases). The caller vouches for the types."""
    node = cls.__new__(cls)
    _set(node, "__dict__", {name: fields[name] if name in fields else default
                            for name, default in _field_defaults(cls)})
    _set(node, "__pydantic_fields_set__", set(fields))
    _set(node, "__pydantic_extra__", None)
    _set(node, "__pydantic_private__", None)
    return node


def to_data(value: Any) -> Any:
    """`node.model_dump(mode="json")`: nodes to dicts, tuples to lists."""
    if isinstance(value, BaseModel):
        return {k: to_data(v) for k, v in value.__dict__.items()}
    if isinstance(value, (tuple, list)):
        return [to_data(v) for v in value]
    return value


@functools.cache
def _hints(cls) -> dict[str, Any]:
    hints = typing.get_type_hints(cls, include_extras=True)
    return {name: hints[name] for name in cls.__pydantic_fields__}


@functools.cache
def _expr_kinds() -> dict[str, type]:
    members = typing.get_args(typing.get_args(Expr)[0])
    return {cls.__pydantic_fields__["kind"].default: cls for cls in members}


def from_data(tp: Any, data: Any) -> Any:
    """`TypeAdapter(tp).validate_python(data)` for data that `to_data` made (or spliced
    together from such data, as `ectc diff` does)."""
    return _loader(tp)(data)


def _identity(data: Any) -> Any:
    return data


@functools.cache
def _loader(tp: Any):
    """A function that loads data of type `tp`; worked out once per type (reading the type
    hints on every value was three quarters of the time)."""
    origin = typing.get_origin(tp)
    if origin is Annotated:
        return _loader(typing.get_args(tp)[0])
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
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        fields: dict[str, Any] = {}  # filled on first use: node types refer to themselves

        def load(d: dict) -> Any:
            if not fields:
                fields.update({name: _loader(hint) for name, hint in _hints(tp).items()})
            return construct(tp, **{k: fields[k](v) for k, v in d.items()})
        return load
    return _identity
