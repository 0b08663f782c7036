"""Every diagnostic has a fixture: a spec and the exact text `ectc check` prints for it."""

from pathlib import Path

import pytest

from ectc.cli import main

FIXTURES = Path(__file__).parent / "fixtures" / "diagnostics"
CASES = sorted(p.stem for p in FIXTURES.glob("[EW]*.ect"))


def test_base_fixture_is_clean(capsys, monkeypatch):
    monkeypatch.chdir(FIXTURES)
    assert main(["check", "base.ect"]) == 0
    assert capsys.readouterr().out == "base.ect: ok\n"


@pytest.mark.parametrize("case", CASES)
def test_diagnostic_text(case, capsys, monkeypatch):
    monkeypatch.chdir(FIXTURES)
    status = main(["check", f"{case}.ect"])
    err = capsys.readouterr().err
    assert err == (FIXTURES / f"{case}.expected").read_text()
    code = case.split("_")[0]
    assert f"[{code}]" in err, "the fixture's name says which diagnostic it shows"
    assert status == (0 if code.startswith("W") else 1)


def test_every_problem_is_reported_at_once(tmp_path, capsys):
    base = (FIXTURES / "base.ect").read_text()
    bad = (base.replace("randint(0, 9)", "randit(0, 9)")
               .replace("label true", "label ture")
               .replace("rl { steps 10 batch 8 }", "rl { steps 10 bacth 8 }"))
    spec = tmp_path / "bad.ect"
    spec.write_text(bad)
    assert main(["check", str(spec)]) == 1
    err = capsys.readouterr().err
    assert [line.split("]")[0].split("[")[1] for line in err.splitlines() if ": error[" in line] == [
        "E202", "E501", "E601"]
    assert err.rstrip().endswith("3 error(s), 0 warning(s)")


def test_shipped_specs_check_clean(capsys):
    specs = sorted(str(p) for p in (Path(__file__).parent.parent / "specs").glob("*.ect"))
    assert len(specs) >= 2
    assert main(["check", *specs]) == 0
    assert capsys.readouterr().err == ""


def test_a_spec_beyond_the_size_limit_is_refused_before_lexing(tmp_path, capsys):
    """A 10 MB string needed 3.7 GB to lex; the stated limit comes first."""
    from ectc.parse import MAX_SPEC_CHARS

    spec = tmp_path / "big.ect"
    spec.write_text("experiment x {\n  description \"" + "x" * MAX_SPEC_CHARS + "\"\n}\n")
    assert main(["check", str(spec)]) == 1
    err = capsys.readouterr().err
    assert f"error[E008]: the spec is too large ({MAX_SPEC_CHARS + 34} characters, 4 lines)" in err
    assert "ectc reads specs of at most 1000000 characters and 20000 lines" in err


def test_inferred_types_are_objects_with_parameters():
    # Types are values (a kind plus parameters), not strings cut by position: a list of lists,
    # an enum of a named axis, a monitor's field; `_show` renders each for the message.
    from ectc.check import ANY, BOOL, REAL, TEXT, Typer, enum_type, list_type
    from ectc.lower import lower
    from ectc.parse import parse

    def infer(src, scope=None):
        exp = lower(parse(f"experiment e {{ feedback {{ r = {src} }} }}")).experiments[0]
        out = []
        return Typer(scope or {}, "feedback", out).infer(exp.feedback.assigns[0].expr), [d.message for d in out]

    assert infer("[[1], [2.5]]") == (list_type(list_type(REAL)), [])
    assert infer("[p, q][0]", {"p": enum_type("level"), "q": enum_type("level")}) == (enum_type("level"), [])
    assert infer("if true then 1 else 2.5") == (REAL, [])
    assert infer('[1, "x"]') == (list_type(ANY), ["list items must share one type: an int and text"])
    assert infer("[[1]] == [p]", {"p": enum_type("level")}) == (
        BOOL, ["cannot compare a list of a list of an int with a list of a value of axis `level`"])
    assert infer('"a" + t', {"t": TEXT}) == (TEXT, [])


def test_a_typed_warmup_target_is_a_target(tmp_path, capsys):
    """`target: text = render(...)` is the warm-up's answer as `target = ...` is (issue 16)."""
    import json

    from ectc.compile import compile_text
    from ectc.generate import generate

    text = (FIXTURES / "base.ect").read_text().replace("  prompt ", """  data sums {
    split { train 64 }
    x: int = randint(0, 9)
    y: int = randint(0, 9)
    target: text = render("{{ x + y }}")
  }
  prompt """).replace("    rl { steps 10 batch 8 }", "    warmup { steps 10 mix { rows 0.5 sums 0.5 } }\n    rl { steps 10 batch 8 }")
    spec = tmp_path / "typed.ect"
    spec.write_text(text)
    assert main(["check", str(spec)]) == 0, capsys.readouterr().err
    plan = json.loads(generate(compile_text(text)[0], text, "typed.ect")["mini/experiment.json"])
    assert [(d["name"], d["has_target"]) for d in plan["data"]] == [("rows", True), ("sums", True)]


def test_a_missing_word_list_stops_check_and_build(tmp_path, capsys, monkeypatch):
    """A lexicon's word list is looked for beside the spec by `check` and `build`, not first
    by the judging stage after every arm has trained (issue 16)."""
    (tmp_path / "specs").mkdir()
    text = (FIXTURES / "base.ect").read_text().replace("  arms {", """  monitor filler: lexicon {
    sees [response]
    lists { filler "lexicons/filler.txt" }
  }

  arms {""")
    (tmp_path / "specs/x.ect").write_text(text)
    monkeypatch.chdir(tmp_path)
    line = next(i for i, l in enumerate(text.splitlines(), 1) if "filler.txt" in l)
    for argv in (["check", "specs/x.ect"], ["build"]):
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert f"specs/x.ect:{line}:20: error[E405]: lexicon monitor `filler`'s list `filler`: no file " \
               "`lexicons/filler.txt` beside the spec" in err, err
    assert not (tmp_path / "generated").exists()
    (tmp_path / "specs/lexicons").mkdir()
    (tmp_path / "specs/lexicons/filler.txt").write_text("um\n")
    assert main(["check", "specs/x.ect"]) == 0
    assert main(["build"]) == 0
