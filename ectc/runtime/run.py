"""`ectc run`: the stages of `plan/stages.py` (data -> base model -> train each arm and seed ->
probes -> evaluate -> judge -> report), executed.

`execute` walks the stage graph; for each stage it gets the key computed there and either
reuses the stage (its `stage.json` holds that key and its outputs are intact) or runs it. So a
killed run resumes where it stopped, an edited spec re-runs only what the edit invalidates, and
`ectc plan` (the same walk, reading records) says in advance which.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..files import atomic_write_text, read_jsonl, write_json, write_jsonl
from ..plan import stages
from ..plan.model import BASE, Arm, Profile, probe_share
from ..plan.records import STAGE_FILE, Reuse, check, read_record, record
from ..plan.stages import Stage
from .bill import DATA_MAX_TOKENS
from .experiment import Experiment, prompt_string, training_rows


class Writer:
    """The run's file writes. On ranks other than 0 of a multi-process launch it is off
    (accelerate's `is_main_process`, nanochat's `master_process` guard): those ranks compute
    what rank 0 computes and write nothing."""

    def __init__(self, enabled: bool = True, started: float | None = None):
        self.enabled = enabled
        self.started = started  # perf_counter when the stage being settled began

    def text(self, path: Path, text: str) -> None:
        if self.enabled:
            atomic_write_text(path, text)

    def json(self, path: Path, obj: Any) -> None:
        if self.enabled:
            write_json(path, obj)

    def jsonl(self, path: Path, rows: list[dict]) -> None:
        if self.enabled:
            write_jsonl(path, rows)

    def done(self, folder: Path, stage: Stage, **info: Any) -> str | None:
        """Record a finished stage (its key, its outputs' hash, its key's components, its seconds)
        and return that hash, what downstream keys use; None where nothing is written. The
        seconds stay with the outputs, so a later session that reuses them (a resumed run, a
        re-run report) still knows what they cost."""
        if not self.enabled:
            return None
        if self.started is not None:
            info.setdefault("seconds", round(time.perf_counter() - self.started, 2))
        return record(folder, stage.key, list(stage.outputs), parts=stage.parts, **info)

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
    through: str = "report"  # the last kind of stage to run (plan/stages.KINDS): workers stop at "train"
    only_jobs: set[tuple[str, int]] | None = None  # (arm, seed) pairs a worker trains
    eval_limit: int | None = None  # at most this many evaluation items (`ectc plan --calibrate` only)
    # A multi-process launch's worker (runtime/distributed.py) sets these three; the defaults
    # are one process.
    writes: bool = True  # False on ranks other than 0: they train and write nothing
    processes: int = 1  # how many processes share each training step (the SFT batch is global)
    choice_rl: Callable | None = None  # trains as rl.train_choice_rl; None: that function itself
    checkpoints: tuple[stages.Checkpoint, ...] = ()  # `ectc eval`: models trained elsewhere, one per seed


@dataclass
class Carried:
    """What stages hand each other in memory, beside the output hashes in their keys."""
    data: dict[str, dict[str, list[dict]]] = field(default_factory=dict)
    load_base: Callable[[], tuple] | None = None
    base_source: tuple[str, str | None] = ("", None)  # (folder or hub id, revision) load_base reads: vLLM's too
    probe_values: dict[str, list] = field(default_factory=dict)
    samples: dict[tuple[str, int], list[dict]] = field(default_factory=dict)  # judged where there is a judge


@dataclass
class Run:
    exp: Experiment
    opts: Options
    shape: stages.Shape
    folder: Path
    console: Any
    device: str
    events: list[dict] = field(default_factory=list)
    carried: Carried = field(default_factory=Carried)
    stage_started: float | None = None  # when `execute` began settling the current stage

    @property
    def profile_name(self) -> str:
        return self.shape.profile

    @property
    def profile(self) -> Profile:
        return self.exp.plan.profiles[self.shape.profile]

    @property
    def seeds(self) -> list[int]:
        return list(self.shape.seeds)

    @property
    def write(self) -> Writer:
        return Writer(self.opts.writes, self.stage_started)

    def reusable(self, stage: str, folder: Path, key: str) -> Reuse:
        """Whether a stage can be reused; says so when its key holds but its outputs do not."""
        found = check(folder, key)
        if found.redo:
            self.events.append({"stage": stage, "redo": found.reason})
            if not self.opts.quiet:
                self.console.print(f"  {'[yellow]redo[/]':>18} {stage} — {found.reason}")
        return found

    def write_stage_log(self, elapsed: float) -> None:
        """stages.json: what each stage did and its seconds (`ectc plan`'s bill reads the rates)."""
        self.write.json(self.folder / "stages.json", {"events": self.events, "elapsed_seconds": round(elapsed, 1)})

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


def step_log(run: Run, progress, name: str, total: int | None, log_dir: Path, resume_step: int = 0,
             config: dict | None = None, trainer: bool = False):
    """The per-step hook of one training loop (track.StepLog): the rich bar `progress` draws on a
    terminal, plain progress lines elsewhere (a SLURM log, a pipe), and the profile's tracker
    (for a trl `trainer`, through its own callbacks: tracker.trainer_args/trainer_callbacks).
    Close it when the loop ends."""
    from .track import StepLog, Tracker

    track = run.profile.track
    task = progress.add_task(name, total=total)
    tracker = None
    if track.report_to != "none" and run.opts.writes:
        group = f"{run.exp.name}/{run.folder.name}"
        tracker = Tracker(track, f"{group}/{name}", group, log_dir, resume_step, config, for_trainer=trainer)
    plain = not run.opts.quiet and not run.console.is_terminal

    def say(line: str) -> None:
        run.console.print(line, markup=False, highlight=False, soft_wrap=True)

    def bar(done: int, total: int | None) -> None:
        progress.update(task, completed=done, total=total)

    return StepLog(name.replace(" seed ", " seed"), total, track.log_every, tracker, not trainer,
                   run.profile.checkpoint_every, bar, say if plain else None, lambda: progress.remove_task(task),
                   first=resume_step)


# ---- stage: data ---------------------------------------------------------------------


def stage_data(run: Run, stage: Stage) -> str:
    """The rows of every block and split; returns their output hash."""
    exp = run.exp
    folder = run.folder / stage.folder
    splits = exp.plan.data_splits()
    found = run.reusable(stage.name, folder, stage.key)
    if found.ok:
        run.carried.data = {b: {s: read_jsonl(folder / f"{b}.{s}.jsonl") for s in ss} for b, ss in splits.items()}
        run.log(stage.name, "reused", _data_summary(run.carried.data))
        return found.output
    t0 = time.perf_counter()
    llm_mode = stage.parts["llm"]
    llm = _data_llm(run) if llm_mode == "anthropic" else None
    data: dict[str, dict[str, list[dict]]] = {}
    for block, split_names in splits.items():
        data[block] = {}
        for split in split_names:
            rows = exp.dataset.BUILDERS[block](split, 0, llm=llm, root=str(run.shape.root))
            data[block][split] = rows
            run.write.jsonl(folder / f"{block}.{split}.jsonl", rows)
    run.carried.data = data
    out = run.write.done(folder, stage, llm=llm_mode)
    run.log(stage.name, "ran", _data_summary(data) + (" (articles from the procedural writer: no API key)"
                                                     if exp.plan.uses_llm_data and llm_mode == "offline" else ""),
            time.perf_counter() - t0)
    return out


def _data_summary(data: dict) -> str:
    return ", ".join(f"{b} " + "/".join(f"{s} {len(r)}" for s, r in splits.items() if r)
                     for b, splits in data.items())


def _data_llm(run: Run) -> Callable[[str, list[str]], list[str]]:
    from .llm import LLMClient

    def call(model: str, prompts: list[str]) -> list[str]:
        client = LLMClient(model, cache_dir=run.opts.runs_dir / ".cache" / "llm",
                           base_url=os.environ.get("ANTHROPIC_BASE_URL"))
        results = client.complete(prompts, max_tokens=DATA_MAX_TOKENS)
        run.events.append({"stage": f"data {model}", "model": model, **client.usage.to_dict()})
        failed = [r for r in results if not r.ok]
        if failed:
            raise RuntimeError(f"{len(failed)} data generation call(s) failed; first: {failed[0].error}. "
                               "Re-run to retry: successful calls are cached.")
        return [r.text for r in results]

    return call


# ---- stage: base model ---------------------------------------------------------------


def _random_axis_value(exp: Experiment, rng) -> Any:
    axis = exp.plan.axis
    if axis.type == "enum":
        return rng.choice([v.name for v in axis.values])
    lo, hi = axis.domain
    return rng.randint(int(lo), int(hi)) if axis.type == "int" else rng.uniform(lo, hi)


def _label_values(exp: Experiment) -> list[Any]:
    """Axis values whose labels the tokenizer must know: deployment, sweep, and a grid."""
    axis = exp.plan.axis
    values: list[Any] = [axis.deploy]
    for profile in exp.plan.profiles.values():
        values += profile.evaluation.sweep
    if axis.type == "enum":
        values += [v.name for v in axis.values]
    else:
        lo, hi = axis.domain
        values += [lo + (hi - lo) * i / 200 for i in range(201)]
    return values


def tokenizer_corpus(run: Run, data: dict) -> list[str]:
    """Every text the tiny model will read or write, so its closed vocabulary covers them."""
    exp, profile, plan = run.exp, run.profile, run.exp.plan
    main = plan.main_data
    rows = data[main]["train"] + data[main]["test"]
    texts = ["system: user: assistant:", exp.unlabeled_text(profile)]
    labels = {exp.label_text(v, enc, profile) for v in _label_values(exp) for enc in ("text", "id", "number")}
    labels |= {exp.label_text(r[plan.axis.name], enc, profile) for r in data[main]["train"] for enc in ("text", "id")}
    texts += sorted(labels)
    some_label = next(iter(sorted(labels)))
    for row in rows:
        system, user = exp.prompt_parts(row, some_label, profile)
        texts += [system or "", user]
    texts += plan.response.choices
    if plan.method == "sft":
        texts += [exp.feedback.feedback(r)["target"] for r in data[main]["train"]]
    for block in plan.data:
        for row in data[block.name]["train"]:
            if block.has_prompt:
                texts.append(exp.render(f"data.{block.name}", row))
            if block.has_target:
                texts.append(str(row["target"]))
    for probe in plan.evaluate.probes:
        texts += [exp.render(probe.prompt, {**r, "label": exp.unlabeled_text(profile)}) for r in rows]
    return texts


def _scaled(n: int, run: Run) -> int:
    return stages.scaled(n, run.opts.steps_scale)


def stage_base(run: Run, stage: Stage) -> str:
    """The base model: a hub/local one, loaded per arm; or one built into the model cache by
    recipe (a tiny one built and warmed up, a GGUF file de-quantized), then loaded per arm.
    Returns its output hash (a hub model's: its key; nothing of it is stored here); the loader
    goes to `run.carried.load_base`."""
    profile = run.profile
    model_cfg = profile.model
    if stage.folder is None:
        run.log(stage.name, "reused", f"{model_cfg.path} (loaded per arm)")
        run.carried.base_source = (model_cfg.path, model_cfg.revision)
        run.carried.load_base = lambda: _load_pretrained(run, *run.carried.base_source)
        return stage.key

    from .models import load_cached_model, save_model_atomic

    recipe = stages.base_recipe(run.exp, run.shape, stage.upstream["data"])
    directory = stage.path(run.folder, run.opts.runs_dir)
    # A warm-up's resumable state, beside the model folder (which is removed when it is damaged).
    warmup_state = directory.with_name(directory.name + ".warmup")
    # The one place the cached sources differ: how each is built, and how it loads per arm.
    if model_cfg.type == "gguf":
        build, detail = _gguf_builder(run, recipe)
        load = lambda directory: _load_pretrained(run, str(directory))  # LoRA and quantize as for hf
    else:
        build, detail = _tiny_builder(run, recipe, warmup_state)
        load = load_cached_model

    t0 = time.perf_counter()
    found = run.reusable(stage.name, directory, stage.key)
    if not found.ok:
        if directory.exists():
            shutil.rmtree(directory)  # damaged, or cached without a record: build it again
        model, tokenizer = build()
        if run.opts.writes:
            save_model_atomic(model, tokenizer, directory, recipe)
    out = found.output if found.ok else run.write.done(
        directory, dataclasses.replace(stage, outputs=tuple(sorted(p.name for p in directory.iterdir()
                                                                     if p.name != STAGE_FILE))))
    if run.opts.writes:
        shutil.rmtree(warmup_state, ignore_errors=True)  # the model is saved and recorded
    run.log(stage.name, "reused" if found.ok else "ran", detail, 0.0 if found.ok else time.perf_counter() - t0)
    run.carried.base_source = (str(directory), None)
    run.carried.load_base = lambda: load(directory)
    return out


def _load_pretrained(run: Run, path: str, revision: str | None = None):
    from .models import load_hf_model

    profile = run.profile
    hub = {"trust_remote_code": profile.model.trust_remote_code,
           "attn_implementation": profile.model.attn_implementation} if profile.model.type == "hf" else {}
    return load_hf_model(path, quantize=profile.bnb_config, dtype=profile.model.dtype or "bfloat16",
                         revision=revision,
                         gradient_checkpointing=bool((profile.sft or {}).get("gradient_checkpointing")), **hub)


def _gguf_builder(run: Run, recipe: dict):
    """De-quantize the profile's GGUF file (its recipe holds the file's content hash)."""
    model_cfg = run.profile.model
    problem = model_cfg.unreadable(run.shape.root)
    if problem:
        raise RuntimeError(problem)
    path = model_cfg.locate(run.shape.root)

    def build():
        from .models import convert_gguf

        return convert_gguf(path, dtype=model_cfg.dtype)
    return build, f"{path.name} de-quantized to {model_cfg.dtype}"


def _tiny_builder(run: Run, recipe: dict, warmup_state: Path):
    """Build the tiny model's word tokenizer from the data, then the model, then warm it up
    (checkpointed under `warmup_state`, so a killed warm-up resumes)."""
    from .models import build_tiny_llama, build_word_tokenizer

    model_cfg = run.profile.model
    warmup = recipe["warmup"]
    data = run.carried.data

    def build():
        texts = tokenizer_corpus(run, data)
        tokenizer = build_word_tokenizer(texts, split_digits=model_cfg.numbers == "digits")
        model = build_tiny_llama(tokenizer, layers=model_cfg.layers, width=model_cfg.width,
                                 heads=model_cfg.heads, seed=0)
        if warmup and warmup["steps"] > 0:
            from .checkpoints import Checkpoints
            from .warmup import supervised_warmup

            examples = _warmup_examples(run, data, tokenizer, warmup)
            checkpoints = Checkpoints(warmup_state, run.profile.checkpoint_every, run.opts.writes, "warmup.pt")
            with _progress(run) as progress:
                log = step_log(run, progress, "warm-up", warmup["steps"], run.folder / "warm-up" / TENSORBOARD,
                               checkpoints.last_step(), config=warmup)
                try:
                    losses = supervised_warmup(model, tokenizer, examples, steps=warmup["steps"],
                                               batch_size=warmup["batch"], lr=warmup["lr"], seed=0,
                                               loss_on=warmup["loss"], weight_decay=warmup["weight_decay"],
                                               eos=warmup.get("eos", False),
                                               progress=lambda step, stats: log(step + 1, stats),
                                               checkpoints=checkpoints)
                finally:
                    log.close()
            run.events.append({"stage": "warm-up", "first_loss": losses[0], "last_loss": losses[-1]})
        return model, tokenizer
    detail = f"tiny llama {model_cfg.layers}x{model_cfg.width}" + (
        f", warm-up {warmup['steps']} steps" if warmup else "")
    return build, detail


def _warmup_examples(run: Run, data: dict, tokenizer, warmup: dict):
    exp, profile, plan = run.exp, run.profile, run.exp.plan
    main = plan.main_data
    mix = warmup["mix"] or {main: 1.0}
    blocks = list(mix)
    weights = [float(mix[b]) for b in blocks]

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
                prompt = exp.render(f"data.{block}", row) if plan.data_block(block).has_prompt else ""
            pairs.append((prompt, str(row["target"])))
        return pairs

    return examples


# ---- stage: a checkpoint trained elsewhere (`ectc eval`) -------------------------------


def stage_checkpoint(run: Run, stage: Stage) -> str:
    """A model trained elsewhere stands in for the base model and the training of its seed:
    nothing runs here; it is loaded where it is evaluated (and, for seed 0, probed)."""
    checkpoint = run.shape.checkpoints[run.seeds.index(stage.seed)]
    if stage.seed == run.seeds[0]:
        run.carried.base_source = (checkpoint.source, checkpoint.revision)
        run.carried.load_base = lambda: load_checkpoint(run, checkpoint)
    run.log(stage.name, "reused", f"{checkpoint.source} (loaded per use)")
    return stage.key


class CheckpointError(RuntimeError):
    """A checkpoint that does not load (a hub model neither cached nor reachable, a folder
    transformers cannot read): `ectc eval` says so in one line."""


def load_checkpoint(run: Run, checkpoint: stages.Checkpoint):
    """A checkpoint as saved (its own dtype), quantized as the profile says."""
    from .models import load_hf_model

    try:
        return load_hf_model(checkpoint.source, quantize=run.profile.bnb_config, dtype="auto",
                             revision=checkpoint.revision)
    except (OSError, ValueError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"--checkpoint {checkpoint.source}: cannot load it: {reason}") from exc


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
        out["max_steps"] = _scaled(stages.sft_steps(out, n_examples), run)
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


def arm_dir(run: Run, arm: str, seed: int) -> Path:
    """Where an arm's training stage keeps its weights (`final/`)."""
    return run.folder / stages.train_folder(arm, seed)




def stage_train(run: Run, stage: Stage, progress) -> str:
    """Train one arm and seed; return the output hash of its weights (and history)."""
    exp = run.exp
    arm, seed = exp.plan.arm(stage.arm), stage.seed
    folder = run.folder / stage.folder
    found = run.reusable(stage.name, folder, stage.key)
    if found.ok:
        run.log(stage.name, "reused")
        return found.output
    _start_training(folder, stage.key, resume=not found.redo, write=run.write)
    t0 = time.perf_counter()
    cfg = exp.train_config(run.profile_name, arm.name)
    rows = training_rows(exp.plan, exp.feedback.FILTERS, arm, run.carried.data)
    if not rows:
        raise RuntimeError(f"arm {arm.name!r} keeps no training rows: check its filter")
    labels = exp.training_labels(arm, rows, seed, run.profile)
    model, tokenizer = run.carried.load_base()
    model.to(run.device) if not getattr(model, "is_loaded_in_4bit", False) else None
    train = {"choice_rl": _train_rl_choice, "grpo": _train_rl_text, "sft": _train_sft}[run.profile.trainer]
    coverage = base_choices(run, stage, cfg, model, tokenizer, rows, labels) if train is _train_rl_choice else {}
    info = {**coverage, **train(run, arm, seed, cfg, model, tokenizer, rows, labels, folder, progress)}
    history = [f for f in ("history.jsonl",) if (folder / f).exists()]
    out = run.write.done(folder, dataclasses.replace(stage, outputs=("final", *history)), arm=arm.name, seed=seed,
                         rows=len(rows), **info)
    if run.opts.writes:  # the arm is recorded: its resumable state is no longer needed
        for scratch in (CHECKPOINTS, GRPO_SCRATCH):
            shutil.rmtree(folder / scratch, ignore_errors=True)
    run.log(stage.name, "ran", f"{len(rows)} rows", time.perf_counter() - t0)
    return out


def base_choices(run: Run, stage: Stage, cfg: dict, model, tokenizer, rows, labels) -> dict:
    """Before the first RL step: the base model's choice distribution over a batch of the arm's
    training prompts, at RL's starting temperature; a warning (console, events, the stage record)
    when a choice is near zero (choices.NEAR_ZERO)."""
    from . import choices

    prompts = [prompt_string(tokenizer, run.exp.messages(r, l, run.profile))
               for r, l in zip(rows[:choices.PROMPTS], labels[:choices.PROMPTS])]
    temperature = rl_config(cfg, stage.seed, run).temperature(0)
    shares = choices.base_choice_shares(model, tokenizer, prompts, run.exp.plan.response.choices, temperature)
    text = choices.warning(shares, temperature)
    if text:
        run.events.append({"stage": stage.name, "warning": text, "base_choices": shares})
        if not run.opts.quiet:
            run.console.print(f"  {'[yellow]warning[/]':>18} {stage.name} — {text}")
    return {"base_choices": {c: round(p, 6) for c, p in shares.items()}, "choice_warning": text}


CHECKPOINTS = "checkpoints"  # an arm's resumable state (the fast path's and SFT's; GRPO's under grpo/)
GRPO_SCRATCH = "grpo"  # trl's GRPO output_dir: its checkpoint-N folders
TENSORBOARD = "tensorboard"  # an arm's event files, with `track { report_to "tensorboard" }`
TRAINING_STATE = ("final", "history.jsonl", CHECKPOINTS, "run.json", GRPO_SCRATCH, TENSORBOARD)


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

    from .rl import rl_checkpoints, train_choice_rl

    exp = run.exp
    model = _apply_lora(cfg, model)
    prompts = [prompt_string(tokenizer, exp.messages(r, l, run.profile)) for r, l in zip(rows, labels)]
    feedback = exp.feedback.feedback
    rl_cfg = rl_config(cfg, seed, run)
    checkpoints = rl_checkpoints(folder / CHECKPOINTS, run.profile.checkpoint_every, writes=run.opts.writes)

    def sample_rows(step: int, n: int, rng: np.random.Generator) -> list[dict]:
        return [{"i": int(i)} for i in rng.integers(0, len(rows), n)]

    def reward_fn(batch: list[dict], answers: list[str]) -> list[float]:
        return [float(feedback({**rows[b["i"]], "response": a})["reward"]) for b, a in zip(batch, answers)]

    resumed = checkpoints.resume_step(dataclasses.asdict(rl_cfg))
    log = step_log(run, progress, f"train {arm.name} seed {seed}", rl_cfg.steps, folder / TENSORBOARD,
                   resumed, dataclasses.asdict(rl_cfg))
    try:
        history = (run.opts.choice_rl or train_choice_rl)(
            model, tokenizer, sample_rows, lambda b: prompts[b["i"]], exp.plan.response.choices, reward_fn,
            rl_cfg, progress=lambda step, stats: log(step + 1, stats), checkpoints=checkpoints,
            other=exp.plan.response.other)
    finally:
        log.close()
    folder.mkdir(parents=True, exist_ok=True)
    run.write.jsonl(folder / "history.jsonl", history)
    run.write.final(model, tokenizer, folder)
    tail = history[-min(50, len(history)):]
    return {"steps": len(history), "final_reward": sum(h["reward_mean"] for h in tail) / len(tail),
            "resumed_from_step": resumed}


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
    from .sft import checkpoint_step, last_checkpoint

    scratch = folder / GRPO_SCRATCH
    resumed = checkpoint_step(last_checkpoint(scratch))
    log = step_log(run, progress, f"train {arm.name} seed {seed}", args["max_steps"], folder / TENSORBOARD,
                   resumed, trainer=True)
    try:
        logs, used = train_text_grpo(model, tokenizer, prompts, reward_fn, args, output_dir=str(scratch),
                                     progress=lambda step, total, latest: log(step, latest, total),
                                     checkpoint_every=run.profile.checkpoint_every,  # trl saves on rank 0 only
                                     run_args=log.tracker.trainer_args() if log.tracker else None,
                                     callbacks=log.tracker.trainer_callbacks() if log.tracker else ())
    finally:
        log.close()
    history = [e for e in logs if "loss" in e]  # one per optimizer step (not the final summary)
    folder.mkdir(parents=True, exist_ok=True)
    run.write.jsonl(folder / "history.jsonl", history)
    # What GRPOConfig held, read back from the trainer: the spec's knobs as they ran.
    ran_with = used.to_dict()
    run.write.json(folder / "grpo_config.json", {name: ran_with[name] for name in args})
    run.write.final(model, tokenizer, folder)  # its checkpoints go once the stage is recorded
    tail = history[-min(10, len(history)):]
    rewards = [h["reward"] for h in tail if "reward" in h]  # logged on the steps that generate
    return {"steps": len(history), "final_reward": sum(rewards) / len(rewards) if rewards else None,
            "resumed_from_step": resumed}


def _train_sft(run, arm, seed, cfg, model, tokenizer, rows, labels, folder, progress) -> dict:
    from .sft import train_sft

    exp = run.exp
    feedback = exp.feedback.feedback
    examples = [{"prompt": exp.messages(r, l, run.profile), "completion": str(feedback(r)["target"])}
                for r, l in zip(rows, labels)]
    from .sft import checkpoint_step, last_checkpoint

    sft_cfg = sft_config(cfg, seed, run, len(examples), processes=run.opts.processes)
    log = step_log(run, progress, f"train {arm.name} seed {seed}", None, folder / TENSORBOARD,
                   checkpoint_step(last_checkpoint(folder / CHECKPOINTS)), trainer=True)
    every = run.profile.checkpoint_every
    run_args = {**(log.tracker.trainer_args() if log.tracker else {}),
                **({"save_steps": every} if every > 0 else {"save_strategy": "no"})}
    try:
        metrics = train_sft(model, tokenizer, examples, sft_cfg, folder, resume=True, writes=run.opts.writes,
                            progress=lambda step, total, latest: log(step, latest, total), run_args=run_args,
                            callbacks=log.tracker.trainer_callbacks() if log.tracker else ())
    finally:
        log.close()
    return {"steps": metrics.get("global_step"), "first_loss": metrics.get("first_loss"),
            "last_loss": metrics.get("last_loss")}


def _generation_backend(run: Run, arm: Arm, seed: int):
    """transformers by default; vLLM only when the profile asks (`generate { backend "vllm" }`)."""
    from .generate import make_backend

    profile = run.profile
    remote = {"trust_remote_code": profile.model.trust_remote_code} if profile.model.type == "hf" else {}
    if profile.generate.backend == "vllm" and run.shape.checkpoints:
        checkpoint = run.shape.checkpoints[run.seeds.index(seed)]
        return make_backend("vllm", model_path=checkpoint.source, revision=checkpoint.revision, **remote)
    if profile.generate.backend == "vllm" and arm.out_of_the_box:
        return make_backend("vllm", model_path=profile.model.path, revision=profile.model.revision, **remote)
    if profile.generate.backend == "vllm":
        final = arm_dir(run, arm.trained_as, seed) / "final"
        if profile.lora:
            path, revision = run.carried.base_source  # a hub model, or the cached tiny/GGUF base
            return make_backend("vllm", model_path=path, adapter_path=str(final),
                                revision=revision, max_lora_rank=profile.lora["rank"], **remote)
        return make_backend("vllm", model_path=str(final))
    model, tokenizer = load_trained(run, arm.trained_as, seed)
    return make_backend("transformers", model=model, tokenizer=tokenizer)


def load_trained(run: Run, arm: str, seed: int):
    """An arm's trained model, or the base model itself for BASE (`reuse base`); under `ectc
    eval`, the seed's checkpoint, whatever the arm."""
    from .sft import load_final

    if run.shape.checkpoints:
        model, tokenizer = load_checkpoint(run, run.shape.checkpoints[run.seeds.index(seed)])
    else:
        model, tokenizer = run.carried.load_base()
        if arm != BASE:
            load_final(model, arm_dir(run, arm, seed) / "final")
    if not getattr(model, "is_loaded_in_4bit", False):
        model.to(run.device)
    model.eval()
    return model, tokenizer


# ---- stage: probes and evaluation ------------------------------------------------------


def eval_rows(run: Run, data: dict) -> list[dict]:
    plan, samples = run.exp.plan, run.profile.evaluation.samples
    rows = data[plan.main_data][plan.evaluate.split]
    rows = rows[:samples] if samples else rows
    return rows[:run.opts.eval_limit] if run.opts.eval_limit else rows


def _answer_choices(model, tokenizer, prompts: list[str], response) -> tuple[list[str], list[list[float]]]:
    from .rl import choice_distribution

    probs = choice_distribution(model, tokenizer, prompts, response.choices, other=response.other is not None)
    # Greedy: the model's answer is its most likely allowed choice (or `other`: any answer
    # outside them, when that outcome is declared and together the likeliest).
    outcomes = [*response.choices, *([response.other] if response.other is not None else [])]
    answers = [outcomes[int(p.argmax())] for p in probs]
    return answers, [[round(float(x), 5) for x in p] for p in probs]


class RequirementNotMet(RuntimeError):
    """A `require` the base model's probes do not meet: the run stops before any arm trains."""


def _shares_text(values: dict[str, list]) -> str:
    return ", ".join(f"{k} {t / max(1, n):.0%} ({t}/{n})" for k, (t, n) in
                     ((k, probe_share(v)) for k, v in values.items()))


STOP = ". The run stops before training any arm: improve the base model (e.g. a longer warm-up) or lower the bound."


def require_base(run: Run) -> None:
    """Check the spec's `require`s on the probes just run; raise RequirementNotMet with the figure
    when one fails. Each outcome goes to the run's events."""
    if run.shape.checkpoints:
        return  # `ectc eval`: the probes ask models trained elsewhere, and nothing is trained here
    failed = []
    for req in run.exp.plan.evaluate.requires:
        true, items = probe_share(run.carried.probe_values[req.probe])
        problem = req.failure(run.carried.probe_values)
        run.events.append({"stage": "probes", "require": f"{req.probe} {req.op} {req.value:g}",
                           "value": round(true / max(1, items), 4), "items": items, "met": problem is None})
        if problem:
            failed.append(problem)
        elif not run.opts.quiet:
            run.console.print(f"  {'[green]met[/]':>18} require {req.probe} {req.op} {req.value:g} — "
                              f"{true / max(1, items):.2f}")
    if failed:
        raise RequirementNotMet("; ".join(failed) + STOP)


def stage_probes(run: Run, stage: Stage) -> str:
    exp, plan = run.exp, run.exp.plan
    folder = run.folder / stage.folder
    if run.reusable(stage.name, folder, stage.key).ok:
        run.carried.probe_values = json.loads((folder / "values.json").read_text())
        run.log(stage.name, "reused", _shares_text(run.carried.probe_values))
        return check(folder, stage.key).output
    t0 = time.perf_counter()
    rows = eval_rows(run, run.carried.data)
    out = {}
    for probe in plan.evaluate.probes:
        model, tokenizer = (run.carried.load_base() if probe.checkpoint == "base"
                            else load_trained(run, probe.checkpoint, run.seeds[0]))
        if not getattr(model, "is_loaded_in_4bit", False):
            model.to(run.device)
        unlabeled = exp.unlabeled_text(run.profile)
        prompts = [prompt_string(tokenizer, exp.render(probe.prompt, {**r, "label": unlabeled})) for r in rows]
        if plan.response.type == "choice":
            answers, _ = _answer_choices(model, tokenizer, prompts, plan.response)
        else:
            from .generate import generate_texts

            answers = generate_texts(model, tokenizer, prompts, temperature=0.0, max_new_tokens=64)
        fn = exp.feedback.PROBES[probe.name]
        out[probe.name] = [bool(fn({**r, "response": a})) for r, a in zip(rows, answers)]
    run.carried.probe_values = out
    run.write.json(folder / "values.json", out)
    done = run.write.done(folder, stage)
    run.log(stage.name, "ran", _shares_text(out), time.perf_counter() - t0)
    return done


def stage_eval(run: Run, stage: Stage, progress) -> str:
    """Evaluate one arm and seed under each of its label conditions; return the output hash of
    its samples (the samples go to `run.carried.samples`)."""
    exp, plan = run.exp, run.exp.plan
    arm, seed = plan.arm(stage.arm), stage.seed
    folder = run.folder / stage.folder
    found = run.reusable(stage.name, folder, stage.key)
    if found.ok:
        run.log(stage.name, "reused")
        run.carried.samples[(arm.name, seed)] = read_jsonl(folder / "samples.jsonl")
        return found.output
    t0 = time.perf_counter()
    response = plan.response
    if response.type == "text":
        backend = _generation_backend(run, arm, seed)
        model, tokenizer = getattr(backend, "model", None), getattr(backend, "tokenizer", None)
    else:
        model, tokenizer = load_trained(run, arm.trained_as, seed)
    rows = eval_rows(run, run.carried.data)
    samples: list[dict] = []
    conditions = run.profile.evaluation.conditions[arm.name]
    previous = _reusable_conditions(folder, stage.conditions)
    task = progress.add_task(stage.name, total=len(conditions))
    for name, value in conditions:
        if name in previous:
            samples.extend(previous[name])
            progress.update(task, advance=1)
            continue
        # Each row's axis set to the condition's value: feedback and metrics over the axis must
        # read the evaluation's value, not the one the row drew for training.
        axis_name = plan.axis.name
        cond_rows = [r if value is None else {**r, axis_name: value} for r in rows]
        labels = [exp.inference_label(arm, r[axis_name], run.profile) for r in cond_rows]
        messages = [exp.messages(r, l, run.profile) for r, l in zip(cond_rows, labels)]
        probs: list = [None] * len(rows)
        if response.type == "choice":
            prompts = [prompt_string(tokenizer, m) for m in messages]
            answers, probs = _answer_choices(model, tokenizer, prompts, response)
        else:
            gen = run.profile.generate
            prompts = messages
            answers = backend.generate(messages, temperature=gen.temperature,
                                       max_new_tokens=min(gen.max_new_tokens, response.max_tokens or 10**9),
                                       seed=gen.seed + seed, batch_size=gen.batch, options=gen.extra)
        for i, (row, label, prompt, answer, p) in enumerate(zip(cond_rows, labels, prompts, answers, probs)):
            sample = {**row, "response": answer}
            sample.update(exp.feedback.feedback(sample) if plan.method == "rl" else {})
            for probe, values in run.carried.probe_values.items():
                sample[probe] = values[i]
            samples.append({
                "arm": arm.name, "seed": seed, "condition": name, "label_value": value, "item": i,
                "label": label, "prompt": prompt if isinstance(prompt, str) else json.dumps(prompt),
                "response": answer, "probs": p, "sample": sample,
            })
        progress.update(task, advance=1)
    progress.remove_task(task)
    run.write.jsonl(folder / "samples.jsonl", samples)
    out = run.write.done(folder, stage, samples=len(samples), conditions=stage.conditions)
    run.carried.samples[(arm.name, seed)] = samples
    reused = f", {len(previous)} reused" if previous else ""
    run.log(stage.name, "ran", f"{len(samples)} samples, {len(conditions)} label condition(s){reused}",
            time.perf_counter() - t0)
    return out


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


# ---- stage: judge ----------------------------------------------------------------------


def stage_judge(run: Run, stage: Stage) -> str:
    """The monitors over one evaluation's stored samples (as Inspect scores stored outputs): a
    reworded rubric re-judges here and generates nothing. Verdicts go to verdicts.jsonl, one row
    per sample; `run.carried.samples` gets the samples with their verdicts."""
    from .monitors import apply_verdicts, run_monitors

    key = (stage.arm, stage.seed)
    folder = run.folder / stage.folder
    samples = run.carried.samples[key]
    found = run.reusable(stage.name, folder, stage.key)
    if found.ok:
        run.carried.samples[key] = apply_verdicts(samples, read_jsonl(folder / "verdicts.jsonl"))
        run.log(stage.name, "reused")
        return found.output
    t0 = time.perf_counter()
    verdicts = run_monitors(run, samples)
    run.write.jsonl(folder / "verdicts.jsonl", verdicts)
    out = run.write.done(folder, stage, samples=len(samples))
    run.carried.samples[key] = apply_verdicts(samples, verdicts)
    run.log(stage.name, "ran", f"{len(samples)} samples, {len(run.exp.plan.monitors)} monitor(s)",
            time.perf_counter() - t0)
    return out


# ---- the run -------------------------------------------------------------------------


def run_folder(exp: Experiment, opts: Options) -> Path:
    return opts.runs_dir / exp.name / (opts.run_id or exp.plan.profile(opts.profile)[0])


def run_shape(exp: Experiment, opts: Options) -> stages.Shape:
    """The run's stage-graph shape from its options (the same call `ectc plan` makes)."""
    from .llm import data_mode

    return stages.shape(exp, opts.profile, opts.seeds, opts.arms, opts.steps_scale, data_mode(exp.plan),
                        checkpoints=opts.checkpoints)


def prepare(exp: Experiment, spec_source: str, opts: Options, console) -> Run:
    shape = run_shape(exp, opts)
    folder = run_folder(exp, opts)
    folder.mkdir(parents=True, exist_ok=True)
    run = Run(exp=exp, opts=opts, shape=shape, folder=folder, console=console, device=_device(opts.device))
    run.write.text(folder / "spec.ect", spec_source)
    run.write.json(folder / "manifest.json", exp.manifest)
    run.write.json(folder / "plan.json", {**exp.plan.dump(), "run": {
        "profile": shape.profile, "seeds": list(shape.seeds), "steps_scale": opts.steps_scale, "device": run.device,
        **({"checkpoints": [c.dump() for c in shape.checkpoints]} if shape.checkpoints else {})}})
    return run


def execute(run: Run) -> dict:
    """Walk the stage graph, running what is not reusable; return the metrics."""
    from .report import stage_report

    t0 = time.perf_counter()
    metrics: dict = {}
    opts = run.opts
    with _progress(run) as progress:

        def settle(stage: Stage) -> str:
            nonlocal metrics
            run.stage_started = time.perf_counter()
            if stage.kind == "data":
                return stage_data(run, stage)
            if stage.kind == "base":
                return stage_base(run, stage)
            if stage.kind == "checkpoint":
                return stage_checkpoint(run, stage)
            if stage.kind == "train":
                if opts.only_jobs is not None and (stage.arm, stage.seed) not in opts.only_jobs:
                    return stages.unknown(stage)  # another worker trains it
                return stage_train(run, stage, progress)
            if stage.kind == "probes":
                out = stage_probes(run, stage)
                require_base(run)
                return out
            if stage.kind == "evaluate":
                return stage_eval(run, stage, progress)
            if stage.kind == "judge":
                return stage_judge(run, stage)
            metrics = stage_report(run, stage, time.perf_counter() - t0)
            return stage.key

        stages.walk(run.exp, run.shape, settle, through=opts.through)
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
