"""Diagnostics: every compiler stage reports problems as `Diagnostic`s with a source span.

Stages collect all their diagnostics and raise one `CompileError` carrying them, so a user sees
every problem of a spec at once, each rendered as

    specs/x.ect:12:9: error[E203]: unknown name `suggestability`
       12 |   reward = suggestability * 2
          |            ^^^^^^^^^^^^^^
      = hint: did you mean `suggestibility`?
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Iterable, Literal

Severity = Literal["error", "warning"]


@dataclass(frozen=True, slots=True)
class Span:
    """A region of a source file; lines and columns are 1-based, end column exclusive."""

    line: int
    column: int
    end_line: int
    end_column: int


NO_SPAN = Span(line=1, column=1, end_line=1, end_column=2)


@dataclass(frozen=True)
class Diagnostic:
    span: Span
    code: str
    message: str
    hint: str | None = None
    severity: Severity = "error"

    def render(self, source: str, filename: str) -> str:
        lines = source.splitlines() or [""]
        line_no = min(max(self.span.line, 1), len(lines))
        text = lines[line_no - 1]
        col = max(self.span.column, 1)
        if self.span.end_line == self.span.line:
            width = max(self.span.end_column - col, 1)
        else:
            width = max(len(text) - col + 1, 1)
        gutter = " " * len(str(line_no))
        out = [
            f"{filename}:{line_no}:{col}: {self.severity}[{self.code}]: {self.message}",
            f" {line_no} | {text}",
            f" {gutter} | {' ' * (col - 1)}{'^' * width}",
        ]
        if self.hint:
            out.append(f" {gutter} = hint: {self.hint}")
        return "\n".join(out)


class CompileError(Exception):
    """The one exception the compiler raises: it carries every diagnostic found."""

    def __init__(self, diagnostics: Iterable[Diagnostic]):
        self.diagnostics = sorted(
            diagnostics, key=lambda d: (d.span.line, d.span.column, d.code, d.message)
        )
        super().__init__(f"{len(self.diagnostics)} problem(s)")

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity == "error"]

    def render(self, source: str, filename: str) -> str:
        return "\n".join(d.render(source, filename) for d in self.diagnostics)


def did_you_mean(word: str, candidates: Iterable[str]) -> str | None:
    """A hint naming the closest candidate, or None when nothing is close."""
    names = sorted(set(candidates))
    # `NO` for `No`: one letter apart in case is too short a word for difflib's ratio.
    matches = [c for c in names if c.casefold() == word.casefold()]
    matches = matches or difflib.get_close_matches(word, names, n=1, cutoff=0.6)
    return f"did you mean `{matches[0]}`?" if matches else None
