"""What an editor asks of a spec at a cursor: which keys fit there, what a setting means, where a
diagnostic lies in the editor's coordinates. Pure functions over the text (and the last spec that
lowered), for the language server (`ectc/lsp.py`, which only wires them to pygls) and its tests.

The cursor's context comes from the compiler's own lexer (`parse.tokens`): the blocks open at the
cursor, innermost last, each named by its statement (`profile`, `model`, `monitor`...) or, for a
settings block, by its key (`rl`, `sft`, `mix`). Keys, kinds and allowed words come from
`schema.py`; template variables from `check.py`'s scopes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional

from lark.exceptions import UnexpectedCharacters

from . import ir, schema
from .check import data_scope, label_template_vars, prompt_template_vars
from .errors import Diagnostic
from .parse import tokens
from .settings_doc import doc

# Statements that open a block, by the block they stand in (None: the top level).
STATEMENTS: dict[Optional[str], frozenset[str]] = {
    None: frozenset({"experiment"}),
    "experiment": frozenset({"axis", "data", "monitor", "profile", "arms", "evaluate", "feedback", "response"}),
    "profile": frozenset({"model"}),
    "evaluate": frozenset({"probe"}),
    "monitor": frozenset({"returns"}),
}
EXPERIMENT_ITEMS = ("description", "axis", "label", "unlabeled", "data", "system", "prompt", "response",
                    "feedback", "monitor", "arms", "profile", "evaluate")
AXIS_ITEMS = ("value", "train", "holdout", "deploy")
EVALUATE_ITEMS = ("metric", "sweep", "compare", "probe", "require")
ARM_PARTS = {"label": schema.ARM_LABELS + ("fixed",), "encode": schema.ARM_ENCODINGS, "infer": schema.ARM_INFER}
TEMPLATE_OWNERS = ("label", "prompt", "system", "rubric", "render", "llm")

_WORD_BEFORE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*$")
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class Frame:
    """One block open at the cursor: its statement's words up to the `{` (`("model", "tiny")`,
    `("monitor", "judge", ":", "llm", '"m"')`), or the key of a settings block (`("rl",)`)."""

    words: tuple[str, ...]

    @property
    def head(self) -> str:
        return self.words[0] if self.words else ""


@dataclass(frozen=True)
class Context:
    frames: tuple[Frame, ...]
    statement: tuple[str, ...]   # the words since the innermost `{` or `}`, before the cursor's word
    prefix: str                  # the part of a word typed so far
    string: Optional[str] = None  # inside a string: its text up to the cursor


@dataclass(frozen=True)
class Item:
    label: str
    kind: str       # "key", "value", "arm", "profile", "metric", "variable", "keyword"
    detail: str = ""
    doc: str = ""


def context_at(text: str, offset: int) -> Context:
    before = text[:offset]
    prefix = m.group(0) if (m := _WORD_BEFORE.search(before)) else ""
    words, string = [], None
    head = before[:len(before) - len(prefix)]
    try:
        words = [t.value for t in tokens(head)]
    except UnexpectedCharacters as exc:  # an unclosed string: the cursor is inside it
        words = [t.value for t in tokens(head[:exc.pos_in_stream])]
        if head[exc.pos_in_stream:].startswith('"'):
            string = before[exc.pos_in_stream:]
            prefix = ""
    stack: list[Frame] = []
    statement: list[str] = []
    for w in words:
        if w == "{":
            stack.append(_frame(stack, statement))
            statement = []
        elif w == "}":
            if stack:
                stack.pop()
            statement = []
        else:
            statement.append(w)
    return Context(tuple(stack), tuple(statement), prefix, string)


def _frame(stack: list[Frame], statement: list[str]) -> Frame:
    allowed = STATEMENTS.get(stack[-1].head if stack else None, frozenset())
    for i in range(len(statement) - 1, -1, -1):
        if statement[i] in allowed:
            return Frame(tuple(statement[i:]))
    return Frame(tuple(statement[-1:]))


# ---- settings tables ------------------------------------------------------------------------


def _model_kind(frame: Frame) -> str:
    return frame.words[1] if len(frame.words) > 1 else ""


def settings_at(frames: tuple[Frame, ...]) -> tuple[Optional[dict], Optional[tuple[str, ...]]]:
    """The schema table of the settings block innermost at the cursor, and its path among the
    profile settings (for docs; None outside a profile), or (None, None)."""
    if len(frames) < 2 or frames[0].head != "experiment":
        return None, None
    top, rest = frames[1], frames[2:]
    path: Optional[tuple[str, ...]] = None
    if top.head == "profile":
        table, path = {**schema.PROFILE, "model": schema.MODEL_SETTINGS}, ()
        if rest and rest[0].head == "model":
            kind = _model_kind(rest[0])
            table, path, rest = schema.MODEL_SETTINGS.get(kind), ("model", kind), rest[1:]
    elif top.head == "monitor":
        kind = top.words[top.words.index(":") + 1] if ":" in top.words[:-1] else ""
        table = schema.MONITOR.get(kind)
    elif top.head == "data":
        table = schema.DATA
    elif top.head == "evaluate":
        table = schema.EVALUATE
        if rest and rest[0].head == "probe":
            table, rest = schema.PROBE, rest[1:]
    elif top.head == "response":
        table = schema.RESPONSE_TEXT
    else:
        return None, None
    for f in rest:
        inner = table.get(f.head) if isinstance(table, dict) else None
        if not isinstance(inner, dict):
            return None, None
        table = inner
        path = path + (f.head,) if path is not None else None
    return table, path


def describe_kind(kind) -> str:
    if isinstance(kind, dict):
        return "a block `{ ... }`"
    if isinstance(kind, tuple):
        shown = ", ".join(f"`{k}`" for k in kind[:12])
        return f"one of {shown}" + (f" (and {len(kind) - 12} more)" if len(kind) > 12 else "")
    return {"int": "a whole number", "num": "a number", "bool": "`true` or `false`", "str": "a string",
            "name": "a name", "names": "a list of names", "values": "a list of axis values",
            schema.SCHEDULE: "a number or `linear(start, end[, fraction])`", "any": "any value",
            "strs": "a string or a list of strings",
            "targets": 'a list of module names or "all-linear"'}.get(kind, str(kind))


def _keys(table: dict, path: Optional[tuple[str, ...]]) -> list[Item]:
    return [Item(k, "key", describe_kind(kind), (doc(path + (k,)) or "") if path is not None else "")
            for k, kind in table.items() if k != "*"]


# ---- completion -----------------------------------------------------------------------------


def experiment_at(spec: Optional[ir.Spec], line: int) -> Optional[ir.Experiment]:
    """The experiment whose span holds 1-based `line` (else the last one starting above it)."""
    if spec is None or not spec.experiments:
        return None
    above = [e for e in spec.experiments if e.span.line <= line] or list(spec.experiments)
    return above[-1]


def complete(text: str, offset: int, spec: Optional[ir.Spec]) -> list[Item]:
    """What fits at `offset`: setting keys (and a key's allowed words), statement keywords, arm
    names, metric names, or template variables inside a template string. `spec` is the last
    version of the text that lowered (the text being typed rarely parses)."""
    ctx = context_at(text, offset)
    exp = experiment_at(spec, text.count("\n", 0, offset) + 1)
    if ctx.string is not None:
        if ctx.statement[-1:] == ("from",) and "profile" in ctx.statement:  # `from "|`: the shipped profiles
            from .profiles import library_names

            return [Item(n, "profile") for n in library_names() if n.startswith(ctx.string.lstrip("\""))]
        return _template_variables(ctx, exp)
    frames, stmt = ctx.frames, ctx.statement
    prev = stmt[-1] if stmt else ""
    arms = [a.name for a in exp.arms] if exp else []
    if len(frames) == 1 and frames[0].head == "experiment":
        if prev == "extends":  # `profile NAME extends |`: the experiment's other profiles
            return [Item(p.name, "profile") for p in (exp.profiles if exp else ()) if p.name not in stmt]
        return [Item(k, "keyword") for k in EXPERIMENT_ITEMS]
    if len(frames) == 2 and frames[1].head == "arms":
        if prev == "reuse":
            return [Item(a, "arm") for a in arms + [schema.BASE_CHECKPOINT]]
        if prev in ARM_PARTS:
            return [Item(w, "value") for w in ARM_PARTS[prev]]
        if prev in (":", ","):
            return [Item(k, "keyword") for k in ("label", "encode", "filter", "reuse", "infer")]
        return []
    if len(frames) == 2 and frames[1].head == "axis":
        return [Item(k, "keyword") for k in AXIS_ITEMS]
    if len(frames) == 2 and frames[1].head == "evaluate" and "compare" in stmt:
        tail = stmt[len(stmt) - 1 - stmt[::-1].index("compare"):]
        if prev in ("compare", "vs") or (prev == "," and "on" not in tail):
            return [Item(a, "arm") for a in arms]
        if prev == "on" or (prev == "," and "on" in tail):
            metrics = exp.evaluate.metrics if exp and exp.evaluate else ()
            return [Item(m.name, "metric") for m in metrics]
    table, path = settings_at(frames)
    if table is None:
        return []
    kind = table.get(prev) if prev else None
    if isinstance(kind, tuple):  # a key whose value is one of a few words
        return [Item(str(w), "value") for w in kind]
    if kind is not None and not isinstance(kind, dict):
        return []  # a value of another kind comes next
    items = _keys(table, path)
    if len(frames) == 2 and frames[1].head == "evaluate":
        items += [Item(k, "keyword") for k in EVALUATE_ITEMS]
    return items


def _template_variables(ctx: Context, exp: Optional[ir.Experiment]) -> list[Item]:
    opened = ctx.string.rfind("{{") if ctx.string else -1
    if exp is None or opened < 0 or "}}" in ctx.string[opened:]:
        return []
    stmt = [w for w in ctx.statement if w not in ("(", ",") and not w.startswith('"')]
    owner = stmt[-1] if stmt else ""
    top = ctx.frames[1].head if len(ctx.frames) > 1 else ""
    if owner in ("render", "llm") and top == "data":
        name = ctx.frames[1].words[1] if len(ctx.frames[1].words) > 1 else ""
        block = next((b for b in exp.data if b.name == name), None)
        names = set(data_scope(exp, block))
    elif owner == "label":
        names = label_template_vars(exp)
    elif owner in ("prompt", "system"):
        names = prompt_template_vars(exp)
    elif owner == "rubric" and top == "monitor":
        name = ctx.frames[1].words[1] if len(ctx.frames[1].words) > 1 else ""
        monitor = next((m for m in exp.monitors if m.name == name), None)
        sees = next((s.value for s in monitor.settings if s.key == "sees"), None) if monitor else None
        names = {i.id for i in sees.items if isinstance(i, ir.Name)} if isinstance(sees, ir.ListExpr) else set()
    else:
        return []
    return [Item(n, "variable") for n in sorted(names)]


# ---- hover ----------------------------------------------------------------------------------


def word_at(text: str, offset: int) -> Optional[tuple[int, int]]:
    """The [start, end) offsets of the name under `offset`, or None."""
    line_start = text.rfind("\n", 0, offset) + 1
    line_end = text.find("\n", offset)
    line_end = len(text) if line_end < 0 else line_end
    for m in _WORD.finditer(text, line_start, line_end):
        if m.start() <= offset <= m.end():
            return m.start(), m.end()
    return None


def hover(text: str, offset: int) -> Optional[tuple[str, tuple[int, int]]]:
    """Markdown about the setting key under `offset` (its kind and doc), with the key's offsets."""
    where = word_at(text, offset)
    if where is None:
        return None
    key = text[where[0]:where[1]]
    ctx = context_at(text, where[0])
    if ctx.string is not None:
        return None
    table, path = settings_at(ctx.frames)
    if table is None or key not in table:
        return None
    kind = table[key]
    if path == () and key == "model":
        body = "a model: `tiny`, `hf` or `gguf`"
    else:
        body = describe_kind(kind)
    text_doc = doc(path + (key,)) if path is not None else None
    name = ".".join(path + (key,)) if path is not None else key
    return f"**`{name}`**: {body}" + (f"\n\n{text_doc}" if text_doc else ""), where


# ---- positions ------------------------------------------------------------------------------


def utf16_column(line_text: str, column: int) -> int:
    """A 1-based character column as the 0-based UTF-16 offset LSP counts in."""
    return len(line_text[:max(column - 1, 0)].encode("utf-16-le")) // 2


def lsp_range(d: Diagnostic, lines: list[str]) -> tuple[tuple[int, int], tuple[int, int]]:
    """A diagnostic's span as LSP's ((line, character), (line, character)), 0-based, end exclusive."""
    def at(line: int, column: int) -> tuple[int, int]:
        text = lines[line - 1] if 0 < line <= len(lines) else ""
        return line - 1, utf16_column(text, column)

    return at(d.span.line, d.span.column), at(d.span.end_line, d.span.end_column)


def position_of(text: str, offset: int) -> tuple[int, int]:
    """LSP's 0-based (line, UTF-16 character) of a string offset: the inverse of `offset_of`."""
    line_start = text.rfind("\n", 0, offset) + 1
    return text.count("\n", 0, offset), utf16_column(text[line_start:offset], offset - line_start + 1)


def offset_of(text: str, line: int, character: int) -> int:
    """The string offset of LSP's 0-based (line, UTF-16 character)."""
    start = 0
    for _ in range(line):
        nl = text.find("\n", start)
        if nl < 0:
            return len(text)
        start = nl + 1
    end = text.find("\n", start)
    line_text = text[start:] if end < 0 else text[start:end]
    units = 0
    for i, ch in enumerate(line_text):
        if units >= character:
            return start + i
        units += 2 if ord(ch) > 0xFFFF else 1
    return start + len(line_text)
