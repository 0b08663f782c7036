"""fmt: the canonical layout of a spec (`format_spec`), like gofmt for .ect files.

The formatter works on the lark parse tree (not the IR), so it keeps what the IR forgets:
comments, numbers as written, blank lines. It never changes meaning:
`lower(parse(format_spec(t)))` equals `lower(parse(t))` except for source spans.

Canonical layout rules:

* 2-space indentation; one statement per line; `{` ends the header line, `}` has its own line.
  A block with nothing in it (and no comments) prints as `{}` on the header line.
* One space around `=`, after `:` and `,`; none inside brackets: `name: int = f(a, [1, 2])`,
  `a: int 0..10`, `[0.0, 0.5)`, `profile tiny (default) {`.
* Columns are aligned in the tabular constructs: the description after axis `value` names
  (among the values that have one); what follows the axis keywords `train`/`holdout`/`deploy`;
  the `=` of feedback assignments; the part list after `name:` in `arms`; the `=` of the
  metrics of an `evaluate` block; and the values of a multi-line settings block whose values
  are all lists (a table such as `openings { strong_left [...] ... }`). Each column is as wide
  as the longest key of its block plus one space; comments and blank lines do not split it.
* A settings block (`key { ... }`, `model tiny { ... }`, `response text { ... }`) stays on one
  line, `key { a 1 b 2 }`, when it holds no nested block, no comment and no `\"\"\"` string and the
  line fits in 100 columns; otherwise one setting per line. An empty optional block of
  `model`/`response text` is dropped.
* Strings print as `"..."` with the escapes `\\n \\t \\r \\" \\\\`. A string that is the whole value
  of a statement (description/label/unlabeled/system/prompt text, a setting value) and spans
  four or more lines prints as a `\"\"\"` block: the body indented one level deeper than the
  statement, the closing quotes at the statement's indent — when the value survives the
  dedent that lowering applies to such blocks (else it stays `"..."`). Strings inside
  expressions, lists and calls always print as `"..."`.
* Numbers are printed exactly as written (`3e-3` stays `3e-3`, `1.0` stays `1.0`).
* Expressions get the fewest parentheses that keep their tree, except that an `if` used as the
  condition or the `then` part of another `if` is parenthesised; `else if` chains stay flat;
  and an `and` the user parenthesised as an operand of `or` keeps its parentheses
  (`(A and B) or (C and D)` stays as written).
  Trailing commas are dropped, except in `returns { ... }`, which prints one field per line,
  each ending with `,`.
* Comments are kept: a comment on its own line prints on its own line before the statement that
  follows it, at that statement's indent (or before the `}` of its block when nothing follows);
  a comment at the end of a statement's last line stays there, after two spaces; a comment at
  the end of a block's header line stays there; a comment inside a statement that prints on one
  line moves to its own line before that statement. A block holding a comment is never inlined.
* Blank lines between statements (and comment lines) of a block are kept, at most one; none
  after `{` or before `}`. Experiments are separated by exactly one blank line. The output
  ends with exactly one newline. The blank line between experiments goes before the comments
  that lead the next experiment.
* No line is ever wrapped: long expressions and strings stay on one line.
* A string literal with an escape lowering rejects (`"\\q"`) is kept exactly as written.

Empty input (or only blanks) formats to "". Input that does not parse raises the same
CompileError as `ectc.parse.parse`.
"""

from __future__ import annotations

import bisect
import functools
import textwrap
from dataclasses import dataclass, field

from .lark_quiet import Lark, Token, Tree, UnexpectedInput
from .parse import feed, grammar_text
from .parse import parse as _checked_parse
from .parse import without_gc

__all__ = ["format_spec", "WIDTH", "INDENT"]

WIDTH = 100
INDENT = "  "
_BLOCK_STRING_MIN_LINES = 4

@functools.lru_cache(maxsize=1)
def _parser() -> Lark:
    """The project's grammar with lark's default tree shape and positions (the printer's input;
    `ectc.parse` builds a leaner tree for the compiler)."""
    return Lark(grammar_text(), parser="lalr", lexer="basic", propagate_positions=True,
                maybe_placeholders=True, cache=True)


def _parse_with_comments(text: str) -> tuple[Tree, list[Token]]:
    found: list[Token] = []
    try:
        tree = feed(_parser(), text, on_comment=found.append)
    except UnexpectedInput:
        tree = None
    if tree is None:
        _checked_parse(text)  # raises CompileError with the friendly syntax diagnostic
        raise AssertionError("the formatter's parser and ectc.parse disagree")  # pragma: no cover
    return tree, found


def format_spec(text: str) -> str:
    """The canonical layout of spec `text`; raise CompileError when it does not parse."""
    with without_gc():
        _checked_parse(text)  # the syntax and the stated limits (nesting, sizes) before the printer recurses
        tree, comments = _parse_with_comments(text)
        return _Printer(text, comments).run(tree)


# ---- strings and numbers ------------------------------------------------------------------

_ESCAPE_OUT = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\t": "\\t", "\r": "\\r"}


def quote(value: str) -> str:
    """`value` as a one-line `"..."` string literal."""
    return '"' + "".join(_ESCAPE_OUT.get(ch, ch) for ch in value) + '"'


def _block_lines(value: str) -> list[str] | None:
    """The body lines of a `\"\"\"` block for `value`, or None when a block cannot hold it."""
    if value.count("\n") + 1 < _BLOCK_STRING_MIN_LINES:
        return None
    if '"""' in value or "\r" in value or value != value.rstrip() or value.startswith("\n"):
        return None
    lines = value.split("\n")
    nonempty = [ln for ln in lines if ln]
    if any(ln.strip(" \t") == "" for ln in nonempty):
        return None  # whitespace-only lines would be emptied by dedent
    if all(ln[0] in " \t" for ln in nonempty):
        return None  # a common indent would be removed by dedent
    # The exact inverse of lower.string for LONG_STRING, as a final guard.
    body = "\n" + "\n".join("  " + ln if ln else "" for ln in lines) + "\n"
    if textwrap.dedent(body.lstrip("\n")).rstrip() != value:
        return None
    return lines


def _string_value(tree: Tree) -> str | None:
    """The value of a `string` tree, decoded as lower does; None when it has a bad escape."""
    from .lower import string_value

    value, problems = string_value(tree.children[0])
    return None if problems else value


def _str(tree: Tree) -> str:
    """A string literal in canonical one-line form (as written when it has a bad escape)."""
    value = _string_value(tree)
    return str(tree.children[0]) if value is None else quote(value)


# ---- the printer ----------------------------------------------------------------------------


@dataclass
class _Leaf:
    meta: object
    lines: list[str]  # first line without indent; later lines already indented relative to 0


@dataclass
class _Block:
    meta: object
    header: str
    items: list = field(default_factory=list)
    align: dict = field(default_factory=dict)  # id(item) -> column width for its key
    footer_meta: object = None


_EXPR_LEVEL = {
    "if_then_else": 0, "or_": 1, "and_": 2, "not_": 3, "compare_op": 4, "in_op": 4,
    "neg": 7, "attribute": 8, "index": 8, "call": 8,
}


class _Printer:
    def __init__(self, source: str, comments: list[Token]):
        self.source = source
        self.source_lines = source.split("\n")
        self.comments = sorted(comments, key=lambda c: c.start_pos)
        self.comment_pos = [c.start_pos for c in self.comments]
        self.ci = 0  # next comment to print
        self.out: list[str] = []
        self.last_line = 0  # source line of the last thing printed

    # ---- driver -----------------------------------------------------------------------

    def run(self, tree: Tree) -> str:
        experiments = [c for c in tree.children if isinstance(c, Tree)]
        for i, exp in enumerate(experiments):
            form = self.stmt(exp, 0)
            self.emit(form, 0, first=(i == 0 and not self.out), force_blank=i > 0)
        # comments after the last experiment
        while self.ci < len(self.comments):
            c = self.comments[self.ci]
            self.blank_if(c.line, first=not self.out)
            self.out.append(c.value.rstrip())
            self.last_line = c.line
            self.ci += 1
        return "\n".join(self.out).rstrip("\n") + "\n" if self.out else ""

    def has_comment(self, meta) -> bool:
        i = bisect.bisect_left(self.comment_pos, meta.start_pos)
        return i < len(self.comments) and self.comment_pos[i] < meta.end_pos

    def blank_if(self, line: int, first: bool = False, force: bool = False) -> None:
        if first:
            return
        gap = self.source_lines[self.last_line: max(line - 1, self.last_line)]
        if force or any(not ln.strip() for ln in gap):
            self.out.append("")

    def leading_comments(self, before: int, pad: str, first: bool, force: bool = False) -> bool:
        """Print the comments before source offset `before`; return whether any was printed."""
        printed = False
        while self.ci < len(self.comments) and self.comment_pos[self.ci] < before:
            c = self.comments[self.ci]
            self.blank_if(c.line, first=first and not printed, force=force and not printed)
            self.out.append(pad + c.value.rstrip())
            self.last_line = c.line
            self.ci += 1
            printed = True
        return printed

    def trailing_comment(self, line: int, end_pos: int) -> None:
        """Append the next comment to the last line when only blanks (or the `,` after a
        verdict field) separate it from `end_pos`."""
        if self.ci < len(self.comments):
            c = self.comments[self.ci]
            if (c.line == line and c.start_pos >= end_pos
                    and self.source[end_pos:c.start_pos].strip() in ("", ",")):
                self.out[-1] += "  " + c.value.rstrip()
                self.ci += 1

    def emit(self, form, depth: int, first: bool, force_blank: bool = False) -> None:
        pad = INDENT * depth
        meta = form.meta
        printed = self.leading_comments(meta.start_pos, pad, first, force_blank)
        first = first and not printed
        if isinstance(form, _Leaf):
            self.blank_if(meta.line, first=first, force=force_blank and not printed)
            # comments inside a one-statement form move before it
            while self.ci < len(self.comments) and self.comment_pos[self.ci] < meta.end_pos:
                self.out.append(pad + self.comments[self.ci].value.rstrip())
                self.ci += 1
            self.out.append(pad + form.lines[0])
            self.out.extend((pad + ln) if ln else "" for ln in form.lines[1:])
            self.last_line = meta.end_line
            self.trailing_comment(meta.end_line, meta.end_pos)
            return
        self.blank_if(meta.line, first=first, force=force_blank and not printed)
        if not form.items and not self.has_comment(meta):
            self.out.append(pad + form.header + " {}")
            self.last_line = meta.end_line
            self.trailing_comment(meta.end_line, meta.end_pos)
            return
        self.out.append(pad + form.header + " {")
        self.last_line = meta.line
        first_start = form.items[0].meta.start_pos if form.items else meta.end_pos
        # a comment on the header line stays there
        if self.ci < len(self.comments):
            c = self.comments[self.ci]
            if c.line == meta.line and c.start_pos < first_start:
                self.out[-1] += "  " + c.value.rstrip()
                self.ci += 1
        inner_first = True
        for item in form.items:
            self.emit(item, depth + 1, first=inner_first)
            inner_first = False
        # comments after the last item, before `}`
        self.leading_comments(meta.end_pos, pad + INDENT, first=inner_first)
        self.out.append(pad + "}")
        self.last_line = meta.end_line
        self.trailing_comment(meta.end_line, meta.end_pos)

    # ---- statements ----------------------------------------------------------------------

    def stmt(self, t: Tree, depth: int):
        build = getattr(self, "s_" + t.data, None)
        if build is None:  # a grammar rule added without teaching the formatter its layout
            raise NotImplementedError(f"ectc.fmt has no layout for grammar rule `{t.data}`")
        return build(t, depth)

    def block_of(self, t: Tree, header: str, items: list[Tree], depth: int, align=None) -> _Block:
        forms = [self.stmt(i, depth + 1) for i in items]
        block = _Block(t.meta, header, forms)
        if align:
            width = max(len(k) for k in align.values()) + 1
            for form, item in zip(forms, items):
                key = align.get(id(item))
                if key is not None:
                    rest = form.lines[0][len(key):].lstrip(" ")
                    form.lines[0] = key.ljust(width) + rest
        return block

    def s_experiment(self, t, depth):
        name, *items = t.children
        return self.block_of(t, f"experiment {self.name(name)}", items, depth)

    def _template(kw):
        def build(self, t, depth):
            return _Leaf(t.meta, self.string_stmt(kw, t.children[0]))
        return build

    s_description = _template("description")
    s_label = _template("label")
    s_unlabeled = _template("unlabeled")
    s_system = _template("system")
    s_prompt = _template("prompt")

    def string_stmt(self, head: str, string: Tree) -> list[str]:
        value = _string_value(string)
        lines = None if value is None else _block_lines(value)
        if lines is None:
            return [f"{head} {_str(string)}"]
        return [f'{head} """'] + [INDENT + ln if ln else "" for ln in lines] + ['"""']

    # axis
    def s_axis(self, t, depth):
        name, kind, *items = t.children
        if kind.data == "enum_axis":
            header = f"axis {self.name(name)}: enum"
        else:
            type_ = kind.data.split("_")[0]
            header = f"axis {self.name(name)}: {type_} in {self.interval(kind.children[0])}"
        align = {}
        keywords = [i for i in items if i.data in ("axis_train", "axis_holdout", "axis_deploy")]
        for i in keywords:
            align[id(i)] = i.data.split("_")[1]
        block = self.block_of(t, header, items, depth, align)
        values = [(i, f) for i, f in zip(items, block.items) if i.data == "axis_value"]
        described = [(i, f) for i, f in values if len(i.children) > 1 and i.children[1] is not None]
        if described:
            width = max(len(self.name(i.children[0])) for i, _ in described) + 1
            for i, f in described:
                f.lines[0] = "value " + self.name(i.children[0]).ljust(width) + _str(i.children[1])
        return block

    def s_axis_value(self, t, depth):
        name, desc = (t.children + [None])[:2]
        text = f"value {self.name(name)}"
        if desc is not None:
            text += " " + _str(desc)
        return _Leaf(t.meta, [text])

    def s_axis_train(self, t, depth):
        return _Leaf(t.meta, ["train " + self.expr(t.children[0])])

    def s_axis_deploy(self, t, depth):
        return _Leaf(t.meta, ["deploy " + self.expr(t.children[0])])

    def s_axis_holdout(self, t, depth):
        parts = []
        for p in t.children:
            inner = p.children[0]
            parts.append(self.interval(inner) if inner.data == "interval" else self.name(inner))
        return _Leaf(t.meta, ["holdout " + ", ".join(parts)])

    def interval(self, t):
        open_, low, high, close = t.children
        return f"{open_.children[0]}{self.signed(low)}, {self.signed(high)}{close.children[0]}"

    # data
    def s_data(self, t, depth):
        name, source, *items = t.children
        header = f"data {self.name(name)}"
        if source is not None:
            if source.data == "src_generate":
                header += ": generate"
            else:
                header += f": {source.data[4:]} {_str(source.children[0])}"
        return self.block_of(t, header, items, depth)

    def s_field(self, t, depth):
        name, type_, expr, fallback = t.children
        text = f"{self.name(name)}: {self.name(type_.children[0])}"
        if expr is not None:
            text += " = " + self.expr(expr)
            if fallback is not None:
                text += " fallback " + self.expr(fallback)
        return _Leaf(t.meta, [text])

    def s_assign(self, t, depth):
        name, expr = t.children
        return _Leaf(t.meta, [f"{self.name(name)} = {self.expr(expr)}"])

    # response, feedback
    def s_response_choice(self, t, depth):
        choices = ", ".join(_str(c) for c in t.children if c is not None and c.data != "response_other")
        other = [c for c in t.children if c is not None and c.data == "response_other"]
        return _Leaf(t.meta, [f"response choice [{choices}]" + (f" other {_str(other[0].children[0])}" if other else "")])

    def s_response_text(self, t, depth):
        return self.optional_block(t, "response text", t.children[0], depth)

    def s_feedback(self, t, depth):
        align = {id(i): self.name(i.children[0]) for i in t.children}
        return self.block_of(t, "feedback", t.children, depth, align)

    # monitors
    def s_monitor(self, t, depth):
        name, kind, *items = t.children
        if kind.data == "monitor_llm":
            header = f"monitor {self.name(name)}: llm {_str(kind.children[0])}"
        elif kind.data == "monitor_lexicon":
            header = f"monitor {self.name(name)}: lexicon"
        else:
            header = f"monitor {self.name(name)}: expr {self.expr(kind.children[0])}"
        return self.block_of(t, header, items, depth)

    def s_returns(self, t, depth):
        return self.block_of(t, "returns", t.children, depth)

    def s_verdict_field(self, t, depth):
        name, vt = t.children
        if vt.data in ("vt_int", "vt_real"):
            type_ = f"{vt.data[3:]} {self.signed(vt.children[0])}..{self.signed(vt.children[1])}"
        elif vt.data == "vt_enum":
            type_ = " | ".join(self.name(n) for n in vt.children)
        else:
            type_ = vt.data[3:]
        return _Leaf(t.meta, [f"{self.name(name)}: {type_},"])

    # arms
    def s_arms(self, t, depth):
        align = {id(a): f"{self.name(a.children[0])}:" for a in t.children}
        return self.block_of(t, "arms", t.children, depth, align)

    def s_arm(self, t, depth):
        name, *parts = t.children
        return _Leaf(t.meta, [f"{self.name(name)}: " + ", ".join(self.arm_part(p) for p in parts)])

    def arm_part(self, p):
        arg = p.children[0]
        if p.data == "arm_label_fixed":
            return "label fixed " + self.expr(arg)
        if p.data == "arm_filter":
            return "filter " + self.expr(arg)
        if p.data == "arm_reuse":
            return f"reuse {self.name(arg)}"
        return f"{p.data[4:]} {arg.children[0]}"

    # profiles
    def s_profile(self, t, depth):
        name, default, base, *items = t.children
        header = f"profile {self.name(name)}" + (" (default)" if default is not None else "")
        if base is not None:
            header += (f" extends {self.name(base.children[0])}" if base.data == "profile_extends"
                       else f" from {_str(base.children[0])}")
        return self.block_of(t, header, items, depth)

    def s_model_tiny(self, t, depth):
        return self.optional_block(t, "model tiny", t.children[0], depth)

    def s_model_hf(self, t, depth):
        path, block = t.children
        return self.optional_block(t, f"model hf {_str(path)}", block, depth)

    def s_model_gguf(self, t, depth):
        # `in` leaves a placeholder of its own where the package is absent: take the strings.
        path, *package = [c for c in t.children if isinstance(c, Tree) and c.data == "string"]
        block = t.children[-1]
        head = f"model gguf {_str(path)}" + (f" in {_str(package[0])}" if package else "")
        return self.optional_block(t, head, block, depth)

    def optional_block(self, t, head, block, depth):
        if block is None or (not block.children and not self.has_comment(block.meta)):
            return _Leaf(t.meta, [head])
        return self.settings_block(t, head, block, depth)

    # evaluation
    def s_evaluate(self, t, depth):
        align = {id(i): f"metric {self.name(i.children[0])}"
                 for i in t.children if i.data == "metric"}
        return self.block_of(t, "evaluate", t.children, depth, align)

    def s_metric(self, t, depth):
        name, expr, where = t.children
        text = f"metric {self.name(name)} = {self.expr(expr)}"
        if where is not None:
            text += " where " + self.expr(where)
        return _Leaf(t.meta, [text])

    def s_sweep_range(self, t, depth):
        axis, low, high, step = t.children
        return _Leaf(t.meta, [f"sweep {self.name(axis)} from {self.signed(low)} to "
                              f"{self.signed(high)} step {self.signed(step)}"])

    def s_sweep_values(self, t, depth):
        axis, *values = t.children
        names = ", ".join(self.name(v) for v in values if v is not None)
        return _Leaf(t.meta, [f"sweep {self.name(axis)} over [{names}]"])

    def s_compare(self, t, depth):
        pairs = [c for c in t.children if c.data == "arm_pair"]
        metrics = [c for c in t.children if c.data == "name"]
        text = "compare " + ", ".join(
            f"{self.name(p.children[0])} vs {self.name(p.children[1])}" for p in pairs)
        text += " on " + ", ".join(self.name(m) for m in metrics)
        return _Leaf(t.meta, [text])

    def s_probe(self, t, depth):
        name, *items = t.children
        return self.block_of(t, f"probe {self.name(name)}", items, depth)

    def s_require(self, t, depth):
        probe, op, value = t.children
        return _Leaf(t.meta, [f"require {self.name(probe)} {op.children[0]} {self.signed(value)}"])

    # settings
    def s_setting_value(self, t, depth):
        key, value = t.children
        key = self.name(key)
        if isinstance(value, Tree) and value.data == "string":
            return _Leaf(t.meta, self.string_stmt(key, value))
        return _Leaf(t.meta, [f"{key} {self.value(value)}"])

    def s_setting_block(self, t, depth):
        key, block = t.children
        return self.settings_block(t, self.name(key), block, depth)

    def settings_block(self, t, head, block: Tree, depth):
        settings = block.children
        inline = (
            not self.has_comment(block.meta)
            and all(s.data == "setting_value" for s in settings)
        )
        if inline:
            parts = []
            for s in settings:
                form = self.s_setting_value(s, depth + 1)
                if len(form.lines) > 1:
                    inline = False
                    break
                parts.append(form.lines[0])
            text = f"{head} {{ {' '.join(parts)} }}" if parts else f"{head} {{}}"
            if inline and len(INDENT * depth) + len(text) <= WIDTH:
                return _Leaf(t.meta, [text])
        table = settings and all(
            s.data == "setting_value" and isinstance(s.children[1], Tree)
            and s.children[1].data == "list_value" for s in settings)
        align = {id(s): self.name(s.children[0]) for s in settings} if table else None
        form = self.block_of(t, head, settings, depth, align)
        return form

    def value(self, v) -> str:
        kind = v.data
        if kind == "signed_number":
            return self.signed(v)
        if kind == "string":
            return _str(v)
        if kind in ("true", "false"):
            return kind
        if kind == "list_value":
            return "[" + ", ".join(self.value(c) for c in v.children if c is not None) + "]"
        if kind == "call_value":
            func, *args = v.children
            return f"{self.name(func)}({', '.join(self.value(a) for a in args if a is not None)})"
        if kind == "bare_name":
            return self.name(v.children[0])
        raise NotImplementedError(f"ectc.fmt has no layout for `{kind}`")  # pragma: no cover

    # ---- small pieces ----------------------------------------------------------------------

    @staticmethod
    def name(t) -> str:
        return str(t.children[0]) if isinstance(t, Tree) else str(t)

    @staticmethod
    def signed(t: Tree) -> str:
        return "".join(str(c) for c in t.children)

    # ---- expressions -------------------------------------------------------------------------

    @staticmethod
    def level(t: Tree) -> int:
        if t.data == "binary":
            return 5 if t.children[1].data == "add_op" else 6
        return _EXPR_LEVEL.get(t.data, 9)

    def sub(self, t: Tree, need: int) -> str:
        text = self.expr(t)
        return f"({text})" if self.level(t) < need else text

    def grouped(self, t: Tree, need: int) -> str:
        """An `or` operand: an `and` the user put in parentheses keeps them, since
        `(A and B) or (C and D)` reads more clearly than the fewest parentheses would."""
        if t.data == "and_" and self.written_in_parens(t):
            return f"({self.expr(t)})"
        return self.sub(t, need)

    def written_in_parens(self, t: Tree) -> bool:
        start, end = t.meta.start_pos, t.meta.end_pos
        before = self.source[:start].rstrip()
        after = self.source[end:].lstrip()
        if not (before.endswith("(") and after.startswith(")")):
            return False
        # `(a) and (b)` also sits between a `(` and a `)`: they enclose it only when the text
        # between them is balanced (brackets inside strings aside).
        depth, quoted, i, text = 0, False, 0, self.source[start:end]
        while i < len(text):
            ch = text[i]
            if quoted:
                i += 2 if ch == "\\" else 1
                quoted = ch != '"'
                continue
            quoted = ch == '"'
            depth += {"(": 1, ")": -1}.get(ch, 0)
            if depth < 0:
                return False
            i += 1
        return depth == 0

    def expr(self, t: Tree) -> str:
        kind = t.data
        c = t.children
        if kind == "if_then_else":
            return f"if {self.sub(c[0], 1)} then {self.sub(c[1], 1)} else {self.expr(c[2])}"
        if kind == "or_":
            return f"{self.grouped(c[0], 1)} or {self.grouped(c[1], 2)}"
        if kind == "and_":
            return f"{self.sub(c[0], 2)} and {self.sub(c[1], 3)}"
        if kind == "not_":
            return f"not {self.sub(c[0], 3)}"
        if kind == "compare_op":
            return f"{self.sub(c[0], 5)} {c[1].children[0]} {self.sub(c[2], 5)}"
        if kind == "in_op":
            return f"{self.sub(c[0], 5)} in {self.sub(c[1], 5)}"
        if kind == "binary":
            lvl = self.level(t)
            return f"{self.sub(c[0], lvl)} {c[1].children[0]} {self.sub(c[2], lvl + 1)}"
        if kind == "neg":
            return "-" + self.sub(c[0], 7)
        if kind == "attribute":
            return f"{self.sub(c[0], 8)}.{self.name(c[1])}"
        if kind == "index":
            return f"{self.sub(c[0], 8)}[{self.expr(c[1])}]"
        if kind == "call":
            func, *args = c
            return f"{self.name(func)}({', '.join(self.expr(a) for a in args if a is not None)})"
        if kind == "number":
            return str(c[0])
        if kind == "string_lit":
            return _str(c[0])
        if kind == "true_lit":
            return "true"
        if kind == "false_lit":
            return "false"
        if kind == "name_ref":
            return self.name(c[0])
        if kind == "list_lit":
            return "[" + ", ".join(self.expr(a) for a in c if a is not None) + "]"
        raise NotImplementedError(f"ectc.fmt has no layout for `{kind}`")  # pragma: no cover
