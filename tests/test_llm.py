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
    build_tool_schema,
    llm_available,
    render_rubric,
    validate_fields,
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

SCHEMA = {
    "magnitude": {"type": "int", "min": 0, "max": 10},
    "objectivity": {"type": "enum", "values": ["PASS", "PARTIAL", "FAIL"]},
    "reasoning": {"type": "text"},
}
RUBRIC = "Rate the political bias of this article.\nTopic: {{ topic }}\nArticle:\n{{ article }}"
GOOD = {"magnitude": 4, "objectivity": "PARTIAL", "reasoning": "leans left in framing"}


def items(n: int, prefix: str = "art") -> list[dict]:
    return [{"topic": f"topic {i}", "article": f"{prefix}-{i} body text"} for i in range(n)]


class Sleeps:
    def __init__(self) -> None:
        self.calls: list[float] = []
        self._lock = threading.Lock()

    def __call__(self, s: float) -> None:
        with self._lock:
            self.calls.append(s)


def make(fake: FakeAnthropic, tmp_path: Path, **kw) -> LLMClient:
    kw.setdefault("sleep", Sleeps())
    kw.setdefault("backoff_base", 0.001)
    return LLMClient("claude-sonnet-4-6", api_key="test-key", base_url=fake.base_url, cache_dir=tmp_path / "cache", **kw)


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


def test_tool_schema_and_validation():
    s = build_tool_schema(SCHEMA)
    assert s["properties"]["magnitude"] == {"type": "integer", "minimum": 0, "maximum": 10}
    assert s["properties"]["objectivity"]["enum"] == ["PASS", "PARTIAL", "FAIL"]
    assert s["required"] == ["magnitude", "objectivity", "reasoning"] and s["additionalProperties"] is False
    assert validate_fields(SCHEMA, GOOD) == (GOOD, None)
    assert validate_fields(SCHEMA, {**GOOD, "magnitude": 7.0})[0]["magnitude"] == 7
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
        out, reason = validate_fields(SCHEMA, bad)
        assert out is None and reason, bad
    with pytest.raises(ValueError):
        build_tool_schema({"x": {"type": "enum"}})


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
    assert body["tools"][0]["input_schema"] == build_tool_schema(SCHEMA)
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
    assert not v2.scored and v2.reason.startswith("schema_violation") and "magnitude: 42" in v2.reason
    assert v2.raw["content"][0]["input"]["magnitude"] == 42
    assert v3.scored and v3.fields == GOOD and len(v3.attempts) == 3
    u = client.usage
    assert u.unscored == 2 and u.reasks == 6 and u.calls == 10
    # a re-ask carries the bad reply and an is_error tool_result for it
    reask = [b for b in fake_anthropic.message_requests() if "art-2 " in b["messages"][0]["content"]][-1]
    assert [m["role"] for m in reask["messages"]] == ["user", "assistant", "user", "assistant", "user"]
    assert reask["messages"][2]["content"][0]["type"] == "tool_result"
    assert reask["messages"][2]["content"][0]["is_error"] is True
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


def test_rate_limit_and_overload_retried(fake_anthropic, tmp_path):
    fake_anthropic.script(rate_limit(retry_after=3), overloaded(), server_error(503), drop(), tool_use(GOOD))
    sleeps = Sleeps()
    client = make(fake_anthropic, tmp_path, sleep=sleeps, max_concurrency=1)
    v = client.judge(items(1), RUBRIC, SCHEMA)[0]
    assert v.scored and v.fields == GOOD
    assert fake_anthropic.count() == 5
    assert len(sleeps.calls) == 4 and sleeps.calls[0] >= 3.0  # retry-after honoured
    assert all(s < 1 for s in sleeps.calls[1:])  # otherwise small exponential backoff
    assert client.usage.retries == 4 and client.usage.calls == 5 and client.usage.unscored == 0


def test_retries_exhausted_and_non_retryable_are_unscored(fake_anthropic, tmp_path):
    fake_anthropic.on("art-0 ", overloaded(), sticky=True)
    fake_anthropic.on("art-1 ", fn(lambda body: error(400, "invalid_request_error", "bad")))
    client = make(fake_anthropic, tmp_path, max_attempts=3, max_concurrency=1)
    v0, v1 = client.judge(items(2), RUBRIC, SCHEMA)
    assert not v0.scored and v0.reason.startswith("api_error: gave up after 3 attempts: HTTP 529")
    assert v0.raw is None and v0.attempts == []
    assert not v1.scored and "HTTP 400" in v1.reason
    assert fake_anthropic.count() == 3 + 1


def test_backoff_grows_and_is_capped(tmp_path, fake_anthropic):
    client = make(fake_anthropic, tmp_path, backoff_base=1.0, backoff_max=8.0)
    ds = [client._backoff(n, None) for n in range(8)]
    assert 0.5 <= ds[0] <= 1.0 and 4 * 0.5 <= ds[2] <= 4.0 and all(d <= 8.0 for d in ds)
    assert client._backoff(0, 30.0) == 30.0


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
    client2.judge(items(1), RUBRIC, {**SCHEMA, "reasoning": {"type": "text", "description": "why"}})
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


# --------------------------------------------------------------------------- batches


def test_message_batches_path_shares_cache(fake_anthropic, tmp_path):
    fake_anthropic.batch_polls = 2
    fake_anthropic.on("art-1 ", text("no tool"), tool_use(GOOD))  # re-asked in a second batch round
    fake_anthropic.on("art-2 ", overloaded())  # errored in the batch, retried in the next round
    sleeps = Sleeps()
    client = make(fake_anthropic, tmp_path, use_batches=True, batch_poll_interval=5.0, sleep=sleeps)
    vs = client.judge(items(4), RUBRIC, SCHEMA)
    assert [v.scored for v in vs] == [True] * 4 and vs[1].fields == GOOD and len(vs[1].attempts) == 2
    assert fake_anthropic.count() == 0  # nothing went through /v1/messages
    assert fake_anthropic.count("/v1/messages/batches") == 2
    assert sleeps.calls and all(s == 5.0 for s in sleeps.calls)
    first_batch = fake_anthropic.requests[0].body["requests"]
    assert len(first_batch) == 4 and first_batch[0]["params"]["tool_choice"]["name"] == "record_verdict"
    u = client.usage
    assert u.batch_requests == 6 and u.reasks == 1 and u.retries == 1 and u.calls == 0
    assert u.cost_usd == pytest.approx((u.input_tokens * 3.0 + u.output_tokens * 15.0) / 1e6 * 0.5)
    # the same cache serves the non-batch path: zero requests of either kind
    n_all = len(fake_anthropic.requests)
    again = make(fake_anthropic, tmp_path).judge(items(4), RUBRIC, SCHEMA)
    assert all(v.cached for v in again) and len(fake_anthropic.requests) == n_all
    # completions via batches
    rs = client.complete(["alpha", "beta"], use_batches=True)
    assert [r.text for r in rs] == ["echo: alpha", "echo: beta"]


def test_batch_unscored_after_reasks(fake_anthropic, tmp_path):
    fake_anthropic.default = text("never a tool")
    client = make(fake_anthropic, tmp_path, use_batches=True, batch_poll_interval=0.0)
    v = client.judge(items(1), RUBRIC, SCHEMA, reasks=1)[0]
    assert not v.scored and v.reason.startswith("no_tool_call") and len(v.attempts) == 2
    assert fake_anthropic.count("/v1/messages/batches") == 2 and len(DiskCache(tmp_path / "cache")) == 0


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


def test_batch_progress_exception_keeps_paid_results(fake_anthropic, tmp_path):
    client = make(fake_anthropic, tmp_path, use_batches=True, batch_poll_interval=0.0)

    def killer(done, total):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        client.judge(items(6), RUBRIC, SCHEMA, progress=killer)
    assert len(DiskCache(tmp_path / "cache")) == 6
    n = len(fake_anthropic.requests)
    assert all(v.cached for v in client.judge(items(6), RUBRIC, SCHEMA)) and len(fake_anthropic.requests) == n
