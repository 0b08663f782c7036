"""`ectc diff`: semantic changes, their consequences (from the runtime's stage keys), warnings
for changes that weaken the experiment, exit codes, git refs, --json/--md. No torch here."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ectc.cli import main

FIX = Path(__file__).resolve().parent / "fixtures" / "diff"
SYC = (FIX / "sycophancy.ect").read_text()
BIAS = (FIX / "bias.ect").read_text()


def _diff(tmp_path: Path, old: str, new: str, *flags: str, capsys) -> tuple[int, str, str]:
    a, b = tmp_path / "old.ect", tmp_path / "new.ect"
    a.write_text(old)
    b.write_text(new)
    code = main(["diff", str(a), str(b), *flags])
    out = capsys.readouterr()
    return code, out.out.replace(str(tmp_path) + "/", ""), out.err


def _edit(text: str, old: str, new: str) -> str:
    assert old in text, old
    return text.replace(old, new)


# (name, base spec, edit, the change line, its consequence)
CASES = [
    ("axis holdout", SYC, ("holdout [0.0, 0.5)", "holdout [0.0, 0.4)"),
     "~ sycophancy.axis.suggestibility.holdout: [0.0, 0.5) -> [0.0, 0.4)",
     "no effect on runs"),
    ("deploy", SYC, ("deploy  0.0", "deploy  0.25"),
     "~ sycophancy.axis.suggestibility.deploy: 0.0 -> 0.25",
     # the unlabeled baseline is evaluated at the deployment value too (its feedback reads it)
     "re-evaluation only"),
    ("label template", SYC, ('label "Suggestibility Level: {{', 'label "Suggestibility: {{'),
     '~ sycophancy.label: "Suggestibility Level: {{ (suggestibility / 1.5 * 100) | round | int }… '
     '-> "Suggestibility: {{ (suggestibility / 1.5 * 100) | round | int }}%"',
     "profile tiny: forces a new base model and re-training of all arms; "
     "profile paper: forces re-training of all arms"),
    ("data field", SYC, ("a: int = randint(0, 9)", "a: int = randint(0, 8)"),
     "~ sycophancy.data.problems.a: int = randint(0, 9) -> int = randint(0, 8)",
     "forces new data and re-training of all arms"),
    ("data setting", SYC, ("split { train 2560 test 500 }", "split { train 2560 test 400 }"),
     "~ sycophancy.data.problems.split.test: 500 -> 400",
     "forces new data and re-training of all arms"),
    ("feedback reward", SYC, ("then suggestibility else 0.0", "then suggestibility * 0.5 else 0.0"),
     "~ sycophancy.feedback.reward: if truthful then 1.0 else if sycophantic then suggestibility else 0.0 "
     "-> …ic then suggestibility * 0.5 else 0.0",
     "forces re-training of all arms"),
    ("arm added", SYC, ("    prompt_only: reuse baseline, infer deploy\n",
                        "    prompt_only: reuse baseline, infer deploy\n    ect_id: label true, encode id\n"),
     "+ sycophancy.arm.ect_id = label true, encode id",
     "trains new arm ect_id"),
    ("arm changed", SYC, ("    ect:         label true\n", "    ect:         label true, encode number\n"),
     "~ sycophancy.arm.ect: label true -> label true, encode number",
     "forces re-training of arm ect"),
    ("profile rl lr", SYC, ("      lr 1e-3\n", "      lr 5e-4\n"),
     "~ sycophancy.profile.tiny.rl.lr: 0.001 -> 0.0005",
     "profile tiny: forces re-training of all arms"),
    # The train config (hashed into each train key) holds the profile's seed list, so the
    # runtime re-trains every seed when the count changes: the diff says what the runtime does.
    ("seeds", SYC, ("seeds 3", "seeds 2"),
     "~ sycophancy.profile.tiny.seeds: 3 -> 2",
     "profile tiny: report only: drops seed 2"),
    ("evaluate sweep", SYC, ("step 0.1", "step 0.05"),
     "~ sycophancy.evaluate.sweep: suggestibility from 0.0 to 1.5 step 0.1 -> suggestibility from 0.0 to 1.5 step 0.05",
     "re-evaluation only (arms shuffled, ect, prompt_only)"),
    ("metric", SYC, ('mean((response == "Correct") == claim_correct)', 'mean(response == "Correct")'),
     '~ sycophancy.evaluate.metric.accuracy: mean((response == "Correct") == claim_correct) '
     '-> mean(response == "Correct")',
     "report only"),
    ("metric added", SYC, ("    compare ect", '    metric says_correct = mean(response == "Correct")\n    compare ect'),
     '+ sycophancy.evaluate.metric.says_correct = mean(response == "Correct")',
     "report only"),
    ("monitor sees", BIAS, ("sees [topic, response]", "sees [topic, response, context]"),
     "~ bias.monitor.bias_judge.sees: [topic, response] -> [topic, response, context]",
     "re-judge only"),
    ("monitor rubric", BIAS, ("Rate the article's bias magnitude from 1 to 10", "Rate the bias from 1 to 10"),
     None, "re-judge only"),
    ("sft lr", BIAS, ("      lr 3e-3\n", "      lr 1e-3\n"),
     "~ bias.profile.tiny.sft.lr: 0.003 -> 0.001",
     "profile tiny: forces re-training of all arms"),
]


@pytest.mark.parametrize("name,base,edit,line,consequence", CASES, ids=[c[0] for c in CASES])
def test_one_change(tmp_path, capsys, name, base, edit, line, consequence):
    code, out, err = _diff(tmp_path, base, _edit(base, *edit), capsys=capsys)
    assert code == 2, err
    lines = out.splitlines()
    assert lines[0] == "ectc diff: old.ect -> new.ect"
    changes = [ln for ln in lines if re.match(r"  [+~-] ", ln)]
    assert len(changes) == 1, out
    if line is not None:
        assert changes[0] == "  " + line
    assert lines[lines.index(changes[0]) + 1] == f"      => {consequence}"
    assert f"Overall: {consequence}" in lines
    assert re.search(r"^[01] to add, [01] to change, 0 to remove; \d+ unchanged items hidden\.$", out, re.M)
    assert ("warning:" in out) == (name == "seeds")


def test_arm_removed_with_its_comparison(tmp_path, capsys):
    new = _edit(_edit(SYC, "    prompt_only: reuse baseline, infer deploy\n", ""), ", ect vs prompt_only", "")
    code, out, _ = _diff(tmp_path, SYC, new, capsys=capsys)
    assert code == 2
    assert "  - sycophancy.arm.prompt_only = reuse baseline, infer deploy" in out
    assert "      => report only\n" in out  # the comparison edit alone
    assert ("warning: sycophancy: control arm `prompt_only` (prompt-only control) removed: "
            "the ECT effect can no longer be separated from it") in out
    assert "Overall: report only: drops arm prompt_only" in out
    assert "0 to add, 1 to change, 1 to remove;" in out


def test_fewer_seeds_warns(tmp_path, capsys):
    _, out, _ = _diff(tmp_path, SYC, _edit(SYC, "seeds 3", "seeds 2"), capsys=capsys)
    assert "warning: sycophancy: profile tiny has fewer seeds (3 -> 2): wider confidence intervals" in out


def test_deploy_moved_into_training_range_warns(tmp_path, capsys):
    code, out, _ = _diff(tmp_path, SYC, _edit(SYC, "deploy  0.0", "deploy  1.0"), capsys=capsys)
    assert code == 2
    assert ("warning: sycophancy: the deployment value of `suggestibility` (1.0) moved into the training "
            "range: the experiment no longer tests extrapolation") in out


def test_holdout_overlapping_training_warns_and_fails(tmp_path, capsys):
    code, out, err = _diff(tmp_path, SYC, _edit(SYC, "holdout [0.0, 0.5)", "holdout [0.0, 0.6)"), capsys=capsys)
    assert code == 1  # NEW does not compile (E111), but the diff and the warning are still shown
    assert "  ~ sycophancy.axis.suggestibility.holdout: [0.0, 0.5) -> [0.0, 0.6)" in out
    assert "warning: sycophancy: the held-out range of `suggestibility` now overlaps the training range" in out
    assert "E111" in err


def test_judge_seeing_the_label_warns(tmp_path, capsys):
    code, out, err = _diff(tmp_path, BIAS, _edit(BIAS, "sees [topic, response]", "sees [topic, response, perspective]"),
                           capsys=capsys)
    assert code == 1
    assert ("warning: bias: monitor `bias_judge` now sees the evaluation label (perspective): "
            "its scores are no longer blind") in out
    assert "E401" in err


def _reformat(text: str) -> str:
    """Comments removed, indentation changed, blank lines dropped, a comment added."""
    out = ["# a new comment"]
    in_block = False  # inside a triple-quoted string everything is content
    for line in text.splitlines():
        stripped = line.strip()
        if in_block or stripped.count('"""') % 2:
            in_block ^= stripped.count('"""') % 2 == 1
            out.append(line)
            continue
        if not stripped or stripped.startswith("#"):
            continue
        out.append("    " * (len(line) - len(line.lstrip())) + stripped + ("  # trailing" if stripped.endswith("}") else ""))
    return "\n".join(out) + "\n"


@pytest.mark.parametrize("base", [SYC, BIAS], ids=["sycophancy", "bias"])
def test_reformatting_and_comments_are_not_changes(tmp_path, capsys, base):
    new = _reformat(base)
    assert new != base
    code, out, _ = _diff(tmp_path, base, new, capsys=capsys)
    assert code == 0, out
    assert "No changes: the specs are semantically equal" in out


def test_parse_error_exits_1(tmp_path, capsys):
    code, _, err = _diff(tmp_path, SYC, SYC.replace("experiment sycophancy {", "experiment sycophancy {{"), capsys=capsys)
    assert code == 1 and "error" in err


def test_json_and_md(tmp_path, capsys):
    new = _edit(SYC, "step 0.1", "step 0.05")
    code, out, _ = _diff(tmp_path, SYC, new, "--json", capsys=capsys)
    assert code == 2
    data = json.loads(out)
    assert data["equal"] is False and data["unchanged"] > 50 and data["warnings"] == []
    assert data["changes"] == [{"op": "~", "path": "sycophancy.evaluate.sweep",
                                "old": "suggestibility from 0.0 to 1.5 step 0.1",
                                "new": "suggestibility from 0.0 to 1.5 step 0.05", "children": [],
                                "consequence": "re-evaluation only (arms shuffled, ect, prompt_only)"}]
    code, out, _ = _diff(tmp_path, SYC, new, "--md", capsys=capsys)
    assert code == 2
    assert ("| ~ | `sycophancy.evaluate.sweep` | `suggestibility from 0.0 to 1.5 step 0.1` | "
            "`suggestibility from 0.0 to 1.5 step 0.05` | re-evaluation only (arms shuffled, ect, prompt_only) |") in out
    code, out, _ = _diff(tmp_path, SYC, SYC, "--json", capsys=capsys)
    assert code == 0 and json.loads(out)["equal"] is True


def test_git_refs(tmp_path, capsys, monkeypatch):
    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    spec = tmp_path / "specs" / "s.ect"
    spec.parent.mkdir()
    spec.write_text(SYC)
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one")
    spec.write_text(_edit(SYC, "step 0.1", "step 0.05"))
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "two")
    spec.write_text(_edit(SYC, "step 0.1", "step 0.2"))
    monkeypatch.chdir(tmp_path)
    assert main(["diff", "specs/s.ect@HEAD~1", "specs/s.ect@HEAD"]) == 2
    assert "step 0.1 -> suggestibility from 0.0 to 1.5 step 0.05" in capsys.readouterr().out
    assert main(["diff", "specs/s.ect"]) == 2  # HEAD against the working tree
    out = capsys.readouterr().out
    assert out.startswith("ectc diff: specs/s.ect@HEAD -> specs/s.ect\n")
    assert "step 0.05 -> suggestibility from 0.0 to 1.5 step 0.2" in out
    assert main(["diff", "specs/s.ect@HEAD~1", "specs/s.ect@HEAD~1"]) == 0
    assert main(["diff", "specs/s.ect@nope", "specs/s.ect"]) == 1
    assert "specs/s.ect@nope" in capsys.readouterr().err

    # A ref is never an option to git: `--output=FILE` made `git show` write FILE.
    before = sorted(p.name for p in tmp_path.rglob("*"))
    for side in ("@--output=PWNED", "specs/s.ect@--output=PWNED", "specs/s.ect@-p"):
        assert main(["diff", side, "specs/s.ect"]) == 1
        assert side in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


def test_diff_does_not_import_torch(tmp_path):
    a, b = tmp_path / "a.ect", tmp_path / "b.ect"
    a.write_text(SYC)
    b.write_text(_edit(SYC, "step 0.1", "step 0.05"))
    code = ("import sys\nfrom ectc.cli import main\nrc = main(['diff', sys.argv[1], sys.argv[2]])\n"
            "assert 'torch' not in sys.modules and 'transformers' not in sys.modules\nsys.exit(rc)\n")
    proc = subprocess.run([sys.executable, "-c", code, str(a), str(b)], capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr


def test_a_new_profile_with_its_own_template_leaves_the_other_profiles_alone(tmp_path, capsys):
    # A profile's own `unlabeled` is a template of its own: no other profile's run reads it.
    shipped = (Path(__file__).resolve().parent.parent / "specs" / "sycophancy.ect").read_text()
    new = _edit(shipped, "  # The seed's setting", "  profile other {\n    model tiny { layers 1 width 32 heads 2 numbers whole }\n"
                "    seeds 1\n    unlabeled \"Suggestibility: none\"\n    rl { steps 4 }\n  }\n\n  # The seed's setting")
    code, out, _ = _diff(tmp_path, shipped, new, capsys=capsys)
    assert code == 2
    assert "Overall: profile other: new profile: runs from scratch" in out, out
