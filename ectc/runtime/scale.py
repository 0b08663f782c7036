"""Scale out `ectc run`: multi-process training and fan-out of independent jobs.

`run.main` calls `dispatch` when `--launcher accelerate` or `--executor` is not `local`:

* `--launcher accelerate --processes N`: the data and base-model stages run here (cached,
  shared by every job), then the (arm, seed) training jobs that are not done run as one
  N-process launch of `ectc.runtime.distributed` (DDP: see that module), then evaluation and
  the report run here, in this process, into the same run folder.
  On CUDA the launch is `accelerate launch --config_file RUN/launch/accelerate.yaml` with a
  config written from the profile (num_processes, bf16 mixed precision, DDP; set
  ECTC_ACCELERATE_CONFIG to a config of your own for FSDP or DeepSpeed). On CPU it is
  `python -m torch.distributed.run --standalone` (gloo): `accelerate launch` on CPU runs
  multi-process only through mpirun/oneCCL and otherwise silently starts ONE process, while
  torch.distributed.run is what `accelerate launch` itself uses for multi-GPU, so both paths
  hand the worker the same environment and the worker's `Accelerator()` sets itself up from
  it. We do not use `notebook_launcher`: it forks the current process, which already holds
  torch's thread pools (and, on a GPU node, possibly a CUDA context).
* `--executor submitit-local|slurm`: one submitit job per (arm, seed) whose training is not
  done (`Options.only_jobs` on a worker that runs `execute` with only the training stage),
  a progress bar while they run, then evaluation and the report here. Stages are keyed, so a
  resubmitted fan-out submits only the jobs whose stage is not done. With `--launcher
  accelerate --processes N` as well, each job trains with N processes on its node.

Every launch and fan-out appends a record to RUN/scale.json (what was submitted, skipped,
finished and failed), which is also how the tests count resubmitted jobs.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ..files import atomic_write_text, write_json
from ..plan import stages
from ..plan.model import Profile
from ..plan.records import check

KILL_ENV = "ECTC_SCALE_KILL"  # "arm:seed": that fan-out job SIGKILLs itself before training (tests)


# ---- helpers ---------------------------------------------------------------------------------


def _args(args, name: str, default: Any) -> Any:
    value = getattr(args, name, default)
    return default if value is None else value


def training_jobs(run) -> list[tuple[str, int, bool]]:
    """(arm, seed, done) for every training job the run needs, in the stage graph's order (the
    data and base-model stages have run: their records give the keys' inputs)."""
    visited = stages.walk(run.exp, run.shape, stages.recorded(run.folder, run.opts.runs_dir), through="train")
    return [(s.arm, s.seed, check(run.folder / s.folder, s.key).ok) for s in visited if s.kind == "train"]


def _record(run, entry: dict) -> None:
    path = run.folder / "scale.json"
    try:
        history = json.loads(path.read_text())
    except (OSError, ValueError):
        history = []
    history.append({"time": time.strftime("%Y-%m-%dT%H:%M:%S"), **entry})
    write_json(path, history)


def _payload(run, args, jobs: list[tuple[str, int]], processes: int) -> dict:
    opts = run.opts
    return {
        "spec": str(Path(run.folder / "spec.ect").resolve()),
        "generated": str(Path(_args(args, "generated", "generated")).resolve() / run.exp.name),
        "runs_dir": str(Path(opts.runs_dir).resolve()), "run_id": opts.run_id, "profile": opts.profile,
        "seeds": opts.seeds, "arms": opts.arms, "steps_scale": opts.steps_scale, "device": opts.device,
        "jobs": [list(j) for j in jobs], "processes": processes, "cwd": os.getcwd(),
        "mixed_precision": run.profile.mixed_precision,
    }


# ---- multi-process training ------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def accelerate_config(profile: Profile, processes: int) -> dict:
    """The accelerate config ectc writes for a CUDA launch (DDP over `processes` GPUs)."""
    config: dict[str, Any] = {}
    custom = os.environ.get("ECTC_ACCELERATE_CONFIG")
    if custom:
        import yaml

        config = yaml.safe_load(Path(custom).read_text()) or {}
    config.setdefault("compute_environment", "LOCAL_MACHINE")
    config.setdefault("distributed_type", "MULTI_GPU" if processes > 1 else "NO")
    config.setdefault("mixed_precision", profile.mixed_precision)
    config.update({"num_processes": processes, "num_machines": 1, "machine_rank": 0, "use_cpu": False,
                   "main_process_port": _free_port(), "rdzv_backend": "static", "same_network": True,
                   "gpu_ids": "all"})
    return config


def launch_command(run, job_file: Path, processes: int, cuda: bool) -> list[str]:
    worker = ["-m", "ectc.runtime.distributed", str(job_file)]
    if cuda:
        import yaml

        cfg_path = job_file.parent / "accelerate.yaml"
        atomic_write_text(cfg_path, yaml.safe_dump(accelerate_config(run.profile, processes), sort_keys=True))
        return [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(cfg_path), *worker]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}", *worker]


def launch_training(payload: dict, folder: Path, console=None, run=None) -> int:
    """Run the payload's training jobs as one `processes`-process launch; return its exit code."""
    import hashlib

    import torch

    processes = int(payload["processes"])
    cuda = payload["device"] != "cpu" and torch.cuda.is_available()
    launch_dir = folder / "launch"
    tag = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]
    job_file = launch_dir / f"train-{tag}.json"
    write_json(job_file, payload)
    if run is None:
        from types import SimpleNamespace

        from .experiment import Experiment

        run = SimpleNamespace(profile=Experiment(Path(payload["generated"])).plan.profile(payload["profile"])[1])
    cmd = launch_command(run, job_file, processes, cuda)
    env = dict(os.environ)
    if not cuda:
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // processes)))
    if console is not None:
        console.print(f"launch: {' '.join(cmd[1:])}")
    return subprocess.run(cmd, env=env).returncode


# ---- fan-out ---------------------------------------------------------------------------------


def train_job(payload: dict) -> dict:
    """A fan-out job: train the payload's (arm, seed) jobs in this process (or, with
    processes > 1, as a multi-process launch on this node). Runs on the cluster node."""
    os.chdir(payload["cwd"])
    kill = os.environ.get(KILL_ENV)
    if kill and [kill.split(":")[0], int(kill.split(":")[1])] in payload["jobs"]:
        os.kill(os.getpid(), signal.SIGKILL)
    t0 = time.time()
    folder = Path(payload["runs_dir"])  # for the launch's job file; the run folder is made by prepare
    if int(payload["processes"]) > 1:
        from .experiment import Experiment

        exp = Experiment(Path(payload["generated"]))
        name, _ = exp.plan.profile(payload["profile"])
        run_folder = folder / exp.name / (payload["run_id"] or name)
        code = launch_training(payload, run_folder)
        if code:
            raise RuntimeError(f"training launch exited with {code}")
    else:
        from rich.console import Console

        from .experiment import Experiment
        from .run import Options, execute, prepare, quiet_libraries

        quiet_libraries()
        opts = Options(profile=payload["profile"], run_id=payload["run_id"], runs_dir=folder,
                       seeds=payload["seeds"], arms=payload["arms"], steps_scale=payload["steps_scale"],
                       # Not quiet: the job's log (stdout, not a terminal) gets the stage lines and
                       # plain progress lines every `track { log_every }` steps.
                       device=payload["device"], quiet=False, through="train",
                       only_jobs={(a, int(s)) for a, s in payload["jobs"]})
        run = prepare(Experiment(Path(payload["generated"])), Path(payload["spec"]).read_text(), opts,
                      Console(highlight=False, color_system=None))
        execute(run)
    return {"jobs": payload["jobs"], "seconds": round(time.time() - t0, 2), "host": socket.gethostname()}


def make_executor(kind: str, folder: Path, args, processes: int):
    import submitit

    timeout = int(os.environ.get("ECTC_JOB_TIMEOUT_MIN", "1440"))
    gpus = int(_args(args, "gpus_per_job", 1))
    if kind == "slurm":
        executor = submitit.AutoExecutor(folder=folder, cluster="slurm")
        params: dict[str, Any] = {"timeout_min": timeout, "gpus_per_node": gpus, "tasks_per_node": 1,
                                  "cpus_per_task": int(os.environ.get("ECTC_CPUS_PER_JOB", str(max(4, 8 * gpus)))),
                                  "name": "ectc"}
        if getattr(args, "partition", None):
            params["slurm_partition"] = args.partition
        executor.update_parameters(**params)
        return executor
    import torch

    executor = submitit.LocalExecutor(folder=folder)
    executor.update_parameters(timeout_min=timeout, gpus_per_node=gpus if torch.cuda.is_available() else 0)
    return executor


def _failure(exc: BaseException) -> str:
    """One line for a failed job: the exception a traceback ends with, or the job's state."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    errors = [line for line in lines if "Error:" in line or "Exception:" in line or "Interrupt" in line]
    states = [line for line in lines if "(state:" in line]
    return (errors or states or lines or [repr(exc)])[-1]


def fan_out(run, args, pending: list[tuple[str, int]], console) -> dict:
    """Submit one job per pending (arm, seed), wait with a progress bar; return a summary."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    executor_kind = _args(args, "executor", "submitit-local")
    processes = int(_args(args, "processes", 1)) if _args(args, "launcher", "none") == "accelerate" else 1
    executor = make_executor("slurm" if executor_kind == "slurm" else "local", run.folder / "submitit", args,
                             processes)
    payloads = [_payload(run, args, [job], processes) for job in pending]
    jobs = []
    threads = os.environ.get("OMP_NUM_THREADS")
    if executor_kind != "slurm" and threads is None:
        # Local jobs share this machine's cores: one torch thread pool each, not one per core.
        os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // len(payloads)))
    try:
        with executor.batch():  # a SLURM job array: one submission
            for payload in payloads:
                jobs.append(executor.submit(train_job, payload))
    finally:
        if executor_kind != "slurm" and threads is None:
            os.environ.pop("OMP_NUM_THREADS", None)
    ids = {f"{a}:{s}": j.job_id for (a, s), j in zip(pending, jobs)}
    console.print(f"submitted {len(jobs)} {executor_kind} job(s): "
                  + ", ".join(f"{k} ({v})" for k, v in ids.items()))
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        console=console, disable=run.opts.quiet, transient=True)
    try:
        with progress:
            task = progress.add_task("training jobs", total=len(jobs))
            while True:
                done = [j.done() for j in jobs]
                progress.update(task, completed=sum(done),
                                description=f"training jobs ({len(jobs) - sum(done)} queued or running)")
                if all(done):
                    break
                time.sleep(0.5)
    except KeyboardInterrupt:
        for j in jobs:
            j.cancel(check=False)
        console.print("[yellow]interrupted:[/] jobs cancelled; run the same command again to submit "
                      "only the unfinished ones")
        raise
    finished, failed = [], []
    for (arm, seed), job in zip(pending, jobs):
        try:
            job.result()
            finished.append([arm, seed])
        except Exception as exc:  # noqa: BLE001 - a job's failure is reported, not raised
            failed.append([arm, seed])
            console.print(f"[red]job {arm} seed {seed} ({job.job_id}) failed:[/] {_failure(exc)}"
                          f"\n  logs: {job.paths.stdout} / {job.paths.stderr}")
    return {"job_ids": ids, "finished": finished, "failed": failed}


# ---- entry point from run.main ---------------------------------------------------------------


def dispatch(args, exp, source: str, opts, console) -> int:
    from .run import execute, prepare

    launcher = _args(args, "launcher", "none")
    executor = _args(args, "executor", "local")
    processes = int(_args(args, "processes", 1)) if launcher == "accelerate" else 1
    if processes < 1:
        console.print("[red]error:[/] --processes must be at least 1")
        return 1
    if executor == "slurm" and not getattr(args, "partition", None):
        console.print("[yellow]note:[/] no --partition: SLURM's default partition")
    run = prepare(exp, source, opts, console)
    how = f"{executor} executor" if executor != "local" else f"{processes} process(es)"
    console.rule(f"[bold]{exp.name}[/] · profile {run.profile_name} · {len(run.seeds)} seed(s) · {run.device} · {how}")
    console.print(f"run folder: {run.folder}")
    # Data, the base model and its probes once, here (a failed `require` stops before any job):
    # every job then finds them cached.
    execute(dataclasses.replace(run, opts=dataclasses.replace(opts, through="probes")))
    jobs = training_jobs(run)
    pending = [(a, s) for a, s, done in jobs if not done]
    skipped = [[a, s] for a, s, done in jobs if done]
    if skipped:
        console.print(f"{len(skipped)} training job(s) already done: "
                      + ", ".join(f"{a} seed {s}" for a, s in skipped))
    t0 = time.perf_counter()
    entry: dict[str, Any] = {"launcher": launcher, "executor": executor, "processes": processes,
                             "submitted": [list(j) for j in pending], "skipped": skipped}
    if pending:
        if executor == "local":
            code = launch_training(_payload(run, args, pending, processes), run.folder, console, run)
            entry.update(exit_code=code)
        else:
            try:
                entry.update(fan_out(run, args, pending, console))
            except RuntimeError as exc:  # e.g. submitit: no srun here, not a SLURM login node
                console.print(f"[red]error:[/] cannot submit to {executor}: {exc}")
                return 1
    entry["seconds"] = round(time.perf_counter() - t0, 2)
    left = [[a, s] for a, s, done in training_jobs(run) if not done]
    entry["unfinished"] = left
    _record(run, entry)
    if left:
        console.print(f"[red]error:[/] {len(left)} training job(s) did not finish: "
                      + ", ".join(f"{a} seed {s}" for a, s in left)
                      + ". Run the same command again: only those are submitted.")
        return 1
    if pending:
        console.print(f"trained {len(pending)} job(s) in {entry['seconds']:.1f}s")
    # Evaluation and the report, here; training stages are all reused.
    execute(run)
    return 0
