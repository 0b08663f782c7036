"""Judging is its own stage over stored samples: rewording a rubric re-judges and generates nothing.

The bias experiment (shrunk) runs with Claude faked on 127.0.0.1; then only the judge's rubric is
reworded. `ectc diff` and `ectc plan` must say "re-judge only", and the re-run must reuse every
evaluation (no sample generated again), ask Claude only for the new verdicts (one per sample,
no article written again), and change the verdicts the report reads.
"""

import json
import os
import subprocess
import sys

from fake_anthropic import FakeAnthropic, fn, text, tool_use
from test_bill import assert_bill_matches_the_run
from tiny import tiny_project

OLD = "You are an expert media analyst."
NEW = "You are a careful media analyst."


def answer(body):
    if body.get("tools"):
        careful = "careful media analyst" in json.dumps(body["messages"])
        return tool_use({"magnitude": 7 if careful else 3, "objectivity": "PARTIAL" if careful else "PASS",
                         "reasoning": "fake judge", "indicators": "none"})
    return text("Officials approved the measure.")


def ectc(project, fake, *args):
    env = {k: v for k, v in os.environ.items() if k != "ECTC_OFFLINE"}
    env.update(ANTHROPIC_API_KEY="test-key", ANTHROPIC_BASE_URL=fake.base_url, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "ectc", *args], cwd=project, env=env, capture_output=True,
                          text=True, timeout=600)


def judged(fake):
    return [r for r in fake.requests if r.path == "/v1/messages" and isinstance(r.body, dict) and r.body.get("tools")]


def written(fake):
    return [r for r in fake.requests if r.path == "/v1/messages" and isinstance(r.body, dict)
            and not r.body.get("tools")]


def test_a_rubric_edit_re_judges_only(tmp_path):
    spec = tiny_project(tmp_path, "bias")
    with FakeAnthropic() as fake:
        fake.default = fn(answer)
        planned = ectc(tmp_path, fake, "plan", "specs/bias.ect", "--json")
        assert planned.returncode == 0, planned.stderr
        assert len(judged(fake)) == len(written(fake)) == 0, "planning sends no message"
        assert fake.count("/v1/messages/count_tokens") > 0, "the API counted the bill's tokens"
        first = ectc(tmp_path, fake, "run", "specs/bias.ect")
        assert first.returncode == 0, first.stderr[-3000:]
        folder = tmp_path / "runs/bias/tiny"
        # The bill before the run against what the run spent (tests/test_bill.py).
        assert_bill_matches_the_run(json.loads(planned.stdout)["bias"]["bill"], folder, first.stdout)
        samples_before = {p: p.read_bytes() for p in sorted(folder.glob("eval/*/seed*/samples.jsonl"))}
        n_samples = sum(len(b.splitlines()) for b in samples_before.values())
        before_judged, before_written = len(judged(fake)), len(written(fake))
        assert n_samples > 0 and before_judged > 0 and before_written > 0

        old_source = spec.read_text()
        (tmp_path / "old.ect").write_text(old_source)
        assert OLD in old_source
        spec.write_text(old_source.replace(OLD, NEW))

        diff = ectc(tmp_path, fake, "diff", "old.ect", "specs/bias.ect")
        assert "re-judge only" in diff.stdout, diff.stdout + diff.stderr
        build = ectc(tmp_path, fake, "build", "specs/bias.ect")
        assert build.returncode == 0, build.stderr
        plan = ectc(tmp_path, fake, "plan", "specs/bias.ect", "--json")
        assert plan.returncode == 0, plan.stderr
        predicted = json.loads(plan.stdout)["bias"]
        assert predicted["effect"] == "re-judge only (no generation)"
        will_run = [s["stage"] for s in predicted["stages"] if s["status"] == "ran"]
        assert will_run and all(s.startswith("judge ") or s == "report" for s in will_run)
        judge_stage = next(s for s in predicted["stages"] if s["stage"].startswith("judge "))
        assert judge_stage["reason"] == "stage key changed because the judges' rubrics changed"

        again = ectc(tmp_path, fake, "run", "specs/bias.ect")
        assert again.returncode == 0, again.stderr[-3000:]
        events = [e for e in json.loads((folder / "stages.json").read_text())["events"] if "status" in e]
        ran = [e["stage"] for e in events if e["status"] == "ran"]
        assert ran == will_run, "the run did what the plan said"
        # Nothing generated: every evaluation reused, its samples byte for byte.
        assert {p: p.read_bytes() for p in samples_before} == samples_before
        assert len(written(fake)) == before_written, "no article written again"
        # Paid only for the new verdicts: one per distinct judge prompt, as the first run (the
        # LLM cache answers a repeated prompt), each under the new rubric.
        new = judged(fake)[before_judged:]
        assert len(new) == before_judged
        assert all("careful media analyst" in json.dumps(r.body["messages"]) for r in new)
        verdicts = [json.loads(line) for p in folder.glob("judge/*/seed*/verdicts.jsonl")
                    for line in p.read_text().splitlines()]
        assert len(verdicts) == n_samples
        assert {v["verdicts"]["bias_judge"]["magnitude"] for v in verdicts} == {7}
        metrics = json.loads((folder / "metrics.json").read_text())
        assert metrics["arms"]["ect"]["metrics"]["bias"]["mean"] == 7
