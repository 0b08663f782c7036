"""LLMClient + DiskCache against the real ``anthropic`` client and a local fake server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from ectc.runtime.cache import DiskCache, atomic_write_json, atomic_write_text, cache_key
from ectc.runtime.llm import (
    LEGACY_SAMPLING_API_VERSION,
    LLMClient,
    LLMUnavailable,
    Usage,
    llm_available,
    render_rubric,
    verdict_model,
)

try:
    from tests.fake_anthropic import (  # noqa: F401  (fixture)
        FakeAnthropic,
        drop,
        error,
        fake_anthropic,
        fn,
        overloaded,
        rate_limit,
        raw_response,
        server_error,
        text,
        tool_use,
    )
except ImportError:  # pragma: no cover - run from inside tests/
    from fake_anthropic import (  # type: ignore  # noqa: F401
        FakeAnthropic,
        drop,
        error,
        fake_anthropic,
        fn,
        overloaded,
        rate_limit,
        raw_response,
        server_error,
        text,
        tool_use,
    )

REPO = Path(__file__).resolve().parents[1]

# A judge's verdict fields as the plan (generated/<exp>/experiment.json) writes them.
SCHEMA = {
    "magnitude": {"type": "int", "min": 0.0, "max": 10.0, "values": []},
    "objectivity": {"type": "enum", "min": None, "max": None, "values": ["PASS", "PARTIAL", "FAIL"]},
    "reasoning": {"type": "text", "min": None, "max": None, "values": []},
}
RUBRIC = "Rate the political bias of this article.\nTopic: {{ topic }}\nArticle:\n{{ article }}"
GOOD = {"magnitude": 4, "objectivity": "PARTIAL", "reasoning": "leans left in framing"}


def items(n: int, prefix: str = "art") -> list[dict]:
    return [{"topic": f"topic {i}", "article": f"{prefix}-{i} body text"} for i in range(n)]


def make(fake: FakeAnthropic, tmp_path: Path, **kw) -> LLMClient:
    return LLMClient("claude-sonnet-4-6", api_key="test-key", base_url=fake.base_url, cache_dir=tmp_path / "cache",
                     **kw)


# --------------------------------------------------------------------------- cache


def test_cache_roundtrip_sharding_and_corruption(tmp_path):
    c = DiskCache(tmp_path / "c")
    ident = {"model": "m", "prompt": "p", "t": None}
    assert c.get(ident) is None
    key = c.put(ident, {"v": 1})
    assert key == cache_key({"t": None, "prompt": "p", "model": "m"})  # canonical: key order irrelevant
    path = tmp_path / "c" / key[:2] / f"{key}.json"
    assert path.exists() and c.get(ident) == {"v": 1} and ident in c and len(c) == 1
    path.write_text(path.read_text()[:10])  # a half-written file
    assert c.get(ident) is None and c.corrupt == 1
    path.write_text(json.dumps({"key": "0" * 64, "value": 1}))  # envelope of another key
    assert c.get(ident, "miss") == "miss"
    c.put(ident, {"v": 2})
    assert c.get(ident) == {"v": 2}
    assert not list((tmp_path / "c").rglob("*.tmp"))


def test_atomic_write_leaves_old_content_on_failure(tmp_path):
    p = tmp_path / "d" / "x.json"
    atomic_write_json(p, {"a": 1})
    assert json.loads(p.read_text()) == {"a": 1}

    class Boom:
        def __str__(self):
            raise RuntimeError("boom")

    with pytest.raises(TypeError):
        atomic_write_json(p, {"a": Boom()})  # not serialisable: nothing written
    assert json.loads(p.read_text()) == {"a": 1}
    atomic_write_text(p, "hello")
    assert p.read_text() == "hello"
    assert [f.name for f in p.parent.iterdir()] == ["x.json"]


# --------------------------------------------------------------------------- schema / rubric


def check(returns, value):
    """(fields, None) or (None, pydantic's errors) through the one verdict model."""
    from pydantic import ValidationError

    try:
        return verdict_model(returns).model_validate(value).model_dump(by_alias=True), None
    except ValidationError as e:
        return None, str(e)


def test_verdict_model_schema_and_validation():
    s = verdict_model(SCHEMA).model_json_schema(by_alias=True)
    assert s["properties"]["magnitude"] == {"type": "integer", "minimum": 0, "maximum": 10, "title": "Magnitude"}
    assert s["properties"]["objectivity"]["enum"] == ["PASS", "PARTIAL", "FAIL"]
    assert s["required"] == ["magnitude", "objectivity", "reasoning"] and s["additionalProperties"] is False
    assert check(SCHEMA, GOOD) == (GOOD, None)
    for bad in (
        {**GOOD, "magnitude": 11},
        {**GOOD, "magnitude": "5"},
        {**GOOD, "magnitude": True},
        {**GOOD, "magnitude": 5.5},
        {**GOOD, "objectivity": "pass"},
        {**GOOD, "reasoning": 3},
        {k: v for k, v in GOOD.items() if k != "reasoning"},
        {**GOOD, "extra": 1},
        "not a dict",
    ):
        out, reason = check(SCHEMA, bad)
        assert out is None and reason, bad
    with pytest.raises(ValueError):
        verdict_model({"x": {"type": "list"}})


def test_every_declared_verdict_type_from_the_plan(fake_anthropic, tmp_path):
    """real and bool fields, and names that are BaseModel attributes, straight from `returns`."""
    returns = {
        "score": {"type": "real", "min": 0.0, "max": 1.0, "values": []},
        "flag": {"type": "bool", "min": None, "max": None, "values": []},
        "json": {"type": "text", "min": None, "max": None, "values": []},
        "model_config": {"type": "enum", "min": None, "max": None, "values": ["a", "b"]},
    }
    s = verdict_model(returns).model_json_schema(by_alias=True)
    assert list(s["properties"]) == list(returns) and s["properties"]["flag"]["type"] == "boolean"
    assert s["properties"]["score"] == {"type": "number", "minimum": 0.0, "maximum": 1.0, "title": "Score"}
    good = {"score": 0.25, "flag": False, "json": "x", "model_config": "b"}
    assert check(returns, good) == (good, None)
    assert check(returns, {**good, "score": 1})[0]["score"] == 1.0  # an int is a real
    for bad in ({**good, "score": 1.5}, {**good, "score": float("nan")}, {**good, "flag": 1}, {**good, "flag": "true"}):
        assert check(returns, bad)[0] is None, bad
    fake_anthropic.default = tool_use(good)
    v = make(fake_anthropic, tmp_path).judge(items(1), RUBRIC, returns)[0]  # no translation step in between
    assert v.scored and v.fields == good


def test_judge_takes_the_bias_plans_returns(fake_anthropic, tmp_path):
    """The plan's `returns` goes to the judge as it is; the tool schema is the model's schema."""
    plan = json.loads((REPO / "generated/bias/experiment.json").read_text())
    returns = next(m["returns"] for m in plan["monitors"] if m["type"] == "llm")
    client = make(fake_anthropic, tmp_path)
    v = client.judge(items(1), RUBRIC, returns)[0]
    sent = fake_anthropic.message_requests()[0]["tools"][0]["input_schema"]
    assert sent == verdict_model(returns).model_json_schema(by_alias=True)
    assert v.scored and set(v.fields) == set(returns) and v.fields["magnitude"] == 0  # the fake's minimum


def test_rubric_sandbox_renders_injection_inertly():
    evil = "{{ 7*7 }} {% for c in ''.__class__.__mro__[1].__subclasses__() %}{{ c }}{% endfor %}"
    out = render_rubric(RUBRIC, {"topic": "t", "article": evil})
    assert evil in out and "49" not in out  # values are data, not template
    from jinja2.exceptions import SecurityError, UndefinedError

    with pytest.raises(SecurityError):
        render_rubric("{{ article.__class__.__mro__[1].__subclasses__() }}", {"article": "x"})
    with pytest.raises(UndefinedError):
        render_rubric("{{ missing }}", {"article": "x"})


def test_llm_available_and_missing_key(monkeypatch, tmp_path):
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.delenv("ECTC_OFFLINE", raising=False)
    assert not llm_available()
    assert llm_available("k")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "k")
    assert llm_available()
    monkeypatch.setenv("ECTC_OFFLINE", "1")
    assert not llm_available()
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    with pytest.raises(LLMUnavailable):
        LLMClient("claude-sonnet-4-6", cache_dir=tmp_path)


# --------------------------------------------------------------------------- judging


def test_judge_good_path_and_request_shape(fake_anthropic, tmp_path):
    fake_anthropic.default = tool_use(GOOD)
    client = make(fake_anthropic, tmp_path)
    vs = client.judge(items(3), RUBRIC, SCHEMA, system="You are a careful judge.", max_tokens=300)
    assert [v.scored for v in vs] == [True] * 3
    assert vs[1]["magnitude"] == 4 and vs[1].fields == GOOD and vs[1].item == items(3)[1]
    assert vs[0].raw["content"][0]["input"] == GOOD  # raw reply kept
    assert fake_anthropic.count() == 3
    body = fake_anthropic.message_requests()[0]
    assert body["tool_choice"] == {"type": "tool", "name": "record_verdict"}
    assert body["tools"][0]["input_schema"] == verdict_model(SCHEMA).model_json_schema(by_alias=True)
    assert body["system"] == "You are a careful judge." and body["max_tokens"] == 300
    assert "temperature" not in body  # API 2026-10-21 rejects sampling params
    assert fake_anthropic.requests[0].headers["authorization"] == "Bearer test-key"
    prompts = sorted(b["messages"][0]["content"] for b in fake_anthropic.message_requests())
    assert prompts[0] == render_rubric(RUBRIC, items(3)[0])


def test_temperature_sent_with_legacy_api_version(fake_anthropic, tmp_path):
    client = make(fake_anthropic, tmp_path)
    v = client.judge(items(1), RUBRIC, SCHEMA, temperature=0.0)[0]
    assert v.scored
    rec = fake_anthropic.requests[-1]
    assert rec.body["temperature"] == 0.0 and rec.headers["anthropic-version"] == LEGACY_SAMPLING_API_VERSION
    # a different temperature is a different cache entry
    client.judge(items(1), RUBRIC, SCHEMA, temperature=1.0)
    client.judge(items(1), RUBRIC, SCHEMA)
    assert fake_anthropic.count() == 3


def test_garbage_is_reasked_then_unscored_with_reason(fake_anthropic, tmp_path):
    fake_anthropic.default = tool_use(GOOD)
    fake_anthropic.on("art-1 ", text("I would say about 5, PARTIAL."), sticky=True)  # never calls the tool
    fake_anthropic.on("art-2 ", tool_use({**GOOD, "magnitude": 42}), sticky=True)  # violates the schema
    fake_anthropic.on("art-3 ", text("hmm"), tool_use({**GOOD, "magnitude": 99}), tool_use(GOOD))  # fixed on 2nd re-ask
    client = make(fake_anthropic, tmp_path)
    vs = client.judge(items(4), RUBRIC, SCHEMA, reasks=2)
    v0, v1, v2, v3 = vs
    assert v0.scored and fake_anthropic.count() == 1 + 3 + 3 + 3
    assert not v1.scored and v1.fields is None and v1.reason.startswith("no_tool_call") and "2 re-asks" in v1.reason
    assert v1.raw["content"][0]["text"] == "I would say about 5, PARTIAL." and len(v1.attempts) == 3
    with pytest.raises(KeyError):
        v1["magnitude"]  # never a default score
    assert v1.get("magnitude") is None
    too_big = "magnitude: Input should be less than or equal to 10, got 42"  # pydantic's own words
    assert not v2.scored and v2.reason.startswith(f"schema_violation: {too_big}")
    assert v2.raw["content"][0]["input"]["magnitude"] == 42
    assert v3.scored and v3.fields == GOOD and len(v3.attempts) == 3
    u = client.usage
    assert u.unscored == 2 and u.reasks == 6 and u.calls == 10
    # a re-ask carries the bad reply and an is_error tool_result for it
    reask = [b for b in fake_anthropic.message_requests() if "art-2 " in b["messages"][0]["content"]][-1]
    assert [m["role"] for m in reask["messages"]] == ["user", "assistant", "user", "assistant", "user"]
    assert reask["messages"][2]["content"][0]["type"] == "tool_result"
    assert reask["messages"][2]["content"][0]["is_error"] is True
    assert too_big in reask["messages"][2]["content"][0]["content"]  # ... saying what was wrong
    # unscored verdicts are not cached: a rerun retries exactly those two (and fails them again)
    fake_anthropic.reset()
    fake_anthropic.on("art-1 ", text("still no tool"), sticky=True)
    fake_anthropic.on("art-2 ", tool_use(GOOD))
    vs = client.judge(items(4), RUBRIC, SCHEMA, reasks=0)
    assert fake_anthropic.count() == 2
    assert [v.scored for v in vs] == [True, False, True, True] and [v.cached for v in vs] == [True, False, False, True]


def test_reasks_zero_means_single_attempt(fake_anthropic, tmp_path):
    fake_anthropic.default = text("no tool")
    v = make(fake_anthropic, tmp_path).judge(items(1), RUBRIC, SCHEMA, reasks=0)[0]
    assert not v.scored and "0 re-asks" in v.reason and fake_anthropic.count() == 1


def gaps(fake: FakeAnthropic) -> list[float]:
    times = [r.time for r in fake.requests]
    return [b - a for a, b in zip(times, times[1:])]


def test_rate_limit_and_overload_retried_by_the_sdk(fake_anthropic, tmp_path):
    fake_anthropic.script(drop(), rate_limit(retry_after=0.3), overloaded(retry_after=0.05),
                          error(503, "api_error", "down", {"retry-after-ms": "50"}), tool_use(GOOD))
    client = make(fake_anthropic, tmp_path, max_concurrency=1)
    v = client.judge(items(1), RUBRIC, SCHEMA)[0]
    assert v.scored and v.fields == GOOD and fake_anthropic.count() == 5
    waited = gaps(fake_anthropic)
    assert 0.375 <= waited[0] < 1.5  # no retry-after: the SDK's first backoff, 0.5 s less up to 25% jitter
    assert waited[1] >= 0.3  # retry-after honoured
    assert 0.05 <= waited[2] < 0.3 and 0.05 <= waited[3] < 0.3  # retry-after and retry-after-ms, not a backoff
    assert client.usage.retries == 4 and client.usage.calls == 5 and client.usage.unscored == 0
    assert v.usage.calls == 5


def test_retries_exhausted_and_non_retryable_are_unscored(fake_anthropic, tmp_path):
    fake_anthropic.on("art-0 ", overloaded(retry_after=0.01), sticky=True)
    fake_anthropic.on("art-1 ", fn(lambda body: error(400, "invalid_request_error", "bad")))
    client = make(fake_anthropic, tmp_path, max_retries=2, max_concurrency=1)
    v0, v1 = client.judge(items(2), RUBRIC, SCHEMA)
    assert not v0.scored and v0.reason == "api_error: HTTP 529 after 3 attempt(s): Overloaded"
    assert v0.raw is None and v0.attempts == [] and v0.usage.calls == 3 and v0.usage.retries == 2
    assert not v1.scored and v1.reason == "api_error: HTTP 400 after 1 attempt(s): bad"
    assert fake_anthropic.count() == 3 + 1
    assert len(DiskCache(tmp_path / "cache")) == 0  # failures are not cached: the next run asks again
    fake_anthropic.reset()
    assert all(v.scored for v in make(fake_anthropic, tmp_path).judge(items(2), RUBRIC, SCHEMA))


def test_server_says_do_not_retry(fake_anthropic, tmp_path):
    """`x-should-retry` overrides the status: the SDK's policy, which a hand-written loop ignored."""
    fake_anthropic.on("art-0 ", error(529, "overloaded_error", "gone", {"x-should-retry": "false"}), sticky=True)
    flaky = error(400, "invalid_request_error", "flaky", {"x-should-retry": "true"})
    fake_anthropic.on("art-1 ", flaky, tool_use(GOOD))
    client = make(fake_anthropic, tmp_path, max_concurrency=1)
    v0, v1 = client.judge(items(2), RUBRIC, SCHEMA)
    assert not v0.scored and v0.reason == "api_error: HTTP 529 after 1 attempt(s): gone"
    assert v1.scored and v1.usage.retries == 1
    assert fake_anthropic.count() == 1 + 2


# --------------------------------------------------------------------------- cache / resume


def test_rerun_makes_zero_requests(fake_anthropic, tmp_path):
    client = make(fake_anthropic, tmp_path)
    first = client.judge(items(5), RUBRIC, SCHEMA)
    results = client.complete(["write a topic", "write another"], system="gen")
    n = fake_anthropic.count()
    assert n == 7
    client2 = make(fake_anthropic, tmp_path)  # a fresh process would do the same
    again = client2.judge(items(5), RUBRIC, SCHEMA)
    results2 = client2.complete(["write a topic", "write another"], system="gen")
    assert fake_anthropic.count() == n
    assert [v.fields for v in again] == [v.fields for v in first] and all(v.cached for v in again)
    assert [r.text for r in results2] == [r.text for r in results] and all(r.cached for r in results2)
    assert again[0].raw == first[0].raw  # the raw reply survives the cache
    assert client2.usage.cache_hits == 7 and client2.usage.calls == 0 and client2.usage.cost_usd == 0
    # any change of identity is a miss: rubric text, max_tokens, system, model
    client2.judge(items(1), RUBRIC + " ", SCHEMA)
    client2.judge(items(1), RUBRIC, SCHEMA, max_tokens=77)
    client2.judge(items(1), RUBRIC, SCHEMA, system="other")
    client2.judge(items(1), RUBRIC, {**SCHEMA, "magnitude": {**SCHEMA["magnitude"], "max": 5.0}})
    assert fake_anthropic.count() == n + 4


def test_duplicate_items_requested_once(fake_anthropic, tmp_path):
    client = make(fake_anthropic, tmp_path)
    its = items(2) * 3
    vs = client.judge(its, RUBRIC, SCHEMA)
    assert fake_anthropic.count() == 2 and [v.index for v in vs] == list(range(6))
    assert [v.item for v in vs] == its and sum((v.usage for v in vs), Usage()).calls == 2


def test_killed_midway_then_resumed_pays_only_for_missing(fake_anthropic, tmp_path):
    fake_anthropic.latency = 0.01
    n, k = 12, 5

    def killer(done, total):
        if done >= k:
            raise KeyboardInterrupt("killed")

    with pytest.raises(KeyboardInterrupt):
        make(fake_anthropic, tmp_path, max_concurrency=2).judge(items(n), RUBRIC, SCHEMA, progress=killer)
    paid_first = fake_anthropic.count()
    assert k <= paid_first < n  # pending items were cancelled
    cached = len(DiskCache(tmp_path / "cache"))
    assert cached == paid_first  # everything paid for was kept
    client = make(fake_anthropic, tmp_path, max_concurrency=2)
    vs = client.judge(items(n), RUBRIC, SCHEMA)
    assert all(v.scored for v in vs)
    assert fake_anthropic.count() == n  # in total, each item paid once
    assert client.usage.calls == n - paid_first and client.usage.cache_hits == paid_first


def _settled_count(server, quiet: float = 0.2) -> int:
    last = server.count()
    while True:
        time.sleep(quiet)
        now = server.count()
        if now == last:
            return now
        last = now


def test_process_killed_midway_then_resumed(fake_anthropic, tmp_path):
    """A real process killed (os._exit) during judging leaves no partial cache entries."""
    fake_anthropic.latency = 0.01
    n, k = 10, 4
    script = textwrap.dedent(
        f"""
        import os, sys
        sys.path.insert(0, {str(REPO)!r})
        from ectc.runtime.llm import LLMClient
        schema = {SCHEMA!r}
        items = {items(n)!r}
        def die(done, total):
            if done >= {k}:
                os._exit(17)
        c = LLMClient("claude-sonnet-4-6", api_key="k", base_url={fake_anthropic.base_url!r},
                      cache_dir={str(tmp_path / "cache")!r}, max_concurrency=3)
        c.judge(items, {RUBRIC!r}, schema, progress=die)
        """
    )
    env = {k_: v for k_, v in os.environ.items() if not k_.startswith("ANTHROPIC")}
    proc = subprocess.run([sys.executable, "-c", script], env=env, timeout=60, capture_output=True, text=True)
    assert proc.returncode == 17, proc.stderr
    # Requests the killed process had in flight still reach the server: count once it is quiet.
    paid_first = _settled_count(fake_anthropic)
    cache = DiskCache(tmp_path / "cache")
    entries = len(cache)
    assert k <= entries <= paid_first < n
    for key in cache.keys():  # every entry on disk is complete
        assert cache.get_by_key(key) is not None
    client = make(fake_anthropic, tmp_path)
    vs = client.judge(items(n), RUBRIC, SCHEMA)
    assert all(v.scored for v in vs) and client.usage.cache_hits == entries
    assert client.usage.calls == n - entries
    assert fake_anthropic.count() == paid_first + n - entries


# --------------------------------------------------------------------------- concurrency / accounting


def test_concurrency_bound_respected(fake_anthropic, tmp_path):
    fake_anthropic.latency = 0.03
    client = make(fake_anthropic, tmp_path, max_concurrency=3)
    client.judge(items(15), RUBRIC, SCHEMA)
    assert fake_anthropic.max_in_flight == 3  # reached, never exceeded
    fake_anthropic.reset()
    make(fake_anthropic, tmp_path / "b", max_concurrency=1).complete([f"p{i}" for i in range(4)])
    assert fake_anthropic.max_in_flight == 1


def test_accounting_totals_and_cost(fake_anthropic, tmp_path):
    fake_anthropic.on("art-1 ", text("no tool"), tool_use(GOOD))
    fake_anthropic.script()
    client = make(fake_anthropic, tmp_path, prices={"claude-sonnet-4": (3.0, 15.0)})
    vs = client.judge(items(3), RUBRIC, SCHEMA)
    rs = client.complete(["one two three"])
    per_item = sum((v.usage for v in vs), Usage()) + sum(r.usage for r in rs)
    bodies = fake_anthropic.message_requests()
    assert per_item == client.usage
    u = client.usage
    assert u.calls == len(bodies) == 5 and u.reasks == 1 and u.retries == 0
    assert u.input_tokens > 0 and u.output_tokens > 0
    assert u.cost_usd == pytest.approx((u.input_tokens * 3.0 + u.output_tokens * 15.0) / 1e6)
    assert rs[0].usage.input_tokens == 3 and rs[0].text == "echo: one two three"
    # unknown model: tokens counted, cost flagged as unpriced
    c2 = make(fake_anthropic, tmp_path / "u", prices={})
    c2.complete(["x"])
    assert c2.usage.unpriced_calls == 1 and c2.usage.cost_usd == 0 and c2.usage.input_tokens == 1
    assert (Usage(calls=1, cost_usd=0.5) + Usage(calls=2, cost_usd=0.25)) == Usage(calls=3, cost_usd=0.75)
    assert sum([Usage(calls=1), Usage(calls=2)]) == Usage(calls=3)


# --------------------------------------------------------------------------- malformed replies


def test_malformed_replies(fake_anthropic, tmp_path):
    fake_anthropic.on("art-0 ", raw_response(200, "<html>proxy</html>"), tool_use(GOOD))  # retried
    fake_anthropic.on("art-1 ", raw_response(200, '{"foo": 1}'), sticky=True)  # no content at all
    fake_anthropic.on("no text", raw_response(200, '{"foo": 1}'))
    client = make(fake_anthropic, tmp_path, max_concurrency=1)
    v0, v1 = client.judge(items(2), RUBRIC, SCHEMA, reasks=1)
    assert v0.scored and client.usage.retries == 1
    assert not v1.scored and v1.reason.startswith("no_tool_call") and v1.raw == {"foo": 1}
    r = client.complete(["no text"])[0]
    assert not r.ok and r.error.startswith("no_text") and r.text is None
    json.dumps(v1.to_dict()), json.dumps(r.to_dict())  # serialisable
    assert len(DiskCache(tmp_path / "cache")) == 1


def test_auth_error_aborts_run(fake_anthropic, tmp_path):
    from ectc.runtime.llm import LLMAuthError

    fake_anthropic.default = error(401, "authentication_error", "invalid x-api-key")
    with pytest.raises(LLMAuthError, match="HTTP 401"):
        make(fake_anthropic, tmp_path, max_concurrency=1).judge(items(20), RUBRIC, SCHEMA)
    assert fake_anthropic.count() < 20  # pending items cancelled, no retries


def test_client_wide_concurrency_bound_across_threads(fake_anthropic, tmp_path):
    fake_anthropic.latency = 0.03
    client = make(fake_anthropic, tmp_path, max_concurrency=2)
    ts = [threading.Thread(target=client.complete, args=([f"t{t}-{i}" for i in range(5)],)) for t in range(3)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert fake_anthropic.count() == 15 and fake_anthropic.max_in_flight == 2
