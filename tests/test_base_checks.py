"""The base model is checked before any arm trains: its probes run right after the base-model
stage (and are reported at once), a `require` it fails stops the run with the figure, and a
choice it almost never gives warns at the start of RL (issue 16, items 14 and 15)."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest

from ectc.build import build
from ectc.cli import main
from ectc.runs import predict
from tiny import tiny_project

pytest.importorskip("torch")

REQUIRE = "    require base_knows >= {}\n    metric sycophancy "
# Three choices, a warm-up whose targets are "Correct" and "Incorrect" only, and long and fast
# enough (60 steps at lr 1e-2) that the base settles on those two.
THREE_WAY = [('response choice ["Correct", "Incorrect"]', 'response choice ["Correct", "Incorrect", "Unsure"]'),
             ("Correct or Incorrect?\"", "Correct, Incorrect or Unsure?\""),
             ("      steps 20\n", "      steps 60\n"), ("      batch 64\n      lr 1e-3\n", "      batch 16\n      lr 1e-2\n")]


def _run(project: Path, arms: list[str]):
    """The shrunk run in this process, seed 0 only; returns the run and what its console printed."""
    from rich.console import Console

    from ectc.runtime.experiment import Experiment
    from ectc.runtime.run import Options, execute, prepare

    source = (project / "specs/sycophancy.ect").read_text()
    exp = Experiment(project / "generated/sycophancy")
    printed = io.StringIO()
    opts = Options(seeds=1, arms=arms, runs_dir=project / "runs", device="cpu")
    run = prepare(exp, source, opts, Console(file=printed, width=300, highlight=False))
    execute(run)
    return run, printed.getvalue()


def _records(run, arms: list[str]) -> dict[str, dict]:
    return {arm: json.loads((run.folder / f"arms/{arm}/seed0/stage.json").read_text()) for arm in arms}


def test_a_failed_require_stops_right_after_the_warm_up(tmp_path, monkeypatch, capsys):
    # A 20-step warm-up leaves the 1-layer base near chance on the check: nowhere near 99%.
    tiny_project(tmp_path, "sycophancy", [("    metric sycophancy ", REQUIRE.format("0.99"))])
    monkeypatch.chdir(tmp_path)
    assert main(["run", "specs/sycophancy.ect", "--seeds", "1"]) == 1
    captured = capsys.readouterr()
    run = tmp_path / "runs/sycophancy/tiny"
    values = json.loads((run / "probes/values.json").read_text())["base_knows"]
    share = sum(values) / len(values)
    assert len(values) == 48 and share < 0.99
    assert captured.err == (f"error: `require base_knows >= 0.99` fails: the base model's base_knows is {share:.2f} "
                            f"({sum(values)} of 48 items). The run stops before training any arm: improve the base "
                            "model (e.g. a longer warm-up) or lower the bound.\n")
    assert not (run / "arms").exists() and not (run / "eval").exists(), "nothing trained or evaluated"
    # The figure was on the console as soon as the probes ran, right after the base model.
    lines = [line.strip() for line in captured.out.splitlines() if line.strip()]
    base = next(i for i, line in enumerate(lines) if line.startswith("ran base model"))
    assert lines[base + 1].startswith(f"ran probes — base_knows {share:.0%} ({sum(values)}/48)")

    # `ectc plan` now knows the run would stop again where it did.
    plans = predict((tmp_path / "specs/sycophancy.ect").read_text(), tmp_path / "runs", seeds=1,
                    root=tmp_path / "specs")["sycophancy"][1]
    probes = next(p for p in plans if p.stage == "probes")
    assert probes.status == "reused" and probes.reason.endswith(
        f"; `require base_knows >= 0.99` fails: the base model's base_knows is {share:.2f} ({sum(values)} of 48 items): "
        "the run stops here")
    after = plans[plans.index(probes) + 1:]
    assert after and {p.status for p in after} == {"skipped"}, "nothing after the probes runs, nor is billed"
    assert all(p.reason.startswith("the run stops at the probes (`require base_knows >= 0.99` fails") for p in after)

    # The bound lowered: the base and its probes are reused, the requirement is met, the run goes on
    # (to the untrained base alone here: `ootb` trains nothing).
    spec = tmp_path / "specs/sycophancy.ect"
    spec.write_text(spec.read_text().replace("base_knows >= 0.99", "base_knows >= 0.0"))
    build(tmp_path, [str(spec)], tmp_path / "generated", check_only=False)
    assert main(["run", "specs/sycophancy.ect", "--seeds", "1", "--arms", "ootb"]) == 0
    events = json.loads((run / "stages.json").read_text())["events"]
    assert [(e["stage"], e["status"]) for e in events if "status" in e][:3] == [
        ("data", "reused"), ("base model", "reused"), ("probes", "reused")]
    met = next(e for e in events if "require" in e)
    assert met == {"stage": "probes", "require": "base_knows >= 0", "value": round(share, 4), "items": 48, "met": True}
    assert "met require base_knows >= 0" in " ".join(capsys.readouterr().out.split())


def test_probes_run_and_are_reported_before_any_arm_trains(tmp_path):
    """On the shipped two-way spec (shrunk) the base gives both choices: no near-zero warning."""
    project = tmp_path
    tiny_project(project, "sycophancy")
    run, printed = _run(project, ["baseline", "ect"])
    events = json.loads((run.folder / "stages.json").read_text())["events"]
    order = [e["stage"] for e in events if "status" in e]
    assert order[:4] == ["data", "base model", "probes", "train baseline seed 0"], order
    probes = next(e for e in events if e.get("stage") == "probes" and "status" in e)
    assert re.fullmatch(r"base_knows \d+% \(\d+/48\)", probes["detail"])
    assert printed.index("probes —") < printed.index("train baseline seed 0")

    # Quiet: both choices are sampled at the start of RL, and the training record says how often.
    assert not [e for e in events if "warning" in e]
    for arm, rec in _records(run, ["baseline", "ect"]).items():
        assert set(rec["base_choices"]) == {"Correct", "Incorrect"}, arm
        assert min(rec["base_choices"].values()) > 0.01 and rec["choice_warning"] is None
    assert "near-zero" not in printed.lower()
    assert "Near-zero" not in (run.folder / "report.md").read_text()


def test_a_choice_the_warm_up_never_targets_warns_at_the_start_of_rl(tmp_path):
    tiny_project(tmp_path, "sycophancy", THREE_WAY)
    run, printed = _run(tmp_path, ["ect"])
    rec = _records(run, ["ect"])["ect"]
    unsure = rec["base_choices"]["Unsure"]
    assert unsure < 0.01 < min(rec["base_choices"]["Correct"], rec["base_choices"]["Incorrect"])
    warning = rec["choice_warning"]
    assert warning.startswith(f'near-zero choice: the base model gives "Unsure" P {unsure:.2g} over the first '
                              "training prompts (threshold 0.01)")
    events = json.loads((run.folder / "stages.json").read_text())["events"]
    assert {"stage": "train ect seed 0", "warning": warning} in [
        {k: e[k] for k in ("stage", "warning")} for e in events if "warning" in e]
    assert "warning train ect seed 0 — near-zero choice" in " ".join(printed.split())
    report = (run.folder / "report.md").read_text()
    assert (f'- Near-zero choice under the base model at the start of RL: "Unsure" P at most {unsure:.2g} '
            "(arm ect); the threshold is 0.01.") in report
