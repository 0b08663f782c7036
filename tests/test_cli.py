"""The command line: fast imports, build/--check, explain."""

import shutil
import subprocess
import sys
from pathlib import Path

from ectc.cli import main

ROOT = Path(__file__).parent.parent
HEAVY = ("torch", "transformers", "trl", "peft", "anthropic", "datasets", "bitsandbytes", "accelerate")


def test_import_cli_leaves_heavy_modules_out():
    code = ("import sys, ectc.cli, ectc.compile, ectc.generate, ectc.build, ectc.explain; "
            f"print([m for m in {HEAVY!r} if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_check_and_build_do_not_import_torch(tmp_path):
    code = ("import sys; from ectc.cli import main; "
            f"main(['check', {str(ROOT / 'specs/sycophancy.ect')!r}]); "
            f"main(['build', '--check', '--out', {str(ROOT / 'generated')!r}, {str(ROOT / 'specs/sycophancy.ect')!r}]); "
            f"print([m for m in {HEAVY!r} if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stderr


def test_build_writes_then_check_detects_staleness(tmp_path, monkeypatch, capsys):
    (tmp_path / "specs").mkdir()
    shutil.copy(ROOT / "tests/fixtures/diagnostics/base.ect", tmp_path / "specs/mini.ect")
    monkeypatch.chdir(tmp_path)
    assert main(["build", "--check"]) == 1
    assert main(["build"]) == 0
    assert main(["build", "--check"]) == 0
    capsys.readouterr()
    # A hand edit and a stray file are both stale.
    (tmp_path / "generated/mini/feedback.py").write_text("# edited\n")
    (tmp_path / "generated/mini/stray.py").write_text("")
    assert main(["build", "--check"]) == 1
    err = capsys.readouterr().err
    assert "stale: generated/mini/feedback.py" in err and "stale: generated/mini/stray.py" in err
    assert main(["build"]) == 0
    assert not (tmp_path / "generated/mini/stray.py").exists()
    assert main(["build", "--check"]) == 0


def test_explain_renders_labels_and_arms(capsys):
    assert main(["explain", str(ROOT / "specs/sycophancy.ect")]) == 0
    out = capsys.readouterr().out
    assert "Suggestibility Level: 0%" in out and "Suggestibility Level: 100%" in out
    assert "prompt_only" in out and "reuses baseline" in out
    assert "3 arm(s) x 7 seed(s)" in out


def test_check_reports_unreadable_file(capsys):
    assert main(["check", "does/not/exist.ect"]) == 1
    assert "cannot read" in capsys.readouterr().err
