"""ectc.fmt: golden fixtures, idempotence, semantic equality, and the shipped specs' layout."""

from __future__ import annotations

import difflib
from pathlib import Path

import pytest

from ectc import ir
from ectc.errors import CompileError
from ectc.fmt import format_spec, quote
from ectc.lower import lower
from ectc.parse import parse

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "fmt"
CASES = sorted(p.name[: -len(".in.ect")] for p in FIXTURES.glob("*.in.ect"))
SPECS = sorted((ROOT / "specs").glob("*.ect"))


def strip_spans(obj):
    """The IR as data without source positions: what must survive formatting."""
    if isinstance(obj, dict):
        return {k: strip_spans(v) for k, v in obj.items() if k not in ir.SPAN_FIELDS}
    if isinstance(obj, (list, tuple)):
        return [strip_spans(v) for v in obj]
    return obj


def semantics(text: str):
    return strip_spans(ir.to_data(lower(parse(text))))


def diff(expected: str, actual: str, name: str) -> str:
    return "".join(difflib.unified_diff(
        expected.splitlines(keepends=True), actual.splitlines(keepends=True),
        fromfile=f"{name} (expected)", tofile=f"{name} (format_spec)"))


def test_fixtures_exist():
    assert len(CASES) >= 10
    for case in CASES:
        assert (FIXTURES / f"{case}.out.ect").exists(), f"{case}.out.ect is missing"


@pytest.mark.parametrize("case", CASES)
def test_golden(case):
    source = (FIXTURES / f"{case}.in.ect").read_text()
    expected = (FIXTURES / f"{case}.out.ect").read_text()
    actual = format_spec(source)
    assert actual == expected, diff(expected, actual, case)


@pytest.mark.parametrize("case", CASES)
def test_fixture_semantics_kept(case):
    source = (FIXTURES / f"{case}.in.ect").read_text()
    assert semantics(format_spec(source)) == semantics(source)


@pytest.mark.parametrize("name", [f"{c}.in.ect" for c in CASES] + [f"{c}.out.ect" for c in CASES])
def test_fixture_idempotent(name):
    once = format_spec((FIXTURES / name).read_text())
    assert format_spec(once) == once


@pytest.mark.parametrize("spec", SPECS, ids=lambda p: p.name)
def test_shipped_spec_idempotent_and_same_meaning(spec):
    text = spec.read_text()
    once = format_spec(text)
    assert format_spec(once) == once
    assert semantics(once) == semantics(text)


@pytest.mark.parametrize("spec", SPECS, ids=lambda p: p.name)
def test_shipped_spec_is_canonical(spec):
    text = spec.read_text()
    assert format_spec(text) == text, diff(text, format_spec(text), str(spec.relative_to(ROOT)))


# ---- focused cases ------------------------------------------------------------------------


def test_syntax_error_is_compile_error():
    with pytest.raises(CompileError) as err:
        format_spec("experiment x { label }")
    assert err.value.diagnostics[0].code.startswith("E00")


def test_empty_input():
    assert format_spec("") == ""
    assert format_spec("  \n\n") == ""
    assert format_spec("# only a comment\n") == "# only a comment\n"


@pytest.mark.parametrize("value", ["", "plain", 'q"uote', "back\\slash", "a\nb", "t\tab", "c\rr",
                                   "{{ x }} {% if y %}\\n{% endif %}", "naïve ☃"])
def test_quote_round_trips(value):
    text = f"experiment e {{ label {quote(value)} }}"
    assert lower(parse(text)).experiments[0].labels[0].text == value


def test_comment_hash_inside_string_is_not_a_comment():
    out = format_spec('experiment e { label "a # b" }')
    assert out == 'experiment e {\n  label "a # b"\n}\n'


def test_crlf_source():
    src = "# c\r\nexperiment e {\r\n  label \"x\"  # t\r\n}\r\n"
    out = format_spec(src)
    assert out == '# c\nexperiment e {\n  label "x"  # t\n}\n'
    assert semantics(out) == semantics(src)


def test_long_inline_block_breaks_at_100_columns():
    short = "experiment e { profile p { s { " + " ".join(f"k{i} {i}" for i in range(10)) + " } } }"
    assert "s { k0 0" in format_spec(short)
    long = "experiment e { profile p { s { " + " ".join(f"key{i} {i}" for i in range(20)) + " } } }"
    out = format_spec(long)
    assert "    s {\n      key0 0\n" in out
    assert max(len(line) for line in out.splitlines()) <= 100


def test_axis_value_without_description_formats():
    # the description column is as wide as the longest name among the described values
    src = "experiment e { axis p: enum { value a \"x\"\n value bb\n value ccc \"y\" } }"
    out = format_spec(src)
    assert '    value a   "x"\n    value bb\n    value ccc "y"\n' in out
    assert format_spec(out) == out


def test_axis_value_without_description_lowers():
    src = "experiment e { axis p: enum { value a } }"
    assert semantics(format_spec(src)) == semantics(src)


def test_bad_escape_kept_as_written():
    # lower reports E006 for it; the formatter must not silently drop the backslash
    src = 'experiment e { label "a\\q" }'
    out = format_spec(src)
    assert 'label "a\\q"' in out
    with pytest.raises(CompileError):
        lower(parse(out))


def test_comment_after_statement_belongs_to_the_next_block_when_inside_it():
    src = "experiment e { profile p { a 1 b { x 1 # inside b\n y 2 } } }"
    out = format_spec(src)
    assert "      x 1  # inside b\n" in out
    assert format_spec(out) == out
