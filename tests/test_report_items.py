"""The report's rough edges of issue 16: a rate's interval stays in [0, 1], one seed says
"n/a (1 seed)", a reduction from 0 says why, the run time is that of the stages behind the
numbers, and an arm keeps its colour in every plot."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from ectc.runtime import detect, report
from ectc.runtime import stats as S


def metrics_module(**values):
    """A generated metrics module's METRICS: each metric the mean of `value(v)` over every sample."""
    return SimpleNamespace(METRICS={name: {"aggregate": "mean", "value": fn, "where": lambda v: True, "needs": []}
                                    for name, fn in values.items()})


def test_a_rate_interval_is_clipped_to_its_range():
    two = S.mean_ci([0.2, 1.0])  # t(0.975, 1) = 12.7: the raw interval runs far outside [0, 1]
    assert two.low < -4 and two.high > 5
    clipped = S.mean_ci([0.2, 1.0], bounds=(0.0, 1.0))
    assert (clipped.estimate, clipped.low, clipped.high) == (pytest.approx(0.6), 0.0, 1.0)
    assert clipped.method == "t, clipped to [0, 1]"
    assert S.mean_ci([0.4, 0.5, 0.45], bounds=(0.0, 1.0)) == S.mean_ci([0.4, 0.5, 0.45])  # inside: untouched
    assert math.isnan(S.mean_ci([0.3], bounds=(0.0, 1.0)).low)
    a = np.array([[1.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    b = np.array([[0.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    assert S.seed_paired_t(a, b).high > 1
    d = S.seed_paired_t(a, b, bounds=(0.0, 1.0))  # a difference of rates lies in [-1, 1]
    assert (d.low, d.high) == (-1.0, 1.0)


def test_the_report_decides_once_which_metrics_are_rates():
    exp = SimpleNamespace(metrics=metrics_module(wrong=lambda v: v["x"] > 1, length=lambda v: v["x"]))
    samples = [{"item": i, "sample": {"x": x}} for i, x in enumerate([0, 3, 2, 1])]
    assert report.rate_bounds(exp, "wrong", samples) == (0.0, 1.0)
    assert report.rate_bounds(exp, "length", samples) is None  # a mean of numbers: no known range
    assert report.rate_bounds(exp, "wrong", []) is None
    point = report._ci([0.2, 1.0], (0.0, 1.0))
    assert (point["low"], point["high"]) == (0.0, 1.0)
    assert report._ci([0.2, 1.0])["low"] < -4
    # the comparison's t-interval is clipped, its test of noise is not
    items = {("a", "m", 0): {0: 1.0, 1: 1.0}, ("a", "m", 1): {0: 0.0, 1: 0.0},
             ("b", "m", 0): {0: 0.0, 1: 0.0}, ("b", "m", 1): {0: 0.0, 1: 1.0}}
    c = report.compare("a", "b", "m", items, [0, 1], n_boot=200, bounds=(0.0, 1.0))
    raw = report.compare("a", "b", "m", items, [0, 1], n_boot=200)
    assert (c["t_low"], c["t_high"]) == (-1.0, 1.0) and raw["t_high"] > 1
    assert c["permutation_p"] == raw["permutation_p"]


def test_the_detector_reads_the_per_seed_values_not_the_clipped_interval():
    """Two sweep points of a rate whose raw intervals run outside [0, 1]: the detector's verdict
    (its t-interval over the per-seed differences) is the same with the points clipped or not."""
    values, seeds = [0.0, 0.5, 1.0], [[0.05, 0.1, 0.9], [0.1, 0.15, 0.95], [0.02, 0.2, 1.0]]
    per_value = list(zip(*seeds))
    clipped = [report._ci(list(p), (0.0, 1.0)) for p in per_value]
    raw = [report._ci(list(p)) for p in per_value]
    assert clipped[2]["high"] == 1.0 < raw[2]["high"]
    find = lambda pts: [(f.kind, f.evidence["moving"]) for f in
                        detect.detect("m", values, {"shuffled": pts}, {"shuffled": "shuffled"}, [True] * 3, [False] * 3)]
    assert find(clipped) == find(raw) and find(raw)[0][0] == "shuffled_leak"


ROOT = Path(__file__).resolve().parent.parent


def verbosity_report(seeds: list[int], per_seed: dict[str, list[float]], b_zero: bool = False) -> str:
    """report.md of the shipped verbosity plan over a hand-made result, built by the report's own
    functions (`_ci`, `compare`): arm -> its per-seed `padded` rate."""
    import json

    from ectc.runtime.reportdoc import Context, render_markdown, report_data

    raw = json.loads((ROOT / "generated/verbosity/experiment.json").read_text())
    ctx = Context.from_plan(raw, "tiny", seeds, "cpu")
    result = {"arms": {}, "comparisons": [], "sweep": {}, "shares": {}, "unscored": {}, "rates": ["padded"]}
    items = {}
    for arm, values in per_seed.items():
        metrics = {m: {**report._ci([]), "n_items": 0, "unscored": 0} for m in ctx.metrics}
        metrics["padded"] = {**report._ci(values, (0.0, 1.0)), "n_items": 4, "unscored": 0}
        result["arms"][arm] = {"condition": "deploy", "metrics": metrics}
        for seed, v in zip(seeds, values):  # 4 items, round(4 v) of them padded
            items[(arm, "padded", seed)] = {i: float(i < round(4 * v)) for i in range(4)}
    result["comparisons"] = [report.compare("ect", "shuffled", "padded", items, seeds, n_boot=200,
                                            bounds=(0.0, 1.0))]
    return render_markdown(report_data(ctx, result, {}))


def test_one_seed_says_n_a_1_seed_never_nan():
    import re

    md = verbosity_report([0], {"ect": [0.25], "shuffled": [0.75]})
    assert "| ect | deployment label | n/a (no seeds) | 0.250, CI n/a (1 seed) (n=4) |" in md
    assert "| ect vs shuffled | padded | 1 | 0.250 | 0.750 | -0.500 n/a (1 seed) | n/a (1 seed) | -0.500 | n/a (1 seed) |" in md
    assert not re.search(r"\bnan\b", md, re.IGNORECASE)
    two = verbosity_report([0, 1], {"ect": [0.25, 0.5], "shuffled": [0.75, 1.0]})
    assert "(1 seed)" not in two and "0.375 [0.000, 1.000] (n=4)" in two  # clipped, with two seeds


def test_a_reduction_from_zero_says_why():
    md = verbosity_report([0, 1], {"ect": [0.25, 0.5], "shuffled": [0.0, 0.0]})
    assert "| n/a (shuffled is 0: no reduction from 0) |" in md
    assert "nan%" not in md
    assert "| -100.0% |" in verbosity_report([0, 1], {"ect": [0.5, 0.5], "shuffled": [0.25, 0.25]})


def test_an_arm_has_one_colour_in_every_plot(tmp_path, monkeypatch):
    """The bars at the deployment label and the lines of the sweep give each arm the colour of
    its index in the plan, whatever subset and order of arms a run or a plot shows."""
    from matplotlib.colors import to_hex

    from ectc.plan.model import Plan
    from ectc.runtime import plots

    plan = Plan.load((ROOT / "generated/sycophancy/experiment.json").read_text())
    exp = SimpleNamespace(plan=plan, metrics=metrics_module(m=lambda v: v["x"]))
    arms = [plan.arm(n) for n in ("ect", "baseline", "shuffled")]  # a run of three arms, in this order
    point = {"mean": 0.5, "low": 0.4, "high": 0.6}
    values = list(plan.profiles["tiny"].evaluation.sweep)
    result = {"arms": {a.name: {"metrics": {"m": point}} for a in arms}, "shares": {},
              "sweep": {"m": {"values": values, "series": {a.name: [point] * len(values)
                                                           for a in arms if a.infer == "deploy"}}}}
    figures = {}
    monkeypatch.setattr(plots, "save_figure", lambda fig, path: figures.setdefault(Path(path).name, fig))
    report._plots(SimpleNamespace(exp=exp, folder=tmp_path), result, arms)
    bars = figures["m.png"].axes[0]
    bar_colour = {t.get_text(): to_hex(p.get_facecolor()) for t, p in zip(bars.get_xticklabels(), bars.patches)}
    lines = {ln.get_label(): to_hex(ln.get_color()) for ln in figures["sweep_m.png"].axes[0].get_lines()
             if not ln.get_label().startswith("_") and ln.get_label() != "deployment label"}
    index = {a.name: i for i, a in enumerate(plan.arms)}
    assert bar_colour == {a: plots.PALETTE[index[a]].lower() for a in ("ect", "baseline", "shuffled")}
    assert lines == {"shuffled": bar_colour["shuffled"], "ect": bar_colour["ect"],
                     "baseline (no label)": bar_colour["baseline"]}


def test_the_run_time_is_that_of_the_stages_behind_the_numbers(tmp_path):
    """A tiny run, then a session that re-runs only the report: the report's run time is still
    the stages' (recorded in their stage.json), not the second session's few seconds."""
    import json
    import os
    import subprocess
    import sys

    from tiny import tiny_project

    tiny_project(tmp_path, "verbosity")
    env = {**os.environ, "ECTC_OFFLINE": "1", "OMP_NUM_THREADS": "1"}

    def run():
        subprocess.run([sys.executable, "-m", "ectc", "run", "specs/verbosity.ect"], cwd=tmp_path, env=env,
                       capture_output=True, text=True, check=True, timeout=600)
        return json.loads((folder / "metrics.json").read_text())

    folder = tmp_path / "runs/verbosity/tiny"
    first = run()
    from ectc.plan.stages import train_folder

    trained = read_json_record(folder / train_folder("ect", 0))["seconds"]
    assert trained > 0
    assert first["run_seconds"]["seconds"] >= trained and first["run_seconds"]["untimed"] == []
    (folder / "report.md").unlink()  # the report's output changed: it alone runs again
    second = run()
    events = json.loads((folder / "stages.json").read_text())["events"]
    assert [e["stage"] for e in events if e.get("status") == "ran"] == ["report"]
    assert second["run_seconds"]["stages"] == first["run_seconds"]["stages"]
    assert second["run_seconds"]["seconds"] >= trained > second["elapsed_seconds"]
    assert second["run_seconds"]["seconds"] == pytest.approx(first["run_seconds"]["seconds"], abs=5)
    md = (folder / "report.md").read_text()
    assert (f"run time {second['run_seconds']['seconds']:,.1f} s (the {second['run_seconds']['stages']} stages "
            f"behind these numbers; this session {second['elapsed_seconds']:,.1f} s)") in md


def read_json_record(folder: Path) -> dict:
    import json

    return json.loads((folder / "stage.json").read_text())
