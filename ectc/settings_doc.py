"""What each profile setting means, in a sentence: the language server's hover and the JSON
Schema's descriptions (`ectc schema`). Keys and value kinds live in `schema.py` alone; this table
only describes them, by dotted path (`rl.lr`, `model.tiny.layers`), and a test checks that every
path names a setting the schema declares."""

from __future__ import annotations

from . import schema

DOCS: dict[str, str] = {
    "seeds": "Seeds per arm: each arm trains and evaluates once per seed (1 to 1000).",
    "prompt": "Overrides the experiment's prompt template for this profile.",
    "system": "Overrides the experiment's system prompt template for this profile.",
    "unlabeled": "Overrides what arms without a label show (default: empty).",
    "dtype": "The dtype the model's weights are loaded in.",
    "model": "The base model: `model tiny { ... }` (built by the runtime), `model hf \"id-or-folder\"` "
             "or `model gguf \"FILE\" in \"package\"`.",
    "model.tiny.layers": "Transformer layers of the tiny model.",
    "model.tiny.width": "Hidden width of the tiny model.",
    "model.tiny.heads": "Attention heads of the tiny model.",
    "model.tiny.numbers": "How the word-level tokenizer splits numbers: `digits` (\"73\" is 7, 3) or `whole` "
                          "(\"73\" is one token).",
    "model.hf.revision": "The hub revision (branch, tag or commit) to load.",
    "model.hf.dtype": "The dtype the model's weights are loaded in.",
    "model.hf.trust_remote_code": "Run the repository's own code (from_pretrained).",
    "model.hf.attn_implementation": "Attention kernel: eager, sdpa or flash_attention_2.",
    "model.gguf.dtype": "The dtype the de-quantized weights are kept in (float32 by default).",
    "warmup": "Supervised warm-up of the base model before any arm trains.",
    "warmup.steps": "Warm-up optimizer steps (0: no warm-up).",
    "warmup.batch": "Warm-up batch size.",
    "warmup.lr": "Warm-up learning rate.",
    "warmup.label": "`random`: the label slot holds random axis values (1 in 10 the unlabeled text); "
                    "`none`: unlabeled.",
    "warmup.mix": "Which data blocks the warm-up draws from, with their shares: `mix { block 0.5 ... }`.",
    "warmup.loss": "`target`: loss on the target only; `sequence`: on every token, so the model also "
                   "learns the prompts.",
    "warmup.weight_decay": "AdamW weight decay of the warm-up.",
    "rl": "Reinforcement learning: PPO on the one-token fast path for `response choice`, trl's GRPO "
          "for `response text`.",
    "rl.algorithm": "`ppo` (the one-token fast path, for `choice`) or `grpo` (trl's GRPOTrainer, for "
                    "`text`); it follows the response.",
    "rl.steps": "RL optimizer steps per arm and seed (GRPOConfig.max_steps).",
    "rl.batch": "Prompts per step (GRPO: completions per forward/backward, per_device_train_batch_size).",
    "rl.minibatch": "PPO minibatch size (the fast path only).",
    "rl.grad_accum": "Gradient accumulation steps.",
    "rl.ppo_epochs": "Optimisation passes over each batch (GRPOConfig.num_iterations).",
    "rl.lr": "Learning rate (GRPOConfig.learning_rate).",
    "rl.schedule": "Learning-rate schedule: `constant`, `linear` or `cosine` (lr_scheduler_type).",
    "rl.warmup_steps": "Learning-rate warm-up steps.",
    "rl.clip": "PPO clip range (GRPOConfig.epsilon).",
    "rl.whiten": "Whiten advantages (GRPO: scale rewards by their group's std).",
    "rl.max_grad_norm": "Gradient-norm clipping.",
    "rl.kl": "KL penalty towards the reference model (GRPOConfig.beta).",
    "rl.entropy": "Entropy bonus: a number or `linear(start, end[, fraction])` (GRPOConfig.entropy_coef).",
    "rl.temperature": "Sampling temperature during RL: a number or `linear(start, end[, fraction])`.",
    "rl.optimizer": "`adamw` or `paged_adamw_8bit` (bitsandbytes).",
    "rl.num_generations": "GRPO: completions per prompt (a batch holds whole groups).",
    "sft": "Supervised fine-tuning through trl's SFTTrainer (SFTConfig).",
    "sft.lr": "Learning rate (SFTConfig.learning_rate).",
    "sft.weight_decay": "AdamW weight decay (SFTConfig.weight_decay).",
    "sft.schedule": "Learning-rate schedule (lr_scheduler_type).",
    "sft.warmup_steps": "Learning-rate warm-up steps.",
    "sft.optimizer": "Optimizer (SFTConfig.optim).",
    "sft.batch": "Examples per device and step (per_device_train_batch_size).",
    "sft.grad_accum": "Gradient accumulation steps.",
    "sft.epochs": "Passes over the training data (num_train_epochs).",
    "sft.max_steps": "Stop after this many steps (-1: run the epochs).",
    "sft.max_length": "Longest tokenized example; longer ones are truncated.",
    "sft.max_grad_norm": "Gradient-norm clipping.",
    "sft.gradient_checkpointing": "Recompute activations in the backward pass to save memory.",
    "sft.bf16": "Train in bfloat16 mixed precision.",
    "sft.tf32": "Allow TF32 matmuls (Ampere GPUs; dropped without CUDA).",
    "sft.group_by_length": "Batch examples of similar length together.",
    "generate": "How arms generate at evaluation.",
    "generate.temperature": "Sampling temperature.",
    "generate.max_new_tokens": "Most tokens generated per answer.",
    "generate.seed": "Sampling seed.",
    "generate.batch": "Prompts per generation batch.",
    "generate.backend": "`transformers` or `vllm`.",
    "quantize": "Load the base model quantized through bitsandbytes (BitsAndBytesConfig).",
    "quantize.bits": "4 (load_in_4bit) or 8 (load_in_8bit).",
    "quantize.type": "4-bit quantization type: `nf4` or `fp4` (bnb_4bit_quant_type).",
    "quantize.double_quant": "Quantize the quantization constants too (bnb_4bit_use_double_quant).",
    "quantize.compute_dtype": "The dtype 4-bit layers compute in (bnb_4bit_compute_dtype).",
    "lora": "Train LoRA adapters instead of the full model (peft.LoraConfig).",
    "trl": "Keywords of the trainer's own config class (trl.SFTConfig or trl.GRPOConfig), passed through.",
    "peft": "Keywords of peft.LoraConfig, passed through.",
    "track": "Experiment tracking: report_to, project, log_every.",
    "track.report_to": "Where per-step statistics go: none, tensorboard, trackio or wandb.",
    "track.project": "The tracking project (default: the experiment's name).",
    "track.log_every": "Steps between plain progress lines when stdout is not a terminal (0: about 20 an arm).",
    "checkpoint_every": "Steps between resumable checkpoints of an arm (0: none).",
    "lora.rank": "LoRA rank (r).",
    "lora.alpha": "LoRA scaling (lora_alpha).",
    "lora.dropout": "Dropout on the LoRA input (lora_dropout).",
    "lora.targets": "Modules to adapt: short names `q k v o up down gate` (target_modules).",
    "evaluate": "This profile's own evaluation: fewer or more test items, another sweep; an edit "
                "re-evaluates, never retrains.",
    "evaluate.samples": "Test items evaluated per arm and seed (0: all).",
    "evaluate.sweep": "Axis values the label sweep visits.",
}


def profile_table(path: tuple[str, ...]):
    """The schema's value kind at a dotted path of profile settings (`("rl", "lr")`,
    `("model", "tiny")`), or None when the schema has no such setting."""
    if path[:1] == ("model",):
        kind = {k: v for k, v in schema.MODEL_SETTINGS.items()}
        path = path[1:]
    else:
        kind = schema.PROFILE
    for key in path:
        if not isinstance(kind, dict) or key not in kind:
            return None
        kind = kind[key]
    return kind


def doc(path: tuple[str, ...]) -> str | None:
    return DOCS.get(".".join(path))


# ---- the profile settings as a JSON Schema (`ectc schema`) ---------------------------------

def _kind_schema(kind, path: tuple[str, ...]) -> dict:
    if isinstance(kind, dict):
        if "*" in kind:
            out: dict = {"type": "object", "additionalProperties": _kind_schema(kind["*"], path + ("*",))}
        else:
            out = {"type": "object", "additionalProperties": False,
                   "properties": {k: _kind_schema(v, path + (k,)) for k, v in kind.items()}}
    elif isinstance(kind, tuple):
        out = {"enum": list(kind)}
    elif kind == schema.SCHEDULE:
        # A constant, or linear(start, end[, fraction]) as generate resolves it.
        out = {"oneOf": [{"type": "number"}, {
            "type": "object", "required": ["start", "end"], "additionalProperties": False,
            "properties": {"start": {"type": "number"}, "end": {"type": "number"},
                           "fraction": {"type": "number", "exclusiveMinimum": 0, "maximum": 1}}}]}
    else:
        simple = {"int": {"type": "integer"}, "num": {"type": "number"}, "bool": {"type": "boolean"},
                  "str": {"type": "string"}, "name": {"type": "string"},
                  "names": {"type": "array", "items": {"type": "string"}},
                  "values": {"type": "array", "minItems": 1, "items": {"type": ["number", "string"]}},
                  # kinds of pass-through keywords and aliases (trl/peft names): any value, a
                  # string or strings, LoRA targets ("all-linear" or module names)
                  "any": {}, "strs": {"type": ["string", "array"], "items": {"type": "string"}},
                  "targets": {"oneOf": [{"const": "all-linear"},
                                        {"type": "array", "minItems": 1, "items": {"type": "string"}}]}}
        if kind not in simple:
            raise ValueError(f"no JSON Schema for the value kind {kind!r} of `{'.'.join(path)}`")
        out = dict(simple[kind])
    text = doc(path)
    return {"description": text, **out} if text else out


def json_schema() -> dict:
    """The settings a profile may hold, from `schema.PROFILE` and `schema.MODEL_SETTINGS`, with each
    setting's doc; a profile's settings as JSON (`{"rl": {"lr": 1e-4}, "model": {"tiny": {...}}}`)."""
    models = {name: _kind_schema(table, ("model", name)) for name, table in schema.MODEL_SETTINGS.items()}
    props = {"model": {"description": DOCS["model"], "type": "object", "minProperties": 1, "maxProperties": 1,
                       "additionalProperties": False, "properties": models}}
    props.update({k: _kind_schema(v, (k,)) for k, v in schema.PROFILE.items()})
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "title": "ectc profile settings", "type": "object", "additionalProperties": False,
            "properties": props}
