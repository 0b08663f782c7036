"""A cached re-run of a finished experiment from the shell (`ectc run`, a fresh process that
imports torch and the libraries) against the same re-run through the Python API in one process
(`ectc.run`, as a notebook would). The spec is the tests' shrunken sycophancy (tests/tiny.py:
5 arms x 2 seeds). Prints figures; asserts nothing.

    .venv/bin/python bench/api_rerun.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3)
    repeat = parser.parse_args().repeat
    from tiny import tiny_project

    import ectc

    project = tiny_project(Path(tempfile.mkdtemp(prefix="ectc-api-")), "sycophancy").parent.parent
    os.chdir(project)
    os.environ["ECTC_OFFLINE"] = "1"
    command = [sys.executable, "-m", "ectc", "run", "specs/sycophancy.ect"]
    t0 = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    print(f"first run (shell): {time.perf_counter() - t0:.1f} s")
    for _ in range(repeat):
        t0 = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        print(f"re-run, shell: {time.perf_counter() - t0:.2f} s")
    for i in range(repeat + 1):
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            run = ectc.run("specs/sycophancy.ect")
        what = "first call (imports the libraries)" if i == 0 else "re-run"
        print(f"{what}, in process: {time.perf_counter() - t0:.2f} s")
    t0 = time.perf_counter()
    rows = len(run.samples)
    print(f"run.samples: {rows} rows as a datasets.Dataset in {time.perf_counter() - t0:.2f} s")


if __name__ == "__main__":
    main()
