"""The layout's rules, read from the source (every import, including those inside functions):
no circle of imports, no module importing another's private names, the compiler and the
contract (`ectc/plan/`) importing nothing from the runtime, and the plan read through its
classes (no raw `plan["..."]` look-ups outside the module that writes it)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "ectc"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> list[tuple[str, list[str], int]]:
    """(imported ectc module, names taken from it, line) for every import in the file."""
    tree = ast.parse(path.read_text())
    here = module_name(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("ectc"):
                continue
            # `from . import x` imports module x where there is one; other names come from target
            modules, names = [], []
            for alias in node.names:
                where = PACKAGE.parent / f"{target}.{alias.name}".replace(".", "/")
                (modules if where.with_suffix(".py").exists() or where.is_dir() else names).append(alias.name)
            out += [(f"{target}.{m}", [], node.lineno) for m in modules]
            if names or not modules:
                out.append((target, names, node.lineno))
        elif isinstance(node, ast.Import):
            out += [(a.name, [], node.lineno) for a in node.names if a.name.startswith("ectc")]
    return out


def graph() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        edges.setdefault(module_name(path), set()).update(t for t, _, _ in imports(path) if t != module_name(path))
    return edges


def test_no_import_circles() -> None:
    edges = graph()
    # A package's __init__ imported on the way to a submodule is not an edge of the circle.
    edges = {m: {t for t in ts if t in edges and not m.startswith(t + ".")} for m, ts in edges.items()}
    state: dict[str, int] = {}
    stack: list[str] = []
    circles: list[list[str]] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for t in sorted(edges.get(m, ())):
            if state.get(t) == 1:
                circles.append(stack[stack.index(t):] + [t])
            elif t not in state:
                visit(t)
        stack.pop()
        state[m] = 2

    for m in sorted(edges):
        if m not in state:
            visit(m)
    assert circles == []


def test_no_private_names_across_files() -> None:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for target, names, line in imports(path):
            last = target.rsplit(".", 1)[-1]
            private = [n for n in names if n.startswith("_") and not n.startswith("__")] + (
                [last] if last.startswith("_") and not last.startswith("__") else [])
            if private:
                found.append(f"{path.relative_to(ROOT)}:{line} {target} {private}")
    assert found == []


def test_compiler_and_contract_import_nothing_from_the_runtime() -> None:
    compiler = [p for p in PACKAGE.glob("*.py") if p.name not in ("cli.py", "runs.py", "__main__.py", "api.py")]
    contract = list((PACKAGE / "plan").glob("*.py"))
    found = [f"{p.relative_to(ROOT)}:{line} imports {t}" for p in compiler + contract
             for t, _, line in imports(p) if t.startswith("ectc.runtime")]
    assert found == []


def test_the_plan_is_read_through_its_classes() -> None:
    raw = re.compile(r"""\bplan\[["']""")
    found = [f"{p.relative_to(ROOT)}:{i}" for p in sorted(PACKAGE.rglob("*.py")) if p.name != "generate.py"
             for i, line in enumerate(p.read_text().splitlines(), 1) if raw.search(line)]
    assert found == []


def test_the_checks_above_can_fail(tmp_path: Path) -> None:
    """The import reader sees function-level and relative imports (what the rules rest on)."""
    path = PACKAGE / "runtime" / "report.py"
    seen = {t for t, _, _ in imports(path)}
    assert "ectc.plan.model" in seen and "ectc.runtime.stats" in seen
    launch = {t for t, _, _ in imports(PACKAGE / "runtime" / "launch.py")}
    assert "ectc.runtime.scale" in launch  # imported inside main()
