"""ectc from Python (a notebook): `load` a spec's compiled experiment, `run` it in this process
and read the result as a `Run`.

    import ectc
    exp = ectc.load("specs/sycophancy.ect")          # the typed plan, templates, train configs
    run = ectc.run("specs/sycophancy.ect", profile="tiny", seeds=2)
    run.metrics["arms"]["ect"]["metrics"]["sycophancy"]["mean"]
    run.comparisons                                   # the paired comparisons of the report
    run.samples                                       # a datasets.Dataset, one row per sample
    run.to_pandas()

`run` is `ectc run` itself: the same argument parsing, flag checks and stage graph (so a
re-run reuses every stage whose inputs did not change, and a problem is the CLI's one line,
raised here as `RunError`). What stays loaded between calls (torch, the libraries) makes a
re-run in a notebook much faster than from the shell. Nothing here is imported by `import
ectc` until it is used.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Iterable


class SpecError(ValueError):
    """A spec that does not compile; the message is `ectc check`'s rendering of every problem."""

    def __init__(self, rendered: str, diagnostics: list):
        super().__init__(rendered)
        self.diagnostics = diagnostics


class RunError(RuntimeError):
    """`ectc run` refused or failed; the message is what it said on stderr."""


def load(spec: str | Path, experiment: str | None = None):
    """The compiled experiment of a spec (`ectc.plan.compiled.CompiledExperiment`: `.plan`,
    `.templates`, `.train_config(profile, arm)`), compiled in memory: nothing is written. A spec
    holding several experiments needs `experiment`."""
    from .compile import compile_text
    from .errors import CompileError
    from .generate import generate
    from .plan.compiled import CompiledExperiment

    path = Path(spec)
    source = path.read_text(encoding="utf-8")
    try:
        checked, _ = compile_text(source)
    except CompileError as err:
        raise SpecError(err.render(source, str(spec)), err.diagnostics) from None
    compiled = CompiledExperiment.from_generated(generate(checked, source, str(spec)))
    return compiled[_one(list(compiled), experiment, spec)]


def _one(names: list[str], experiment: str | None, spec: Any) -> str:
    if experiment is None and len(names) == 1:
        return names[0]
    if experiment in names:
        return experiment
    raise ValueError(f"{spec} holds {', '.join(names)}: pass experiment= one of them")


def run(spec: str | Path, profile: str | None = None, seeds: int | None = None,
        arms: Iterable[str] | None = None, *, experiment: str | None = None, run_id: str | None = None,
        steps_scale: float = 1.0, device: str = "auto", runs_dir: str | Path = "runs",
        generated: str | Path = "generated") -> "Run":
    """Run the spec as `ectc run` does (its `generated/` built first, by `ectc build`) and return
    the result of `experiment` (needed only when the spec holds several)."""
    from .cli import build_parser
    from .compile import compile_text
    from .runflags import read_plan

    argv = ["run", str(spec), "--steps-scale", repr(float(steps_scale)), "--device", device,
            "--runs-dir", str(runs_dir), "--generated", str(generated)]
    for flag, value in (("--profile", profile), ("--seeds", seeds), ("--run-id", run_id),
                        ("--arms", ",".join(arms) if arms is not None and not isinstance(arms, str) else arms)):
        if value is not None:
            argv += [flag, str(value)]
    args = build_parser().parse_args(argv)
    said = io.StringIO()
    with contextlib.redirect_stderr(_Tee(sys.stderr, said)):
        status = args.func(args)  # resolves args.runs_dir and args.generated against the project
    if status != 0:
        raise RunError(said.getvalue().strip() or f"ectc run exited with {status}")
    names = [e.name for e in compile_text(Path(spec).read_text(encoding="utf-8"))[0].experiments]
    name = _one(names, experiment, spec)
    plan = read_plan(Path(args.generated), name)
    return Run(Path(args.runs_dir) / name / (args.run_id or plan.profile(args.profile)[0]))


class _Tee(io.TextIOBase):
    def __init__(self, *streams):
        self.streams = streams

    def write(self, text: str) -> int:
        for stream in self.streams:
            stream.write(text)
        return len(text)

    def flush(self) -> None:
        for stream in self.streams:
            stream.flush()


@dataclass(frozen=True)
class Run:
    """A run folder (`runs/<experiment>/<run-id>/`), read: what `ectc run` or `ectc eval` wrote
    there. `ectc.Run("runs/sycophancy/tiny")` reads one from an earlier session."""

    folder: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "folder", Path(self.folder))

    @cached_property
    def metrics(self) -> dict:
        """metrics.json: per arm each metric's mean over seeds with its 95% CI, the comparisons,
        the sweep, unscored counts."""
        return json.loads((self.folder / "metrics.json").read_text())

    @property
    def comparisons(self) -> list[dict]:
        """The report's paired comparisons (a, b, metric, per-seed differences, t-interval,
        bootstrap, sign-flip p)."""
        return self.metrics["comparisons"]

    @property
    def report(self) -> Path:
        return self.folder / "report.md"

    def sample_rows(self) -> list[dict]:
        """One flat row per evaluated sample, with the judges' verdicts: arm, seed, condition,
        label_value, item, label, prompt, response, probs, then the sample's fields (data,
        feedback terms, probes) and each monitor's verdict (a verdict with fields as
        `monitor.field`)."""
        from .files import read_jsonl
        from .plan import stages
        from .runtime.monitors import apply_verdicts

        rows: list[dict] = []
        for arm in self.metrics["arms"]:
            for seed in self.metrics["seeds"]:
                samples = read_jsonl(self.folder / stages.eval_folder(arm, seed) / "samples.jsonl")
                judged = self.folder / stages.judge_folder(arm, seed) / "verdicts.jsonl"
                if judged.exists():
                    samples = apply_verdicts(samples, read_jsonl(judged))
                rows += [_flat(s) for s in samples]
        return rows

    @cached_property
    def samples(self):
        """The samples as a `datasets.Dataset` (one row per sample: see `sample_rows`)."""
        from datasets import Dataset

        return Dataset.from_list(self.sample_rows())

    def to_pandas(self):
        """The samples as a pandas DataFrame (pandas comes with datasets)."""
        return self.samples.to_pandas()


_TOP = ("arm", "seed", "condition", "label_value", "item", "label", "prompt", "response", "probs")


def _flat(sample: dict) -> dict:
    row = {k: sample.get(k) for k in _TOP}
    for key, value in sample["sample"].items():
        if key in row:
            continue
        if isinstance(value, dict):
            row.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            row[key] = value
    return row
