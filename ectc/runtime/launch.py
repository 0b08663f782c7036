"""`ectc run` and `ectc eval` from the command line: compile the spec, check that generated/ is
its build, lock the run folder, and execute the stage graph here (`run.py`) or hand it to the
scale-out (`scale.py`: a multi-process launch or a fan-out of training jobs). `ectc eval` walks
the same graph with checkpoints trained elsewhere in place of the base model and the training."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

from .bill import estimated, spent
from .datafiles import DataFileError
from .experiment import Experiment
from ..plan.stages import Checkpoint
from .run import CheckpointError, Options, RequirementNotMet, execute, flush_denormals, prepare, quiet_libraries, run_folder


def _estimate(source: str, spec_path: Path, args, name: str) -> dict:
    """The bill `ectc plan` prints, made before the run so the run can show it beside the spend."""
    from ..runs import bills, predict

    arms = args.arms.split(",") if args.arms else None
    result = predict(source, Path(args.runs_dir), args.profile, args.run_id, args.seeds, arms, args.steps_scale,
                     root=spec_path.parent)
    lines, total, how = bills(source, Path(args.runs_dir), result, args.profile, args.seeds, arms,
                              args.steps_scale, root=spec_path.parent)[name]
    return {"stages": [b.to_json() for b in lines], "totals": total, "estimated": how, "claude": estimated(lines)}


def _settle_bill(run, bill: dict, console) -> None:
    """Claude's calls, tokens and cost as spent, beside the estimate (console and bill.json)."""
    got = spent(run.events)
    run.write.json(run.folder / "bill.json", {"estimate": bill, "spent": got})
    for kind, was in bill["claude"].items():
        now = got.get(kind, {})
        cost = "unknown price" if was["cost_usd_at_most"] is None else f"at most ${was['cost_usd_at_most']:,.2f}"
        console.print(f"Claude {kind}: estimated {was['calls']:,} calls, ~{was['input_tokens']:,} input tokens, {cost}; "
                      f"spent {now.get('calls', 0):,} calls ({now.get('cache_hits', 0):,} answered from the cache), "
                      f"{now.get('input_tokens', 0):,} input and {now.get('output_tokens', 0):,} output tokens, "
                      f"${now.get('cost_usd', 0.0):,.2f}")


def main(args) -> int:
    opts = Options(profile=args.profile, run_id=args.run_id, runs_dir=Path(args.runs_dir), seeds=args.seeds,
                   arms=args.arms.split(",") if args.arms else None, steps_scale=args.steps_scale,
                   device=args.device)
    return launch(args, opts)


def main_eval(args) -> int:
    """`ectc eval`: the spec's evaluation of `args.arm` on each `--checkpoint` (seed k: the k-th);
    the CLI has checked the flags and chosen the arm and the run id."""
    try:
        checkpoints = tuple(resolve_checkpoint(c, args.revision) for c in args.checkpoint)
    except ValueError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 1
    opts = Options(profile=args.profile, run_id=args.run_id, runs_dir=Path(args.runs_dir), arms=[args.arm],
                   device=args.device, checkpoints=checkpoints)
    return launch(args, opts)


def resolve_checkpoint(source: str, revision: str | None) -> Checkpoint:
    """A local folder by the hash of its files; a hub id by the commit its revision resolves to
    (a 40-hex revision is one already; otherwise the hub is asked)."""
    if Path(source).exists():
        return Checkpoint.folder(Path(source))
    if revision is not None and len(revision) == 40 and all(c in "0123456789abcdef" for c in revision):
        return Checkpoint(source, revision, revision)
    try:
        from huggingface_hub import HfApi

        commit = HfApi().model_info(source, revision=revision).sha
    except Exception as exc:  # offline, unknown id, gated: one line, not a traceback
        raise ValueError(f"--checkpoint {source}: not a local folder, and the hub did not resolve it "
                         f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); pass a "
                         "folder, or --revision COMMIT to evaluate a hub model offline") from None
    return Checkpoint(source, commit, commit)


def launch(args, opts: Options) -> int:
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
    status = 0
    for exp_ir in spec.experiments:
        folder = Path(args.generated) / exp_ir.name
        manifest = folder / "manifest.json"
        if not manifest.exists() or json.loads(manifest.read_text()).get("spec_sha256") != sha:
            sys.stderr.write(f"error: {folder}/ is missing or stale for {args.spec}: run `ectc build` first\n")
            return 1
        exp = Experiment(folder)  # the flags naming its profile and arms were checked by the CLI
        if getattr(args, "launcher", "none") == "accelerate" or getattr(args, "executor", "local") != "local":
            from .scale import dispatch  # imports torch and submitit: only when asked

            status = max(status, dispatch(args, exp, source, opts, console))
            continue
        from .lock import RunFolderBusy, run_folder_lock

        try:
            with run_folder_lock(run_folder(exp, opts)):
                bill = _estimate(source, spec_path, args, exp.name)
                run = prepare(exp, source, opts, console)
                console.rule(f"[bold]{exp.name}[/] · profile {run.profile_name} · {len(run.seeds)} seed(s) · {run.device}")
                console.print(f"run folder: {run.folder}")
                run.write.json(run.folder / "bill.json", {"estimate": bill})
                with flush_denormals():
                    execute(run)
                _settle_bill(run, bill, console)
        except RunFolderBusy as busy:
            sys.stderr.write(f"error: {busy}\n")
            return 1
        except (DataFileError, CheckpointError) as exc:  # a value the spec's type refuses, a model that
            # does not load: one line, no traceback
            sys.stderr.write(f"error: {exc}\n")
            return 1
        except RequirementNotMet as exc:  # the base model is not good enough: nothing trained
            sys.stderr.write(f"error: {exc}\n")
            return 1
    return status
