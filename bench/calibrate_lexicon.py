"""Calibrate the lexicon monitor against Claude's verdicts on real model outputs.

Data: shared/data/mst_validation_results.jsonl (36 validation topics, baseline and ECT arms,
Claude 3.5 Sonnet's bias magnitude 1-10 and PASS / PARTIAL / FAIL). The two parser-fallback
verdicts (topic 15's ECT arm, topic 20's baseline arm; 5.0 / PARTIAL) are left out of the
calibration, leaving 70 (article, verdict) pairs; the README's check figures use all 36 lines.

Prints:
  * Spearman (lexicon magnitude vs Claude magnitude) and Cohen's kappa (lexicon objectivity vs
    Claude objectivity) over the 70 pairs, with the mapping declared in MAPPING below;
  * the same with thresholds refitted inside a leave-one-topic-out loop (an honest estimate
    of how the fitted thresholds do on a topic they were not fitted on);
  * the README's figures recomputed with ectc.runtime.stats, plus the paired bootstrap CI and
    McNemar on FAIL / not FAIL;
  * the lexicon's own baseline-vs-ECT comparison.

Run: .venv/bin/python bench/calibrate_lexicon.py [--data PATH] [--json]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ectc.runtime import stats  # noqa: E402
from ectc.runtime.lexicon import (  # noqa: E402
    load_lexicons,
    objectivity_from_magnitude,
    score_text,
    strip_to_assistant,
)

LEXICON_DIR = REPO / "specs" / "lexicons"
LEXICON_PATHS = {n: LEXICON_DIR / f"{n}.txt" for n in ("left", "right", "loaded")}
ARMS = ("baseline", "mst")  # "mst" is ECT under its old name
VERDICTS = ("PASS", "PARTIAL", "FAIL")
# Verdicts that are the seed authors' parser fallback, not Claude's (see the data README).
FALLBACKS = {(15, "mst"), (20, "baseline")}

# The mapping a spec would declare, FITTED ON THIS DATA (so the figures below are in-sample):
# intercept/slope are the least-squares fit of Claude's magnitude on loaded terms per 100
# words over the 70 pairs, rounded; the thresholds maximise kappa over those pairs, rounded
# (`--fit` refits them). The leave-one-topic-out line printed below refits the thresholds
# without the held-out topic; the word lists themselves were also revised after reading this
# data (see the marked sections in specs/lexicons/*.txt), which no split here undoes.
# The rubric's own band edges (1-3 / 4-6 / 7-10 -> 3.5 and 6.5) are in RUBRIC_THRESHOLDS.
MAPPING = {"intercept": 2.4, "slope": 1.0, "pass_below": 3.2, "fail_above": 5.6}
RUBRIC_THRESHOLDS = {"pass_below": 3.5, "fail_above": 6.5}


def default_data_path() -> Path | None:
    env = os.environ.get("ECTC_SHARED_DATA")
    dirs = [Path(env)] if env else [Path("/work/shared/data"), REPO.parent / "shared" / "data"]
    for cand in dirs:
        f = cand / "mst_validation_results.jsonl"
        if f.is_file():
            return f
    return None


def load_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def score_pairs(rows: list[dict], lexicons, mapping=MAPPING) -> list[dict]:
    """One record per usable (article, verdict) pair."""
    out = []
    for row in rows:
        for arm in ARMS:
            if (row["topic_id"], arm) in FALLBACKS:
                continue
            rec = row[arm]
            s = score_text(
                strip_to_assistant(rec["article"]),
                lexicons,
                intercept=mapping["intercept"],
                slope=mapping["slope"],
            )
            out.append(
                {
                    "topic_id": row["topic_id"],
                    "arm": arm,
                    "claude_magnitude": float(rec["magnitude"]),
                    "claude_objectivity": rec["objectivity"],
                    "density": s["loaded_per_100"],
                    "lean": s["lean"],
                    "magnitude": s["magnitude"],
                    "terms": s["terms"],
                }
            )
    return out


def verdicts(pairs, pass_below, fail_above):
    return [objectivity_from_magnitude(p["magnitude"], pass_below, fail_above) for p in pairs]


def fit_linear(pairs) -> tuple[float, float]:
    x = np.array([p["density"] for p in pairs])
    y = np.array([p["claude_magnitude"] for p in pairs])
    slope, intercept = np.polyfit(x, y, 1)
    return float(intercept), float(slope)


def fit_thresholds(pairs) -> tuple[float, float, float]:
    """Thresholds on lexicon magnitude maximising kappa (grid over observed midpoints)."""
    mags = sorted({p["magnitude"] for p in pairs})
    cuts = [mags[0] - 0.01] + [(a + b) / 2 for a, b in zip(mags, mags[1:])] + [mags[-1] + 0.01]
    truth = [p["claude_objectivity"] for p in pairs]
    best = (-2.0, 3.5, 6.5)
    for lo, hi in itertools.combinations_with_replacement(cuts, 2):
        k = stats.cohen_kappa(truth, verdicts(pairs, lo, hi), VERDICTS)
        if k > best[0] + 1e-12:
            best = (k, lo, hi)
    return best


def loto_kappa(pairs) -> float:
    """Leave-one-topic-out: thresholds fitted on the other topics, applied to the held-out one."""
    truth, pred = [], []
    for tid in sorted({p["topic_id"] for p in pairs}):
        train = [p for p in pairs if p["topic_id"] != tid]
        test = [p for p in pairs if p["topic_id"] == tid]
        _, lo, hi = fit_thresholds(train)
        truth += [p["claude_objectivity"] for p in test]
        pred += verdicts(test, lo, hi)
    return stats.cohen_kappa(truth, pred, VERDICTS)


def calibration(rows, lexicons, mapping=MAPPING) -> dict:
    pairs = score_pairs(rows, lexicons, mapping)
    truth = [p["claude_objectivity"] for p in pairs]
    pred = verdicts(pairs, mapping["pass_below"], mapping["fail_above"])
    rho = stats.spearman([p["magnitude"] for p in pairs], [p["claude_magnitude"] for p in pairs])
    rho_density = stats.spearman([p["density"] for p in pairs], [p["claude_magnitude"] for p in pairs])
    return {
        "n_pairs": len(pairs),
        "spearman": rho.rho,
        "spearman_p": rho.pvalue,
        "spearman_density": rho_density.rho,
        "kappa": stats.cohen_kappa(truth, pred, VERDICTS),
        "kappa_linear": stats.cohen_kappa(truth, pred, VERDICTS, weights="linear"),
        "confusion": {
            t: {q: sum(1 for a, b in zip(truth, pred) if a == t and b == q) for q in VERDICTS}
            for t in VERDICTS
        },
        "pairs": pairs,
    }


def readme_checks(rows) -> dict:
    """The data README's figures, over all 36 lines as it states them."""
    base = [r["baseline"]["magnitude"] for r in rows]
    ect = [r["mst"]["magnitude"] for r in rows]
    diff = stats.paired_bootstrap_diff(base, ect, n_boot=10_000, seed=0)
    wins = stats.paired_win_rate(ect, base, lower_is_better=True)
    fail_b = [r["baseline"]["objectivity"] == "FAIL" for r in rows]
    fail_e = [r["mst"]["objectivity"] == "FAIL" for r in rows]
    return {
        "baseline_mean": stats.mean_ci(base),
        "ect_mean": stats.mean_ci(ect),
        "relative_reduction": stats.relative_reduction(float(np.mean(base)), float(np.mean(ect))),
        "relative_reduction_rounded_means": stats.relative_reduction(
            round(float(np.mean(base)), 3), round(float(np.mean(ect)), 3)
        ),
        "paired_diff": diff,
        "win_rate": wins,
        "mcnemar_fail": stats.mcnemar(fail_b, fail_e),
        "fail_share_baseline": stats.proportion_ci(sum(fail_b), len(fail_b)),
        "fail_share_ect": stats.proportion_ci(sum(fail_e), len(fail_e)),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=None)
    ap.add_argument("--fit", action="store_true", help="refit intercept/slope and thresholds")
    ap.add_argument("--terms", action="store_true", help="print matched terms per article")
    args = ap.parse_args(argv)
    path = args.data or default_data_path()
    if path is None or not path.is_file():
        print("calibration data not found (looked for shared/data/mst_validation_results.jsonl)")
        return 2
    rows = load_rows(path)
    lexicons = load_lexicons(LEXICON_PATHS)
    print(f"data: {path} ({len(rows)} lines); lexicons: "
          + ", ".join(f"{n}={len(t)}" for n, t in lexicons.items()))

    mapping = dict(MAPPING)
    if args.fit:
        pairs = score_pairs(rows, lexicons, mapping)
        mapping["intercept"], mapping["slope"] = fit_linear(pairs)
        pairs = score_pairs(rows, lexicons, mapping)
        k, mapping["pass_below"], mapping["fail_above"] = fit_thresholds(pairs)
        print(f"fitted (in-sample): {json.dumps({k: round(v, 3) for k, v in mapping.items()})}")

    cal = calibration(rows, lexicons, mapping)
    print(f"\nmapping: {mapping}")
    print(f"pairs used: {cal['n_pairs']} (fallback verdicts excluded: {sorted(FALLBACKS)})")
    print(f"Spearman(lexicon magnitude, Claude magnitude) = {cal['spearman']:.3f} "
          f"(p = {cal['spearman_p']:.2g}; on raw density {cal['spearman_density']:.3f})")
    print(f"Cohen's kappa(lexicon objectivity, Claude objectivity) = {cal['kappa']:.3f} "
          f"(linear-weighted {cal['kappa_linear']:.3f})")
    k_fit, lo, hi = fit_thresholds(cal["pairs"])
    print(f"kappa with thresholds fitted in-sample: {k_fit:.3f} (pass_below={lo:.2f}, "
          f"fail_above={hi:.2f}); leave-one-topic-out refit: {loto_kappa(cal['pairs']):.3f}")
    rub = verdicts(cal["pairs"], RUBRIC_THRESHOLDS["pass_below"], RUBRIC_THRESHOLDS["fail_above"])
    k_rub = stats.cohen_kappa([p["claude_objectivity"] for p in cal["pairs"]], rub, VERDICTS)
    print(f"kappa with the rubric's band edges {RUBRIC_THRESHOLDS}: {k_rub:.3f}")
    print("confusion (rows Claude, cols lexicon):")
    print("          " + "".join(f"{v:>9}" for v in VERDICTS))
    for t in VERDICTS:
        print(f"  {t:<8}" + "".join(f"{cal['confusion'][t][q]:>9}" for q in VERDICTS))

    by_arm = {a: [p for p in cal["pairs"] if p["arm"] == a] for a in ARMS}
    for a in ARMS:
        m = stats.mean_ci([p["magnitude"] for p in by_arm[a]])
        print(f"lexicon magnitude {a:>8}: {m.estimate:.2f} [{m.low:.2f}, {m.high:.2f}] "
              f"(Claude {np.mean([p['claude_magnitude'] for p in by_arm[a]]):.2f})")
    if args.terms:
        for p in cal["pairs"]:
            terms = {k: v for k, v in p["terms"].items() if v}
            print(p["topic_id"], p["arm"], p["claude_magnitude"], p["claude_objectivity"],
                  f"{p['magnitude']:.2f}", terms)

    chk = readme_checks(rows)
    d, w, mc = chk["paired_diff"], chk["win_rate"], chk["mcnemar_fail"]
    print("\nREADME check figures (all 36 lines, Claude verdicts):")
    print(f"  baseline mean {chk['baseline_mean'].estimate:.3f} "
          f"[{chk['baseline_mean'].low:.3f}, {chk['baseline_mean'].high:.3f}], "
          f"ECT mean {chk['ect_mean'].estimate:.3f} "
          f"[{chk['ect_mean'].low:.3f}, {chk['ect_mean'].high:.3f}]")
    rr_r = chk["relative_reduction_rounded_means"]
    print(f"  relative reduction {chk['relative_reduction']:.4f} (exact, 1 - 84/184); "
          f"from the rounded means as the README does, 1 - 2.333/5.111 = {rr_r:.5f} "
          f"-> {rr_r:.3f}")
    print(f"  ECT lower on {w.wins} of {w.n}, ties {w.ties}, worse {w.losses} (rate {w.rate:.3f})")
    print(f"  paired bootstrap mean diff (baseline - ECT) {d.mean_diff:.3f}, "
          f"95% CI [{d.low:.3f}, {d.high:.3f}] ({d.n_boot} resamples, seed 0)")
    print(f"  FAIL share baseline {chk['fail_share_baseline'].estimate:.3f} "
          f"[{chk['fail_share_baseline'].low:.3f}, {chk['fail_share_baseline'].high:.3f}], "
          f"ECT {chk['fail_share_ect'].estimate:.3f} "
          f"[{chk['fail_share_ect'].low:.3f}, {chk['fail_share_ect'].high:.3f}] (Wilson)")
    print(f"  McNemar FAIL/not FAIL: baseline-only {mc.a_only}, ECT-only {mc.b_only}, "
          f"{mc.method} p = {mc.pvalue:.4g}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
