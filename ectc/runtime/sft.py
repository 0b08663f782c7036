"""Supervised fine-tuning on prompt/completion pairs, with optional LoRA.

One function, `train_sft`, configures trl's SFTTrainer (no subclassing) from a flat cfg dict
in trl's own names: a generated `train/<profile>/<arm>.json`'s "trl.SFTConfig" section, plus
the seed and its "peft.LoraConfig" section under "lora". The keys go to trl.SFTConfig as they
are, over the few settings every run needs (RUN_ARGS); what cfg leaves out takes trl's own
default, and a key SFTConfig does not have is refused. It trains `model` in place: with LoRA,
peft injects the adapter layers into `model`'s own modules, so after the call `model` itself
computes with the trained adapter and can be handed to `generate.generate_texts`.

Layout under `output_dir`:
    checkpoints/checkpoint-N/   trainer checkpoints; a killed run resumes from the last one
    final/                      the adapter (LoRA) or the full model, tokenizer, metrics.json;
                                written to a temp dir and renamed, so it exists only when whole

Nothing here knows about any experiment.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch

from .. import jsonio
from ..schema import SFT_FIELDS
from .generate import format_prompt

# What every run sets on top of the profile's own SFTConfig kwargs (a generated config's
# "trl.SFTConfig"): trl defaults bf16 to True, logs every 10 steps and leaves completion-only
# loss to the dataset's shape; a run folder needs step checkpoints to resume from and wants no
# progress bars, trackers or packing (packed rows would mix examples). A cfg may still say
# otherwise in trl's own names. output_dir, use_cpu, data_seed and tf32 are set by train_sft.
RUN_ARGS: dict = {
    "bf16": False,                  # the model's own dtype unless the profile asks
    "completion_only_loss": True,   # the prompt carries the evaluation label: never a target
    "packing": False,
    "save_strategy": "steps",
    "save_steps": 50,
    "save_total_limit": 2,
    "logging_steps": 1,
    "report_to": "none",
    "disable_tqdm": True,
    # Reentrant checkpointing needs an input that requires grad; the non-reentrant kind works
    # with frozen embeddings (LoRA) and full fine-tuning alike. Unused without checkpointing.
    "gradient_checkpointing_kwargs": {"use_reentrant": False},
}
# Keys of cfg that are not SFTConfig's: peft.LoraConfig's kwargs (None: full fine-tuning).
EXTRA_KEYS = ("lora",)
# SFTConfig fields the run owns: where checkpoints go and which device trains.
OWNED_KEYS = ("output_dir", "use_cpu")

Progress = Callable[[int, int, dict], None]  # (global step, total steps, latest logged metrics)


def check_cfg(cfg: dict) -> None:
    """Refuse a key that is not an SFTConfig field (a typo in a generated config must not
    silently train with trl's default), with the nearest field named; checked before anything
    is written, so a bad config leaves no run.json behind."""
    import dataclasses
    import difflib

    from trl import SFTConfig

    fields = {f.name for f in dataclasses.fields(SFTConfig) if f.init}
    for key in cfg:
        if key in OWNED_KEYS:
            raise ValueError(f"SFT setting {key!r} is set by train_sft; leave it out")
        if key not in fields and key not in EXTRA_KEYS:
            if key in SFT_FIELDS:  # a spec's short name: the compiler's table names trl's
                hint = f"; the spec's `{key}` is SFTConfig's {SFT_FIELDS[key][0]!r}"
            else:
                near = difflib.get_close_matches(key, sorted(fields | set(EXTRA_KEYS)), n=1, cutoff=0.7)
                hint = f"; did you mean {near[0]!r}?" if near else ""
            raise ValueError(f"unknown SFT setting {key!r}: not a trl.SFTConfig field{hint}")


def build_dataset(tokenizer, examples: list[dict]):
    """trl's prompt-completion format. Chat prompts become conversational rows (the completion
    as one assistant turn) when the tokenizer has a chat template, plain text otherwise."""
    from datasets import Dataset

    if not examples:
        raise ValueError("no training examples")
    rows = []
    chat = None
    for i, ex in enumerate(examples):
        prompt, completion = ex["prompt"], ex["completion"]
        if not isinstance(completion, str):
            raise TypeError(f"example {i}: completion must be a string")
        prompt = format_prompt(tokenizer, prompt)
        is_chat = not isinstance(prompt, str)
        if chat is None:
            chat = is_chat
        elif chat != is_chat:
            raise ValueError(f"example {i}: mixes chat-message and plain-string prompts")
        if is_chat:
            completion = [{"role": "assistant", "content": completion}]
        rows.append({"prompt": prompt, "completion": completion})
    return Dataset.from_list(rows)


def sft_config(cfg: dict, checkpoint_dir: str | os.PathLike, run_args: dict | None = None):
    """trl.SFTConfig from cfg (SFTConfig's own kwargs, plus "lora"), over RUN_ARGS; `run_args`
    (SFTConfig kwargs that watch or checkpoint the run, never change it: report_to, save_steps)
    over both."""
    from trl import SFTConfig

    check_cfg(cfg)
    check_cfg(run_args or {})
    cuda = torch.cuda.is_available()
    args = {**RUN_ARGS, **{k: v for k, v in cfg.items() if k not in EXTRA_KEYS}, **(run_args or {})}
    # TF32 is an Ampere feature: asked for without CUDA it is left as the machine has it (None).
    args["tf32"] = args.get("tf32") if cuda else None
    args.setdefault("data_seed", args.get("seed"))  # None: transformers falls back to the seed
    return SFTConfig(output_dir=str(checkpoint_dir), use_cpu=not cuda, **args)


def progress_callback(progress: Progress | None):
    from transformers import TrainerCallback

    class ProgressCallback(TrainerCallback):
        """Calls progress(step, total, latest logged metrics) after every optimizer step."""

        def __init__(self, progress):
            self.progress, self.latest = progress, {}

        def on_log(self, args, state, control, logs=None, **kw):
            if logs:
                self.latest = dict(logs)

        def on_step_end(self, args, state, control, **kw):
            if self.progress is not None:
                self.progress(state.global_step, state.max_steps, self.latest)

    return ProgressCallback(progress)


def last_checkpoint(checkpoint_dir: str | os.PathLike) -> str | None:
    """The newest *complete* trainer checkpoint-N under checkpoint_dir, or None. The Trainer
    writes a checkpoint's files in place and its trainer_state.json last, so a process killed
    mid-save leaves a folder without it: that one is skipped, not resumed from."""
    from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

    folder = Path(checkpoint_dir)
    if not folder.is_dir():
        return None
    steps = [int(p.name.rsplit("-", 1)[1]) for p in folder.glob(f"{PREFIX_CHECKPOINT_DIR}-*")
             if p.name.rsplit("-", 1)[1].isdigit() and (p / "trainer_state.json").is_file()]
    return str(folder / f"{PREFIX_CHECKPOINT_DIR}-{max(steps)}") if steps else None


def checkpoint_step(checkpoint: str | None) -> int:
    """The optimizer steps a trainer checkpoint holds (0 for none)."""
    return int(Path(checkpoint).name.rsplit("-", 1)[1]) if checkpoint else 0


def _is_peft(model) -> bool:
    try:
        from peft import PeftModel
    except ImportError:
        return False
    return isinstance(model, PeftModel)


def load_final(model, final_dir: str | os.PathLike):
    """Put the weights of a finished run (`final/`) into `model` in place, as train_sft would
    have left them: the adapter is injected for LoRA runs, the full state loaded otherwise."""
    final_dir = Path(final_dir)
    if (final_dir / "adapter_config.json").exists():
        from peft import PeftModel

        PeftModel.from_pretrained(model, str(final_dir), is_trainable=False)
    else:
        from transformers import AutoModelForCausalLM

        trained = AutoModelForCausalLM.from_pretrained(str(final_dir), dtype=model.dtype)
        model.load_state_dict(trained.state_dict())
    return model


def _save_final_atomic(trainer, tokenizer, final_dir: Path, metrics: dict) -> None:
    final_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".final.", dir=final_dir.parent))
    try:
        trainer.model.save_pretrained(str(tmp))  # adapter only for a PeftModel
        tokenizer.save_pretrained(str(tmp))
        (tmp / "metrics.json").write_text(jsonio.dumps(metrics, indent=1, sort_keys=True))
        if final_dir.exists():  # a forced re-train replaces the old result
            old = final_dir.with_name(f".old.{final_dir.name}.{os.getpid()}")
            os.rename(final_dir, old)
            os.rename(tmp, final_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, final_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _run_fingerprint(cfg: dict, examples: list[dict]) -> dict:
    data = json.dumps(examples, sort_keys=True, ensure_ascii=False, default=str).encode()
    return {"cfg": json.loads(json.dumps(cfg, sort_keys=True, default=str)),
            "examples_sha256": hashlib.sha256(data).hexdigest(), "num_examples": len(examples)}


def _check_same_run(output_dir: Path, cfg: dict, examples: list[dict], resume: bool, writes: bool = True) -> None:
    """Resuming a checkpoint under different settings or data would silently mix two runs:
    refuse, and record what this run is so the next resume can check."""
    path = output_dir / "run.json"
    fp = _run_fingerprint(cfg, examples)
    if resume and path.exists():
        old = json.loads(path.read_text())
        if old != fp:
            changed = sorted(k for k in set(old["cfg"]) | set(fp["cfg"])
                             if old["cfg"].get(k) != fp["cfg"].get(k))
            if old["examples_sha256"] != fp["examples_sha256"]:
                changed.append("examples")
            raise ValueError(f"{output_dir} holds a run with different {', '.join(changed)}; "
                             "pass resume=False to start over")
        return
    if not writes:
        return
    output_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".run.json.{os.getpid()}")
    tmp.write_text(jsonio.dumps(fp, indent=1, sort_keys=True))
    os.replace(tmp, path)


def build_trainer(model, tokenizer, examples: list[dict], cfg: dict,
                  checkpoint_dir: str | os.PathLike, progress: Progress | None = None,
                  run_args: dict | None = None, callbacks: tuple = ()):
    """The configured SFTTrainer (dataset tokenized, LoRA applied), not yet trained."""
    from transformers.trainer_callback import PrinterCallback
    from trl import SFTTrainer

    if tokenizer.pad_token is None:  # trl pads with it; the eos is the usual stand-in
        tokenizer.pad_token = tokenizer.eos_token
    dataset = build_dataset(tokenizer, examples)

    lora = cfg.get("lora")
    peft_config = None
    if lora is not None and not _is_peft(model):
        from peft import LoraConfig

        peft_config = LoraConfig(**lora)
    elif lora is None and getattr(model, "is_loaded_in_4bit", False):
        raise ValueError("a 4-bit model cannot be fully fine-tuned; give cfg['lora']")

    trainer = SFTTrainer(
        model=model, args=sft_config(cfg, checkpoint_dir, run_args), train_dataset=dataset,
        processing_class=tokenizer, peft_config=peft_config,
        callbacks=[progress_callback(progress), *callbacks],
    )
    trainer.remove_callback(PrinterCallback)  # metrics go to `progress` and the return value
    return trainer


def train_sft(model, tokenizer, examples: list[dict], cfg: dict, output_dir: str | os.PathLike,
              resume: bool = True, progress: Progress | None = None, writes: bool = True,
              run_args: dict | None = None, callbacks: tuple = ()) -> dict:
    """Fine-tune `model` (in place) on `examples` = [{"prompt": str | messages, "completion": str}].

    Loss is on completion tokens only (cfg completion_only_loss). With cfg["lora"] the model
    is wrapped in a LoRA adapter (pass a fresh base model per run); a model that is already a
    PeftModel trains its existing adapter. A quantized (NF4) model must come prepared for
    k-bit training (models.load_hf_model does this).

    resume=True: a run recorded (run.json) with other settings or examples is refused; a
    finished run (final/ present) is not retrained; its weights are loaded into
    `model` and its metrics returned with "skipped": True. An interrupted run continues from
    its last checkpoint. resume=False discards earlier checkpoints and trains from scratch.

    writes=False (ranks other than 0 of a multi-process launch): train, but record and save nothing.

    run_args: SFTConfig kwargs that watch or checkpoint the run (report_to, save_steps, ...);
    they are not part of run.json's fingerprint, so changing them never refuses a resume.
    callbacks: more transformers TrainerCallbacks (a tracker's).

    Returns JSON-serialisable metrics: global_step, train_loss, first_loss, last_loss,
    losses (per logging step), train_runtime, steps_per_second, resumed_from, final_dir.
    """
    output_dir = Path(output_dir)
    checkpoint_dir, final_dir = output_dir / "checkpoints", output_dir / "final"
    check_cfg(cfg)

    _check_same_run(output_dir, cfg, examples, resume, writes)
    if resume and (final_dir / "metrics.json").exists():
        load_final(model, final_dir)
        model.eval()
        metrics = json.loads((final_dir / "metrics.json").read_text())
        return {**metrics, "skipped": True, "final_dir": str(final_dir)}
    if not resume and checkpoint_dir.exists():
        shutil.rmtree(checkpoint_dir)

    trainer = build_trainer(model, tokenizer, examples, cfg, checkpoint_dir, progress, run_args, callbacks)
    last = last_checkpoint(checkpoint_dir) if resume else None
    t0 = time.perf_counter()
    out = trainer.train(resume_from_checkpoint=last)
    elapsed = time.perf_counter() - t0

    state = trainer.state
    losses = [e["loss"] for e in state.log_history if "loss" in e]
    steps_this_session = state.global_step - checkpoint_step(last)
    opt = getattr(trainer.optimizer, "optimizer", trainer.optimizer)  # unwrap accelerate's wrapper
    metrics = {
        "global_step": state.global_step,
        "max_steps": state.max_steps,
        "epoch": state.epoch,
        "train_loss": out.training_loss,
        "first_loss": losses[0] if losses else None,
        "last_loss": losses[-1] if losses else None,
        "losses": losses,
        "train_runtime": elapsed,
        "steps_per_second": steps_this_session / elapsed if elapsed > 0 else math.nan,
        "resumed_from": last,
        "adapter": _is_peft(trainer.model),
        "quantized": bool(getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False)),
        "optimizer": f"{type(opt).__module__}.{type(opt).__name__}",
        "optimizer_bits": getattr(getattr(opt, "args", None), "optim_bits", None),  # bitsandbytes only
        "num_examples": len(examples),
        "skipped": False,
    }
    if writes:
        _save_final_atomic(trainer, tokenizer, final_dir, metrics)
    model.eval()
    # The trainer turns the KV cache off for checkpointing; generation wants it back.
    for m in {model, trainer.model}:
        cfg_ = getattr(m, "config", None)
        if cfg_ is not None:
            cfg_.use_cache = True
    return {**metrics, "final_dir": str(final_dir)}
