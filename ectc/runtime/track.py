"""Per-step training statistics, out of the process: to the profile's tracker and as plain
progress lines.

`track { report_to "tensorboard" | "trackio" | "wandb"  project "..." }` in a profile sends what
the RL fast path, the warm-up, GRPO and SFT log each step (loss, reward, KL, learning rate, ...)
to that tracker through the library's own writer: torch's `SummaryWriter` (event files under
the run folder's `tensorboard/`), `trackio.init/log` (trackio's local store unless it is told
otherwise) or `wandb.init/log` (offline with `WANDB_MODE=offline`). trl's trainers report
through transformers' own callbacks, configured from the same place (`trainer_args`,
`trainer_callbacks`).

A rich progress bar draws nothing when stdout is not a terminal (a SLURM log, a pipe), so there
a plain line is printed every N steps instead:

    [train ect seed0] step 200/1600 loss 0.41 reward 0.63 12.3 steps/s

Tracking only watches: it never enters a stage key (plan/stages.NOT_TRAINING).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..plan.model import Track

# What a progress line shows, in this order: its word and the statistics' names for it (the
# fast path's, trl's, the warm-up's).
SHOWN = (("loss", ("loss", "pg_loss")), ("reward", ("reward_mean", "reward")), ("kl", ("kl",)))
LINES_PER_RUN = 20  # log_every 0: about this many lines per arm


def line_every(log_every: int, total: int | None) -> int:
    """Steps between two progress lines (`track { log_every N }`; 0: about LINES_PER_RUN a run)."""
    if log_every > 0:
        return log_every
    return max(1, math.ceil((total or 1) / LINES_PER_RUN))


def progress_line(name: str, done: int, total: int | None, stats: dict, steps_per_second: float | None) -> str:
    parts = [f"[{name}] step {done}/{total if total else '?'}"]
    for word, keys in SHOWN:
        value = next((stats[k] for k in keys if isinstance(stats.get(k), (int, float))), None)
        if value is not None:
            parts.append(f"{word} {value:.4g}")
    if steps_per_second is not None:
        parts.append(f"{steps_per_second:.3g} steps/s")
    return " ".join(parts)


def numeric(stats: dict) -> dict[str, float]:
    """The statistics a tracker can plot (numbers; the step is the x axis, not a series)."""
    return {k: float(v) for k, v in stats.items()
            if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


class Tracker:
    """One training run's series in the profile's tracker, written through the library's own API.
    `resume_step`: the steps an interrupted run had checkpointed; TensorBoard drops what the
    killed attempt logged after them (purge_step), trackio and W&B resume the run by name/id.
    `for_trainer`: a trl trainer's callbacks do the logging (trainer_args, trainer_callbacks)."""

    def __init__(self, track: Track, name: str, group: str, log_dir: Path, resume_step: int = 0,
                 config: dict | None = None, for_trainer: bool = False):
        self.track, self.name, self.group, self.log_dir = track, name, group, Path(log_dir)
        self.kind = track.report_to
        self.writer: Any = None
        self.run: Any = None
        if self.kind == "tensorboard":
            from torch.utils.tensorboard import SummaryWriter

            # Steps up to resume_step were logged (and flushed) before the checkpoint; whatever an
            # earlier attempt logged after it is redone, so it goes.
            self.writer = SummaryWriter(log_dir=str(self.log_dir), purge_step=resume_step + 1)
        elif self.kind == "trackio" and for_trainer:
            pass  # transformers' TrackioCallback opens (and finishes) the run from trainer_args
        elif self.kind == "trackio":
            import trackio

            # No background CPU/GPU sampling thread: the series are training's own.
            self.run = trackio.init(project=track.project, name=name, group=group, config=config,
                                    resume="allow", auto_log_cpu=False, auto_log_gpu=False)
        elif self.kind == "wandb":
            import wandb

            self.log_dir.mkdir(parents=True, exist_ok=True)
            # A stable id, so a resumed arm continues its run (transformers' callback reuses it).
            run_id = "".join(c if c.isalnum() or c in "-_" else "-" for c in f"{group}-{name}")[:128]
            self.run = wandb.init(project=track.project, name=name, group=group, id=run_id, resume="allow",
                                  dir=str(self.log_dir), config=config)

    def log(self, step: int, stats: dict) -> None:
        values = numeric(stats)
        if self.writer is not None:
            for key, value in values.items():
                self.writer.add_scalar(f"train/{key}", value, step)
        elif self.run is not None:
            self.run.log(values, step=step)

    def flush(self) -> None:
        """On disk now (a checkpoint follows: a kill must not lose the steps it covers)."""
        if self.writer is not None:
            self.writer.flush()

    def trainer_args(self) -> dict:
        """TrainingArguments for trl's trainers: transformers' trackio and W&B callbacks, named
        by report_to, log into this run (W&B's reuses the open run; trackio's re-opens it by
        project and name). TensorBoard goes through `trainer_callbacks` instead."""
        if self.kind in ("trackio", "wandb"):
            return {"report_to": [self.kind], "run_name": self.name, "project": self.track.project}
        return {"report_to": "none"}

    def trainer_callbacks(self) -> list:
        """transformers' own TensorBoard callback with this writer: transformers 5 has no
        logging_dir argument (its writer's folder comes from an environment variable or the
        trainer's scratch output_dir), and a resumed run must purge the killed attempt's steps."""
        if self.writer is None:
            return []
        from transformers.integrations import TensorBoardCallback

        return [TensorBoardCallback(tb_writer=self.writer)]

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        elif self.run is not None:
            self.run.finish()
        self.writer = self.run = None


@dataclass
class StepLog:
    """The per-step hook a training loop calls with (steps done, statistics): it moves the rich
    bar, prints a plain progress line every `log_every` steps when stdout is not a terminal, and
    logs to the tracker (unless the loop is a trl trainer, whose callbacks log to it)."""

    name: str
    total: int | None
    log_every: int = 0
    tracker: Tracker | None = None
    to_tracker: bool = True
    flush_every: int = 0  # the loop's checkpoint interval: the tracker is flushed before each
    bar: Callable[[int, int | None], None] | None = None  # (done, total): the rich progress bar
    say: Callable[[str], None] | None = None  # prints a plain line; None on a terminal
    finish: Callable[[], None] | None = None  # removes the bar
    first: int = 0  # steps done before this process started (a resumed run)
    t0: float = field(default_factory=time.perf_counter)

    def __call__(self, done: int, stats: dict, total: int | None = None) -> None:
        if total:
            self.total = total
        if self.bar is not None:
            self.bar(done, self.total)
        if self.tracker is not None and self.to_tracker and stats:
            self.tracker.log(done, stats)
            if self.flush_every > 0 and done % self.flush_every == 0:
                self.tracker.flush()
        every = line_every(self.log_every, self.total)
        if self.say is not None and (done % every == 0 or done == self.total):
            elapsed = time.perf_counter() - self.t0
            rate = (done - self.first) / elapsed if elapsed > 0 and done > self.first else None
            self.say(progress_line(self.name, done, self.total, stats, rate))

    def close(self) -> None:
        if self.finish is not None:
            self.finish()
        if self.tracker is not None:
            self.tracker.close()
