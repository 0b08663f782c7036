"""Known-answer and property tests for ectc.runtime.stats (and a smoke test of its plots)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as sst

from ectc.runtime import stats as S

finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)


# --------------------------------------------------------------------------- intervals


def test_mean_ci_known_answer():
    ci = S.mean_ci([1.0, 2.0, 3.0])
    half = 4.302652729911275 / math.sqrt(3)  # t(0.975, df=2) * sd / sqrt(n), sd = 1
    assert ci.estimate == 2.0 and ci.n == 3
    assert ci.low == pytest.approx(2 - half) and ci.high == pytest.approx(2 + half)


def test_mean_ci_one_seed_has_no_interval():
    ci = S.mean_ci([0.7])
    assert ci.estimate == 0.7 and ci.n == 1
    assert math.isnan(ci.low) and math.isnan(ci.high)


def test_mean_ci_constant_and_errors():
    assert S.mean_ci([2, 2, 2]).to_dict()["low"] == 2.0
    with pytest.raises(ValueError):
        S.mean_ci([])
    with pytest.raises(ValueError):
        S.mean_ci([1.0, float("nan")])
    with pytest.raises(ValueError):
        S.mean_ci([1.0, 2.0], level=1.5)


def test_bootstrap_ci_is_deterministic_and_sane():
    x = np.random.default_rng(1).normal(3.0, 1.0, 80)
    a = S.bootstrap_ci(x, n_boot=2000, seed=7)
    b = S.bootstrap_ci(x, n_boot=2000, seed=7)
    assert a == b
    assert a.low < 3.0 < a.high
    assert S.bootstrap_ci(x, np.median, n_boot=500, seed=0).low <= float(np.median(x))
    assert S.bootstrap_ci([4, 4, 4]).low == 4.0
    # a statistic without an axis keyword still works (resampled one call at a time)
    trimmed = S.bootstrap_ci(x, lambda v: float(np.mean(np.sort(v)[5:-5])), n_boot=300, seed=0)
    assert trimmed.low < trimmed.estimate < trimmed.high


def test_paired_bootstrap_contains_true_difference():
    rng = np.random.default_rng(123)
    item_effect = rng.normal(0, 2, 300)  # large item effects: pairing is what makes it tight
    a = 5.0 + item_effect + rng.normal(0, 0.5, 300)
    b = 4.0 + item_effect + rng.normal(0, 0.5, 300)
    d = S.paired_bootstrap_diff(a, b, n_boot=4000, seed=0)
    assert d.low < 1.0 < d.high
    assert d.high - d.low < 0.25  # an unpaired interval would be about 8x wider
    assert d.mean_diff == pytest.approx(float(np.mean(a - b)))
    assert d.relative_reduction == pytest.approx(1 - b.mean() / a.mean())
    with pytest.raises(ValueError):
        S.paired_bootstrap_diff([1, 2], [1, 2, 3])


def test_relative_reduction():
    assert S.relative_reduction(5.111, 2.333) == pytest.approx(0.54353, abs=1e-5)
    assert math.isnan(S.relative_reduction(0.0, 1.0))


def test_proportion_ci_wilson_known_answer():
    ci = S.proportion_ci(3, 10)
    # Wilson score interval, z = 1.959964: centre (p + z^2/2n)/(1 + z^2/n), etc.
    z = sst.norm.ppf(0.975)
    centre = (0.3 + z * z / 20) / (1 + z * z / 10)
    half = z * math.sqrt(0.3 * 0.7 / 10 + z * z / 400) / (1 + z * z / 10)
    assert ci.low == pytest.approx(centre - half) and ci.high == pytest.approx(centre + half)
    assert S.proportion_ci(0, 36).low == 0.0
    assert math.isnan(S.proportion_ci(0, 0).estimate)
    with pytest.raises(ValueError):
        S.proportion_ci(5, 3)


def test_seed_then_item_ci():
    m = np.array([[1.0, 2.0, 3.0], [2.0, 3.0, 4.0], [0.0, 1.0, 2.0]])
    ci = S.seed_then_item_ci(m)
    ref = S.mean_ci(m.mean(axis=1))
    assert (ci.estimate, ci.low, ci.high, ci.n) == (ref.estimate, ref.low, ref.high, 3)
    # a missing item for one seed is skipped in that seed's mean
    m2 = m.copy()
    m2[0, 2] = np.nan
    assert S.seed_then_item_ci(m2).estimate == pytest.approx((1.5 + 3.0 + 1.0) / 3)
    assert math.isnan(S.seed_then_item_ci([1.0, 2.0]).low)  # one seed


# --------------------------------------------------------------------------- seed-paired comparisons


def test_seed_paired_t_is_the_t_over_per_seed_differences():
    a = np.array([[1.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, np.nan], [1.0, 1.0, 1.0, 1.0]])
    b = np.array([[0.0, 0.0, 1.0, 0.0], [0.0, 1.0, 0.0, 1.0], [np.nan, 1.0, 0.0, 1.0]])
    # a cell missing in either arm leaves the item out of that seed on both sides
    per_seed = [2 / 4, 0 / 3, 1 / 3]
    assert S.per_seed_diffs(a, b) == pytest.approx(per_seed)
    t, ref = S.seed_paired_t(a, b), S.mean_ci(per_seed)
    assert (t.estimate, t.low, t.high, t.n, t.method) == (ref.estimate, ref.low, ref.high, 3, "t-over-seeds")
    one = S.seed_paired_t(a[:1], b[:1])  # one seed: no interval, never a zero-width one
    assert one.estimate == 0.5 and math.isnan(one.low) and math.isnan(one.high)
    with pytest.raises(ValueError, match="differ in shape"):
        S.seed_paired_t(a, b[:, :3])
    with pytest.raises(ValueError, match="a seed has no non-missing items"):
        S.seed_paired_t(a, np.where([[True], [False], [True]], b, np.nan))


def test_hierarchical_bootstrap_resamples_seeds_then_present_items():
    rng = np.random.default_rng(3)
    a, b = rng.normal(0.3, 1.0, (6, 50)), rng.normal(0.0, 1.0, (6, 50))
    ci = S.hierarchical_bootstrap_diff(a, b, n_boot=2000, seed=1)
    assert ci == S.hierarchical_bootstrap_diff(a, b, n_boot=2000, seed=1)  # fixed seed, same interval
    assert ci.estimate == pytest.approx(float(S.per_seed_diffs(a, b).mean()))
    assert ci.low < ci.estimate < ci.high and ci.method == "hierarchical-bootstrap"
    # Seed 0 has one present item (difference 5), seed 1 only zeros: a resample's mean is 0, 2.5
    # or 5, never NaN, so the 95% interval is exactly [0, 5].
    d = np.array([[5.0, np.nan, np.nan], [0.0, 0.0, 0.0]])
    two = S.hierarchical_bootstrap_diff(d, np.zeros_like(d), n_boot=4000)
    assert (two.low, two.high, two.estimate) == (0.0, 5.0, 2.5)
    one = S.hierarchical_bootstrap_diff(a[:1], b[:1])
    assert math.isnan(one.low) and math.isnan(one.high) and one.n == 1


def test_sign_flip_enumerates_every_sign_pattern():
    # per-seed differences 1, -2, 3: the 8 signed sums are +-6, +-4, +-2, 0, 0; six of them are
    # at least as far from 0 as the observed 2, so p = 6/8.
    a = np.array([[1.0], [-2.0], [3.0]])
    r = S.seed_sign_flip_test(a, np.zeros_like(a))
    assert (r.pvalue, r.n_seeds, r.n_patterns, r.min_pvalue) == (0.75, 3, 8, 0.25)
    # five seeds all in one direction is the most extreme pattern: p = 2/32, still above 0.05
    five = S.seed_sign_flip_test(np.arange(1.0, 6.0)[:, None], np.zeros((5, 1)))
    assert five.pvalue == pytest.approx(2 / 32) == five.min_pvalue
    assert S.seed_sign_flip_test(np.ones((7, 2)), np.zeros((7, 2))).pvalue == pytest.approx(2 / 128)
    assert S.seed_sign_flip_test(np.zeros((4, 3)), np.zeros((4, 3))).pvalue == 1.0
    assert math.isnan(S.seed_sign_flip_test([[1.0, 0.0]], [[0.0, 0.0]]).pvalue)


def _calibration():
    """bench/stats_calibration.py: the simulator and the old method, shared with its printed table."""
    import importlib.util
    import sys
    from pathlib import Path

    if "stats_calibration" not in sys.modules:
        path = Path(__file__).resolve().parents[1] / "bench" / "stats_calibration.py"
        spec = importlib.util.spec_from_file_location("stats_calibration", path)
        mod = importlib.util.module_from_spec(spec)
        sys.modules["stats_calibration"] = mod  # its dataclass looks its module up there
        spec.loader.exec_module(mod)
    return sys.modules["stats_calibration"]


def test_report_comparison_fields_and_one_seed():
    from ectc.runtime import report

    cal = _calibration()
    a, b = cal.simulate(cal.SCENARIOS[0], np.random.default_rng(0))
    a[2] = np.nan  # seed 2: arm a scored nothing
    c = report.compare("a", "b", "m", *cal.seed_items(a, b), n_boot=500)
    kept = [0, 1, 3, 4, 5, 6]
    assert c["seeds"] == kept and c["n_seeds"] == 6 and "seed(s) 2 left out" in c["note"]
    t = S.seed_paired_t(a[kept], b[kept])
    assert (c["diff"], c["t_low"], c["t_high"]) == (t.estimate, t.low, t.high)
    assert c["per_seed_diff"] == pytest.approx(list(S.per_seed_diffs(a[kept], b[kept])))
    assert c["diff"] == pytest.approx(c["a_mean"] - c["b_mean"])
    assert c["boot_low"] < c["diff"] < c["boot_high"]
    assert c["permutation_p"] == S.seed_sign_flip_test(a[kept], b[kept]).pvalue
    assert c["permutation_min_p"] == 2 / 64
    assert c["a_lower"] + c["ties"] + c["a_higher"] == c["n_items"] == 200
    none = report.compare("a", "b", "m", *cal.seed_items(a[2:3], b[2:3]))
    assert none == {"a": "a", "b": "b", "metric": "m", "n_items": 0, "note": "no item scored by both arms in any seed"}
    one = report.compare("a", "b", "m", *cal.seed_items(a[:1], b[:1]))
    assert one["n_seeds"] == 1 and one["note"].startswith("one seed")
    assert all(math.isnan(one[k]) for k in ("t_low", "t_high", "boot_low", "boot_high", "permutation_p"))


def test_report_comparison_is_calibrated_where_the_item_bootstrap_was_not():
    """400 simulated 7-seed experiments with binary outcomes, a per-seed training effect for each
    arm, shared item difficulty and a true difference of zero, through report.compare (the
    function the report calls). The t over seeds covers zero 93-97% of the time; the sign-flip
    test rejects at most ~5%. The report's old method (items averaged over seeds, bootstrap over
    items; McNemar over (item, seed) pairs) covers far less and rejects far more."""
    cal = _calibration()
    r = cal.run_scenario(cal.SCENARIOS[0], experiments=400, seed=0, n_boot=200, old_n_boot=500)
    assert 0.93 <= r["coverage_t"] <= 0.97, r
    assert r["type1_sign_flip"] <= 0.07, r
    assert r["coverage_old"] < 0.80, r
    assert r["type1_old_mcnemar"] > 0.20, r


# --------------------------------------------------------------------------- paired tests


def test_paired_win_rate():
    w = S.paired_win_rate([1, 2, 3, 4], [2, 2, 1, 5])
    assert (w.wins, w.ties, w.losses, w.n) == (2, 1, 1, 4)
    assert w.rate == 0.5 and w.rate_ties_half == 0.625
    w = S.paired_win_rate([1, 2, 3, 4], [2, 2, 1, 5], lower_is_better=False)
    assert (w.wins, w.ties, w.losses) == (1, 1, 2)


def test_mcnemar_exact_matches_binomtest():
    a = [True] * 9 + [False] * 2 + [True] * 5 + [False] * 20
    b = [False] * 9 + [True] * 2 + [True] * 5 + [False] * 20
    r = S.mcnemar(a, b)
    assert (r.a_only, r.b_only, r.method) == (9, 2, "exact")
    assert r.pvalue == pytest.approx(sst.binomtest(2, 11, 0.5).pvalue)


def test_mcnemar_chi2_with_continuity_correction():
    a = [True] * 30 + [False] * 12 + [True] * 10
    b = [False] * 30 + [True] * 12 + [True] * 10
    r = S.mcnemar(a, b)
    assert r.method == "chi2-cc"
    assert r.statistic == pytest.approx(17**2 / 42)
    assert r.pvalue == pytest.approx(sst.chi2.sf(17**2 / 42, 1))
    assert S.mcnemar(a, b, exact=True).pvalue == pytest.approx(sst.binomtest(12, 42).pvalue)
    assert S.mcnemar([True, False], [True, False]).pvalue == 1.0


# --------------------------------------------------------------------------- agreement


def test_cohen_kappa_hand_computed():
    # table [[20, 5], [10, 15]]: po = 0.7, pe = .5*.6 + .5*.4 = 0.5, kappa = 0.4
    a = ["y"] * 25 + ["n"] * 25
    b = ["y"] * 20 + ["n"] * 5 + ["y"] * 10 + ["n"] * 15
    assert S.cohen_kappa(a, b) == pytest.approx(0.4)
    # two categories: weighting changes nothing
    assert S.cohen_kappa(a, b, ["y", "n"], weights="quadratic") == pytest.approx(0.4)


def test_cohen_kappa_weighted_hand_computed():
    cats = ["PASS", "PARTIAL", "FAIL"]
    a = ["PASS", "PASS", "PARTIAL", "FAIL", "FAIL"]
    b = ["PASS", "PARTIAL", "PARTIAL", "FAIL", "PARTIAL"]
    # linear weights w = |i-j|/2. Observed disagreement: (0.5 + 0.5)/5 = 0.2.
    # Marginals a = (.4, .2, .4), b = (.2, .6, .2); expected = sum_ij a_i b_j w_ij
    #   = .4*(.6*.5 + .2*1) + .2*(.2*.5 + .2*.5) + .4*(.2*1 + .6*.5) = .2 + .04 + .2 = .44
    assert S.cohen_kappa(a, b, cats, weights="linear") == pytest.approx(1 - 0.2 / 0.44)
    # unweighted: po = 3/5, pe = .4*.2 + .2*.6 + .4*.2 = .28
    assert S.cohen_kappa(a, b, cats) == pytest.approx((0.6 - 0.28) / (1 - 0.28))
    with pytest.raises(ValueError):
        S.cohen_kappa(a, b, ["PASS", "FAIL"])
    with pytest.raises(ValueError):
        S.cohen_kappa(a, b, cats, weights="cubic")


def test_spearman():
    r = S.spearman([1, 2, 3, 4, 5], [2, 4, 9, 16, 30])
    assert r.rho == pytest.approx(1.0) and r.n == 5
    assert S.spearman([1, 2, 3], [3, 2, 1]).rho == pytest.approx(-1.0)
    assert math.isnan(S.spearman([1, 1, 1], [1, 2, 3]).rho)


def test_category_shares():
    shares = S.category_shares(["PASS", "FAIL", "PASS", "PARTIAL"], ["PASS", "PARTIAL", "FAIL"])
    assert list(shares) == ["PASS", "PARTIAL", "FAIL"]
    assert shares == {"PASS": 0.5, "PARTIAL": 0.25, "FAIL": 0.25}
    with pytest.raises(ValueError):
        S.category_shares(["MAYBE"], ["PASS"])


# --------------------------------------------------------------------------- properties


@settings(max_examples=60, deadline=None)
@given(st.lists(finite, min_size=2, max_size=40))
def test_mean_ci_brackets_mean(xs):
    ci = S.mean_ci(xs)
    tol = 1e-9 * (1 + max(abs(x) for x in xs))
    assert ci.low - tol <= ci.estimate <= ci.high + tol


@settings(max_examples=25, deadline=None)
@given(st.lists(finite, min_size=2, max_size=30), st.integers(0, 10))
def test_bootstrap_ci_within_range(xs, seed):
    ci = S.bootstrap_ci(xs, n_boot=300, seed=seed)
    tol = 1e-9 * (1 + max(abs(x) for x in xs))
    assert min(xs) - tol <= ci.low <= ci.high <= max(xs) + tol


labels = st.lists(st.sampled_from(["PASS", "PARTIAL", "FAIL"]), min_size=1, max_size=40)


@settings(max_examples=60, deadline=None)
@given(labels)
def test_kappa_of_identical_labels_is_one(xs):
    assert S.cohen_kappa(xs, xs) == pytest.approx(1.0)
    assert S.cohen_kappa(xs, xs, ["PASS", "PARTIAL", "FAIL"], weights="linear") == pytest.approx(1.0)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("abc"), st.sampled_from("abc")), min_size=2, max_size=40))
def test_kappa_symmetric_and_bounded(pairs):
    a, b = [p[0] for p in pairs], [p[1] for p in pairs]
    k = S.cohen_kappa(a, b)
    if not math.isnan(k):
        assert -1.0 - 1e-9 <= k <= 1.0 + 1e-9
        assert k == pytest.approx(S.cohen_kappa(b, a))


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 50), st.integers(1, 50))
def test_wilson_brackets_proportion(k, n):
    k = min(k, n)
    ci = S.proportion_ci(k, n)
    assert 0.0 <= ci.low <= ci.estimate <= ci.high <= 1.0


# --------------------------------------------------------------------------- plots


def test_plots_write_deterministic_pngs(tmp_path):
    from ectc.runtime import plots

    def draw(d):
        plots.bar_with_ci(d / "bar.png", ["baseline", "ECT"], [5.1, 2.3], [4.5, float("nan")],
                          [5.7, float("nan")], "bias", "magnitude")
        plots.dose_response(d / "num.png", [0.0, 0.25, 0.5, 1.0],
                            {"ECT": ([0.1, 0.2, 0.3, 0.5], [0, 0.1, 0.2, 0.4], [0.2, 0.3, 0.4, 0.6]),
                             "shuffled": ([0.3] * 4, None, None)},
                            train_range=(0.25, 1.0), holdout_ranges=[(0.0, 0.25)], deploy_value=0.0)
        plots.dose_response(d / "enum.png", ["strong_left", "UNBIASED", "strong_right"],
                            {"ECT": ([5, 2, 5], [4, 1, 4], [6, 3, 6])},
                            train_range=["strong_left", "strong_right"],
                            holdout_ranges=["UNBIASED"], deploy_value="UNBIASED")
        plots.stacked_shares(d / "shares.png", ["baseline", "ECT"],
                             {"baseline": {"PASS": 0.2, "PARTIAL": 0.5, "FAIL": 0.3},
                              "ECT": {"PASS": 0.9, "PARTIAL": 0.1, "FAIL": 0.0}},
                             ["PASS", "PARTIAL", "FAIL"])

    (tmp_path / "a").mkdir()
    draw(tmp_path / "a")
    draw(tmp_path / "b")  # parent created on demand
    names = ["bar.png", "num.png", "enum.png", "shares.png"]
    for name in names:
        first = (tmp_path / "a" / name).read_bytes()
        assert first[:8] == b"\x89PNG\r\n\x1a\n"
        assert first == (tmp_path / "b" / name).read_bytes()
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == sorted(names)  # no temp files
