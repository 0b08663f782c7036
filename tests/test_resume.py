"""Resume mid-arm: an arm killed with SIGKILL once it has a checkpoint resumes from it and ends
with the same weights, history and metrics as an uninterrupted run, bit for bit. Along the way:
the profile's tracker (TensorBoard event files, read back with tensorboard's own reader) and the
plain progress lines `ectc run` prints when stdout is not a terminal."""

import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tiny import tiny_project

pytest.importorskip("torch")
pytest.importorskip("tensorboard")

ENV = {**os.environ, "ECTC_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
STEPS, EVERY = 150, 10
# The fast path with its state spread over every generator it has: minibatches drawn in a random
# order, two PPO epochs, an entropy schedule; long enough to be killed in the middle.
RESUMABLE = [
    ("      batch 16\n      minibatch 16\n", "      batch 16\n      minibatch 8\n"),
    ("      ppo_epochs 1\n", "      ppo_epochs 2\n"),
    ("      steps 4\n", f"      steps {STEPS}\n"),
    ("    seeds 2\n", f"    seeds 1\n    checkpoint_every {EVERY}\n"
                    '    track { report_to "tensorboard" log_every 50 }\n'),
]


def command(run_id: str) -> list[str]:
    return [sys.executable, "-m", "ectc", "run", "specs/sycophancy.ect", "--arms", "ect", "--run-id", run_id]


def history(arm: Path) -> list[dict]:
    rows = [json.loads(line) for line in (arm / "history.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # wall-clock time differs


def scalars(log_dir: Path, tag: str) -> list[tuple[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir))
    acc.Reload()
    return [(e.step, e.value) for e in acc.Scalars(tag)]


def test_an_arm_killed_mid_training_resumes_to_the_same_numbers(tmp_path):
    import numpy as np
    import torch

    tiny_project(tmp_path, "sycophancy", extra=RESUMABLE)
    runs = tmp_path / "runs/sycophancy"

    # Uninterrupted, stdout a pipe: plain progress lines instead of the (invisible) rich bars.
    whole = subprocess.run(command("whole"), cwd=tmp_path, env=ENV, capture_output=True, text=True,
                           timeout=300, check=True)
    lines = [line for line in whole.stdout.splitlines() if line.startswith("[")]
    number = r"-?[\d.]+(e-?\d+)?"
    assert re.fullmatch(rf"\[warm-up\] step 20/20 loss {number} [\d.]+ steps/s", lines[0]), lines
    train = [line for line in lines if line.startswith("[train ect seed0]")]
    assert [line.split()[4] for line in train] == ["50/150", "100/150", "150/150"]  # log_every 50
    assert re.fullmatch(rf"\[train ect seed0\] step 50/150 loss {number} reward {number} kl {number} "
                        r"[\d.]+ steps/s", train[0]), train[0]
    arm = runs / "whole/arms/ect/seed0"
    assert not (arm / "checkpoints").exists(), "a finished arm's checkpoints are deleted"

    # Killed with SIGKILL once the arm has checkpointed, then run again.
    proc = subprocess.Popen(command("killed"), cwd=tmp_path, env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    killed = runs / "killed/arms/ect/seed0"
    checkpoint = killed / "checkpoints/rl.pt"
    deadline = time.time() + 240
    while not checkpoint.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert checkpoint.exists(), "the arm should have checkpointed before the kill"
    step = torch.load(checkpoint, weights_only=True)["step"]
    assert 0 < step < STEPS and step % EVERY == 0
    assert not (killed / "final").exists() and not (killed / "stage.json").exists()

    subprocess.run(command("killed"), cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=300, check=True)
    record = json.loads((killed / "stage.json").read_text())
    assert record["resumed_from_step"] == step  # it did resume, from the checkpoint
    assert not (killed / "checkpoints").exists()

    # Bit for bit: the trained weights, every step's statistics, the evaluation's metrics.
    assert (killed / "final/model.safetensors").read_bytes() == (arm / "final/model.safetensors").read_bytes()
    assert history(killed) == history(arm)
    metrics = [json.loads((runs / r / "metrics.json").read_text()) for r in ("whole", "killed")]
    assert metrics[0]["arms"] == metrics[1]["arms"]

    # TensorBoard holds each step once, with history's values: the resumed run purged what the
    # killed attempt had logged after its checkpoint.
    rewards = [np.float32(r["reward_mean"]) for r in history(arm)]
    for folder in (arm, killed):
        logged = scalars(folder / "tensorboard", "train/reward_mean")
        assert [s for s, _ in logged] == list(range(1, STEPS + 1))
        assert [np.float32(v) for _, v in logged] == rewards
    warmup = scalars(runs / "whole/warm-up/tensorboard", "train/loss")
    assert [s for s, _ in warmup] == list(range(1, 21))


GRPO_STEPS, GRPO_EVERY = 16, 4
GRPO_RESUMABLE = [
    ("      steps 2\n", f"      steps {GRPO_STEPS}\n"),
    ("    seeds 1\n    unlabeled", f"    seeds 1\n    checkpoint_every {GRPO_EVERY}\n"
                                   '    track { report_to "tensorboard" }\n    unlabeled'),
]


def grpo_command(run_id: str) -> list[str]:
    return [sys.executable, "-m", "ectc", "run", "specs/verbosity.ect", "--arms", "ect", "--run-id", run_id]


def test_a_grpo_arm_killed_mid_training_resumes_to_the_same_numbers(tmp_path):
    """Free text through trl's GRPOTrainer: trl's own checkpoints and resume_from_checkpoint."""
    pytest.importorskip("trl")
    tiny_project(tmp_path, "verbosity", extra=GRPO_RESUMABLE)
    runs = tmp_path / "runs/verbosity"
    subprocess.run(grpo_command("whole"), cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=300,
                   check=True)
    arm = runs / "whole/arms/ect/seed0"
    assert not (arm / "grpo").exists(), "a finished arm's checkpoints are deleted"

    proc = subprocess.Popen(grpo_command("killed"), cwd=tmp_path, env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    killed = runs / "killed/arms/ect/seed0"
    deadline = time.time() + 240
    while (not list((killed / "grpo").glob("checkpoint-*/trainer_state.json"))
           and time.time() < deadline and proc.poll() is None):
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    steps = sorted(int(p.parent.name.split("-")[1]) for p in (killed / "grpo").glob("checkpoint-*/trainer_state.json"))
    assert steps and steps[-1] < GRPO_STEPS, "the arm should have checkpointed before the kill"
    assert not (killed / "final").exists()

    subprocess.run(grpo_command("killed"), cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=300,
                   check=True)
    record = json.loads((killed / "stage.json").read_text())
    assert record["resumed_from_step"] == steps[-1] > 0
    assert not (killed / "grpo").exists()

    assert (killed / "final/model.safetensors").read_bytes() == (arm / "final/model.safetensors").read_bytes()
    timing = ("step_time", "seconds")
    same = [[{k: v for k, v in r.items() if not any(t in k for t in timing)} for r in history_rows(a)]
            for a in (arm, killed)]
    assert same[0] == same[1] and len(same[0]) == GRPO_STEPS
    metrics = [json.loads((runs / r / "metrics.json").read_text()) for r in ("whole", "killed")]
    assert metrics[0]["arms"] == metrics[1]["arms"]
    losses = scalars(killed / "tensorboard", "train/loss")
    assert [s for s, _ in losses] == list(range(1, GRPO_STEPS + 1))


def history_rows(arm: Path) -> list[dict]:
    return [json.loads(line) for line in (arm / "history.jsonl").read_text().splitlines()]


# ---- the loops themselves, interrupted in-process ----------------------------------------


class _Killed(Exception):
    pass


def _stop_after(n: int):
    def progress(step, stats):
        if step + 1 == n:
            raise _Killed  # the process dies after step n (and after its checkpoint, if one was due)
    return progress


def _params(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def test_fast_path_with_a_kl_reference_resumes_bit_for_bit(tmp_path):
    """Full fine-tuning with a KL penalty: the reference policy is a frozen copy taken at the
    start, so a resumed call must take it before it loads the checkpoint's weights."""
    import torch

    from ectc.runtime.models import build_tiny_llama, build_word_tokenizer
    from ectc.runtime.rl import RLConfig, rl_checkpoints, train_choice_rl

    choices = ["Yes", "No"]
    tok = build_word_tokenizer(["x is 0 Say Yes or No"], extra_tokens=choices)

    def rows(step, n, rng):
        return [{"x": int(v)} for v in rng.integers(0, 10, n)]

    def reward(batch, answers):
        return [1.0 if (a == "Yes") == (r["x"] % 2 == 0) else 0.0 for r, a in zip(batch, answers)]

    def render(row):
        return f"x is {row['x']} Say Yes or No"

    cfg = RLConfig(steps=8, batch_size=16, minibatch_size=8, ppo_epochs=2, lr=3e-3, kl_coef=0.1,
                   entropy_start=0.05, entropy_end=0.0, lr_schedule="cosine", warmup_steps=2, seed=3)
    torch.set_num_threads(1)
    whole = build_tiny_llama(tok, layers=1, width=32, heads=2, seed=0)
    expected = train_choice_rl(whole, tok, rows, render, choices, reward, cfg)

    ckpt = rl_checkpoints(tmp_path / "ckpt", every=3)
    model = build_tiny_llama(tok, layers=1, width=32, heads=2, seed=0)
    with pytest.raises(_Killed):
        train_choice_rl(model, tok, rows, render, choices, reward, cfg, progress=_stop_after(5), checkpoints=ckpt)
    assert ckpt.resume_step(dataclasses.asdict(cfg)) == 3
    model = build_tiny_llama(tok, layers=1, width=32, heads=2, seed=0)  # a fresh process's model
    got = train_choice_rl(model, tok, rows, render, choices, reward, cfg, checkpoints=ckpt)
    strip = lambda h: [{k: v for k, v in r.items() if k != "seconds"} for r in h]  # noqa: E731
    assert strip(got) == strip(expected) and any(r["kl"] > 0 for r in got)
    assert all(torch.equal(a, b) for a, b in zip(_params(model).values(), _params(whole).values()))


def test_warmup_resumes_bit_for_bit(tmp_path):
    import random

    import torch

    from ectc.runtime.checkpoints import Checkpoints
    from ectc.runtime.models import build_tiny_llama, build_word_tokenizer
    from ectc.runtime.warmup import supervised_warmup

    tok = build_word_tokenizer(["x is 0 1 2 3 4 5 6 7 8 9 even odd"])

    def examples(rng: random.Random, n):
        xs = [rng.randint(0, 9) for _ in range(n)]
        return [(f"x is {x}", "even" if x % 2 == 0 else "odd") for x in xs]

    torch.set_num_threads(1)
    kw = dict(steps=9, batch_size=8, lr=3e-3, seed=1, weight_decay=0.1, loss_on="sequence")
    whole = build_tiny_llama(tok, layers=1, width=32, heads=2, seed=0)
    expected = supervised_warmup(whole, tok, examples, **kw)
    ckpt = Checkpoints(tmp_path, every=4, name="warmup.pt")
    model = build_tiny_llama(tok, layers=1, width=32, heads=2, seed=0)
    with pytest.raises(_Killed):
        supervised_warmup(model, tok, examples, **kw, progress=_stop_after(6), checkpoints=ckpt)
    assert ckpt.last_step() == 4
    model = build_tiny_llama(tok, layers=1, width=32, heads=2, seed=0)
    assert supervised_warmup(model, tok, examples, **kw, checkpoints=ckpt) == expected
    assert all(torch.equal(a, b) for a, b in zip(_params(model).values(), _params(whole).values()))
