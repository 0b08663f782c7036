"""lower: lark tree -> IR. One short method per grammar rule; spans come from the tokens."""

from __future__ import annotations

import textwrap
from typing import Any, Optional

from .lark_quiet import Token, Tree

from . import ir
from .parse import tree_shape
from .errors import NO_SPAN, CompileError, Diagnostic, Span

_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\", "{": "\\{", "}": "\\}"}


def span_of(meta_or_token: Any) -> Span:
    m = meta_or_token
    if type(m) is Span:
        return m
    return Span(line=m.line, column=m.column, end_line=m.end_line, end_column=m.end_column)


def lower(tree: Tree) -> ir.Spec:
    """Lower a parse tree to the IR; raise CompileError for malformed literals."""
    lowerer = _Lower()
    spec, _ = lowerer.walk(tree)
    if lowerer.diagnostics:
        raise CompileError(lowerer.diagnostics)
    return spec


def string_value(tok: Token) -> tuple[str, list[Diagnostic]]:
    """The value of a STRING or LONG_STRING token, and a diagnostic for each unknown escape."""
    if tok.type == "LONG_STRING":
        # A rubric written as an indented block reads as the user laid it out.
        return textwrap.dedent(str(tok)[3:-3].lstrip("\n")).rstrip(), []
    body = str(tok)[1:-1]
    out: list[str] = []
    problems: list[Diagnostic] = []
    i = 0
    while i < len(body):
        ch = body[i]
        if ch == "\\" and i + 1 < len(body):
            nxt = body[i + 1]
            if nxt not in _ESCAPES or nxt in "{}":
                col = tok.column + 1 + i
                problems.append(Diagnostic(Span(line=tok.line, column=col, end_line=tok.line, end_column=col + 2),
                                           "E006", f"unknown escape `\\{nxt}` in string",
                                           'use one of \\n \\t \\r \\" \\\\'))
            else:
                out.append(_ESCAPES[nxt])
            i += 2
            continue
        out.append(ch)
        i += 1
    return "".join(out), problems


def _setting_list(items: list) -> tuple[ir.Setting, ...]:
    return tuple(i for i in items if isinstance(i, ir.Setting))


class _Lower:
    """One method per grammar rule, called bottom-up with (meta, lowered children)."""

    def __init__(self) -> None:
        self.diagnostics: list[Diagnostic] = []
        self.anonymous, self.keep_tokens, self.inline = tree_shape()

    def walk(self, tree: Tree) -> tuple[Any, Optional[Span]]:
        """(lowered value, span of the subtree's text) of a tree parsed with every token kept.

        Spans run from the first token to the last, keywords and brackets included, which is
        what lark's propagate_positions gives, at a fraction of its cost. Anonymous tokens are
        then dropped unless the rule is a `!rule`, and `?rules` left with one child are inlined,
        so the methods below see the children lark's default tree would have.
        (A plain walk rather than lark's Transformer: its v_args wrapper re-wraps the method
        with functools.update_wrapper on every node.)"""
        children = []
        first = last = None
        keep = tree.data in self.keep_tokens
        for child in tree.children:
            if child is None:
                children.append(None)
                continue
            if type(child) is Tree:
                value, where = self.walk(child)
                children.append(value)
                if where is None:
                    continue
                start = end = where
            else:
                start = end = child
                if keep or child.type not in self.anonymous:
                    children.append(child)
            if first is None:
                first = start
            last = end
        span = None if first is None else Span(first.line, first.column, last.end_line, last.end_column)
        method = getattr(self, tree.data, None)
        if method is None:
            if tree.data in self.inline and len(children) == 1:
                return children[0], span
            raise AssertionError(f"no lowering for grammar rule `{tree.data}`")
        return method(span or NO_SPAN, children), span

    # ---- terminals and small pieces --------------------------------------------------

    def name(self, meta, children):
        tok = children[0]
        return ir.Name(span=span_of(tok), id=str(tok))

    def arm_word(self, meta, children):
        return self.name(meta, children)

    def string(self, meta, children):
        tok: Token = children[0]
        value, problems = string_value(tok)
        self.diagnostics.extend(problems)
        return ir.Str(span=span_of(tok), value=value)

    def signed_number(self, meta, children):
        negative = len(children) == 2
        text = str(children[-1])
        value = float(text)  # parse refused literals out of range (E010)
        return ir.Num(span=span_of(meta),
            value=-value if negative else value,
            is_int=text.isdigit(),
        )

    def bracket(self, meta, children):
        return str(children[0])

    def interval(self, meta, children):
        open_, low, high, close = children
        if open_ not in "[(" or close not in "])":
            self.diagnostics.append(
                Diagnostic(span_of(meta), "E007", "an interval opens with `[` or `(` and closes with `]` or `)`",
                           "write `[0.0, 0.5)` for 0 <= x < 0.5")
            )
        return ir.Interval(span=span_of(meta), low=low.value, high=high.value,
            low_closed=open_ == "[", high_closed=close == "]",
        )

    # ---- expressions -----------------------------------------------------------------

    def number(self, meta, children):
        text = str(children[0])
        return ir.Num(span=span_of(meta), value=float(text), is_int=text.isdigit())

    def string_lit(self, meta, children):
        return children[0]

    def true_lit(self, meta, children):
        return ir.Bool(span=span_of(meta), value=True)

    def false_lit(self, meta, children):
        return ir.Bool(span=span_of(meta), value=False)

    def name_ref(self, meta, children):
        return children[0]

    def list_lit(self, meta, children):
        return ir.ListExpr(span=span_of(meta), items=tuple(c for c in children if c is not None))

    def call(self, meta, children):
        func, *args = children
        return ir.Call(span=span_of(meta), func=func.id, args=tuple(a for a in args if a is not None))

    def attribute(self, meta, children):
        return ir.Attr(span=span_of(meta), obj=children[0], attr=children[1].id)

    def index(self, meta, children):
        return ir.Index(span=span_of(meta), obj=children[0], index=children[1])

    def neg(self, meta, children):
        return ir.Unary(span=span_of(meta), op="-", operand=children[0])

    def not_(self, meta, children):
        return ir.Unary(span=span_of(meta), op="not", operand=children[0])

    def _binary(self, meta, op, left, right):
        return ir.Binary(span=span_of(meta), op=op, left=left, right=right)

    def binary(self, meta, children):
        left, op, right = children
        return self._binary(meta, op, left, right)

    def compare_op(self, meta, children):
        return self.binary(meta, children)

    def in_op(self, meta, children):
        return self._binary(meta, "in", children[0], children[1])

    def and_(self, meta, children):
        return self._binary(meta, "and", children[0], children[1])

    def or_(self, meta, children):
        return self._binary(meta, "or", children[0], children[1])

    def comp_op(self, meta, children):
        return str(children[0])

    add_op = mul_op = comp_op

    def if_then_else(self, meta, children):
        cond, then, orelse = children
        return ir.IfElse(span=span_of(meta), cond=cond, then=then, orelse=orelse)

    # ---- settings and values -----------------------------------------------------------

    def true(self, meta, children):
        return ir.Bool(span=span_of(meta), value=True)

    def false(self, meta, children):
        return ir.Bool(span=span_of(meta), value=False)

    def bare_name(self, meta, children):
        return children[0]

    def list_value(self, meta, children):
        return self.list_lit(meta, children)

    def call_value(self, meta, children):
        return self.call(meta, children)

    def setting_value(self, meta, children):
        key, value = children
        return ir.Setting(span=span_of(meta), key=key.id, value=value)

    def setting_block(self, meta, children):
        key, block = children
        return ir.Setting(span=span_of(meta), key=key.id, block=block)

    def block(self, meta, children):
        return tuple(children)

    # ---- axis -------------------------------------------------------------------------

    def real_axis(self, meta, children):
        return ("real", children[0])

    def int_axis(self, meta, children):
        return ("int", children[0])

    def enum_axis(self, meta, children):
        return ("enum", None)

    def axis_value(self, meta, children):
        name, description = children
        return ir.AxisValue(span=span_of(meta), name=name.id,
                            description=description.value if description else None)

    def axis_train(self, meta, children):
        return ("train", children[0])

    def axis_deploy(self, meta, children):
        return ("deploy", children[0])

    def holdout_part(self, meta, children):
        return children[0]

    def axis_holdout(self, meta, children):
        return ("holdout", children)

    def axis(self, meta, children):
        name, (type_, domain), *items = children
        fields: dict[str, Any] = {"values": [], "holdout_intervals": [], "holdout_values": []}
        for item in items:
            if isinstance(item, ir.AxisValue):
                fields["values"].append(item)
            elif item[0] == "holdout":
                for part in item[1]:
                    key = "holdout_intervals" if isinstance(part, ir.Interval) else "holdout_values"
                    fields[key].append(part)
            else:
                fields[item[0]] = item[1]
        return ir.Axis(span=span_of(meta), name=name.id, type=type_, domain=domain,
            values=tuple(fields.pop("values")),
            holdout_intervals=tuple(fields.pop("holdout_intervals")),
            holdout_values=tuple(fields.pop("holdout_values")),
            **fields,
        )

    # ---- templates ----------------------------------------------------------------------

    def _template(group):
        def build(self, meta, children):
            return (group, [ir.Template(span=children[0].span, text=children[0].value)])
        return build

    description = _template("descriptions")
    label = _template("labels")
    unlabeled = _template("unlabeled")
    system = _template("systems")
    prompt = _template("prompts")

    # ---- data ---------------------------------------------------------------------------

    def src_generate(self, meta, children):
        return ir.Source(span=span_of(meta), type="generate")

    def _src(self, type_):
        def build(meta, children):
            return ir.Source(span=span_of(meta), type=type_, arg=children[0].value)
        return build

    def src_jsonl(self, meta, children):
        return self._src("jsonl")(meta, children)

    def src_csv(self, meta, children):
        return self._src("csv")(meta, children)

    def src_disk(self, meta, children):
        return self._src("disk")(meta, children)

    def src_hf(self, meta, children):
        return self._src("hf")(meta, children)

    def src_llm(self, meta, children):
        return self._src("llm")(meta, children)

    def type(self, meta, children):
        return children[0]

    def field(self, meta, children):
        # `["=" expr ["fallback" expr]]`: with every token kept, lark leaves a placeholder per
        # absent symbol, keywords included, so count the present values rather than slots.
        name, type_, *optional = children
        present = [c for c in optional if c is not None]
        expr = present[0] if present else None
        fallback = present[1] if len(present) > 1 else None
        return ir.DataField(span=span_of(meta), name=name.id, type=type_.id, type_span=type_.span,
                            expr=expr, fallback=fallback)

    def assign(self, meta, children):
        return ir.Assign(span=span_of(meta), name=children[0].id, expr=children[1])

    def data(self, meta, children):
        name, *rest = children
        source = next((c for c in rest if isinstance(c, ir.Source)), None)
        items = [c for c in rest if c is not None and c is not source]
        return ir.DataBlock(span=span_of(meta), name=name.id,
            source=source or ir.Source(span=name.span, type="generate"),
            fields=tuple(i for i in items if isinstance(i, ir.DataField)),
            assigns=tuple(i for i in items if isinstance(i, ir.Assign)),
            settings=_setting_list(items),
        )

    # ---- response, feedback ---------------------------------------------------------------

    def response_choice(self, meta, children):
        other = [c for c in children if isinstance(c, tuple)]
        return ir.Response(span=span_of(meta), type="choice",
                           choices=tuple(c.value for c in children if isinstance(c, ir.Str)),
                           other=other[0][1] if other else None)

    def response_other(self, meta, children):
        return ("other", children[0].value)

    def response_text(self, meta, children):
        return ir.Response(span=span_of(meta), type="text", settings=children[0] or ())

    def feedback(self, meta, children):
        return ir.Feedback(span=span_of(meta), assigns=tuple(children))

    # ---- monitors -----------------------------------------------------------------------

    def monitor_llm(self, meta, children):
        return {"type": "llm", "model": children[0].value}

    def monitor_lexicon(self, meta, children):
        return {"type": "lexicon"}

    def monitor_expr(self, meta, children):
        return {"type": "expr", "expr": children[0]}

    def vt_int(self, meta, children):
        return {"type": "int", "low": children[0].value, "high": children[1].value}

    def vt_real(self, meta, children):
        return {"type": "real", "low": children[0].value, "high": children[1].value}

    def vt_bool(self, meta, children):
        return {"type": "bool"}

    def vt_text(self, meta, children):
        return {"type": "text"}

    def vt_enum(self, meta, children):
        return {"type": "enum", "values": tuple(c.id for c in children)}

    def verdict_field(self, meta, children):
        return ir.VerdictField(span=span_of(meta), name=children[0].id, **children[1])

    def returns(self, meta, children):
        return ("returns", tuple(children))

    def monitor(self, meta, children):
        name, kind, *items = children
        returns = [i for i in items if isinstance(i, tuple)]
        return ir.Monitor(span=span_of(meta), name=name.id, name_span=name.span, **kind,
            settings=_setting_list(items),
            returns=returns[-1][1] if returns else (),
        )

    # ---- arms ----------------------------------------------------------------------------

    def _arm_part(self, key):
        def build(meta, children):
            value = children[0]
            if isinstance(value, ir.Name) and key != "filter" and key != "label_fixed":
                return ir.ArmPart(span=span_of(meta), key=key, word=value.id)
            return ir.ArmPart(span=span_of(meta), key=key, expr=value)
        return build

    def arm_label(self, meta, children):
        return self._arm_part("label")(meta, children)

    def arm_label_fixed(self, meta, children):
        return self._arm_part("label_fixed")(meta, children)

    def arm_encode(self, meta, children):
        return self._arm_part("encode")(meta, children)

    def arm_filter(self, meta, children):
        return self._arm_part("filter")(meta, children)

    def arm_reuse(self, meta, children):
        return self._arm_part("reuse")(meta, children)

    def arm_infer(self, meta, children):
        return self._arm_part("infer")(meta, children)

    def arm(self, meta, children):
        name, *parts = children
        return ir.Arm(span=span_of(meta), name=name.id, parts=tuple(parts))

    def arms(self, meta, children):
        return ("arms", tuple(children))

    # ---- profiles ------------------------------------------------------------------------

    def model_tiny(self, meta, children):
        return ir.Model(span=span_of(meta), type="tiny", settings=children[0] or ())

    def model_hf(self, meta, children):
        return ir.Model(span=span_of(meta), type="hf", path=children[0].value, settings=children[1] or ())

    def model_gguf(self, meta, children):
        # `in` leaves a placeholder of its own where the package is absent: take the strings.
        path, *package = [c for c in children if isinstance(c, ir.Str)]
        block = children[-1]
        return ir.Model(span=span_of(meta), type="gguf", path=path.value,
                        package=package[0].value if package else None, settings=block or ())

    def default_mark(self, meta, children):
        return True

    def profile_extends(self, meta, children):
        return {"extends": children[0]}

    def profile_from(self, meta, children):
        return {"library": children[0]}

    def profile(self, meta, children):
        name, default, base, *items = children
        return ir.Profile(span=span_of(meta), name=name.id, default=bool(default),
            models=tuple(i for i in items if isinstance(i, ir.Model)),
            settings=_setting_list(items),
            **(base or {}),
        )

    # ---- evaluation ----------------------------------------------------------------------

    def metric(self, meta, children):
        name, expr, *optional = children
        where = next((c for c in optional if c is not None), None)
        return ir.Metric(span=span_of(meta), name=name.id if isinstance(name, ir.Name) else str(name), expr=expr, where=where)

    def sweep_range(self, meta, children):
        axis, low, high, step = children
        return ir.Sweep(span=span_of(meta), axis=axis.id, axis_span=axis.span, low=low.value, high=high.value, step=step.value)

    def sweep_values(self, meta, children):
        axis, *values = children
        return ir.Sweep(span=span_of(meta), axis=axis.id, axis_span=axis.span, values=tuple(v for v in values if v is not None))

    def arm_pair(self, meta, children):
        return (children[0], children[1])

    def compare(self, meta, children):
        return ir.Comparison(span=span_of(meta),
            pairs=tuple(c for c in children if isinstance(c, tuple)),
            metrics=tuple(c for c in children if isinstance(c, ir.Name)),
        )

    def probe(self, meta, children):
        name, *items = children
        return ir.Probe(span=span_of(meta), name=name.id, name_span=name.span, settings=_setting_list(items),
            assigns=tuple(i for i in items if isinstance(i, ir.Assign)),
        )

    def require(self, meta, children):
        probe, op, value = children
        return ir.Require(span=span_of(meta), probe=probe, op=str(op), value=value.value)

    def evaluate(self, meta, children):
        return ir.Evaluate(span=span_of(meta),
            probes=tuple(c for c in children if isinstance(c, ir.Probe)),
            metrics=tuple(c for c in children if isinstance(c, ir.Metric)),
            sweeps=tuple(c for c in children if isinstance(c, ir.Sweep)),
            comparisons=tuple(c for c in children if isinstance(c, ir.Comparison)),
            settings=_setting_list(children),
            requires=tuple(c for c in children if isinstance(c, ir.Require)),
        )

    # ---- experiment ----------------------------------------------------------------------

    def experiment(self, meta, children):
        name, *items = children
        groups: dict[str, list] = {}
        for item in items:
            groups.setdefault(self._group_of(item), []).extend(
                item[1] if isinstance(item, tuple) else [item]
            )
        return ir.Experiment(span=span_of(meta), name=name.id, **{k: tuple(v) for k, v in groups.items()})

    def _group_of(self, item) -> str:
        if isinstance(item, tuple):
            return item[0]
        return _GROUPS[type(item)]

    def start(self, meta, children):
        return ir.Spec(span=span_of(meta), experiments=tuple(children))


_GROUPS = {
    ir.Axis: "axes",
    ir.DataBlock: "data",
    ir.Response: "responses",
    ir.Feedback: "feedbacks",
    ir.Monitor: "monitors",
    ir.Profile: "profiles",
    ir.Evaluate: "evaluates",
}
