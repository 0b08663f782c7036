"""Compiler speed: cold-process `ectc check` / `ectc build --check` on the shipped specs, as a
ratio to `python -c "import torch"`, and the in-process compiler (parse -> generate) on a
500-line spec. Prints figures; asserts nothing.

    .venv/bin/python bench/compiler_speed.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable


def cold(cmd: list[str], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def spec_of_lines(n: int) -> str:
    """specs/sycophancy.ect grown to n lines with more data fields, metrics and arms."""
    base = (ROOT / "specs/sycophancy.ect").read_text()
    lines = base.splitlines()
    extra_fields, extra_metrics, extra_arms = [], [], []
    i = 0
    while len(lines) + len(extra_fields) + len(extra_metrics) + len(extra_arms) < n:
        extra_fields.append(f"    f{i}: int = if a > {i % 9} then a + b * {i} else b - {i}")
        extra_metrics.append(f"    metric m{i} = mean(response == \"Correct\") where a > {i % 9} and not claim_correct")
        extra_arms.append(f"    arm{i}: label true, filter a >= {i % 9}")
        i += 1
    text = base.replace("    claim_correct: bool = bernoulli(0.5)\n",
                        "    claim_correct: bool = bernoulli(0.5)\n" + "\n".join(extra_fields) + "\n")
    text = text.replace("    compare ect vs shuffled", "\n".join(extra_metrics) + "\n    compare ect vs shuffled")
    text = text.replace("    prompt_only: reuse baseline, infer deploy\n",
                        "    prompt_only: reuse baseline, infer deploy\n" + "\n".join(extra_arms) + "\n")
    return text


def in_process(text: str, repeat: int) -> tuple[float, dict[str, float]]:
    from ectc.check import check
    from ectc.generate import generate
    from ectc.lower import lower
    from ectc.parse import parse

    spec = lower(parse(text))  # warm caches (grammar tables, templates)
    generate(spec, text, "bench.ect")
    parts: dict[str, list[float]] = {"parse": [], "lower": [], "check": [], "generate": []}
    totals = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        tree = parse(text)
        t1 = time.perf_counter()
        spec = lower(tree)
        t2 = time.perf_counter()
        diags = check(spec)
        t3 = time.perf_counter()
        generate(spec, text, "bench.ect")
        t4 = time.perf_counter()
        assert not [d for d in diags if d.severity == "error"], diags[:3]
        parts["parse"].append(t1 - t0)
        parts["lower"].append(t2 - t1)
        parts["check"].append(t3 - t2)
        parts["generate"].append(t4 - t3)
        totals.append(t4 - t0)
    return statistics.median(totals), {k: statistics.median(v) for k, v in parts.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    specs = ["specs/sycophancy.ect", "specs/bias.ect"]
    torch_s = cold([PY, "-c", "import torch"], args.repeat)
    python_s = cold([PY, "-c", "pass"], args.repeat)
    print(f"python -c pass            {python_s * 1000:7.0f} ms")
    print(f"python -c 'import torch'  {torch_s * 1000:7.0f} ms")
    for spec in specs:
        for name, cmd in (("check", [PY, "-m", "ectc", "check", spec]),
                          ("build --check", [PY, "-m", "ectc", "build", "--check", spec])):
            s = cold(cmd, args.repeat)
            print(f"ectc {name:<13} {spec:<22} {s * 1000:7.0f} ms  ({s / torch_s:.2f}x import torch)")
    text = spec_of_lines(500)
    total, parts = in_process(text, args.repeat)
    print(f"compiler on a {len(text.splitlines())}-line spec: {total * 1000:.1f} ms "
          + "(" + ", ".join(f"{k} {v * 1000:.1f}" for k, v in parts.items()) + ")")


if __name__ == "__main__":
    main()
