"""What the settings blocks of a spec may hold: keys, value kinds and allowed words.

One table for the checker (unknown keys, wrong kinds, did-you-mean), for `generate` (which
resolves settings into configs) and for the README's reference. A value kind is one of:

    "int" "num" "bool" "str" "name" "names" "schedule" ("a", "b") a dict (a nested block)
    {"*": kind}  a block whose keys are free (e.g. a warm-up mix or a lexicon's lists)
"""

from __future__ import annotations

SCHEDULE = "schedule"  # a number, or linear(start, end) / linear(start, end, fraction)

RL = {
    "algorithm": ("ppo", "grpo"),
    "steps": "int",
    "batch": "int",
    "minibatch": "int",
    "grad_accum": "int",
    "ppo_epochs": "int",
    "lr": "num",
    "schedule": ("constant", "linear", "cosine"),
    "warmup_steps": "int",
    "clip": "num",
    "whiten": "bool",
    "max_grad_norm": "num",
    "kl": "num",
    "entropy": SCHEDULE,
    "temperature": SCHEDULE,
    "optimizer": ("adamw", "paged_adamw_8bit"),
    "num_generations": "int",
}

# Free-text RL runs through trl's GRPOTrainer: each `rl` setting it honours, and the GRPOConfig
# field it becomes, with a value map where the words differ. A setting missing here has no
# GRPO equivalent and `check` rejects it (E612); schedules must be constant (E613).
GRPO_FIELDS: dict[str, tuple[str, dict | None]] = {
    "steps": ("max_steps", None),
    "batch": ("per_device_train_batch_size", None),   # completions per forward/backward
    "grad_accum": ("gradient_accumulation_steps", None),
    "lr": ("learning_rate", None),
    "schedule": ("lr_scheduler_type", None),
    "warmup_steps": ("warmup_steps", None),
    "clip": ("epsilon", None),
    "kl": ("beta", None),
    "ppo_epochs": ("num_iterations", None),
    # Advantages are rewards minus their group's mean; whitening divides by the group's std.
    "whiten": ("scale_rewards", {True: "group", False: "none"}),
    "max_grad_norm": ("max_grad_norm", None),
    "temperature": ("temperature", None),
    "entropy": ("entropy_coef", None),
    "num_generations": ("num_generations", None),
    "optimizer": ("optim", {"adamw": "adamw_torch", "paged_adamw_8bit": "paged_adamw_8bit"}),
}

# The one-token `choice` fast path (rl.train_choice_rl, PPO-clipped): every setting but GRPO's.
PPO_SETTINGS = tuple(k for k in RL if k not in ("algorithm", "num_generations"))

# Which algorithm trains each kind of response, and the settings it takes.
RL_ALGORITHM = {"choice": "ppo", "text": "grpo"}
ALGORITHM_SETTINGS = {"ppo": PPO_SETTINGS, "grpo": tuple(GRPO_FIELDS)}

SFT = {
    "lr": "num",
    "schedule": ("cosine", "linear", "constant"),
    "warmup_steps": "int",
    "optimizer": ("adamw_torch", "paged_adamw_8bit"),
    "batch": "int",
    "grad_accum": "int",
    "epochs": "num",
    "max_steps": "int",
    "max_length": "int",
    "max_grad_norm": "num",
    "gradient_checkpointing": "bool",
    "bf16": "bool",
    "tf32": "bool",
    "group_by_length": "bool",
}

GENERATE = {
    "temperature": "num",
    "max_new_tokens": "int",
    "seed": "int",
    "batch": "int",
    "backend": ("transformers", "vllm"),
}

WARMUP = {
    "steps": "int",
    "batch": "int",
    "lr": "num",
    "label": ("random", "none"),
    "mix": {"*": "num"},
    "loss": ("target", "sequence"),
    "weight_decay": "num",
}

PROFILE = {
    "seeds": "int",
    "prompt": "str",
    "system": "str",
    "unlabeled": "str",
    "warmup": WARMUP,
    "rl": RL,
    "sft": SFT,
    "generate": GENERATE,
    "quantize": {
        "bits": "int",
        "type": ("nf4", "fp4"),
        "double_quant": "bool",
        "compute_dtype": ("bfloat16", "float16", "float32"),
    },
    "lora": {"rank": "int", "alpha": "num", "dropout": "num", "targets": "names"},
    "dtype": ("float32", "bfloat16", "float16"),
}

MODEL_TINY = {"layers": "int", "width": "int", "heads": "int", "numbers": ("digits", "whole")}
MODEL_HF = {"revision": "str", "dtype": ("float32", "bfloat16", "float16")}

MONITOR = {
    "llm": {
        "sees": "names",
        "rubric": "str",
        "system": "str",
        "temperature": "num",
        "max_tokens": "int",
        "reasks": "int",
        "concurrency": "int",
    },
    "lexicon": {
        "sees": "names",
        "lists": {"*": "str"},
        "intercept": "num",
        "slope": "num",
        "pass_below": "num",
        "fail_above": "num",
    },
    "expr": {},
}

# What a lexicon monitor returns, for type checking `monitor.field` in metrics.
LEXICON_FIELDS = {"magnitude": "real", "lean": "real", "objectivity": "text", "hits": "int"}
OBJECTIVITY = ("PASS", "PARTIAL", "FAIL")

DATA = {
    "size": "int",
    "split": {"by": "name", "train": "num", "validation": "num", "test": "num"},
    "prompt": "str",
    "limit": "int",
    "count": "int",
    "temperature": "num",
}

RESPONSE_TEXT = {"max_tokens": "int"}

EVALUATE = {
    "split": ("train", "validation", "test"),
    "samples": "int",
    "at": ("deploy",),
}

PROBE = {"checkpoint": "name", "prompt": "str"}

ARM_LABELS = ("none", "true", "shuffled")
ARM_ENCODINGS = ("text", "id", "number")
ARM_INFER = ("none", "true", "deploy")

FIELD_TYPES = ("int", "real", "bool", "text")

# Defaults that `generate` fills in, so every resolved config states every value it runs with
# (the RL algorithm follows the response: RL_ALGORITHM).
DEFAULTS = {
    "rl": {
        "steps": 100, "batch": 64, "minibatch": 64, "grad_accum": 1,
        "ppo_epochs": 1, "lr": 1e-4, "schedule": "constant", "warmup_steps": 0, "clip": 0.2, "whiten": True, "max_grad_norm": 1.0,
        "kl": 0.0, "entropy": 0.0, "temperature": 1.0, "optimizer": "adamw", "num_generations": 8,
    },
    "sft": {
        "lr": 2e-4, "schedule": "cosine", "warmup_steps": 0, "optimizer": "adamw_torch", "batch": 8,
        "grad_accum": 1, "epochs": 1, "max_steps": -1, "max_length": 512, "max_grad_norm": 1.0,
        "gradient_checkpointing": False, "bf16": False, "tf32": False, "group_by_length": False,
    },
    "generate": {"temperature": 1.0, "max_new_tokens": 128, "seed": 0, "batch": 16, "backend": "transformers"},
    "warmup": {"steps": 0, "batch": 32, "lr": 1e-3, "label": "random", "mix": {}, "loss": "target", "weight_decay": 0.0},
    "model_tiny": {"layers": 2, "width": 96, "heads": 4, "numbers": "digits"},
    "model_hf": {"dtype": "bfloat16", "revision": None},
    "lora": {"rank": 16, "alpha": 32, "dropout": 0.05, "targets": ["q", "k", "v", "o", "up", "down", "gate"]},
    "quantize": {"bits": 4, "type": "nf4", "double_quant": True, "compute_dtype": "bfloat16"},
    "monitor_llm": {"temperature": 0.0, "max_tokens": 1024, "reasks": 2, "concurrency": 8, "system": None},
    "monitor_lexicon": {"intercept": 1.0, "slope": 1.0, "pass_below": 2.0, "fail_above": 6.0},
    "evaluate": {"split": "test", "samples": 0, "at": "deploy"},
}
