"""The report's documents: one function computes what the report says (`report_data`), two
jinja2 templates lay it out (`report.md.j2`, `report.html.j2` in ectc/templates/).

Everything here reads the run's plan as the JSON data plan.json holds, the metrics the report
stage computed (metrics.json) and the judged samples, so a finished run folder can be rendered
again on its own (`render_folder`). report.html is self-contained: the plots are embedded as PNG
data, the samples as JSON read by a few lines of inline script; no network. The samples are
model output: the HTML template autoescapes, the JSON is escaped for a <script> element by
jinja2's `tojson`, and the script writes text with `textContent` only.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..files import atomic_write_text, read_jsonl
from ..jsonio import missing
from ..plan.model import Arm, Axis, Monitor, Response

TEMPLATES_DIR = Path(__file__).resolve().parent.parent / "templates"
# The sample browser embeds whole items (every arm, seed and label condition of an item) until
# their JSON reaches this size; the page says how many items it shows.
BROWSER_BYTES = 3_000_000

# What report.md says about the comparison figures (docs quote it; keep them in step).
COMPARISON_NOTE = (
    "a − b is the mean over seeds of each seed's paired difference (arm a's model of seed k against "
    "arm b's model of seed k, on the items both scored). Seeds are the unit of replication, since each "
    "seed is a separately trained model, and items vary too: the primary 95% CI is a t-interval over "
    "the per-seed differences, which carries both, because each seed's mean already includes its item "
    "noise. The hierarchical bootstrap (resample seeds, then items within each seed) is a second "
    "figure; with few seeds it runs narrow. p is an exact sign-flip permutation test over seeds (all "
    "2^k sign patterns of the k per-seed differences), for binary and continuous metrics alike; no "
    "figure treats (item, seed) pairs as independent. An interval needs two seeds or more (n/a with "
    "one). Reduction = 1 − a/b; a lower / tie / higher counts items on their seed-averaged values.")

ASKED = {"none": "no label", "deploy": "deployment label", "true": "true label"}


# Why a figure over seeds is missing when the run has one seed: there is no spread to
# estimate an interval or a p-value from. Every "n/a" of a one-seed run says it in these words.
ONE_SEED = "1 seed"


def seeds_note(n_seeds: int) -> str | None:
    """Why an interval or p-value over `n_seeds` seeds is missing, where that is the reason."""
    return ONE_SEED if n_seeds == 1 else None


def _why(note: str | None) -> str:
    return f" ({note})" if note else ""


def bounds_text(low: float | None, high: float | None, note: str | None = None) -> str:
    """A difference's interval; missing (null in metrics.json, NaN fresh) reads n/a with `note`,
    the reason, where given."""
    if missing(low) or missing(high):
        return "n/a" + _why(note)  # not "[n/a]": rich would read it as markup
    return f"[{low:+.3f}, {high:+.3f}]"


def value_text(x: float, pct: bool, note: str | None = None) -> str:
    if missing(x):
        return "n/a" + _why(note)
    return f"{x:.1%}" if pct else f"{x:.3g}"


def reduction_note(c: dict) -> str | None:
    """Why a comparison's reduction (1 − a/b) is missing: b, the base, is 0."""
    return f"{c['b']} is 0: no reduction from 0" if c.get("b_mean") == 0 else None


def run_time_text(result: dict) -> str:
    """What the numbers cost: the run time of the stages behind them (`run_seconds`, over every
    session whose outputs they read), and this session's; a metrics.json from before it kept
    only this session's."""
    session = result.get("elapsed_seconds")
    total = result.get("run_seconds")
    if not total:
        return f"run time {session} s" if session is not None else "run time unknown"
    untimed = f"; {len(total['untimed'])} more without a recorded time" if total["untimed"] else ""
    this = f"; this session {session:,.1f} s" if session is not None else ""
    return f"run time {total['seconds']:,.1f} s (the {total['stages']} stages behind these numbers{untimed}{this})"


def interval_text(d: dict, digits: int = 3) -> str:
    """`mean [low, high]`, the mean and "CI n/a" with the reason when there is no interval (one
    seed: "n/a (1 seed)"), or n/a with the reason. Reads a `_ci` dict, fresh or from a
    metrics.json (null there; NaN in one written before)."""
    if missing(d.get("mean")):
        return "n/a" + _why(d.get("note"))
    if missing(d.get("low")) or missing(d.get("high")):
        return f"{d['mean']:.3f}, CI n/a" + _why(d.get("note"))
    return f"{d['mean']:.3f} [{d['low']:.{digits}f}, {d['high']:.{digits}f}]"


@dataclass(frozen=True)
class Context:
    """What the report needs of the plan and the run, read from plan.json's data."""

    name: str
    description: str
    spec_sha256: str
    axis: Axis
    method: str
    response: Response
    monitors: list[Monitor]
    arms: list[Arm]
    feedback: list[str]
    metrics: list[str]
    profile: str
    seeds: list[int]
    device: str

    @classmethod
    def from_typed(cls, plan: Any, profile: str, seeds: list[int], device: str, metrics: list[str]) -> "Context":
        """From the run's typed plan (`Plan`), the metrics in the compiled order."""
        return cls(name=plan.name, description=plan.description, spec_sha256=plan.spec_sha256, axis=plan.axis,
                   method=plan.method, response=plan.response, monitors=list(plan.monitors), arms=list(plan.arms),
                   feedback=list(plan.feedback), metrics=list(metrics), profile=profile, seeds=list(seeds),
                   device=device)

    @classmethod
    def from_plan(cls, raw: dict, profile: str, seeds: list[int], device: str) -> "Context":
        """From a plan's JSON data (`Plan.dump()`, or plan.json of a run, also one an older ectc
        wrote: only these parts are read)."""
        return cls(name=raw["name"], description=raw.get("description", ""),
                   spec_sha256=raw.get("spec_sha256", ""), axis=Axis.from_data(raw["axis"], "plan.axis"),
                   method=raw.get("method", ""),
                   response=Response.from_data(raw["response"], "plan.response"),
                   monitors=[Monitor.from_data(m, "plan.monitors") for m in raw.get("monitors", [])],
                   arms=[Arm.from_data(a, "plan.arms") for a in raw["arms"]],
                   feedback=list(raw.get("feedback", [])), metrics=list(raw["evaluate"]["metrics"]),
                   profile=profile, seeds=list(seeds), device=device)


def _readable_prompt(prompt: Any) -> str:
    """A chat prompt (stored as JSON messages) as `[role] content` blocks; text as it is."""
    if isinstance(prompt, str):
        try:
            messages = json.loads(prompt)
        except ValueError:
            return prompt
    else:
        messages = prompt
    if isinstance(messages, list) and all(isinstance(m, dict) and "content" in m for m in messages):
        return "\n\n".join(f"[{m.get('role', '?')}] {m['content']}" for m in messages)
    return str(prompt)


def _short(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


def _raw(raw: Any) -> str | None:
    """The judge's reply as it came: text as it is, a tool call's input as JSON."""
    if raw is None or isinstance(raw, str):
        return raw
    return json.dumps(raw, indent=1, ensure_ascii=False)


def _verdict(monitor: Monitor, value: Any, meta: dict) -> dict:
    """One monitor's verdict on one sample, for the browser: the value, tags to filter on, and
    the judge's raw reply and reasoning where it gave them."""
    tags = []
    if value is None:
        tags.append(f"{monitor.name}: unscored")
    elif isinstance(value, dict):
        for field, v in value.items():
            if isinstance(v, str) and (field in monitor.returns and monitor.returns[field].type == "enum"
                                       or monitor.type == "lexicon"):
                tags.append(f"{monitor.name}.{field}={v}")
    elif isinstance(value, bool):
        tags.append(f"{monitor.name}={value}")
    reasoning = value.get("reasoning") if isinstance(value, dict) else None
    if isinstance(value, dict):
        text = ", ".join(f"{k} {_short(v)}" for k, v in value.items() if k != "reasoning")
    else:
        text = _short(value)
    return {"monitor": monitor.name, "text": text, "type": monitor.type, "value": value, "scored": bool(meta.get("scored", value is not None)),
            "reason": meta.get("reason"), "raw": _raw(meta.get("raw")), "reasoning": reasoning, "tags": tags}


def _browser_sample(ctx: Context, s: dict) -> dict:
    v = s.get("sample", {})
    verdicts = [_verdict(m, v.get(m.name), s.get("monitors", {}).get(m.name, {})) for m in ctx.monitors]
    probs = None
    if s.get("probs") is not None and ctx.response.choices:
        probs = dict(zip(ctx.response.choices, s["probs"]))
    return {"arm": s["arm"], "seed": s["seed"], "condition": s["condition"], "item": s["item"],
            "label": s.get("label") or "", "prompt": _readable_prompt(s.get("prompt", "")),
            "response": str(s.get("response")), "probs": probs,
            "feedback": {k: v[k] for k in ctx.feedback if k in v},
            "verdicts": verdicts, "tags": sorted({t for d in verdicts for t in d["tags"]})}


def browser_samples(ctx: Context, eval_samples: dict, budget: int = BROWSER_BYTES) -> dict:
    """Whole items (every arm, seed and condition of an item) in item order until the budget."""
    by_item: dict[int, list[dict]] = {}
    for key in sorted(eval_samples):
        for s in eval_samples[key]:
            by_item.setdefault(s["item"], []).append(_browser_sample(ctx, s))
    shown, size = [], 0
    for item in sorted(by_item):
        n = len(json.dumps(by_item[item]))
        if shown and size + n > budget:
            break
        shown.append(item)
        size += n
    samples = [x for item in shown for x in by_item[item]]
    return {"samples": samples, "items_shown": len(shown), "items_total": len(by_item),
            "arms": sorted({x["arm"] for x in samples}), "seeds": sorted({x["seed"] for x in samples}),
            "conditions": list(dict.fromkeys(x["condition"] for x in samples)),
            "tags": sorted({t for x in samples for t in x["tags"]})}


def side_by_side(ctx: Context, eval_samples: dict, count: int = 2) -> list[dict]:
    """The same items at each arm's headline condition, one seed (the first), across arms."""
    rank = {a.name: i for i, a in enumerate(ctx.arms)}
    eval_samples = dict(sorted(eval_samples.items(), key=lambda kv: (rank.get(kv[0][0], len(rank)), kv[0][1])))
    if not eval_samples:
        return []
    first_seed = min(s for (_, s) in eval_samples)
    firsts: dict[str, dict[int, dict]] = {}
    for (arm, seed), samples in eval_samples.items():
        if seed != first_seed:
            continue
        for s in samples:
            if s["condition"] in ("deploy", "none", "true"):
                firsts.setdefault(arm, {})[s["item"]] = s
    if not firsts:
        return []
    items = sorted(set.intersection(*(set(v) for v in firsts.values())))[:count]
    out = []
    for item in items:
        rows = []
        for arm, samples in firsts.items():
            s = _browser_sample(ctx, samples[item])
            rows.append({**s, "short": s["response"].strip().replace("\n", " ")[-600:]})
        out.append({"item": item, "seed": first_seed, "rows": rows})
    return out


def report_data(ctx: Context, result: dict, eval_samples: dict) -> dict:
    """Everything the report says, computed once; both templates render this."""
    axis = ctx.axis
    # In the plan's order: a metrics.json read back may have its keys sorted.
    rank = {a.name: i for i, a in enumerate(ctx.arms)}

    def in_order(d: dict) -> list:
        return sorted(d.items(), key=lambda kv: rank.get(kv[0], len(rank)))

    arms = []
    for arm, info in in_order(result["arms"]):
        cells = []
        for m in ctx.metrics:
            d = info["metrics"][m]
            cells.append({"metric": m, "text": interval_text(d) + (f" (n={d['n_items']})" if not missing(d["mean"]) else ""),
                          "mean": d.get("mean"), "low": d.get("low"), "high": d.get("high")})
        arms.append({"name": arm, "asked": ASKED[info["condition"]], "cells": cells})
    comparisons, notes = [], []
    for c in result["comparisons"]:
        if "diff" not in c:
            comparisons.append({**c, "ok": False})
            continue
        if "note" in c:
            notes.append(f"{c['a']} vs {c['b']} on {c['metric']}: {c['note']}")
        why = seeds_note(c["n_seeds"])
        comparisons.append({**c, "ok": True, "a_text": f"{c['a_mean']:.3f}", "b_text": f"{c['b_mean']:.3f}",
                            "diff_text": f"{c['diff']:+.3f} {bounds_text(c['t_low'], c['t_high'], why)}",
                            "boot_text": bounds_text(c["boot_low"], c["boot_high"], why),
                            "per_seed_text": ", ".join(f"{d:+.3f}" for d in c["per_seed_diff"]),
                            "p_text": value_text(c["permutation_p"], False, why),
                            "reduction_text": value_text(c["relative_reduction"], True, reduction_note(c)),
                            "wins_text": f"{c['a_lower']} / {c['ties']} / {c['a_higher']}"})
        if c["n_seeds"] > 1 and c["permutation_min_p"] >= 0.05:
            notes.append(f"with {c['n_seeds']} seeds the sign-flip test cannot go below p = {c['permutation_min_p']:.3g}")
    sweeps = []
    for m in [m for m in ctx.metrics if m in result["sweep"]]:
        sw = result["sweep"][m]
        if not sw["series"]:
            continue
        series = in_order(sw["series"])
        rows = [{"value": v, "held_out": axis.held_out(v),
                 "cells": [{"arm": arm, "mean": pts[i]["mean"], "text": f"{pts[i]['mean']:.3f}" if not missing(pts[i]["mean"]) else "n/a",
                            "interval": interval_text(pts[i])} for arm, pts in series]}
                for i, v in enumerate(sw["values"])]
        sweeps.append({"metric": m, "arms": [a for a, _ in series], "rows": rows,
                       "scored": any(not missing(c["mean"]) for row in rows for c in row["cells"]),
                       "plot": f"plots/sweep_{m}.png" if f"plots/sweep_{m}.png" in result.get("plots", []) else None})
    shares = [{"arm": a, "fields": [{"field": f, "text": ", ".join(f"{k} {v:.0%}" for k, v in d.items()),
                                      "shares": d} for f, d in s.items()]}
              for a, s in in_order(result["shares"]) if s]
    unscored = [{"arm": arm, "monitor": name, "unscored": c["unscored"], "total": c["scored"] + c["unscored"],
                 "reasons": ", ".join(f"{k}: {v}" for k, v in c["reasons"].items())}
                for arm, u in in_order(result["unscored"]) for name, c in u.items() if c["unscored"]]
    agreement = []
    for g in result.get("agreement") or []:
        name, value = ("Spearman", g["spearman"]) if "spearman" in g else ("Cohen's kappa", g["kappa"])
        measure = f"{name} {value:.3f}" if not missing(value) else f"{name} n/a ({g.get('note')})"
        agreement.append(f"{g['a']} vs {g['b']} on `{g['field']}`: {measure} over {g['n']} samples")
    claude = []
    bill = result.get("claude") or {}
    for kind in dict.fromkeys([*bill.get("estimate", {}), *bill.get("spent", {})]):
        was, now = bill.get("estimate", {}).get(kind), bill.get("spent", {}).get(kind)
        claude.append({
            "kind": kind,
            "estimate": None if was is None else (
                f"{was['calls']:,} calls, ~{was['input_tokens']:,} input tokens, "
                + ("unknown price" if was["cost_usd_at_most"] is None else f"at most ${was['cost_usd_at_most']:,.2f}")),
            "spent": "none" if now is None else (
                f"{now['calls']:,} calls ({now['cache_hits']:,} from the cache), {now['input_tokens']:,} input and "
                f"{now['output_tokens']:,} output tokens, ${now['cost_usd']:,.2f}"
                + (f" ({now['unpriced_calls']} calls of a model without a price)" if now.get("unpriced_calls") else "")),
        })
    headline = [c for c in comparisons if c["ok"]]
    return {
        "name": ctx.name, "description": ctx.description, "profile": ctx.profile, "seeds": ctx.seeds,
        "device": ctx.device, "spec_sha": ctx.spec_sha256[:16], "run_time": run_time_text(result),
        "axis": {"name": axis.name, "deploy": axis.deploy}, "metrics": ctx.metrics, "arms": arms,
        "rates": [m for m in ctx.metrics if m in result.get("rates", [])],
        "comparisons": comparisons, "comparison_note": COMPARISON_NOTE, "notes": list(dict.fromkeys(notes)),
        "headline": headline[0] if headline else None, "sweeps": sweeps, "shares": shares,
        "unscored": unscored, "agreement": agreement, "claude": claude, "warnings": result.get("warnings", []),
        "training_notes": result.get("training_notes", []),
        "examples": side_by_side(ctx, eval_samples) if ctx.response.type == "text" else [],
        "examples_all": side_by_side(ctx, eval_samples),
        "plots": list(result.get("plots", [])),
        "browser": browser_samples(ctx, eval_samples),
    }


def _env(autoescape: bool):
    import jinja2

    return jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES_DIR)), undefined=jinja2.StrictUndefined,
                              keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True,
                              autoescape=autoescape)


def render_markdown(data: dict) -> str:
    return _env(False).get_template("report.md.j2").render(r=data)


def render_html(data: dict, images: dict[str, str]) -> str:
    """`images` maps each plot's relative path to its data: URI."""
    return _env(True).get_template("report.html.j2").render(r=data, images=images)


def embedded_images(folder: Path, plots: list[str]) -> dict[str, str]:
    out = {}
    for rel in plots:
        path = folder / rel
        if path.is_file():
            out[rel] = "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")
    return out


def write_documents(folder: Path, ctx: Context, result: dict, eval_samples: dict,
                    plots_from: Path | None = None) -> dict:
    """report.md and report.html from one `report_data` (plots read from `plots_from`, by
    default the same folder)."""
    data = report_data(ctx, result, eval_samples)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / "report.md", render_markdown(data))
    images = embedded_images(plots_from or folder, data["plots"])
    atomic_write_text(folder / "report.html", render_html(data, images))
    return data


def read_samples(folder: Path) -> dict[tuple[str, int], list[dict]]:
    """A run folder's evaluation samples with their verdicts (judge/<arm>/seed<k>/verdicts.jsonl
    where the run has a judge stage; runs before it kept verdicts in the samples)."""
    from .monitors import apply_verdicts

    out = {}
    for path in sorted((folder / "eval").glob("*/seed*/samples.jsonl")):
        arm, seed = path.parent.parent.name, int(path.parent.name.removeprefix("seed"))
        samples = read_jsonl(path)
        verdicts = folder / "judge" / arm / f"seed{seed}" / "verdicts.jsonl"
        if verdicts.is_file():
            samples = apply_verdicts(samples, read_jsonl(verdicts))
        out[(arm, seed)] = samples
    return out

