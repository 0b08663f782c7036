"""Every stage key of a run, computed without running anything (and without torch).

This mirrors, formula for formula, the keys `ectc/runtime/run.py` (and `runtime/report.py`)
write to each stage's `stage.json`: `stage_data`, `stage_base`, `train_key`, `stage_probes`,
`eval_key`, `stage_report`. `tests/test_plan.py` runs a tiny experiment and asserts that these
keys equal the ones the runtime wrote, so any drift between the two fails CI.

A stage's key is the hash of a dict of *components*; `StageKey.parts` keeps that dict (each
component hashed) so `ectc plan` can say which component changed.

The input is the generated files of one experiment, either in memory (`generate()`'s output, as
`ectc diff` and `ectc plan` use it) or a `generated/<experiment>/` folder.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .runtime.experiment import Arm, PlanView, _strip_header, content_hash, json_hash, training_identity

# The probe outputs feed the evaluation key (run.py hashes the probe *values*). They are only
# known after the probes ran; until then a placeholder derived from the probe key stands in.
PROBE_VALUES_UNKNOWN = "probe-values-of:"


class GeneratedExperiment(PlanView):
    """The parts of `runtime.experiment.Experiment` that stage keys read, from a file map."""

    def __init__(self, files: dict[str, str]):
        self.files = files
        self.plan: dict = json.loads(files["experiment.json"])
        self.templates = {path[len("prompts/"):-3]: _strip_header(text)
                          for path, text in sorted(files.items())
                          if path.startswith("prompts/") and path.endswith(".j2")}

    @classmethod
    def from_generated(cls, generated: dict[str, str]) -> dict[str, "GeneratedExperiment"]:
        """`generate()`'s output ({"<exp>/<path>": text}) split per experiment."""
        per: dict[str, dict[str, str]] = {}
        for path, text in generated.items():
            exp, rel = path.split("/", 1)
            per.setdefault(exp, {})[rel] = text
        return {name: cls(files) for name, files in per.items()}

    @classmethod
    def from_folder(cls, folder: Path) -> "GeneratedExperiment":
        folder = Path(folder)
        return cls({p.relative_to(folder).as_posix(): p.read_text() for p in folder.rglob("*")
                    if p.is_file() and "__pycache__" not in p.parts})

    def file_hash(self, rel: str) -> str:
        return content_hash(self.files[rel])

    def profile(self, name: str | None) -> tuple[str, dict]:
        name = name or self.plan["default_profile"]
        if name not in self.plan["profiles"]:
            raise KeyError(f"no profile {name!r}; the spec has {', '.join(self.plan['profiles'])}")
        return name, self.plan["profiles"][name]

    def train_config(self, profile: str, arm: str) -> dict:
        cfg = json.loads(self.files[f"train/{profile}/{arm}.json"])
        cfg.pop("_generated", None)
        return cfg


@dataclass
class StageKey:
    stage: str             # the name run.py logs: "data", "train ect seed 0", "report", ...
    key: str
    parts: dict[str, str]  # component -> its hash
    folder: str | None     # the stage's folder, relative to the run folder (None: the model cache)
    requires: list[str] = field(default_factory=list)  # outputs that must exist (relative)
    cache_dir: str | None = None  # base model: the cache folder under runs_dir


def _parts(obj: dict) -> dict[str, str]:
    return {k: (v if isinstance(v, str) and len(v) == 64 else json_hash(v)) for k, v in obj.items()}


def recipe_hash(recipe: dict) -> str:
    """`runtime.models.recipe_hash` (that module imports torch)."""
    canonical = json.dumps(recipe, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def scaled(n: int, steps_scale: float) -> int:
    """`run._scaled`."""
    return max(1, int(round(n * steps_scale))) if n > 0 else n


def conditions(exp: GeneratedExperiment, arm: Arm) -> list[tuple[str, Any]]:
    """`run.conditions`."""
    if arm.infer == "none":
        return [("none", exp.plan["axis"]["deploy"])]
    if arm.infer == "true":
        return [("true", None)]
    out: list[tuple[str, Any]] = [("deploy", exp.plan["axis"]["deploy"])]
    sweep = exp.plan["evaluate"].get("sweep")
    if sweep:
        out += [(f"sweep={v}", v) for v in sweep["values"]]
    return out


def llm_mode(exp: GeneratedExperiment) -> str:
    """The data stage's `llm` component: whether LLM-written data fields use Claude."""
    if not any(b["llm_fields"] for b in exp.plan["data"]):
        return "offline"
    from .runtime.llm import llm_available

    return "anthropic" if llm_available() else "offline"


def stage_keys(exp: GeneratedExperiment, profile: str | None = None, seeds: int | list[int] | None = None,
               arms: list[str] | None = None, steps_scale: float = 1.0, llm: str | None = None,
               probe_values: dict | None = None) -> dict[str, StageKey]:
    """Every stage key of one run, in the order run.py executes the stages.

    `seeds`, `arms`, `steps_scale` are the run's Options (`--seeds N` means range(N)).
    `probe_values`: the probes' output when known (a previous run's probes/values.json with an
    unchanged probe key); otherwise evaluation keys use a placeholder derived from the probe key.
    """
    profile_name, prof = exp.profile(profile)
    if seeds is None:
        seed_list = list(prof["seeds"])
    elif isinstance(seeds, int):
        seed_list = list(range(seeds))
    else:
        seed_list = list(seeds)
    out: dict[str, StageKey] = {}

    # data (run.stage_data)
    data_obj = {"dataset": exp.file_hash("dataset.py"), "data": exp.plan["data"],
                "llm": llm if llm is not None else llm_mode(exp)}
    data_key = json_hash(data_obj)
    out["data"] = StageKey("data", data_key, _parts(data_obj), "data")

    # base model (run.stage_base)
    model_cfg = prof["model"]
    if model_cfg["type"] == "hf":
        base_obj = {"hf": model_cfg, "quantize": prof["quantize"]}
        base_key = json_hash(base_obj)
        out["base model"] = StageKey("base model", base_key, _parts(base_obj), None)
    else:
        warmup = dict(prof["warmup"] or {})
        if warmup:
            warmup["steps"] = scaled(warmup["steps"], steps_scale)
        template_keys = sorted(k for k in exp.templates if not k.startswith("judge."))
        recipe = {
            "model": model_cfg, "warmup": warmup, "data": data_key,
            "templates": {k: hashlib.sha256(exp.templates[k].encode()).hexdigest() for k in template_keys},
            "profile_templates": prof["templates"], "version": 1,
        }
        base_key = json_hash(recipe)
        out["base model"] = StageKey("base model", base_key, _parts(recipe), None,
                                     cache_dir=f".cache/models/{recipe_hash(recipe)[:20]}")

    # training (run.execute + run.train_key)
    selected = [a for a in exp.arms if not arms or a.name in arms]
    needed: list[Arm] = []
    for arm in selected:
        source = exp.arm(arm.trained_as)
        if source not in needed:
            needed.append(source)
    fb = exp.file_hash("feedback.py")
    train_templates = {k: v for k, v in exp.templates.items() if not k.startswith(("judge.", "probe."))}
    train_keys: dict[tuple[str, int], str] = {}
    for arm in needed:
        cfg = training_identity(exp.train_config(profile_name, arm.name))
        for seed in seed_list:
            obj = {"config": cfg, "base": base_key, "data": data_key, "seed": seed, "feedback": fb,
                   "scale": steps_scale, "templates": train_templates}
            key = json_hash(obj)
            train_keys[(arm.name, seed)] = key
            name = f"train {arm.name} seed {seed}"
            out[name] = StageKey(name, key, _parts(obj), f"arms/{arm.name}/seed{seed}", requires=["final"])

    # probes (run.stage_probes)
    probes = exp.plan["evaluate"]["probes"]
    if probes:
        obj = {"data": data_key, "base": base_key, "probes": probes, "fb": fb,
               "templates": {p["prompt"]: exp.templates[p["prompt"]] for p in probes}}
        probe_key = json_hash(obj)
        out["probes"] = StageKey("probes", probe_key, _parts(obj), "probes", requires=["values.json"])
        values_hash = json_hash(probe_values) if probe_values is not None else PROBE_VALUES_UNKNOWN + probe_key
    else:
        values_hash = json_hash({})

    # evaluation (run.eval_key)
    ev = exp.plan["evaluate"]
    eval_keys: dict[tuple[str, int], str] = {}
    for arm in selected:
        for seed in seed_list:
            obj = {"train": train_keys[(arm.trained_as, seed)], "data": data_key, "arm": arm.__dict__,
                   "conditions": conditions(exp, arm), "split": ev["split"], "samples": ev.get("samples"),
                   "generate": prof["generate"], "feedback": fb, "probes": values_hash,
                   "monitors": exp.plan["monitors"], "templates": exp.templates}
            key = json_hash(obj)
            eval_keys[(arm.name, seed)] = key
            name = f"evaluate {arm.name} seed {seed}"
            out[name] = StageKey(name, key, _parts(obj), f"eval/{arm.name}/seed{seed}",
                                 requires=["samples.jsonl"])

    # report (report.stage_report)
    obj = {"evals": sorted(eval_keys.items()), "metrics": exp.file_hash("metrics.py"), "plan": exp.plan["evaluate"]}
    out["report"] = StageKey("report", json_hash(obj), _parts(obj), "report",
                             requires=["../metrics.json"])
    return out
