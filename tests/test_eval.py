"""`ectc eval`: the spec's evaluation of models trained elsewhere. The "elsewhere" here is a
tiny run's own checkpoints copied out of its folder (as save_pretrained left them), so the
evaluation must reproduce that run's numbers for the same arm; a re-run reuses everything, and
other weights in the same folder re-evaluate."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ectc.cli import main
from tiny import tiny_project


def ectc(project: Path, *args: str, check=True) -> subprocess.CompletedProcess:
    env = {**os.environ, "ECTC_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-m", "ectc", *args], cwd=project, env=env, capture_output=True,
                         text=True, timeout=300)
    assert not check or out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out


def statuses(run: Path) -> dict[str, str]:
    return {e["stage"]: e["status"] for e in json.loads((run / "stages.json").read_text())["events"] if "status" in e}


def responses(path: Path) -> list[tuple]:
    return [(s["condition"], s["item"], s["prompt"], s["response"], s["probs"])
            for s in map(json.loads, path.read_text().splitlines())]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny sycophancy run of the ECT arm, 2 seeds; its weights copied out as `mine/seed<k>`."""
    project = tiny_project(tmp_path_factory.mktemp("eval"), "sycophancy").parent.parent
    ectc(project, "run", "specs/sycophancy.ect", "--arms", "ect")
    run = project / "runs/sycophancy/tiny"
    for seed in (0, 1):
        shutil.copytree(run / f"arms/ect/seed{seed}/final", project / f"mine/seed{seed}")
    return project, json.loads((run / "metrics.json").read_text())


def test_eval_reproduces_the_run_reuses_and_re_evaluates_new_weights(trained):
    project, trained_metrics = trained
    model = project / "mine/model"
    shutil.copytree(project / "mine/seed0", model)
    out = ectc(project, "eval", "specs/sycophancy.ect", "--checkpoint", "mine/model")
    run = project / "runs/sycophancy/eval-model"  # the default run id names the checkpoint
    assert (run / "report.md").is_file() and "report:" in out.stdout
    metrics = json.loads((run / "metrics.json").read_text())
    assert list(metrics["arms"]) == ["ect"] and metrics["seeds"] == [0]  # the arm trained with the true label
    ran = statuses(run)
    assert ran["checkpoint seed 0"] == "reused" and not any(s.startswith(("train", "base")) for s in ran)
    assert {ran[s] for s in ("data", "probes", "evaluate ect seed 0", "report")} == {"ran"}
    # The same weights under the same conditions: the run's own samples and metric, to the digit.
    assert responses(run / "eval/ect/seed0/samples.jsonl") == \
        responses(project / "runs/sycophancy/tiny/eval/ect/seed0/samples.jsonl")
    syco = trained_metrics["arms"]["ect"]["metrics"]["sycophancy"]["per_seed"]
    assert metrics["arms"]["ect"]["metrics"]["sycophancy"]["per_seed"] == syco[:1]
    assert metrics["sweep"]["sycophancy"]["values"] == [0.0, 0.75, 1.5]
    plan = json.loads((run / "plan.json").read_text())["run"]["checkpoints"]
    assert plan[0]["source"] == str(model.resolve()) and len(plan[0]["digest"]) == 64

    ectc(project, "eval", "specs/sycophancy.ect", "--checkpoint", "mine/model")
    assert set(statuses(run).values()) == {"reused"}

    # Other weights in the same folder: their content is the key, so the evaluation runs again.
    shutil.rmtree(model)
    shutil.copytree(project / "mine/seed1", model)
    ectc(project, "eval", "specs/sycophancy.ect", "--checkpoint", "mine/model")
    ran = statuses(run)
    assert ran["evaluate ect seed 0"] == "ran" and ran["probes"] == "ran" and ran["data"] == "reused"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["arms"]["ect"]["metrics"]["sycophancy"]["per_seed"] == syco[1:]


def test_eval_of_several_checkpoints_is_one_seed_each(trained):
    project, trained_metrics = trained
    ectc(project, "eval", "specs/sycophancy.ect", "--checkpoint", "mine/seed0", "--checkpoint", "mine/seed1",
         "--arm", "ect", "--run-id", "two")
    metrics = json.loads((project / "runs/sycophancy/two/metrics.json").read_text())
    ours, theirs = metrics["arms"]["ect"]["metrics"], trained_metrics["arms"]["ect"]["metrics"]
    for name in ("sycophancy", "accuracy"):
        assert ours[name]["per_seed"] == theirs[name]["per_seed"]
        assert (ours[name]["low"], ours[name]["high"]) == (theirs[name]["low"], theirs[name]["high"])


def test_eval_flags_are_checked_before_torch(trained, monkeypatch, capsys):
    project, _ = trained
    monkeypatch.chdir(project)
    (project / "empty").mkdir(exist_ok=True)
    assert main(["eval", "specs/sycophancy.ect", "--checkpoint", "nowhere/at/all", "--checkpoint", "empty",
                 "--arm", "ectt"]) == 1
    assert capsys.readouterr().err == (
        "error: --arm 'ectt': sycophancy has no such arm (it has baseline, shuffled, ect, prompt_only, ootb); "
        "did you mean `ect`?\n"
        "error: --checkpoint nowhere/at/all: no such folder, and not a hub id (org/name)\n"
        "error: --checkpoint empty: no config.json or adapter_config.json there: not a model saved by "
        "save_pretrained\n")


def test_a_hub_id_that_cannot_be_had_is_one_line(trained, monkeypatch):
    """Hub ids go through from_pretrained; offline, an unknown one fails in one line whether its
    commit is to be asked (no --revision) or given (a model neither cached nor reachable)."""
    project, _ = trained
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = ectc(project, "eval", "specs/sycophancy.ect", "--checkpoint", "no-org/no-model", check=False)
    assert out.returncode == 1 and out.stderr.count("\n") == 1, out.stderr
    assert out.stderr.startswith("error: --checkpoint no-org/no-model: not a local folder, and the hub did not "
                                 "resolve it (OfflineModeIsEnabled")
    commit = "0123456789abcdef0123456789abcdef01234567"
    out = ectc(project, "eval", "specs/sycophancy.ect", "--checkpoint", "no-org/no-model", "--revision", commit,
               "--run-id", "hub", check=False)
    assert out.returncode == 1 and out.stderr.count("\n") == 1, out.stderr
    assert out.stderr.startswith("error: --checkpoint no-org/no-model: cannot load it: ")
    plan = json.loads((project / "runs/sycophancy/hub/plan.json").read_text())["run"]["checkpoints"]
    assert plan == [{"source": "no-org/no-model", "digest": commit, "revision": commit}]


def test_eval_judges_free_text_as_the_run_does(tmp_path):
    """Free text with judges (bias): the checkpoint's samples, the lexicon's verdicts and the
    metrics over them are the run's own; the LLM judge is unscored without a key, as in the run;
    the Python API reads the verdicts as columns."""
    import ectc as api

    project = tiny_project(tmp_path, "bias").parent.parent
    ectc(project, "run", "specs/bias.ect", "--arms", "ect")
    trained = project / "runs/bias/tiny"
    shutil.copytree(trained / "arms/ect/seed0/final", project / "article-writer")
    ectc(project, "eval", "specs/bias.ect", "--checkpoint", "article-writer")
    run = project / "runs/bias/eval-article-writer"
    assert statuses(run)["judge ect seed 0"] == "ran"
    assert responses(run / "eval/ect/seed0/samples.jsonl") == responses(trained / "eval/ect/seed0/samples.jsonl")
    assert (run / "judge/ect/seed0/verdicts.jsonl").read_text() == (trained / "judge/ect/seed0/verdicts.jsonl").read_text()
    ours = json.loads((run / "metrics.json").read_text())["arms"]["ect"]["metrics"]
    theirs = json.loads((trained / "metrics.json").read_text())["arms"]["ect"]["metrics"]
    assert ours["loaded_bias"] == theirs["loaded_bias"] and ours["loaded_bias"]["mean"] is not None
    assert ours["bias"]["mean"] is None and ours["bias"]["unscored"] == theirs["bias"]["unscored"] > 0
    frame = api.Run(run).to_pandas()
    deploy = frame[frame.condition == "deploy"]
    assert deploy["loaded_language.magnitude"].mean() == pytest.approx(ours["loaded_bias"]["mean"])
    assert deploy["bias_judge"].isna().all()
