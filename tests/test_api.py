"""The Python API: `ectc.load` compiles in memory, `ectc.run` is `ectc run` in this process and
returns the run's metrics, comparisons and samples (a datasets.Dataset); a re-run reuses every
stage; `import ectc` stays light."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

import ectc
from tiny import tiny_project

ROOT = Path(__file__).parent.parent
HEAVY = ("torch", "transformers", "trl", "peft", "datasets", "anthropic", "numpy", "ectc.runtime")


def test_import_ectc_and_load_stay_light():
    code = ("import sys, ectc; exp = ectc.load('specs/sycophancy.ect'); "
            "print(exp.name, [a.name for a in exp.plan.arms], exp.train_config('tiny', 'ect')['rl']['steps']); "
            f"print([m for m in {HEAVY!r} if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.splitlines() == ["sycophancy ['baseline', 'shuffled', 'ect', 'prompt_only', 'ootb'] 400", "[]"]


def test_load_raises_the_rendered_diagnostics(tmp_path):
    bad = tmp_path / "bad.ect"
    bad.write_text((ROOT / "specs/sycophancy.ect").read_text().replace("reward      = if truthful",
                                                                       "reward      = if truthfull"))
    with pytest.raises(ectc.SpecError) as err:
        ectc.load(bad)
    assert f"{bad}:" in str(err.value) and "unknown name `truthfull`" in str(err.value)
    assert "did you mean `truthful`?" in str(err.value) and err.value.diagnostics


@pytest.fixture(scope="module")
def api_run(tmp_path_factory):
    project = tiny_project(tmp_path_factory.mktemp("api"), "sycophancy").parent.parent
    mp = pytest.MonkeyPatch()
    mp.chdir(project)
    mp.setenv("ECTC_OFFLINE", "1")
    t0 = time.perf_counter()
    run = ectc.run("specs/sycophancy.ect", profile="tiny", seeds=2, arms=["baseline", "ect"])
    first = time.perf_counter() - t0
    yield project, run, first
    mp.undo()


def test_run_returns_metrics_comparisons_and_samples(api_run):
    project, run, _ = api_run
    assert run.folder == project / "runs/sycophancy/tiny"
    assert run.metrics == json.loads((run.folder / "metrics.json").read_text())
    assert set(run.metrics["arms"]) == {"baseline", "ect"}
    assert [(c["a"], c["b"], c["metric"]) for c in run.comparisons] == [
        ("ect", "baseline", "sycophancy"), ("ect", "baseline", "accuracy")]
    data = run.samples
    assert type(data).__name__ == "Dataset" and set(data.unique("arm")) == {"baseline", "ect"}
    n = sum(len((run.folder / f"eval/{a}/seed{s}/samples.jsonl").read_text().splitlines())
            for a in ("baseline", "ect") for s in (0, 1))
    assert len(data) == n
    assert {"arm", "seed", "condition", "label_value", "prompt", "response", "probs", "claim_correct",
            "truthful", "sycophantic", "reward", "base_knows"} <= set(data.column_names)
    # The rows are what the report read: its metric, recomputed from the frame, is the same.
    frame = run.to_pandas()
    ect = frame[(frame.arm == "ect") & (frame.condition == "deploy") & ~frame.claim_correct]
    per_seed = (ect.response == "Correct").groupby(ect.seed).mean()
    assert list(per_seed) == pytest.approx(run.metrics["arms"]["ect"]["metrics"]["sycophancy"]["per_seed"])
    # A finished run folder reads the same from a later session.
    assert ectc.Run(str(run.folder)).sample_rows() == run.sample_rows()


def test_rerun_in_process_reuses_every_stage(api_run):
    project, run, first = api_run
    t0 = time.perf_counter()
    again = ectc.run("specs/sycophancy.ect", profile="tiny", seeds=2, arms=["baseline", "ect"])
    took = time.perf_counter() - t0
    events = json.loads((again.folder / "stages.json").read_text())["events"]
    assert {e["status"] for e in events if "status" in e} == {"reused"}
    assert again.metrics == run.metrics
    print(f"in-process: first run {first:.1f} s, re-run {took:.2f} s")


def test_run_errors_are_the_cli_s_line(api_run):
    project, _, _ = api_run
    with pytest.raises(ectc.RunError) as err:
        ectc.run("specs/sycophancy.ect", profile="tinyy")
    assert str(err.value) == ("error: --profile 'tinyy': sycophancy has no such profile (it has tiny, small, "
                              "paper); did you mean `tiny`?")
