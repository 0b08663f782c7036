"""Property tests: the front end (parse, lower, check) raises nothing but CompileError, whatever
the input, and format_spec keeps the meaning of every program that parses.

Three sources of input: (a) programs drawn from the grammar itself (hypothesis' from_lark),
(b) the shipped specs with random character and line edits, (c) arbitrary text.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.lark import from_lark
from lark import Lark
from lark.lexer import PatternStr

from ectc import ir
from ectc.errors import CompileError
from ectc.fmt import format_spec, quote
from ectc.lower import lower
from ectc.parse import GRAMMAR_PATH, parse, parser

try:  # being written alongside this file; use it when it is there
    from ectc.check import check
except ImportError:  # pragma: no cover
    check = None
try:
    from ectc.compile import compile_text
except ImportError:  # pragma: no cover
    compile_text = None

ROOT = Path(__file__).resolve().parent.parent
SPEC_TEXTS = [p.read_text() for p in sorted((ROOT / "specs").glob("*.ect"))]

# ECTC_FUZZ_EXAMPLES=5000 runs a longer, randomised search; the default is a quick, fixed one.
EXAMPLES = int(os.environ.get("ECTC_FUZZ_EXAMPLES", "150"))
RANDOM = "ECTC_FUZZ_EXAMPLES" in os.environ
FUZZ = settings(
    max_examples=EXAMPLES, deadline=None, derandomize=not RANDOM, database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                           HealthCheck.data_too_large],
)


def strip_spans(obj):
    if isinstance(obj, dict):
        return {k: strip_spans(v) for k, v in obj.items() if k not in ir.SPAN_FIELDS}
    if isinstance(obj, (list, tuple)):
        return [strip_spans(v) for v in obj]
    return obj


def _compile(text: str) -> None:
    if compile_text is None:
        return
    compile_text(text)


def front_end(text: str):
    """Run every front-end stage; return the lowered spec, or None on a CompileError."""
    try:
        spec = lower(parse(text))
    except CompileError as err:
        assert err.diagnostics, "a CompileError must carry at least one diagnostic"
        return None
    if check is not None:
        diagnostics = check(spec)
        assert isinstance(diagnostics, list)
    try:
        _compile(text)
    except CompileError as err:
        assert err.diagnostics
    return spec


def assert_format_keeps_meaning(text: str, spec) -> None:
    out = format_spec(text)
    assert format_spec(out) == out, "format_spec is not idempotent"
    again = lower(parse(out))
    assert strip_spans(ir.to_data(again)) == strip_spans(ir.to_data(spec))


def parses(text: str) -> bool:
    try:
        parse(text)
    except CompileError:
        return False
    return True


# ---- (a) programs from the grammar --------------------------------------------------------

NAMES = st.sampled_from(["a", "b", "x", "score", "response", "target", "strong_left", "topic",
                         "mean", "uniform", "none", "id", "lr", "split", "train2"])
NUMBERS = st.sampled_from(["0", "1", "2", "10", "0.5", "1.5", "3e-3", "2E+2", "100"])
TEXT = st.lists(st.sampled_from(list('ab {}%#"\\\n\t') + ["{{ x }}", "é"]),
               max_size=8).map("".join)
LONG_TEXT = st.lists(st.sampled_from(["line", "  indented", "", "{{ topic }}", "a # b", '"q"']),
                     max_size=5).map(lambda ls: "\n".join(ls))


def _explicit() -> dict:
    """A strategy per terminal; every token is padded with blanks so tokens never run together."""
    out = {}
    for term in parser().terminals:
        if isinstance(term.pattern, PatternStr):
            out[term.name] = st.just(f" {term.pattern.value} ")
    out.update({
        "NAME": NAMES.map(lambda s: f" {s} "),
        "NUMBER": NUMBERS.map(lambda s: f" {s} "),
        "STRING": TEXT.map(lambda s: f" {quote(s)} "),
        "LONG_STRING": LONG_TEXT.map(lambda s: f' """{s}\n""" '),
        "COMMENT": st.sampled_from([" # note\n", "\n# a comment line\n", ' # "quoted" {\n']),
        "WS": st.sampled_from([" ", "\n", "\n\n\n", "\t"]),
    })
    known = {t.name for t in parser().terminals}
    return {k: v for k, v in out.items() if k in known}


# from_lark needs the grammar object, which the disk-cached project parser does not keep.
GRAMMAR = Lark(GRAMMAR_PATH.read_text(), parser="lalr", lexer=parser().options.lexer)
PROGRAMS = from_lark(GRAMMAR, explicit=_explicit())


@FUZZ
@given(PROGRAMS)
def test_grammar_programs(text):
    spec = front_end(text)
    if spec is not None:
        assert_format_keeps_meaning(text, spec)
    elif parses(text):
        # parses but does not lower: the formatter must still produce something that parses
        out = format_spec(text)
        assert format_spec(out) == out
        parse(out)


# ---- (a') expressions, fully parenthesised: the formatter must drop only redundant parens ----

_LEAVES = st.sampled_from(["a", "b", "1", "2.5", '"s"', "true", "false", "[]", "[a, 1]", "f()"])


def _expressions(leaves):
    def extend(inner):
        binop = st.sampled_from(["or", "and", "==", "!=", "<", ">=", "in", "+", "-", "*", "/",
                                 "%"])
        return st.one_of(
            st.tuples(inner, binop, inner).map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
            st.tuples(st.sampled_from(["-", "not "]), inner).map(lambda t: f"({t[0]}{t[1]})"),
            st.tuples(inner, inner, inner).map(lambda t: f"(if {t[0]} then {t[1]} else {t[2]})"),
            inner.map(lambda e: f"({e}).x"),
            st.tuples(inner, inner).map(lambda t: f"({t[0]})[{t[1]}]"),
            st.lists(inner, max_size=3).map(lambda es: f"g({', '.join(es)})"),
            st.lists(inner, max_size=3).map(lambda es: f"[{', '.join(es)}]"),
        )
    return st.recursive(leaves, extend, max_leaves=12)


@FUZZ
@given(_expressions(_LEAVES))
def test_expression_parentheses(expr):
    text = f"experiment e {{ feedback {{ r = {expr} }} arms {{ x: filter {expr} }} }}"
    spec = front_end(text)
    assert spec is not None, text
    assert_format_keeps_meaning(text, spec)
    out = format_spec(text)
    # Every grouping pair left is needed: dropping one changes the meaning or the parse. (An
    # `if` inside the condition or `then` part of another `if` is parenthesised by choice.)
    expr_out = next(ln for ln in out.splitlines() if ln.strip().startswith("r = ")).strip()[4:]
    wanted = strip_spans(ir.to_data(spec))["experiments"][0]["feedbacks"][0]["assigns"][0]
    for open_, close in _grouping_parens(expr_out):
        if expr_out[open_ + 1:].startswith("if "):
            continue
        fewer = expr_out[:open_] + expr_out[open_ + 1:close] + expr_out[close + 1:]
        try:
            got = lower(parse(f"experiment e {{ feedback {{ r = {fewer} }} }}"))
        except CompileError:
            continue
        got = strip_spans(ir.to_data(got))["experiments"][0]["feedbacks"][0]["assigns"][0]
        assert got != wanted, f"redundant parentheses in {expr_out!r}"


def _grouping_parens(text: str) -> list[tuple[int, int]]:
    """(open, close) offsets of the parentheses that group, not those of calls."""
    pairs, stack, in_string = [], [], False
    for i, ch in enumerate(text):
        if ch == '"':
            in_string = not in_string
        elif in_string:
            continue
        elif ch == "(":
            stack.append((i, i > 0 and (text[i - 1].isalnum() or text[i - 1] == "_")))
        elif ch == ")":
            start, is_call = stack.pop()
            if not is_call:
                pairs.append((start, i))
    return pairs


# ---- (b) real specs, mutated ------------------------------------------------------------

PIECES = st.sampled_from(list('{}[]()",:=#.\n -') + ['"""', "..", " if ", " then ", " else ",
                          " value ", " label ", "experiment", " axis ", "0", "1e", "\\"])


@st.composite
def mutated_specs(draw):
    text = draw(st.sampled_from(SPEC_TEXTS))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["del_chars", "ins", "dup_chars", "del_line", "dup_line",
                                   "swap_lines"]))
        if op in ("del_chars", "dup_chars", "ins"):
            i = draw(st.integers(0, len(text)))
            if op == "ins":
                text = text[:i] + draw(PIECES) + text[i:]
            else:
                j = min(len(text), i + draw(st.integers(1, 12)))
                text = text[:i] + text[i:j] + text[i:] if op == "dup_chars" else text[:i] + text[j:]
        else:
            lines = text.split("\n")
            i = draw(st.integers(0, len(lines) - 1))
            if op == "del_line":
                del lines[i]
            elif op == "dup_line":
                lines.insert(i, lines[i])
            else:
                j = draw(st.integers(0, len(lines) - 1))
                lines[i], lines[j] = lines[j], lines[i]
            text = "\n".join(lines)
    return text


@settings(FUZZ, max_examples=EXAMPLES if RANDOM else 100)  # each runs the whole front end
@given(mutated_specs())
def test_mutated_specs(text):
    spec = front_end(text)
    if spec is not None:
        assert_format_keeps_meaning(text, spec)


# ---- (c) arbitrary text -----------------------------------------------------------------


@settings(max_examples=EXAMPLES, deadline=None, derandomize=not RANDOM, database=None)
@given(st.text(max_size=200))
def test_arbitrary_text(text):
    front_end(text)


@settings(max_examples=EXAMPLES, deadline=None, derandomize=not RANDOM, database=None)
@given(st.text(alphabet=st.sampled_from(list('experiment{}[]()":,=#\n .-0123456789abx\\')),
               max_size=120))
def test_arbitrary_token_soup(text):
    spec = front_end(text)
    if spec is not None:
        assert_format_keeps_meaning(text, spec)


@pytest.mark.parametrize("text", SPEC_TEXTS)
def test_shipped_specs_pass_front_end(text):
    assert front_end(text) is not None


# ---- front-end bugs the fuzzers found ------------------------------------------------------


def test_unknown_jinja_filter_is_a_diagnostic():
    source = (ROOT / "specs" / "sycophancy.ect").read_text()
    text = source.replace("| round |", "|ound |")
    assert text != source
    front_end(text)
    from ectc.compile import compile_text

    with pytest.raises(CompileError) as err:
        compile_text(text)
    assert [d.code for d in err.value.errors] == ["E301"]
