"""How often the base model gives each choice at the start of RL, and which it almost never gives.

The one-token RL fast path learns only from the answers it samples (the entropy bonus spreads
little mass). A choice the base gives with near-zero probability, typically one the warm-up never
targets, is then almost never sampled, never rewarded, and falls further while the sampled choices
take the gradient: in a three-way Correct / Incorrect / Unsure spec, "Unsure" sat at P 0.0003 from
the first step to the last. So the run measures the base's choice distribution over a batch of
the arm's own training prompts before the first step, and warns.
"""

from __future__ import annotations

from typing import Sequence

# Below 1% a choice gets fewer than one rollout in a hundred: with the shipped batches (16 to 128
# rollouts a step) that is under one sample a step, against every other choice reinforced in each.
NEAR_ZERO = 0.01
PROMPTS = 256  # how many of the arm's training prompts the measurement reads (one batch)


def base_choice_shares(model, tokenizer, prompts: Sequence[str], choices: Sequence[str],
                       temperature: float = 1.0) -> dict[str, float]:
    """The mean probability of each choice over `prompts`, at the temperature RL starts sampling
    at: how often the first step's rollouts give it."""
    from .rl import choice_distribution

    probs = choice_distribution(model, tokenizer, list(prompts)[:PROMPTS], choices, temperature=temperature)
    return {c: float(probs[:, i].mean()) if len(probs) else 0.0 for i, c in enumerate(choices)}


def near_zero(shares: dict[str, float]) -> list[str]:
    """The choices RL will almost never sample."""
    return [c for c, p in shares.items() if p < NEAR_ZERO]


WHY = "RL learns only from the answers it samples, so it will almost never try"


def warning(shares: dict[str, float], temperature: float = 1.0) -> str | None:
    """One line for the console and the run's events; None when every choice gets sampled."""
    rare = near_zero(shares)
    if not rare:
        return None
    said = ", ".join(f'"{c}" P {shares[c]:.2g}' for c in rare)
    at = "" if temperature == 1.0 else f" at RL's starting temperature {temperature:g}"
    return (f"near-zero choice: the base model gives {said} over the first training prompts{at} "
            f"(threshold {NEAR_ZERO:g}): {WHY} {'it' if len(rare) == 1 else 'them'}")


def report_note(records: list[tuple[str, dict]]) -> str | None:
    """The report's line over the training stages' records ((arm, record) per arm and seed): each
    choice the base gave near-zero probability on some arm's prompts, with the largest such P."""
    worst: dict[str, float] = {}
    arms: dict[str, list[str]] = {}
    for arm, rec in records:
        shares = rec.get("base_choices") or {}
        for choice in near_zero(shares):
            worst[choice] = max(worst.get(choice, 0.0), shares[choice])
            if arm not in arms.setdefault(choice, []):
                arms[choice].append(arm)
    if not worst:
        return None
    said = "; ".join(f'"{c}" P at most {p:.2g} (arm{"s" if len(arms[c]) > 1 else ""} {", ".join(arms[c])})'
                     for c, p in worst.items())
    return (f"Near-zero choice under the base model at the start of RL: {said}; the threshold is "
            f"{NEAR_ZERO:g}. {WHY} {'it' if len(worst) == 1 else 'them'}, and training could hardly "
            f"teach {'it' if len(worst) == 1 else 'them'} (a warm-up that targets a choice gives it mass).")
