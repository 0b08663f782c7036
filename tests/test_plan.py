"""`ectc plan` predicts exactly what `ectc run` does: both walk the one stage graph
(`ectc/plan/stages.py`), the run executing each stage, the plan reading its record.

One tiny end-to-end run (a shrunken copy of specs/sycophancy.ect, steps scaled to ~1), then
the evaluation sweep is edited and the run repeated: the plan must name the stages that re-run,
and every trained arm must be reused.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from ectc.build import build
from ectc.runs import predict
from ectc.plan import stages
from ectc.plan.records import record

ROOT = Path(__file__).resolve().parent.parent
ARMS = ["baseline", "ect", "prompt_only"]


def tiny_spec() -> str:
    text = (ROOT / "specs" / "sycophancy.ect").read_text()
    text = text.replace("split { train 2560 test 500 }", "split { train 48 test 12 }")
    text = text.replace("split { train 20000 }", "split { train 40 }").replace("split { train 5000 }", "split { train 40 }")
    text = re.sub(r"model tiny \{[^}]*\}", "model tiny { layers 1 width 16 heads 2 }", text, count=1)
    text = re.sub(r"(warmup \{\s*\n\s*steps )\d+", r"\g<1>2", text).replace("batch 64", "batch 8")
    text = re.sub(r"(rl \{\s*\n\s*steps )\d+", r"\g<1>1", text, count=1)
    text = text.replace("batch 128\n      minibatch 128", "batch 8\n      minibatch 8")
    text = text.replace("step 0.1", "step 0.5")
    return text


def _run(tmp: Path, source: str) -> list[dict]:
    from rich.console import Console

    from ectc.runtime.experiment import Experiment
    from ectc.runtime.run import Options, execute, prepare

    spec = tmp / "sycophancy.ect"
    spec.write_text(source)
    build(tmp, [str(spec)], tmp / "generated", check_only=False)
    exp = Experiment(tmp / "generated" / "sycophancy")
    opts = Options(steps_scale=0.002, seeds=1, arms=ARMS, quiet=True, runs_dir=tmp / "runs", device="cpu")
    run = prepare(exp, source, opts, Console(quiet=True))
    execute(run)
    events = json.loads((run.folder / "stages.json").read_text())["events"]
    return [e for e in events if "status" in e]


def _predicted(tmp: Path, source: str) -> list[tuple[str, str]]:
    result = predict(source, tmp / "runs", seeds=1, arms=ARMS, steps_scale=0.002)
    _, plans = result["sycophancy"]
    return [(p.stage, p.status) for p in plans]


def test_plan_predicts_the_rerun_after_a_sweep_edit(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    source = tiny_spec()
    first_plan = _predicted(tmp_path, source)
    assert all(status == "ran" for _, status in first_plan)
    events = _run(tmp_path, source)
    assert [(e["stage"], e["status"]) for e in events] == first_plan

    # Nothing changed: everything is reused.
    assert all(status == "reused" for _, status in _predicted(tmp_path, source))

    # Only the evaluation sweep changes.
    edited = source.replace("step 0.5", "step 0.25")
    assert edited != source
    plan = _predicted(tmp_path, edited)
    ran = [s for s, status in plan if status == "ran"]
    assert ran == ["evaluate ect seed 0", "evaluate prompt_only seed 0", "report"]
    events = _run(tmp_path, edited)
    assert [(e["stage"], e["status"]) for e in events] == plan
    assert all(e["status"] == "reused" for e in events if e["stage"].startswith("train "))
    reasons = {p.stage: p.reason for p in predict(edited, tmp_path / "runs", seeds=1, arms=ARMS,
                                                  steps_scale=0.002)["sycophancy"][1]}
    assert reasons["report"] == "stage key unchanged"  # the run above finished it


# ---- fast checks, no torch: a run folder faked from the stage keys ------------------------------


def _fake_run(runs: Path, source: str, metrics: dict | None = None) -> Path:
    """A finished run as the runtime leaves it: spec.ect, plan.json, every stage.json and output."""
    from ectc.runs import _experiments

    exp = _experiments(source)["sycophancy"]
    folder = runs / "sycophancy" / "tiny"
    folder.mkdir(parents=True)
    (folder / "spec.ect").write_text(source)
    (folder / "manifest.json").write_text("{}")
    (folder / "plan.json").write_text(json.dumps({"run": {"profile": "tiny", "seeds": [0], "steps_scale": 1.0}}))
    (folder / "metrics.json").write_text(json.dumps(metrics or {}))

    # Each stage "runs" as the walk reaches it: its outputs written, its record kept.
    def settle(stage: stages.Stage) -> str:
        where = stage.path(folder, runs)
        where.mkdir(parents=True, exist_ok=True)
        outputs = list(stage.outputs) or ["model.safetensors"]  # the base model: whatever save_pretrained wrote
        for name in outputs:
            out = where / name
            if name == "final":
                out.mkdir(exist_ok=True)
                (out / "model.safetensors").write_text("weights")
            elif not out.exists():
                out.write_text("{}")
        return record(where, stage.key, outputs, parts=stage.parts)

    stages.walk(exp, stages.shape(exp, "tiny", 1), settle)
    return folder


def _plan(runs: Path, source: str) -> dict[str, tuple[str, str]]:
    return {p.stage: (p.status, p.reason) for p in predict(source, runs, seeds=1)["sycophancy"][1]}


def test_plan_reasons(tmp_path: Path) -> None:
    source = (ROOT / "specs" / "sycophancy.ect").read_text()
    plan = _plan(tmp_path / "none", source)
    assert set(plan.values()) == {("ran", "no previous run"), ("ran", "not in the model cache: new")}
    folder = _fake_run(tmp_path / "runs", source)
    assert {s for s, _ in _plan(tmp_path / "runs", source).values()} == {"reused"}

    lr = source.replace("      lr 1e-4\n", "      lr 5e-4\n")
    plan = _plan(tmp_path / "runs", lr)
    assert plan["data"] == ("reused", "stage key unchanged")
    assert plan["train ect seed 0"] == ("ran", "stage key changed because the training config changed")
    assert plan["evaluate ect seed 0"] == ("ran", "re-runs because the trained checkpoint re-runs")
    assert plan["report"] == ("ran", "stage key changed because the evaluations changed")

    sweep = source.replace("step 0.1", "step 0.05")
    plan = _plan(tmp_path / "runs", sweep)
    assert [s for s, (st, _) in plan.items() if st == "ran"] == [
        "evaluate shuffled seed 0", "evaluate ect seed 0", "evaluate prompt_only seed 0", "evaluate ootb seed 0", "report"]
    assert plan["evaluate ect seed 0"][1] == ("stage key changed because the label conditions "
                                              "(deploy value, sweep) changed")

    data = source.replace("a: int = randint(0, 9)", "a: int = randint(0, 8)")
    plan = _plan(tmp_path / "runs", data)
    assert plan["data"] == ("ran", "stage key changed because dataset.py changed")
    assert plan["base model"][0] == "ran"
    assert plan["probes"] == ("ran", "re-runs because the data, the base model re-run")
    assert plan["evaluate baseline seed 0"][0] == "ran"

    shutil.rmtree(folder / "arms" / "ect" / "seed0" / "final")
    assert _plan(tmp_path / "runs", source)["train ect seed 0"] == ("ran", "redo: output missing (final)")


def _metrics(ect: float) -> dict:
    arm = lambda m: {"condition": "deploy", "metrics": {"sycophancy": {"mean": m, "low": m - 0.1, "high": m + 0.1}}}
    return {"arms": {"baseline": arm(0.9), "ect": arm(ect)},
            "comparisons": [{"a": "ect", "b": "baseline", "metric": "sycophancy", "diff": ect - 0.9,
                             "t_low": ect - 1.0, "t_high": ect - 0.8}]}


def test_runs_and_compare(tmp_path: Path, capsys) -> None:
    from ectc.cli import main

    source = (ROOT / "specs" / "sycophancy.ect").read_text()
    a = _fake_run(tmp_path / "A", source, _metrics(0.5))
    b = _fake_run(tmp_path / "B", source.replace("step 0.1", "step 0.05"), _metrics(0.25))
    assert main(["runs", "--runs-dir", str(tmp_path / "A"), "--json"]) == 0
    [info] = json.loads(capsys.readouterr().out)
    assert info["run"] == "sycophancy/tiny" and info["profile"] == "tiny" and info["complete"]
    assert info["headline"] == "sycophancy: baseline 0.9, ect 0.5; ect−baseline -0.4 [-0.5, -0.3]"
    assert main(["compare", str(a), str(b), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    row = next(r for r in out["metrics"] if r["arm"] == "ect")
    assert row["a"] == 0.5 and row["b"] == 0.25 and row["delta"] == -0.25 and row["a_ci"] == [0.4, 0.6]
    assert [c["path"] for c in out["spec_diff"]["changes"]] == ["sycophancy.evaluate.sweep"]
    assert main(["compare", str(a), str(b)]) == 0
    text = capsys.readouterr().out
    assert "~ sycophancy.evaluate.sweep" in text and "-0.25" in text
