"""The compiler's front half as one call: text -> checked IR (parse, lower, check)."""

from __future__ import annotations

from . import ir
from .check import check
from .errors import CompileError, Diagnostic
from .lower import lower
from .parse import parse, without_gc
from .profiles import resolve


def front(text: str) -> tuple[ir.Spec, list[Diagnostic]]:
    """Parse, lower, and resolve profiles that start from another (CompileError when it does
    not parse): the IR that check, generate, explain and diff read, and resolution's diagnostics."""
    return resolve(lower(parse(text)))


def compile_text(text: str) -> tuple[ir.Spec, list[Diagnostic]]:
    """Return the checked IR and its warnings; raise CompileError when there is an error."""
    with without_gc():
        spec, diagnostics = front(text)
        diagnostics = diagnostics + check(spec)
    if any(d.severity == "error" for d in diagnostics):
        raise CompileError(diagnostics)
    return spec, [d for d in diagnostics if d.severity == "warning"]


def diagnose(text: str) -> list[Diagnostic]:
    """Every diagnostic of a spec, errors and warnings, as `ectc check` reports them: one call
    for `check --format` and the language server, so both say the same thing at the same span."""
    try:
        _, warnings = compile_text(text)
    except CompileError as err:
        return err.diagnostics
    return warnings
