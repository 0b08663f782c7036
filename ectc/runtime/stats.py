"""Statistics for ECT reports: CIs over seeds, paired comparisons, agreement.

Pure functions over numpy arrays or lists; nothing here knows about any experiment.
Conventions, used throughout:

* "paired" inputs ``a`` and ``b`` are aligned by item (topic, problem): ``a[i]`` and
  ``b[i]`` are the same item under two arms.
* "seed-paired" inputs are (seeds, items) matrices of per-sample values, one per arm, with
  matched seeds: row k of ``a`` and row k of ``b`` are arm a's and arm b's models trained
  with seed k, scored on the same items; NaN marks an item missing for that seed. Seeds are
  the unit of replication (each seed is a separately trained model), so every interval and
  test over such matrices works on the seeds, never on (item, seed) cells as if independent.
* differences are ``a - b``; ``relative_reduction(a_mean, b_mean)`` is the reduction
  going from ``a`` (the baseline) to ``b`` (the treatment), ``1 - b/a``.
* ``paired_win_rate(a, b)`` counts wins *for a*; with ``lower_is_better=True`` a win is
  ``a[i] < b[i]``.
* an interval that cannot be estimated (one seed, no data) has NaN bounds rather than a
  zero-width interval that would overstate certainty.
* ``bounds``: the range the quantity cannot leave (a rate's ``(0, 1)``); a t-interval, which
  knows nothing of it, is clipped to it (two seeds of a rate can give [-0.40, 1.76]). The
  estimate is never moved. Whoever knows the quantity is bounded passes them; tests of noise
  (the sign-flip test, the detector's differences) use the unclipped figures.

scipy does the distribution work (t quantiles, bootstrap resampling, the sign-flip permutation
test, binomial tests, Wilson intervals, Spearman); only Cohen's kappa, the two-level (seeds, then
items) bootstrap, which scipy has no form of, and small bookkeeping are written out here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
from scipy import stats as _st

__all__ = [
    "CI",
    "PairedDiff",
    "WinRate",
    "McNemar",
    "Correlation",
    "mean_ci",
    "bootstrap_ci",
    "paired_bootstrap_diff",
    "relative_reduction",
    "paired_win_rate",
    "mcnemar",
    "proportion_ci",
    "spearman",
    "cohen_kappa",
    "category_shares",
    "seed_then_item_ci",
    "SignFlip",
    "per_seed_diffs",
    "seed_paired_t",
    "hierarchical_bootstrap_diff",
    "seed_sign_flip_test",
    "clip",
]


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class CI:
    """A point estimate with a two-sided interval at ``level``."""

    estimate: float
    low: float
    high: float
    n: int
    level: float = 0.95
    method: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class PairedDiff:
    """Mean of ``a - b`` over paired items, with a paired bootstrap interval."""

    mean_diff: float
    low: float
    high: float
    n: int
    a_mean: float
    b_mean: float
    level: float = 0.95
    n_boot: int = 0

    @property
    def relative_reduction(self) -> float:
        return relative_reduction(self.a_mean, self.b_mean)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["relative_reduction"] = self.relative_reduction
        return d


@dataclass(frozen=True)
class WinRate:
    """Per-item comparison of a against b: ``rate = wins / n`` (ties count as non-wins)."""

    wins: int
    ties: int
    losses: int
    n: int
    rate: float
    rate_ties_half: float  # (wins + ties/2) / n, the usual "probability of superiority"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class McNemar:
    """McNemar's test on paired binary outcomes.

    ``a_only``: items where a is True and b is False; ``b_only`` the reverse.
    """

    a_only: int
    b_only: int
    n: int
    statistic: float
    pvalue: float
    method: str  # "exact" (binomial) or "chi2-cc" (chi-square, continuity corrected)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class SignFlip:
    """Exact sign-flip permutation test over seeds of the per-seed paired differences."""

    mean_diff: float
    pvalue: float
    n_seeds: int
    n_patterns: int  # 2 ** n_seeds, every one enumerated
    min_pvalue: float  # 2 / 2 ** n_seeds: the smallest p this many seeds can give

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Correlation:
    rho: float
    pvalue: float
    n: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------- helpers


def _vec(values: Any, name: str = "values") -> np.ndarray:
    arr = np.asarray(values, dtype=float).ravel()
    if arr.size == 0:
        raise ValueError(f"{name}: need at least one value")
    if np.isnan(arr).any():
        raise ValueError(f"{name}: contains NaN; drop missing items before calling")
    return arr


def _paired(a: Any, b: Any) -> tuple[np.ndarray, np.ndarray]:
    a_arr, b_arr = _vec(a, "a"), _vec(b, "b")
    if a_arr.shape != b_arr.shape:
        raise ValueError(f"paired inputs differ in length: {a_arr.size} vs {b_arr.size}")
    return a_arr, b_arr


def _check_level(level: float) -> None:
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")


# --------------------------------------------------------------------------- intervals


def clip(ci: CI, bounds: tuple[float, float] | None) -> CI:
    """``ci`` with its interval clipped to ``bounds`` (None: as it is); the method says so
    where the clipping changed a bound. NaN bounds stay NaN."""
    if bounds is None:
        return ci
    lo_b, hi_b = bounds
    low = ci.low if np.isnan(ci.low) else min(max(ci.low, lo_b), hi_b)
    high = ci.high if np.isnan(ci.high) else min(max(ci.high, lo_b), hi_b)
    if (low, high) == (ci.low, ci.high):
        return ci
    return replace(ci, low=float(low), high=float(high), method=f"{ci.method}, clipped to [{lo_b:g}, {hi_b:g}]")


def mean_ci(values: Sequence[float] | np.ndarray, level: float = 0.95,
            bounds: tuple[float, float] | None = None) -> CI:
    """Student-t interval for the mean (e.g. over seeds), clipped to ``bounds`` where given.

    One value: the estimate is that value and the bounds are NaN (no spread to estimate).
    """
    _check_level(level)
    x = _vec(values)
    n = x.size
    m = float(x.mean())
    if n == 1:
        return CI(m, float("nan"), float("nan"), 1, level, "t")
    sem = float(x.std(ddof=1) / np.sqrt(n))
    if sem == 0.0:
        return CI(m, m, m, n, level, "t")
    half = float(_st.t.ppf(0.5 + level / 2, df=n - 1)) * sem
    return clip(CI(m, float(m - half), float(m + half), n, level, "t"), bounds)


def bootstrap_ci(
    values: Sequence[float] | np.ndarray,
    stat: Callable[..., Any] = np.mean,
    n_boot: int = 10_000,
    seed: int = 0,
    level: float = 0.95,
    method: str = "percentile",
) -> CI:
    """Bootstrap interval for ``stat(values)`` (scipy.stats.bootstrap, fixed seed).

    A ``stat`` that accepts an ``axis`` keyword (numpy reductions do) is resampled vectorised;
    any other callable of one 1-d array is called once per resample (slower).
    ``method`` is passed to scipy ("percentile", "basic" or "BCa").
    """
    _check_level(level)
    x = _vec(values)
    est = float(stat(x))
    if x.size == 1 or np.all(x == x[0]):
        # no variability to resample; scipy would warn and (for BCa) return NaN
        lo = hi = est if x.size > 1 else float("nan")
        return CI(est, lo, hi, x.size, level, f"bootstrap-{method}")
    try:
        vectorized = np.ndim(stat(np.stack([x, x]), axis=-1)) == 1
    except TypeError:
        vectorized = False
    res = _st.bootstrap(
        (x,),
        stat if vectorized else (lambda s: stat(s)),
        n_resamples=n_boot,
        confidence_level=level,
        method=method,
        vectorized=vectorized,
        rng=np.random.default_rng(seed),
    )
    ci = res.confidence_interval
    return CI(est, float(ci.low), float(ci.high), x.size, level, f"bootstrap-{method}")


def paired_bootstrap_diff(
    a: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    n_boot: int = 10_000,
    seed: int = 0,
    level: float = 0.95,
) -> PairedDiff:
    """Mean paired difference ``mean(a - b)`` with a bootstrap CI that resamples items.

    Resampling items keeps each item's pair together, which is what "paired by item" means;
    it is the bootstrap of the per-item differences.
    """
    a_arr, b_arr = _paired(a, b)
    ci = bootstrap_ci(a_arr - b_arr, np.mean, n_boot=n_boot, seed=seed, level=level)
    return PairedDiff(
        mean_diff=ci.estimate,
        low=ci.low,
        high=ci.high,
        n=ci.n,
        a_mean=float(a_arr.mean()),
        b_mean=float(b_arr.mean()),
        level=level,
        n_boot=n_boot,
    )


def relative_reduction(a_mean: float, b_mean: float) -> float:
    """Fractional reduction from ``a_mean`` (baseline) to ``b_mean``: ``1 - b/a``.

    NaN when ``a_mean`` is 0 (the reduction is undefined).
    """
    if a_mean == 0:
        return float("nan")
    return float(1.0 - b_mean / a_mean)


def proportion_ci(successes: int, n: int, level: float = 0.95) -> CI:
    """Wilson score interval for a proportion (scipy's binomtest(...).proportion_ci)."""
    _check_level(level)
    successes, n = int(successes), int(n)
    if n < 0 or not 0 <= successes <= max(n, 0):
        raise ValueError(f"need 0 <= successes <= n, got {successes} of {n}")
    if n == 0:
        return CI(float("nan"), float("nan"), float("nan"), 0, level, "wilson")
    ci = _st.binomtest(successes, n).proportion_ci(confidence_level=level, method="wilson")
    return CI(successes / n, float(ci.low), float(ci.high), n, level, "wilson")


def _seed_matrix(matrix: Any, name: str = "matrix") -> np.ndarray:
    """A (seeds, items) float matrix (a 1-d input is one seed) in which every seed has an item."""
    m = np.asarray(matrix, dtype=float)
    if m.ndim == 1:
        m = m[None, :]
    if m.ndim != 2 or m.size == 0:
        raise ValueError(f"{name}: expected a (seeds, items) matrix, got shape {m.shape}")
    if np.isnan(m).all(axis=1).any():
        raise ValueError(f"{name}: a seed has no non-missing items")
    return m


def _per_seed_means(m: np.ndarray) -> np.ndarray:
    return np.nanmean(m, axis=1)


def _diff_matrix(a: Any, b: Any) -> np.ndarray:
    """``a - b`` cell by cell for seed-paired matrices; NaN where either arm lacks the item."""
    a_m, b_m = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a_m.shape != b_m.shape:
        raise ValueError(f"seed-paired matrices differ in shape: {a_m.shape} vs {b_m.shape}")
    return _seed_matrix(a_m - b_m, "a - b")


def seed_then_item_ci(matrix: Any, level: float = 0.95, bounds: tuple[float, float] | None = None) -> CI:
    """CI over seeds of per-seed means over items, clipped to ``bounds`` where given.

    ``matrix`` has shape (seeds, items). Each seed's items are averaged first (NaN cells, an
    item missing for a seed, are skipped), then a t-interval is taken over the seed means.
    For a paired comparison pass the per-item difference matrix ``A - B`` (``seed_paired_t``).
    """
    per_seed = _per_seed_means(_seed_matrix(matrix))
    ci = mean_ci(per_seed, level=level)
    return clip(CI(ci.estimate, ci.low, ci.high, ci.n, level, "t-over-seeds"), bounds)


def per_seed_diffs(a: Any, b: Any) -> np.ndarray:
    """Seed k's mean over items of ``a - b`` (items both arms have for that seed), per seed."""
    return _per_seed_means(_diff_matrix(a, b))


def seed_paired_t(a: Any, b: Any, level: float = 0.95, bounds: tuple[float, float] | None = None) -> CI:
    """Student-t interval over seeds of the per-seed paired differences.

    The primary interval for a seed-paired comparison: each seed's mean difference already
    carries that seed's item noise, so the spread of the seed means reflects both the
    seed-to-seed (training) variance and the item variance. One seed: NaN bounds. ``bounds``
    are the values' own range: the difference is clipped to ``(lo - hi, hi - lo)``.
    """
    diff = None if bounds is None else (bounds[0] - bounds[1], bounds[1] - bounds[0])
    return seed_then_item_ci(_diff_matrix(a, b), level=level, bounds=diff)


def hierarchical_bootstrap_diff(
    a: Any, b: Any, n_boot: int = 5000, seed: int = 0, level: float = 0.95
) -> CI:
    """Two-level percentile bootstrap of the mean paired difference of seed-paired matrices.

    Each resample draws seeds with replacement, then, within each drawn seed, that seed's
    items with replacement; the statistic is the mean over drawn seeds of their mean
    difference. Vectorised over resamples (in chunks bounded in memory) with a fixed seed.
    The percentile interval of a handful of seed means runs narrow (it has no small-sample
    correction), which is why ``seed_paired_t`` is the primary figure. One seed: NaN bounds.
    """
    _check_level(level)
    d = _diff_matrix(a, b)
    k = d.shape[0]
    est = float(_per_seed_means(d).mean())
    if k == 1:
        return CI(est, float("nan"), float("nan"), 1, level, "hierarchical-bootstrap")
    # Each seed's present items packed to the left, so drawing index < count[s] draws one of them.
    present = ~np.isnan(d)
    counts = present.sum(axis=1)
    order = np.argsort(~present, axis=1, kind="stable")
    packed = np.take_along_axis(d, order, axis=1)[:, : counts.max()]
    width = packed.shape[1]
    rng = np.random.default_rng(seed)
    out = np.empty(n_boot)
    chunk = max(1, 2_000_000 // (k * width))
    for start in range(0, n_boot, chunk):
        m = min(chunk, n_boot - start)
        seeds = rng.integers(0, k, size=(m, k))
        c = counts[seeds]
        # float32 uniforms: half the cost of float64, and ample resolution for an index
        items = (rng.random((m, k, width), dtype=np.float32) * c[..., None]).astype(np.intp)
        values = packed[seeds[..., None], items]
        if (counts < width).any():  # a seed missing items draws only its first count[s] slots
            values = np.where(np.arange(width) < c[..., None], values, 0.0)
        out[start : start + m] = (values.sum(axis=2) / c).mean(axis=1)
    low, high = np.quantile(out, [(1 - level) / 2, (1 + level) / 2])
    return CI(est, float(low), float(high), k, level, "hierarchical-bootstrap")


def seed_sign_flip_test(a: Any, b: Any, max_exact_seeds: int = 20, seed: int = 0) -> SignFlip:
    """Two-sided sign-flip permutation test over seeds of the per-seed paired differences.

    Under the null the arms are exchangeable within each seed, so each seed's difference is
    as likely negative as positive; with k seeds all 2^k sign patterns are enumerated
    (scipy.stats.permutation_test, exact; more than ``max_exact_seeds`` seeds: 2^max random
    patterns with a fixed seed). It respects the clustering: the seed, not the (item, seed)
    cell, is the unit, so a seed effect that varies between trainings cannot make it
    anti-conservative. Works for binary and continuous values alike. Its resolution is
    2 / 2^k: with 5 or fewer seeds it cannot reach p < 0.05. One seed: NaN.
    """
    per_seed = per_seed_diffs(a, b)
    k = per_seed.size
    mean = float(per_seed.mean())
    if k == 1:
        return SignFlip(mean, float("nan"), 1, 2, 1.0)
    n_resamples = np.inf if k <= max_exact_seeds else 2**max_exact_seeds
    res = _st.permutation_test(
        (per_seed,),
        lambda x, axis: np.mean(x, axis=axis),
        permutation_type="samples",
        vectorized=True,
        n_resamples=n_resamples,
        alternative="two-sided",
        rng=np.random.default_rng(seed),
    )
    patterns = 2**k if k <= max_exact_seeds else 2**max_exact_seeds
    return SignFlip(mean, float(res.pvalue), k, patterns, min(1.0, 2.0 / 2**k))


# --------------------------------------------------------------------------- paired tests


def paired_win_rate(
    a: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    lower_is_better: bool = True,
) -> WinRate:
    """Wins, ties and losses of ``a`` against ``b``, item by item."""
    a_arr, b_arr = _paired(a, b)
    d = a_arr - b_arr if lower_is_better else b_arr - a_arr
    wins, ties, losses = int((d < 0).sum()), int((d == 0).sum()), int((d > 0).sum())
    n = a_arr.size
    return WinRate(wins, ties, losses, n, wins / n, (wins + ties / 2) / n)


def mcnemar(
    a_bool: Sequence[bool] | np.ndarray,
    b_bool: Sequence[bool] | np.ndarray,
    exact: bool | None = None,
    exact_below: int = 25,
) -> McNemar:
    """McNemar's test for paired binary outcomes (e.g. FAIL / not FAIL per topic).

    Only discordant pairs matter. ``exact=None`` picks the exact two-sided binomial test
    (scipy.stats.binomtest, p = 0.5) when there are fewer than ``exact_below`` discordant
    pairs, otherwise the chi-square statistic with continuity correction
    ``(|n01 - n10| - 1)^2 / (n01 + n10)`` on one degree of freedom.
    """
    a_arr = np.asarray(a_bool, dtype=bool).ravel()
    b_arr = np.asarray(b_bool, dtype=bool).ravel()
    if a_arr.shape != b_arr.shape:
        raise ValueError(f"paired inputs differ in length: {a_arr.size} vs {b_arr.size}")
    n10 = int((a_arr & ~b_arr).sum())
    n01 = int((~a_arr & b_arr).sum())
    k = n10 + n01
    use_exact = (k < exact_below) if exact is None else exact
    if k == 0:
        return McNemar(n10, n01, a_arr.size, 0.0, 1.0, "exact" if use_exact else "chi2-cc")
    if use_exact:
        p = _st.binomtest(min(n10, n01), k, 0.5, alternative="two-sided").pvalue
        return McNemar(n10, n01, a_arr.size, float(min(n10, n01)), float(p), "exact")
    stat = (abs(n10 - n01) - 1.0) ** 2 / k
    return McNemar(n10, n01, a_arr.size, float(stat), float(_st.chi2.sf(stat, df=1)), "chi2-cc")


# --------------------------------------------------------------------------- agreement


def spearman(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> Correlation:
    """Spearman rank correlation (scipy); NaN when either input is constant."""
    xa, ya = _paired(x, y)
    if xa.size < 2 or np.all(xa == xa[0]) or np.all(ya == ya[0]):
        return Correlation(float("nan"), float("nan"), xa.size)
    res = _st.spearmanr(xa, ya)
    return Correlation(float(res.statistic), float(res.pvalue), xa.size)


def cohen_kappa(
    a_labels: Sequence[Any],
    b_labels: Sequence[Any],
    categories: Sequence[Any] | None = None,
    weights: str | None = None,
) -> float:
    """Cohen's kappa between two raters' labels of the same items.

    ``categories`` fixes the category order (needed for ``weights``, "linear" or "quadratic",
    which treat the order as ordinal, e.g. PASS < PARTIAL < FAIL); by default the sorted union.
    When chance agreement is total (both raters always give the same single category) kappa is
    0/0; this returns 1.0 if the raters agree on every item, the only case where that happens.
    """
    a, b = list(a_labels), list(b_labels)
    if len(a) != len(b):
        raise ValueError(f"label lists differ in length: {len(a)} vs {len(b)}")
    if not a:
        raise ValueError("need at least one labelled item")
    cats = list(categories) if categories is not None else sorted(set(a) | set(b), key=str)
    index = {c: i for i, c in enumerate(cats)}
    unknown = (set(a) | set(b)) - set(index)
    if unknown:
        raise ValueError(f"labels not in categories: {sorted(map(str, unknown))}")
    k = len(cats)
    table = np.zeros((k, k))
    np.add.at(table, ([index[x] for x in a], [index[y] for y in b]), 1)
    table /= table.sum()
    expected = np.outer(table.sum(axis=1), table.sum(axis=0))
    i, j = np.indices((k, k))
    if weights is None:
        w = (i != j).astype(float)
    elif weights == "linear":
        w = np.abs(i - j) / max(k - 1, 1)
    elif weights == "quadratic":
        w = ((i - j) / max(k - 1, 1)) ** 2
    else:
        raise ValueError(f"weights must be None, 'linear' or 'quadratic', got {weights!r}")
    observed_dis, expected_dis = float((w * table).sum()), float((w * expected).sum())
    if expected_dis == 0.0:
        return 1.0 if observed_dis == 0.0 else float("nan")
    return 1.0 - observed_dis / expected_dis


def category_shares(labels: Sequence[Any], categories: Sequence[Any]) -> dict[Any, float]:
    """Share of each category among ``labels``, in ``categories`` order (sums to 1).

    A label outside ``categories`` is an error, not silently dropped.
    """
    labels = list(labels)
    cats = list(categories)
    unknown = set(labels) - set(cats)
    if unknown:
        raise ValueError(f"labels not in categories: {sorted(map(str, unknown))}")
    n = len(labels)
    if n == 0:
        return {c: float("nan") for c in cats}
    return {c: sum(1 for x in labels if x == c) / n for c in cats}
