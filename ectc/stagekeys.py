"""Every stage key of a run, computed without running anything (and without torch).

The formulas are `ectc/runtime/keys.py`, which the runtime (`run.py`, `report.py`) uses too;
this module walks the stages in run.py's order and feeds each its upstream output hashes (read
from a previous run's records, `runtime/stagefiles.py`). `tests/test_plan.py` runs a tiny
experiment and asserts that these keys equal the ones the runtime wrote.

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

from .runtime import keys
from .runtime.experiment import Arm, PlanView, _strip_header, content_hash, json_hash
from .runtime.stagefiles import output_or_unknown

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


_parts = keys.components


def recipe_hash(recipe: dict) -> str:
    """`runtime.models.recipe_hash` (that module imports torch)."""
    canonical = json.dumps(recipe, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def llm_mode(exp: GeneratedExperiment) -> str:
    """The data stage's `llm` component: whether LLM-written data fields use Claude."""
    if not any(b["llm_fields"] for b in exp.plan["data"]):
        return "offline"
    from .runtime.llm import llm_available

    return "anthropic" if llm_available() else "offline"


def stage_keys(exp: GeneratedExperiment, profile: str | None = None, seeds: int | list[int] | None = None,
               arms: list[str] | None = None, steps_scale: float = 1.0, llm: str | None = None,
               probe_values: dict | None = None, run_folder: Path | None = None,
               runs_dir: Path | None = None, root: Path | None = None) -> dict[str, StageKey]:
    """Every stage key of one run, in the order run.py executes the stages.

    `seeds`, `arms`, `steps_scale` are the run's Options (`--seeds N` means range(N)).
    `probe_values`: the probes' output when known (a previous run's probes/values.json with an
    unchanged probe key); otherwise evaluation keys use a placeholder derived from the probe key.
    `run_folder`, `runs_dir`: where a previous run left its outputs; a downstream key holds the
    output hash an upstream stage recorded there when that stage will be reused (its key and
    outputs hold), else a placeholder derived from the upstream key (so it must run too).
    `root`: the spec's folder, where its data files and word lists are (default: as generated).
    """
    profile_name, prof = exp.profile(profile)
    root = Path(root) if root is not None else keys.spec_root(exp)
    if seeds is None:
        seed_list = list(prof["seeds"])
    elif isinstance(seeds, int):
        seed_list = list(range(seeds))
    else:
        seed_list = list(seeds)
    out: dict[str, StageKey] = {}

    def output(folder: str | None, key: str, base: Path | None = run_folder) -> str:
        return output_or_unknown(Path(base) / folder if base is not None and folder is not None else None, key)

    # data (run.stage_data)
    data_obj = keys.data_parts(exp, llm if llm is not None else llm_mode(exp), root)
    data_key = json_hash(data_obj)
    out["data"] = StageKey("data", data_key, _parts(data_obj), "data")
    data_out = output("data", data_key)

    # base model (run.stage_base)
    base_obj = keys.base_parts(exp, prof, data_out, steps_scale)
    base_key = json_hash(base_obj)
    if prof["model"]["type"] == "hf":
        out["base model"] = StageKey("base model", base_key, _parts(base_obj), None)
        base_out = base_key
    else:
        cache_dir = f".cache/models/{recipe_hash(base_obj)[:20]}"
        out["base model"] = StageKey("base model", base_key, _parts(base_obj), None, cache_dir=cache_dir)
        base_out = output(cache_dir, base_key, runs_dir)

    # training (run.execute + run.train_key)
    selected = [a for a in exp.arms if not arms or a.name in arms]
    needed: list[Arm] = []
    for arm in selected:
        source = exp.arm(arm.trained_as)
        if source not in needed:
            needed.append(source)
    train_outs: dict[tuple[str, int], str] = {}
    for arm in needed:
        for seed in seed_list:
            obj = keys.train_parts(exp, profile_name, arm, seed, base_out, data_out, steps_scale)
            key = json_hash(obj)
            name, folder = f"train {arm.name} seed {seed}", f"arms/{arm.name}/seed{seed}"
            out[name] = StageKey(name, key, _parts(obj), folder, requires=["final"])
            train_outs[(arm.name, seed)] = output(folder, key)

    # probes (run.stage_probes)
    if exp.plan["evaluate"]["probes"]:
        obj = keys.probe_parts(exp, base_out, data_out)
        probe_key = json_hash(obj)
        out["probes"] = StageKey("probes", probe_key, _parts(obj), "probes", requires=["values.json"])
        values_hash = json_hash(probe_values) if probe_values is not None else PROBE_VALUES_UNKNOWN + probe_key
    else:
        values_hash = json_hash({})

    # evaluation (run.stage_eval)
    eval_outs: dict[tuple[str, int], str] = {}
    for arm in selected:
        for seed in seed_list:
            inputs = keys.eval_inputs(exp, prof, arm, train_outs[(arm.trained_as, seed)], data_out, values_hash, root)
            obj = keys.eval_parts(inputs, keys.conditions(exp, arm))
            key = json_hash(obj)
            name, folder = f"evaluate {arm.name} seed {seed}", f"eval/{arm.name}/seed{seed}"
            out[name] = StageKey(name, key, _parts(obj), folder, requires=["samples.jsonl"])
            eval_outs[(arm.name, seed)] = output(folder, key)

    # report (report.stage_report)
    obj = keys.report_parts(exp, eval_outs)
    out["report"] = StageKey("report", json_hash(obj), _parts(obj), "report",
                             requires=["../metrics.json"])
    return out
