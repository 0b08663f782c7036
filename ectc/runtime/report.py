"""The report: metrics per arm with 95% CIs over seeds, paired comparisons by item, the label
sweep, verdict shares, unscored counts; written as metrics.json, report.md and PNG plots, and
summarised in the terminal."""

from __future__ import annotations

import math
import time
from collections import defaultdict
from typing import Any

import numpy as np

from . import plots, stats
from .experiment import Arm, json_hash


def main_condition(arm: Arm) -> str:
    return {"none": "none", "true": "true"}.get(arm.infer, "deploy")


def metric_values(exp, metric: str, samples: list[dict]) -> tuple[dict[int, float], int]:
    """Per-item values of one metric over one arm/seed/condition, and how many were unscored."""
    spec = exp.metrics.METRICS[metric]
    values: dict[int, float] = {}
    unscored = 0
    for s in samples:
        v = s["sample"]
        if any(v.get(m) is None for m in spec["needs"]):
            unscored += 1
            continue
        if spec["where"](v):
            values[s["item"]] = float(spec["value"](v))
    return values, unscored


def aggregate(kind: str, values: list[float]) -> float:
    if not values:
        return math.nan
    if kind == "sum":
        return float(np.sum(values))
    if kind == "count":
        return float(len(values))
    return float(np.mean(values))


def _ci(per_seed: list[float]) -> dict:
    finite = [x for x in per_seed if not math.isnan(x)]
    if not finite:
        return {"mean": math.nan, "low": math.nan, "high": math.nan, "n_seeds": 0, "per_seed": per_seed}
    ci = stats.mean_ci(finite)
    return {"mean": ci.estimate, "low": ci.low, "high": ci.high, "n_seeds": len(finite), "per_seed": per_seed}


def _fmt(x: float, pct: bool) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{x:.1%}" if pct else f"{x:.3g}"


def stage_report(run, arms: list[Arm], eval_samples: dict, eval_outs: dict, elapsed: float) -> dict:
    """`eval_outs`: (arm, seed) -> the output hash of that evaluation's samples."""
    from .keys import components, report_parts
    from .run import write_json, atomic_write_text, mark_done

    exp = run.exp
    folder = run.folder
    parts = report_parts(exp, eval_outs)
    key = json_hash(parts)
    if run.reusable("report", folder / "report", key).ok:
        import json

        run.log("report", "reused")
        metrics = json.loads((folder / "metrics.json").read_text())
        _summary_table(run, metrics)
        _write_stage_log(run, elapsed)
        return metrics
    t0 = time.perf_counter()
    metric_names = list(exp.metrics.METRICS)
    by: dict[tuple[str, int, str], list[dict]] = defaultdict(list)
    for (arm_name, seed), samples in eval_samples.items():
        for s in samples:
            by[(arm_name, seed, s["condition"])].append(s)

    result: dict[str, Any] = {"experiment": exp.name, "profile": run.profile_name, "seeds": run.seeds,
                              "arms": {}, "comparisons": [], "sweep": {}, "unscored": {}, "shares": {}}
    item_values: dict[tuple[str, str], dict[int, list[float]]] = {}
    seed_items: dict[tuple[str, str, int], dict[int, float]] = {}
    for arm in arms:
        cond = main_condition(arm)
        result["arms"][arm.name] = {"condition": cond, "metrics": {}}
        for m in metric_names:
            agg = exp.metrics.METRICS[m]["aggregate"]
            per_seed, unscored = [], 0
            items: dict[int, list[float]] = defaultdict(list)
            for seed in run.seeds:
                values, n_unscored = metric_values(exp, m, by[(arm.name, seed, cond)])
                unscored += n_unscored
                per_seed.append(aggregate(agg, list(values.values())))
                seed_items[(arm.name, m, seed)] = values
                for item, v in values.items():
                    items[item].append(v)
            item_values[(arm.name, m)] = items
            result["arms"][arm.name]["metrics"][m] = {**_ci(per_seed), "n_items": len(items), "unscored": unscored}
        result["unscored"][arm.name] = _unscored(by, arm.name, run.seeds, cond)
        result["shares"][arm.name] = _verdict_shares(exp, by, arm.name, run.seeds, cond)

    for comp in exp.plan["evaluate"]["comparisons"]:
        for a, b in comp["pairs"]:
            if a not in result["arms"] or b not in result["arms"]:
                continue
            for m in comp["metrics"]:
                result["comparisons"].append(_compare(exp, a, b, m, item_values, seed_items, run.seeds))

    sweep = exp.plan["evaluate"].get("sweep")
    if sweep:
        for m in metric_names:
            agg = exp.metrics.METRICS[m]["aggregate"]
            series = {}
            for arm in arms:
                if arm.infer != "deploy":
                    continue
                points = []
                for v in sweep["values"]:
                    per_seed = [aggregate(agg, list(metric_values(exp, m, by[(arm.name, s, f"sweep={v}")])[0].values()))
                                for s in run.seeds]
                    points.append(_ci(per_seed))
                series[arm.name] = points
            result["sweep"][m] = {"values": sweep["values"], "series": series}

    result["agreement"] = _agreement(exp, eval_samples)
    plot_files = _plots(run, result, arms)
    result["plots"] = plot_files
    result["elapsed_seconds"] = round(elapsed, 1)
    write_json(folder / "metrics.json", result)
    atomic_write_text(folder / "report.md", _markdown(run, result, eval_samples))
    (folder / "report").mkdir(parents=True, exist_ok=True)
    mark_done(folder / "report", key, ["../metrics.json", "../report.md"], parts=components(parts))
    run.log("report", "ran", f"{folder / 'report.md'}", time.perf_counter() - t0)
    _summary_table(run, result)
    _write_stage_log(run, elapsed)
    return result


def _write_stage_log(run, elapsed: float) -> None:
    from .run import write_json

    write_json(run.folder / "stages.json", {"events": run.events, "elapsed_seconds": round(elapsed, 1)})


def _unscored(by, arm: str, seeds: list[int], cond: str) -> dict:
    counts: dict[str, dict] = {}
    for seed in seeds:
        for s in by[(arm, seed, cond)]:
            for name, info in s.get("monitors", {}).items():
                c = counts.setdefault(name, {"scored": 0, "unscored": 0, "reasons": {}})
                if info.get("scored"):
                    c["scored"] += 1
                else:
                    c["unscored"] += 1
                    reason = str(info.get("reason", "unknown")).split(":")[0]
                    c["reasons"][reason] = c["reasons"].get(reason, 0) + 1
    return counts


def _verdict_shares(exp, by, arm: str, seeds: list[int], cond: str) -> dict:
    out = {}
    for monitor in exp.plan["monitors"]:
        fields = [n for n, f in monitor["returns"].items() if f["type"] == "enum"]
        if monitor["type"] == "lexicon":
            fields, values = ["objectivity"], ["PASS", "PARTIAL", "FAIL"]
        for f in fields:
            categories = values if monitor["type"] == "lexicon" else monitor["returns"][f]["values"]
            labels = [s["sample"][monitor["name"]][f] for seed in seeds for s in by[(arm, seed, cond)]
                      if s["sample"].get(monitor["name"]) is not None]
            if labels:
                out[f"{monitor['name']}.{f}"] = stats.category_shares(labels, categories)
    return out


def _agreement(exp, eval_samples: dict) -> list[dict]:
    """Where two monitors score the same samples on a field of the same name: Spearman for
    numbers, Cohen's kappa for verdict categories."""
    monitors = [m["name"] for m in exp.plan["monitors"]]
    out = []
    for i, a in enumerate(monitors):
        for b in monitors[i + 1:]:
            pairs: dict[str, list[tuple]] = defaultdict(list)
            for samples in eval_samples.values():
                for s in samples:
                    va, vb = s["sample"].get(a), s["sample"].get(b)
                    if isinstance(va, dict) and isinstance(vb, dict):
                        for field in set(va) & set(vb):
                            pairs[field].append((va[field], vb[field]))
            for field, values in sorted(pairs.items()):
                xs, ys = [x for x, _ in values], [y for _, y in values]
                if all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in xs + ys):
                    rho = stats.spearman(xs, ys)
                    out.append({"a": a, "b": b, "field": field, "n": len(xs), "spearman": rho.rho})
                elif all(isinstance(x, str) for x in xs + ys):
                    out.append({"a": a, "b": b, "field": field, "n": len(xs), "kappa": stats.cohen_kappa(xs, ys)})
    return out


def _compare(exp, a: str, b: str, m: str, item_values, seed_items, seeds) -> dict:
    ia, ib = item_values[(a, m)], item_values[(b, m)]
    common = sorted(set(ia) & set(ib))
    out: dict[str, Any] = {"a": a, "b": b, "metric": m, "n_items": len(common)}
    if len(common) < 2:
        return out
    va = np.array([np.mean(ia[i]) for i in common])
    vb = np.array([np.mean(ib[i]) for i in common])
    diff = stats.paired_bootstrap_diff(va, vb, n_boot=5000, seed=0)
    wins = stats.paired_win_rate(va, vb, lower_is_better=True)
    out.update({"a_mean": diff.a_mean, "b_mean": diff.b_mean, "diff": diff.mean_diff, "low": diff.low,
                "high": diff.high, "relative_reduction": stats.relative_reduction(diff.b_mean, diff.a_mean),
                "a_lower": wins.wins, "ties": wins.ties, "a_higher": wins.losses})
    # Binary per-sample values: McNemar over (item, seed) pairs, which are paired by design.
    pairs = [(seed_items[(a, m, s)][i], seed_items[(b, m, s)][i]) for s in seeds
             for i in common if i in seed_items[(a, m, s)] and i in seed_items[(b, m, s)]]
    if pairs and all(x in (0.0, 1.0) and y in (0.0, 1.0) for x, y in pairs):
        mc = stats.mcnemar([bool(x) for x, _ in pairs], [bool(y) for _, y in pairs])
        out["mcnemar"] = {"a_only": mc.a_only, "b_only": mc.b_only, "pvalue": mc.pvalue, "method": mc.method}
    return out


def _plots(run, result: dict, arms: list[Arm]) -> list[str]:
    exp = run.exp
    folder = run.folder / "plots"
    files = []
    for m, _spec in exp.metrics.METRICS.items():
        names = [a.name for a in arms]
        data = [result["arms"][n]["metrics"][m] for n in names]
        path = folder / f"{m}.png"
        plots.bar_with_ci(path, names, [d["mean"] for d in data], [d["low"] for d in data],
                          [d["high"] for d in data], title=f"{m} at the deployment label (95% CI over seeds)",
                          ylabel=m)
        files.append(str(path.relative_to(run.folder)))
    axis = exp.axis
    for m, sw in result["sweep"].items():
        if not sw["series"]:
            continue
        series = {arm: ([p["mean"] for p in pts], [p["low"] for p in pts], [p["high"] for p in pts])
                  for arm, pts in sw["series"].items()}
        for arm in arms:
            if arm.infer == "none":  # an unlabeled arm is flat across the sweep
                d = result["arms"][arm.name]["metrics"][m]
                n = len(sw["values"])
                series[f"{arm.name} (no label)"] = ([d["mean"]] * n, [d["low"]] * n, [d["high"]] * n)
        if axis["type"] == "enum":
            shown = set(sw["values"])
            train = [v for v in axis["train_values"] if v in shown]
            holdout = [v for v in axis["holdout"] if v in shown]
        else:
            t = axis["train"]
            train = tuple(t["args"][:2]) if isinstance(t, dict) else (t, t)
            holdout = [(h[0], h[1]) for h in axis["holdout"]]
        path = folder / f"sweep_{m}.png"
        plots.dose_response(path, sw["values"], series, train_range=train, holdout_ranges=holdout,
                            deploy_value=axis["deploy"], xlabel=f"{axis['name']} in the evaluation label",
                            ylabel=m, title=f"{m} against the label value")
        files.append(str(path.relative_to(run.folder)))
    shares = {arm: s for arm, s in result["shares"].items() if s}
    fields = sorted({f for s in shares.values() for f in s})
    for f in fields:
        path = folder / f"shares_{f.replace('.', '_')}.png"
        plots.stacked_shares(path, list(shares), {arm: s.get(f, {}) for arm, s in shares.items()},
                             title=f"{f} at the deployment label")
        files.append(str(path.relative_to(run.folder)))
    return files


def _markdown(run, result: dict, eval_samples: dict) -> str:
    exp = run.exp
    axis = exp.axis
    lines = [f"# {exp.name}: ECT report", "",
             f"{exp.plan['description']}", "",
             f"- profile `{run.profile_name}`, seeds {run.seeds}, device {run.device}",
             f"- deployment label: `{axis['name']} = {axis['deploy']}` (held out of training)",
             f"- spec sha256 `{exp.plan['spec_sha256'][:16]}`, run time {result['elapsed_seconds']} s", "",
             "## Metrics at the deployment label", "",
             "Mean over seeds with a 95% t-interval over seeds; `n` is the number of items.", ""]
    metric_names = list(exp.metrics.METRICS)
    lines.append("| arm | asked with | " + " | ".join(metric_names) + " |")
    lines.append("|---|---|" + "---|" * len(metric_names))
    for arm, info in result["arms"].items():
        cells = []
        for m in metric_names:
            d = info["metrics"][m]
            cells.append(f"{d['mean']:.3f} [{d['low']:.3f}, {d['high']:.3f}] (n={d['n_items']})"
                         if not math.isnan(d["mean"]) else "n/a")
        asked = {"none": "no label", "deploy": "deployment label", "true": "true label"}[info["condition"]]
        lines.append(f"| {arm} | {asked} | " + " | ".join(cells) + " |")
    if result["comparisons"]:
        lines += ["", "## Paired comparisons (by item)", "",
                  "Difference a − b of per-item means (averaged over seeds), paired bootstrap 95% CI; "
                  "relative reduction = 1 − a/b; McNemar over (item, seed) pairs for binary metrics.", "",
                  "| a vs b | metric | a | b | a − b [95% CI] | reduction | a lower / tie / higher | McNemar p |",
                  "|---|---|---|---|---|---|---|---|"]
        for c in result["comparisons"]:
            if "diff" not in c:
                lines.append(f"| {c['a']} vs {c['b']} | {c['metric']} | n/a | n/a | too few items | | | |")
                continue
            mc = c.get("mcnemar")
            lines.append(f"| {c['a']} vs {c['b']} | {c['metric']} | {c['a_mean']:.3f} | {c['b_mean']:.3f} | "
                         f"{c['diff']:+.3f} [{c['low']:+.3f}, {c['high']:+.3f}] | {c['relative_reduction']:.1%} | "
                         f"{c['a_lower']} / {c['ties']} / {c['a_higher']} | "
                         + (f"{mc['pvalue']:.3g} |" if mc else " |"))
    if result["sweep"]:
        lines += ["", "## Label sweep", ""]
        for m, sw in result["sweep"].items():
            if not sw["series"]:
                continue
            lines.append(f"### {m}")
            lines.append("")
            lines.append(f"| {axis['name']} | " + " | ".join(sw["series"]) + " |")
            lines.append("|---|" + "---|" * len(sw["series"]))
            for i, v in enumerate(sw["values"]):
                held = " (held out)" if _held_out(axis, v) else ""
                lines.append(f"| {v}{held} | " + " | ".join(
                    f"{pts[i]['mean']:.3f}" if not math.isnan(pts[i]["mean"]) else "n/a"
                    for pts in sw["series"].values()) + " |")
            lines.append("")
    shares = {a: s for a, s in result["shares"].items() if s}
    if shares:
        lines += ["## Verdict shares at the deployment label", ""]
        for arm, s in shares.items():
            lines.append(f"- **{arm}**: " + "; ".join(
                f"{f}: " + ", ".join(f"{k} {v:.0%}" for k, v in d.items()) for f, d in s.items()))
        lines.append("")
    unscored = {a: u for a, u in result["unscored"].items() if any(c["unscored"] for c in u.values())}
    if unscored:
        lines += ["## Unscored verdicts", "", "Never given a default score; counted here per arm.", ""]
        for arm, u in unscored.items():
            for name, c in u.items():
                if c["unscored"]:
                    lines.append(f"- {arm} / {name}: {c['unscored']} unscored of {c['scored'] + c['unscored']} "
                                 f"({', '.join(f'{k}: {v}' for k, v in c['reasons'].items())})")
        lines.append("")
    if result.get("agreement"):
        lines += ["## Agreement between monitors (same samples)", ""]
        for g in result["agreement"]:
            measure = (f"Spearman {g['spearman']:.3f}" if "spearman" in g else f"Cohen's kappa {g['kappa']:.3f}")
            lines.append(f"- {g['a']} vs {g['b']} on `{g['field']}`: {measure} over {g['n']} samples")
        lines.append("")
    examples = _examples(exp, eval_samples)
    if examples:
        lines += ["## Example outputs at the deployment label (same item, side by side)", ""] + examples
    lines += ["", "## Plots", ""] + [f"![{p}]({p})" for p in result["plots"]] + [""]
    return "\n".join(lines)


def _held_out(axis: dict, value: Any) -> bool:
    if axis["type"] == "enum":
        return value in axis["holdout"]
    for lo, hi, lc, hc in axis["holdout"]:
        if (value > lo or (lc and value == lo)) and (value < hi or (hc and value == hi)):
            return True
    return False


def _examples(exp, eval_samples: dict, count: int = 2) -> list[str]:
    if exp.plan["response"]["type"] != "text":
        return []
    firsts: dict[str, dict[int, dict]] = {}
    for (arm, seed), samples in eval_samples.items():
        if seed != min(s for (_, s) in eval_samples):
            continue
        for s in samples:
            if s["condition"] in ("deploy", "none", "true"):
                firsts.setdefault(arm, {})[s["item"]] = s
    if not firsts:
        return []
    items = sorted(set.intersection(*(set(v) for v in firsts.values())))[:count]
    out = []
    for item in items:
        out.append(f"### item {item}")
        out.append("")
        for arm, samples in firsts.items():
            text = str(samples[item]["response"]).strip().replace("\n", " ")
            out.append(f"- **{arm}**: {text[-600:]}")
        out.append("")
    return out


def _summary_table(run, result: dict) -> None:
    if run.opts.quiet:
        return
    from rich.table import Table

    exp = run.exp
    table = Table(title=f"{exp.name} at the deployment label (mean [95% CI over {len(run.seeds)} seed(s)])")
    table.add_column("arm")
    for m in exp.metrics.METRICS:
        table.add_column(m, justify="right")
    for arm, info in result["arms"].items():
        table.add_row(arm, *[
            "n/a" if math.isnan(d["mean"]) else
            f"{d['mean']:.3f} [{d['low']:.2f}, {d['high']:.2f}]" if not math.isnan(d["low"]) else f"{d['mean']:.3f}"
            for d in (info["metrics"][m] for m in exp.metrics.METRICS)])
    run.console.print(table)
    for c in result["comparisons"]:
        if "diff" in c:
            run.console.print(f"  {c['a']} − {c['b']} on {c['metric']}: {c['diff']:+.3f} "
                              f"[{c['low']:+.3f}, {c['high']:+.3f}] over {c['n_items']} items")
    run.console.print(f"report: {run.folder / 'report.md'}")
