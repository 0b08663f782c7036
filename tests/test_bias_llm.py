"""The bias experiment with an API key: Claude (a local fake of the Messages API on 127.0.0.1)
writes the articles and judges them; a run killed mid-judging resumes without paying twice."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path


from fake_anthropic import FakeAnthropic, delay, fn, text, tool_use
from tiny import tiny_project


def verdict(body):
    # A deterministic verdict that depends on the article, so arms can differ.
    article = json.dumps(body["messages"])
    magnitude = 2 + len(article) % 7
    return tool_use({"magnitude": magnitude, "objectivity": "PASS" if magnitude < 4 else "PARTIAL",
                     "reasoning": "fake judge", "indicators": "none"})


def answer(body, latency=0.0):
    if body.get("tools"):
        return delay(latency, verdict(body)) if latency else verdict(body)
    topic = body["messages"][-1]["content"]
    topic = topic if isinstance(topic, str) else topic[0]["text"]
    return text("Officials approved the measure. " + topic.split("Topic:")[-1].split("\n")[0].strip() + ".")


def judge_prompts(fake):
    return [json.dumps(r.body["messages"]) for r in fake.requests
            if r.path == "/v1/messages" and isinstance(r.body, dict) and r.body.get("tools")]


def run(project: Path, fake: FakeAnthropic, *extra: str, wait=True):
    env = {k: v for k, v in os.environ.items() if k != "ECTC_OFFLINE"}
    env.update(ANTHROPIC_API_KEY="test-key", ANTHROPIC_BASE_URL=fake.base_url, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "ectc", "run", "specs/bias.ect", *extra]
    if not wait:
        return subprocess.Popen(cmd, cwd=project, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return subprocess.run(cmd, cwd=project, env=env, capture_output=True, text=True, timeout=600)


def test_claude_writes_and_judges(tmp_path):
    tiny_project(tmp_path, "bias")
    with FakeAnthropic() as fake:
        fake.default = fn(answer)
        out = run(tmp_path, fake)
        assert out.returncode == 0, out.stderr[-3000:]
        folder = tmp_path / "runs/bias/tiny"
        assert json.loads((folder / "data/stage.json").read_text())["llm"] == "anthropic"
        rows = [json.loads(l) for l in (folder / "data/articles.train.jsonl").read_text().splitlines()]
        assert all(r["article"].startswith("Officials approved the measure.") for r in rows)
        metrics = json.loads((folder / "metrics.json").read_text())
        bias = metrics["arms"]["ect"]["metrics"]["bias"]
        assert 2 <= bias["mean"] <= 8 and bias["n_items"] == 6
        fields = {g["field"] for g in metrics["agreement"] if {g["a"], g["b"]} == {"bias_judge", "loaded_language"}}
        assert fields == {"magnitude", "objectivity"}
        samples = [json.loads(l) for l in (folder / "eval/ect/seed0/samples.jsonl").read_text().splitlines()]
        verdicts = [json.loads(l) for l in (folder / "judge/ect/seed0/verdicts.jsonl").read_text().splitlines()]
        assert len(verdicts) == len(samples) and all(v["monitors"]["bias_judge"]["scored"] for v in verdicts)
        # The judge never sees the label: what reaches it is the rubric rendered over the
        # topic and the generated article, and nothing else.
        from ectc.runtime.experiment import Experiment

        exp = Experiment(tmp_path / "generated/bias")
        rubric = exp.templates["judge.bias_judge"]
        expected = {exp.render("judge.bias_judge", {"topic": s["sample"]["topic"], "response": s["response"]})
                    for s in samples}
        sent = {json.loads(p)[0]["content"] if isinstance(json.loads(p)[0]["content"], str)
                else json.loads(p)[0]["content"][0]["text"] for p in judge_prompts(fake)}
        assert expected <= sent and "{{ topic }}" in rubric
        first = fake.count()
        again = run(tmp_path, fake)
        assert again.returncode == 0
        assert fake.count() == first, "an unchanged re-run makes no API calls"


def test_killed_mid_judging_resumes_without_paying_twice(tmp_path):
    # One verdict at a time, each slow, so the kill lands mid-judging at a known point.
    tiny_project(tmp_path, "bias", [("    reasks 2\n", "    reasks 2\n    concurrency 1\n")])
    with FakeAnthropic() as fake:
        fake.default = fn(lambda body: answer(body, latency=0.4))
        proc = run(tmp_path, fake, wait=False)
        deadline = time.time() + 300
        while len(judge_prompts(fake)) < 4 and time.time() < deadline and proc.poll() is None:
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        before = judge_prompts(fake)
        assert len(before) >= 4, "the run should have been judging when killed"
        time.sleep(0.5)
        fake.default = fn(answer)
        out = run(tmp_path, fake)
        assert out.returncode == 0, out.stderr[-3000:]
        after = judge_prompts(fake)[len(before):]
        total = len(set(before) | set(after))
        # Verdicts answered before the kill were cached as they came in: the resumed run asks
        # only for the rest, plus at most the one that was in flight when the process died.
        assert total > len(set(before))
        assert len(after) <= total - len(set(before)) + 1
        assert len(set(before) & set(after)) <= 1
        assert len(after) == len(set(after)), "no verdict is asked twice within the resumed run"
