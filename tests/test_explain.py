"""`ectc explain`: the resolved profile as its trainer reads it."""

import io
import re
from pathlib import Path

from rich.console import Console

from ectc import schema
from ectc.compile import compile_text
from ectc.explain import explain

ROOT = Path(__file__).resolve().parent.parent


def _profile_rows(spec: str, profile: str) -> dict[str, str]:
    text = (ROOT / "specs" / spec).read_text()
    console = Console(file=io.StringIO(), width=1000, highlight=False, color_system=None)
    explain(compile_text(text)[0], console, profile=profile)
    rows = [line.strip("│ ").split(" │ ") for line in console.file.getvalue().splitlines() if line.startswith("│")]
    return {row[0].strip(): row[1].strip() for row in rows if len(row) == 2}


def test_a_grpo_profile_shows_only_what_grpo_reads():
    """Each setting of a GRPO `rl` block with the GRPOConfig field it becomes; no PPO-only
    setting, no schedule (GRPO holds entropy and temperature constant) (issue 16)."""
    rows = _profile_rows("verbosity.ect", "paper")
    assert rows["rl: grpo (trl's GRPOTrainer)"] == (
        "steps=400 (max_steps), batch=32 (per_device_train_batch_size), grad_accum=2 "
        "(gradient_accumulation_steps), lr=1e-05 (learning_rate), schedule=cosine (lr_scheduler_type), "
        "warmup_steps=20 (warmup_steps), clip=0.2 (epsilon), kl=0.04 (beta), ppo_epochs=2 (num_iterations), "
        "whiten=True (scale_rewards=group), max_grad_norm=1.0 (max_grad_norm), temperature=0.9 (temperature), "
        "entropy=0.0 (entropy_coef), num_generations=8 (num_generations), optimizer=adamw (optim=adamw_torch)")
    shown = re.findall(r"(\w+)=[^,]*?\((\w+)", rows["rl: grpo (trl's GRPOTrainer)"])
    assert shown == [(k, schema.GRPO_FIELDS[k][0]) for k in schema.ALGORITHM_SETTINGS["grpo"]]


def test_a_ppo_profile_shows_its_schedules():
    rows = _profile_rows("sycophancy.ect", "paper")
    settings = rows["rl: ppo (the one-token PPO fast path)"]
    assert re.findall(r"(?:^|, )(\w+)=", settings) == list(schema.PPO_SETTINGS)
    assert "entropy=linear(2.0, 0.01, 1.0), temperature=linear(1.9, 1.6, 0.4)" in settings
