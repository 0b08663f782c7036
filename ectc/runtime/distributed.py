"""Multi-process (DDP) training of the runtime's jobs, one process per device.

`ectc run --launcher accelerate --processes N` relaunches training through
`python -m ectc.runtime.distributed JOBFILE` under N processes (see scale.launch_training);
every process runs the ordinary `execute` restricted to training, so the same stage keys,
folders and code paths apply. What changes inside a worker:

* The RL fast path (`rl.train_choice_rl`, not edited) runs the *global* algorithm on every
  rank: all ranks draw the same global batch of rows with the same seeded generator, compute
  the same rewards, whiten them with the same global mean/std and sample the same actions.
  Only the model's forward/backward is sharded: `rl._choice_logits` is replaced, for the
  duration of the call, by one that runs this rank's contiguous slice of the batch through the
  DDP-wrapped model and all-gathers the others' logits (no gradient). Its backward scales the
  local gradient by the world size because DDP averages: the all-reduced gradient is then
  exactly the gradient of the global batch's loss. A 2-process run therefore reproduces the
  1-process run up to floating-point summation order (tests/test_scale.py measures it).
* trl's SFTTrainer/GRPOTrainer read accelerate's environment and shard themselves; the SFT
  batch is divided over the processes so the global batch stays the spec's (global_sft_batch).
* Only rank 0 writes: on other ranks the run module's writers (artefacts, checkpoints,
  stage.json) are no-ops, and a barrier at the end keeps every rank alive until rank 0 saved.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Any

import torch


# ---- sharded forward with an exact gradient ----------------------------------------------


def _bounds(n: int, world: int) -> list[int]:
    return [n * i // world for i in range(world + 1)]


class _GatherShards(torch.autograd.Function):
    """Concatenate every rank's [rows_r, C] slice into the global [n, C] tensor. Backward
    returns this rank's slice of the incoming gradient, times the world size (DDP averages
    gradients over ranks, we want their sum)."""

    @staticmethod
    def forward(ctx, local: torch.Tensor, bounds: list[int], rank: int):
        import torch.distributed as dist

        world = len(bounds) - 1
        sizes = [bounds[i + 1] - bounds[i] for i in range(world)]
        width = max(sizes)
        padded = local.new_zeros((width,) + tuple(local.shape[1:]))
        padded[: local.shape[0]] = local
        parts = [torch.empty_like(padded) for _ in range(world)]
        dist.all_gather(parts, padded.contiguous())
        parts[rank] = local  # bitwise the same; keeps this rank's slice exact
        ctx.lo, ctx.hi, ctx.world = bounds[rank], bounds[rank + 1], world
        return torch.cat([p[:s] for p, s in zip(parts, sizes)])

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad[ctx.lo:ctx.hi] * ctx.world, None, None


def sharded_choice_logits(original, seed: int = 0):
    """Wrap rl._choice_logits: forward this rank's slice of the batch, gather the rest.

    Every rank starts from the same torch seed (train_choice_rl seeds it from the config, and
    the ranks must agree on rows and actions), so a model with dropout (LoRA dropout) would draw
    the same masks on every rank for different rows. Each forward therefore runs under a forked
    RNG seeded per (call, rank): independent masks, and the shared streams are left untouched."""
    import torch.distributed as dist

    calls = [0]

    def choice_logits(model, ids, mask, choice_ids):
        world, rank = dist.get_world_size(), dist.get_rank()
        n = ids.shape[0]
        if n < world:
            raise ValueError(f"a batch of {n} row(s) cannot be split over {world} processes: "
                             "raise the profile's rl batch/minibatch or use fewer processes")
        bounds = _bounds(n, world)
        lo, hi = bounds[rank], bounds[rank + 1]
        calls[0] += 1
        devices = [torch.cuda.current_device()] if ids.is_cuda else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed((seed * 1_000_003 + calls[0] * world + rank) % 2**63)
            local = original(model, ids[lo:hi], mask[lo:hi], choice_ids)
        return _GatherShards.apply(local, bounds, rank)

    return choice_logits


def _unwrap(model):
    return getattr(model, "module", model)


@contextlib.contextmanager
def distributed_choice_rl(accelerator):
    """Within this context `rl.train_choice_rl` trains the model as DDP over all processes."""
    from . import rl

    original_train, original_logits, original_reference = rl.train_choice_rl, rl._choice_logits, rl._reference

    def train_choice_rl(model, tokenizer, sample_rows, render_prompt, choices, reward_fn, cfg, progress=None):
        if accelerator.num_processes == 1:
            return original_train(model, tokenizer, sample_rows, render_prompt, choices, reward_fn, cfg, progress)
        wrapped = accelerator.prepare_model(model)
        rl._choice_logits = sharded_choice_logits(original_logits, cfg.seed)
        # The reference policy of a LoRA model is the wrapped model with its adapter off.
        rl._reference = lambda m: original_reference(_unwrap(m))
        try:
            return original_train(wrapped, tokenizer, sample_rows, render_prompt, choices, reward_fn, cfg,
                                  progress if accelerator.is_main_process else None)
        finally:
            rl._choice_logits, rl._reference = original_logits, original_reference
            accelerator.free_memory()

    rl.train_choice_rl = train_choice_rl
    try:
        yield
    finally:
        rl.train_choice_rl = original_train


@contextlib.contextmanager
def main_process_writes(accelerator):
    """On ranks other than 0, the runtime's writers do nothing."""
    if accelerator.is_main_process:
        yield
        return
    from . import run as run_module
    from . import sft

    def nothing(*args: Any, **kwargs: Any) -> None:
        return None

    names = ["atomic_write_text", "write_json", "write_jsonl", "mark_done", "save_final"]
    saved = {n: getattr(run_module, n) for n in names}
    saved_sft = sft._save_final_atomic
    for n in names:
        setattr(run_module, n, nothing)
    sft._save_final_atomic = nothing
    try:
        yield
    finally:
        for n, f in saved.items():
            setattr(run_module, n, f)
        sft._save_final_atomic = saved_sft


@contextlib.contextmanager
def global_sft_batch(accelerator):
    """trl's batch is per device: divide the spec's (global) batch over the processes, through
    gradient accumulation when it divides evenly, else through the per-device batch."""
    from . import run as run_module

    original = run_module.sft_config
    world = accelerator.num_processes

    def sft_config(cfg, seed, run, n_examples):
        out = original(cfg, seed, run, n_examples)
        if world > 1:
            accum, batch = out["gradient_accumulation_steps"], out["per_device_train_batch_size"]
            if accum % world == 0:
                out["gradient_accumulation_steps"] = accum // world
            elif batch % world == 0:
                out["per_device_train_batch_size"] = batch // world
            else:
                raise ValueError(f"the SFT batch ({batch} x {accum} accumulation) does not divide over "
                                 f"{world} processes")
        return out

    run_module.sft_config = sft_config
    try:
        yield
    finally:
        run_module.sft_config = original


# ---- the worker ----------------------------------------------------------------------------


def worker(job_file: str) -> int:
    """One process of a multi-process training launch. The job file (JSON, written by
    scale.launch_training) names the spec, generated folder, options and (arm, seed) jobs."""
    from accelerate import Accelerator

    from .experiment import Experiment
    from .run import Options, execute, prepare, quiet_libraries

    quiet_libraries()
    job = json.loads(Path(job_file).read_text())
    cpu = job["device"] == "cpu" or not torch.cuda.is_available()
    accelerator = Accelerator(cpu=cpu, mixed_precision=None if cpu else job.get("mixed_precision"))
    if not cpu:
        torch.cuda.set_device(accelerator.local_process_index)
    from rich.console import Console

    console = Console(highlight=False, quiet=not accelerator.is_main_process)
    opts = Options(
        profile=job["profile"], run_id=job["run_id"], runs_dir=Path(job["runs_dir"]), seeds=job["seeds"],
        arms=job["arms"], steps_scale=job["steps_scale"], device=str(accelerator.device) if not cpu else "cpu",
        quiet=not accelerator.is_main_process, only_stages={"train"},
        only_jobs={(a, int(s)) for a, s in job["jobs"]},
    )
    exp = Experiment(Path(job["generated"]))
    source = Path(job["spec"]).read_text()
    with main_process_writes(accelerator), distributed_choice_rl(accelerator), global_sft_batch(accelerator):
        run = prepare(exp, source, opts, console)
        execute(run)
    accelerator.wait_for_everyone()
    if accelerator.num_processes > 1:
        import torch.distributed as dist

        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(worker(sys.argv[1]))
