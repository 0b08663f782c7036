"""Reuse that cannot go stale: stage keys hash the content of every input file (data files,
lexicon word lists) and every upstream stage's *output*; a stage whose recorded outputs were
truncated, emptied or deleted runs again ("redo"), and `ectc plan` predicts all of it.

One tiny run of a small spec that reads its rows from a jsonl file and scores with a lexicon
monitor, then edits and damage, each followed by a re-run (in-process, a few seconds each).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from ectc.build import build
from ectc.runs import predict

SPEC = """experiment mini {
  axis s: real in [0.0, 1.0] {
    train   uniform(0.5, 1.0)
    holdout [0.0, 0.5)
    deploy  0.0
  }
  label "Level: {{ (s * 100) | round | int }}%"
  data rows: jsonl "rows.jsonl" {
    split { train 0.75 test 0.25 }
    a: int
    ok: bool
    target = if ok then "Yes" else "No"
  }
  prompt "{{ label }} Is {{ a }} fine?"
  response choice ["Yes", "No"]
  feedback {
    right  = (response == "Yes") == ok
    reward = if right then 1.0 else s
  }
  monitor loaded: lexicon {
    sees [response]
    lists { loaded "words.txt" }
  }
  arms {
    baseline: label none
    ect:      label true
  }
  profile tiny (default) {
    model tiny { layers 1 width 16 heads 2 }
    seeds 2
    rl { steps 2 batch 8 minibatch 8 }
  }
  evaluate {
    metric accuracy = mean((response == "Yes") == ok)
    compare ect vs baseline on accuracy
  }
}
"""

STAGES = ["data", "base model", "train baseline seed 0", "train baseline seed 1", "train ect seed 0",
          "train ect seed 1", "evaluate baseline seed 0", "evaluate baseline seed 1", "evaluate ect seed 0",
          "evaluate ect seed 1", "judge baseline seed 0", "judge baseline seed 1", "judge ect seed 0",
          "judge ect seed 1", "report"]


def _write_rows(project: Path, n: int) -> None:
    (project / "rows.jsonl").write_text("".join(json.dumps({"a": i % 10, "ok": i % 3 == 0}) + "\n" for i in range(n)))


def _run(project: Path, exact: bool = True) -> dict[str, str]:
    """`ectc run` in-process; stage -> "ran"/"reused", checked against what `ectc plan` predicted:
    exactly, or (`exact=False`, after damage) at least every stage that ran: a damaged output is
    made again, and whether its new bytes equal the old (and so what reads it is reused) only
    running tells."""
    from rich.console import Console

    from ectc.runtime.experiment import Experiment
    from ectc.runtime.run import Options, execute, prepare

    source = (project / "mini.ect").read_text()
    predicted = predict(source, project / "runs", root=project)["mini"][1]
    exp = Experiment(project / "generated" / "mini")
    opts = Options(quiet=True, runs_dir=project / "runs", device="cpu")
    execute(prepare(exp, source, opts, Console(quiet=True)))
    events = json.loads((project / "runs/mini/tiny/stages.json").read_text())["events"]
    ran = {e["stage"]: e["status"] for e in events if "status" in e}
    assert list(ran) == STAGES
    plan = {p.stage: p.status for p in predicted}
    if exact:
        assert plan == ran, "ectc plan predicts the run"
    else:
        assert set(_ran(ran)) <= set(_ran(plan)), "ectc plan predicts every stage that runs"
    return ran


def _ran(statuses: dict[str, str]) -> list[str]:
    return [s for s, status in statuses.items() if status == "ran"]


@pytest.fixture
def project(tmp_path: Path, monkeypatch) -> Path:
    pytest.importorskip("torch")
    monkeypatch.chdir(tmp_path)  # as `ectc run`: the spec's paths are relative to where it runs
    (tmp_path / "mini.ect").write_text(SPEC)
    (tmp_path / "words.txt").write_text("yes\n")
    _write_rows(tmp_path, 48)
    build(tmp_path, [str(tmp_path / "mini.ect")], tmp_path / "generated", check_only=False)
    assert _ran(_run(tmp_path)) == STAGES
    return tmp_path


def test_edited_inputs_and_damaged_outputs_rerun_what_they_feed(project: Path) -> None:
    run = project / "runs/mini/tiny"
    assert _ran(_run(project)) == []

    # A data file cut in half: the data, and everything that read it, runs again with the new rows.
    _write_rows(project, 24)
    reasons = {p.stage: p.reason for p in predict(SPEC, project / "runs", root=project)["mini"][1]}
    assert reasons["data"] == "stage key changed because the input files changed"
    assert _ran(_run(project)) == STAGES
    rows = sum(len((run / f"data/rows.{s}.jsonl").read_text().splitlines()) for s in ("train", "test"))
    assert rows == 24

    # An edited word list: the judging that scored with it, and the report; nothing generated.
    (project / "words.txt").write_text("yes\nno\n")
    reasons = {p.stage: p.reason for p in predict(SPEC, project / "runs", root=project)["mini"][1]}
    assert reasons["judge ect seed 0"] == "stage key changed because the input files changed"
    assert _ran(_run(project)) == [s for s in STAGES if s.startswith(("judge", "report"))]

    # Deleted weights: trained again. The evaluation that read them runs again exactly when the
    # new weights differ in a byte, and the report exactly when the evaluation's samples do.
    def output(stage: str) -> str:
        return json.loads((run / stage / "stage.json").read_text())["output_hash"]

    before = output("arms/ect/seed1"), output("eval/ect/seed1"), output("judge/ect/seed1")
    shutil.rmtree(run / "arms/ect/seed1/final")
    statuses = _run(project, exact=False)
    redo = [e for e in json.loads((run / "stages.json").read_text())["events"] if "redo" in e]
    assert redo == [{"stage": "train ect seed 1", "redo": "output missing (final)"}]
    new_weights, new_samples, new_verdicts = (output("arms/ect/seed1") != before[0],
                                              output("eval/ect/seed1") != before[1],
                                              output("judge/ect/seed1") != before[2])
    assert _ran(statuses) == (["train ect seed 1"] + ["evaluate ect seed 1"] * new_weights
                              + ["judge ect seed 1"] * new_samples + ["report"] * new_verdicts)

    # A truncated history, an emptied samples file, a deleted metrics.json: each stage again.
    history = run / "arms/baseline/seed0/history.jsonl"
    history.write_text(history.read_text().splitlines()[0] + "\n")
    (run / "eval/ect/seed0/samples.jsonl").write_text("")
    statuses = _run(project, exact=False)
    assert {"train baseline seed 0", "evaluate ect seed 0"} <= set(_ran(statuses))
    assert statuses["train ect seed 0"] == "reused" and statuses["data"] == "reused"
    assert len((run / "eval/ect/seed0/samples.jsonl").read_text().splitlines()) == 6  # 6 test rows, deploy
    (run / "metrics.json").unlink()
    assert _ran(_run(project)) == ["report"]
    metrics = json.loads((run / "metrics.json").read_text())
    assert all(len(a["metrics"]["accuracy"]["per_seed"]) == 2 for a in metrics["arms"].values())


def test_a_damaged_cached_base_model_is_rebuilt(project: Path) -> None:
    [cached] = [p for p in (project / "runs/.cache/models").iterdir() if p.is_dir()]
    weights = next(p for p in cached.iterdir() if p.name.endswith(".safetensors"))
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    statuses = _run(project, exact=False)
    assert statuses["base model"] == "ran" and statuses["data"] == "reused"
    events = json.loads((project / "runs/mini/tiny/stages.json").read_text())["events"]
    assert {"stage": "base model", "redo": f"output changed ({', '.join(sorted(p.name for p in cached.iterdir() if p.name != 'stage.json'))})"} in events


def test_an_sft_arm_retrains_on_edited_data(tmp_path: Path, monkeypatch) -> None:
    """SFT keeps trainer checkpoints to resume a killed run; new data must train afresh, not
    resume (or refuse to resume) the old run."""
    pytest.importorskip("trl")
    monkeypatch.chdir(tmp_path)
    sft = (SPEC.replace("    reward = if right then 1.0 else s\n", "")
               .replace("    right  = (response == \"Yes\") == ok\n", "    target = if ok then \"Yes\" else \"No\"\n")
               .replace('response choice ["Yes", "No"]', "response text { max_tokens 3 }")
               .replace("rl { steps 2 batch 8 minibatch 8 }",
                        "sft { max_steps 2 batch 4 }\n    generate { max_new_tokens 3 }")
               .replace('mean((response == "Yes") == ok)', 'mean(contains(response, "Yes") == ok)'))
    assert "sft {" in sft and "reward" not in sft
    (tmp_path / "mini.ect").write_text(sft)
    (tmp_path / "words.txt").write_text("yes\n")
    _write_rows(tmp_path, 48)
    build(tmp_path, [str(tmp_path / "mini.ect")], tmp_path / "generated", check_only=False)
    assert _ran(_run(tmp_path)) == STAGES
    _write_rows(tmp_path, 24)
    assert _ran(_run(tmp_path)) == STAGES
    run = tmp_path / "runs/mini/tiny"
    assert json.loads((run / "arms/ect/seed0/stage.json").read_text())["rows"] == 18  # 0.75 of 24
