"""Monitors over evaluation samples: lexicon word lists, programmatic expressions and LLM
judges, as the spec declares them. Each writes its verdict into the sample under its name; a
verdict that could not be had (no API key, an unparseable reply) is None, with the reason kept
beside it, and is never replaced by a default score."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..plan.model import Monitor
from .experiment import Experiment


def _lexicon_verdicts(exp: Experiment, monitor: Monitor, texts: list[str], root: Path) -> list[dict]:
    from ..schema import lexicon_maps
    from .lexicon import load_lexicons, objectivity_from_magnitude, score_text

    s = monitor.settings
    lists = load_lexicons({name: root / path for name, path in s["lists"].items()})
    maps = lexicon_maps(s)  # without a declared mapping the monitor just counts
    out = []
    for text in texts:
        score = score_text(text, lists, **({"intercept": s["intercept"], "slope": s["slope"]} if maps else {}))
        verdict = {"hits": score["loaded_hits"], "words": score["words"], "per_100": score["loaded_per_100"]}
        if maps:
            verdict.update({
                "magnitude": score["magnitude"], "lean": score["lean"],
                "objectivity": objectivity_from_magnitude(score["magnitude"], s["pass_below"], s["fail_above"]),
            })
        out.append(verdict)
    return out


def _llm_verdicts(run, monitor: Monitor, samples: list[dict]) -> tuple[list[Any], list[dict]]:
    from .llm import LLMClient, llm_available

    if not llm_available():
        reason = "no API key (set ANTHROPIC_API_KEY to use this judge)"
        return [None] * len(samples), [{"scored": False, "reason": reason}] * len(samples)
    s = monitor.settings
    client = LLMClient(monitor.model, cache_dir=run.opts.runs_dir / ".cache" / "llm",
                       base_url=os.environ.get("ANTHROPIC_BASE_URL"), max_concurrency=s["concurrency"])
    # The judge sees only what `sees` lists: never the label (the checker enforces it).
    items = [{k: sample["sample"][k] for k in monitor.sees} for sample in samples]
    returns = {name: field.dump() for name, field in monitor.returns.items()}
    verdicts = client.judge(items, run.exp.templates[monitor.rubric], returns,
                            system=s.get("system"), temperature=s.get("temperature"),
                            max_tokens=s["max_tokens"], reasks=s["reasks"])
    values = [dict(v.fields) if v.scored else None for v in verdicts]
    meta = [{"scored": v.scored, "reason": v.reason, "raw": v.raw, "attempts": v.attempts, "cached": v.cached}
            for v in verdicts]
    run.events.append({"stage": f"judge {monitor.name}", "model": monitor.model, **client.usage.to_dict()})
    return values, meta


def run_monitors(run, samples: list[dict]) -> list[dict]:
    """The judge stage's work: each monitor's verdict on each stored sample, as one row per
    sample ({"verdicts": {monitor: value}, "monitors": {monitor: how it went}}). The samples are
    not changed: `apply_verdicts` joins them."""
    exp: Experiment = run.exp
    root = Path(exp.plan.spec).parent
    rows: list[dict] = [{"verdicts": {}, "monitors": {}} for _ in samples]
    for monitor in exp.plan.monitors:
        name = monitor.name
        if monitor.type == "lexicon":
            values = _lexicon_verdicts(exp, monitor, [str(s["response"]) for s in samples], root)
            meta = [{"scored": True}] * len(samples)
        elif monitor.type == "expr":
            fn = exp.feedback.MONITORS[name]
            values = [fn(s["sample"]) for s in samples]
            meta = [{"scored": True}] * len(samples)
        else:
            values, meta = _llm_verdicts(run, monitor, samples)
        for row, value, info in zip(rows, values, meta):
            row["verdicts"][name] = value
            row["monitors"][name] = info
    return rows


def apply_verdicts(samples: list[dict], rows: list[dict]) -> list[dict]:
    """The samples with the judge's verdicts: each monitor's value beside the sample's fields
    (what metrics read) and how it was had under "monitors"."""
    if len(rows) != len(samples):
        raise RuntimeError(f"{len(rows)} verdicts for {len(samples)} samples: the judge stage is stale")
    return [{**s, "sample": {**s["sample"], **r["verdicts"]}, "monitors": r["monitors"]} for s, r in zip(samples, rows)]
