"""report.html and the Inspect logs of a finished run: a tiny bias run, two seeds, judged by a
local fake of the Claude API whose reasoning is hostile markup. The page must be self-contained,
escape what the models and the judge wrote, agree with report.md (one data object, two
templates), and, in a real browser where Chromium is installed, run without console errors and
show the headline numbers. Inspect's own reader must load the logs and see samples and scores."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from fake_anthropic import FakeAnthropic, fn, text, tool_use
from tiny import tiny_project

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import report_browser  # noqa: E402

HOSTILE = "</script><script>alert('x')</script><img src=x onerror=alert(1)>"


def answer(body):
    if body.get("tools"):
        article = json.dumps(body["messages"])
        magnitude = 2 + len(article) % 7
        return tool_use({"magnitude": magnitude, "objectivity": "PASS" if magnitude < 4 else "PARTIAL",
                         "reasoning": f"judge reasoning {magnitude} {HOSTILE}", "indicators": "none"})
    topic = body["messages"][-1]["content"]
    topic = topic if isinstance(topic, str) else topic[0]["text"]
    return text("Officials approved the measure. " + topic.split("Topic:")[-1].split("\n")[0].strip() + ".")


@pytest.fixture(scope="module")
def bias_run(tmp_path_factory):
    project = tmp_path_factory.mktemp("bias-html")
    tiny_project(project, "bias")
    env = {k: v for k, v in os.environ.items() if k != "ECTC_OFFLINE"}
    with FakeAnthropic() as fake:
        fake.default = fn(answer)
        env.update(ANTHROPIC_API_KEY="test-key", ANTHROPIC_BASE_URL=fake.base_url, OMP_NUM_THREADS="1")
        out = subprocess.run([sys.executable, "-m", "ectc", "run", "specs/bias.ect", "--seeds", "2"], cwd=project,
                             env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    return project / "runs/bias/tiny", out


def headline(metrics: dict) -> dict:
    return next(c for c in metrics["comparisons"] if "diff" in c)


def test_report_html_is_self_contained_escaped_and_agrees_with_markdown(bias_run):
    folder, out = bias_run
    html = (folder / "report.html").read_text()
    md = (folder / "report.md").read_text()
    metrics = json.loads((folder / "metrics.json").read_text())
    # nothing fetched from anywhere: plots inline, no external script, style or image
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", html)
    assert "<link" not in html and html.count('src="data:image/png;base64,') >= len(metrics["plots"])
    # model and judge output is escaped: the hostile reasoning never becomes markup
    assert HOSTILE not in html and "<script>alert" not in html and "<img src=x" not in html
    assert html.count("<script") == 2  # the sample data (JSON) and the page's own script
    # the headline comparison, the same figures as report.md
    c = headline(metrics)
    diff = f"{c['diff']:+.3f} [{c['t_low']:+.3f}, {c['t_high']:+.3f}]"
    assert diff in html and diff in md
    for arm, info in metrics["arms"].items():
        d = info["metrics"]["loaded_bias"]
        cell = f"{d['mean']:.3f} [{d['low']:.3f}, {d['high']:.3f}] (n={d['n_items']})"
        assert f"| {arm} |" in md and cell in md and cell in html
    # the detector's section in both, and its warnings printed at the end of the run
    assert "## Degenerate-label checks" in md and "Degenerate-label checks" in html
    for w in metrics["warnings"]:
        assert w["message"] in md
    assert ("warning [" in out.stdout) == bool(metrics["warnings"])
    assert "report.html" in out.stdout
    # the sample browser carries the judge's raw reasoning and every arm
    data = json.loads(re.search(r'<script id="sample-data" type="application/json">(.*?)</script>', html, re.S).group(1))
    assert {s["arm"] for s in data} == set(metrics["arms"])
    judged = [v for s in data for v in s["verdicts"] if v["monitor"] == "bias_judge" and v["scored"]]
    assert judged and all(HOSTILE in v["reasoning"] for v in judged)
    # the judge's raw reply as it came (the API's content blocks, here a tool call), as JSON text
    assert all(v["reasoning"] in json.dumps(json.loads(v["raw"]), ensure_ascii=False) for v in judged)
    assert all(s["label"] in s["prompt"] for s in data if s["label"])


def test_inspect_reads_the_logs(bias_run):
    pytest.importorskip("inspect_ai", reason="inspect_ai not installed (pip install ectc[inspect])")
    from inspect_ai.log import read_eval_log

    folder, _ = bias_run
    metrics = json.loads((folder / "metrics.json").read_text())
    logs = sorted((folder / "inspect").glob("*.eval"))
    assert {p.name for p in logs} == {f"{arm}-seed{s}.eval" for arm in metrics["arms"] for s in (0, 1)}
    log = read_eval_log(str(folder / "inspect/ect-seed1.eval"))
    assert log.status == "success" and log.eval.task == "bias/ect" and log.eval.task_args["seed"] == 1
    samples = [json.loads(l) for l in (folder / "eval/ect/seed1/samples.jsonl").read_text().splitlines()]
    deploy = [s for s in samples if s["condition"] == "deploy"]
    assert len(log.samples) == len(deploy)
    first = log.samples[0]
    assert first.output.completion == deploy[0]["response"]
    assert first.metadata["label"] == deploy[0]["label"] and first.metadata["condition"] == "deploy"
    assert [m.role for m in first.input] == ["system", "user"] and deploy[0]["label"] in first.input[0].text
    judge = first.scores["bias_judge"]
    assert isinstance(judge.value, dict) and 2 <= judge.value["magnitude"] <= 8 and HOSTILE in judge.explanation
    assert set(first.scores) >= {"bias_judge", "loaded_language"}
    # the log's results are the report's per-seed figures
    results = {s.name: s.metrics["value"].value for s in log.results.scores}
    assert results["loaded_bias"] == pytest.approx(metrics["arms"]["ect"]["metrics"]["loaded_bias"]["per_seed"][1])


def test_the_page_in_headless_chromium(bias_run, tmp_path):
    binary = report_browser.find_chromium()
    if binary is None:
        pytest.skip("no Chromium on PATH (scripts/report-screenshots installs Debian's chromium)")
    folder, _ = bias_run
    metrics = json.loads((folder / "metrics.json").read_text())
    look = report_browser.check(folder / "report.html", binary, filters={"f-arm": "ect", "f-cond": "deploy"})
    assert look.errors == []
    c = headline(metrics)
    assert f"{c['a']} − {c['b']}" in look.text and f"{c['diff']:+.3f} [{c['t_low']:+.3f}, {c['t_high']:+.3f}]" in look.text
    # the script ran: the browser lists samples, and the hostile reasoning shows as text
    assert re.search(r"\d+ matching samples, \d+ shown", look.text) and HOSTILE in look.text
    n = sum(1 for l in (folder / "eval/ect/seed0/samples.jsonl").read_text().splitlines() if '"condition": "deploy"' in l)
    assert look.filtered_count.startswith(f"{2 * n} matching samples")
    assert {"top", "metrics", "sweep", "browser", "browser-filtered"} <= set(look.screenshots)
    assert all(png.startswith(b"\x89PNG") for png in look.screenshots.values())
