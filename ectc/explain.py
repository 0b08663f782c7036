"""explain: the compiled plan of a checked spec, in words and tables (rich)."""

from __future__ import annotations

from typing import Any

from . import ir, schema
from .generate import build_plan
from .plan.model import Axis, Plan


def label_examples(axis: Axis, label: str, count: int = 5) -> list[tuple[Any, str]]:
    """The label rendered at a few axis values: deployment, held out, and across training."""
    from .sandbox import environment

    if axis.type == "enum":
        values = [v.name for v in axis.values]
    else:
        lo, hi = axis.domain
        values = sorted({axis.deploy, *[round(lo + (hi - lo) * i / (count - 1), 4) for i in range(count)]})
    template = environment().from_string(label)
    return [(value, template.render(axis.context(value))) for value in values]


def explain(spec: ir.Spec, console, profile: str | None = None) -> None:
    from rich.markup import escape
    from rich.table import Table

    # User text (descriptions, labels, paths) is shown as written, never read as rich markup.
    for exp in spec.experiments:
        plan: Plan = build_plan(exp, "", "", [])
        console.rule(f"[bold]experiment {exp.name}")
        if plan.description:
            console.print(escape(plan.description))
        axis = plan.axis
        if axis.type == "enum":
            console.print(f"axis [bold]{axis.name}[/] (enum): trains on {', '.join(axis.train_values)}; "
                          f"holds out {', '.join(axis.holdout)}; deploys at [bold]{axis.deploy}[/]")
        else:
            held = ", ".join(f"{'[' if c1 else '('}{a:g}, {b:g}{']' if c2 else ')'}" for a, b, c1, c2 in axis.holdout)
            console.print(f"axis [bold]{axis.name}[/] ({axis.type} in [{axis.domain[0]:g}, {axis.domain[1]:g}]): "
                          f"trains on {_dist(axis.train)}; holds out {held}; deploys at [bold]{axis.deploy}[/]")
        if exp.label:
            table = Table(title="Evaluation label at a few axis values")
            table.add_column(axis.name)
            table.add_column("label")
            for value, text in label_examples(axis, exp.label.text):
                table.add_row(escape(str(value)), escape(text))
            console.print(table)
        table = Table(title="Arms")
        for col in ("arm", "trains with label", "encoding", "data filter", "asked at inference with"):
            table.add_column(col)
        for arm in plan.arms:
            trains = f"reuses {arm.reuse}" if arm.reuse else (
                f"fixed {arm.fixed_value}" if arm.train_label == "fixed" else arm.train_label)
            infer = {"none": "no label", "deploy": f"deployment label ({axis.deploy})", "true": "true label"}[arm.infer]
            table.add_row(arm.name, trains, arm.encode, arm.filter or "-", infer)
        console.print(table)
        name = profile or plan.default_profile
        if name not in plan.profiles:
            console.print(f"[red]no profile `{name}`[/]")
            continue
        resolved = plan.profiles[name]
        trained = [a.name for a in plan.arms if a.trains]
        seeds = len(resolved.seeds)
        stages = [f"data: build {', '.join(d.name for d in plan.data)}"]
        if resolved.warmup:
            stages.append(f"warm-up: {resolved.warmup['steps']} supervised steps on "
                          f"{', '.join(resolved.warmup['mix'])} (once, cached)")
        stages.append(f"train: {len(trained)} arm(s) x {seeds} seed(s) with {plan.method.upper()}")
        sweep = resolved.evaluation.sweep
        stages.append(f"evaluate: {len(plan.arms)} arm(s) at the deployment label"
                      + (f" on {resolved.evaluation.samples} item(s)" if resolved.evaluation.samples else "")
                      + (f", and a sweep over {len(sweep)} label values" if sweep else ""))
        if plan.monitors:
            stages.append(f"judge the stored samples: {', '.join(m.name + ' (' + m.type + ')' for m in plan.monitors)}")
        stages.append(f"report: metrics {', '.join(plan.evaluate.metrics)}; plots; report.md")
        console.print(f"[bold]Stages[/] (profile {name}):")
        for i, stage in enumerate(stages, 1):
            console.print(f"  {i}. {stage}")
        written = next(p for p in exp.profiles if p.name == name)
        base = written.extends.id if written.extends else written.library.value if written.library else None
        table = Table(title=f"Profile {name}" + (f" (starts from {escape(base)}; shown with its overrides)" if base else ""))
        table.add_column("setting")
        table.add_column("value")
        shown = resolved.dump()
        table.add_row("seeds", str(seeds))
        for key in ("model", "quantize", "lora", "warmup", plan.method, "generate", "track"):
            if key == "rl" and shown.get(key):
                table.add_row(*map(escape, rl_row(shown[key])))
            elif shown.get(key):
                table.add_row(key, escape(", ".join(f"{k}={_value(v)}" for k, v in shown[key].items())))
        table.add_row("checkpoint_every", str(resolved.checkpoint_every))
        console.print(table)


_TRAINERS = {"ppo": "the one-token PPO fast path", "grpo": "trl's GRPOTrainer"}


def rl_row(rl: dict) -> tuple[str, str]:
    """The resolved `rl` block as its algorithm reads it: only the settings that algorithm has
    (schema.ALGORITHM_SETTINGS), each under GRPO with the GRPOConfig field it becomes."""
    algorithm = rl["algorithm"]
    parts = []
    for k in schema.ALGORITHM_SETTINGS[algorithm]:
        if k not in rl:
            continue
        part = f"{k}={_value(rl[k])}"
        if algorithm == "grpo":
            field = schema.GRPO_FIELDS[k][0]
            value = schema.trainer_kwargs("grpo", {k: rl[k]})[field]  # what GRPOConfig is given
            part += f" ({field})" if _value(value) == _value(rl[k]) else f" ({field}={value})"
        parts.append(part)
    return f"rl: {algorithm} ({_TRAINERS[algorithm]})", ", ".join(parts)


def _value(v: Any) -> str:
    """A setting as a spec writes it: a schedule as `linear(start, end, fraction)` or, held
    constant, its one number."""
    if isinstance(v, dict) and set(v) == {"start", "end", "fraction"}:
        return f"{v['start']}" if v["start"] == v["end"] else f"linear({v['start']}, {v['end']}, {v['fraction']})"
    return str(v)


def _dist(train: Any) -> str:
    if isinstance(train, dict):
        return f"{train['fn']}({', '.join(str(a) for a in train['args'])})"
    return str(train)
