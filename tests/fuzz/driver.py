"""Runs every command on hostile specs inside one process under a memory limit, with a time
limit per command, and prints one JSON line per case: which command raised a traceback, which
hung. `tests/test_fuzz_commands.py` drives it; `ECTC_FUZZ_CASES=N` makes the long run.

Usage: python driver.py CASES.jsonl WORKDIR  (each case: {"name": ..., "text": latin-1 str of the bytes})
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import resource
import signal
import sys
import traceback
from pathlib import Path

MEMORY_LIMIT = 3 * 1024**3
SECONDS = 10


class Hang(Exception):
    pass


def _alarm(signum, frame):
    raise Hang()


def run_command(argv: list[str]) -> tuple[str, str]:
    """("ok" | "traceback" | "hang", detail)."""
    from ectc.cli import main

    signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(SECONDS)
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(argv)
        if code not in (0, 1, 2):
            return "traceback", f"exit code {code}"
        return "ok", ""
    except Hang:
        return "hang", " ".join(argv)
    except SystemExit as exc:  # argparse
        return ("ok", "") if exc.code in (0, 1, 2) else ("traceback", f"SystemExit {exc.code}")
    except BaseException:  # noqa: BLE001: any escape is the finding
        return "traceback", traceback.format_exc(limit=-3)
    finally:
        signal.alarm(0)


def import_generated(folder: Path) -> tuple[str, str]:
    """Generated code that check and build passed must import."""
    signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(SECONDS)
    try:
        for path in sorted(folder.rglob("*.py")):
            spec = importlib.util.spec_from_file_location(f"fuzzgen_{abs(hash(path))}", path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
        return "ok", ""
    except Hang:
        return "hang", "import generated code"
    except BaseException:  # noqa: BLE001
        return "traceback", "generated code: " + traceback.format_exc(limit=-2)
    finally:
        signal.alarm(0)


def main() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    sys.setrecursionlimit(1000)
    cases_file, work = Path(sys.argv[1]), Path(sys.argv[2])
    base = work / "base.ect"
    for line in cases_file.read_text().splitlines():
        case = json.loads(line)
        folder = work / "case"
        for p in sorted(folder.rglob("*"), reverse=True) if folder.exists() else []:
            p.unlink() if p.is_file() or p.is_symlink() else p.rmdir()
        (folder / "specs").mkdir(parents=True, exist_ok=True)
        spec = folder / "specs" / "case.ect"
        spec.write_bytes(case["text"].encode("latin-1"))
        results = {}
        commands = {
            "check": ["check", str(spec)],
            "fmt": ["fmt", "--check", str(spec)],
            "explain": ["explain", str(spec)],
            "build": ["build", "--out", str(folder / "generated"), str(spec)],
            "diff": ["diff", str(base), str(spec)],
        }
        for name, argv in commands.items():
            results[name] = run_command(argv)
        if results["build"][0] == "ok" and (folder / "generated").exists():
            results["generated"] = import_generated(folder / "generated")
        print(json.dumps({"name": case["name"], "results": results}), flush=True)


if __name__ == "__main__":
    main()
