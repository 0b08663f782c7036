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
    "clip": "num",
    "whiten": "bool",
    "max_grad_norm": "num",
    "kl": "num",
    "entropy": SCHEDULE,
    "temperature": SCHEDULE,
    "optimizer": ("adamw", "paged_adamw_8bit"),
    "num_generations": "int",
}

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

MODEL_TINY = {"layers": "int", "width": "int", "heads": "int"}
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
        "scale": "num",
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
