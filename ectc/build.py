"""build: compile specs and write `generated/`; `--check` reports staleness without writing.

The only stage with file I/O on the compiler side: it reads specs, calls the pure stages and
writes their output atomically, removing generated files the specs no longer produce.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .compile import compile_text
from .errors import CompileError, Diagnostic
from .generate import generate
from .runtime.cache import atomic_write_text as atomic_write  # torch-free: one atomic writer for all


@dataclass
class BuildResult:
    written: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)
    warnings: list[tuple[str, str, Diagnostic]] = field(default_factory=list)  # (path, source, diag)


def spec_files(root: Path, named: list[str]) -> list[Path]:
    if named:
        return [Path(n) for n in named]
    return sorted((root / "specs").glob("*.ect"))


def display_path(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return path.as_posix()


def expected_files(specs: list[Path], root: Path, result: BuildResult) -> dict[str, str]:
    """Compile every spec; raise CompileError (with `.path`/`.source`) on the first that fails."""
    files: dict[str, str] = {}
    for path in specs:
        source = path.read_text()
        shown = display_path(path, root)
        try:
            spec, warnings = compile_text(source)
        except CompileError as err:
            err.path, err.source = shown, source  # type: ignore[attr-defined]
            raise
        result.warnings.extend((shown, source, w) for w in warnings)
        files.update(generate(spec, source, shown))
    return files


def build(root: Path, named: list[str], out_dir: Path, check_only: bool) -> BuildResult:
    result = BuildResult()
    specs = spec_files(root, named)
    files = expected_files(specs, root, result)
    experiments = {p.split("/", 1)[0] for p in files}
    present = {
        p.relative_to(out_dir).as_posix()
        for exp in experiments if (out_dir / exp).exists()
        for p in (out_dir / exp).rglob("*") if p.is_file()
    }
    if not named and out_dir.exists():
        # A full build also owns experiments whose spec was deleted.
        present |= {p.relative_to(out_dir).as_posix() for p in out_dir.rglob("*")
                    if p.is_file() and not p.name.startswith(".")}
    for rel, text in sorted(files.items()):
        target = out_dir / rel
        if target.exists() and target.read_text() == text:
            result.unchanged.append(rel)
            continue
        result.stale.append(rel)
        if not check_only:
            atomic_write(target, text)
            result.written.append(rel)
    for rel in sorted(present - set(files)):
        if "__pycache__" in rel:
            continue
        result.stale.append(rel)
        if not check_only:
            (out_dir / rel).unlink()
            result.removed.append(rel)
    return result
