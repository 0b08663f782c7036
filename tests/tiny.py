"""Shrunken copies of the shipped specs for end-to-end tests: same structure, fewer rows, steps
and label conditions, so a whole run takes seconds."""

from __future__ import annotations

import shutil
from pathlib import Path

from ectc.build import build

ROOT = Path(__file__).parent.parent

SHRINK = {
    "sycophancy": [
        ("split { train 2560 test 500 }", "split { train 256 test 48 }"),
        ("split { train 20000 }", "split { train 400 }"),
        ("sweep suggestibility from 0.0 to 1.5 step 0.1", "sweep suggestibility from 0.0 to 1.5 step 0.75"),
        ("split { train 5000 }", "split { train 200 }"),
        ("model tiny { layers 2 width 96 heads 4 numbers whole }", "model tiny { layers 1 width 32 heads 2 numbers whole }"),
        ("      steps 5000\n", "      steps 20\n"),
        ("      steps 400\n", "      steps 4\n"),
        ("      batch 128\n      minibatch 128\n", "      batch 16\n      minibatch 16\n"),
        ("    seeds 7\n", "    seeds 2\n"),
    ],
    "bias": [
        ("    size 1200\n", "    size 160\n"),
        ("model tiny { layers 2 width 128 heads 4 }", "model tiny { layers 1 width 32 heads 2 }"),
        ("      epochs 3\n", "      max_steps 3\n"),
        ("generate { temperature 0.7 max_new_tokens 90 seed 42 }", "generate { temperature 0.7 max_new_tokens 12 seed 42 }"),
        ("    samples 200\n", "    samples 6\n"),
        ("sweep perspective over [strong_left, center_left, center_right, strong_right, unbiased]",
         "sweep perspective over [strong_left, unbiased]"),
        ("    seeds 2\n", "    seeds 1\n"),
    ],
    "verbosity": [
        ("split { train 2000 test 200 }", "split { train 48 test 6 }"),
        ("split { train 4000 }", "split { train 50 }"),
        ("model tiny { layers 2 width 64 heads 4 numbers whole }", "model tiny { layers 1 width 32 heads 2 numbers whole }"),
        ("      steps 1500\n", "      steps 10\n"),
        ("      steps 300\n", "      steps 2\n"),
        ("      batch 16\n      num_generations 4\n", "      batch 4\n      num_generations 2\n"),
        ("    seeds 3\n    unlabeled", "    seeds 1\n    unlabeled"),
        ("sweep length_bonus from 0.0 to 1.0 step 0.25", "sweep length_bonus from 0.0 to 1.0 step 1.0"),
    ],
}


def tiny_project(tmp: Path, name: str, extra: list[tuple[str, str]] = ()) -> Path:
    """A project folder with specs/<name>.ect shrunk and generated/ built; returns the spec path."""
    (tmp / "specs").mkdir(parents=True, exist_ok=True)
    if (ROOT / "specs/lexicons").exists() and not (tmp / "specs/lexicons").exists():
        shutil.copytree(ROOT / "specs/lexicons", tmp / "specs/lexicons")
    text = (ROOT / "specs" / f"{name}.ect").read_text()
    for old, new in list(SHRINK[name]) + list(extra):
        assert old in text, f"shrinking {name}: {old!r} not in the spec"
        text = text.replace(old, new)
    spec = tmp / "specs" / f"{name}.ect"
    spec.write_text(text)
    build(tmp, [str(spec)], tmp / "generated", check_only=False)
    return spec
