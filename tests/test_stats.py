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
