"""`ectc plan`, `ectc runs`, `ectc compare`: what a run would reuse, and what runs there are.

`plan` walks the stage graph `ectc run` walks (`ectc/plan/stages.py`, on the spec generated in
memory), settling each stage from the record the run folder holds instead of running it, so its
"reused"/"ran" is the runtime's. No torch.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from . import jsonio

PART_NAMES = {
    "dataset": "dataset.py", "data": "the data", "llm": "the LLM data mode", "model": "the model",
    "warmup": "the warm-up", "templates": "prompt templates", "profile_templates": "the profile's templates",
    "version": "the cache version", "config": "the training config", "base": "the base model",
    "seed": "the seed", "feedback": "feedback.py", "fb": "feedback.py", "scale": "--steps-scale",
    "probes": "the probes", "train": "the trained checkpoint", "arm": "the arm", "conditions":
    "the label conditions (deploy value, sweep)", "split": "the evaluation split", "samples": "the sample count",
    "generate": "generation settings", "monitors": "the monitors", "evals": "the evaluations",
    "rubrics": "the judges' rubrics", "expr": "the expression monitors (feedback.py)",
    "metrics": "metrics.py", "plan": "the evaluate block", "hf": "the model", "gguf": "the model file", "quantize": "quantization",
    "inputs": "the input files", "evaluation": "the evaluation's samples",
}


@dataclass
class StagePlan:
    stage: str
    status: str   # "reused" | "ran" | "skipped" (after a `require` the probes miss): what the run will do
    reason: str
    key: str
    kind: str = ""  # the stage's kind (plan/stages.KINDS)


def effect(plans: list[StagePlan]) -> str:
    """The run's cost in a few words: "re-judge only" when nothing but judging (and the report)
    runs, so no sample is generated again."""
    ran = {p.kind for p in plans if p.status == "ran"}
    if not ran:
        return "nothing to run"
    if ran <= {"judge", "report"} and "judge" in ran:
        return "re-judge only (no generation)"
    if ran == {"report"}:
        return "report only"
    return ""


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _stage_key(folder: Path) -> Optional[str]:
    data = _read_json(folder / "stage.json")
    return data.get("key") if isinstance(data, dict) else None


def _experiments(source: str):
    from .compile import compile_text
    from .generate import compile_in_memory

    spec, _ = compile_text(source)
    return compile_in_memory(spec, source)


def _shape(exp, profile, seeds, arms, steps_scale, root):
    from .plan import stages

    llm = "offline"
    if exp.plan.uses_llm_data:
        from .runtime.llm import data_mode  # imports no SDK: checks the key and the package

        llm = data_mode(exp.plan)
    return stages.shape(exp, profile, seeds, arms, steps_scale, llm, root)


def _previous_keys(folder: Path, exp_name: str, runs_dir: Path, root: Optional[Path]) -> dict[str, Any]:
    """The stages the previous run in `folder` computed, from its spec.ect and plan.json."""
    from .plan import stages

    try:
        old = _experiments((folder / "spec.ect").read_text()).get(exp_name)
    except Exception:  # noqa: BLE001 - an old or broken spec: no explanation, still a plan
        return {}
    run = (_read_json(folder / "plan.json") or {}).get("run") or {}
    if old is None:
        return {}
    try:
        shape = _shape(old, run.get("profile"), run.get("seeds"), None, run.get("steps_scale", 1.0), root)
        return stages.keys(old, shape, stages.recorded(folder, runs_dir))
    except Exception:  # noqa: BLE001
        return {}


def predict(source: str, runs_dir: Path, profile: Optional[str] = None, run_id: Optional[str] = None,
            seeds: Optional[int] = None, arms: Optional[list[str]] = None,
            steps_scale: float = 1.0, root: Optional[Path] = None) -> dict[str, tuple[Path, list[StagePlan]]]:
    """experiment -> (run folder, the stages in run order with what `ectc run` will do).
    `root`: the spec's folder (its data files and word lists are hashed into the keys)."""
    from .plan import stages
    from .plan.records import check, read_record

    out = {}
    for name, exp in _experiments(source).items():
        profile_name, _ = exp.plan.profile(profile)
        unknown = [a for a in arms or [] if a not in {x.name for x in exp.plan.arms}]
        if unknown:
            raise KeyError(f"unknown arm(s) {', '.join(unknown)}")
        folder = Path(runs_dir) / name / (run_id or profile_name)
        shape = _shape(exp, profile_name, seeds, arms, steps_scale, root)
        graph = stages.keys(exp, shape, stages.recorded(folder, Path(runs_dir)))
        previous = _previous_keys(folder, name, Path(runs_dir), root) if folder.exists() else {}
        plans = []
        stops = None  # a `require` the recorded probes miss: the run stops after them
        for stage in graph.values():
            if stops:
                plans.append(StagePlan(stage.name, "skipped", f"the run stops at the probes ({stops})",
                                       stage.key, stage.kind))
                continue
            where = stage.path(folder, Path(runs_dir))
            if where is None:
                plans.append(StagePlan(stage.name, "reused", "a hub model, loaded per arm", stage.key, stage.kind))
                continue
            found = check(where, stage.key)
            if stage.in_cache:  # the base model: cached by recipe, not per run
                if found.ok:
                    plans.append(StagePlan(stage.name, "reused", f"in the model cache ({stage.folder})", stage.key, stage.kind))
                elif found.redo:
                    plans.append(StagePlan(stage.name, "ran", f"redo: {found.reason} in the model cache", stage.key, stage.kind))
                else:
                    plans.append(StagePlan(stage.name, "ran", "not in the model cache: "
                                           + _why(stage, previous.get(stage.name), None, None), stage.key, stage.kind))
                continue
            have = _stage_key(where)
            if found.ok:
                stops = _require_stops(exp.plan, where) if stage.kind == "probes" else None
                plans.append(StagePlan(stage.name, "reused", found.reason + (f"; {stops}: the run stops here"
                                                                             if stops else ""), stage.key, stage.kind))
            elif not folder.exists():
                plans.append(StagePlan(stage.name, "ran", "no previous run", stage.key, stage.kind))
            elif have is None:
                plans.append(StagePlan(stage.name, "ran", "never finished here", stage.key, stage.kind))
            elif found.redo:
                plans.append(StagePlan(stage.name, "ran", f"redo: {found.reason}", stage.key, stage.kind))
            else:
                recorded = (read_record(where) or {}).get("parts")
                plans.append(StagePlan(stage.name, "ran", _why(stage, previous.get(stage.name), have, recorded),
                                       stage.key, stage.kind))
        out[name] = (folder, plans)
    return out


def _require_stops(plan, folder: Path) -> str | None:
    """A `require` the recorded probe values miss (the run will stop after the probes), or None."""
    import json

    try:
        values = json.loads((folder / "values.json").read_text())
        problems = [p for r in plan.evaluate.requires if (p := r.failure(values))]
    except (OSError, ValueError, KeyError):
        return None
    return "; ".join(problems) or None


def bills(source: str, runs_dir: Path, result: dict, profile: Optional[str] = None, seeds: Optional[int] = None,
          arms: Optional[list[str]] = None, steps_scale: float = 1.0, root: Optional[Path] = None) -> dict:
    """experiment -> (the bill of the stages `predict` says will run, its totals, how estimated)."""
    from .runtime import bill

    out = {}
    for name, exp in _experiments(source).items():
        profile_name, _ = exp.plan.profile(profile)
        shape = _shape(exp, profile_name, seeds, arms, steps_scale, root)
        graph = stages_of(exp, shape)
        will = {p.stage for p in result[name][1] if p.status == "ran"}
        facts = bill.gather(exp, shape, Path(runs_dir))
        lines = bill.estimate(exp, shape, [s for s in graph if s.name in will], facts)
        out[name] = (lines, bill.totals(lines), {"tokens": facts.token_how, "time": facts.time_how})
    return out


def stages_of(exp, shape) -> list:
    from .plan import stages

    return list(stages.keys(exp, shape).values())


def _why(stage, prev, have: Optional[str], recorded: Optional[dict]) -> str:
    """Which components of the key changed: against the ones the stage recorded when it ran, or
    else the ones recomputed from the previous run's spec.ect. An upstream stage that must run
    again is named as such: its output, part of this key, is only known once it has."""
    from .plan.records import OUTPUT_UNKNOWN

    if isinstance(recorded, dict):
        old = recorded
    elif prev is None:
        return "stage key changed" if have else "new"
    elif have is not None and prev.key != have:
        return "stage key changed (the previous run's key is not reproducible from its spec.ect)"
    else:
        old = prev.parts
    changed = [k for k in stage.parts if old.get(k) != stage.parts[k]]
    changed += [k for k in old if k not in stage.parts]
    rerun = [k for k in changed if stage.parts.get(k, "").startswith(OUTPUT_UNKNOWN)]
    if rerun and rerun == changed:
        return "re-runs because " + ", ".join(PART_NAMES.get(k, k) for k in rerun) + " re-run" + \
            ("s" if len(rerun) == 1 else "")
    words = [PART_NAMES.get(k, k) for k in changed]
    return "stage key changed because " + (", ".join(words) if words else "something") + " changed"


def main_plan(args) -> int:
    from .errors import CompileError

    try:
        source = Path(args.spec).read_text()
    except OSError as exc:
        sys.stderr.write(f"error: cannot read {args.spec}: {exc.strerror}\n")
        return 1
    try:
        result = predict(source, Path(args.runs_dir), args.profile, args.run_id, args.seeds,
                         args.arms.split(",") if args.arms else None, args.steps_scale,
                         root=Path(args.spec).parent)
    except CompileError as err:
        sys.stderr.write(err.render(source, args.spec) + "\n")
        return 1
    except KeyError as exc:
        sys.stderr.write(f"error: {exc.args[0]}\n")
        return 1
    sha = hashlib.sha256(source.encode()).hexdigest()
    stale = [name for name in result
             if (_read_json(Path(args.generated) / name / "manifest.json") or {}).get("spec_sha256") != sha]
    billed = {}
    if getattr(args, "calibrate", False):
        from rich.console import Console

        from .runtime.calibrate import calibrate

        if stale:
            sys.stderr.write(f"error: --calibrate runs {args.generated}/, which is missing or stale: run `ectc build` first\n")
            return 1
        calibrate(Path(args.spec), Path(args.generated), Path(args.runs_dir), args.profile,
                  Console(stderr=True, highlight=False))
    if getattr(args, "bill", True):
        billed = bills(source, Path(args.runs_dir), result, args.profile, args.seeds,
                       args.arms.split(",") if args.arms else None, args.steps_scale, root=Path(args.spec).parent)
    if args.json:
        out = {name: {"folder": str(folder), "stages": [p.__dict__ for p in plans], "effect": effect(plans),
                      "generated_stale": name in stale}
               for name, (folder, plans) in result.items()}
        for name, (lines, total, how) in billed.items():
            out[name]["bill"] = {"stages": [b.to_json() for b in lines], "totals": total, "estimated": how}
        sys.stdout.write(jsonio.dumps(out, indent=1) + "\n")
        return 0
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False)
    for name, (folder, plans) in result.items():
        table = Table(title=f"{name} · {folder}", title_justify="left")
        table.add_column("stage")
        table.add_column("will")
        table.add_column("why")
        for p in plans:
            table.add_row(p.stage, {"reused": "[cyan]reuse[/]", "ran": "[green]run[/]"}.get(p.status, "[yellow]skip[/]"),
                          p.reason)
        console.print(table)
        n = sum(p.status == "ran" for p in plans)
        reused = sum(p.status == "reused" for p in plans)
        skipped = len(plans) - n - reused
        summary = effect(plans)
        console.print(f"{n} stage(s) to run, {reused} reused" + (f", {skipped} skipped (a `require` fails)" if skipped else "")
                      + (f": {summary}" if summary else ""))
        if name in billed:
            print_bill(console, *billed[name])
        if name in stale:
            console.print(f"[yellow]note:[/] {args.generated}/{name}/ is missing or stale for {args.spec}: "
                          "`ectc run` needs `ectc build` first (this plan assumes it)")
    return 0


def _usd(x: Optional[float]) -> str:
    return "unknown price" if x is None else f"${x:,.2f}"


def _duration(seconds: Optional[float]) -> str:
    if seconds is None:
        return "?"
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def print_bill(console, lines, total: dict, how: dict) -> None:
    """The bill as a table: the work of each stage that runs, Claude calls and cost, time."""
    from rich.table import Table

    if not lines:
        return
    table = Table(title="the bill", title_justify="left")
    for col in ("stage", "work", "Claude calls", "input tokens", "cost (at most)", "time"):
        table.add_column(col, justify="right" if col in ("Claude calls", "input tokens", "time") else "left")
    for b in lines:
        c = b.calls
        table.add_row(b.stage, b.work, f"{c.calls:,}" if c else "", f"~{c.input_tokens:,}" if c else "",
                      f"{_usd(c.cost())} ({c.model})" if c else "", _duration(b.seconds) if b.units and b.kind in ("train", "evaluate") else "")
    console.print(table)
    cost = _usd(total["cost_usd"]) + (f" (unknown price: {', '.join(total['unknown_price'])})"
                                       if total["unknown_price"] else "")
    console.print(f"total: {total['train_steps']:,} training steps, {total['samples']:,} samples, "
                  f"{total['calls']:,} Claude calls, ~{total['input_tokens']:,} input tokens and at most "
                  f"{total['output_tokens']:,} output tokens, {cost} at most; training and evaluation "
                  f"time {_duration(total['seconds'])}")
    console.print(f"[dim]tokens: {how['tokens'] or 'no Claude calls'}; time: {how['time']}[/]")


# ---- runs and compare ------------------------------------------------------------------


def find_runs(runs_dir: Path) -> list[Path]:
    return sorted(p.parent for p in Path(runs_dir).glob("*/*/manifest.json") if not p.parent.name.startswith("."))


def run_info(folder: Path) -> dict:
    plan = _read_json(folder / "plan.json") or {}
    run = plan.get("run") or {}
    metrics = _read_json(folder / "metrics.json")
    spec = folder / "spec.ect"
    sha = hashlib.sha256(spec.read_bytes()).hexdigest() if spec.exists() else None
    stamp = None
    for p in (folder / "stages.json", folder / "metrics.json", folder / "plan.json"):
        if p.exists():
            stamp = time.strftime("%Y-%m-%d %H:%M", time.localtime(p.stat().st_mtime))
            break
    return {"run": f"{folder.parent.name}/{folder.name}", "folder": str(folder), "spec_sha256": sha,
            "profile": run.get("profile"), "seeds": run.get("seeds"), "steps_scale": run.get("steps_scale"),
            "date": stamp, "headline": headline(metrics) if metrics else None, "complete": metrics is not None}


def _f(x: Any) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{x:.3g}"


def headline(metrics: dict) -> str:
    """The primary metric (the first compared one) arm by arm, and the first comparison with its CI:
    `sycophancy: baseline 1, ect 0.42, ...; ect−shuffled -0.3 [-0.4, -0.2]`."""
    arms = metrics.get("arms") or {}
    if not arms:
        return ""
    comps = metrics.get("comparisons") or []
    first = comps[0]["metric"] if comps else next(iter(next(iter(arms.values()))["metrics"]), None)
    if first is None:
        return ""
    text = f"{first}: " + ", ".join(f"{a} {_f(v['metrics'].get(first, {}).get('mean'))}" for a, v in arms.items())
    if comps:
        c = comps[0]
        text += f"; {c['a']}−{c['b']} {_ci(c.get('diff'), _comparison_ci(c))}"
    return text


def main_runs(args) -> int:
    runs = [run_info(f) for f in find_runs(Path(args.runs_dir))]
    if args.json:
        sys.stdout.write(jsonio.dumps(runs, indent=1) + "\n")
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table()
    for col in ("run", "spec", "profile", "seeds", "scale", "date", "headline"):
        table.add_column(col)
    for r in runs:
        table.add_row(r["run"], (r["spec_sha256"] or "")[:12], r["profile"] or "", str(len(r["seeds"] or [])),
                      str(r["steps_scale"] if r["steps_scale"] is not None else ""), r["date"] or "",
                      r["headline"] if r["complete"] else "[yellow](incomplete)[/]")
    Console(highlight=False).print(table)
    if not runs:
        print(f"no runs under {args.runs_dir}/")
    return 0


def _resolve_run(arg: str, runs_dir: Path) -> Path:
    p = Path(arg)
    if (p / "manifest.json").exists() or (p / "metrics.json").exists():
        return p
    q = Path(runs_dir) / arg
    if (q / "manifest.json").exists() or (q / "metrics.json").exists():
        return q
    raise FileNotFoundError(f"no run at {arg} (nor {q})")


def compare_metrics(a: dict, b: dict) -> list[dict]:
    """Per arm and metric: A's and B's mean with their CIs, and B - A."""
    rows = []
    for arm in dict.fromkeys([*(a.get("arms") or {}), *(b.get("arms") or {})]):
        am = ((a.get("arms") or {}).get(arm) or {}).get("metrics") or {}
        bm = ((b.get("arms") or {}).get(arm) or {}).get("metrics") or {}
        for m in dict.fromkeys([*am, *bm]):
            x, y = am.get(m) or {}, bm.get(m) or {}
            xa, ya = x.get("mean"), y.get("mean")
            delta = None
            if isinstance(xa, (int, float)) and isinstance(ya, (int, float)) and not (math.isnan(xa) or math.isnan(ya)):
                delta = ya - xa
            rows.append({"arm": arm, "metric": m, "a": xa, "a_ci": [x.get("low"), x.get("high")],
                         "b": ya, "b_ci": [y.get("low"), y.get("high")], "delta": delta})
    return rows


def _comparison_ci(c: dict) -> list:
    """A comparison's primary interval, the t over seeds. Runs written before it had only an item
    bootstrap ("low"/"high") that ignored seed variance: they show the difference alone."""
    return [c.get("t_low"), c.get("t_high")]


def _ci(mean: Any, ci: list) -> str:
    if mean is None:
        return "—"
    lo, hi = ci
    if lo is None or (isinstance(lo, float) and math.isnan(lo)):
        return _f(mean)
    return f"{_f(mean)} [{_f(lo)}, {_f(hi)}]"


def main_compare(args) -> int:
    from .diff import diff_sources, render_text
    from .errors import CompileError

    try:
        fa, fb = _resolve_run(args.run_a, Path(args.runs_dir)), _resolve_run(args.run_b, Path(args.runs_dir))
    except FileNotFoundError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 1
    ma, mb = _read_json(fa / "metrics.json"), _read_json(fb / "metrics.json")
    rows = compare_metrics(ma or {}, mb or {})
    spec_diff = None
    try:
        spec_diff = diff_sources((fa / "spec.ect").read_text(), (fb / "spec.ect").read_text(),
                                 f"{fa}/spec.ect", f"{fb}/spec.ect")
    except (OSError, CompileError) as exc:
        sys.stderr.write(f"warning: no spec diff: {exc}\n")
    comps = {"a": (ma or {}).get("comparisons", []), "b": (mb or {}).get("comparisons", [])}
    if args.json:
        sys.stdout.write(jsonio.dumps({"a": str(fa), "b": str(fb), "metrics": rows, "comparisons": comps,
                                     "spec_diff": spec_diff.to_json() if spec_diff else None},
                                    indent=1, default=str) + "\n")
        return 0
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False)
    if ma is None or mb is None:
        console.print(f"[yellow]warning:[/] {'A' if ma is None else 'B'} has no metrics.json (incomplete run)")
    table = Table(title=f"A = {fa}   B = {fb}", title_justify="left")
    for col in ("arm", "metric", "A (95% CI)", "B (95% CI)", "B − A"):
        table.add_column(col)
    for r in rows:
        d = r["delta"]
        table.add_row(r["arm"], r["metric"], _ci(r["a"], r["a_ci"]), _ci(r["b"], r["b_ci"]),
                      "—" if d is None else f"{d:+.3g}")
    console.print(table)
    cmp_rows = []
    for side in ("a", "b"):
        for c in comps[side]:
            cmp_rows.append((side.upper(), f"{c['a']} vs {c['b']}", c["metric"], _ci(c.get("diff"), _comparison_ci(c))))
    if cmp_rows:
        t2 = Table(title="within-run comparisons (difference, 95% CI)", title_justify="left")
        for col in ("run", "pair", "metric", "diff"):
            t2.add_column(col)
        for row in cmp_rows:
            t2.add_row(*row)
        console.print(t2)
    if spec_diff is not None:
        sys.stdout.write("\n" + render_text(spec_diff))
    return 0
