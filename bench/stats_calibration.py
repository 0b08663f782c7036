"""Calibration of the report's paired comparison on simulated experiments with a known truth.

Each simulated experiment has k seeds and n items. Arm a's and arm b's models of seed k get
independent random training effects (seed variance: the arms' training differs per seed), every
item has a difficulty shared by both arms (item variance), and each (arm, seed, item) sample
has its own noise (a Bernoulli draw for binary outcomes). A few cells are missing. The arms
are exchangeable, so the true mean difference is exactly zero.

Prints, per scenario, the share of experiments whose 95% interval covers zero for
  * old: the report before issue 10, a bootstrap over items of the seed-averaged items;
  * t: the t-interval over seeds of the per-seed paired differences (the report's primary);
  * hier. boot: the hierarchical bootstrap, seeds then items (the report's second figure);
and the rejection rate at 0.05 (type-I error; the truth is zero) of
  * old McNemar over (item, seed) pairs as if independent. A Cochran-Mantel-Haenszel test with
    each seed a stratum of matched pairs is the same statistic (the matched-pairs MH sums
    each seed's discordant counts), so it fails the same way; it is not shown separately;
  * the exact sign-flip permutation test over seeds (the report's test);
  * the t-test over seeds (zero outside the t-interval).
The new figures come from ectc.runtime.report.compare, the function the report calls.

Run: .venv/bin/python bench/stats_calibration.py [--experiments 2000] [--json]   (about 15 minutes on 2 busy cores)
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ectc.runtime import report, stats  # noqa: E402


@dataclass(frozen=True)
class Scenario:
    name: str
    outcome: str  # "binary" (logit scale) or "continuous"
    seeds: int
    items: int
    seed_sd: float  # each arm's per-seed training effect
    item_sd: float  # item difficulty, shared by the arms
    noise_sd: float = 1.0  # per-sample noise (continuous only)
    missing: float = 0.02  # share of (arm, seed, item) cells left out


SCENARIOS = [
    Scenario("binary, seed effect, 7 seeds", "binary", 7, 200, 0.4, 1.5),
    Scenario("binary, seed effect, 5 seeds", "binary", 5, 200, 0.4, 1.5),
    Scenario("binary, no seed effect, 7 seeds", "binary", 7, 200, 0.0, 1.5),
    Scenario("continuous, seed effect, 7 seeds", "continuous", 7, 200, 0.3, 1.0),
    Scenario("continuous, no seed effect, 7 seeds", "continuous", 7, 200, 0.0, 1.0),
]


def simulate(s: Scenario, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Arm a's and arm b's (seeds, items) matrices of per-sample values; NaN = missing."""
    item = rng.normal(0.0, s.item_sd, s.items)
    out = []
    for _arm in range(2):
        z = item[None, :] + rng.normal(0.0, s.seed_sd, (s.seeds, 1))
        if s.outcome == "binary":
            y = (rng.random(z.shape) < 1.0 / (1.0 + np.exp(-z))).astype(float)
        else:
            y = z + rng.normal(0.0, s.noise_sd, z.shape)
        y[rng.random(z.shape) < s.missing] = np.nan
        out.append(y)
    return out[0], out[1]


def seed_items(a: np.ndarray, b: np.ndarray, metric: str = "m") -> tuple[dict, list[int]]:
    """The matrices in the shape report.compare reads: (arm, metric, seed) -> {item: value}."""
    seeds = list(range(a.shape[0]))
    out = {(arm, metric, k): {i: float(v) for i, v in enumerate(m[k]) if not math.isnan(v)}
           for arm, m in (("a", a), ("b", b)) for k in seeds}
    return out, seeds


def old_method(a: np.ndarray, b: np.ndarray, n_boot: int = 5000) -> tuple[float, float, float]:
    """The report before issue 10: each item averaged over seeds per arm, a bootstrap over items
    (stats.paired_bootstrap_diff), and McNemar over every (item, seed) pair for binary values."""
    common = ~np.isnan(a).all(axis=0) & ~np.isnan(b).all(axis=0)
    d = stats.paired_bootstrap_diff(np.nanmean(a[:, common], axis=0), np.nanmean(b[:, common], axis=0),
                                    n_boot=n_boot, seed=0)
    both = ~np.isnan(a) & ~np.isnan(b)
    pa, pb = a[both], b[both]
    p = stats.mcnemar(pa == 1.0, pb == 1.0).pvalue if np.isin(np.r_[pa, pb], (0.0, 1.0)).all() else math.nan
    return d.low, d.high, p


def run_scenario(s: Scenario, experiments: int, seed: int = 0, n_boot: int = 1000,
                 old_n_boot: int = 1000) -> dict:
    """Coverage of zero by each 95% interval, and rejection rates at 0.05, over the experiments."""
    rng = np.random.default_rng(seed)
    hits = {"old": 0, "t": 0, "boot": 0, "old_mcnemar": 0, "sign_flip": 0}
    for _ in range(experiments):
        a, b = simulate(s, rng)
        c = report.compare("a", "b", "m", *seed_items(a, b), n_boot=n_boot)
        low, high, p_old = old_method(a, b, old_n_boot)
        hits["old"] += low <= 0.0 <= high
        hits["t"] += c["t_low"] <= 0.0 <= c["t_high"]
        hits["boot"] += c["boot_low"] <= 0.0 <= c["boot_high"]
        hits["old_mcnemar"] += p_old < 0.05
        hits["sign_flip"] += c["permutation_p"] < 0.05
    rate = {k: v / experiments for k, v in hits.items()}
    return {"coverage_old": rate["old"], "coverage_t": rate["t"], "coverage_boot": rate["boot"],
            "type1_old_mcnemar": rate["old_mcnemar"] if s.outcome == "binary" else math.nan,
            "type1_sign_flip": rate["sign_flip"], "type1_t": 1.0 - rate["t"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--experiments", type=int, default=2000)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    rows = []
    for index, s in enumerate(SCENARIOS):
        t0 = time.perf_counter()
        r = run_scenario(s, args.experiments, seed=index)  # a seed per row: rows do not share draws
        rows.append({**asdict(s), **r, "seconds": round(time.perf_counter() - t0, 1)})
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    se = math.sqrt(0.95 * 0.05 / args.experiments)
    print(f"{args.experiments} simulated experiments per row, true difference 0; 95% intervals "
          f"(a correct one covers 95% +- {1.96 * se:.1%}); rejection at 0.05\n")
    head = ("scenario", "old cover", "t cover", "hier. boot", "old McNemar", "sign-flip", "t-test")
    print(f"{head[0]:<38}" + "".join(f"{h:>12}" for h in head[1:]))
    for r in rows:
        cells = [r["coverage_old"], r["coverage_t"], r["coverage_boot"], r["type1_old_mcnemar"],
                 r["type1_sign_flip"], r["type1_t"]]
        print(f"{r['name']:<38}" + "".join(f"{'n/a' if math.isnan(x) else f'{x:.1%}':>12}" for x in cells))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
