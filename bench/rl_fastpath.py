"""Benchmark: one-token choice RL on CPU, samples/s for
  (a) trl GRPOTrainer (generate() one token, then its loss),
  (b) ectc's fast path (ectc.runtime.rl.train_choice_rl, one fused forward+backward per step),
  (c) the floor: a bare forward + backward + optimizer step over the same batch.
Same tiny 2-layer width-96 Llama, same batch of 128 one-token completions per step.
Targets: (b) >= 5x (a), and (b) within 1.5x of (c)'s time per sample.

    .venv/bin/python bench/rl_fastpath.py [--steps 20] [--threads 2]

Measured (shared 2-core box, 1 thread, median of 10 steps):
  load ~5:  trl 247, fast 645, floor 713 samples/s -> fast/trl 2.6x, floor/fast 1.11x
  load ~10: trl  75, fast 174, floor 205 samples/s -> fast/trl 2.3x, floor/fast 1.18x
The fast path is at the floor; trl (max_completion_length=1, beta=0, num_iterations=1) costs
only ~2.9x the floor here, so ">= 5x trl" cannot be reached without beating the floor.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ectc.runtime.models import build_tiny_llama, build_word_tokenizer  # noqa: E402
from ectc.runtime.rl import PromptEncoder, RLConfig, choice_token_ids, train_choice_rl  # noqa: E402
from ectc.runtime.warmup import position_ids_for  # noqa: E402

BATCH = 128
CHOICES = ["Correct", "Incorrect"]


def prompt(i: int) -> str:
    a, b = i % 10, (i // 10) % 10
    return f"What is {a} + {b}? I think it is {a + b + (i % 3) - 1}. Correct or Incorrect? Suggestibility Level: {i % 101}% Answer:"


def setup():
    tok = build_word_tokenizer([prompt(0)], extra_tokens=CHOICES)
    model = build_tiny_llama(tok, layers=2, width=96, heads=4, seed=0)
    return tok, model


def reward(rows, answers):
    return [1.0 if a == "Incorrect" else 0.0 for a in answers]


def bench_fastpath(steps: int) -> float:
    tok, model = setup()
    rows = [{"i": i} for i in range(BATCH)]
    cfg = RLConfig(steps=steps + 2, batch_size=BATCH, minibatch_size=BATCH, ppo_epochs=1, lr=1e-4)
    hist = train_choice_rl(model, tok, lambda step, n, rng: rows, lambda r: prompt(r["i"]),
                           CHOICES, reward, cfg)
    return BATCH / np.median([h["seconds"] for h in hist[2:]])


def bench_floor(steps: int) -> float:
    tok, model = setup()
    ids, mask = PromptEncoder(tok)([prompt(i) for i in range(BATCH)])
    pos = position_ids_for(mask)
    target = torch.full((BATCH,), choice_token_ids(tok, CHOICES)[1])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    times = []
    for _ in range(steps + 2):
        t = time.perf_counter()
        logits = model(input_ids=ids, attention_mask=mask, position_ids=pos, logits_to_keep=1).logits[:, -1]
        loss = F.cross_entropy(logits, target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t)
    return BATCH / np.median(times[2:])


def bench_trl(steps: int) -> float:
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    tok, model = setup()
    gens = 8
    data = Dataset.from_list([{"prompt": prompt(i)} for i in range(BATCH // gens * (steps + 2))])

    def trl_reward(prompts, completions, **kw):
        return [1.0 if c.strip().startswith("Incorrect") else 0.0 for c in completions]

    times = []

    class Timer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            self.t = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            times.append(time.perf_counter() - self.t)

    with tempfile.TemporaryDirectory() as out:
        args = GRPOConfig(
            output_dir=out, max_steps=steps + 2, per_device_train_batch_size=BATCH,
            num_generations=gens, max_completion_length=1, learning_rate=1e-4, beta=0.0,
            report_to="none", save_strategy="no", logging_steps=1000, use_cpu=True, bf16=False,
            disable_tqdm=True, seed=0,
        )
        trainer = GRPOTrainer(model=model, reward_funcs=trl_reward, args=args, train_dataset=data,
                              processing_class=tok, callbacks=[Timer()])
        trainer.train()
    return BATCH / np.median(times[2:])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    floor = bench_floor(args.steps)
    fast = bench_fastpath(args.steps)
    trl = bench_trl(args.steps)
    print(f"batch {BATCH} one-token completions, tiny Llama 2x96, {args.threads} threads, median of {args.steps} steps")
    print(f"  (a) trl GRPOTrainer      {trl:10.0f} samples/s")
    print(f"  (b) ectc fast path       {fast:10.0f} samples/s")
    print(f"  (c) floor fwd+bwd+step   {floor:10.0f} samples/s")
    print(f"  fast / trl   = {fast / trl:5.1f}x   (target >= 5x)")
    print(f"  floor / fast = {floor / fast:5.2f}x  (target <= 1.5x)")


if __name__ == "__main__":
    main()
