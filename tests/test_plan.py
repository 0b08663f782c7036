"""`ectc plan` predicts exactly what `ectc run` does, and `ectc.stagekeys` computes exactly the
keys the runtime writes to each stage.json (so any drift between the two fails here).

One tiny end-to-end run (a shrunken copy of specs/sycophancy.ect, steps scaled to ~1), then
the evaluation sweep is edited and the run repeated: the plan must name the stages that re-run,
and every trained arm must be reused.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from ectc.build import build
from ectc.runs import predict
from ectc.stagekeys import GeneratedExperiment, stage_keys

ROOT = Path(__file__).resolve().parent.parent
ARMS = ["baseline", "ect", "prompt_only"]


def tiny_spec() -> str:
    text = (ROOT / "specs" / "sycophancy.ect").read_text()
    text = text.replace("split { train 2560 test 500 }", "split { train 48 test 12 }")
    text = text.replace("split { train 20000 }", "split { train 40 }")
    text = re.sub(r"model tiny \{[^}]*\}", "model tiny { layers 1 width 16 heads 2 }", text, count=1)
    text = text.replace("steps 3000", "steps 2").replace("batch 64", "batch 8")
    text = text.replace("steps 600", "steps 1").replace("batch 128\n      minibatch 128", "batch 8\n      minibatch 8")
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

    # The keys stagekeys computes are the keys the runtime wrote.
    folder = tmp_path / "runs" / "sycophancy" / "tiny"
    exp = GeneratedExperiment.from_folder(tmp_path / "generated" / "sycophancy")
    values = json.loads((folder / "probes" / "values.json").read_text())
    keys = stage_keys(exp, None, 1, ARMS, 0.002, probe_values=values)
    for sk in keys.values():
        if sk.folder is not None:
            assert json.loads((folder / sk.folder / "stage.json").read_text())["key"] == sk.key, sk.stage
    assert (tmp_path / "runs" / sk.cache_dir if (sk := keys["base model"]).cache_dir else folder).exists()

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
