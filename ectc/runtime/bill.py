"""The bill before the run (`ectc plan`): per stage that will run, the work it does (training
steps, generations, Claude calls with their input tokens and cost) and an estimated time, and
after the run the same bill beside what the run really spent.

`estimate` is pure: counts from the plan and the stage graph, with the measured facts (data
rows, tokens per request, seconds per unit of work) passed in. `gather` measures those facts at
the edge: it builds the data as the run would, with a recorder in place of Claude, renders the
requests the run will send and has the API count a few of them (`messages.count_tokens`, free);
without an API key it approximates four characters a token, and says so.

Times come from this machine's earlier stages of the same experiment and profile: each finished
stage recorded its seconds (`stages.json`) and its units (`stage.json`: steps, samples), so a
stage's estimate is its units times the median seconds per unit seen before.
"""

from __future__ import annotations

import json
import math
import statistics
import types
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Optional

from ..plan import stages
from ..plan.compiled import CompiledExperiment
from ..plan.records import read_record
from ..prices import cost_usd, price_for

CHARS_PER_TOKEN = 4  # Anthropic's rule of thumb for English, used only without an API key
SAMPLED_REQUESTS = 8  # requests counted per kind: token counts barely vary between items
DATA_MAX_TOKENS = 1024  # the data stage's completions (runtime/run.py asks for at most this)
TIMED = ("train", "evaluate")
CALIBRATION_DIR = ".calibrate"  # under the runs folder: `ectc plan --calibrate`'s short runs


@dataclass(frozen=True)
class Calls:
    """Claude requests of one stage (or of one kind, summed)."""

    model: str
    calls: int
    input_tokens: int        # estimated before the run; counted after it
    output_tokens: int       # before the run: the most the replies may use (calls x max_tokens)
    how: str = ""            # how the input tokens were estimated

    @property
    def price(self) -> Optional[tuple[float, float]]:
        return price_for(self.model)

    def cost(self) -> Optional[float]:
        """USD (before the run: at most, since output_tokens is the most); None: unknown price."""
        price = self.price
        return None if price is None else cost_usd(price, self.input_tokens, self.output_tokens)


@dataclass(frozen=True)
class StageBill:
    stage: str
    kind: str
    work: str                      # in words
    units: int = 0                 # what the time rate multiplies: steps, generations, ...
    unit: str = ""
    calls: Optional[Calls] = None
    seconds: Optional[float] = None

    def to_json(self) -> dict:
        out = asdict(self)
        out["cost_usd"] = self.calls.cost() if self.calls else None
        return out


@dataclass(frozen=True)
class Facts:
    """What only looking at the data, the API or earlier runs tells."""

    rows: Mapping[str, Mapping[str, int]]                 # block -> split -> rows
    train_rows: Mapping[str, int]                          # arm -> rows it trains on
    data_requests: Mapping[str, tuple[int, int]] = field(default_factory=dict)  # model -> (calls, input tokens)
    judge_tokens: Mapping[str, int] = field(default_factory=dict)  # monitor -> input tokens of one request
    token_how: str = ""
    judging: bool = False  # Claude judges will run (an API key, the package, not ECTC_OFFLINE)
    seconds_per: Mapping[str, "Rate"] = field(default_factory=dict)  # stage kind -> its time on this machine
    time_how: str = ""


def _eval_items(exp: CompiledExperiment, profile, facts: Facts) -> int:
    plan = exp.plan
    n = facts.rows.get(plan.main_data, {}).get(plan.evaluate.split, 0)
    return min(n, profile.evaluation.samples) if profile.evaluation.samples else n


def stage_bill(exp: CompiledExperiment, shape: stages.Shape, stage: stages.Stage, facts: Facts) -> StageBill:
    plan = exp.plan
    prof = plan.profiles[shape.profile]
    rate = facts.seconds_per.get(stage.kind)

    def bill(work: str, units: int = 0, unit: str = "", calls: Optional[Calls] = None) -> StageBill:
        return StageBill(stage.name, stage.kind, work, units, unit, calls,
                         None if rate is None or not units or stage.kind not in TIMED else round(rate.seconds(units), 1))

    if stage.kind == "data":
        rows = sum(n for splits in facts.rows.values() for n in splits.values())
        calls = [Calls(model, n, tokens, n * DATA_MAX_TOKENS, facts.token_how)
                 for model, (n, tokens) in facts.data_requests.items()]
        if calls and shape.llm == "anthropic":
            return bill(f"{rows} rows; {calls[0].calls} Claude completions", rows, "row", calls[0])
        extra = f" (procedural writer: no API key; with one, {sum(c.calls for c in calls)} Claude completions)" \
            if calls else ""
        return bill(f"{rows} rows{extra}", rows, "row")
    if stage.kind == "base":
        if prof.model.type == "hf":
            return bill("loaded from the hub per arm")
        if prof.model.type == "gguf":
            return bill(f"convert {prof.model.describe()} once (cached)")
        steps = stages.scaled(prof.warmup["steps"], shape.steps_scale) if prof.warmup else 0
        return bill(f"build the tiny model; {steps} warm-up steps" if steps else "build the tiny model",
                    steps, "warm-up step")
    if stage.kind == "train":
        rows = facts.train_rows.get(stage.arm, 0)
        if prof.trainer == "sft":
            steps = stages.scaled(stages.sft_steps(prof.sft_config, rows), shape.steps_scale)
            return bill(f"{steps} SFT steps over {rows} rows", steps, "step")
        steps = stages.scaled(prof.rl["steps"], shape.steps_scale)
        what = "GRPO" if prof.trainer == "grpo" else "RL"
        return bill(f"{steps} {what} steps of {prof.rl['batch']} prompts", steps, "step")
    items = _eval_items(exp, prof, facts)
    if stage.kind == "probes":
        n = items * len(plan.evaluate.probes)
        return bill(f"{n} probe questions on the base model", n, "question")
    conditions = len(prof.evaluation.conditions[stage.arm]) if stage.arm else 0
    samples = items * conditions
    if stage.kind == "evaluate":
        if plan.response.type == "choice":
            return bill(f"{items} prompts x {conditions} label conditions: {samples} choice distributions",
                        samples, "sample")
        most = min(prof.generate.max_new_tokens, plan.response.max_tokens or 10**9)
        return bill(f"{items} prompts x {conditions} label conditions: {samples} generations "
                    f"of at most {most} tokens", samples, "sample")
    if stage.kind == "judge":
        judges = [m for m in plan.monitors if m.type == "llm"]
        if not judges:
            return bill(f"{samples} samples, offline monitors only", samples, "sample")
        n = samples * len(judges)
        tokens = sum(facts.judge_tokens.get(m.name, 0) for m in judges) * samples
        most = sum(int(m.settings.get("max_tokens", 1024)) for m in judges) * samples
        calls = Calls(judges[0].model, n, tokens, most, facts.token_how)
        if not facts.judging:
            cost = calls.cost()
            return bill(f"{samples} samples; no API key: left unscored (with one: {n} calls, "
                        f"~{tokens:,} input tokens, {'unknown price' if cost is None else f'at most ${cost:,.2f}'})",
                        samples, "sample")
        return bill(f"{samples} samples x {len(judges)} Claude judge(s)", samples, "sample", calls)
    return bill("metrics, plots and the report")


def estimate(exp: CompiledExperiment, shape: stages.Shape, to_run: Iterable[stages.Stage], facts: Facts) -> list[StageBill]:
    """The bill of the stages that will run, in run order."""
    return [stage_bill(exp, shape, s, facts) for s in to_run]


def totals(bills: list[StageBill]) -> dict[str, Any]:
    """Steps, generations, Claude calls, tokens, cost and time summed over the bill; the cost
    is None when a model's price is unknown, the time None when a stage's rate is."""
    calls = [b.calls for b in bills if b.calls]
    costs = [c.cost() for c in calls]
    timed = [b.seconds for b in bills if b.units and b.kind in TIMED]
    return {
        "train_steps": sum(b.units for b in bills if b.kind == "train"),
        "samples": sum(b.units for b in bills if b.kind == "evaluate"),
        "calls": sum(c.calls for c in calls),
        "input_tokens": sum(c.input_tokens for c in calls),
        "output_tokens": sum(c.output_tokens for c in calls),
        "cost_usd": None if any(c is None for c in costs) else round(sum(costs), 4),
        "unknown_price": sorted({c.model for c in calls if c.price is None}),
        # training and evaluation: what takes the time on a CPU or GPU (judging and data
        # writing wait on the API, the rest takes seconds)
        "seconds": None if any(t is None for t in timed) else round(sum(timed), 1),
    }


def spent(events: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """What a run's Claude calls really cost, by kind ("data", "judge"), from the usage its
    clients recorded in the run's events."""
    out: dict[str, dict[str, Any]] = {}
    for e in events:
        if "calls" not in e or "stage" not in e:
            continue
        kind = e["stage"].split()[0]
        got = out.setdefault(kind, {"calls": 0, "cache_hits": 0, "input_tokens": 0, "output_tokens": 0,
                                    "cost_usd": 0.0, "unpriced_calls": 0})
        for k in got:
            got[k] += e.get(k, 0) or 0
    return out


def estimated(lines: list[StageBill]) -> dict[str, dict[str, Any]]:
    """The bill's Claude calls by kind, in the shape `spent` returns."""
    out: dict[str, dict[str, Any]] = {}
    for b in lines:
        if b.calls is None:
            continue
        got = out.setdefault(b.kind, {"calls": 0, "input_tokens": 0, "output_tokens_at_most": 0, "cost_usd_at_most": 0.0})
        cost = b.calls.cost()
        got["calls"] += b.calls.calls
        got["input_tokens"] += b.calls.input_tokens
        got["output_tokens_at_most"] += b.calls.output_tokens
        got["cost_usd_at_most"] = None if cost is None or got["cost_usd_at_most"] is None else got["cost_usd_at_most"] + cost
    return out


# ---- the edge: measuring the facts -----------------------------------------------------------


def _module(text: str, name: str) -> types.ModuleType:
    module = types.ModuleType(name)
    exec(compile(text, name, "exec"), module.__dict__)  # generated by ectc: trusted, injection-safe
    return module


def build_rows(exp: CompiledExperiment, root: Path) -> tuple[dict[str, dict[str, list[dict]]], dict[str, list[str]]]:
    """The run's data, built by the generated builders with a recorder in place of Claude:
    (block -> split -> rows, model -> the prompts the data stage would send)."""
    dataset = _module(exp.files["dataset.py"], f"ectc_bill_{exp.name}_dataset")
    asked: dict[str, list[str]] = {}

    def recorder(model: str, prompts: list[str]) -> list[str]:
        asked.setdefault(model, []).extend(prompts)
        return [""] * len(prompts)

    data = {block: {split: dataset.BUILDERS[block](split, 0, llm=recorder, root=str(root)) for split in splits}
            for block, splits in exp.plan.data_splits().items()}
    return data, asked


def _spread(items: list, n: int) -> list:
    """`n` items spread over the list (all when it is shorter)."""
    if len(items) <= n:
        return list(items)
    return [items[i * len(items) // n] for i in range(n)]


def token_counter(model: str, system: Optional[str] = None, tool: Optional[dict] = None,
                  use_api: bool = True) -> tuple[Callable[[list[str]], list[int]], str]:
    """(count, how): the API's own count where a key is set, else characters / 4."""
    if use_api:
        import os

        from .llm import LLMClient, LLMUnavailable, llm_available

        if llm_available():
            client = LLMClient(model, cache_dir=None, base_url=os.environ.get("ANTHROPIC_BASE_URL"), max_retries=2)

            def count(prompts: list[str]) -> list[int]:
                try:
                    return client.count_tokens(prompts, system=system, tool=tool)
                except LLMUnavailable:
                    return [math.ceil(len((system or "") + p) / CHARS_PER_TOKEN) for p in prompts]
            return count, f"counted by the API on up to {SAMPLED_REQUESTS} rendered requests of each kind"
    how = f"approximate: {CHARS_PER_TOKEN} characters a token (no API key to count them)"
    return (lambda prompts: [math.ceil(len((system or "") + p) / CHARS_PER_TOKEN) for p in prompts]), how


def _mean_tokens(count: Callable[[list[str]], list[int]], prompts: list[str]) -> float:
    sample = _spread(prompts, SAMPLED_REQUESTS)
    return statistics.fmean(count(sample)) if sample else 0.0


def judge_requests(exp: CompiledExperiment, rows: list[dict], response_words: int) -> dict[str, list[str]]:
    """monitor -> the rubric rendered over sample items, the response a placeholder of
    `response_words` words (the most a generation may hold: the bill is an upper bound)."""
    from .llm import render_rubric

    placeholder = " ".join(["word"] * max(1, response_words))
    out = {}
    for m in exp.plan.monitors:
        if m.type != "llm":
            continue
        items = [{k: (placeholder if k == "response" else row.get(k, "")) for k in m.sees}
                 for row in _spread(rows, SAMPLED_REQUESTS)]
        out[m.name] = [render_rubric(exp.templates[m.rubric], item) for item in items]
    return out


@dataclass(frozen=True)
class Rate:
    """A stage kind's time on this machine: `overhead` seconds per stage (loading, saving)
    plus `per_unit` seconds per step or sample."""

    per_unit: float
    overhead: float = 0.0

    def seconds(self, units: int) -> float:
        return self.overhead + self.per_unit * units


def fit_rate(points: list[tuple[int, float]]) -> Rate:
    """(units, seconds) of earlier stages -> a Rate: a least-squares line where the stages
    differ in size and the line is sensible (a calibration runs two sizes for this), else the
    median seconds per unit with no overhead."""
    sizes = {u for u, _ in points}
    if len(sizes) > 1:
        slope, intercept = statistics.linear_regression([u for u, _ in points], [t for _, t in points])
        if slope > 0 and intercept >= 0:
            return Rate(slope, intercept)
    return Rate(statistics.median(t / u for u, t in points))


def seconds_per_unit(run_folders: Iterable[Path]) -> tuple[dict[str, Rate], str]:
    """Each stage kind's Rate, from earlier runs' stages.json (seconds) and stage.json records
    (steps, samples)."""
    points: dict[str, list[tuple[int, float]]] = {}
    n_runs = 0
    for folder in run_folders:
        try:
            events = json.loads((folder / "stages.json").read_text())["events"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        n_runs += 1
        for e in events:
            if e.get("status") != "ran" or not e.get("seconds"):
                continue
            name = e["stage"]
            kind, units = None, None
            if name.startswith("train "):
                arm, seed = name.split()[1], name.split()[-1]
                kind, units = "train", (read_record(folder / stages.train_folder(arm, int(seed))) or {}).get("steps")
            elif name.startswith("evaluate "):
                arm, seed = name.split()[1], name.split()[-1]
                kind, units = "evaluate", (read_record(folder / "eval" / arm / f"seed{seed}") or {}).get("samples")
            if kind and isinstance(units, int) and units > 0:
                points.setdefault(kind, []).append((units, float(e["seconds"])))
    rates = {k: fit_rate(v) for k, v in points.items()}
    if not rates:
        return {}, "no earlier run of this profile on this machine: time unknown until one has run"
    shown = ", ".join(f"{k} {rates[k].per_unit:.3g} s per {'step' if k == 'train' else 'sample'}"
                      + (f" + {rates[k].overhead:.3g} s a stage" if rates[k].overhead else "")
                      + f" ({len(points[k])} stages)" for k in sorted(rates))
    return rates, f"from {n_runs} earlier run(s) of this profile on this machine: {shown}"


def gather(exp: CompiledExperiment, shape: stages.Shape, runs_dir: Path, use_api: bool = True) -> Facts:
    """The facts of one run's bill: data, token counts and earlier timings."""
    from .experiment import training_rows

    data, asked = build_rows(exp, shape.root)
    plan = exp.plan
    prof = plan.profiles[shape.profile]
    rows = {b: {s: len(r) for s, r in splits.items()} for b, splits in data.items()}
    filters = _module(exp.files["feedback.py"], f"ectc_bill_{exp.name}_feedback").FILTERS
    train_rows = {arm.name: len(training_rows(plan, filters, arm, data)) for arm in plan.arms if arm.trains}
    data_requests: dict[str, tuple[int, int]] = {}
    how = ""
    for model, prompts in asked.items():
        count, how = token_counter(model, use_api=use_api)
        data_requests[model] = (len(prompts), round(_mean_tokens(count, prompts) * len(prompts)))
    judge_tokens: dict[str, int] = {}
    items = data.get(plan.main_data, {}).get(plan.evaluate.split, [])
    most = min(prof.generate.max_new_tokens, plan.response.max_tokens or 10**9)
    for name, prompts in judge_requests(exp, items, most).items():
        monitor = next(m for m in plan.monitors if m.name == name)
        returns = {k: f.dump() for k, f in monitor.returns.items()}
        from .llm import verdict_model, verdict_tool

        count, how = token_counter(monitor.model, monitor.settings.get("system"),
                                   verdict_tool(verdict_model(returns)), use_api=use_api)
        judge_tokens[name] = round(_mean_tokens(count, prompts))
    folders = [f for f in (Path(runs_dir) / plan.name).glob("*") if f.is_dir() and _run_profile(f) == shape.profile]
    rates, time_how = seconds_per_unit(folders)
    if not rates:  # no real run yet: a calibration's, if `ectc plan --calibrate` made one
        rates, time_how = seconds_per_unit(sorted((Path(runs_dir) / CALIBRATION_DIR / plan.name).glob(f"{shape.profile}-*")))
        time_how = time_how.replace("earlier run(s) of this profile", "calibration run(s) (`ectc plan --calibrate`)", 1) \
            if rates else "no earlier run of this profile on this machine: time unknown (`ectc plan --calibrate` times a short run)"
    from .llm import llm_available

    return Facts(rows, train_rows, data_requests, judge_tokens, how, llm_available(), rates, time_how)


def _run_profile(folder: Path) -> Optional[str]:
    try:
        return json.loads((folder / "plan.json").read_text())["run"]["profile"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
