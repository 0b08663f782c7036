"""What each stage's key hashes: one formula per stage, used by the runtime (`run.py`,
`report.py`) to decide what to reuse and by `ectc plan` (`ectc/stagekeys.py`) to predict it.

Each function returns the key's *components* (a dict); the key is `json_hash` of it, and
`ectc plan` names the components that changed. Upstream stages enter as their *output* hash
(`stagefiles.record`), never their key, so a stage that re-ran to different bytes invalidates
what read it. Input files (data files, lexicon word lists) enter as their content hash.

Torch-free: `exp` is a `PlanView` (the runtime's `Experiment` or stagekeys' `GeneratedExperiment`).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from .experiment import Arm, PlanView, json_hash, training_identity
from .stagefiles import input_hashes


def components(obj: dict[str, Any]) -> dict[str, str]:
    """Each component of a key, hashed (strings kept, so hashes and placeholders stay readable):
    stage.json records them, and `ectc plan` names the ones that changed."""
    return {k: (v if isinstance(v, str) else json_hash(v)) for k, v in obj.items()}


def spec_root(exp: PlanView) -> Path:
    """Paths in a spec (data files, word lists) are relative to the spec's folder."""
    return Path(exp.plan["spec"]).parent


def data_parts(exp: PlanView, llm_mode: str, root: Path) -> dict[str, Any]:
    return {"dataset": exp.file_hash("dataset.py"), "data": exp.plan["data"], "llm": llm_mode,
            "inputs": input_hashes(root, exp.data_files())}


def scaled(n: int, steps_scale: float) -> int:
    return max(1, int(round(n * steps_scale))) if n > 0 else n


def base_parts(exp: PlanView, profile: dict, data_out: str, steps_scale: float) -> dict[str, Any]:
    """The base model: a hub model by its config; a tiny one by its recipe (also its cache folder)."""
    model_cfg = profile["model"]
    if model_cfg["type"] == "hf":
        return {"hf": model_cfg, "quantize": profile["quantize"]}
    warmup = dict(profile["warmup"] or {})
    if warmup:
        warmup["steps"] = scaled(warmup["steps"], steps_scale)
        if exp.plan["response"]["type"] == "text":
            warmup["eos"] = True  # free text ends at EOS: the warm-up teaches where to stop
    template_keys = sorted(k for k in exp.templates if not k.startswith("judge."))
    return {
        "model": model_cfg, "warmup": warmup, "data": data_out,
        "templates": {k: hashlib.sha256(exp.templates[k].encode()).hexdigest() for k in template_keys},
        "profile_templates": profile["templates"], "version": 1,
    }


def train_parts(exp: PlanView, profile_name: str, arm: Arm, seed: int, base_out: str, data_out: str,
                steps_scale: float) -> dict[str, Any]:
    return {
        "config": training_identity(exp.train_config(profile_name, arm.name)), "base": base_out,
        "data": data_out, "seed": seed, "feedback": exp.file_hash("feedback.py"), "scale": steps_scale,
        "templates": {k: v for k, v in exp.templates.items() if not k.startswith(("judge.", "probe."))},
    }


def probe_parts(exp: PlanView, base_out: str, data_out: str) -> dict[str, Any]:
    probes = exp.plan["evaluate"]["probes"]
    return {"data": data_out, "base": base_out, "probes": probes, "fb": exp.file_hash("feedback.py"),
            "templates": {p["prompt"]: exp.templates[p["prompt"]] for p in probes}}


def conditions(exp: PlanView, arm: Arm) -> list[tuple[str, Any]]:
    """(condition name, axis value) pairs an arm is evaluated under. The value is where the
    feedback and the metrics sit on the axis: an unlabeled arm is deployed like the others (at
    the deployment value, shown no label); `true` (None here) keeps each row's own value."""
    if arm.infer == "none":
        return [("none", exp.plan["axis"]["deploy"])]
    if arm.infer == "true":
        return [("true", None)]
    out: list[tuple[str, Any]] = [("deploy", exp.plan["axis"]["deploy"])]
    sweep = exp.plan["evaluate"].get("sweep")
    if sweep:
        out += [(f"sweep={v}", v) for v in sweep["values"]]
    return out


def eval_inputs(exp: PlanView, profile: dict, arm: Arm, train_out: str, data_out: str, probes: str,
                root: Path) -> dict[str, Any]:
    """What an evaluation's samples depend on besides the label conditions. `probes`: the hash
    of the probe values."""
    ev = exp.plan["evaluate"]
    return {
        "train": train_out, "data": data_out, "arm": arm.__dict__,
        "split": ev["split"], "samples": ev.get("samples"), "generate": profile["generate"],
        "feedback": exp.file_hash("feedback.py"), "probes": probes,
        "monitors": exp.plan["monitors"], "inputs": input_hashes(root, exp.monitor_files()),
        "templates": exp.templates,
    }


def eval_parts(inputs: dict[str, Any], conditions: list[tuple[str, Any]]) -> dict[str, Any]:
    return {**inputs, "conditions": conditions}


def condition_keys(inputs: dict[str, Any], conditions: list[tuple[str, Any]]) -> dict[str, str]:
    """A key per label condition: a changed sweep re-evaluates only the conditions it adds."""
    digest = json_hash(inputs)
    return {name: json_hash({"inputs": digest, "condition": [name, value]}) for name, value in conditions}


def report_parts(exp: PlanView, eval_outs: dict[tuple[str, int], str]) -> dict[str, Any]:
    return {"evals": sorted(eval_outs.items()), "metrics": exp.file_hash("metrics.py"),
            "plan": exp.plan["evaluate"]}
