"""`ectc run`: data -> base model -> train each arm and seed -> evaluate -> monitors -> report.

Every stage writes its output atomically with a `stage.json` holding the stage's key, the hash
of exactly what the stage depends on. A stage whose key is unchanged is reused, so a killed run
resumes where it stopped and an edited spec re-runs only what the edit invalidates.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .. import jsonio
from . import keys
from .cache import atomic_write_text
from .datafiles import DataFileError
from .experiment import Arm, Experiment, json_hash, prompt_string
from .stagefiles import STAGE_FILE, Reuse, check, read_record, record


# ---- small I/O helpers ---------------------------------------------------------------


def write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, jsonio.dumps(obj, indent=1, sort_keys=True, default=str) + "\n")


def write_jsonl(path: Path, rows: list[dict]) -> None:
    atomic_write_text(path, "".join(jsonio.dumps(r, sort_keys=True, default=str) + "\n" for r in rows))


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def mark_done(folder: Path, key: str, outputs: list[str], **info: Any) -> str:
    """Record a finished stage: its key and the hash of its outputs (returned: what downstream
    keys use)."""
    return record(folder, key, outputs, **info)


class Writer:
    """The run's file writes. On ranks other than 0 of a multi-process launch it is off
    (accelerate's `is_main_process`, nanochat's `master_process` guard): those ranks compute
    what rank 0 computes and write nothing."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled

    def text(self, path: Path, text: str) -> None:
        if self.enabled:
            atomic_write_text(path, text)

    def json(self, path: Path, obj: Any) -> None:
        if self.enabled:
            write_json(path, obj)

    def jsonl(self, path: Path, rows: list[dict]) -> None:
        if self.enabled:
            write_jsonl(path, rows)

    def done(self, folder: Path, key: str, outputs: list[str], **info: Any) -> str | None:
        """mark_done; None where nothing is written."""
        return mark_done(folder, key, outputs, **info) if self.enabled else None

    def final(self, model, tokenizer, folder: Path) -> None:
        if self.enabled:
            save_final(model, tokenizer, folder)


# ---- options and run state -----------------------------------------------------------


@dataclass
class Options:
    profile: str | None = None
    run_id: str | None = None
    runs_dir: Path = Path("runs")
    seeds: int | None = None
    arms: list[str] | None = None
    steps_scale: float = 1.0
    device: str = "auto"
    quiet: bool = False
    only_stages: set[str] | None = None  # used by fan-out workers: run just these stages
    only_jobs: set[tuple[str, int]] | None = None  # (arm, seed) pairs a worker trains
    # A multi-process launch's worker (runtime/distributed.py) sets these three; the defaults
    # are one process.
    writes: bool = True  # False on ranks other than 0: they train and write nothing
    processes: int = 1  # how many processes share each training step (the SFT batch is global)
    choice_rl: Callable | None = None  # trains as rl.train_choice_rl; None: that function itself


@dataclass
class Run:
    exp: Experiment
    opts: Options
    profile_name: str
    profile: dict
    folder: Path
    console: Any
    device: str
    seeds: list[int]
    events: list[dict] = field(default_factory=list)

    @property
    def write(self) -> Writer:
        return Writer(self.opts.writes)

    def reusable(self, stage: str, folder: Path, key: str) -> Reuse:
        """Whether a stage can be reused; says so when its key holds but its outputs do not."""
        found = check(folder, key)
        if found.redo:
            self.events.append({"stage": stage, "redo": found.reason})
            if not self.opts.quiet:
                self.console.print(f"  {'[yellow]redo[/]':>18} {stage} — {found.reason}")
        return found

    def log(self, stage: str, status: str, detail: str = "", seconds: float = 0.0) -> None:
        self.events.append({"stage": stage, "status": status, "detail": detail, "seconds": round(seconds, 2)})
        if not self.opts.quiet:
            mark = {"ran": "[green]ran[/]", "reused": "[cyan]reused[/]", "skipped": "[yellow]skipped[/]"}.get(status, status)
            self.console.print(f"  {mark:>18} {stage}{' — ' + detail if detail else ''}"
                               + (f" ({seconds:.1f}s)" if seconds else ""))


def _device(choice: str) -> str:
    import torch

    if choice == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return choice


def _progress(run: Run):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TimeRemainingColumn(), console=run.console, disable=run.opts.quiet, transient=True)


# ---- stage: data ---------------------------------------------------------------------


def data_splits(exp: Experiment) -> dict[str, list[str]]:
    main = exp.plan["main_data"]
    out = {}
    for block in exp.plan["data"]:
        out[block["name"]] = ["train", "validation", "test"] if block["name"] == main else ["train"]
    return out


def stage_data(run: Run) -> tuple[str, dict[str, dict[str, list[dict]]]]:
    """The rows of every block and split, and their output hash."""
    exp = run.exp
    folder = run.folder / "data"
    uses_llm = any(b["llm_fields"] for b in exp.plan["data"])
    llm_mode = "offline"
    if uses_llm:
        from .llm import llm_available

        llm_mode = "anthropic" if llm_available() else "offline"
    parts = keys.data_parts(exp, llm_mode, _spec_root(run))
    key = json_hash(parts)
    splits = data_splits(exp)
    found = run.reusable("data", folder, key)
    if found.ok:
        data = {b: {s: read_jsonl(folder / f"{b}.{s}.jsonl") for s in ss} for b, ss in splits.items()}
        run.log("data", "reused", _data_summary(data))
        return found.output, data
    t0 = time.perf_counter()
    llm = _data_llm(run) if llm_mode == "anthropic" else None
    data = {}
    for block, split_names in splits.items():
        data[block] = {}
        for split in split_names:
            rows = exp.dataset.BUILDERS[block](split, 0, llm=llm, root=str(_spec_root(run)))
            data[block][split] = rows
            run.write.jsonl(folder / f"{block}.{split}.jsonl", rows)
    out = run.write.done(folder, key, [f"{b}.{s}.jsonl" for b, ss in splits.items() for s in ss], llm=llm_mode,
                    parts=keys.components(parts))
    run.log("data", "ran", _data_summary(data) + (" (articles from the procedural writer: no API key)"
                                                 if uses_llm and llm_mode == "offline" else ""),
            time.perf_counter() - t0)
    return out, data


def _data_summary(data: dict) -> str:
    return ", ".join(f"{b} " + "/".join(f"{s} {len(r)}" for s, r in splits.items() if r)
                     for b, splits in data.items())


def _spec_root(run: Run) -> Path:
    return keys.spec_root(run.exp)


def _data_llm(run: Run) -> Callable[[str, list[str]], list[str]]:
    from .llm import LLMClient

    def call(model: str, prompts: list[str]) -> list[str]:
        client = LLMClient(model, cache_dir=run.opts.runs_dir / ".cache" / "llm",
                           base_url=os.environ.get("ANTHROPIC_BASE_URL"))
        results = client.complete(prompts, max_tokens=1024)
        failed = [r for r in results if not r.ok]
        if failed:
            raise RuntimeError(f"{len(failed)} data generation call(s) failed; first: {failed[0].error}. "
                               "Re-run to retry: successful calls are cached.")
        return [r.text for r in results]

    return call


# ---- stage: base model ---------------------------------------------------------------


def _random_axis_value(exp: Experiment, rng) -> Any:
    axis = exp.axis
    if axis["type"] == "enum":
        return rng.choice([v["name"] for v in axis["values"]])
    lo, hi = axis["domain"]
    return rng.randint(int(lo), int(hi)) if axis["type"] == "int" else rng.uniform(lo, hi)


def _label_values(exp: Experiment) -> list[Any]:
    """Axis values whose labels the tokenizer must know: deployment, sweep, and a grid."""
    axis = exp.axis
    values: list[Any] = [axis["deploy"]]
    sweep = exp.plan["evaluate"].get("sweep")
    if sweep:
        values += sweep["values"]
    if axis["type"] == "enum":
        values += [v["name"] for v in axis["values"]]
    else:
        lo, hi = axis["domain"]
        values += [lo + (hi - lo) * i / 200 for i in range(201)]
    return values


def tokenizer_corpus(run: Run, data: dict) -> list[str]:
    """Every text the tiny model will read or write, so its closed vocabulary covers them."""
    exp, profile = run.exp, run.profile
    main = exp.plan["main_data"]
    rows = data[main]["train"] + data[main]["test"]
    texts = ["system: user: assistant:", exp.unlabeled_text(profile)]
    labels = {exp.label_text(v, enc, profile) for v in _label_values(exp) for enc in ("text", "id", "number")}
    labels |= {exp.label_text(r[exp.axis["name"]], enc, profile) for r in data[main]["train"] for enc in ("text", "id")}
    texts += sorted(labels)
    some_label = next(iter(sorted(labels)))
    for row in rows:
        system, user = exp.prompt_parts(row, some_label, profile)
        texts += [system or "", user]
    response = exp.plan["response"]
    texts += response.get("choices", [])
    if exp.plan["method"] == "sft":
        texts += [exp.feedback.feedback(r)["target"] for r in data[main]["train"]]
    for block in exp.plan["data"]:
        for row in data[block["name"]]["train"]:
            if block["has_prompt"]:
                texts.append(exp.render(f"data.{block['name']}", row))
            if block["has_target"]:
                texts.append(str(row["target"]))
    for probe in exp.plan["evaluate"]["probes"]:
        texts += [exp.render(probe["prompt"], {**r, "label": exp.unlabeled_text(profile)}) for r in rows]
    return texts


def _scaled(n: int, run: Run) -> int:
    return keys.scaled(n, run.opts.steps_scale)


def stage_base(run: Run, data_out: str, data: dict) -> tuple[str, Callable[[], tuple]]:
    """The base model: a tiny one built, warmed up and cached by recipe; or a hub/local one.
    Returns its output hash (a hub model's: its key; nothing of it is stored here) and a loader."""
    exp, profile = run.exp, run.profile
    model_cfg = profile["model"]
    recipe = keys.base_parts(exp, profile, data_out, run.opts.steps_scale)
    key = json_hash(recipe)
    if model_cfg["type"] == "hf":
        run.log("base model", "reused", f"{model_cfg['path']} (loaded per arm)")

        def load_hf():
            from .models import load_hf_model

            return load_hf_model(model_cfg["path"], quantize=profile.get("transformers.BitsAndBytesConfig"),
                                 dtype=model_cfg.get("dtype") or "bfloat16", revision=model_cfg.get("revision"),
                                 gradient_checkpointing=bool(profile.get("sft", {}).get("gradient_checkpointing")))
        return key, load_hf

    from .models import build_tiny_llama, build_word_tokenizer, get_or_build, load_cached_model, cached_model_dir

    warmup = recipe["warmup"]
    cache_root = run.opts.runs_dir / ".cache" / "models"

    def build():
        texts = tokenizer_corpus(run, data)
        tokenizer = build_word_tokenizer(texts, split_digits=model_cfg["numbers"] == "digits")
        model = build_tiny_llama(tokenizer, layers=model_cfg["layers"], width=model_cfg["width"],
                                 heads=model_cfg["heads"], seed=0)
        if warmup and warmup["steps"] > 0:
            from .warmup import supervised_warmup

            examples = _warmup_examples(run, data, tokenizer, warmup)
            with _progress(run) as progress:
                task = progress.add_task("warm-up", total=warmup["steps"])
                losses = supervised_warmup(model, tokenizer, examples, steps=warmup["steps"],
                                           batch_size=warmup["batch"], lr=warmup["lr"], seed=0,
                                           loss_on=warmup["loss"], weight_decay=warmup["weight_decay"],
                                           eos=warmup.get("eos", False),
                                           progress=lambda step, stats: progress.update(task, completed=step + 1))
            run.events.append({"stage": "warm-up", "first_loss": losses[0], "last_loss": losses[-1]})
        return model, tokenizer

    t0 = time.perf_counter()
    directory = cached_model_dir(cache_root, recipe)
    found = run.reusable("base model", directory, key)
    if not found.ok and directory.exists():
        shutil.rmtree(directory)  # damaged, or cached without a record: build it again
    _, _, _ = get_or_build(cache_root, recipe, build)
    hit = found.ok
    out = found.output if hit else run.write.done(
        directory, key, sorted(p.name for p in directory.iterdir() if p.name != STAGE_FILE),
        parts=keys.components(recipe))
    detail = f"tiny llama {model_cfg['layers']}x{model_cfg['width']}" + (
        f", warm-up {warmup['steps']} steps" if warmup else "")
    run.log("base model", "reused" if hit else "ran", detail, 0.0 if hit else time.perf_counter() - t0)
    return out, lambda: load_cached_model(directory)


def _warmup_examples(run: Run, data: dict, tokenizer, warmup: dict):
    exp, profile = run.exp, run.profile
    main = exp.plan["main_data"]
    mix = warmup["mix"] or {main: 1.0}
    blocks = list(mix)
    weights = [float(mix[b]) for b in blocks]
    has_prompt = {b["name"]: b["has_prompt"] for b in exp.plan["data"]}

    def examples(rng, n):
        pairs = []
        for block in rng.choices(blocks, weights=weights, k=n):
            row = rng.choice(data[block]["train"])
            if block == main:
                if warmup["label"] == "random" and rng.random() >= 0.1:
                    # Labels at random axis values, unrelated to the answer: the model learns
                    # the task with the label slot present but uninformative. One time in ten
                    # the unlabeled filler instead, so the no-label arms start from a base
                    # that has read their prompt too.
                    label = exp.label_text(_random_axis_value(exp, rng), "text", profile)
                else:
                    label = exp.unlabeled_text(profile)
                prompt = prompt_string(tokenizer, exp.messages(row, label, profile))
            else:
                prompt = exp.render(f"data.{block}", row) if has_prompt[block] else ""
            pairs.append((prompt, str(row["target"])))
        return pairs

    return examples


# ---- stage: training -----------------------------------------------------------------


def rl_config(cfg: dict, seed: int, run: Run):
    from .rl import RLConfig

    rl = cfg["rl"]
    return RLConfig(
        steps=_scaled(rl["steps"], run), batch_size=rl["batch"], minibatch_size=rl["minibatch"],
        gradient_accumulation_steps=rl["grad_accum"], ppo_epochs=rl["ppo_epochs"], lr=rl["lr"],
        lr_schedule=rl["schedule"], warmup_steps=rl["warmup_steps"], clip_range=rl["clip"], whiten_rewards=rl["whiten"], max_grad_norm=rl["max_grad_norm"],
        entropy_start=rl["entropy"]["start"], entropy_end=rl["entropy"]["end"],
        temperature_start=rl["temperature"]["start"], temperature_end=rl["temperature"]["end"],
        temperature_fraction=rl["temperature"]["fraction"], kl_coef=rl["kl"],
        optimizer=rl["optimizer"], seed=seed,
    )


def sft_config(cfg: dict, seed: int, run: Run, n_examples: int, processes: int = 1) -> dict:
    """The generated SFTConfig kwargs, with what only the run knows: the seed, a --steps-scale,
    the global batch divided over the processes."""
    out = {**cfg["trl.SFTConfig"], "seed": seed, "lora": cfg.get("peft.LoraConfig")}
    if run.opts.steps_scale != 1.0:
        per_epoch = math.ceil(n_examples / (out["per_device_train_batch_size"] * out["gradient_accumulation_steps"]))
        total = out["max_steps"] if out["max_steps"] > 0 else math.ceil(per_epoch * out["num_train_epochs"])
        out["max_steps"] = _scaled(total, run)
        out["warmup_steps"] = min(out["warmup_steps"], max(0, out["max_steps"] // 10))
    return per_process_batch(out, processes)


def per_process_batch(args: dict, processes: int) -> dict:
    """trl's batch is per device: divide the spec's (global) batch over the processes, through
    gradient accumulation when it divides evenly, else through the per-device batch."""
    if processes == 1:
        return args
    accum, batch = args["gradient_accumulation_steps"], args["per_device_train_batch_size"]
    if accum % processes == 0:
        return {**args, "gradient_accumulation_steps": accum // processes}
    if batch % processes == 0:
        return {**args, "per_device_train_batch_size": batch // processes}
    raise ValueError(f"the SFT batch ({batch} x {accum} accumulation) does not divide over {processes} processes")


def train_key(run: Run, arm: Arm, seed: int, base_out: str, data_out: str) -> str:
    return json_hash(keys.train_parts(run.exp, run.profile_name, arm, seed, base_out, data_out,
                                      run.opts.steps_scale))


def _arm_dir(run: Run, arm: str, seed: int) -> Path:
    return run.folder / "arms" / arm / f"seed{seed}"


def training_rows(run: Run, arm: Arm, data: dict) -> list[dict]:
    exp = run.exp
    rows = data[exp.plan["main_data"]]["train"]
    if arm.filter:
        keep = exp.feedback.FILTERS[arm.filter]
        rows = [r for r in rows if keep(r)]
    return rows


def stage_train(run: Run, arm: Arm, seed: int, base_out: str, data_out: str, data: dict,
                load_base: Callable[[], tuple], progress) -> str:
    """Train one arm and seed; return the output hash of its weights (and history)."""
    exp = run.exp
    folder = _arm_dir(run, arm.name, seed)
    parts = keys.train_parts(exp, run.profile_name, arm, seed, base_out, data_out, run.opts.steps_scale)
    key = json_hash(parts)
    found = run.reusable(f"train {arm.name} seed {seed}", folder, key)
    if found.ok:
        run.log(f"train {arm.name} seed {seed}", "reused")
        return found.output
    _start_training(folder, key, resume=not found.redo, write=run.write)
    t0 = time.perf_counter()
    cfg = exp.train_config(run.profile_name, arm.name)
    rows = training_rows(run, arm, data)
    if not rows:
        raise RuntimeError(f"arm {arm.name!r} keeps no training rows: check its filter")
    labels = exp.training_labels(arm, rows, seed, run.profile)
    model, tokenizer = load_base()
    model.to(run.device) if not getattr(model, "is_loaded_in_4bit", False) else None
    if exp.plan["method"] == "rl" and cfg["rl"]["algorithm"] == "ppo":  # `check` matched it to the response
        info = _train_rl_choice(run, arm, seed, cfg, model, tokenizer, rows, labels, folder, progress)
    elif exp.plan["method"] == "rl":
        info = _train_rl_text(run, arm, seed, cfg, model, tokenizer, rows, labels, folder, progress)
    else:
        info = _train_sft(run, arm, seed, cfg, model, tokenizer, rows, labels, folder, progress)
    outputs = ["final"] + [f for f in ("history.jsonl",) if (folder / f).exists()]
    out = run.write.done(folder, key, outputs, arm=arm.name, seed=seed, rows=len(rows), parts=keys.components(parts),
                    **info)
    run.log(f"train {arm.name} seed {seed}", "ran", f"{len(rows)} rows", time.perf_counter() - t0)
    return out


TRAINING_STATE = ("final", "history.jsonl", "checkpoints", "run.json", "grpo")


def _start_training(folder: Path, key: str, resume: bool, write: Writer) -> None:
    """Training that must run starts clean: what an earlier attempt left (weights, history, trainer
    checkpoints) is only resumed when that attempt had this same key and was cut short."""
    started = folder / "started.json"
    try:
        same = resume and json.loads(started.read_text()).get("key") == key
    except (OSError, ValueError):
        same = False
    if not same:
        for name in TRAINING_STATE:
            path = folder / name
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)  # other ranks of a DDP run clear it too
            else:
                path.unlink(missing_ok=True)
    write.json(started, {"key": key})


def _apply_lora(cfg: dict, model):
    if cfg.get("peft.LoraConfig"):
        from .models import apply_lora

        return apply_lora(model, cfg["peft.LoraConfig"])
    return model


def save_final(model, tokenizer, folder: Path) -> None:
    """The trained weights (the adapter for LoRA) under folder/final, written atomically."""
    final = folder / "final"
    tmp = Path(tempfile.mkdtemp(prefix=".final.", dir=folder))
    try:
        model.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        if final.exists():
            shutil.rmtree(final)
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _train_rl_choice(run, arm, seed, cfg, model, tokenizer, rows, labels, folder, progress) -> dict:
    import numpy as np

    from .rl import train_choice_rl

    exp = run.exp
    model = _apply_lora(cfg, model)
    prompts = [prompt_string(tokenizer, exp.messages(r, l, run.profile)) for r, l in zip(rows, labels)]
    feedback = exp.feedback.feedback
    rl_cfg = rl_config(cfg, seed, run)

    def sample_rows(step: int, n: int, rng: np.random.Generator) -> list[dict]:
        return [{"i": int(i)} for i in rng.integers(0, len(rows), n)]

    def reward_fn(batch: list[dict], answers: list[str]) -> list[float]:
        return [float(feedback({**rows[b["i"]], "response": a})["reward"]) for b, a in zip(batch, answers)]

    task = progress.add_task(f"train {arm.name} seed {seed}", total=rl_cfg.steps)
    history = (run.opts.choice_rl or train_choice_rl)(model, tokenizer, sample_rows, lambda b: prompts[b["i"]],
                              exp.plan["response"]["choices"], reward_fn, rl_cfg,
                              progress=lambda step, stats: progress.update(task, completed=step + 1))
    progress.remove_task(task)
    folder.mkdir(parents=True, exist_ok=True)
    run.write.jsonl(folder / "history.jsonl", history)
    run.write.final(model, tokenizer, folder)
    tail = history[-min(50, len(history)):]
    return {"steps": len(history), "final_reward": sum(h["reward_mean"] for h in tail) / len(tail)}


def _train_rl_text(run, arm, seed, cfg, model, tokenizer, rows, labels, folder, progress) -> dict:
    """Free text through trl's GRPOTrainer, rewarded by the spec's compiled feedback."""
    from .generate import format_prompt
    from .rl import train_text_grpo

    exp = run.exp
    feedback = exp.feedback.feedback
    prompts = [format_prompt(tokenizer, exp.messages(r, l, run.profile)) for r, l in zip(rows, labels)]

    def reward_fn(indices: list[int], completions: list[str]) -> list[float]:
        return [float(feedback({**rows[i], "response": c})["reward"]) for i, c in zip(indices, completions)]

    args = {**cfg["trl.GRPOConfig"], "seed": seed}
    args["max_steps"] = _scaled(args["max_steps"], run)
    model = _apply_lora(cfg, model)
    task = progress.add_task(f"train {arm.name} seed {seed}", total=args["max_steps"])
    logs, used = train_text_grpo(model, tokenizer, prompts, reward_fn, args, output_dir=str(folder / "grpo"),
                                 progress=lambda step, total, _: progress.update(task, completed=step))
    progress.remove_task(task)
    history = [e for e in logs if "loss" in e]  # one per optimizer step (not the final summary)
    folder.mkdir(parents=True, exist_ok=True)
    run.write.jsonl(folder / "history.jsonl", history)
    # What GRPOConfig held, read back from the trainer: the spec's knobs as they ran.
    ran_with = used.to_dict()
    run.write.json(folder / "grpo_config.json", {name: ran_with[name] for name in args})
    shutil.rmtree(folder / "grpo", ignore_errors=True)  # trl's scratch folder: no checkpoints kept
    run.write.final(model, tokenizer, folder)
    tail = history[-min(10, len(history)):]
    rewards = [h["reward"] for h in tail if "reward" in h]  # logged on the steps that generate
    return {"steps": len(history), "final_reward": sum(rewards) / len(rewards) if rewards else None}


def _train_sft(run, arm, seed, cfg, model, tokenizer, rows, labels, folder, progress) -> dict:
    from .sft import train_sft

    exp = run.exp
    feedback = exp.feedback.feedback
    examples = [{"prompt": exp.messages(r, l, run.profile), "completion": str(feedback(r)["target"])}
                for r, l in zip(rows, labels)]
    sft_cfg = sft_config(cfg, seed, run, len(examples), processes=run.opts.processes)
    task = progress.add_task(f"train {arm.name} seed {seed}", total=None)
    metrics = train_sft(model, tokenizer, examples, sft_cfg, folder, resume=True, writes=run.opts.writes,
                        progress=lambda step, total, logs: progress.update(task, completed=step, total=total))
    progress.remove_task(task)
    return {"steps": metrics.get("global_step"), "first_loss": metrics.get("first_loss"),
            "last_loss": metrics.get("last_loss")}


def _generation_backend(run: Run, arm: Arm, seed: int, load_base):
    """transformers by default; vLLM only when the profile asks (`generate { backend "vllm" }`)."""
    from .generate import make_backend

    gen = run.profile["generate"]
    if gen["backend"] == "vllm":
        final = _arm_dir(run, arm.trained_as, seed) / "final"
        lora = run.profile.get("lora")
        if lora:
            return make_backend("vllm", model_path=run.profile["model"]["path"], adapter_path=str(final),
                                revision=run.profile["model"].get("revision"), max_lora_rank=lora["rank"])
        return make_backend("vllm", model_path=str(final))
    model, tokenizer = load_trained(run, arm.trained_as, seed, load_base)
    return make_backend("transformers", model=model, tokenizer=tokenizer)


def load_trained(run: Run, arm: str, seed: int, load_base: Callable[[], tuple]):
    from .sft import load_final

    model, tokenizer = load_base()
    load_final(model, _arm_dir(run, arm, seed) / "final")
    if not getattr(model, "is_loaded_in_4bit", False):
        model.to(run.device)
    model.eval()
    return model, tokenizer


# ---- stage: probes and evaluation ------------------------------------------------------


def eval_rows(run: Run, data: dict) -> list[dict]:
    exp = run.exp
    ev = exp.plan["evaluate"]
    rows = data[exp.plan["main_data"]][ev["split"]]
    samples = ev.get("samples") or 0
    return rows[:samples] if samples else rows


def _answer_choices(model, tokenizer, prompts: list[str], choices: list[str]) -> tuple[list[str], list[list[float]]]:
    from .rl import choice_distribution

    probs = choice_distribution(model, tokenizer, prompts, choices)
    # Greedy: the model's answer is its most likely allowed choice.
    answers = [choices[int(p.argmax())] for p in probs]
    return answers, [[round(float(x), 5) for x in p] for p in probs]


def stage_probes(run: Run, data_out: str, base_out: str, data: dict, load_base) -> dict[str, list]:
    exp = run.exp
    probes = exp.plan["evaluate"]["probes"]
    if not probes:
        return {}
    folder = run.folder / "probes"
    parts = keys.probe_parts(exp, base_out, data_out)
    key = json_hash(parts)
    if run.reusable("probes", folder, key).ok:
        run.log("probes", "reused")
        return json.loads((folder / "values.json").read_text())
    t0 = time.perf_counter()
    rows = eval_rows(run, data)
    out = {}
    for probe in probes:
        checkpoint = probe.get("checkpoint", "base")
        model, tokenizer = load_base() if checkpoint == "base" else load_trained(run, checkpoint, run.seeds[0], load_base)
        if not getattr(model, "is_loaded_in_4bit", False):
            model.to(run.device)
        unlabeled = exp.unlabeled_text(run.profile)
        prompts = [prompt_string(tokenizer, exp.render(probe["prompt"], {**r, "label": unlabeled})) for r in rows]
        if exp.plan["response"]["type"] == "choice":
            answers, _ = _answer_choices(model, tokenizer, prompts, exp.plan["response"]["choices"])
        else:
            from .generate import generate_texts

            answers = generate_texts(model, tokenizer, prompts, temperature=0.0, max_new_tokens=64)
        fn = exp.feedback.PROBES[probe["name"]]
        out[probe["name"]] = [bool(fn({**r, "response": a})) for r, a in zip(rows, answers)]
    run.write.json(folder / "values.json", out)
    run.write.done(folder, key, ["values.json"], parts=keys.components(parts))
    shares = ", ".join(f"{k} {sum(v) / max(1, len(v)):.0%}" for k, v in out.items())
    run.log("probes", "ran", shares, time.perf_counter() - t0)
    return out


def _eval_inputs(run: Run, arm: Arm, trained_out: str, data_out: str, probe_values: dict) -> dict:
    """What an evaluation's samples depend on, besides the label conditions."""
    return keys.eval_inputs(run.exp, run.profile, arm, trained_out, data_out, json_hash(probe_values), _spec_root(run))


def _condition_keys(run: Run, arm: Arm, trained_out: str, data_out: str, probe_values: dict) -> dict[str, str]:
    return keys.condition_keys(_eval_inputs(run, arm, trained_out, data_out, probe_values), keys.conditions(run.exp, arm))


def stage_eval(run: Run, arm: Arm, seed: int, trained_out: str, data_out: str, data: dict,
               probe_values: dict, load_base, progress) -> tuple[str, list[dict]]:
    """Evaluate one arm and seed; return the output hash of its samples, and the samples."""
    exp = run.exp
    folder = run.folder / "eval" / arm.name / f"seed{seed}"
    parts = keys.eval_parts(_eval_inputs(run, arm, trained_out, data_out, probe_values), keys.conditions(run.exp, arm))
    key = json_hash(parts)
    found = run.reusable(f"evaluate {arm.name} seed {seed}", folder, key)
    if found.ok:
        run.log(f"evaluate {arm.name} seed {seed}", "reused")
        return found.output, read_jsonl(folder / "samples.jsonl")
    t0 = time.perf_counter()
    response = exp.plan["response"]
    if response["type"] == "text":
        backend = _generation_backend(run, arm, seed, load_base)
        model, tokenizer = getattr(backend, "model", None), getattr(backend, "tokenizer", None)
    else:
        model, tokenizer = load_trained(run, arm.trained_as, seed, load_base)
    rows = eval_rows(run, data)
    samples: list[dict] = []
    conds = keys.conditions(run.exp, arm)
    cond_keys = _condition_keys(run, arm, trained_out, data_out, probe_values)
    previous = _reusable_conditions(folder, cond_keys)
    task = progress.add_task(f"evaluate {arm.name} seed {seed}", total=len(conds))
    for name, value in conds:
        if name in previous:
            samples.extend(previous[name])
            progress.update(task, advance=1)
            continue
        # Each row's axis set to the condition's value: feedback and metrics over the axis must
        # read the evaluation's value, not the one the row drew for training.
        axis_name = exp.axis["name"]
        cond_rows = [r if value is None else {**r, axis_name: value} for r in rows]
        labels = [exp.inference_label(arm, r[axis_name], run.profile) for r in cond_rows]
        messages = [exp.messages(r, l, run.profile) for r, l in zip(cond_rows, labels)]
        probs: list = [None] * len(rows)
        if response["type"] == "choice":
            prompts = [prompt_string(tokenizer, m) for m in messages]
            answers, probs = _answer_choices(model, tokenizer, prompts, response["choices"])
        else:
            gen = run.profile["generate"]
            prompts = messages
            answers = backend.generate(messages, temperature=gen["temperature"],
                                       max_new_tokens=min(gen["max_new_tokens"], response.get("max_tokens", 10**9)),
                                       seed=gen["seed"] + seed, batch_size=gen["batch"])
        for i, (row, label, prompt, answer, p) in enumerate(zip(cond_rows, labels, prompts, answers, probs)):
            sample = {**row, "response": answer}
            sample.update(exp.feedback.feedback(sample) if exp.plan["method"] == "rl" else {})
            for probe, values in probe_values.items():
                sample[probe] = values[i]
            samples.append({
                "arm": arm.name, "seed": seed, "condition": name, "label_value": value, "item": i,
                "label": label, "prompt": prompt if isinstance(prompt, str) else json.dumps(prompt),
                "response": answer, "probs": p, "sample": sample,
            })
        progress.update(task, advance=1)
    progress.remove_task(task)
    from .monitors import run_monitors

    run_monitors(run, samples)
    run.write.jsonl(folder / "samples.jsonl", samples)
    out = run.write.done(folder, key, ["samples.jsonl"], samples=len(samples), conditions=cond_keys,
                    parts=keys.components(parts))
    reused = f", {len(previous)} reused" if previous else ""
    run.log(f"evaluate {arm.name} seed {seed}", "ran",
            f"{len(samples)} samples, {len(conds)} label condition(s){reused}", time.perf_counter() - t0)
    return out, samples


def _reusable_conditions(folder: Path, cond_keys: dict[str, str]) -> dict[str, list[dict]]:
    """The samples of a finished earlier evaluation, per label condition whose key still holds."""
    done = read_record(folder)
    if done is None or not check(folder, done.get("key", "")).ok:
        return {}  # no complete earlier evaluation whose samples are intact: evaluate everything
    try:
        old_keys = done.get("conditions") or {}
        same = {name for name, key in cond_keys.items() if old_keys.get(name) == key}
        if not same:
            return {}
        by_condition: dict[str, list[dict]] = {}
        for sample in read_jsonl(folder / "samples.jsonl"):
            if sample["condition"] in same:
                by_condition.setdefault(sample["condition"], []).append(sample)
        return by_condition
    except (OSError, ValueError, KeyError):
        return {}  # no complete earlier evaluation: evaluate everything


# ---- the run -------------------------------------------------------------------------


def run_folder(exp: Experiment, opts: Options) -> Path:
    return opts.runs_dir / exp.name / (opts.run_id or exp.profile(opts.profile)[0])


def prepare(exp: Experiment, spec_source: str, opts: Options, console) -> Run:
    profile_name, profile = exp.profile(opts.profile)
    folder = run_folder(exp, opts)
    folder.mkdir(parents=True, exist_ok=True)
    seeds = list(profile["seeds"])
    if opts.seeds is not None:
        seeds = list(range(opts.seeds))
    run = Run(exp=exp, opts=opts, profile_name=profile_name, profile=profile, folder=folder,
              console=console, device=_device(opts.device), seeds=seeds)
    run.write.text(folder / "spec.ect", spec_source)
    run.write.json(folder / "manifest.json", exp.manifest)
    run.write.json(folder / "plan.json", {**exp.plan, "run": {"profile": profile_name, "seeds": seeds,
                                                          "steps_scale": opts.steps_scale, "device": run.device}})
    return run


def execute(run: Run) -> dict:
    """Run every stage, reusing what is unchanged; return the metrics."""
    from .report import stage_report

    exp = run.exp
    selected = [a for a in exp.arms if not run.opts.arms or a.name in run.opts.arms]
    needed_training = []
    for arm in selected:
        source = exp.arm(arm.trained_as)
        if source not in needed_training:
            needed_training.append(source)
    t0 = time.perf_counter()
    # Each stage returns the hash of its outputs, which the stages reading them put in their keys.
    data_out, data = stage_data(run)
    base_out, load_base = stage_base(run, data_out, data)
    train_outs: dict[tuple[str, int], str] = {}
    eval_samples: dict[tuple[str, int], list[dict]] = {}
    eval_outs: dict[tuple[str, int], str] = {}
    with _progress(run) as progress:
        for arm in needed_training:
            for seed in run.seeds:
                if run.opts.only_jobs is not None and (arm.name, seed) not in run.opts.only_jobs:
                    continue  # another worker trains it
                train_outs[(arm.name, seed)] = stage_train(run, arm, seed, base_out, data_out, data,
                                                           load_base, progress)
        if run.opts.only_stages is not None and "evaluate" not in run.opts.only_stages:
            return {}
        probe_values = stage_probes(run, data_out, base_out, data, load_base)
        for arm in selected:
            for seed in run.seeds:
                out, samples = stage_eval(run, arm, seed, train_outs[(arm.trained_as, seed)], data_out, data,
                                          probe_values, load_base, progress)
                eval_outs[(arm.name, seed)] = out
                eval_samples[(arm.name, seed)] = samples
    metrics = stage_report(run, selected, eval_samples, eval_outs, time.perf_counter() - t0)
    return metrics


def quiet_libraries() -> None:
    """Our progress bars replace the libraries' own per-file ones."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import transformers

    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    import datasets

    datasets.disable_progress_bars()
    datasets.utils.logging.set_verbosity_error()


@contextlib.contextmanager
def flush_denormals():
    """A policy that has converged puts ~0 probability on the other choices; their gradients
    are then subnormal floats, which the CPU handles ~6x slower (measured: 0.15 -> 0.9 s a step
    late in a tiny RL run). Flush them to zero while we run, and restore the process-wide
    default (off) afterwards, since it is global processor state."""
    import torch

    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(False)


def main(args) -> int:
    from rich.console import Console

    quiet_libraries()
    from ..compile import compile_text
    from ..errors import CompileError

    console = Console(stderr=False, highlight=False)
    spec_path = Path(args.spec)
    try:
        source = spec_path.read_text()
    except OSError as exc:
        sys.stderr.write(f"error: cannot read {args.spec}: {exc.strerror}\n")
        return 1
    try:
        spec, _ = compile_text(source)
    except CompileError as err:
        sys.stderr.write(err.render(source, args.spec) + "\n")
        return 1
    sha = hashlib.sha256(source.encode()).hexdigest()
    opts = Options(profile=args.profile, run_id=args.run_id, runs_dir=Path(args.runs_dir), seeds=args.seeds,
                   arms=args.arms.split(",") if args.arms else None, steps_scale=args.steps_scale,
                   device=args.device)
    status = 0
    for exp_ir in spec.experiments:
        folder = Path(args.generated) / exp_ir.name
        manifest = folder / "manifest.json"
        if not manifest.exists() or json.loads(manifest.read_text()).get("spec_sha256") != sha:
            sys.stderr.write(f"error: {folder}/ is missing or stale for {args.spec}: run `ectc build` first\n")
            return 1
        exp = Experiment(folder)  # the flags naming its profile and arms were checked by the CLI
        if getattr(args, "launcher", "none") == "accelerate" or getattr(args, "executor", "local") != "local":
            from .scale import dispatch

            status = max(status, dispatch(args, exp, source, opts, console))
            continue
        from .lock import RunFolderBusy, run_folder_lock

        try:
            with run_folder_lock(run_folder(exp, opts)):
                run = prepare(exp, source, opts, console)
                console.rule(f"[bold]{exp.name}[/] · profile {run.profile_name} · {len(run.seeds)} seed(s) · {run.device}")
                console.print(f"run folder: {run.folder}")
                with flush_denormals():
                    execute(run)
        except RunFolderBusy as busy:
            sys.stderr.write(f"error: {busy}\n")
            return 1
        except DataFileError as exc:  # a value the spec's declared type refuses: no traceback
            sys.stderr.write(f"error: {exc}\n")
            return 1
    return status
