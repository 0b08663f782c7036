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
    # A hand edit is stale and rebuilt.
    (tmp_path / "generated/mini/feedback.py").write_text("# edited\n")
    assert main(["build", "--check"]) == 1
    assert "stale: generated/mini/feedback.py" in capsys.readouterr().err
    assert main(["build"]) == 0
    assert main(["build", "--check"]) == 0
    # A file build did not write is never removed: build refuses and writes nothing.
    (tmp_path / "generated/mini/feedback.py").write_text("# edited\n")
    (tmp_path / "generated/mini/notes.py").write_text("mine")
    capsys.readouterr()
    assert main(["build"]) == 1
    assert capsys.readouterr().err == (
        "error: generated/ holds 1 file(s) that ectc build did not write: generated/mini/notes.py; build "
        "writes and removes nothing there. Remove them, or pass --out to an empty folder\n")
    assert (tmp_path / "generated/mini/notes.py").read_text() == "mine"
    assert (tmp_path / "generated/mini/feedback.py").read_text() == "# edited\n"
    (tmp_path / "generated/mini/notes.py").unlink()
    assert main(["build"]) == 0
    # A deleted spec's folder, written by build, is removed whole.
    (tmp_path / "specs/mini.ect").rename(tmp_path / "specs/other.ect")
    text = (tmp_path / "specs/other.ect").read_text()
    (tmp_path / "specs/other.ect").write_text(text.replace("experiment mini", "experiment other", 1))
    assert main(["build"]) == 0
    assert not (tmp_path / "generated/mini").exists() and (tmp_path / "generated/other/manifest.json").exists()


def test_build_out_never_deletes_what_it_did_not_write(tmp_path, monkeypatch, capsys):
    """`ectc build --out .` on a clone removed 294 of 295 files, .git included."""
    (tmp_path / "specs").mkdir()
    shutil.copy(ROOT / "tests/fixtures/diagnostics/base.ect", tmp_path / "specs/mini.ect")
    (tmp_path / "README.md").write_text("readme")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git/HEAD").write_text("ref")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs/a.md").write_text("a")
    monkeypatch.chdir(tmp_path)
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    assert main(["build", "--out", "."]) == 1
    assert "README.md" in capsys.readouterr().err
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before
    # A symlinked experiment folder is not followed out of the output folder.
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("keep")
    (tmp_path / "gen").mkdir()
    (tmp_path / "gen/mini").symlink_to(outside)
    assert main(["build", "--out", "gen"]) == 1
    assert "gen/mini (a symbolic link)" in capsys.readouterr().err
    assert sorted(p.name for p in outside.iterdir()) == ["keep.txt"]


def test_explain_renders_labels_and_arms(capsys):
    assert main(["explain", str(ROOT / "specs/sycophancy.ect")]) == 0
    out = capsys.readouterr().out
    assert "Suggestibility Level: 0%" in out and "Suggestibility Level: 100%" in out
    assert "prompt_only" in out and "reuses baseline" in out
    assert "3 arm(s) x 7 seed(s)" in out


def test_check_reports_unreadable_file(capsys):
    assert main(["check", "does/not/exist.ect"]) == 1
    assert "cannot read" in capsys.readouterr().err


def test_run_flags_are_checked_before_torch_with_did_you_mean(tmp_path):
    """Every bad flag at once, before anything slow: `--profile gpu` was a KeyError traceback,
    `--device tpu` warmed a model for 30 s first, `--run-id ../../x` wrote outside runs/."""
    code = ("import sys\nfrom ectc.cli import main\nrc = main(sys.argv[1:])\n"
            "assert 'torch' not in sys.modules, 'torch imported'\nsys.exit(rc)\n")
    proc = subprocess.run([sys.executable, "-c", code, "run", str(ROOT / "specs/sycophancy.ect"),
                           "--profile", "tiy", "--arms", "ect,shuffld", "--seeds", "0", "--steps-scale", "-1",
                           "--device", "tpu", "--run-id", "../../x"],
                          cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.splitlines() == [
        "error: --run-id '../../x': a run id is a name (letters, digits, '.', '_', '-'; at most 100 "
        "characters; no '/' or '..'), used as a folder under runs/<experiment>/",
        "error: --seeds 0: need between 1 and 1000 seeds",
        "error: --steps-scale -1.0: need a positive factor (at most 1000)",
        "error: --device 'tpu': use auto, cpu, cuda, cuda:N or mps",
        "error: --profile 'tiy': sycophancy has no such profile (it has tiny, small, paper); did you mean `tiny`?",
        "error: --arms: sycophancy has no arm 'shuffld' (it has baseline, shuffled, ect, prompt_only, ootb); "
        "did you mean `shuffled`?",
    ]
    assert not (tmp_path.parent / "x").exists()
    for run_id in ("/abs", "a/b", "..", ".hidden", "x" * 101):
        assert main(["run", str(ROOT / "specs/sycophancy.ect"), "--run-id", run_id]) == 1


def test_run_resolves_generated_and_runs_from_the_specs_project(tmp_path):
    from ectc.runflags import project_root

    (tmp_path / "proj/specs").mkdir(parents=True)
    (tmp_path / "proj/generated").mkdir()
    (tmp_path / "elsewhere").mkdir()
    spec = tmp_path / "proj/specs/s.ect"
    spec.write_text("")
    assert project_root(spec, tmp_path / "elsewhere") == (tmp_path / "proj").resolve()
    assert project_root(tmp_path / "elsewhere" / "s.ect", tmp_path / "elsewhere") == tmp_path / "elsewhere"


def test_unreadable_specs_are_reported_by_every_command(tmp_path, monkeypatch, capsys):
    """Invalid UTF-8 and missing files were tracebacks in every command."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "specs").mkdir()
    (tmp_path / "specs/bad.ect").write_bytes(b"experiment x {\xff}")
    for command in (["check"], ["fmt"], ["explain"], ["run"]):
        assert main([*command, "specs/bad.ect"]) == 1
        assert capsys.readouterr().err == "specs/bad.ect: cannot read: not UTF-8 text (byte 0xff at offset 14)\n"
    for command in (["check"], ["fmt"], ["explain"]):
        assert main([*command, "specs/none.ect"]) == 1
        assert capsys.readouterr().err == "specs/none.ect: cannot read: No such file or directory\n"
    assert main(["build"]) == 1
    assert capsys.readouterr().err == "error: specs/bad.ect: cannot read: not UTF-8 text (byte 0xff at offset 14)\n"
    assert main(["diff", "specs/bad.ect", "specs/bad.ect"]) == 1
    assert "cannot read specs/bad.ect: not UTF-8 text (byte 0xff at offset 14)" in capsys.readouterr().err


def test_explain_refuses_an_unknown_profile(capsys):
    assert main(["explain", str(ROOT / "specs/sycophancy.ect"), "--profile", "tiyn"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.endswith("has no such profile (it has paper, small, tiny); did you mean `tiny`?\n")


def test_explain_shows_user_text_as_written(tmp_path, capsys):
    """Rich markup in a description or label (`[/bold]`) raised MarkupError in explain."""
    text = (ROOT / "tests/fixtures/diagnostics/base.ect").read_text().replace(
        "experiment mini {", 'experiment mini {\n  description "closing [/bold] and [red]open"', 1).replace(
        'label "Level:', 'label "[/] Level:', 1)
    spec = tmp_path / "s.ect"
    spec.write_text(text)
    assert main(["check", str(spec)]) == 0
    capsys.readouterr()
    assert main(["explain", str(spec)]) == 0
    out = capsys.readouterr().out
    assert "closing [/bold] and [red]open" in out and "[/] Level: 0%" in out


def test_run_reads_input_files_only_inside_the_project(tmp_path, monkeypatch, capsys):
    """`jsonl "../../../../etc/passwd"` was read as given; a missing file surfaced deep in a run."""
    project = tmp_path / "proj"
    (project / "specs").mkdir(parents=True)
    base = (ROOT / "tests/fixtures/diagnostics/base.ect").read_text()
    spec = (base.replace("data rows {", 'data rows: jsonl "../../outside.jsonl" {')
                .replace("a: int = randint(0, 9)", "a: int").replace("ok: bool = bernoulli(0.5)", "ok: bool"))
    (project / "specs/s.ect").write_text(spec)
    (tmp_path / "outside.jsonl").write_text('{"a": 1, "ok": true}\n')
    monkeypatch.chdir(project)
    assert main(["build"]) == 0
    capsys.readouterr()
    assert main(["run", "specs/s.ect"]) == 1
    assert capsys.readouterr().err == (
        f"error: data `rows`: ../../outside.jsonl resolves to {tmp_path.resolve()}/outside.jsonl, outside the "
        f"project {project.resolve()}; pass --allow-outside-files to read it\n")
    (project / "specs/s.ect").write_text(spec.replace("../../outside.jsonl", "data/rows.jsonl"))
    assert main(["build"]) == 0
    capsys.readouterr()
    assert main(["run", "specs/s.ect"]) == 1
    assert capsys.readouterr().err == "error: data `rows`: data/rows.jsonl: no such file\n"
