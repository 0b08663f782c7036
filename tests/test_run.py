"""`ectc run` end to end on shrunken specs: every arm, the report, reuse, and resume after a kill."""

import json
import os
import re
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
    # Two metrics over the axis and the reward: every evaluation condition must see its own value.
    tiny_project(project, "sycophancy", extra=[(
        "    metric sycophancy_known",
        "    metric mean_s = mean(suggestibility)\n"
        "    metric reward_if_sycophantic = mean(reward) where sycophantic\n"
        "    metric sycophancy_known")])
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
    assert set(metrics["arms"]) == {"baseline", "shuffled", "ect", "prompt_only", "ootb"}
    for arm in ("baseline", "shuffled", "ect"):
        for seed in (0, 1):
            assert (run / f"arms/{arm}/seed{seed}/final").is_dir()
    assert not (run / "arms/prompt_only").exists(), "prompt_only reuses the baseline's weights"
    assert not (run / "arms/ootb").exists(), "ootb is the base model itself"
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
    _, profile = exp.plan.profile(None)
    rows = [json.loads(l) for l in (project / "runs/sycophancy/tiny/data/problems.train.jsonl").read_text().splitlines()]
    true = exp.training_labels(exp.plan.arm("ect"), rows, 0, profile)
    shuffled = exp.training_labels(exp.plan.arm("shuffled"), rows, 0, profile)
    none = exp.training_labels(exp.plan.arm("baseline"), rows, 0, profile)
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


def test_evaluation_sets_the_axis_to_each_conditions_value(syco):
    """Feedback and metrics read the condition's axis value (deploy, each sweep point; the
    unlabeled baseline is deployed at the deployment value), not the value the row drew for
    training (which averaged ~1.0 at every condition)."""
    project, _ = syco
    metrics = json.loads((project / "runs/sycophancy/tiny/metrics.json").read_text())
    for arm, info in metrics["arms"].items():
        assert info["metrics"]["mean_s"]["per_seed"] == [0.0, 0.0], arm
        reward = info["metrics"]["reward_if_sycophantic"]["per_seed"]
        assert all(r == 0.0 or r != r for r in reward), (arm, reward)   # 0 or NaN (no sycophantic answer)
    for arm, points in metrics["sweep"]["mean_s"]["series"].items():
        assert [p["mean"] for p in points] == [0.0, 0.75, 1.5], arm
    for arm, points in metrics["sweep"]["reward_if_sycophantic"]["series"].items():
        for value, p in zip([0.0, 0.75, 1.5], points):
            assert all(r == value or r != r for r in p["per_seed"]), (arm, value, p)
    samples = [json.loads(l) for l in (project / "runs/sycophancy/tiny/eval/ect/seed0/samples.jsonl").read_text().splitlines()]
    for s in samples:
        expected = 0.0 if s["condition"] == "deploy" else float(s["condition"].split("=")[1])
        assert s["sample"]["suggestibility"] == expected


def test_a_second_run_of_the_same_folder_is_refused(syco):
    """Two `ectc run` of one spec and run id both did all the work; the second now refuses,
    naming the process that holds the folder, and a killed holder leaves no stale lock."""
    from ectc.runtime.lock import run_folder_lock

    project, _ = syco
    with run_folder_lock(project / "runs/sycophancy/tiny"):
        out = ectc_run(project, "specs/sycophancy.ect", check=False)
    assert out.returncode == 1
    assert out.stderr.startswith("error: ") and f"is in use by process {os.getpid()} (since " in out.stderr
    assert "pass another --run-id" in out.stderr
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from pathlib import Path; "
                               "from ectc.runtime.lock import run_folder_lock\n"
                               "with run_folder_lock(Path(sys.argv[1])):\n    print('held', flush=True); time.sleep(60)",
                               str(project / "runs/sycophancy/tiny")], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline() == "held\n"
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    out = ectc_run(project, "specs/sycophancy.ect")
    assert "reused" in out.stdout and out.returncode == 0


def _strict(text: str):
    """JSON as RFC 8259 has it: bare NaN/Infinity are errors (Python's json reads them)."""
    def refuse(constant):
        raise ValueError(f"bare {constant}")
    return json.loads(text, parse_constant=refuse)


def test_one_seed_run_writes_strict_json(syco, tmp_path):
    """One seed: no interval over seeds. Every JSON file still parses strictly, the missing
    bounds are null with the reason beside them, and the readers (report, `ectc runs`,
    `ectc compare`) take the nulls."""
    import shutil

    project = tmp_path / "copy"
    shutil.copytree(syco[0], project)
    ectc_run(project, "specs/sycophancy.ect", "--seeds", "1")
    files = [p for p in (project / "runs").rglob("*") if p.suffix in (".json", ".jsonl")]
    assert len(files) > 40
    for path in files:
        text = path.read_text()
        rows = text.splitlines() if path.suffix == ".jsonl" else [text]
        for row in rows:
            try:
                _strict(row)
            except ValueError as exc:
                raise AssertionError(f"{path.relative_to(project)}: {exc}") from None
    run = project / "runs/sycophancy/tiny"
    metrics = _strict((run / "metrics.json").read_text())
    acc = metrics["arms"]["ect"]["metrics"]["accuracy"]
    assert len(acc["per_seed"]) == 1 and 0.0 <= acc["mean"] <= 1.0
    assert acc["low"] is None and acc["high"] is None and acc["note"] == "1 seed"
    point = metrics["sweep"]["sycophancy"]["series"]["ect"][0]
    assert point["low"] is None and point["note"] == "1 seed"
    md = (run / "report.md").read_text()
    assert f"{acc['mean']:.3f}, CI n/a (1 seed) (n=48)" in md
    # the comparison: no interval, bootstrap or p-value, each saying why; never a NaN
    assert "| n/a (1 seed) | " in md and " n/a (1 seed) | n/a (1 seed) | " in md
    assert not re.search(r"\bnan\b", md, re.IGNORECASE)
    env = {**os.environ, "COLUMNS": "200"}
    listed = subprocess.run([sys.executable, "-m", "ectc", "runs", "--json"], cwd=project, env=env,
                            capture_output=True, text=True, check=True)
    [info] = [r for r in _strict(listed.stdout) if r["run"] == "sycophancy/tiny"]
    assert info["seeds"] == [0] and info["headline"].startswith("sycophancy: ")
    other = str(syco[0] / "runs/sycophancy/tiny")  # two seeds: intervals on that side
    compare = [sys.executable, "-m", "ectc", "compare", "sycophancy/tiny", other]
    as_json = subprocess.run([*compare, "--json"], cwd=project, env=env, capture_output=True, text=True, check=True)
    ect = next(r for r in _strict(as_json.stdout)["metrics"] if r["arm"] == "ect" and r["metric"] == "accuracy")
    assert ect["a_ci"] == [None, None] and None not in ect["b_ci"]
    as_text = subprocess.run(compare, cwd=project, env=env, capture_output=True, text=True)
    assert as_text.returncode == 0 and "accuracy" in as_text.stdout, as_text.stderr[-2000:]
