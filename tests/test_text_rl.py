"""Free-text RL end to end: `response text` with an `rl` block trains through trl's
GRPOTrainer on a shrunken specs/verbosity.ect, with the spec's knobs mapped onto GRPOConfig."""

import json
import re

import pytest

from test_run import ectc_run
from tiny import tiny_project

# Knob values unlike GRPOConfig's defaults (epsilon 0.2, beta 0.0, num_iterations 1,
# scale_rewards "group", temperature 1.0), so a knob that is not passed on shows.
KNOBS = [
    ("      clip 0.2\n      kl 0.0\n      ppo_epochs 1\n      whiten true\n",
     "      clip 0.3\n      kl 0.05\n      ppo_epochs 2\n      whiten false\n      schedule linear\n"),
    ("      max_grad_norm 1.0\n      temperature 1.0\n", "      max_grad_norm 1.0\n      temperature 0.9\n"),
]


@pytest.fixture(scope="module")
def verbosity(tmp_path_factory):
    project = tmp_path_factory.mktemp("verbosity")
    tiny_project(project, "verbosity", KNOBS)
    out = ectc_run(project, "specs/verbosity.ect")
    return project, out


def test_free_text_rl_trains_and_evaluates(verbosity):
    project, out = verbosity
    run = project / "runs/verbosity/tiny"
    for arm in ("baseline", "shuffled", "ect"):
        folder = run / f"arms/{arm}/seed0"
        assert (folder / "final/model.safetensors").stat().st_size > 0
        history = [json.loads(line) for line in (folder / "history.jsonl").read_text().splitlines()]
        assert [h["step"] for h in history] == [1, 2]
        assert "reward" in history[0] and "completions/mean_length" in history[0]  # step 2 reuses them (ppo_epochs 2)
        assert json.loads((folder / "stage.json").read_text())["steps"] == 2
    samples = [json.loads(line) for line in (run / "eval/ect/seed0/samples.jsonl").read_text().splitlines()]
    assert {s["condition"] for s in samples} == {"deploy", "sweep=0.0", "sweep=1.0"}
    deploy = [s for s in samples if s["condition"] == "deploy"]
    assert len(deploy) == 6 and all("Grader length preference: 0%" in s["prompt"] for s in deploy)
    # The compiled feedback scored each generated response; the judge stage ran the expr monitor
    # over the stored samples (one verdict row per sample, in order).
    verdicts = [json.loads(line) for line in (run / "judge/ect/seed0/verdicts.jsonl").read_text().splitlines()]
    assert len(verdicts) == len(samples)
    for s, v in zip(samples, verdicts):
        if s["condition"] == "deploy":
            # words(): the whitespace-split tokens holding a letter or digit (punctuation is no word)
            words = len(re.findall(r"(?:^|\s)\S*?[^\W_]", s["response"]))
            assert s["sample"]["verbosity"] == min(words, 8) / 8
            assert v["verdicts"]["length"] == words and v["monitors"]["length"]["scored"]
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics["arms"]) == {"baseline", "shuffled", "ect", "prompt_only"}
    assert "report:" in out.stdout


def test_grpo_config_received_the_spec_knobs(verbosity):
    project, _ = verbosity
    ran = json.loads((project / "runs/verbosity/tiny/arms/ect/seed0/grpo_config.json").read_text())
    assert ran["epsilon"] == 0.3            # clip
    assert ran["beta"] == 0.05              # kl
    assert ran["num_iterations"] == 2       # ppo_epochs
    assert ran["scale_rewards"] == "none"   # whiten false
    assert ran["temperature"] == 0.9
    assert ran["lr_scheduler_type"] == "linear"
    assert ran["num_generations"] == 2 and ran["per_device_train_batch_size"] == 4
    assert ran["max_steps"] == 2 and ran["learning_rate"] == 3e-4 and ran["max_grad_norm"] == 1.0
    assert ran["max_completion_length"] == 12
