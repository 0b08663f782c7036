"""A package like any other: the compiler installs alone, the runtime's libraries come as extras
(`[train]`, `[judge]`, `[slurm]`, `[vllm]`), every module ectc imports is declared, and a command
that needs a missing extra says which in one line.

The fresh-install check puts a wheel into an empty virtual environment with its four
dependencies from the package registry (7 s on the idle 2-core machine, 28 s beside other jobs), so
it needs the registry, as `make` does."""

from __future__ import annotations

import ast
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ectc import extras
from ectc.cli import main

tomllib = pytest.importorskip("tomllib")

ROOT = Path(__file__).parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _names(requirements: list[str]) -> set[str]:
    return {re.split(r"[<>=!~\[;\s]", r, maxsplit=1)[0].lower().replace("_", "-") for r in requirements}


def _distribution(module: str) -> str:
    """The distribution an import name comes from (vllm, not installed here, by its own name)."""
    found = importlib.metadata.packages_distributions().get(module)
    return (found[0] if found else module).lower().replace("_", "-")


def _imported_modules() -> set[str]:
    """Every top-level module the package imports (inside functions too), standard library aside."""
    found: set[str] = set()
    for path in (ROOT / "ectc").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                found.add(node.module.split(".")[0])
    return {m for m in found if m not in sys.stdlib_module_names and m != "ectc"}


def test_every_imported_module_is_declared():
    declared = _names(PYPROJECT["dependencies"])
    for requirements in PYPROJECT["optional-dependencies"].values():
        declared |= _names(requirements)
    undeclared = sorted(f"{m} ({_distribution(m)})" for m in _imported_modules() if _distribution(m) not in declared)
    assert undeclared == []


def test_the_extras_table_is_pyproject_s():
    """ectc/extras.py names each extra by the modules it brings; pyproject.toml installs them."""
    optional = PYPROJECT["optional-dependencies"]
    assert set(extras.EXTRAS) | {"dev"} == set(optional)
    for extra, modules in extras.EXTRAS.items():
        assert {_distribution(m) for m in modules} == _names(optional[extra]), extra
    # The compiler alone: no runtime library among the base dependencies.
    assert _names(PYPROJECT["dependencies"]) == {"lark", "pydantic", "jinja2", "rich"}
    # Every runtime module ectc imports belongs to an extra.
    base = {"lark", "pydantic", "jinja2", "rich"}
    assert sorted(m for m in _imported_modules() if _distribution(m) not in base and extras.extra_of(m) is None) == []


def test_run_without_the_train_extra_says_which_extra(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch", None)  # as if not installed
    monkeypatch.setitem(sys.modules, "trl", None)
    assert main(["run", str(ROOT / "specs/sycophancy.ect")]) == 1
    assert capsys.readouterr().err == (
        "error: ectc run needs the [train] extra (torch, trl not installed): pip install 'ectc[train]'\n")


def test_fan_out_and_judge_say_which_extra(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "submitit", None)
    monkeypatch.setitem(sys.modules, "anthropic", None)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-test")
    assert main(["run", str(ROOT / "specs/bias.ect"), "--executor", "submitit-local"]) == 1
    assert capsys.readouterr().err == (
        "error: ectc run needs the [slurm] extra (submitit not installed): pip install 'ectc[slurm]'\n"
        "error: ectc run needs the [judge] extra (anthropic not installed): pip install 'ectc[judge]'\n")
    monkeypatch.delenv("ANTHROPIC_API_KEY")  # no key: the judges stay unscored, nothing to install
    assert main(["run", str(ROOT / "specs/bias.ect"), "--executor", "submitit-local"]) == 1
    assert "[judge]" not in capsys.readouterr().err


def test_an_extra_met_mid_command_is_one_line(monkeypatch, capsys):
    """Past the up-front checks (a path they do not foresee), the import error still reads as
    the extra to install, not a traceback."""
    import ectc.cli

    monkeypatch.setitem(sys.modules, "peft", None)
    monkeypatch.setattr(ectc.cli, "cmd_explain", lambda args: __import__("peft"))
    assert main(["explain", str(ROOT / "specs/bias.ect")]) == 1
    assert capsys.readouterr().err == (
        "error: ectc explain needs the [train] extra (peft not installed): pip install 'ectc[train]'\n")


def _fresh_venv(tmp_path: Path, extras: str, *pins: str) -> Path:
    """An empty virtual environment with the wheel built from this checkout (and `extras`)
    installed from the package registry."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "ectc", src / "ectc", ignore=shutil.ignore_patterns("__pycache__"))
    _sh(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", tmp_path / "wheels",
        src, cwd=tmp_path)
    [wheel] = (tmp_path / "wheels").glob("ectc-*.whl")
    venv = tmp_path / "venv"
    _sh(sys.executable, "-m", "venv", "--without-pip", venv, cwd=tmp_path)
    _sh(sys.executable, "-m", "pip", "--python", venv / "bin/python", "install", "-q", *pins, f"{wheel}{extras}",
        cwd=tmp_path)
    return venv


def _clean_env() -> dict:
    """This environment without the checkout on the path and without an API key."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "ANTHROPIC_API_KEY")}


def _sh(*args, cwd: Path, env: dict | None = None, ok=(0,)) -> subprocess.CompletedProcess:
    out = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode in ok, f"{' '.join(map(str, args))}\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}"
    return out


def test_the_bare_wheel_checks_builds_and_diffs_without_torch(tmp_path):
    """`pip install <wheel>` into an empty virtual environment, dependencies from the registry:
    check, fmt, build, explain, plan and diff work on the shipped specs, torch is not there, and `ectc run`
    says which extra to install."""
    t0 = time.perf_counter()
    venv = _fresh_venv(tmp_path, "")
    work = tmp_path / "project"
    shutil.copytree(ROOT / "specs", work / "specs")
    env = _clean_env()
    py, ectc = venv / "bin/python", venv / "bin/ectc"
    assert _sh(py, "-c", "import importlib.util as u; print([m for m in ('torch', 'transformers', 'numpy') "
                         "if u.find_spec(m)])", cwd=work, env=env).stdout.strip() == "[]"
    specs = sorted(p.relative_to(work).as_posix() for p in (work / "specs").glob("*.ect"))
    assert "ok" in _sh(ectc, "check", *specs, cwd=work, env=env).stdout
    _sh(ectc, "build", cwd=work, env=env)
    for spec in specs:
        name = Path(spec).stem
        assert (work / "generated" / name / "experiment.json").read_text() == \
            (ROOT / "generated" / name / "experiment.json").read_text()
    _sh(ectc, "build", "--check", cwd=work, env=env)
    _sh(ectc, "explain", "specs/sycophancy.ect", cwd=work, env=env)
    _sh(ectc, "fmt", "--check", *specs, cwd=work, env=env)
    assert "stage(s) to run, 0 reused" in _sh(ectc, "plan", "specs/sycophancy.ect", cwd=work, env=env).stdout
    edited = (work / "specs/sycophancy.ect").read_text().replace("seeds 7\n", "seeds 5\n")
    (work / "edited.ect").write_text(edited)
    diff = _sh(ectc, "diff", "specs/sycophancy.ect", "edited.ect", cwd=work, env=env, ok=(2,))
    assert "seeds" in diff.stdout
    run = _sh(ectc, "run", "specs/sycophancy.ect", cwd=work, env=env, ok=(1,))
    assert run.stderr.startswith("error: ectc run needs the [train] extra (torch, transformers, ")
    assert run.stderr.endswith("not installed): pip install 'ectc[train]'\n") and run.stderr.count("\n") == 1
    print(f"bare wheel: built, installed and checked in {time.perf_counter() - t0:.1f} s")


@pytest.mark.skipif(not os.environ.get("ECTC_SLOW"), reason="slow (3 minutes: installs torch and the runtime "
                    "from the package registry): set ECTC_SLOW=1 to run")
def test_the_wheel_with_train_runs_the_tiny_profile(tmp_path):
    """`pip install <wheel>[train]` (torch pinned as `make` pins it) runs a tiny profile and
    evaluates its checkpoint; a judge with a key set asks for [judge], which is not there."""
    from tiny import tiny_project

    venv = _fresh_venv(tmp_path, "[train]", "torch==2.13.0")
    project = tmp_path / "project"
    tiny_project(project, "sycophancy")
    tiny_project(project, "bias")
    env = {**_clean_env(), "ECTC_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    ectc = venv / "bin/ectc"
    _sh(ectc, "run", "specs/sycophancy.ect", "--seeds", "1", "--arms", "ect,baseline", cwd=project, env=env)
    assert (project / "runs/sycophancy/tiny/report.md").is_file()
    _sh(ectc, "eval", "specs/sycophancy.ect", "--checkpoint", "runs/sycophancy/tiny/arms/ect/seed0/final",
        cwd=project, env=env)
    assert (project / "runs/sycophancy/eval-final/metrics.json").is_file()
    out = _sh(ectc, "run", "specs/bias.ect", cwd=project, env={**env, "ANTHROPIC_API_KEY": "sk-test"}, ok=(1,))
    assert out.stderr == "error: ectc run needs the [judge] extra (anthropic not installed): pip install 'ectc[judge]'\n"
