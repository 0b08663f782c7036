"""The installed package, not the checkout: a wheel built from the repo, installed (not
editable) into a fresh virtual environment, checks and builds a spec from a folder outside the
repo. Offline: the wheel is built without build isolation and installed with --no-deps
--no-index; the dependencies come from this interpreter's site-packages through a .pth file
(a path line in a .pth file adds that folder only, not the .pth files inside it, so the
checkout's editable install stays out of sight)."""

import os
import shutil
import site
import subprocess
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).parent.parent


def _sh(*args, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    out = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, f"{' '.join(map(str, args))}\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}"
    return out


def test_wheel_checks_and_builds_outside_the_repo(tmp_path):
    # Build from a copy of what the sdist would hold, so the checkout gets no build/ or egg-info.
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "ectc", src / "ectc", ignore=shutil.ignore_patterns("__pycache__"))
    wheels = tmp_path / "wheels"
    _sh(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
        "-w", wheels, src, cwd=tmp_path)
    [wheel] = wheels.glob("ectc-*.whl")

    venv = tmp_path / "venv"
    _sh(sys.executable, "-m", "venv", "--without-pip", venv, cwd=tmp_path)
    py = venv / "bin" / "python"
    _sh(sys.executable, "-m", "pip", "--python", py, "install", "--no-deps", "--no-index", "-q", wheel, cwd=tmp_path)
    purelib = Path(_sh(py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=tmp_path)
                   .stdout.strip())
    ours = dict.fromkeys([*site.getsitepackages(), sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    (purelib / "zz_dependencies.pth").write_text("".join(f"{p}\n" for p in ours))

    work = tmp_path / "elsewhere"
    (work / "specs").mkdir(parents=True)
    shutil.copy(ROOT / "specs" / "sycophancy.ect", work / "specs" / "sycophancy.ect")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    where = _sh(py, "-c", "import ectc; print(ectc.__file__)", cwd=work, env=env).stdout.strip()
    assert Path(where).is_relative_to(venv), where  # the installed copy, not the checkout

    ectc = venv / "bin" / "ectc"
    out = _sh(ectc, "check", "specs/sycophancy.ect", cwd=work, env=env)
    _sh(ectc, "build", "--out", "out", cwd=work, env=env)
    built = sorted(p.relative_to(work / "out").as_posix() for p in (work / "out").rglob("*") if p.is_file())
    shipped = sorted(p.relative_to(ROOT / "generated").as_posix()
                     for p in (ROOT / "generated" / "sycophancy").rglob("*") if p.is_file())
    assert built == shipped
    for rel in ("sycophancy/dataset.py", "sycophancy/feedback.py", "sycophancy/metrics.py"):
        assert (work / "out" / rel).read_text() == (ROOT / "generated" / rel).read_text(), (rel, out.stdout)


# Files that other work of issue 12 replaces (the stage-key mirror); every other module of the
# compiler is held to the rule below.
_NOT_YET = {"stagekeys.py"}


def test_the_compiler_imports_no_private_names_across_files():
    """No `from .x import _y` and no `x._y` on an imported ectc module, and no template that
    cuts a name out of another by position (`m.func[8:]`): what a module or template needs
    is passed or made public."""
    import ast
    import re

    problems = []
    for path in sorted((ROOT / "ectc").glob("*.py")):
        if path.name in _NOT_YET:
            continue
        tree = ast.parse(path.read_text())
        modules: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("ectc")):
                for alias in node.names:
                    if alias.name.startswith("_") and not alias.name.startswith("__"):
                        problems.append(f"{path.name}:{node.lineno}: imports {alias.name} from {node.module}")
                    modules.add(alias.asname or alias.name)
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in modules
                    and node.attr.startswith("_") and not node.attr.startswith("__")):
                problems.append(f"{path.name}:{node.lineno}: uses {node.value.id}.{node.attr}")
    for path in sorted((ROOT / "ectc" / "templates").glob("*.j2")):
        for lineno, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"\{\{[^}]*\[\s*-?\d*\s*:\s*-?\d*\s*\]", line):
                problems.append(f"{path.name}:{lineno}: slices a value: {line.strip()}")
    assert problems == []
