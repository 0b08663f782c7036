"""The report: metrics per arm with 95% CIs over seeds, paired comparisons by item, the label
sweep, verdict shares, unscored counts; written as metrics.json, report.md and PNG plots, and
summarised in the terminal."""

from __future__ import annotations

import json
import math
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from ..files import write_json
from ..jsonio import missing
from ..plan import stages
from ..plan.model import Arm
from ..plan.records import read_record
from ..schema import lexicon_maps
from . import detect, inspectlog, plots, stats
from .bill import spent
from .reportdoc import COMPARISON_NOTE, Context, read_samples, write_documents  # noqa: F401  (COMPARISON_NOTE: docs quote it)
from .reportdoc import bounds_text as _bounds
from .reportdoc import interval_text as _interval
from .reportdoc import seeds_note as _seeds_note
from .reportdoc import value_text as _fmt


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


def rate_bounds(exp, metric: str, samples) -> tuple[float, float] | None:
    """(0, 1) where `metric` is a rate: the mean of a 0/1 quantity (every value it takes on the
    `samples` is a boolean); None otherwise. The one place that decides which intervals are
    clipped (`stats.clip`): the metric's cells, its sweep points and its paired differences
    (clipped to [-1, 1]) alike. The detector's tests of noise read the per-seed values, never
    these intervals, so clipping does not change what it flags."""
    spec = exp.metrics.METRICS[metric]
    if spec["aggregate"] != "mean":
        return None
    seen = False
    for s in samples:
        v = s["sample"]
        if any(v.get(m) is None for m in spec["needs"]) or not spec["where"](v):
            continue
        if not isinstance(spec["value"](v), (bool, np.bool_)):
            return None
        seen = True
    return (0.0, 1.0) if seen else None


def aggregate(kind: str, values: list[float]) -> float:
    if not values:
        return math.nan
    if kind == "sum":
        return float(np.sum(values))
    if kind == "count":
        return float(len(values))
    return float(np.mean(values))


def _ci(per_seed: list[float], bounds: tuple[float, float] | None = None) -> dict:
    """Mean over seeds with a 95% t-interval (clipped to `bounds`, a rate's [0, 1]). What cannot be estimated is None (null in
    metrics.json, which is strict JSON) with the reason in `note`: a seed with nothing scored
    (NaN from `aggregate`), no seed at all, or a single seed (no spread to estimate)."""
    finite = [x for x in per_seed if not math.isnan(x)]
    out: dict[str, Any] = {"mean": None, "low": None, "high": None, "n_seeds": len(finite),
                           "per_seed": [None if math.isnan(x) else x for x in per_seed]}
    if not finite:
        out["note"] = "no seed scored anything" if per_seed else "no seeds"
        return out
    notes = []
    if len(finite) < len(per_seed):
        notes.append(f"{len(per_seed) - len(finite)} of {len(per_seed)} seeds scored nothing")
    ci = stats.mean_ci(finite, bounds=bounds)
    out["mean"] = ci.estimate
    if len(finite) == 1:
        notes.append(_seeds_note(1))
    else:
        out["low"], out["high"] = ci.low, ci.high
    if notes:
        out["note"] = "; ".join(notes)
    return out


def stages_seconds(run, report_seconds: float) -> dict:
    """The run time of the stages behind the report's numbers: the seconds each stage of the
    run's graph took when it ran, in this session or an earlier one whose outputs this one
    reused (its record, stage.json, keeps them; for a record written before records kept
    seconds, the last session's stages.json), plus the report's own `report_seconds`. A stage
    resumed mid-way counts the session that finished it. What has no recorded time is named."""
    import json

    try:
        events = json.loads((run.folder / "stages.json").read_text())["events"]
        earlier = {e["stage"]: float(e["seconds"]) for e in events if e.get("status") == "ran" and e.get("seconds")}
    except (OSError, ValueError, KeyError, TypeError):
        earlier = {}
    total, timed, untimed = report_seconds, 1, []
    # the graph as its records stand (a folder such as the base model's depends on upstream outputs)
    for s in stages.walk(run.exp, run.shape, stages.recorded(run.folder, run.opts.runs_dir)):
        where = s.path(run.folder, run.opts.runs_dir)
        if s.kind == "report" or where is None:  # a hub model: nothing ran
            continue
        seconds = (read_record(where) or {}).get("seconds", earlier.get(s.name))
        if isinstance(seconds, (int, float)):
            total, timed = total + seconds, timed + 1
        else:
            untimed.append(s.name)
    return {"seconds": round(total, 1), "stages": timed, "untimed": untimed}


def stage_report(run, stage, elapsed: float) -> dict:
    """The report over the (judged) samples the run carries; `stage` is the graph's report stage."""
    exp = run.exp
    folder = run.folder
    arms = [exp.plan.arm(name) for name in run.shape.arms]
    eval_samples = run.carried.samples
    if run.reusable(stage.name, folder / stage.folder, stage.key).ok:
        import json

        run.log(stage.name, "reused")
        metrics = json.loads((folder / "metrics.json").read_text())
        _summary_table(run, metrics)
        run.write_stage_log(elapsed)
        return metrics
    t0 = time.perf_counter()
    metric_names = list(exp.metrics.METRICS)
    by: dict[tuple[str, int, str], list[dict]] = defaultdict(list)
    for (arm_name, seed), samples in eval_samples.items():
        for s in samples:
            by[(arm_name, seed, s["condition"])].append(s)

    result: dict[str, Any] = {"experiment": exp.name, "profile": run.profile_name, "seeds": run.seeds,
                              "arms": {}, "comparisons": [], "sweep": {}, "unscored": {}, "shares": {}}
    seed_items: dict[tuple[str, str, int], dict[int, float]] = {}
    everything = [s for samples in by.values() for s in samples]
    bounds = {m: rate_bounds(exp, m, everything) for m in metric_names}
    result["rates"] = [m for m in metric_names if bounds[m]]
    for arm in arms:
        cond = arm.main_condition
        result["arms"][arm.name] = {"condition": cond, "metrics": {}}
        for m in metric_names:
            agg = exp.metrics.METRICS[m]["aggregate"]
            per_seed, unscored = [], 0
            items: set[int] = set()
            for seed in run.seeds:
                values, n_unscored = metric_values(exp, m, by[(arm.name, seed, cond)])
                unscored += n_unscored
                per_seed.append(aggregate(agg, list(values.values())))
                seed_items[(arm.name, m, seed)] = values
                items.update(values)
            result["arms"][arm.name]["metrics"][m] = {**_ci(per_seed, bounds[m]), "n_items": len(items), "unscored": unscored}
        result["unscored"][arm.name] = _unscored(by, arm.name, run.seeds, cond)
        result["shares"][arm.name] = _verdict_shares(exp, by, arm.name, run.seeds, cond)

    for comp in exp.plan.evaluate.comparisons:
        for a, b in comp.pairs:
            if a not in result["arms"] or b not in result["arms"]:
                continue
            for m in comp.metrics:
                result["comparisons"].append(compare(a, b, m, seed_items, run.seeds, bounds=bounds[m]))

    sweep = run.profile.evaluation.sweep
    if sweep:
        for m in metric_names:
            agg = exp.metrics.METRICS[m]["aggregate"]
            series = {}
            for arm in arms:
                if arm.infer != "deploy":
                    continue
                points = []
                for v in sweep:
                    per_seed = [aggregate(agg, list(metric_values(exp, m, by[(arm.name, s, f"sweep={v}")])[0].values()))
                                for s in run.seeds]
                    points.append(_ci(per_seed, bounds[m]))
                series[arm.name] = points
            result["sweep"][m] = {"values": sweep, "series": series}

    result["agreement"] = _agreement(exp, eval_samples)
    result["claude"] = claude_bill(folder, run.events)
    ctx = Context.from_typed(exp.plan, run.profile_name, run.seeds, run.device, metric_names)
    result["warnings"] = label_warnings(ctx, result, eval_samples, exp.feedback, exp.metrics)
    result["training_notes"] = choice_notes(run)
    plot_files = _plots(run, result, arms)
    result["plots"] = plot_files
    result["elapsed_seconds"] = round(elapsed, 1)  # this session's, up to the report
    result["run_seconds"] = stages_seconds(run, time.perf_counter() - t0)
    write_json(folder / "metrics.json", result)
    write_documents(folder, ctx, result, eval_samples)
    logs = inspectlog.write_logs(folder, ctx, result, eval_samples)
    (folder / stage.folder).mkdir(parents=True, exist_ok=True)
    run.write.done(folder / stage.folder, stage)
    inspected = f", {len(logs)} Inspect logs in inspect/" if logs else " (no Inspect logs: inspect_ai not installed)"
    run.log(stage.name, "ran", f"{folder / 'report.md'}{inspected}", time.perf_counter() - t0)
    _summary_table(run, result)
    run.write_stage_log(elapsed)
    return result


def choice_notes(run) -> list[str]:
    """A choice the base model almost never gave at the start of RL (runtime/choices.py), as the
    training stages recorded it."""
    from ..plan import stages
    from ..plan.records import read_record
    from .choices import report_note

    records = [(arm.name, read_record(run.folder / stages.train_folder(arm.name, seed)) or {})
               for arm in stages.training_arms(run.exp.plan, run.shape.arms) for seed in run.seeds]
    note = report_note(records)
    return [note] if note else []


def claude_bill(folder: Path, events: list[dict]) -> dict:
    """Claude's calls by kind as estimated before the run (bill.json, written by `ectc run`) and
    as spent by this session's stages (their usage events)."""
    try:
        estimate = json.loads((folder / "bill.json").read_text())["estimate"]["claude"]
    except (OSError, ValueError, KeyError, TypeError):
        estimate = {}
    return {"estimate": estimate, "spent": spent(events)}


def reward_ideal(ctx: Context, feedback, metrics, sweep: dict, eval_samples: dict) -> dict[str, list]:
    """Per metric, what the reward asks for at each swept value: the metric over each item's
    reward-best response (the choices, or for free text every response the evaluation saw for
    the item; ties share). Only RL has a reward, and only metrics that read the response, the
    row, feedback terms and expression monitors, never a judge's verdict, can be computed for
    another response. `feedback` and `metrics` are the experiment's generated modules."""
    if ctx.method != "rl" or not sweep or not eval_samples:
        return {}
    judged = {m.name for m in ctx.monitors if m.type != "expr"}  # expression monitors recompute
    expr = [m.name for m in ctx.monitors if m.type == "expr"]
    axis = ctx.axis.name
    rows: dict[int, dict] = {}
    candidates: dict[int, set] = defaultdict(set)
    for samples in eval_samples.values():
        for s in samples:
            rows.setdefault(s["item"], s["sample"])
            candidates[s["item"]].add(s["response"])
    if ctx.response.type == "choice":
        candidates = defaultdict(set, {i: set(ctx.response.choices) for i in rows})
    out: dict[str, list] = {}
    for m, sw in sweep.items():
        spec = metrics.METRICS[m]
        if set(spec["needs"]) & judged:
            continue
        ideal = []
        for value in sw["values"]:
            per_item = []
            for item, row in rows.items():
                scored = []
                for response in sorted(candidates[item], key=str):
                    v = {**row, axis: value, "response": response}
                    v.update(feedback.feedback(v))
                    v.update({name: feedback.MONITORS[name](v) for name in expr})
                    scored.append((float(v["reward"]), v))
                best = max(r for r, _ in scored)
                tied = [v for r, v in scored if r == best]
                if spec["where"](tied[0]):
                    per_item.append(float(np.mean([float(spec["value"](v)) for v in tied])))
            ideal.append(aggregate(spec["aggregate"], per_item) if per_item else None)
        out[m] = [None if x is None or math.isnan(x) else x for x in ideal]
    return out


def label_warnings(ctx: Context, result: dict, eval_samples: dict, feedback=None, metrics=None) -> list[dict]:
    """The degenerate-label detector over the report's sweep (with the reward's ideal where the
    generated modules are given)."""
    ideal = reward_ideal(ctx, feedback, metrics, result["sweep"], eval_samples) if feedback and metrics else {}
    return [f.to_dict() for f in detect.detect_sweeps(ctx.axis, ctx.arms, result["sweep"], ideal)]


def render_folder(folder: Path, out: Path | None = None, generated: Path | None = None,
                  inspect: bool = False) -> Path:
    """report.md and report.html of a finished run folder, written to `out` (default: the run
    folder). A metrics.json from before the detector gets its warnings here; the reward's ideal
    needs the experiment's generated feedback.py and metrics.py (`generated`)."""
    import importlib.util
    import json

    raw = json.loads((folder / "plan.json").read_text())
    result = json.loads((folder / "metrics.json").read_text())
    info = raw.get("run", {})
    ctx = Context.from_plan(raw, info.get("profile", result.get("profile", "")),
                            info.get("seeds", result.get("seeds", [])), info.get("device", ""))
    samples = read_samples(folder)
    if "warnings" not in result or generated is not None:
        modules = []
        for name in ("feedback", "metrics") if generated is not None else ():
            spec = importlib.util.spec_from_file_location(f"ectc_report_{name}", generated / f"{name}.py")
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            modules.append(module)
        result["warnings"] = label_warnings(ctx, result, samples, *modules)
    out = out or folder
    write_documents(out, ctx, result, samples, plots_from=folder)
    if inspect:
        inspectlog.write_logs(out, ctx, result, samples)
    return out / "report.html"


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m ectc.runtime.report",
                                description="render report.md and report.html of a finished run folder")
    p.add_argument("run_folder", type=Path)
    p.add_argument("--out", type=Path, help="where to write them (default: the run folder)")
    p.add_argument("--generated", type=Path, help="generated/<experiment>/ of the run (for the reward's ideal)")
    p.add_argument("--inspect", action="store_true", help="write the Inspect logs too (inspect/)")
    args = p.parse_args(argv)
    print(render_folder(args.run_folder, args.out, args.generated, args.inspect))
    return 0


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
    for monitor in exp.plan.monitors:
        fields = [n for n, f in monitor.returns.items() if f.type == "enum"]
        if monitor.type == "lexicon":  # a verdict only where it declares a mapping
            fields, values = (["objectivity"] if lexicon_maps(monitor.settings) else []), ["PASS", "PARTIAL", "FAIL"]
        for f in fields:
            categories = values if monitor.type == "lexicon" else monitor.returns[f].values
            labels = [s["sample"][monitor.name][f] for seed in seeds for s in by[(arm, seed, cond)]
                      if s["sample"].get(monitor.name) is not None]
            if labels:
                out[f"{monitor.name}.{f}"] = stats.category_shares(labels, categories)
    return out


def _agreement(exp, eval_samples: dict) -> list[dict]:
    """Where two monitors score the same samples on a field of the same name: Spearman for
    numbers, Cohen's kappa for verdict categories."""
    monitors = [m.name for m in exp.plan.monitors]
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
                g = {"a": a, "b": b, "field": field, "n": len(xs)}
                if all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in xs + ys):
                    g["spearman"] = stats.spearman(xs, ys).rho
                elif all(isinstance(x, str) for x in xs + ys):
                    g["kappa"] = stats.cohen_kappa(xs, ys)
                else:
                    continue
                if missing(g.get("spearman", g.get("kappa"))):
                    g["note"] = "a monitor gave one value throughout: agreement undefined"
                out.append(g)
    return out


def compare(a: str, b: str, m: str, seed_items: dict, seeds: list[int], n_boot: int = 5000,
            bounds: tuple[float, float] | None = None) -> dict:
    """Arm ``a`` against arm ``b`` on metric ``m`` with matched seeds (a's seed k against b's seed k)
    on the items both scored; ``seed_items[(arm, m, seed)]`` maps item -> per-sample value.

    Seeds are the unit of replication (each is a separately trained model): the primary interval
    is the t-interval over per-seed paired differences, the second a hierarchical bootstrap, the
    test an exact sign-flip permutation test over seeds (binary and continuous metrics alike).
    `bounds`: the metric's range where known (`rate_bounds`); the t-interval of the difference
    is clipped to what a difference of such values can be."""
    scored = {arm: {i for s in seeds for i in seed_items[(arm, m, s)]} for arm in (a, b)}
    items = sorted(scored[a] & scored[b])
    out: dict[str, Any] = {"a": a, "b": b, "metric": m, "n_items": len(items)}
    # (seeds, items) matrices, NaN where an arm's seed has no value for the item
    grid = {arm: np.array([[seed_items[(arm, m, s)].get(i, np.nan) for i in items] for s in seeds],
                          dtype=float).reshape(len(seeds), len(items)) for arm in (a, b)}
    both = ~np.isnan(grid[a]) & ~np.isnan(grid[b])
    kept = both.any(axis=1)  # a seed where the arms share no item has no paired difference
    if not kept.any():
        out["note"] = "no item scored by both arms in any seed"
        return out
    va, vb = (np.where(both, grid[arm], np.nan)[kept] for arm in (a, b))
    used = [s for s, k in zip(seeds, kept) if k]
    t = stats.seed_paired_t(va, vb, bounds=bounds)
    boot = stats.hierarchical_bootstrap_diff(va, vb, n_boot=n_boot, seed=0)
    perm = stats.seed_sign_flip_test(va, vb)
    a_mean, b_mean = float(np.nanmean(va, axis=1).mean()), float(np.nanmean(vb, axis=1).mean())
    on_items = both[kept].any(axis=0)  # win/tie/loss on each item's seed-averaged values
    wins = stats.paired_win_rate(np.nanmean(va[:, on_items], axis=0), np.nanmean(vb[:, on_items], axis=0))
    out.update({"n_seeds": len(used), "seeds": used, "a_mean": a_mean, "b_mean": b_mean, "diff": t.estimate,
                "t_low": t.low, "t_high": t.high, "boot_low": boot.low, "boot_high": boot.high,
                "per_seed_diff": [float(x) for x in stats.per_seed_diffs(va, vb)],
                "permutation_p": perm.pvalue, "permutation_min_p": perm.min_pvalue,
                "relative_reduction": stats.relative_reduction(b_mean, a_mean),
                "a_lower": wins.wins, "ties": wins.ties, "a_higher": wins.losses})
    notes = []
    if len(used) < len(seeds):
        notes.append("seed(s) " + ", ".join(str(s) for s, k in zip(seeds, kept) if not k)
                     + " left out: no item scored by both arms")
    if len(used) == 1:
        notes.append("one seed: no seed-to-seed spread to estimate an interval or a p-value from")
    if notes:
        out["note"] = "; ".join(notes)
    return out


def _num(x: float | None) -> float:
    """A missing value as NaN, which matplotlib leaves undrawn."""
    return math.nan if x is None else x


def _plots(run, result: dict, arms: list[Arm]) -> list[str]:
    exp = run.exp
    folder = run.folder / "plots"
    files = []
    colour = plots.arm_colours([a.name for a in exp.plan.arms])  # one colour per arm in every plot
    for m, _spec in exp.metrics.METRICS.items():
        names = [a.name for a in arms]
        data = [result["arms"][n]["metrics"][m] for n in names]
        path = folder / f"{m}.png"
        plots.bar_with_ci(path, names, [_num(d["mean"]) for d in data], [_num(d["low"]) for d in data],
                          [_num(d["high"]) for d in data], title=f"{m} at the deployment label (95% CI over seeds)",
                          ylabel=m, colours=colour)
        files.append(str(path.relative_to(run.folder)))
    axis = exp.plan.axis
    for m, sw in result["sweep"].items():
        if not sw["series"]:
            continue
        series = {arm: ([_num(p["mean"]) for p in pts], [_num(p["low"]) for p in pts], [_num(p["high"]) for p in pts])
                  for arm, pts in sw["series"].items()}
        series_colour = {arm: colour[arm] for arm in series}
        for arm in arms:
            if arm.infer == "none":  # an unlabeled arm is flat across the sweep
                d = result["arms"][arm.name]["metrics"][m]
                n = len(sw["values"])
                series[f"{arm.name} (no label)"] = ([_num(d["mean"])] * n, [_num(d["low"])] * n, [_num(d["high"])] * n)
                series_colour[f"{arm.name} (no label)"] = colour[arm.name]
        if axis.type == "enum":
            shown = set(sw["values"])
            train = [v for v in axis.train_values if v in shown]
            holdout = [v for v in axis.holdout if v in shown]
        else:
            train = axis.train_range
            holdout = [(h[0], h[1]) for h in axis.holdout]
        path = folder / f"sweep_{m}.png"
        plots.dose_response(path, sw["values"], series, train_range=train, holdout_ranges=holdout,
                            deploy_value=axis.deploy, xlabel=f"{axis.name} in the evaluation label",
                            ylabel=m, title=f"{m} against the label value", colours=series_colour)
        files.append(str(path.relative_to(run.folder)))
    shares = {arm: s for arm, s in result["shares"].items() if s}
    fields = sorted({f for s in shares.values() for f in s})
    for f in fields:
        path = folder / f"shares_{f.replace('.', '_')}.png"
        plots.stacked_shares(path, list(shares), {arm: s.get(f, {}) for arm, s in shares.items()},
                             title=f"{f} at the deployment label")
        files.append(str(path.relative_to(run.folder)))
    return files


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
        table.add_row(arm, *[_interval(info["metrics"][m], digits=2) for m in exp.metrics.METRICS])
    run.console.print(table)
    for c in result["comparisons"]:
        if "diff" in c:
            run.console.print(f"  {c['a']} − {c['b']} on {c['metric']}: {c['diff']:+.3f} "
                              f"{_bounds(c['t_low'], c['t_high'], _seeds_note(c['n_seeds']))} (95% t over "
                              f"{c['n_seeds']} seed(s), {c['n_items']} items), sign-flip p "
                              f"{_fmt(c['permutation_p'], False, _seeds_note(c['n_seeds']))}"
                              + (f"; {c['note']}" if "note" in c else ""))
    for w in result.get("warnings", []):
        run.console.print(f"  warning [{w['kind']}] {w['message']}", markup=False, highlight=False)
    run.console.print(f"report: {run.folder / 'report.md'} and {run.folder / 'report.html'}")


if __name__ == "__main__":
    raise SystemExit(main())
