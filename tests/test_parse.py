"""parse: the hand-driven lexer makes exactly the tokens lark's basic lexer makes."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lark.exceptions import UnexpectedCharacters

from ectc.parse import parser, tokens

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from compiler_speed import spec_of_lines  # noqa: E402


def _key(tok):
    return (tok.type, str(tok), tok.start_pos, tok.line, tok.column, tok.end_line, tok.end_column, tok.end_pos)


def _lark_tokens(text):
    try:
        return [_key(t) for t in parser().lex(text)], None
    except UnexpectedCharacters as err:
        return None, (err.pos_in_stream, err.line, err.column)


def _our_tokens(text):
    try:
        return [_key(t) for t in tokens(text)], None
    except UnexpectedCharacters as err:
        return None, (err.pos_in_stream, err.line, err.column)


TEXTS = [p.read_text() for p in sorted((ROOT / "specs").glob("*.ect"))] + [spec_of_lines(500)] + [
    'x = """a\nb\n  c""" y\n\n# note "q"\n  z',
    "data d {\n  a: int = 1 # c\n}\n",
    "a @ b",
    'rubric "unterminated\n',
    "",
    "   \n\n  ",
    "a == b != c <= d >= e < f > g % h .. i",
]


@pytest.mark.parametrize("text", TEXTS, ids=range(len(TEXTS)))
def test_same_tokens_as_lark(text):
    assert _our_tokens(text) == _lark_tokens(text)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(list('ab9_ .,"#\n\t\\{}[]()=<>!-+*/%:|@$') + ["if", '"""', "data", "1e5", "2.5"]),
                max_size=40).map("".join))
def test_same_tokens_as_lark_on_any_text(text):
    assert _our_tokens(text) == _lark_tokens(text)


def test_compiler_loads_lark_without_the_regex_module():
    import subprocess

    code = ("import sys; from ectc.compile import compile_text; "
            "compile_text(open('specs/sycophancy.ect').read()); "
            "assert 'regex' not in sys.modules, 'regex imported'; "
            "import regex; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.stdout.strip() == "ok", out.stderr


def test_soft_keywords_serve_as_names_where_a_name_is_expected():
    from ectc.errors import CompileError
    from ectc.lower import lower
    from ectc.parse import parse

    spec = lower(parse('experiment data {\n  data label {\n    text: int = randint(0, 9)\n'
                       '    data: int = text + 1\n  }\n  evaluate { at deploy }\n}\n'))
    exp = spec.experiments[0]
    assert exp.name == "data" and exp.data[0].name == "label"
    assert [f.name for f in exp.data[0].fields] == ["text", "data"]
    assert exp.data[0].fields[1].expr.left.id == "text"
    assert exp.evaluates[0].settings[0].value.id == "deploy"
    # Reserved keywords stay reserved.
    with pytest.raises(CompileError) as err:
        parse("experiment x {\n  data d {\n    if: int = 1\n  }\n}\n")
    assert err.value.diagnostics[0].code == "E005"
