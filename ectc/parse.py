"""parse: spec text -> lark tree, with syntax errors turned into diagnostics."""

from __future__ import annotations

import functools
import re
from pathlib import Path

from lark import Lark, Tree
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from .errors import CompileError, Diagnostic, Span

GRAMMAR_PATH = Path(__file__).resolve().parent.parent / "grammar" / "ect.lark"

# How expected terminals are named to a user.
_FRIENDLY = {
    "NAME": "a name",
    "NUMBER": "a number",
    "STRING": "a string",
    "LONG_STRING": 'a """string"""',
    "$END": "end of file",
}


@functools.lru_cache(maxsize=1)
def parser() -> Lark:
    # cache=True stores the built LALR tables on disk, which keeps a cold `ectc check` fast.
    return Lark(
        GRAMMAR_PATH.read_text(),
        parser="lalr",
        lexer="basic",
        propagate_positions=True,
        maybe_placeholders=True,
        cache=True,
    )


def parse(text: str) -> Tree:
    """Parse spec text; raise CompileError with one syntax diagnostic on failure."""
    try:
        return parser().parse(text)
    except UnexpectedInput as err:
        raise CompileError([_syntax_diagnostic(text, err)]) from None


def _describe(terminal: str) -> str:
    if terminal in _FRIENDLY:
        return _FRIENDLY[terminal]
    try:
        pattern = parser().get_terminal(terminal).pattern
    except KeyError:
        return terminal.lower()
    if pattern.type == "str":
        return f"`{pattern.value}`"
    return terminal.lower()


def _expected(err: UnexpectedInput) -> str:
    names = sorted({_describe(t) for t in getattr(err, "expected", None) or getattr(err, "allowed", ()) or ()})
    # Keywords are many; a long list helps nobody.
    if len(names) > 8:
        names = names[:8] + ["..."]
    return ", ".join(names)


def _offset_to_line_col(text: str, offset: int) -> tuple[int, int]:
    line = text.count("\n", 0, offset) + 1
    col = offset - (text.rfind("\n", 0, offset) + 1) + 1
    return line, col


def _previous_token_end(text: str, offset: int) -> int:
    """Offset just past the last non-blank, non-comment character before `offset`."""
    head = text[:offset]
    while True:
        stripped = head.rstrip()
        # drop a trailing comment on the last line
        last_line_start = stripped.rfind("\n") + 1
        line = stripped[last_line_start:]
        m = re.search(r'#[^"]*$', line)
        if m and line.count('"', 0, m.start()) % 2 == 0:
            head = stripped[: last_line_start + m.start()]
            continue
        return len(stripped)


def _syntax_diagnostic(text: str, err: UnexpectedInput) -> Diagnostic:
    if isinstance(err, UnexpectedCharacters):
        line, col = err.line, err.column
        char = text[err.pos_in_stream] if err.pos_in_stream < len(text) else ""
        if char == '"':
            return Diagnostic(
                Span(line=line, column=col, end_line=line, end_column=col + 1),
                "E001",
                "unterminated string",
                'close the string with `"` on the same line, or use """...""" for several lines',
            )
        return Diagnostic(
            Span(line=line, column=col, end_line=line, end_column=col + 1),
            "E002",
            f"unexpected character `{char}`",
            "a spec holds names, numbers, strings, brackets and operators; `#` starts a comment",
        )
    if isinstance(err, UnexpectedEOF) or (
        isinstance(err, UnexpectedToken) and err.token.type == "$END"
    ):
        end = _previous_token_end(text, len(text))
        line, col = _offset_to_line_col(text, max(end - 1, 0))
        return Diagnostic(
            Span(line=line, column=col, end_line=line, end_column=col + 1),
            "E003",
            "unexpected end of file",
            f"expected {_expected(err)}",
        )
    assert isinstance(err, UnexpectedToken)
    tok = err.token
    expected = _expected(err)
    separators = {"`,`", "`]`", "`)`", "`}`", "`then`", "`else`", "`=`", "`:`"}
    expected_set = set(expected.split(", "))
    # A missing separator is best shown where it belongs: right after the previous token.
    value_start = tok.type in ("NAME", "NUMBER", "STRING", "LONG_STRING")
    if tok.start_pos is not None and expected_set and (
            expected_set <= separators | {"..."} or (value_start and "`,`" in expected_set)):
        if value_start and "`,`" in expected_set:
            expected = "`,`"
        end = _previous_token_end(text, tok.start_pos)
        line, col = _offset_to_line_col(text, end)
        return Diagnostic(
            Span(line=line, column=col, end_line=line, end_column=col + 1),
            "E004",
            f"expected {expected} here",
            f"found `{tok}` next",
        )
    length = max(len(str(tok)), 1)
    return Diagnostic(
        Span(line=tok.line, column=tok.column, end_line=tok.line, end_column=tok.column + length),
        "E005",
        f"unexpected `{tok}`",
        f"expected {expected}" if expected else None,
    )
