"""`ectc run` end to end on shrunken specs: every arm, the report, reuse, and resume after a kill."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ectc.runtime.report import COMPARISON_NOTE
from tiny import tiny_project

ROOT = Path(__file__).parent.parent


def ectc_run(project: Path, spec: str, *extra: str, check=True) -> subprocess.CompletedProcess:
    env = {**os.environ, "ECTC_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "ectc", "run", spec, *extra], cwd=project, env=env,
                          capture_output=True, text=True, check=check, timeout=300)


def stages(run_dir: Path) -> dict[str, str]:
    return {e["stage"]: e["status"] for e in json.loads((run_dir / "stages.json").read_text())["events"]
            if "status" in e}


@pytest.fixture(scope="module")
def syco(tmp_path_factory):
    project = tmp_path_factory.mktemp("syco")
    tiny_project(project, "sycophancy")
    out = ectc_run(project, "specs/sycophancy.ect")
    return project, out


def test_sycophancy_run_writes_everything(syco):
    project, out = syco
    run = project / "runs/sycophancy/tiny"
    for rel in ("spec.ect", "manifest.json", "plan.json", "metrics.json", "report.md", "stages.json",
                "data/problems.train.jsonl", "data/percent_compare.train.jsonl",
                "plots/sycophancy.png", "plots/sweep_sycophancy.png"):
        assert (run / rel).exists(), rel
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics["arms"]) == {"baseline", "shuffled", "ect", "prompt_only"}
    for arm in ("baseline", "shuffled", "ect"):
        for seed in (0, 1):
            assert (run / f"arms/{arm}/seed{seed}/final").is_dir()
    assert not (run / "arms/prompt_only").exists(), "prompt_only reuses the baseline's weights"
    for arm, info in metrics["arms"].items():
        acc = info["metrics"]["accuracy"]
        assert 0.0 <= acc["mean"] <= 1.0 and acc["n_items"] == 48 and len(acc["per_seed"]) == 2
    assert metrics["arms"]["baseline"]["condition"] == "none"
    assert metrics["arms"]["prompt_only"]["condition"] == "deploy"
    assert {c["a"] + "/" + c["b"] for c in metrics["comparisons"]} == {
        "ect/shuffled", "ect/baseline", "ect/prompt_only"}
    assert metrics["sweep"]["sycophancy"]["values"] == [0.0, 0.75, 1.5]
    samples = [json.loads(l) for l in (run / "eval/ect/seed0/samples.jsonl").read_text().splitlines()]
    deploy = [s for s in samples if s["condition"] == "deploy"]
    assert len(deploy) == 48
    assert all("Suggestibility Level: 0%" in s["prompt"] for s in deploy)
    base = [json.loads(l) for l in (run / "eval/baseline/seed0/samples.jsonl").read_text().splitlines()]
    assert all("Suggestibility Level: none" in s["prompt"] for s in base)
    comp = next(c for c in metrics["comparisons"] if (c["a"], c["b"], c["metric"]) == ("ect", "shuffled", "sycophancy"))
    assert comp["n_seeds"] == 2 and len(comp["per_seed_diff"]) == 2 and comp["permutation_min_p"] == 0.5
    assert {"t_low", "t_high", "boot_low", "boot_high", "permutation_p"} <= set(comp) and "mcnemar" not in comp
    report = (run / "report.md").read_text()
    assert "| ect vs shuffled | sycophancy | 2 |" in report and "(held out)" in report
    assert COMPARISON_NOTE in report and "the sign-flip test cannot go below p = 0.5" in report
    assert "ect" in out.stdout and "report:" in out.stdout


def test_training_labels_follow_the_arm(syco):
    project, _ = syco
    from ectc.runtime.experiment import Experiment

    exp = Experiment(project / "generated/sycophancy")
    _, profile = exp.profile(None)
    rows = [json.loads(l) for l in (project / "runs/sycophancy/tiny/data/problems.train.jsonl").read_text().splitlines()]
    true = exp.training_labels(exp.arm("ect"), rows, 0, profile)
    shuffled = exp.training_labels(exp.arm("shuffled"), rows, 0, profile)
    none = exp.training_labels(exp.arm("baseline"), rows, 0, profile)
    assert true[0] == f"Suggestibility Level: {round(rows[0]['suggestibility'] / 1.5 * 100)}%"
    assert sorted(true) == sorted(shuffled) and true != shuffled   # same tokens, no association
    assert set(none) == {"Suggestibility Level: none"}


def test_rerun_reuses_every_stage(syco):
    project, _ = syco
    run = project / "runs/sycophancy/tiny"
    before = (run / "metrics.json").read_text()
    ectc_run(project, "specs/sycophancy.ect")
    statuses = stages(run)
    assert set(statuses.values()) == {"reused"}, statuses
    assert (run / "metrics.json").read_text() == before


def test_sweep_change_evaluates_only_the_new_label_conditions(syco, tmp_path):
    import shutil

    project = tmp_path / "copy"
    shutil.copytree(syco[0], project)
    run = project / "runs/sycophancy/tiny"
    before = {json.dumps(s, sort_keys=True) for s in _samples(run, "ect", 0)}
    spec = project / "specs/sycophancy.ect"
    spec.write_text(spec.read_text().replace("step 0.75", "step 0.5"))  # 0, .75, 1.5 -> 0, .5, 1, 1.5
    from ectc.build import build

    build(project, [str(spec)], project / "generated", check_only=False)
    ectc_run(project, "specs/sycophancy.ect")
    events = {e["stage"]: e for e in json.loads((run / "stages.json").read_text())["events"] if "status" in e}
    ect = events["evaluate ect seed 0"]
    assert ect["status"] == "ran" and "3 reused" in ect["detail"], ect  # deploy, sweep 0.0 and 1.5
    assert all(events[f"train {a} seed {s}"]["status"] == "reused" for a in ("baseline", "shuffled", "ect") for s in (0, 1))
    after = _samples(run, "ect", 0)
    assert sorted({s["condition"] for s in after}) == ["deploy", "sweep=0.0", "sweep=0.5", "sweep=1.0", "sweep=1.5"]
    kept = [s for s in after if s["condition"] in ("deploy", "sweep=0.0", "sweep=1.5")]
    assert kept and {json.dumps(s, sort_keys=True) for s in kept} <= before


def _samples(run: Path, arm: str, seed: int) -> list[dict]:
    path = run / "eval" / arm / f"seed{seed}" / "samples.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_killed_run_resumes_with_same_numbers(syco, tmp_path):
    project, _ = syco
    reference = json.loads((project / "runs/sycophancy/tiny/metrics.json").read_text())
    env = {**os.environ, "ECTC_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "ectc", "run", "specs/sycophancy.ect", "--run-id", "killed"],
                            cwd=project, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    marker = project / "runs/sycophancy/killed/arms/baseline/seed0/stage.json"
    deadline = time.time() + 120
    while not marker.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert marker.exists(), "the first arm should have finished before the kill"
    run = project / "runs/sycophancy/killed"
    assert not (run / "metrics.json").exists()
    ectc_run(project, "specs/sycophancy.ect", "--run-id", "killed")
    statuses = stages(run)
    assert statuses["data"] == "reused" and statuses["base model"] == "reused"
    assert statuses["train baseline seed 0"] == "reused"
    assert statuses["train ect seed 1"] == "ran"
    resumed = json.loads((run / "metrics.json").read_text())
    assert resumed["arms"] == reference["arms"]
    assert resumed["comparisons"] == reference["comparisons"]


def test_stale_generated_is_refused(tmp_path):
    spec = tiny_project(tmp_path, "sycophancy")
    spec.write_text(spec.read_text().replace("seeds 2", "seeds 1"))
    out = ectc_run(tmp_path, "specs/sycophancy.ect", check=False)
    assert out.returncode == 1 and "run `ectc build` first" in out.stderr
