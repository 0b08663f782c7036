"""`ectc run`'s flags, checked before anything slow: no torch import, no data, no model.

Every problem is collected and reported at once, with a did-you-mean where a name is close.
Relative `--generated` and `--runs-dir` are taken from the spec's project (the nearest folder
above the spec that holds `generated/`), so `ectc run /abs/path/specs/x.ect` works from anywhere.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any

from . import extras
from .errors import did_you_mean
from .plan.model import Plan

RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?|mps")


def project_root(spec: Path, cwd: Path) -> Path:
    """The nearest folder above the spec that holds `generated/`; else the current folder."""
    for folder in spec.resolve().parents:
        if (folder / "generated").is_dir():
            return folder
    return cwd


def check_run_flags(args: Any, cwd: Path) -> list[str]:
    """Problems with the run's flags (empty when all is well). Resolves `args.generated` and
    `args.runs_dir` against the project root as a side effect on `args`."""
    problems: list[str] = []
    if args.run_id is not None and (not RUN_ID.fullmatch(args.run_id) or ".." in args.run_id):
        problems.append(f"--run-id {args.run_id!r}: a run id is a name (letters, digits, '.', '_', '-'; "
                        "at most 100 characters; no '/' or '..'), used as a folder under runs/<experiment>/")
    if args.seeds is not None and not 1 <= args.seeds <= 1000:
        problems.append(f"--seeds {args.seeds}: need between 1 and 1000 seeds")
    if not (math.isfinite(args.steps_scale) and 0 < args.steps_scale <= 1000):
        problems.append(f"--steps-scale {args.steps_scale}: need a positive factor (at most 1000)")
    if not DEVICE.fullmatch(args.device):
        problems.append(f"--device {args.device!r}: use auto, cpu, cuda, cuda:N or mps")
    if getattr(args, "processes", 1) < 1:
        problems.append(f"--processes {args.processes}: need at least 1")
    what = f"ectc {getattr(args, 'command', None) or 'run'}"
    needed = ["train"] + (["slurm"] if getattr(args, "executor", "local") != "local" else [])
    problems += [p for p in (extras.problem(extra, what) for extra in needed) if p]
    spec = Path(args.spec)
    if not spec.is_file():
        problems.append(f"cannot read {args.spec}: no such file")
        return problems
    root = project_root(spec, cwd)
    for attr in ("generated", "runs_dir"):
        if not Path(getattr(args, attr)).is_absolute():
            setattr(args, attr, str(root / getattr(args, attr)))
    return problems


def check_plan_flags(args: Any, plan: Plan) -> list[str]:
    """Flags that name things in the compiled experiment: the profile and the arms."""
    problems = []
    profiles = list(plan.profiles)
    if args.profile is not None and args.profile not in profiles:
        hint = did_you_mean(args.profile, profiles)
        problems.append(f"--profile {args.profile!r}: {plan.name} has no such profile (it has "
                        f"{', '.join(profiles)})" + (f"; {hint}" if hint else ""))
    if args.arms:
        names = [a.name for a in plan.arms]
        for arm in args.arms.split(","):
            if arm not in names:
                hint = did_you_mean(arm, names)
                problems.append(f"--arms: {plan.name} has no arm {arm!r} (it has {', '.join(names)})"
                                + (f"; {hint}" if hint else ""))
    return problems + extra_problems(args, plan)


def extra_problems(args: Any, plan: Plan) -> list[str]:
    """The extras this plan needs beyond [train]: [judge] where Claude would be called (a key is
    set and the spec has LLM data or judges; without a key they fall back or stay unscored), and
    [vllm] where the profile generates through it."""
    what = f"ectc {getattr(args, 'command', None) or 'run'}"
    needed = []
    if os.environ.get("ANTHROPIC_API_KEY") and (plan.uses_llm_data or any(m.type == "llm" for m in plan.monitors)):
        needed.append("judge")
    try:
        if plan.profile(args.profile)[1].generate.backend == "vllm":
            needed.append("vllm")
    except KeyError:
        pass  # no such profile: check_plan_flags says so
    return [p for p in (extras.problem(extra, what) for extra in needed) if p]


def check_input_files(plan: Plan, spec: Path, project: Path, allow_outside: bool) -> list[str]:
    """Data files and word lists the run will read: each must be there, and inside the project
    (the folder holding generated/) unless `--allow-outside-files`, so a spec cannot read
    `../../../../etc/passwd` into a dataset by accident or design."""
    wanted = [(f"data `{name}`", path, plan.data_block(name).source) for name, path in plan.data_files().items()]
    wanted += [(f"monitor `{name}` list `{key}`", path, "file")
               for name, lists in plan.monitor_files().items() for key, path in lists.items()]
    problems = []
    root, inside = spec.resolve().parent, project.resolve()
    for what, path, source in wanted:
        file = (root / path).resolve()
        if source == "hf" and not file.exists():
            continue  # not a folder here: a hub id, which datasets.load_dataset fetches
        if not allow_outside and not file.is_relative_to(inside):
            problems.append(f"{what}: {path} resolves to {file}, outside the project {inside}; "
                            "pass --allow-outside-files to read it")
        elif source in ("disk", "hf") and not file.is_dir():
            problems.append(f"{what}: {path}: no such folder (a `disk` source is a folder saved by datasets)")
        elif source not in ("disk", "hf") and not file.is_file():
            problems.append(f"{what}: {path}: " + ("is a folder, not a file" if file.is_dir() else "no such file"))
    return problems


def check_model_file(plan: Plan, profile: str | None, spec: Path, project: Path, allow_outside: bool) -> list[str]:
    """The GGUF file the chosen profile's model reads: there, and (as a path) inside the project
    unless `--allow-outside-files`; a file an installed package ships is read wherever it is."""
    try:
        _, prof = plan.profile(profile)
    except KeyError:
        return []  # check_plan_flags says so
    model = prof.model
    if model.type != "gguf":
        return []
    root = spec.resolve().parent
    found = model.locate(root)
    if found is not None and model.package is None and not allow_outside \
            and not found.resolve().is_relative_to(project.resolve()):
        return [f"model gguf {model.describe()}: resolves to {found.resolve()}, outside the project "
                f"{project.resolve()}; pass --allow-outside-files to read it"]
    problem = model.unreadable(root)
    return [problem] if problem else []


def read_plan(generated: Path, experiment: str) -> Plan | None:
    """The compiled plan, or None where there is none yet (the run then says to build);
    PlanError where one is there that this ectc does not read."""
    path = generated / experiment / "experiment.json"
    try:
        text = path.read_text()
    except OSError:
        return None
    return Plan.load(text, str(path))


HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?")


def default_eval_arm(plan: Plan) -> str:
    """The arm a checkpoint trained elsewhere is evaluated as by default: the one trained with
    the true label and asked at the deployment label (ECT), else the first asked there."""
    for fits in (lambda a: a.train_label == "true" and a.infer == "deploy", lambda a: a.infer == "deploy",
                 lambda a: True):
        found = next((a.name for a in plan.arms if fits(a)), None)
        if found:
            return found
    raise ValueError("a plan without arms")  # the checker refuses such a spec


def check_eval_flags(args: Any, plan: Plan) -> list[str]:
    """`ectc eval`'s own flags: the arm (chosen when not given), each checkpoint (a folder saved by
    save_pretrained, or a hub id), and the run id (eval-<checkpoint name> when not given)."""
    problems = []
    names = [a.name for a in plan.arms]
    if args.arm is None:
        args.arm = default_eval_arm(plan)
    elif args.arm not in names:
        hint = did_you_mean(args.arm, names)
        problems.append(f"--arm {args.arm!r}: {plan.name} has no such arm (it has {', '.join(names)})"
                        + (f"; {hint}" if hint else ""))
    for source in args.checkpoint:
        path = Path(source)
        if path.is_dir():
            if not any((path / f).is_file() for f in ("config.json", "adapter_config.json")):
                problems.append(f"--checkpoint {source}: no config.json or adapter_config.json there: not a "
                                "model saved by save_pretrained")
        elif path.exists() or not HUB_ID.fullmatch(source):
            problems.append(f"--checkpoint {source}: " + ("not a folder" if path.exists() else "no such folder")
                            + ", and not a hub id (org/name)")
    if args.run_id is None:
        name = Path(args.checkpoint[0].rstrip("/")).name if Path(args.checkpoint[0]).exists() \
            else args.checkpoint[0].replace("/", "--")
        args.run_id = "eval-" + (re.sub(r"[^A-Za-z0-9._-]", "-", name).strip(".") or "checkpoint")[:90]
    return problems
