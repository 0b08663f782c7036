"""Scale-out: a 2-process (gloo, CPU) training of a tiny arm reproduces the 1-process run, and
a submitit local-executor fan-out of 2 arms x 2 seeds runs end to end, a killed job being the
only one a resubmission runs.

The tiny spec is specs/sycophancy.ect shrunk (rows, seeds, warm-up and RL steps) and built
into the test's own generated/ folder; every run shares one runs/ folder, so the base model
is built once (its cache is keyed by recipe)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("accelerate")
pytest.importorskip("submitit")

from ectc.cli import build_parser, main as cli_main  # noqa: E402
from ectc.runtime import launch as run_module  # noqa: E402
from ectc.runtime.scale import KILL_ENV  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

SHRINK = [
    ("split { train 2560 test 500 }", "split { train 128 test 32 }"),
    ("split { train 20000 }", "split { train 64 }"),
    ("split { train 5000 }", "split { train 64 }"),
    ("seeds 7", "seeds 2"),
    ("steps 5000", "steps 4"),
    ("steps 400\n", "steps 12\n"),
    ("batch 128\n      minibatch 128", "batch 16\n      minibatch 16"),
    ("step 0.1", "step 0.5"),
]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("scale")
    text = (ROOT / "specs" / "sycophancy.ect").read_text()
    for old, new in SHRINK:
        assert old in text, f"specs/sycophancy.ect changed: {old!r} not found; update SHRINK"
        text = text.replace(old, new, 1)
    spec = folder / "sycophancy.ect"
    spec.write_text(text)
    assert cli_main(["build", str(spec), "--out", str(folder / "generated")]) == 0
    return folder


def ectc_run(tiny: Path, *extra: str) -> int:
    args = build_parser().parse_args(["run", str(tiny / "sycophancy.ect"), "--generated", str(tiny / "generated"),
                                      "--runs-dir", str(tiny / "runs"), *extra])
    return run_module.main(args)


def arm_dir(tiny: Path, run_id: str, arm: str = "ect", seed: int = 0) -> Path:
    return tiny / "runs" / "sycophancy" / run_id / "arms" / arm / f"seed{seed}"


def history(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "history.jsonl").read_text().splitlines()]


def test_two_processes_match_one(tiny):
    """Every rank runs the global PPO step (same rows, rewards, whitening and sampled actions);
    only the forward/backward is sharded and the gradient all-reduced. So the 2-process run
    must take the same actions at every step (reward means equal exactly) and end with the
    same weights up to float32 summation order: half-batch matmuls and a sum of two gradient
    halves instead of one. Measured: |dW| ~1e-6 after 24 steps (weights ~1); we allow 1e-4.
    grad_norm catches a wrong gradient scale, which Adam would otherwise hide."""
    from safetensors.torch import load_file

    common = ["--arms", "ect", "--seeds", "1"]
    assert ectc_run(tiny, *common, "--run-id", "one") == 0
    assert ectc_run(tiny, *common, "--run-id", "two", "--launcher", "accelerate", "--processes", "2") == 0
    one, two = arm_dir(tiny, "one"), arm_dir(tiny, "two")
    h1, h2 = history(one), history(two)
    assert len(h1) == len(h2) == 12
    assert [h["reward_mean"] for h in h1] == [h["reward_mean"] for h in h2]
    for a, b in zip(h1, h2):
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-4, abs=1e-6)
        assert a["entropy"] == pytest.approx(b["entropy"], rel=1e-4, abs=1e-6)
    w1, w2 = load_file(one / "final" / "model.safetensors"), load_file(two / "final" / "model.safetensors")
    assert w1.keys() == w2.keys()
    assert max((w1[k] - w2[k]).abs().max().item() for k in w1) < 1e-4
    assert all(h["grad_norm"] > 0 for h in h1)
    m1 = json.loads((tiny / "runs" / "sycophancy" / "one" / "metrics.json").read_text())
    m2 = json.loads((tiny / "runs" / "sycophancy" / "two" / "metrics.json").read_text())
    for metric in ("sycophancy", "accuracy"):
        assert m1["arms"]["ect"]["metrics"][metric]["mean"] == m2["arms"]["ect"]["metrics"][metric]["mean"]
    record = json.loads((tiny / "runs" / "sycophancy" / "two" / "scale.json").read_text())[-1]
    assert record["processes"] == 2 and record["exit_code"] == 0 and record["submitted"] == [["ect", 0]]


def test_fan_out_then_resubmit_runs_only_unfinished(tiny, monkeypatch):
    fan = ["--arms", "baseline,ect", "--seeds", "2", "--run-id", "fan", "--executor", "submitit-local"]
    monkeypatch.setenv(KILL_ENV, "ect:1")  # that job SIGKILLs itself: a killed fan-out
    assert ectc_run(tiny, *fan) == 1
    folder = tiny / "runs" / "sycophancy" / "fan"
    first = json.loads((folder / "scale.json").read_text())[-1]
    assert len(first["submitted"]) == 4
    assert first["failed"] == [["ect", 1]] and first["unfinished"] == [["ect", 1]]
    assert sorted(map(tuple, first["finished"])) == [("baseline", 0), ("baseline", 1), ("ect", 0)]
    assert not (folder / "metrics.json").exists()

    monkeypatch.delenv(KILL_ENV)
    assert ectc_run(tiny, *fan) == 0
    second = json.loads((folder / "scale.json").read_text())[-1]
    assert second["submitted"] == [["ect", 1]]  # only the killed job ran again
    # A job's log (SLURM's, here submitit-local's) holds plain progress lines, not vanished bars.
    logs = "".join(p.read_text() for p in (folder / "submitit").rglob("*_log.out"))
    assert "[train ect seed1] step 12/12 loss " in logs
    assert len(second["skipped"]) == 3 and second["finished"] == [["ect", 1]] and second["unfinished"] == []
    metrics = json.loads((folder / "metrics.json").read_text())
    assert set(metrics["arms"]) == {"baseline", "ect"}
    for arm in ("baseline", "ect"):
        for seed in (0, 1):
            assert json.loads((arm_dir(tiny, "fan", arm, seed) / "stage.json").read_text())["seed"] == seed
    # A third submission finds everything done and submits nothing.
    assert ectc_run(tiny, *fan) == 0
    third = json.loads((folder / "scale.json").read_text())[-1]
    assert third["submitted"] == [] and len(third["skipped"]) == 4


def _module_patches(path: Path) -> list[str]:
    """Assignments (plain, augmented, annotated, del, setattr/delattr) to an attribute of a name
    the file imports: `rl.train_choice_rl = ...`, `setattr(run, name, ...)`."""
    import ast

    tree = ast.parse(path.read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            imported |= {(a.asname or a.name).split(".")[0] for a in node.names}

    def flat(target):
        if isinstance(target, (ast.Tuple, ast.List)):
            return [t for e in target.elts for t in flat(e)]
        return flat(target.value) if isinstance(target, ast.Starred) else [target]

    found = []
    for node in ast.walk(tree):
        targets = []
        if isinstance(node, (ast.Assign, ast.Delete)):
            targets = [t for target in node.targets for t in flat(target)]
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
            targets = [node.target]
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("setattr", "delattr"):
            targets = [ast.Attribute(value=node.args[0], attr="?")] if node.args else []
        for t in targets:
            if isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name) and t.value.id in imported:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} {ast.unparse(node).splitlines()[0]}")
    return found


def test_no_module_patches_another():
    """The multi-process worker passes its sharded forward, writer guard and process count in
    through run.Options; it used to swap rl's and run's functions at run time, which worked
    only while run.py imported rl inside a function. No module of ectc assigns another
    module's attribute."""
    assert _module_patches(ROOT / "ectc" / "runtime" / "distributed.py") == []
    assert [hit for path in sorted((ROOT / "ectc").rglob("*.py")) for hit in _module_patches(path)] == []


def test_sft_batch_is_global_over_processes():
    """trl's batch is per device: 2 processes halve the accumulation (or else the per-device
    batch), so the global batch stays the spec's; a batch that cannot divide is refused."""
    from ectc.runtime.run import per_process_batch

    args = {"per_device_train_batch_size": 8, "gradient_accumulation_steps": 4, "learning_rate": 1e-4}
    assert per_process_batch(args, 1) == args
    assert per_process_batch(args, 2) == {**args, "gradient_accumulation_steps": 2}
    assert per_process_batch({**args, "gradient_accumulation_steps": 1}, 2) == \
        {**args, "gradient_accumulation_steps": 1, "per_device_train_batch_size": 4}
    with pytest.raises(ValueError, match="does not divide over 3 processes"):
        per_process_batch(args, 3)


def test_writer_off_writes_nothing(tmp_path):
    """Ranks other than 0 get Writer(False): every stage write is skipped, and mark_done's
    output hash is None (the worker uses none of them)."""
    from ectc.plan.stages import Stage
    from ectc.runtime.run import Writer

    for enabled in (False, True):
        folder = tmp_path / str(enabled)
        folder.mkdir()
        w = Writer(enabled)
        w.text(folder / "spec.ect", "x")
        w.json(folder / "a.json", {"a": 1})
        w.jsonl(folder / "h.jsonl", [{"a": 1}])
        out = w.done(folder, Stage("data", "data", "k", {}, ".", ("a.json",)))
        written = sorted(p.name for p in folder.iterdir())
        if enabled:
            assert written == ["a.json", "h.jsonl", "spec.ect", "stage.json"] and isinstance(out, str)
        else:
            assert written == [] and out is None
