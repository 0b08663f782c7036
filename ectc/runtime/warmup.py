"""Supervised warm-up: teach a (tiny) base model the task skill before RL.

A plain torch loop: cross-entropy on the target tokens only, AdamW, constant learning rate.
The examples come from the caller (a generator function or an iterable of (prompt, target)),
so nothing here knows what the task is.
"""

from __future__ import annotations

import itertools
import random
from typing import Callable, Iterable

import torch
import torch.nn.functional as F

from .checkpoints import Checkpoints, load_params, rng_states, set_rng_states


def encode_pairs(tokenizer, pairs: list[tuple[str, str]], loss_on: str = "target", eos: bool = False):
    """Left-padded batch of prompt+target. Labels are -100 everywhere but the target, or, with
    loss_on="sequence", everywhere but the padding and the leading <bos>. eos=True ends every
    target with the EOS token, so a model answering in free text learns where to stop."""
    prompts = tokenizer([p for p, _ in pairs], add_special_tokens=True)["input_ids"]
    targets = tokenizer([t for _, t in pairs], add_special_tokens=False)["input_ids"]
    if eos:
        targets = [t + [tokenizer.eos_token_id] for t in targets]
    seqs = [p + t for p, t in zip(prompts, targets)]
    width = max(len(s) for s in seqs)
    pad = tokenizer.pad_token_id
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    labels = torch.full((len(seqs), width), -100, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, (p, t) in enumerate(zip(prompts, targets)):
        n = len(p) + len(t)
        ids[i, width - n:] = torch.tensor(p + t)
        scored = t if loss_on == "target" else (p + t)[1:]
        labels[i, width - len(scored):] = torch.tensor(scored)
        mask[i, width - n:] = 1
    return ids, mask, labels


def position_ids_for(mask: torch.Tensor) -> torch.Tensor:
    # Left padding: count positions from each row's first real token, so a prompt means the
    # same thing whatever batch it sits in.
    return (mask.cumsum(-1) - 1).clamp(min=0)


def supervised_warmup(
    model,
    tokenizer,
    examples: Callable[[random.Random, int], list[tuple[str, str]]] | Iterable[tuple[str, str]],
    steps: int,
    batch_size: int = 64,
    lr: float = 1e-3,
    seed: int = 0,
    weight_decay: float = 0.0,
    max_grad_norm: float | None = 1.0,
    loss_on: str = "target",
    eos: bool = False,
    progress: Callable[[int, dict], None] | None = None,
    checkpoints: Checkpoints | None = None,
) -> list[float]:
    """Train `model` for `steps` steps and return the loss of every step.

    loss_on="sequence" also trains on the prompt's tokens. A tiny model then learns to predict
    the prompt's own content (e.g. the sum a user is about to claim), which gives it the
    features a target such as "is the claim right?" needs: on the addition check, the target-only
    loss sat at ln 2 for 3000+ steps, the sequence loss learned it in about 1000.

    `examples` is either a function (rng, n) -> n (prompt, target) pairs, called once per step
    (procedural tasks: fresh samples every step), or an iterable of pairs, cycled in order.

    `checkpoints`: every `checkpoints.every` steps the weights, optimizer, RNG states and losses
    are saved, and a call with the same settings that finds them continues from there to the
    losses and weights an uninterrupted call gives (the caller keys the folder by the model's
    recipe and removes it when the model is saved).
    """
    torch.manual_seed(seed)
    rng = random.Random(seed)
    if callable(examples):
        def next_batch():
            return list(examples(rng, batch_size))
    else:
        stream = itertools.cycle(list(examples))

        def next_batch():
            return list(itertools.islice(stream, batch_size))

    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    device = next(model.parameters()).device
    model.train()
    history: list[float] = []
    start = 0
    config = {"steps": steps, "batch_size": batch_size, "lr": lr, "seed": seed, "weight_decay": weight_decay,
              "max_grad_norm": max_grad_norm, "loss_on": loss_on, "eos": eos}
    saved = checkpoints.load(config) if checkpoints is not None else None
    if saved is not None:
        load_params(params, saved["params"])
        opt.load_state_dict(saved["optimizer"])
        set_rng_states(saved["rng"], python_rng=rng)
        history, start = list(saved["losses"]), saved["step"]
        if not callable(examples):
            for _ in range(start):  # the cycled stream where the checkpoint left it
                next_batch()
    for step in range(start, steps):
        ids, mask, labels = (t.to(device) for t in encode_pairs(tokenizer, next_batch(), loss_on, eos))
        logits = model(input_ids=ids, attention_mask=mask,
                       position_ids=position_ids_for(mask)).logits
        # Shift: the logit at position t predicts token t+1.
        loss = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(),
                               ignore_index=-100)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if max_grad_norm:
            torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
        opt.step()
        history.append(loss.item())
        if progress is not None:
            progress(step, {"loss": history[-1], "lr": lr})
        if checkpoints is not None and checkpoints.due(step + 1, steps):
            checkpoints.save({"step": step + 1, "config": config, "losses": history,
                              "params": [p.detach().cpu() for p in params], "optimizer": opt.state_dict(),
                              "rng": rng_states(python_rng=rng)})
    return history
