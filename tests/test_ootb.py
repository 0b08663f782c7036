"""The out-of-the-box row (`reuse base`): the base model before any training, evaluated at the
deployment label beside the arms, as the seed's tables report OOTB Qwen and OOTB Llama."""

from __future__ import annotations

import json
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
  data rows {
    split { train 64 test 12 }
    a: int = randint(0, 9)
    ok: bool = bernoulli(0.5)
    target = if ok then "Yes" else "No"
  }
  prompt "{{ label }} Is {{ a }} fine?"
  response choice ["Yes", "No"]
  feedback {
    right  = (response == "Yes") == ok
    reward = if right then 1.0 else s
  }
  arms {
    ect:  label true
    ootb: reuse base
  }
  profile tiny (default) {
    model tiny { layers 1 width 16 heads 2 }
    seeds 2
    rl { steps 2 batch 8 minibatch 8 }
  }
  evaluate {
    metric yes = mean(response == "Yes")
    compare ect vs ootb on yes
  }
}
"""


def test_the_base_model_is_evaluated_as_an_arm(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from rich.console import Console

    from ectc.runtime.experiment import Experiment
    from ectc.runtime.models import load_cached_model
    from ectc.runtime.rl import choice_distribution
    from ectc.runtime.run import Options, execute, prepare

    (tmp_path / "mini.ect").write_text(SPEC)
    build(tmp_path, [str(tmp_path / "mini.ect")], tmp_path / "generated", check_only=False)
    exp = Experiment(tmp_path / "generated" / "mini")
    ootb = exp.plan.arm("ootb")
    assert ootb.out_of_the_box and not ootb.trains and ootb.infer == "deploy"
    assert exp.plan.profiles["tiny"].evaluation.conditions["ootb"] == [("deploy", 0.0)]

    predicted = [p.stage for p in predict(SPEC, tmp_path / "runs", root=tmp_path)["mini"][1]]
    assert predicted == ["data", "base model", "train ect seed 0", "train ect seed 1", "evaluate ect seed 0",
                         "evaluate ect seed 1", "evaluate ootb seed 0", "evaluate ootb seed 1", "report"]
    run = prepare(exp, SPEC, Options(quiet=True, runs_dir=tmp_path / "runs", device="cpu"), Console(quiet=True))
    execute(run)
    events = [e["stage"] for e in json.loads((run.folder / "stages.json").read_text())["events"] if "status" in e]
    assert events == predicted
    assert not (run.folder / "arms" / "ootb").exists()

    # Its answers are the base model's own, asked at the deployment label.
    samples = [json.loads(line) for line in (run.folder / "eval/ootb/seed0/samples.jsonl").read_text().splitlines()]
    assert {s["label"] for s in samples} == {"Level: 0%"}
    [cache] = [p for p in (tmp_path / "runs/.cache/models").iterdir() if p.is_dir()]
    model, tokenizer = load_cached_model(cache)
    probs = choice_distribution(model, tokenizer, [s["prompt"] for s in samples], ["Yes", "No"])
    assert [s["probs"] for s in samples] == [[round(float(x), 5) for x in p] for p in probs]

    metrics = json.loads((run.folder / "metrics.json").read_text())
    assert set(metrics["arms"]) == {"ect", "ootb"}
    [comparison] = metrics["comparisons"]
    assert (comparison["a"], comparison["b"], comparison["n_seeds"]) == ("ect", "ootb", 2)
