"""What the settings blocks of a spec may hold: keys, value kinds and allowed words.

One table for the checker (unknown keys, wrong kinds, did-you-mean), for `generate` (which
resolves settings into configs) and for the README's reference. A value kind is one of:

    "int" "num" "bool" "str" "name" "names" "schedule" ("a", "b") a dict (a nested block)
    {"*": kind}  a block whose keys are free (e.g. a warm-up mix or a lexicon's lists)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# The keyword arguments of the installed trl, peft and transformers classes, and transformers'
# optimizer and scheduler names, listed at development time by scripts/list_trainer_keys.py
# (tests/test_trainer_names.py fails when the file is stale), so `check` imports none of them.
TRAINER_KEYS: dict = json.loads((Path(__file__).parent / "trainer_keys.json").read_text())
OPTIMIZERS: tuple[str, ...] = tuple(TRAINER_KEYS["optimizers"])
SCHEDULERS: tuple[str, ...] = tuple(TRAINER_KEYS["schedulers"])

SCHEDULE = "schedule"  # a number, or linear(start, end) / linear(start, end, fraction)

RL = {
    "algorithm": ("ppo", "grpo"),
    "steps": "int",
    "batch": "int",
    "minibatch": "int",
    "grad_accum": "int",
    "ppo_epochs": "int",
    "lr": "num",
    "schedule": SCHEDULERS,  # the fast path (PPO) runs PPO_WORDS["schedule"]; GRPO any of transformers'
    "warmup_steps": "int",
    "clip": "num",
    "whiten": "bool",
    "max_grad_norm": "num",
    "kl": "num",
    "entropy": SCHEDULE,
    "temperature": SCHEDULE,
    "optimizer": ("adamw",) + OPTIMIZERS,  # "adamw" is transformers' adamw_torch
    "num_generations": "int",
}

# What the one-token fast path (rl.train_choice_rl) implements of those words.
PPO_WORDS = {"schedule": ("constant", "linear", "cosine"), "optimizer": ("adamw", "paged_adamw_8bit")}

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
    "optimizer": ("optim", {"adamw": "adamw_torch"}),  # other words are transformers' own
}

# Supervised runs through trl's SFTTrainer: each `sft` setting and the SFTConfig field it becomes.
SFT_FIELDS: dict[str, tuple[str, dict | None]] = {
    "lr": ("learning_rate", None),
    "schedule": ("lr_scheduler_type", None),
    "warmup_steps": ("warmup_steps", None),
    "optimizer": ("optim", None),
    "weight_decay": ("weight_decay", None),
    "batch": ("per_device_train_batch_size", None),
    "grad_accum": ("gradient_accumulation_steps", None),
    "epochs": ("num_train_epochs", None),
    "max_steps": ("max_steps", None),
    "max_length": ("max_length", None),
    "max_grad_norm": ("max_grad_norm", None),
    "gradient_checkpointing": ("gradient_checkpointing", None),
    "bf16": ("bf16", None),
    # None leaves TF32 as the machine has it; True needs an Ampere GPU (the runtime drops it without one).
    "tf32": ("tf32", {True: True, False: None}),
    "group_by_length": ("train_sampling_strategy", {True: "group_by_length", False: "random"}),
}

# Short LoRA target names (as a spec writes them) -> the module names Llama/Qwen/Mistral use.
LORA_SHORT_NAMES = {
    "q": "q_proj", "k": "k_proj", "v": "v_proj", "o": "o_proj",
    "up": "up_proj", "down": "down_proj", "gate": "gate_proj",
}

# The one table from a spec's settings blocks to the trainers' own keyword arguments: block ->
# (the class, {setting: (keyword, value map)}, keywords fixed for every spec). A value map
# applies to each item of a list; a keyword of None means the mapped value is itself a dict of
# keywords. `generate` writes these kwargs into train/<profile>/<arm>.json; the runtime passes
# them straight to the class.
TRAINER_ARGS: dict[str, tuple[str, dict[str, tuple[str | None, dict | None]], dict]] = {
    "lora": ("peft.LoraConfig", {
        "rank": ("r", None),
        "alpha": ("lora_alpha", None),
        "dropout": ("lora_dropout", None),
        "targets": ("target_modules", LORA_SHORT_NAMES),
    }, {"task_type": "CAUSAL_LM"}),
    "quantize": ("transformers.BitsAndBytesConfig", {
        "bits": (None, {4: {"load_in_4bit": True}, 8: {"load_in_8bit": True}}),
        "type": ("bnb_4bit_quant_type", None),
        "double_quant": ("bnb_4bit_use_double_quant", None),
        "compute_dtype": ("bnb_4bit_compute_dtype", None),  # BitsAndBytesConfig takes the dtype's name
    }, {}),
    "sft": ("trl.SFTConfig", SFT_FIELDS, {}),
    # GRPOConfig defaults bf16 to True; the runtime trains GRPO in the model's own dtype.
    "grpo": ("trl.GRPOConfig", GRPO_FIELDS, {"bf16": False}),
}


def trainer_kwargs(block: str, settings: dict) -> dict:
    """A resolved settings block as its trainer class's keyword arguments (TRAINER_ARGS[block]).
    Settings the table lacks are left out (e.g. PPO's minibatch for GRPO). A schedule must be
    constant (`check` refuses others, E613); here a varying one is a bug."""
    _, fields, fixed = TRAINER_ARGS[block]
    out = {}
    for key, (name, words) in fields.items():
        if key not in settings:
            continue
        value = settings[key]
        if isinstance(value, dict):  # a schedule: the trainer holds it constant
            if value["start"] != value["end"]:
                raise ValueError(f"{TRAINER_ARGS[block][0]} holds `{key}` constant; "
                                 f"got a schedule from {value['start']} to {value['end']}")
            value = value["start"]
        if words is not None:
            # a word the map lacks is the trainer's own (an optimizer, a module name, "all-linear")
            value = [words.get(v, v) for v in value] if isinstance(value, list) else words.get(value, value)
        if name is None:
            out.update(value)
        else:
            out[name] = value
    return {**out, **fixed}


# The one-token `choice` fast path (rl.train_choice_rl, PPO-clipped): every setting but GRPO's.
PPO_SETTINGS = tuple(k for k in RL if k not in ("algorithm", "num_generations"))

# Which algorithm trains each kind of response, and the settings it takes.
RL_ALGORITHM = {"choice": "ppo", "text": "grpo"}
ALGORITHM_SETTINGS = {"ppo": PPO_SETTINGS, "grpo": tuple(GRPO_FIELDS)}

SFT = {
    "lr": "num",
    "schedule": SCHEDULERS,
    "warmup_steps": "int",
    "optimizer": OPTIMIZERS,
    "weight_decay": "num",
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

# GenerationConfig's keywords the runtime sets itself from the spec (generate.generate_texts).
GENERATION_OWNED = ("max_new_tokens", "temperature", "do_sample", "pad_token_id", "eos_token_id", "use_cache",
                    "max_length", "num_return_sequences", "return_dict_in_generate")

GENERATE = {
    "temperature": "num",
    "max_new_tokens": "int",
    "seed": "int",
    "batch": "int",
    "backend": ("transformers", "vllm"),
    # transformers.GenerationConfig's own keywords (top_p, top_k, repetition_penalty, ...), passed
    # to model.generate as they are; `generate` keeps them in the profile's `generate` section
    **{k: kind if isinstance(kind, str) else tuple(kind)
       for k, kind in TRAINER_KEYS["classes"]["transformers.GenerationConfig"].items() if k not in GENERATION_OWNED},
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
        "bits": (4, 8),  # TRAINER_ARGS maps each to BitsAndBytesConfig's load_in_4bit / load_in_8bit
        "type": ("nf4", "fp4"),
        "double_quant": "bool",
        "compute_dtype": ("bfloat16", "float16", "float32"),
    },
    "lora": {"rank": "int", "alpha": "num", "dropout": "num", "targets": "targets"},
    # pass-through: keywords of the trainer's own class, checked against it (check.check_pass_through)
    # and merged into its section of the generated config (PASS_THROUGH)
    "trl": {"*": "any"},
    "peft": {"*": "any"},
    "dtype": ("float32", "bfloat16", "float16"),
    # the experiment's evaluation, lighter or heavier for this profile
    "evaluate": {"samples": "int", "sweep": "values"},
    "track": {"report_to": ("none", "tensorboard", "trackio", "wandb"), "project": "str", "log_every": "int"},
    # steps between resumable checkpoints of an RL or SFT arm (0: none); never changes the result
    "checkpoint_every": "int",
}

# ---- the trainers' names -----------------------------------------------------------------
# A settings block also takes the names its trainer class gives its settings (TRAINER_ARGS read
# backwards): `learning_rate` for `lr`, `r` for `rank`, `load_in_4bit true` for `bits 4`, ...
ALIAS_SOURCES = {"rl": "grpo", "sft": "sft", "lora": "lora", "quantize": "quantize"}


def _inverse(kind, words: dict | None) -> dict | None:
    """{trainer's word: spec's word} for a value map (None: the words are the same)."""
    if words is None:
        return None
    if kind == "targets":
        return {v: k for k, v in words.items()}
    shorts = (True, False) if kind == "bool" else kind
    out: dict = {}
    for w in shorts:
        out.setdefault(words.get(w, w), w)  # the first spec word wins (`adamw` over `adamw_torch`)
    return out


def _aliases(block: str) -> dict[str, tuple[str, dict | None]]:
    _, fields, _ = TRAINER_ARGS[ALIAS_SOURCES[block]]
    out: dict[str, tuple[str, dict | None]] = {}
    for key, (name, words) in fields.items():
        if name is None:  # each value is its own flag (quantize bits 4: load_in_4bit true)
            for short, flags in (words or {}).items():
                for flag, v in flags.items():
                    out[flag] = (key, {v: short})
        elif name != key:
            out[name] = (key, _inverse(PROFILE[block][key], words))
    return out


# block -> {alias: (the spec's short key, {alias value: short value} or None)}
ALIASES: dict[str, dict[str, tuple[str, dict | None]]] = {b: _aliases(b) for b in ALIAS_SOURCES}


def alias_kind(block: str, alias: str):
    """The value kind an alias takes: its short key's, in the trainer's words."""
    short, inverse = ALIASES[block][alias]
    kind = PROFILE[block][short]
    return kind if inverse is None or kind == "targets" else tuple(inverse)


def canonical(block: str, settings: dict) -> dict:
    """A settings block (plain values) with every alias as the spec's short key and value, so a
    profile written in either names resolves to the same config."""
    aliases = ALIASES.get(block, {})
    out = {}
    for key, value in settings.items():
        if key in aliases:
            key, inverse = aliases[key]
            if inverse is not None:
                value = [inverse.get(v, v) for v in value] if isinstance(value, list) else inverse.get(value, value)
        out[key] = value
    return out


# ---- pass-through blocks ------------------------------------------------------------------
# `trl { ... }` holds keywords of the class the profile trains with, `peft { ... }` LoraConfig's;
# each keyword's kind is in TRAINER_KEYS. A keyword ectc already sets is refused there (E630):
# the ones a short setting maps to (write it in its block, by either name), the ones fixed for
# every spec, and the ones only a run knows.
PASS_THROUGH = {"trl": {"sft": "trl.SFTConfig", "grpo": "trl.GRPOConfig"}, "peft": {"lora": "peft.LoraConfig"}}
RUN_OWNED = {
    "output_dir": "ectc sets it for each run", "seed": "ectc sets it for each run (the profile's seeds)",
    "use_cpu": "ectc sets it for each run (`--device`)",
    "max_completion_length": "it is the response's `max_tokens`",
    "report_to": "experiment tracking is the profile's `track { report_to ... }`",
}


def owned_keywords(cls: str) -> dict[str, str]:
    """{keyword: why a pass-through block may not set it} for trainer class `cls`."""
    out = dict(RUN_OWNED)
    for block, (name, fields, fixed) in TRAINER_ARGS.items():
        if name != cls:
            continue
        spec_block = {"grpo": "rl"}.get(block, block)
        for key, (keyword, words) in fields.items():
            for kw in ([keyword] if keyword is not None else [f for flags in (words or {}).values() for f in flags]):
                out[kw] = f"it is `{key}` in `{spec_block}`" + (f" (or `{kw}` there)" if kw != key else "")
        for kw in fixed:
            out[kw] = f"ectc fixes it to `{json.dumps(fixed[kw])}`"
    return out


MODEL_TINY = {"layers": "int", "width": "int", "heads": "int", "numbers": ("digits", "whole")}
MODEL_HF = {"revision": "str", "dtype": ("float32", "bfloat16", "float16"),
            # passed to from_pretrained (models.load_hf_model)
            "trust_remote_code": "bool", "attn_implementation": "str"}
MODEL_GGUF = {"dtype": ("float32", "bfloat16", "float16")}  # what the de-quantized weights are kept in
MODEL_SETTINGS = {"tiny": MODEL_TINY, "hf": MODEL_HF, "gguf": MODEL_GGUF}

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

# What a lexicon monitor returns, for type checking `monitor.field` in metrics: always its
# counts (matches in any list, words, matches per 100 words); the 0-10 magnitude, the left/right
# lean and the PASS / PARTIAL / FAIL verdict only when it declares a mapping (any of
# LEXICON_MAPPING; the others take their DEFAULTS), so a list of filler words just counts.
LEXICON_COUNTS = {"hits": "int", "words": "int", "per_100": "real"}
LEXICON_VERDICT = {"magnitude": "real", "lean": "real", "objectivity": "text"}
LEXICON_MAPPING = ("intercept", "slope", "pass_below", "fail_above")
OBJECTIVITY = ("PASS", "PARTIAL", "FAIL")


def lexicon_maps(settings: Any) -> bool:
    """Whether a lexicon monitor with these settings (names, or a dict) maps counts to a verdict."""
    return any(k in settings for k in LEXICON_MAPPING)


def lexicon_fields(settings: Any) -> dict[str, str]:
    """The fields a lexicon monitor with these settings returns, with their kinds."""
    return {**LEXICON_COUNTS, **(LEXICON_VERDICT if lexicon_maps(settings) else {})}

DATA = {
    "size": "int",
    "split": {"by": "name", "train": "num", "validation": "num", "test": "num"},
    "prompt": "str",
    "limit": "int",
    "count": "int",
    "temperature": "num",
    # `data x: hf "org/name"`: what datasets.load_dataset reads (`split` may also name hub splits)
    "revision": "str",
    "config": "str",
}
DATA_HF = ("revision", "config")
DATA_SPLITS = ("train", "validation", "test")

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
        "gradient_checkpointing": False, "bf16": False, "weight_decay": 0.0, "tf32": False, "group_by_length": False,
    },
    "generate": {"temperature": 1.0, "max_new_tokens": 128, "seed": 0, "batch": 16, "backend": "transformers"},
    "warmup": {"steps": 0, "batch": 32, "lr": 1e-3, "label": "random", "mix": {}, "loss": "target", "weight_decay": 0.0},
    "model_tiny": {"layers": 2, "width": 96, "heads": 4, "numbers": "digits"},
    "model_hf": {"dtype": "bfloat16", "revision": None, "trust_remote_code": False, "attn_implementation": None},
    "model_gguf": {"dtype": "float32"},  # a CPU-sized model: float32 unless the profile says otherwise
    "lora": {"rank": 16, "alpha": 32, "dropout": 0.05, "targets": ["q", "k", "v", "o", "up", "down", "gate"]},
    "quantize": {"bits": 4, "type": "nf4", "double_quant": True, "compute_dtype": "bfloat16"},
    "monitor_llm": {"temperature": 0.0, "max_tokens": 1024, "reasks": 2, "concurrency": 8, "system": None},
    "monitor_lexicon": {"intercept": 1.0, "slope": 1.0, "pass_below": 2.0, "fail_above": 6.0},
    "evaluate": {"split": "test", "samples": 0, "at": "deploy"},
    # project None: the experiment's name; log_every 0: about 20 progress lines per arm
    "track": {"report_to": "none", "project": None, "log_every": 0},
    "checkpoint_every": 50,
}

# The checkpoint of the base model before any arm trains: `reuse base` (an out-of-the-box arm)
# and a probe's `checkpoint base` name it.
BASE_CHECKPOINT = "base"
