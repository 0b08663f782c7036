"""Reinforcement learning for the runtime.

`train_choice_rl` is the fast path for a response that is one of a few fixed choices answered
right away: the answer is one token, so one forward pass over a left-padded batch gives the
policy at the last position; we restrict it to the first token of each allowed choice, sample,
score with the caller's reward function and take PPO-clipped steps. No generate(), no value
head, no padding to completion length: on CPU that is several times faster than trl's
GRPOTrainer for the same update (see bench/rl_fastpath.py).

`train_text_grpo` configures trl's GRPOTrainer for free-text responses from GRPOConfig's own
keyword arguments (a generated config's "trl.GRPOConfig", made by ectc.schema.trainer_kwargs).

Nothing here knows the task: rows, prompts and rewards arrive as data and callables.
"""

from __future__ import annotations

import dataclasses
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from ectc.runtime.checkpoints import Checkpoints, load_params, rng_states, set_rng_states
from ectc.runtime.warmup import position_ids_for

RewardFn = Callable[[list[dict], list[str]], Sequence[float]]


@dataclass
class RLConfig:
    steps: int = 200
    batch_size: int = 128            # rollouts sampled per step
    minibatch_size: int = 128        # rows per PPO forward/backward
    gradient_accumulation_steps: int = 1  # minibatches whose gradients make one optimizer step
    ppo_epochs: int = 1              # passes over the step's rollouts
    lr: float = 1e-4
    lr_schedule: str = "constant"    # "constant" | "linear" | "cosine"
    warmup_steps: int = 0            # linear LR warm-up (in optimizer steps)
    weight_decay: float = 0.0
    clip_range: float = 0.2
    whiten_rewards: bool = True
    max_grad_norm: float | None = 1.0
    entropy_start: float = 0.0       # entropy bonus coefficient, linear from start to end
    entropy_end: float = 0.0
    temperature_start: float = 1.0   # sampling temperature, linear start -> end over the
    temperature_end: float = 1.0     # first `temperature_fraction` of steps, then held
    temperature_fraction: float = 1.0
    kl_coef: float = 0.0             # KL(policy || reference) penalty; 0 disables it
    optimizer: str = "adamw"         # "adamw" | "paged_adamw_8bit"
    seed: int = 0

    def temperature(self, step: int) -> float:
        span = max(1.0, self.temperature_fraction * self.steps)
        frac = min(1.0, step / span)
        return self.temperature_start + (self.temperature_end - self.temperature_start) * frac

    def entropy_coef(self, step: int) -> float:
        frac = step / max(1, self.steps - 1)
        return self.entropy_start + (self.entropy_end - self.entropy_start) * frac


# --------------------------------------------------------------------------- batching

class PromptEncoder:
    """Tokenizes prompts once (procedural tasks repeat prompts a lot) and builds left-padded
    batches, so the last position of every row is the answer slot."""

    def __init__(self, tokenizer, max_cache: int = 200_000):
        self.tokenizer = tokenizer
        self.cache: dict[str, list[int]] = {}
        self.max_cache = max_cache

    def __call__(self, prompts: Sequence[str], device=None):
        missing = [p for p in dict.fromkeys(prompts) if p not in self.cache]
        if missing:
            if len(self.cache) + len(missing) > self.max_cache:
                self.cache.clear()
            for p, ids in zip(missing, self.tokenizer(missing, add_special_tokens=True)["input_ids"]):
                self.cache[p] = ids
        seqs = [self.cache[p] for p in prompts]
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self.tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, width - len(s):] = torch.tensor(s)
            mask[i, width - len(s):] = 1
        return ids.to(device), mask.to(device)


# In a list of choice token ids: "every token not listed", the `other "X"` outcome of a choice
# response. Its logit is the log-sum-exp of those tokens' logits, so the softmax over the listed
# tokens and OTHER is the model's exact distribution over the whole vocabulary, grouped.
OTHER = -1


def choice_token_ids(tokenizer, choices: Sequence[str], other: bool = False) -> list[int]:
    """First token of each choice (then OTHER when answers outside them are an outcome); they
    must differ, since the policy is read off one token."""
    ids = [tokenizer(c, add_special_tokens=False)["input_ids"][0] for c in choices]
    if len(set(ids)) != len(ids):
        raise ValueError(f"choices {list(choices)} do not start with distinct tokens: {ids}")
    return ids + [OTHER] * other


def choice_logits(model, ids, mask, choice_ids):
    """Logits of the allowed choices' first tokens at the last position: [rows, choices]
    (OTHER, last, as the log-sum-exp of every other token's logit)."""
    # logits_to_keep=1: the LM head runs on the last position only.
    out = model(input_ids=ids, attention_mask=mask, position_ids=position_ids_for(mask),
                logits_to_keep=1)
    if choice_ids[-1] != OTHER:
        return out.logits[:, -1, choice_ids].float()
    full = out.logits[:, -1, :].float()
    listed = choice_ids[:-1]
    rest = full.index_fill(1, torch.tensor(listed, device=full.device), float("-inf"))
    return torch.cat([full[:, listed], torch.logsumexp(rest, -1, keepdim=True)], -1)


def _device(model):
    return next(model.parameters()).device


@torch.no_grad()
def choice_distribution(model, tokenizer, prompts: Sequence[str], choices: Sequence[str],
                        batch_size: int = 256, temperature: float = 1.0, other: bool = False) -> np.ndarray:
    """P(choice | prompt) restricted to the allowed choices: array [len(prompts), len(choices)]
    (with `other`, one more column: every answer outside them, and the rows are the model's
    whole distribution)."""
    choice_ids = choice_token_ids(tokenizer, choices, other)
    encode = PromptEncoder(tokenizer)
    was_training = model.training
    model.eval()
    out = []
    try:
        for i in range(0, len(prompts), batch_size):
            ids, mask = encode(prompts[i:i + batch_size], _device(model))
            logits = choice_logits(model, ids, mask, choice_ids) / temperature
            out.append(torch.softmax(logits, -1).cpu().numpy())
    finally:
        model.train(was_training)
    return np.concatenate(out) if out else np.zeros((0, len(choice_ids)))


# --------------------------------------------------------------------------- optimizer

def make_optimizer(params, cfg: RLConfig):
    name = cfg.optimizer.lower().replace("-", "_")
    if name == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if name in ("paged_adamw_8bit", "pagedadamw8bit"):
        import bitsandbytes as bnb

        return bnb.optim.PagedAdamW8bit(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}; expected adamw or paged_adamw_8bit")


def _lr_lambda(cfg: RLConfig, total_updates: int):
    def f(update: int) -> float:
        if cfg.warmup_steps and update < cfg.warmup_steps:
            return (update + 1) / cfg.warmup_steps
        progress = min(1.0, (update - cfg.warmup_steps) / max(1, total_updates - cfg.warmup_steps))
        if cfg.lr_schedule == "cosine":
            return 0.5 * (1 + math.cos(math.pi * progress))
        if cfg.lr_schedule == "linear":  # as transformers' "linear": down to 0 at the end
            return 1.0 - progress
        return 1.0
    return f


def reference_policy(model):
    """A context manager under which `model` computes the reference policy: a PeftModel's
    adapter disabled, else a frozen copy taken now (full fine-tuning)."""
    if hasattr(model, "disable_adapter"):
        return lambda: model.disable_adapter()
    import copy

    frozen = copy.deepcopy(model).eval().requires_grad_(False)
    return frozen


# --------------------------------------------------------------------------- checkpoints

CHECKPOINT_FILE = "rl.pt"


def rl_checkpoints(folder, every: int, writes: bool = True) -> Checkpoints:
    """The fast path's checkpoint file (`folder`/rl.pt), saved every `every` steps."""
    return Checkpoints(Path(folder), every, writes, CHECKPOINT_FILE)


# --------------------------------------------------------------------------- fast path

def train_choice_rl(
    model,
    tokenizer,
    sample_rows: Callable[[int, int, np.random.Generator], list[dict]],
    render_prompt: Callable[[dict], str],
    choices: Sequence[str],
    reward_fn: RewardFn,
    cfg: RLConfig,
    progress: Callable[[int, dict], None] | None = None,
    forward: Callable = choice_logits,
    reference: Callable = reference_policy,
    other: str | None = None,
    checkpoints: Checkpoints | None = None,
) -> list[dict]:
    """PPO-clipped RL on a one-token choice. Returns one stats dict per step.

    With `other`, the policy has one more action: any token outside the choices' first tokens,
    taken as one outcome (its probability is theirs summed, see OTHER), answered as `other` to
    `reward_fn`, so a reward can price an invalid answer and RL moves the mass the model puts
    on every other token. The temperature scales these len(choices) + 1 logits.

    `forward(model, ids, mask, choice_ids)` computes the choices' logits for a batch and
    `reference(model)` gives the KL penalty's reference policy (as `reference_policy`); a
    multi-process launch passes a sharded forward (runtime/distributed.py), everything else
    runs the same on every process.

    Per step: sample `batch_size` rows, render prompts, one forward pass -> logits over the
    choices at the last position, sample answers at the scheduled temperature, rewards from
    `reward_fn(rows, answers)`, advantages = whitened rewards (or rewards minus their mean;
    there is no value head: a one-token episode's baseline is the batch mean), then
    `ppo_epochs` passes of minibatch updates with the clipped objective, an entropy bonus
    and an optional KL penalty to the reference policy.

    When one minibatch holds the whole batch, the sampling forward pass is also the first
    update's forward pass (the policy has not moved yet, so old log-probs equal new ones):
    one forward+backward per step, which is the floor for any method.

    `checkpoints`: every `checkpoints.every` steps the state is saved; a call that finds a
    checkpoint of the same config continues from it and returns what an uninterrupted call
    would have, bit for bit (tests/test_resume.py). The caller removes the checkpoint once the
    trained weights are safe. `progress(step, stats)` is called after every step (not for the
    steps a resumed call skips).
    """
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    device = _device(model)
    choice_ids = choice_token_ids(tokenizer, choices, other is not None)
    outcomes = [*choices, *([other] if other is not None else [])]
    encode = PromptEncoder(tokenizer)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = make_optimizer(params, cfg)
    B, M, G = cfg.batch_size, min(cfg.minibatch_size, cfg.batch_size), cfg.gradient_accumulation_steps
    n_mb = math.ceil(B / M)
    updates_per_step = cfg.ppo_epochs * math.ceil(n_mb / G)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(cfg, cfg.steps * updates_per_step))
    ref = reference(model) if cfg.kl_coef else None  # before a checkpoint's weights are loaded
    fused = M >= B
    model.train()
    history = []
    start = 0
    config = dataclasses.asdict(cfg)
    saved = checkpoints.load(config) if checkpoints is not None else None
    if saved is not None:
        load_params(params, saved["params"])
        opt.load_state_dict(saved["optimizer"])
        sched.load_state_dict(saved["scheduler"])
        set_rng_states(saved["rng"], rng, gen)
        history, start = list(saved["history"]), saved["step"]

    for step in range(start, cfg.steps):
        t0 = time.perf_counter()
        temp = cfg.temperature(step)
        ent_coef = cfg.entropy_coef(step)
        rows = sample_rows(step, B, rng)
        ids, mask = encode([render_prompt(r) for r in rows], device)

        # --- rollout: sample one answer per row from the current policy
        with nullcontext() if fused else torch.no_grad():
            logp_first = torch.log_softmax(forward(model, ids, mask, choice_ids) / temp, -1)
        actions = torch.multinomial(logp_first.detach().exp().cpu(), 1, generator=gen).squeeze(1).to(device)
        old_logp = logp_first.detach().gather(1, actions[:, None]).squeeze(1)
        ref_logp = None
        if ref is not None:
            with torch.no_grad():
                if callable(ref) and not isinstance(ref, torch.nn.Module):
                    with ref():
                        ref_logits = forward(model, ids, mask, choice_ids)
                else:
                    ref_logits = forward(ref, ids, mask, choice_ids)
                ref_logp = torch.log_softmax(ref_logits / temp, -1)

        answers = [outcomes[a] for a in actions.tolist()]
        rewards = torch.tensor([float(r) for r in reward_fn(rows, answers)], device=device)
        adv = rewards - rewards.mean()
        if cfg.whiten_rewards and B > 1:
            adv = adv / (rewards.std() + 1e-8)

        # --- PPO updates
        sums = {"pg_loss": 0.0, "entropy": 0.0, "kl": 0.0, "clipfrac": 0.0, "grad_norm": 0.0}
        n_terms = n_updates = 0
        for epoch in range(cfg.ppo_epochs):
            order = torch.arange(B) if fused else torch.randperm(B, generator=gen)
            for k in range(n_mb):
                idx = order[k * M:(k + 1) * M].to(device)
                if fused and epoch == 0:
                    logp = logp_first[idx]
                else:
                    logits = forward(model, ids[idx], mask[idx], choice_ids)
                    logp = torch.log_softmax(logits / temp, -1)
                new = logp.gather(1, actions[idx, None]).squeeze(1)
                ratio = torch.exp(new - old_logp[idx])
                a = adv[idx]
                pg = -torch.min(ratio * a, ratio.clamp(1 - cfg.clip_range, 1 + cfg.clip_range) * a).mean()
                probs = logp.exp()
                entropy = -(probs * logp).sum(-1).mean()
                loss = pg - ent_coef * entropy
                kl = torch.zeros((), device=device)
                if ref_logp is not None:
                    kl = (probs * (logp - ref_logp[idx])).sum(-1).mean()
                    loss = loss + cfg.kl_coef * kl
                (loss / G).backward()
                sums["pg_loss"] += pg.item()
                sums["entropy"] += entropy.item()
                sums["kl"] += kl.item()
                sums["clipfrac"] += ((ratio - 1).abs() > cfg.clip_range).float().mean().item()
                n_terms += 1
                if (k + 1) % G == 0 or k == n_mb - 1:
                    if cfg.max_grad_norm:
                        gn = torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
                        sums["grad_norm"] += float(gn)
                    opt.step()
                    sched.step()
                    opt.zero_grad(set_to_none=True)
                    n_updates += 1

        counts = torch.bincount(actions, minlength=len(outcomes)).tolist()
        stats = {
            "step": step,
            "reward_mean": rewards.mean().item(),
            "temperature": temp,
            "entropy_coef": ent_coef,
            "lr": sched.get_last_lr()[0],
            **{k: v / max(1, n_terms) for k, v in sums.items() if k != "grad_norm"},
            "grad_norm": sums["grad_norm"] / max(1, n_updates),
            **{f"frac_{c}": n / B for c, n in zip(outcomes, counts)},
            "seconds": time.perf_counter() - t0,
        }
        history.append(stats)
        if progress is not None:  # before the checkpoint: what it reports is then out of the process
            progress(step, stats)
        if checkpoints is not None and checkpoints.due(step + 1, cfg.steps):
            checkpoints.save({
                "step": step + 1, "config": config, "history": history,
                "params": [p.detach().cpu() for p in params], "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(), "rng": rng_states(rng, gen),
            })
    return history


# --------------------------------------------------------------------------- free text

TextRewardFn = Callable[[list[int], list[str]], Sequence[float]]  # (row indices, completions)


def train_text_grpo(
    model,
    tokenizer,
    prompts: Sequence,
    reward_fn: TextRewardFn,
    args: dict,
    output_dir: str,
    progress: Callable[[int, int, dict], None] | None = None,
    checkpoint_every: int = 0,
    run_args: dict | None = None,
    callbacks: Sequence = (),
):
    """Free-text RL through trl's GRPOTrainer; trains `model` (a PeftModel trains its adapter)
    in place.

    `prompts[i]` is a string or chat messages (as generate.format_prompt leaves them, so the
    model is trained on the context it is later sampled on). `reward_fn(indices, completions)`
    scores completions of the prompts at those indices. `args` are GRPOConfig fields
    (a generated config's "trl.GRPOConfig", plus e.g. the seed); what this function fixes
    (checkpoints, logging every step, CPU when there is no GPU) cannot be overridden by them.
    `run_args`: GRPOConfig kwargs that watch the run (report_to, run_name, project);
    `callbacks`: more TrainerCallbacks (a tracker's).

    checkpoint_every > 0: trl saves a checkpoint-N under output_dir every so many steps (rounded
    up to whole generation cycles, `num_iterations` steps, since trl regenerates the buffered
    completions on resume), and a call that finds a complete one resumes from it through
    trl's own resume_from_checkpoint (weights, optimizer, scheduler, RNG states, data order),
    ending where an uninterrupted call does (tests/test_resume.py). The caller removes
    output_dir when the weights are safe. Returns (the trainer's log history, the GRPOConfig
    it ran with).
    """
    from datasets import Dataset
    from transformers.trainer_callback import PrinterCallback
    from trl import GRPOConfig, GRPOTrainer

    from .sft import last_checkpoint, progress_callback

    data = Dataset.from_dict({"prompt": list(prompts), "row": list(range(len(prompts)))})

    def reward(prompts, completions, row, **_):
        return [float(x) for x in reward_fn(list(row), list(completions))]

    cycle = int(args.get("num_iterations", 1))
    saves = ({"save_strategy": "steps", "save_steps": math.ceil(checkpoint_every / cycle) * cycle,
              "save_total_limit": 2} if checkpoint_every > 0 else {"save_strategy": "no"})
    config = GRPOConfig(**{
        "bf16": False, "report_to": "none", **args, **(run_args or {}),
        "output_dir": output_dir, **saves, "logging_steps": 1,
        "use_cpu": not torch.cuda.is_available(), "disable_tqdm": True,
    })
    trainer = GRPOTrainer(
        model=model, reward_funcs=[reward], args=config, train_dataset=data,
        processing_class=tokenizer, callbacks=[progress_callback(progress), *callbacks],
    )
    trainer.remove_callback(PrinterCallback)  # metrics go to the history
    trainer.train(resume_from_checkpoint=last_checkpoint(output_dir))
    return trainer.state.log_history, trainer.args
