"""Multi-process (DDP) training of the runtime's jobs, one process per device.

`ectc run --launcher accelerate --processes N` relaunches training through
`python -m ectc.runtime.distributed JOBFILE` under N processes (see scale.launch_training);
every process runs the ordinary `execute` restricted to training, so the same stage keys,
folders and code paths apply. Nothing is patched: the worker passes what differs per process
in through `run.Options` (as accelerate's `is_main_process`, nanochat's `master_process`):

* `choice_rl`: the RL fast path's trainer. It calls `rl.train_choice_rl` with the DDP-wrapped
  model and a sharded `forward`, and runs the *global* algorithm on every rank: all ranks draw
  the same global batch of rows with the same seeded generator, compute the same rewards,
  whiten them with the same global mean/std and sample the same actions. Only the model's
  forward/backward is sharded: `sharded_choice_logits` runs this rank's contiguous slice of
  the batch and all-gathers the others' logits (no gradient). Its backward scales the local
  gradient by the world size because DDP averages: the all-reduced gradient is then exactly
  the gradient of the global batch's loss. A 2-process run therefore reproduces the 1-process
  run up to floating-point summation order (tests/test_scale.py measures it). The KL
  `reference` is the unwrapped model's.
* `processes`: trl's SFTTrainer/GRPOTrainer read accelerate's environment and shard
  themselves; `run.sft_config(..., processes=N)` divides the SFT batch over the processes so
  the global batch stays the spec's.
* `writes`: False on ranks other than 0, whose `run.Writer` (artefacts, checkpoints,
  stage.json) and `sft.train_sft(writes=False)` then write nothing; a barrier at the end keeps
  every rank alive until rank 0 saved.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Callable

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


def sharded_choice_logits(original: Callable, seed: int = 0) -> Callable:
    """Wrap `original` (rl.choice_logits): forward this rank's slice of the batch, gather the rest.

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


def choice_rl(accelerator) -> Callable:
    """A trainer with `rl.train_choice_rl`'s signature that trains the model as DDP over all
    processes: the model wrapped by accelerate, the sharded forward passed in."""
    from .rl import choice_logits, reference_policy, train_choice_rl

    def train(model, tokenizer, sample_rows, render_prompt, choices, reward_fn, cfg, progress=None, other=None,
              checkpoints=None):
        if accelerator.num_processes == 1:
            return train_choice_rl(model, tokenizer, sample_rows, render_prompt, choices, reward_fn, cfg, progress,
                                   other=other, checkpoints=checkpoints)
        wrapped = accelerator.prepare_model(model)
        try:
            return train_choice_rl(
                wrapped, tokenizer, sample_rows, render_prompt, choices, reward_fn, cfg,
                progress if accelerator.is_main_process else None,
                forward=sharded_choice_logits(choice_logits, cfg.seed),
                # The reference policy of a LoRA model is the wrapped model with its adapter off.
                reference=lambda m: reference_policy(_unwrap(m)),
                other=other,
                checkpoints=checkpoints,  # every rank loads it; rank 0 alone writes (writes=False elsewhere)
            )
        finally:
            accelerator.free_memory()

    return train


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
        quiet=not accelerator.is_main_process, through="train",
        only_jobs={(a, int(s)) for a, s in job["jobs"]},
        writes=accelerator.is_main_process, processes=accelerator.num_processes, choice_rl=choice_rl(accelerator),
    )
    exp = Experiment(Path(job["generated"]))
    source = Path(job["spec"]).read_text()
    run = prepare(exp, source, opts, console)
    execute(run)
    accelerator.wait_for_everyone()
    if accelerator.num_processes > 1:
        import torch.distributed as dist

        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(worker(sys.argv[1]))
