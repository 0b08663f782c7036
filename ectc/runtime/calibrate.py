"""`ectc plan --calibrate`: short runs that time this machine for the bill (`bill.py`)."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

from ..plan import stages
from .bill import CALIBRATION_DIR, gather, stage_bill
from .experiment import Experiment
from .lock import run_folder_lock
from .run import Options, execute, flush_denormals, prepare, run_folder

CALIBRATION_SIZES = ((4, 4), (16, 16))  # (training steps, evaluation items): two sizes, so per step and per stage separate


def calibrate(spec_path: Path, generated: Path, runs_dir: Path, profile: str | None, console) -> list[Path]:
    """Short runs that time this machine: one seed of the first arm that trains, at two sizes
    (CALIBRATION_SIZES: steps by --steps-scale, evaluation items per label condition), in
    runs_dir/.calibrate/<exp>/<profile>-<steps>/; `ectc plan` fits seconds per step and per
    stage from their stages.json and records. Returns the calibration run folders."""
    source = spec_path.read_text()
    sha = hashlib.sha256(source.encode()).hexdigest()
    folders = []
    for manifest in sorted(Path(generated).glob("*/manifest.json")):
        if json.loads(manifest.read_text()).get("spec_sha256") != sha:
            continue
        exp = Experiment(manifest.parent)
        name, _ = exp.plan.profile(profile)
        arm = stages.training_arms(exp.plan, [a.name for a in exp.plan.arms])[0]
        shape = stages.shape(exp, name, 1, [arm.name], 1.0, "offline", spec_path.parent)
        train = next(s for s in stages.keys(exp, shape).values() if s.kind == "train")
        full = stage_bill(exp, shape, train, gather(exp, shape, runs_dir, use_api=False)).units
        for steps, items in CALIBRATION_SIZES:
            opts = Options(profile=name, run_id=f"{name}-{steps}", runs_dir=Path(runs_dir) / CALIBRATION_DIR, seeds=1,
                           arms=[arm.name], steps_scale=min(1.0, steps / max(1, full)), through="evaluate",
                           eval_limit=items)
            with run_folder_lock(run_folder(exp, opts)):
                run = prepare(exp, source, opts, console)
                console.print(f"calibrating {exp.name} · profile {name}: arm {arm.name}, ~{steps} of {full} steps, "
                              f"{items} items per label condition, in {run.folder}")
                t0 = time.perf_counter()
                with flush_denormals():
                    execute(run)
                run.write_stage_log(time.perf_counter() - t0)
            folders.append(run.folder)
    return folders
