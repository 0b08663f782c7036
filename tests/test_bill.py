"""The bill before the run: `ectc plan` counts the work, Claude calls, tokens and cost of the
stages that will run; after the run, bill.json has what was spent beside it."""

import json
import os
import statistics
import subprocess
import sys

import pytest

from ectc.plan.stages import sft_steps
from ectc.prices import cost_usd, price_for
from ectc.runtime.bill import Calls, Rate, fit_rate, seconds_per_unit, spent
from tiny import tiny_project


def ectc(project, *args, fake=None):
    env = {k: v for k, v in os.environ.items() if k not in ("ECTC_OFFLINE", "ANTHROPIC_API_KEY")}
    env.update(OMP_NUM_THREADS="1", COLUMNS="200")
    if fake is not None:
        env.update(ANTHROPIC_API_KEY="test-key", ANTHROPIC_BASE_URL=fake.base_url)
    return subprocess.run([sys.executable, "-m", "ectc", *args], cwd=project, env=env, capture_output=True,
                          text=True, timeout=600)


def within(estimate, actual, tolerance=0.2):
    return actual > 0 and abs(estimate - actual) <= tolerance * actual


def assert_bill_matches_the_run(bill: dict, folder, stdout: str) -> None:
    """`ectc plan --json`'s bill (made against the fake server) against the run that followed:
    called from tests/test_rejudge.py, whose first run is this one (a run costs a minute)."""
    assert "counted by the API" in bill["estimated"]["tokens"]
    assert "Claude judge: estimated" in stdout and "Claude data: estimated" in stdout
    by_stage = {s["stage"]: s for s in bill["stages"]}
    assert by_stage["judge ect seed 0"]["calls"]["model"] == "claude-3-5-sonnet-latest"
    got = json.loads((folder / "bill.json").read_text())
    assert got["estimate"]["totals"] == bill["totals"], "the run's estimate is the plan's"
    for kind in ("data", "judge"):
        was, now = got["estimate"]["claude"][kind], got["spent"][kind]
        # Requests the same as another (the tiny model often writes the same text) and those the
        # cache answers are not sent: the estimate is of every request before either.
        assert now["calls"] + now["cache_hits"] <= was["calls"], kind
        assert within(was["input_tokens"] / was["calls"], now["input_tokens"] / now["calls"]), (kind, was, now)
        assert now["output_tokens"] <= was["output_tokens_at_most"]
        assert now["cost_usd"] <= was["cost_usd_at_most"]
    data = got["estimate"]["claude"]["data"], got["spent"]["data"]
    assert data[0]["calls"] == data[1]["calls"] and within(data[0]["input_tokens"], data[1]["input_tokens"])
    report = (folder / "report.md").read_text()
    assert "## Claude: estimated before the run, and spent" in report
    assert f"| judge | {was['calls']:,} calls, ~{was['input_tokens']:,} input tokens" in report
    assert "Claude: estimated before the run, and spent" in (folder / "report.html").read_text()
    # The work counted is the work done: training steps and samples as the records say.
    for name, stage in by_stage.items():
        if stage["kind"] in ("train", "evaluate"):
            arm, seed = name.split()[1], name.split()[-1]
            where = f"arms/{arm}/seed{seed}" if stage["kind"] == "train" else f"eval/{arm}/seed{seed}"
            record = json.loads((folder / where / "stage.json").read_text())
            assert stage["units"] == record["steps" if stage["kind"] == "train" else "samples"], name
    # Planned again on this machine: the time comes from the run just made.
    again = ectc(folder.parent.parent.parent, "plan", "specs/bias.ect", "--run-id", "other", "--json")
    estimate = json.loads(again.stdout)["bias"]["bill"]
    assert estimate["totals"]["seconds"] > 0
    assert estimate["estimated"]["time"].startswith("from 1 earlier run(s) of this profile on this machine")


def test_without_a_key_the_judges_cost_nothing_and_the_bill_says_what_a_key_would(tmp_path):
    tiny_project(tmp_path, "bias")
    plan = ectc(tmp_path, "plan", "specs/bias.ect")
    assert plan.returncode == 0, plan.stderr
    assert "no API key: left unscored (with one:" in plan.stdout
    assert "0 Claude calls" in plan.stdout
    assert "approximate: 4 characters a token" in plan.stdout
    assert "time unknown (`ectc plan --calibrate` times a short run)" in plan.stdout


def test_prices_and_unknown_models():
    assert price_for("claude-3-5-sonnet-latest") == (3.0, 15.0)
    assert price_for("claude-opus-4-1-20250805") == (15.0, 75.0)  # the longest prefix wins over claude-opus-4
    assert price_for("my-own-model") is None
    assert Calls("my-own-model", 10, 1000, 500).cost() is None
    assert Calls("claude-3-haiku", 10, 1_000_000, 1_000_000).cost() == pytest.approx(0.25 + 1.25)
    assert cost_usd((3.0, 15.0), 0, 0, cache_read_input_tokens=1_000_000) == pytest.approx(0.3)


def test_sft_steps_count_as_trl_does():
    cfg = {"per_device_train_batch_size": 16, "gradient_accumulation_steps": 1, "num_train_epochs": 3, "max_steps": -1}
    assert sft_steps(cfg, 945) == 180  # the tiny bias run's record: 945 rows, 180 steps
    assert sft_steps({**cfg, "gradient_accumulation_steps": 4}, 945) == 45
    assert sft_steps({**cfg, "max_steps": 7}, 945) == 7


def test_spent_sums_the_runs_usage_events():
    events = [{"stage": "data claude-x", "calls": 3, "input_tokens": 30, "output_tokens": 9, "cost_usd": 0.1, "cache_hits": 1},
              {"stage": "judge j", "calls": 2, "input_tokens": 20, "output_tokens": 4, "cost_usd": 0.2},
              {"stage": "judge j", "calls": 1, "input_tokens": 10, "output_tokens": 2, "cost_usd": 0.1},
              {"stage": "train ect seed 0", "status": "ran", "seconds": 3.0}]
    got = spent(events)
    assert got["judge"]["calls"] == 3 and got["judge"]["input_tokens"] == 30
    assert got["data"]["cache_hits"] == 1 and set(got) == {"data", "judge"}


def test_seconds_per_unit_reads_earlier_stages(tmp_path):
    run = tmp_path / "run"
    (run / "arms/ect/seed0").mkdir(parents=True)
    (run / "eval/ect/seed0").mkdir(parents=True)
    (run / "arms/ect/seed0/stage.json").write_text(json.dumps({"steps": 100}))
    (run / "eval/ect/seed0/stage.json").write_text(json.dumps({"samples": 50}))
    (run / "stages.json").write_text(json.dumps({"events": [
        {"stage": "train ect seed 0", "status": "ran", "seconds": 20.0},
        {"stage": "evaluate ect seed 0", "status": "ran", "seconds": 5.0},
        {"stage": "evaluate ect seed 1", "status": "reused"}]}))
    rates, how = seconds_per_unit([run, tmp_path / "absent"])
    assert rates == {"train": Rate(0.2), "evaluate": Rate(0.1)}
    assert how.startswith("from 1 earlier run(s)")


def test_a_rate_fits_overhead_and_per_unit_where_stage_sizes_differ():
    # Two calibration sizes: 4 steps in 5 s, 16 steps in 8 s -> 0.25 s a step + 4 s a stage.
    assert fit_rate([(4, 5.0), (16, 8.0)]) == Rate(0.25, 4.0)
    assert fit_rate([(4, 5.0), (16, 8.0)]).seconds(100) == 29.0
    # A line that would need negative overhead (noise) falls back to the median per unit.
    assert fit_rate([(4, 8.0), (16, 8.0)]) == Rate(statistics.median([2.0, 0.5]))
    assert fit_rate([(10, 3.0), (10, 5.0)]) == Rate(0.4)


def test_calibrate_times_two_short_runs_and_the_bill_uses_them(tmp_path):
    tiny_project(tmp_path, "bias")
    plan = ectc(tmp_path, "plan", "specs/bias.ect", "--calibrate", "--json")
    assert plan.returncode == 0, plan.stderr[-3000:]
    bill = json.loads(plan.stdout)["bias"]["bill"]
    assert bill["estimated"]["time"].startswith("from 2 calibration run(s) (`ectc plan --calibrate`) on this machine")
    assert bill["totals"]["seconds"] > 0
    calibrated = tmp_path / "runs/.calibrate/bias"
    assert sorted(p.name for p in calibrated.iterdir()) == ["tiny-16", "tiny-4"]
    steps = [json.loads((calibrated / f"tiny-{n}/arms/baseline/seed0/stage.json").read_text())["steps"] for n in (4, 16)]
    assert steps == [3, 3], "the shrunk spec trains 3 steps: a calibration never trains more than the run"
    assert not (tmp_path / "runs/bias").exists(), "the run's own folder is untouched"
