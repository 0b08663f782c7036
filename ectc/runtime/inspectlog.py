"""Each evaluation as an Inspect AI eval log, so `inspect view` browses ectc's samples and
scores: one log per arm and seed (runs/<exp>/<run>/inspect/<arm>-seed<k>.eval), written with
Inspect's own models and `write_eval_log`.

A log holds the arm's samples at its headline label condition (the deployment label, or none
for an unlabeled arm: what the report's metrics read); the label-sweep samples stay in
samples.jsonl and report.html's browser, because Inspect's writer costs about 5 ms a sample
(measured: 1000 samples 7.8 s, with a dedupe quadratic in the samples) and a full sweep of the
sycophancy profile is 224,000 samples. A sample is one item: its input the prompt the model saw
(chat messages as Inspect messages), its output the response, its scores each monitor's verdict (an unscored
verdict is Inspect's `Score.unscored` with the reason) and, for RL, the feedback terms; its
metadata the condition, the label, the choice probabilities and the row. The log's results are
ectc's metrics for that arm and seed at the arm's headline condition, the figures metrics.json
holds, not a second computation.

inspect_ai is optional (`pip install ectc[inspect]`): imported here only, lazily; without it
`write_logs` writes nothing and says so.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any


def available() -> bool:
    try:
        import inspect_ai  # noqa: F401
    except ImportError:
        return False
    return True


def _messages(prompt: Any):
    from inspect_ai.model import ChatMessageAssistant, ChatMessageSystem, ChatMessageUser

    kinds = {"system": ChatMessageSystem, "user": ChatMessageUser, "assistant": ChatMessageAssistant}
    try:
        parsed = json.loads(prompt) if isinstance(prompt, str) else prompt
    except ValueError:
        return prompt
    if isinstance(parsed, list) and all(isinstance(m, dict) and m.get("role") in kinds for m in parsed):
        return [kinds[m["role"]](content=str(m.get("content", ""))) for m in parsed]
    return str(prompt)


def _plain(value: Any) -> Any:
    """A verdict as an Inspect score value: a scalar, or a flat mapping of scalars."""
    if isinstance(value, dict):
        return {k: v if isinstance(v, (str, int, float, bool)) or v is None else json.dumps(v) for k, v in value.items()}
    if isinstance(value, (str, int, float, bool)):
        return value
    return json.dumps(value)


def _scores(ctx, s: dict) -> dict:
    from inspect_ai.scorer import Score

    v, meta = s.get("sample", {}), s.get("monitors", {})
    out = {}
    for m in ctx.monitors:
        value, info = v.get(m.name), meta.get(m.name, {})
        if value is None:
            out[m.name] = Score.unscored(reason=str(info.get("reason") or "unscored"),
                                         metadata={"raw": info.get("raw")} if info.get("raw") else None)
            continue
        out[m.name] = Score(value=_plain(value), answer=str(s.get("response")),
                            explanation=value.get("reasoning") if isinstance(value, dict) else None,
                            metadata={k: info[k] for k in ("raw", "attempts", "cached") if info.get(k) is not None} or None)
    terms = {k: v[k] for k in ctx.feedback if k in v}
    if terms:
        out["feedback"] = Score(value=_plain(terms), answer=str(s.get("response")))
    return out


def eval_log(ctx, result: dict, arm: str, seed: int, samples: list[dict], created: str):
    """One arm and seed's evaluation as an Inspect `EvalLog`."""
    from inspect_ai.log import (EvalConfig, EvalDataset, EvalLog, EvalMetric, EvalResults, EvalSample, EvalScore,
                                EvalSpec, EvalStats)
    from inspect_ai.model import ModelOutput

    model = f"ectc/{ctx.name}/{arm}/seed{seed}"
    rows = []
    for s in samples:
        v = s.get("sample", {})
        rows.append(EvalSample(
            id=s["item"], epoch=1, input=_messages(s.get("prompt", "")),
            choices=list(ctx.response.choices) or None, target=str(v.get("target", "")),
            output=ModelOutput.from_content(model, str(s.get("response"))), scores=_scores(ctx, s),
            metadata={"arm": arm, "seed": seed, "condition": s["condition"], "item": s["item"],
                      "label": s.get("label"), "label_value": s.get("label_value"), "probs": s.get("probs"),
                      "row": {k: _plain(x) for k, x in v.items() if k not in ctx.feedback}}))
    index = ctx.seeds.index(seed) if seed in ctx.seeds else None
    info = result["arms"].get(arm, {})
    scores = []
    for metric, d in info.get("metrics", {}).items():
        value = d["per_seed"][index] if index is not None and index < len(d.get("per_seed", [])) else None
        if value is None or (isinstance(value, float) and math.isnan(value)):
            continue
        scores.append(EvalScore(name=metric, scorer="ectc", scored_samples=d.get("n_items"),
                                metrics={"value": EvalMetric(name="value", value=float(value))},
                                metadata={"condition": info.get("condition"), "seed": seed,
                                          "all_seeds": {"mean": d.get("mean"), "low": d.get("low"),
                                                        "high": d.get("high")}}))
    spec = EvalSpec(created=created, task=f"{ctx.name}/{arm}", task_id=f"{ctx.name}-{arm}", run_id=f"{ctx.name}-{ctx.profile}",
                    eval_id=f"{ctx.name}-{ctx.profile}-{arm}-seed{seed}",
                    task_args={"arm": arm, "seed": seed, "profile": ctx.profile},
                    dataset=EvalDataset(name=ctx.name, samples=len(rows)), model=model, config=EvalConfig(),
                    metadata={"ectc": True, "spec_sha256": ctx.spec_sha256, "axis": ctx.axis.name,
                              "deploy": ctx.axis.deploy, "headline_condition": info.get("condition")})
    return EvalLog(version=2, status="success", eval=spec,
                   results=EvalResults(total_samples=len(rows), completed_samples=len(rows), scores=scores),
                   stats=EvalStats(started_at=created, completed_at=created), samples=rows)


def write_logs(folder: Path, ctx, result: dict, eval_samples: dict) -> list[Path]:
    """inspect/<arm>-seed<k>.eval for every evaluated arm and seed; [] without inspect_ai."""
    if not available():
        return []
    from datetime import datetime, timezone

    from inspect_ai.log import write_eval_log

    created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    out = []
    (folder / "inspect").mkdir(parents=True, exist_ok=True)
    headline = {a.name: a.main_condition for a in ctx.arms}
    for (arm, seed), samples in sorted(eval_samples.items()):
        samples = [s for s in samples if s["condition"] == headline.get(arm)]
        path = folder / "inspect" / f"{arm}-seed{seed}.eval"
        tmp = path.with_name(f".{path.name}.tmp.eval")  # atomic: a reader never sees half a log
        write_eval_log(eval_log(ctx, result, arm, seed, samples, created), str(tmp), format="eval")
        os.replace(tmp, path)
        out.append(path)
    return out
