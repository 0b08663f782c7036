"""Diagnostics as machine-readable records: JSON for tools, GitHub workflow annotations for CI.

Positions are the compiler's own (`errors.Span`): lines and columns 1-based, the end column
exclusive. The human form is `Diagnostic.render`.
"""

from __future__ import annotations

from .errors import Diagnostic


def as_record(d: Diagnostic, path: str) -> dict:
    """One diagnostic as a JSON object (`ectc check --format json` prints a list of these)."""
    return {
        "code": d.code, "severity": d.severity, "message": d.message, "file": path,
        "line": d.span.line, "column": d.span.column, "end_line": d.span.end_line,
        "end_column": d.span.end_column, "hint": d.hint,
    }


def _escape_data(text: str) -> str:
    # GitHub's workflow-command escaping: the message may not hold raw %, CR or LF.
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    # Property values (file=..., title=...) additionally may not hold `:` or `,`.
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


def as_github(d: Diagnostic, path: str) -> str:
    """One diagnostic as a GitHub Actions annotation line (`::error file=...::message`); the hint
    follows the message on a line of its own."""
    s = d.span
    props = ",".join(f"{k}={_escape_property(str(v))}" for k, v in (
        ("file", path), ("line", s.line), ("col", s.column), ("endLine", s.end_line),
        ("endColumn", s.end_column), ("title", d.code)))
    message = d.message + (f"\nhint: {d.hint}" if d.hint else "")
    return f"::{d.severity} {props}::{_escape_data(message)}"
