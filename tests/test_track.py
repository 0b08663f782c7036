"""Experiment tracking: `track { ... }` never invalidates a stage, the trackio writer's series
read back from its own store, trl's reporting arguments, and the plain progress lines."""

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ectc.cli import main

ROOT = Path(__file__).parent.parent


def test_tracking_and_checkpoint_settings_retrain_nothing(tmp_path, capsys):
    """Where statistics go and how often an arm checkpoints decide no stage's output."""
    old = (ROOT / "specs/sycophancy.ect").read_text()
    new = old.replace("    seeds 7\n", '    seeds 7\n    checkpoint_every 25\n'
                                        '    track { report_to "wandb" project "syco" log_every 10 }\n', 1)
    assert new != old
    (tmp_path / "a.ect").write_text(old)
    (tmp_path / "b.ect").write_text(new)
    assert main(["diff", str(tmp_path / "a.ect"), str(tmp_path / "b.ect")]) == 2
    out = capsys.readouterr().out
    assert "+ sycophancy.profile.tiny.track" in out and "+ sycophancy.profile.tiny.checkpoint_every = 25" in out
    assert out.count("=> no effect on runs") == 2 and "Overall: no effect on runs" in out


def test_progress_lines_every_n_steps():
    from ectc.runtime.track import StepLog

    lines: list[str] = []
    log = StepLog("train ect seed0", 10, log_every=4, say=lines.append)
    for done in range(1, 11):
        log(done, {"pg_loss": 0.5 / done, "reward_mean": done / 10, "kl": 0.0, "lr": 1e-4})
    assert [line.split()[4] for line in lines] == ["4/10", "8/10", "10/10"]  # and always the last step
    assert re.fullmatch(r"\[train ect seed0\] step 4/10 loss 0\.125 reward 0\.4 kl 0 [\d.e+]+ steps/s", lines[0])
    quiet = StepLog("warm-up", 10, say=None)  # a terminal: the rich bar, no lines
    quiet(10, {"loss": 1.0})


def test_trackio_series_read_back_from_its_store(tmp_path):
    """Offline trackio (its local SQLite store under TRACKIO_DIR, read when trackio is imported:
    hence a fresh process)."""
    pytest.importorskip("trackio")
    script = textwrap.dedent("""
        from pathlib import Path
        from ectc.plan.model import Track
        from ectc.runtime.track import StepLog, Tracker

        track = Track(report_to="trackio", project="ectc-test")
        tracker = Tracker(track, "mini/tiny/train ect seed 0", "mini/tiny", Path("unused"), config={"lr": 1e-4})
        assert tracker.trainer_args() == {"report_to": ["trackio"], "run_name": "mini/tiny/train ect seed 0",
                                          "project": "ectc-test"}
        log = StepLog("train ect seed0", 3, tracker=tracker)
        for done in (1, 2, 3):
            log(done, {"step": done - 1, "reward_mean": done / 4, "pg_loss": -done, "frac_Yes": 0.5})
        log.close()

        from trackio.sqlite_storage import SQLiteStorage
        logs = SQLiteStorage.get_logs("ectc-test", "mini/tiny/train ect seed 0")
        print("LOGGED", [(r["step"], r["reward_mean"], r["pg_loss"]) for r in logs])
    """)
    env = {**os.environ, "TRACKIO_DIR": str(tmp_path / "trackio"), "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120,
                         check=True).stdout
    logged = [line for line in out.splitlines() if line.startswith("LOGGED ")]
    assert logged == ["LOGGED [(1, 0.25, -1.0), (2, 0.5, -2.0), (3, 0.75, -3.0)]"]
    assert (tmp_path / "trackio/ectc-test.db").exists()


def test_grpo_reports_to_trackio_through_trl(tmp_path):
    """trl's own TrackioCallback, configured from the tracker (report_to, project, run_name)."""
    pytest.importorskip("trackio")
    pytest.importorskip("trl")
    script = textwrap.dedent("""
        from pathlib import Path
        import torch
        from ectc.plan.model import Track
        from ectc.runtime.models import build_tiny_llama, build_word_tokenizer
        from ectc.runtime.rl import train_text_grpo
        from ectc.runtime.track import Tracker
        from ectc.schema import trainer_kwargs

        torch.set_num_threads(1)
        tok = build_word_tokenizer(["x is 0 Say Yes or No"], extra_tokens=["Yes", "No"])
        model = build_tiny_llama(tok, layers=1, width=32, heads=2)
        rl = {"steps": 3, "batch": 4, "grad_accum": 1, "lr": 1e-4, "schedule": "constant", "warmup_steps": 0,
              "clip": 0.2, "kl": 0.0, "ppo_epochs": 1, "whiten": False, "max_grad_norm": 1.0, "temperature": 1.0,
              "entropy": 0.0, "num_generations": 2, "optimizer": "adamw"}
        args = {**trainer_kwargs("grpo", rl), "max_completion_length": 4}
        tracker = Tracker(Track(report_to="trackio", project="grpo"), "mini/tiny/train ect seed 0", "mini/tiny",
                          Path("unused"), for_trainer=True)
        _, used = train_text_grpo(model, tok, [f"x is {x} Say Yes or No" for x in range(4)],
                                  lambda rows, texts: [float("Yes" in t) for t in texts], args, "out",
                                  run_args=tracker.trainer_args(), callbacks=tracker.trainer_callbacks())
        tracker.close()
        from trackio.sqlite_storage import SQLiteStorage
        logs = SQLiteStorage.get_logs("grpo", "mini/tiny/train ect seed 0")
        print("LOGGED", used.report_to, [r["step"] for r in logs if "train/loss" in r])
    """)
    env = {**os.environ, "TRACKIO_DIR": str(tmp_path / "trackio"), "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", script], env=env, cwd=tmp_path, capture_output=True, text=True,
                         timeout=300, check=True).stdout
    assert [line for line in out.splitlines() if line.startswith("LOGGED ")] == ["LOGGED ['trackio'] [1, 2, 3]"]
