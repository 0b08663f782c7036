"""How fast `ectc diff` answers on two ~500-line specs, cold (a fresh process each time).

    .venv/bin/python bench/diff_speed.py [--runs 5]

Builds two 500-line specs from specs/sycophancy.ect (extra data fields and metrics) that differ
in a few items, then times `ectc diff` in fresh processes (wall and CPU: on a loaded machine the
CPU time is the figure to trust) and breaks one in-process diff down by phase.

ectc's modules are byte-compiled first (`compileall`), as `pip install` does: where
PYTHONDONTWRITEBYTECODE is set (this sandbox sets it) an editable checkout otherwise compiles
every module from source on every start, ~0.07 s that no installed ectc pays.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def big_spec(lines: int = 500) -> str:
    text = (ROOT / "specs" / "sycophancy.ect").read_text()
    have = len(text.splitlines())
    n = max(0, (lines - have - 4) // 2)
    fields = "".join(f"    extra{i}: int = randint(0, {i % 9 + 1})\n" for i in range(n))
    block = "  data extras {\n    split { train 100 }\n" + fields + "  }\n\n"
    metrics = "".join(f"    metric m{i} = mean(response == \"Correct\") where a > {i % 9}\n" for i in range(lines))
    text = text.replace("  prompt \"{{ label }}", block + "  prompt \"{{ label }}", 1)
    text = text.replace("    compare ect", metrics[: sum(len(m) for m in metrics.splitlines(True)[:n])] + "    compare ect", 1)
    return text


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    old = big_spec()
    new = old.replace("step 0.1", "step 0.05").replace("      lr 1e-3\n", "      lr 5e-4\n")
    new = new.replace("metric m7 = mean(response == \"Correct\") where a > 7", "metric m7 = mean(response == \"Correct\") where a > 6")
    tmp = Path(tempfile.mkdtemp())
    (tmp / "old.ect").write_text(old)
    (tmp / "new.ect").write_text(new)
    print(f"specs: {len(old.splitlines())} and {len(new.splitlines())} lines, in {tmp}")
    exe = str(ROOT / ".venv" / "bin" / "ectc")
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "ectc")], check=True)
    walls, cpus = [], []
    for _ in range(args.runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        proc = subprocess.run([exe, "diff", str(tmp / "old.ect"), str(tmp / "new.ect")], capture_output=True, text=True)
        walls.append(time.perf_counter() - t0)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
        assert proc.returncode == 2, proc.stderr
    print(proc.stdout)
    print(f"cold `ectc diff`: wall min {min(walls):.3f}s median {sorted(walls)[len(walls) // 2]:.3f}s; "
          f"CPU min {min(cpus):.3f}s median {sorted(cpus)[len(cpus) // 2]:.3f}s (load average {os.getloadavg()[0]:.1f})")
    for what, cmd in (("python -c pass", [sys.executable, "-c", "pass"]),
                      ("import ectc.cli + ectc.diff", [sys.executable, "-c", "import ectc.cli, ectc.diff"]),
                      ("import + compile (parse/lower/check)", [sys.executable, "-c", "import ectc.compile"]),
                      ("import + generate", [sys.executable, "-c", "import ectc.compile, ectc.generate, ectc.plan.stages"])):
        best = 1e9
        for _ in range(3):
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            subprocess.run(cmd, check=True)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            best = min(best, after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
        print(f"  CPU {best:.3f}s  {what}")
    # One in-process diff, by phase (imports already paid).
    from ectc import diff as d

    t0 = time.process_time()
    d._lower(old, "old")
    d._lower(new, "new")
    t1 = time.process_time()
    d.diff_sources(old, new, consequences=False)
    t2 = time.process_time()
    d.diff_sources(old, new)
    t3 = time.process_time()
    print(f"  in process: parse+lower+check both {t1 - t0:.3f}s; diff without consequences {t2 - t1:.3f}s; "
          f"with consequences (generate + stage keys, one hybrid per change) {t3 - t2:.3f}s")


if __name__ == "__main__":
    main()
