"""The stage graph: every stage of a run, its inputs and its key, defined once.

    data -> base model -> probes -> train (arm, seed) -> evaluate (arm, seed)
         -> judge (arm, seed; when the experiment has monitors) -> report

The probes ask the base model before any arm trains, so its skill is known (and a `require`
checked) at once; a probe that asks a trained arm (`checkpoint ect`) moves them after training.

`ectc eval` walks the same graph with models trained elsewhere: one checkpoint stage per seed
(keyed on the checkpoint's content) stands in for the base model and the training.

`walk` visits the stages in that order and hands each to a `settle` callback, which returns the
stage's *output hash*; the stages downstream put that hash in their keys. The runtime's settle
runs the stage (or reuses it); `ectc plan`'s settle reads the record a previous run left
(`records.output_or_unknown`); `ectc diff`'s settle knows nothing and returns a placeholder.
So `run`, `plan`, `diff` and the fan-out all compute keys through this one module, as
terraform's plan and apply read one graph.

A key is `json_hash` of a dict of *components* (`Stage.parts` keeps each component hashed, so
`ectc plan` can say which changed). Input files (data files, word lists) enter as their content
hash; upstream stages enter as their output hash, never their key, so a stage that re-ran to
different bytes invalidates what read it and one that re-ran to the same bytes does not.

Torch-free.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Optional

from .compiled import CompiledExperiment, json_hash
from .model import BASE, Arm, Plan
from .records import OUTPUT_UNKNOWN, content_hash, input_hashes, output_or_unknown, tree_hash

# What the stages are, in run order.
KINDS = ("data", "base", "checkpoint", "probes", "train", "evaluate", "judge", "report")


@dataclass(frozen=True)
class Checkpoint:
    """A model trained elsewhere, evaluated by `ectc eval`: a local folder (save_pretrained's) or a
    hub id. `digest` is what its stage key holds: the hash of the folder's files, or the hub
    commit the id resolved to, so different weights re-evaluate and the same weights do not."""

    source: str
    digest: str
    revision: Optional[str] = None

    @classmethod
    def folder(cls, path: Path) -> "Checkpoint":
        path = Path(path).resolve()
        digest = tree_hash(path, [p.name for p in path.iterdir()]) if path.is_dir() else None
        if digest is None:
            raise ValueError(f"{path}: not a folder holding a saved model")
        return cls(str(path), digest)

    def dump(self) -> dict[str, Any]:
        return {"source": self.source, "digest": self.digest, "revision": self.revision}


@dataclass(frozen=True)
class Shape:
    """What a run is, as far as keys go: the profile, seeds and arms it runs, --steps-scale,
    whether LLM-written data uses Claude ("anthropic") or the offline writer, and the spec's
    folder (where its data files and word lists are)."""

    profile: str
    seeds: tuple[int, ...]
    arms: tuple[str, ...]  # the arms evaluated (all, unless --arms chose)
    steps_scale: float = 1.0
    llm: str = "offline"
    root: Path = Path(".")
    checkpoints: tuple[Checkpoint, ...] = ()  # `ectc eval`: seed k evaluates checkpoints[k]


def shape(exp: CompiledExperiment, profile: Optional[str] = None, seeds: int | Iterable[int] | None = None,
          arms: Optional[Iterable[str]] = None, steps_scale: float = 1.0, llm: str = "offline",
          root: Optional[Path] = None, checkpoints: Iterable[Checkpoint] = ()) -> Shape:
    """A run's shape from its options: `seeds` N means range(N), None the profile's own; with
    checkpoints (`ectc eval`), one seed per checkpoint."""
    name, prof = exp.plan.profile(profile)
    checkpoints = tuple(checkpoints)
    if checkpoints:
        seed_list = tuple(range(len(checkpoints)))
    elif seeds is None:
        seed_list = tuple(prof.seeds)
    elif isinstance(seeds, int):
        seed_list = tuple(range(seeds))
    else:
        seed_list = tuple(seeds)
    chosen = tuple(a.name for a in exp.plan.arms if not arms or a.name in set(arms))
    return Shape(name, seed_list, chosen, steps_scale, llm, Path(root) if root is not None else spec_root(exp.plan),
                 checkpoints)


@dataclass(frozen=True)
class Stage:
    kind: str                 # one of KINDS
    name: str                 # as the run logs it: "data", "train ect seed 0", "judge ect seed 0", ...
    key: str
    parts: dict[str, str]     # component -> its hash (strings kept readable)
    folder: Optional[str]     # relative to the run folder; the model cache's for a tiny base; None for a hub model
    outputs: tuple[str, ...] = ()  # what the stage leaves in its folder (recorded in stage.json)
    arm: Optional[str] = None
    seed: Optional[int] = None
    in_cache: bool = False    # folder is under runs_dir (the model cache), not the run folder
    conditions: dict[str, str] = field(default_factory=dict)  # evaluate: a key per label condition
    upstream: dict[str, str] = field(default_factory=dict)    # the output hashes it was keyed on

    def path(self, run_folder: Path, runs_dir: Path) -> Optional[Path]:
        if self.folder is None:
            return None
        return Path(runs_dir if self.in_cache else run_folder) / self.folder


def components(obj: dict[str, Any]) -> dict[str, str]:
    """Each component of a key, hashed (strings kept, so hashes and placeholders stay readable)."""
    return {k: (v if isinstance(v, str) else json_hash(v)) for k, v in obj.items()}


def _stage(kind: str, name: str, parts: dict[str, Any], folder: Optional[str], outputs: tuple[str, ...] = (),
           **extra: Any) -> Stage:
    hashed = components(parts)  # the key hashes the components' hashes: each is hashed once
    return Stage(kind, name, json_hash(hashed), hashed, folder, outputs, **extra)


def spec_root(plan: Plan) -> Path:
    """Paths in a spec (data files, word lists) are relative to the spec's folder."""
    return Path(plan.spec).parent


def scaled(n: int, steps_scale: float) -> int:
    """A step count under --steps-scale (never below one step)."""
    return max(1, int(round(n * steps_scale))) if n > 0 else n


def sft_steps(sft_config: Mapping[str, Any], examples: int) -> int:
    """Optimizer steps of a trl SFT run (`trl.SFTConfig` kwargs) over `examples` rows, as trl
    counts them."""
    if sft_config.get("max_steps", -1) > 0:
        return int(sft_config["max_steps"])
    per_epoch = math.ceil(examples / (sft_config["per_device_train_batch_size"]
                                      * sft_config["gradient_accumulation_steps"]))
    return math.ceil(per_epoch * sft_config["num_train_epochs"])


def recipe_hash(recipe: dict) -> str:
    """The model cache's folder name for a tiny base model's recipe."""
    import json

    canonical = json.dumps(recipe, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


# Settings of a train config that do not decide an arm's weights: the number of seeds (each seed
# is its own stage), generation and evaluation (how the arm is asked later), where its
# statistics are reported (a tracker only watches) and how often it checkpoints (a resumed arm
# ends bit-for-bit where an uninterrupted one does: tests/test_resume.py).
NOT_TRAINING = ("seeds", "generate", "evaluation", "track", "checkpoint_every")


def training_identity(cfg: dict) -> dict:
    """The part of an arm's train config that decides its weights (all but NOT_TRAINING)."""
    out = {k: v for k, v in cfg.items() if k not in NOT_TRAINING}
    out["arm"] = {k: v for k, v in cfg["arm"].items() if k != "infer"}
    return out


def training_arms(plan: Plan, arms: Iterable[str]) -> list[Arm]:
    """The arms whose checkpoints the chosen arms evaluate (an arm that reuses another's
    checkpoint trains nothing itself), in the spec's order of first use."""
    out: list[Arm] = []
    for name in arms:
        arm = plan.arm(name)
        if arm.out_of_the_box:
            continue  # the base model itself: nothing to train
        source = plan.arm(arm.trained_as)
        if source not in out:
            out.append(source)
    return out


JUDGE = "judge."  # the judges' rubrics; every other template is what the model is shown
PROBE = "probe."


# ---- the stages ------------------------------------------------------------------------------


def data_stage(exp: CompiledExperiment, shape: Shape) -> Stage:
    plan = exp.plan
    parts = {"dataset": exp.file_hash("dataset.py"), "data": [b.dump() for b in plan.data],
             "llm": shape.llm if plan.uses_llm_data else "offline",
             "inputs": input_hashes(shape.root, plan.data_files())}
    outputs = tuple(f"{b}.{s}.jsonl" for b, splits in plan.data_splits().items() for s in splits)
    return _stage("data", "data", parts, "data", outputs)


def base_recipe(exp: CompiledExperiment, shape: Shape, data_out: str) -> dict[str, Any]:
    """The base model: a hub model by its config; a tiny one by its recipe (also its cache key); a
    GGUF file by its content hash and the dtype it is kept in (the cached conversion is shared by
    every spec that names the same bytes, whatever package or path they come from)."""
    plan = exp.plan
    prof = plan.profiles[shape.profile]
    if prof.model.type == "hf":
        return {"hf": prof.model.dump(), "quantize": prof.quantize}
    if prof.model.type == "gguf":
        located = prof.model.locate(shape.root)
        digest = (content_hash(located) if located is not None else None) or "missing"
        return {"gguf": {"sha256": digest, "dtype": prof.model.dtype}, "quantize": prof.quantize, "version": 1}
    warmup = dict(prof.warmup or {})
    if warmup:
        warmup["steps"] = scaled(warmup["steps"], shape.steps_scale)
        if plan.response.type == "text":
            warmup["eos"] = True  # free text ends at EOS: the warm-up teaches where to stop
    shown = {k: v for k, v in exp.templates_of(shape.profile).items() if not k.startswith(JUDGE)}
    return {
        "model": prof.model.dump(), "warmup": warmup, "data": data_out,
        "templates": {k: hashlib.sha256(shown[k].encode()).hexdigest() for k in sorted(shown)},
        "profile_templates": prof.templates.dump(), "version": 1,
    }


def base_stage(exp: CompiledExperiment, shape: Shape, data_out: str) -> Stage:
    recipe = base_recipe(exp, shape, data_out)
    if "hf" in recipe:
        return _stage("base", "base model", recipe, None, upstream={"data": data_out})
    return _stage("base", "base model", recipe, f".cache/models/{recipe_hash(recipe)[:20]}", in_cache=True,
                  upstream={"data": data_out})


def checkpoint_stage(exp: CompiledExperiment, shape: Shape, seed: int, checkpoint: Checkpoint) -> Stage:
    """A model trained elsewhere, for seed `seed`: nothing runs; it is loaded as saved (its own
    dtype) with the profile's quantization, and its key is its content."""
    parts = {"checkpoint": checkpoint.digest, "quantize": exp.plan.profiles[shape.profile].quantize,
             "dtype": "auto"}
    return _stage("checkpoint", f"checkpoint seed {seed}", parts, None, seed=seed)


def train_folder(arm: str, seed: int) -> str:
    """An arm's training stage folder, relative to the run folder (its weights are `final/` there)."""
    return f"arms/{arm}/seed{seed}"


def _other(exp: CompiledExperiment) -> dict:
    """A choice response's `other` outcome, which training and evaluation answer with: in their
    keys only where declared, so the keys of every other spec stay as they were."""
    other = exp.plan.response.other
    return {} if other is None else {"other": other}


def eval_folder(arm: str, seed: int) -> str:
    """An arm's evaluation stage folder (its `samples.jsonl`), relative to the run folder."""
    return f"eval/{arm}/seed{seed}"


def judge_folder(arm: str, seed: int) -> str:
    """An arm's judge stage folder (its `verdicts.jsonl`), relative to the run folder."""
    return f"judge/{arm}/seed{seed}"


def train_stage(exp: CompiledExperiment, shape: Shape, arm: Arm, seed: int, base_out: str, data_out: str) -> Stage:
    parts = {
        "config": training_identity(exp.train_config(shape.profile, arm.name)), "base": base_out,
        "data": data_out, "seed": seed, "feedback": exp.file_hash("feedback.py"), "scale": shape.steps_scale,
        "templates": exp.templates_hash(without=(JUDGE, PROBE), profile=shape.profile),
        **_other(exp),
    }
    return _stage("train", f"train {arm.name} seed {seed}", parts, train_folder(arm.name, seed), ("final",),
                  arm=arm.name, seed=seed, upstream={"base": base_out, "data": data_out})


def probes_before_training(plan: Plan) -> bool:
    """Whether the probes run right after the base model: every one asks the base (none a trained arm)."""
    return all(p.checkpoint == BASE for p in plan.evaluate.probes)


def probe_stage(exp: CompiledExperiment, base_out: str, data_out: str) -> Stage:
    probes = exp.plan.evaluate.probes
    parts = {"data": data_out, "base": base_out, "probes": [p.dump() for p in probes],
             "fb": exp.file_hash("feedback.py"), "templates": {p.prompt: exp.templates[p.prompt] for p in probes}}
    return _stage("probes", "probes", parts, "probes", ("values.json",), upstream={"base": base_out})


def eval_stage(exp: CompiledExperiment, shape: Shape, arm: Arm, seed: int, train_out: str, data_out: str,
               probes_out: str) -> Stage:
    """Generation (or choice probabilities) under each of the arm's label conditions, with the
    feedback terms; no monitor verdicts (the judge stage adds those)."""
    plan = exp.plan
    prof = plan.profiles[shape.profile]
    conditions = prof.evaluation.conditions[arm.name]
    inputs = {
        "train": train_out, "data": data_out, "arm": arm.dump(),
        "split": plan.evaluate.split, "samples": prof.evaluation.samples, "generate": prof.generate.dump(),
        "feedback": exp.file_hash("feedback.py"), "probes": probes_out, "templates": exp.templates_hash(without=(JUDGE,), profile=shape.profile),
        **_other(exp),
    }
    digest = json_hash(inputs)
    # A key per condition: a changed sweep re-evaluates only the conditions it adds.
    cond_keys = {name: json_hash({"inputs": digest, "condition": [name, value]}) for name, value in conditions}
    parts = {**inputs, "conditions": [list(c) for c in conditions]}
    return _stage("evaluate", f"evaluate {arm.name} seed {seed}", parts, eval_folder(arm.name, seed),
                  ("samples.jsonl",), arm=arm.name, seed=seed, conditions=cond_keys,
                  upstream={"train": train_out, "probes": probes_out})


def judge_stage(exp: CompiledExperiment, shape: Shape, arm: Arm, seed: int, eval_out: str) -> Stage:
    """The monitors over stored samples: a rubric edit re-judges, and generates nothing."""
    plan = exp.plan
    parts = {"evaluation": eval_out, "monitors": [m.dump() for m in plan.monitors],
             "rubrics": exp.templates_hash(only=JUDGE), "inputs": input_hashes(shape.root, plan.monitor_files()),
             "expr": exp.file_hash("feedback.py")}
    return _stage("judge", f"judge {arm.name} seed {seed}", parts, judge_folder(arm.name, seed),
                  ("verdicts.jsonl",), arm=arm.name, seed=seed, upstream={"samples": eval_out})


def report_plan(plan: Plan) -> dict[str, Any]:
    """The evaluate block as the report reads it: not the `require`s, checked before training and
    never reported (so the report keys of specs without one stay as they were)."""
    return {k: v for k, v in plan.evaluate.dump().items() if k != "requires"}


def report_stage(exp: CompiledExperiment, shape: Shape, outs: dict[tuple[str, int], str]) -> Stage:
    """`outs`: (arm, seed) -> the output hash the report reads (the judge's where there is one)."""
    parts = {"evals": sorted([f"{a}/{s}", o] for (a, s), o in outs.items()),
             "metrics": exp.file_hash("metrics.py"),
             "plan": [report_plan(exp.plan), exp.plan.profiles[shape.profile].evaluation.sweep]}
    return _stage("report", "report", parts, "report", ("../metrics.json", "../report.md"))


# ---- the walk --------------------------------------------------------------------------------


Settle = Callable[[Stage], str]


def walk(exp: CompiledExperiment, shape: Shape, settle: Settle, through: str = "report") -> list[Stage]:
    """Visit every stage of the run in order, keyed on the output hashes `settle` returns for the
    stages upstream; stop after the stages of kind `through`. Returns the stages visited."""
    plan = exp.plan
    visited: list[Stage] = []
    last = KINDS.index(through)

    def visit(stage: Stage) -> str:
        visited.append(stage)
        return settle(stage)

    data_out = visit(data_stage(exp, shape))
    probes_out = "none"
    if shape.checkpoints:  # `ectc eval`: no base model to build, nothing to train
        outs_of = [visit(checkpoint_stage(exp, shape, s, c)) for s, c in zip(shape.seeds, shape.checkpoints)]
        base_out = outs_of[0]  # what a probe of the base model asks
        train_outs = {(plan.arm(name).trained_as, s): o for name in shape.arms for s, o in zip(shape.seeds, outs_of)}
    else:
        base_out = visit(base_stage(exp, shape, data_out))
        if last < KINDS.index("probes"):
            return visited
        if plan.evaluate.probes and probes_before_training(plan):
            probes_out = visit(probe_stage(exp, base_out, data_out))
        if last < KINDS.index("train"):
            return visited
        train_outs = {(arm.name, seed): visit(train_stage(exp, shape, arm, seed, base_out, data_out))
                      for arm in training_arms(plan, shape.arms) for seed in shape.seeds}
    if last < KINDS.index("evaluate"):
        return visited
    if plan.evaluate.probes and probes_out == "none":  # `ectc eval`, or a probe asks a trained arm
        probes_out = visit(probe_stage(exp, base_out, data_out))
    outs: dict[tuple[str, int], str] = {}
    for name in shape.arms:
        arm = plan.arm(name)
        for seed in shape.seeds:
            weights = train_outs[(arm.trained_as, seed)] if shape.checkpoints or not arm.out_of_the_box else base_out
            outs[(name, seed)] = visit(eval_stage(exp, shape, arm, seed, weights, data_out, probes_out))
    if last < KINDS.index("judge"):
        return visited
    if plan.monitors:
        for (name, seed), eval_out in list(outs.items()):
            outs[(name, seed)] = visit(judge_stage(exp, shape, plan.arm(name), seed, eval_out))
    if last < KINDS.index("report"):
        return visited
    visit(report_stage(exp, shape, outs))
    return visited


def recorded(run_folder: Optional[Path], runs_dir: Optional[Path]) -> Settle:
    """A settle that runs nothing: a stage's output hash as a previous run recorded it where its
    key and outputs still hold, else a placeholder derived from its key (so what reads it runs too)."""

    def settle(stage: Stage) -> str:
        if stage.folder is None:
            return stage.key  # a hub model: nothing stored, its key stands for it
        where = runs_dir if stage.in_cache else run_folder
        return output_or_unknown(Path(where) / stage.folder if where is not None else None, stage.key)

    return settle


def unknown(stage: Stage) -> str:
    """A settle with no run folder (`ectc diff`): every output is a placeholder of its key."""
    return stage.key if stage.folder is None else OUTPUT_UNKNOWN + stage.key


def keys(exp: CompiledExperiment, shape: Shape, settle: Settle = unknown) -> dict[str, Stage]:
    """Every stage of the run by name, in run order."""
    return {s.name: s for s in walk(exp, shape, settle)}
