"""The compiler's front half as one call: text -> checked IR (parse, lower, check)."""

from __future__ import annotations

from pathlib import Path

from . import ir
from .check import check, check_files
from .errors import CompileError, Diagnostic
from .lower import lower
from .parse import parse, without_gc
from .profiles import resolve


def front(text: str) -> tuple[ir.Spec, list[Diagnostic]]:
    """Parse, lower, and resolve profiles that start from another (CompileError when it does
    not parse): the IR that check, generate, explain and diff read, and resolution's diagnostics."""
    return resolve(lower(parse(text)))


def compile_text(text: str, *, folder: Path | None = None) -> tuple[ir.Spec, list[Diagnostic]]:
    """Return the checked IR and its warnings; raise CompileError when there is an error.
    With the spec's `folder`, the files it names (word lists) must also be there."""
    with without_gc():
        spec, diagnostics = front(text)
        diagnostics = diagnostics + check(spec)
    if folder is not None:
        diagnostics += check_files(spec, lambda path: _is_file(folder, path), lambda sub: _files_in(folder, sub))
    if any(d.severity == "error" for d in diagnostics):
        raise CompileError(diagnostics)
    return spec, [d for d in diagnostics if d.severity == "warning"]


def diagnose(text: str, *, folder: Path | None = None) -> list[Diagnostic]:
    """Every diagnostic of a spec, errors and warnings, as `ectc check` reports them: one call
    for `check --format` and the language server, so both say the same thing at the same span."""
    try:
        _, warnings = compile_text(text, folder=folder)
    except CompileError as err:
        return err.diagnostics
    return warnings


def _is_file(folder: Path, path: str) -> bool:
    try:
        return (folder / path).is_file()
    except (OSError, ValueError):  # a name too long, a NUL byte: no such file either
        return False


def _files_in(folder: Path, sub: str) -> list[str]:
    try:
        return sorted(p.name for p in (folder / sub).iterdir() if p.is_file())
    except (OSError, ValueError):
        return []
