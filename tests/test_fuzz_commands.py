"""Hostile and careless specs through every command (check, fmt, explain, build, diff, and the
generated code's import), in one subprocess under a 3 GB memory limit and 10 s per command:
0 tracebacks, 0 hangs. Inputs: hostile numbers, unicode and invalid bytes, deep nesting, big
inputs, placed at every kind of position of the shipped specs and the minimal fixture.

The default is a fixed set that runs in about a minute; `ECTC_FUZZ_CASES=2000 pytest
tests/test_fuzz_commands.py` adds that many random placements (seeded by ECTC_FUZZ_SEED).
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BASE = (ROOT / "tests/fixtures/diagnostics/base.ect").read_text()

NUMBERS = ["9" * 400, "1e400", "1e-400", "1e-320", "0.000000001", "-0", "00000000000000000000001",
           "1e308", "18446744073709551616", "0", "-1", "99999999", "1.5e-10"]
UNICODE = ["\u202e", "\u200b", "\u2028", "\u0000", "\ud7ff", "é", "日本", "\U0001f600", "\r", "\r\n", "\t"]
TEXTS = ["[/bold]", "[red]", "{{ 9 ** 999999999 }}", "{{ '%999999999d' | format(1) }}", "{{ 1 / 0 }}",
         "{{ cycler(1) }}", "{{ ''.__class__ }}", "{% for x in y %}", "#}{{ x }}{#", '\\"', "\\\\",
         "{{ " + "(" * 70 + "a" + ")" * 70 + " }}", "x" * 200_000]

# Where a hostile piece goes: (anchor in BASE, how the anchor is rewritten with the piece).
NUMBER_SLOTS = ["steps 10", "batch 8", "train 64", "randint(0, 9)", "uniform(0.5, 1.0)", "deploy  0.0",
                "then 1.0 else s"]
TEXT_SLOTS = ['label "Level:', 'prompt "{{ label }} Is', '"Yes", "No"]']


def _number_case(slot: str, value: str) -> str:
    head, tail = slot.rsplit(" ", 1) if " " in slot else (slot, "")
    rewritten = {"randint(0, 9)": f"randint(0, {value})", "uniform(0.5, 1.0)": f"uniform(0.5, {value})",
                 "then 1.0 else s": f"then {value} else s"}.get(slot, f"{head} {value}")
    return BASE.replace(slot, rewritten, 1)


def _text_case(slot: str, piece: str) -> str:
    return BASE.replace(slot, slot[:-1] + piece + slot[-1] if slot.endswith('"') else slot + piece, 1) \
        if not slot.endswith("]") else BASE.replace(slot, f'"{piece}", "No"]', 1)


def fixed_cases() -> list[tuple[str, bytes]]:
    cases: list[tuple[str, bytes]] = []
    for slot in NUMBER_SLOTS:
        for value in NUMBERS:
            cases.append((f"number {value[:12]} at {slot}", _number_case(slot, value).encode()))
    for slot in TEXT_SLOTS:
        for piece in TEXTS + UNICODE:
            cases.append((f"text {piece[:12]!r} at {slot}", _text_case(slot, piece).encode("utf-8", "surrogatepass")))
    chains = {"and": " and ok", "sum": " + s", "parens": None}
    for n in (100, 119, 121, 400, 3000):
        cases.append((f"{n}-term and", BASE.replace("== ok\n", "== ok" + chains["and"] * n + "\n", 1).encode()))
        cases.append((f"{n}-term sum", BASE.replace("else s\n", "else s" + chains["sum"] * n + "\n", 1).encode()))
        cases.append((f"{n} parens", BASE.replace("else s\n", "else " + "(" * n + "s" + ")" * n + "\n", 1).encode()))
        cases.append((f"{n} nested blocks", BASE.replace("rl { steps 10 batch 8 }", "rl { steps 10 batch 8 } "
                                                           + "x { " * n + "y 1" + " }" * n, 1).encode()))
    fields = "".join(f"    f{i}: int = randint(0, 9)\n" for i in range(3000))
    cases.append(("3000 fields", BASE.replace("    a: int = randint(0, 9)\n", fields, 1).encode()))
    cases.append(("invalid utf-8", BASE.encode()[:40] + b"\xff\xfe" + BASE.encode()[40:]))
    cases.append(("utf-16", BASE.encode("utf-16")))
    cases.append(("empty", b""))
    cases.append(("nul bytes", b"\x00" * 1000))
    cases.append(("2 MB string", BASE.replace('label "Level:', 'label "' + "x" * 2_000_000 + "Level:", 1).encode()))
    for spec in sorted((ROOT / "specs").glob("*.ect")):
        cases.append((f"shipped {spec.name}", spec.read_bytes()))
    return cases


def random_cases(n: int, seed: int) -> list[tuple[str, bytes]]:
    rng = random.Random(seed)
    texts = [BASE] + [p.read_text() for p in sorted((ROOT / "specs").glob("*.ect"))]
    pieces = NUMBERS + UNICODE + TEXTS[:-1] + ["{", "}", "(", ")", "[", "]", '"', "\n", "#", "and", "+", "-"]
    cases = []
    for i in range(n):
        text = rng.choice(texts)
        for _ in range(rng.randint(1, 4)):
            at = rng.randrange(len(text) + 1)
            cut = rng.choice([0, 0, 1, rng.randint(1, 20)])
            text = text[:at] + rng.choice(pieces) + text[at + cut:]
        cases.append((f"random {seed}/{i}", text.encode("utf-8", "surrogatepass")))
    return cases


def run_driver(cases: list[tuple[str, bytes]], tmp_path: Path) -> list[dict]:
    (tmp_path / "base.ect").write_text(BASE)
    lines = "".join(json.dumps({"name": n, "text": b.decode("latin-1")}) + "\n" for n, b in cases)
    (tmp_path / "cases.jsonl").write_text(lines)
    proc = subprocess.run([sys.executable, str(ROOT / "tests/fuzz/driver.py"), str(tmp_path / "cases.jsonl"),
                           str(tmp_path)], capture_output=True, text=True, timeout=3000, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [json.loads(line) for line in proc.stdout.splitlines()]


def findings(results: list[dict]) -> list[str]:
    return [f"{r['name']}: {command} {status}: {detail}" for r in results
            for command, (status, detail) in r["results"].items() if status != "ok"]


def test_every_command_survives_hostile_specs(tmp_path):
    cases = fixed_cases()
    n = int(os.environ.get("ECTC_FUZZ_CASES", "0"))
    if n:
        cases += random_cases(n, int(os.environ.get("ECTC_FUZZ_SEED", "0")))
    results = run_driver(cases, tmp_path)
    assert len(results) == len(cases)
    bad = findings(results)
    commands = sum(len(r["results"]) for r in results)
    print(f"\nfuzz: {len(cases)} cases, {commands} commands, "
          f"{sum('traceback' in f for f in bad)} tracebacks, {sum(' hang:' in f for f in bad)} hangs")
    assert not bad, "\n".join(bad[:20])
