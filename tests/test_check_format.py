"""`ectc check --format json|github`: the text form's diagnostics and exit status, machine-readable."""

import json
import re
from pathlib import Path

from ectc.cli import main
from ectc.diagformat import as_github
from ectc.errors import Diagnostic, Span

ROOT = Path(__file__).parent.parent
SPEC = "two_problems.ect"  # an unknown `rl` setting (E601) and a deployment value inside training (W112)


def _check(capsys, monkeypatch, *args):
    monkeypatch.chdir(ROOT / "tests/fixtures/editor")
    status = main(["check", *args])
    out = capsys.readouterr()
    return status, out.out, out.err


def test_json_lists_every_diagnostic_with_its_span(capsys, monkeypatch):
    status, out, err = _check(capsys, monkeypatch, "--format", "json", SPEC)
    assert status == 1 and err == ""
    assert json.loads(out) == [
        {"code": "W112", "severity": "warning", "message": "the deployment value lies inside the training range",
         "file": SPEC, "line": 5, "column": 13, "end_line": 5, "end_column": 16,
         "hint": "ECT tests extrapolation: deploy at a held-out value"},
        {"code": "E601", "severity": "error", "message": "unknown setting `bacth` in `rl` of profile `tiny`",
         "file": SPEC, "line": 26, "column": 19, "end_line": 26, "end_column": 26, "hint": "did you mean `batch`?"},
    ]


def test_github_annotations(capsys, monkeypatch):
    status, out, err = _check(capsys, monkeypatch, "--format", "github", SPEC)
    assert status == 1 and err == ""
    assert out == (
        "::warning file=two_problems.ect,line=5,col=13,endLine=5,endColumn=16,title=W112::"
        "the deployment value lies inside the training range%0Ahint: ECT tests extrapolation: deploy at a held-out value\n"
        "::error file=two_problems.ect,line=26,col=19,endLine=26,endColumn=26,title=E601::"
        "unknown setting `bacth` in `rl` of profile `tiny`%0Ahint: did you mean `batch`?\n")


def test_formats_agree_with_the_text_form(capsys, monkeypatch):
    status, _, text = _check(capsys, monkeypatch, SPEC)
    assert status == 1
    heads = re.findall(r"^(\S+):(\d+):(\d+): (error|warning)\[(\w+)\]: (.*)$", text, re.M)
    _, out, _ = _check(capsys, monkeypatch, "--format", "json", SPEC)
    assert [(r["file"], str(r["line"]), str(r["column"]), r["severity"], r["code"], r["message"])
            for r in json.loads(out)] == heads
    assert len(heads) == 2


def test_a_clean_spec_is_an_empty_list_and_exit_0(capsys, monkeypatch):
    status, out, _ = _check(capsys, monkeypatch, "--format", "json", str(ROOT / "tests/fixtures/diagnostics/base.ect"))
    assert (status, out) == (0, "[]\n")
    status, out, _ = _check(capsys, monkeypatch, "--format", "github", str(ROOT / "tests/fixtures/diagnostics/base.ect"))
    assert (status, out) == (0, "")


def test_an_unreadable_spec_fails_as_in_text(capsys, monkeypatch):
    status, out, err = _check(capsys, monkeypatch, "--format", "json", "missing.ect")
    assert (status, out) == (1, "[]\n")
    assert err == "missing.ect: cannot read: No such file or directory\n"


def test_github_escapes_workflow_command_characters():
    d = Diagnostic(Span(3, 4, 3, 9), "E999", "50% of a,b: x\nnext", hint=None, severity="error")
    assert as_github(d, "dir,x/a:b.ect") == (
        "::error file=dir%2Cx/a%3Ab.ect,line=3,col=4,endLine=3,endColumn=9,title=E999::50%25 of a,b: x%0Anext")
