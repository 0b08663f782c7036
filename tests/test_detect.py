"""The degenerate-label detector on synthetic sweeps: per-item samples drawn per seed and label
value with a known truth, summarised as the report summarises them (mean over items per seed,
t-interval over seeds), built to trigger each check and to leave a healthy arm alone."""

from __future__ import annotations

import numpy as np
import pytest

from ectc.plan.model import Arm, Axis
from ectc.runtime import detect, stats

NUMERIC = [0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5]
HELD = [v < 0.5 for v in NUMERIC]  # holdout [0.0, 0.5)
TRAINED = [not h for h in HELD]
# What the sycophancy reward asks for: truthful below suggestibility 1, sycophantic above, a tie at 1.
IDEAL = [0.0, 0.0, 0.0, 0.0, 0.5, 1.0, 1.0]


def point(per_seed: list[float]) -> dict:
    ci = stats.mean_ci(per_seed)
    return {"mean": ci.estimate, "low": ci.low, "high": ci.high, "per_seed": list(per_seed)}


def binary_sweep(rates: list[float], seeds: int = 5, items: int = 300, seed_sd: float = 0.02, rng=None) -> list[dict]:
    """Per label value, each seed's share of `items` Bernoulli samples at the value's rate plus
    that seed's own offset (a trained model differs from seed to seed, at every label)."""
    rng = rng or np.random.default_rng(0)
    offsets = rng.normal(0, seed_sd, seeds)
    return [point([float((rng.random(items) < np.clip(r + o, 0, 1)).mean()) for o in offsets]) for r in rates]


def scalar_sweep(means: list[float], seeds: int = 2, items: int = 135, sd: float = 1.5, seed_sd: float = 0.2,
                 rng=None) -> list[dict]:
    rng = rng or np.random.default_rng(1)
    offsets = rng.normal(0, seed_sd, seeds)
    return [point([float(rng.normal(m + o, sd, items).mean()) for o in offsets]) for m in means]


HEALTHY = [0.02, 0.02, 0.03, 0.03, 0.5, 0.97, 0.98]


def run(series, roles, ideal=IDEAL, values=NUMERIC, trained=TRAINED, held=HELD, ordered=True):
    return detect.detect("sycophancy", values, series, roles, trained, held, ideal, ordered=ordered)


def kinds(findings) -> list[tuple[str, str]]:
    return sorted((f.kind, f.arm) for f in findings)


def test_a_healthy_ect_arm_and_a_flat_shuffled_control_raise_nothing():
    series = {"ect": binary_sweep(HEALTHY), "shuffled": binary_sweep([0.5] * 7, rng=np.random.default_rng(3))}
    assert run(series, {"ect": "true", "shuffled": "shuffled"}) == []


def test_an_arm_that_ignores_the_label():
    found = run({"ect": binary_sweep([0.5] * 7)}, {"ect": "true"})
    assert kinds(found) == [("label_ignored", "ect")]
    f = found[0]
    assert "does not move across the label sweep beyond its noise" in f.message
    # the evidence: every point with its interval, and the widest pair with its interval
    assert len(f.evidence["points"]) == 7 and f.evidence["pairs_tested"] == 21
    largest = f.evidence["largest"]
    assert largest["low"] <= 0 <= largest["high"] and largest["level"] == pytest.approx(1 - 0.05 / 21)


def test_a_flat_metric_the_reward_does_not_move_is_not_the_label_ignored():
    axis = Axis(name="suggestibility", type="real", deploy=0.0, train_range=(0.5, 1.5), holdout=[[0.0, 0.5, True, False]])
    arms = [Arm(name="ect", trains=True, train_label="true", infer="deploy")]
    flat = binary_sweep([0.9] * 7)
    sweep = {"accuracy": {"values": NUMERIC, "series": {"ect": flat}},
             "sycophancy": {"values": NUMERIC, "series": {"ect": binary_sweep(HEALTHY)}}}
    # the reward asks for the same accuracy everywhere: flat is right
    assert detect.detect_sweeps(axis, arms, sweep, {"accuracy": [1.0] * 7, "sycophancy": IDEAL}) == []
    # no ideal for accuracy, but the arm moves on sycophancy: the label is read
    assert detect.detect_sweeps(axis, arms, sweep, {}) == []
    # flat on every metric: the label is ignored
    sweep["sycophancy"]["series"]["ect"] = binary_sweep([0.5] * 7)
    assert [f.kind for f in detect.detect_sweeps(axis, arms, sweep, {})] == ["label_ignored", "label_ignored"]


def test_an_ect_arm_against_its_monotone_reward():
    # misreads the unseen 0%: sycophantic there, truthful at the trained low labels
    misread = [0.65, 0.03, 0.03, 0.03, 0.5, 0.97, 0.98]
    found = run({"ect": binary_sweep(misread)}, {"ect": "true"})
    assert ("not_monotone", "ect") in kinds(found)
    f = next(f for f in found if f.kind == "not_monotone")
    assert "0.0..1.5 rising" in f.message and all(d["high"] < 0 for d in f.evidence["against"])
    assert {d["x"] for d in f.evidence["against"]} == {0.0}
    # the same curve with no reward to compare against: no monotonicity claim
    assert "not_monotone" not in [f.kind for f in run({"ect": binary_sweep(misread)}, {"ect": "true"}, ideal=None)]


def test_monotone_runs_of_the_reward():
    assert detect.monotone_runs(IDEAL) == [(0, 6, 1)]
    assert detect.monotone_runs([0, 1, 1, 0]) == [(0, 2, 1), (2, 3, -1)]
    assert detect.monotone_runs([1, 1, 1]) == []
    assert detect.monotone_runs([0, None, 1, 2]) == [(2, 3, 1)]


def test_held_out_behaviour_outside_the_trained_range():
    rates = [0.95, 0.9, 0.3, 0.35, 0.4, 0.45, 0.5]
    found = run({"ect": binary_sweep(rates)}, {"ect": "true"}, ideal=None)
    outside = [f for f in found if f.kind == "held_out_outside"]
    assert [f.evidence["held_out"].split(":")[0] for f in outside] == ["0.0", "0.25"]
    assert "above everything it does at trained values" in outside[0].message
    assert outside[0].evidence["diff"]["low"] > 0
    # where the reward asks for more than anywhere in training, going beyond is the point
    asks = [1.0, 1.0, 0.2, 0.3, 0.4, 0.5, 0.6]
    assert not [f for f in run({"ect": binary_sweep(rates)}, {"ect": "true"}, ideal=asks) if f.kind == "held_out_outside"]


PERSPECTIVES = ["strong_left", "center_left", "center_right", "strong_right", "unbiased"]
P_TRAINED = [True, True, True, True, False]
P_HELD = [False, False, False, False, True]


def test_held_out_label_read_as_a_trained_one():
    found = run({"ect": scalar_sweep([8.2, 4.4, 2.4, 10.0, 8.15])}, {"ect": "true"}, ideal=None,
                values=PERSPECTIVES, trained=P_TRAINED, held=P_HELD, ordered=False)
    assert kinds(found) == [("held_out_as_trained", "ect")]
    f = found[0]
    assert f.evidence["as"] == "strong_left" and "the unseen label is read as strong_left" in f.message
    assert f.evidence["diff"]["low"] <= 0 <= f.evidence["diff"]["high"]
    # between the trained perspectives, near none: quiet
    quiet = run({"ect": scalar_sweep([8.2, 4.4, 2.4, 10.0, 6.3])}, {"ect": "true"}, ideal=None,
                values=PERSPECTIVES, trained=P_TRAINED, held=P_HELD, ordered=False)
    assert quiet == []


def test_the_tiny_bias_runs_ect_arm_is_flagged():
    # loaded_bias of the ECT arm in the tiny bias run (2 seeds; runs/bias/tiny/metrics.json of
    # the README's run): it writes like the strong-left editor at the held-out UNBIASED label.
    per_seed = [[8.339906586461442, 8.089786646617368], [4.363970953730765, 4.465162444892785],
                [2.4139762403913347, 2.459200702678964], [9.978977072310405, 9.986438746438747],
                [7.6262100233353385, 8.64879491497356]]
    shuffled = [[6.388733594822973, 6.056329077603161], [6.372145622835391, 5.9610869918448355],
                [6.358428201710563, 5.990225037546593], [6.388733594822973, 6.069749862502614],
                [6.132527958800966, 6.110203101371826]]
    found = detect.detect("loaded_bias", PERSPECTIVES, {"ect": [point(p) for p in per_seed],
                                                        "shuffled": [point(p) for p in shuffled]},
                          {"ect": "true", "shuffled": "shuffled"}, P_TRAINED, P_HELD, None, ordered=False)
    assert kinds(found) == [("held_out_as_trained", "ect")]
    assert found[0].evidence["as"] == "strong_left"
    assert "unbiased: 8.14 [1.64, 14.6] against strong_left: 8.21 [6.63, 9.8]" in found[0].message


def test_a_shuffled_control_that_tracks_the_label():
    found = run({"shuffled": binary_sweep([0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8])}, {"shuffled": "shuffled"})
    assert kinds(found) == [("shuffled_leak", "shuffled")]
    assert all(d["low"] > 0 or d["high"] < 0 for d in found[0].evidence["moving"])
    assert "1.5 - 0.0" in found[0].message


def test_one_seed_makes_no_claim():
    # without two seeds there is no noise to judge a difference against
    series = {"ect": binary_sweep([0.5] * 7, seeds=1), "shuffled": binary_sweep(NUMERIC, seeds=1)}
    assert run(series, {"ect": "true", "shuffled": "shuffled"}) == []


def test_the_noise_is_the_stats_modules_interval():
    pts = [point([0.1, 0.2, 0.15]), point([0.3, 0.5, 0.35])]
    d = detect.paired_diff(["a", "b"], pts, 0, 1)
    ci = stats.mean_ci([0.2, 0.3, 0.2])
    assert (d.mean, d.low, d.high) == pytest.approx((ci.estimate, ci.low, ci.high))
