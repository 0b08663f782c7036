"""A generated train/<profile>/<arm>.json loads straight into the trainers' own classes: its
"peft.LoraConfig", "transformers.BitsAndBytesConfig", "trl.SFTConfig" and "trl.GRPOConfig"
sections are those classes' keyword arguments (issue 12)."""

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

GENERATED = Path(__file__).resolve().parent.parent / "generated"


def config(exp: str, profile: str, arm: str) -> dict:
    return json.loads((GENERATED / exp / "train" / profile / f"{arm}.json").read_text())


def cpu_safe(kwargs: dict) -> dict:
    # TF32 exists only on Ampere GPUs; the runtime (sft.sft_config) drops it elsewhere too.
    return {**kwargs, "tf32": None} if not torch.cuda.is_available() else kwargs


@pytest.mark.parametrize("exp,profile,rank,targets", [
    ("sycophancy", "paper", 512, ["q", "k", "v", "o", "up", "down", "gate"]),
    ("bias", "paper", 16, ["q", "k", "v", "o", "up", "down", "gate"]),
    ("verbosity", "paper", 16, ["q", "k", "v", "o"]),
])
def test_lora_config_loads(exp, profile, rank, targets):
    from peft import LoraConfig

    cfg = config(exp, profile, "ect")
    lora = LoraConfig(**cfg["peft.LoraConfig"])
    assert lora.r == rank == cfg["lora"]["rank"] and lora.lora_alpha == 2 * rank
    assert lora.lora_dropout == 0.05 and lora.task_type == "CAUSAL_LM"
    assert lora.target_modules == {f"{t}_proj" for t in targets}


@pytest.mark.parametrize("exp", ["sycophancy", "bias"])
def test_bits_and_bytes_config_loads(exp):
    from transformers import BitsAndBytesConfig

    bnb = BitsAndBytesConfig(**config(exp, "paper", "ect")["transformers.BitsAndBytesConfig"])
    assert bnb.load_in_4bit and not bnb.load_in_8bit
    assert bnb.bnb_4bit_quant_type == "nf4" and bnb.bnb_4bit_use_double_quant
    assert bnb.bnb_4bit_compute_dtype == torch.bfloat16


def test_sft_config_loads(tmp_path):
    from trl import SFTConfig

    cfg = config("bias", "paper", "ect")
    assert "trl.GRPOConfig" not in cfg
    args = SFTConfig(output_dir=str(tmp_path), use_cpu=True, **cpu_safe(cfg["trl.SFTConfig"]))
    assert args.lr_scheduler_type == "cosine" and args.learning_rate == 2e-4
    assert args.optim == "paged_adamw_8bit" and args.per_device_train_batch_size == 12
    assert args.num_train_epochs == 3 and args.max_length == 512 and args.max_grad_norm == 0.3
    assert args.warmup_steps == 50 and args.gradient_checkpointing and args.bf16
    assert args.train_sampling_strategy == "group_by_length"


def test_grpo_config_loads(tmp_path):
    from trl import GRPOConfig

    cfg = config("verbosity", "paper", "ect")
    assert "trl.SFTConfig" not in cfg and "transformers.BitsAndBytesConfig" not in cfg
    args = GRPOConfig(output_dir=str(tmp_path), use_cpu=True, **cfg["trl.GRPOConfig"])
    rl = cfg["rl"]
    assert (args.epsilon, args.beta, args.num_iterations) == (rl["clip"], rl["kl"], rl["ppo_epochs"]) == (0.2, 0.04, 2)
    assert args.lr_scheduler_type == "cosine" and args.learning_rate == rl["lr"]
    assert args.max_steps == rl["steps"] and args.per_device_train_batch_size == rl["batch"]
    assert args.scale_rewards == "group" and args.optim == "adamw_torch" and args.bf16 is False
    assert args.temperature == rl["temperature"]["start"] and args.num_generations == rl["num_generations"]
    assert args.max_completion_length == 12  # the response's own max_tokens


def test_choice_rl_and_tiny_profiles_have_no_trl_section():
    """The one-token choice fast path is not trl's: it reads the `rl` block (RLConfig)."""
    cfg = config("sycophancy", "paper", "ect")
    assert cfg["rl"]["algorithm"] == "ppo"
    assert not {"trl.GRPOConfig", "trl.SFTConfig"} & set(cfg)
    assert not {"peft.LoraConfig", "transformers.BitsAndBytesConfig"} & set(config("sycophancy", "tiny", "ect"))
