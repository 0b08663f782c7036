"""A local, programmable fake of the Anthropic Messages API, for offline tests.

Point the real ``anthropic`` client (or ``ectc.runtime.llm.LLMClient``) at it
with ``base_url=fake.base_url`` and any ``api_key``. It listens on 127.0.0.1
only, on a random free port, in a daemon thread (``ThreadingHTTPServer``, one
thread per connection, so concurrent requests really run concurrently).

Endpoints
---------
``POST /v1/messages``                      a Messages API reply (non-streaming)
``POST /v1/messages/count_tokens``         ``{"input_tokens": N}``, N counted as replies count it

It validates like the real API where it matters for us: requests need an
``Authorization: Bearer`` or ``x-api-key`` header (401 otherwise), ``model``,
``max_tokens`` and ``messages`` (400 otherwise), and -- as API version
``2026-10-21`` does -- ``temperature``/``top_p``/``top_k`` are rejected with 400
unless the request carries ``anthropic-version: 2023-06-01``.

Usage
-----
As a context manager::

    from tests.fake_anthropic import FakeAnthropic, tool_use, text, rate_limit

    with FakeAnthropic() as fake:
        fake.script(rate_limit(retry_after=1), tool_use({"score": 3}))
        client = anthropic.Anthropic(api_key="test", base_url=fake.base_url, max_retries=0)
        ...
        assert fake.count() == 2                      # POST /v1/messages requests

As a pytest fixture (import it into your test module or conftest)::

    from tests.fake_anthropic import fake_anthropic  # noqa: F401  (fixture)

    def test_x(fake_anthropic):
        fake_anthropic.on("article 7", text("no tool call"))
        ...

Programming behaviour
---------------------
Each ``/v1/messages`` request is answered by
one *behaviour*, chosen in this order:

1. ``fake.on(match, *behaviours)``: a rule for requests whose text (system +
   all message text, tool_result contents included) contains ``match``
   (a substring, or a compiled regex). Its behaviours are consumed one per
   matching request; when exhausted the rule stops matching (``sticky=True``
   keeps reusing the last one). Rules are tried in the order they were added.
2. ``fake.script(*behaviours)``: a global FIFO queue consumed one per request
   (by arrival order, so only deterministic with one request in flight).
3. ``fake.default``: a behaviour used otherwise (``auto()`` unless changed).

Behaviours (module-level constructors):

* ``auto()``             -- if the request has tools: a ``tool_use`` of the forced
                            (or first) tool with an input synthesised to satisfy
                            its ``input_schema`` (ints -> minimum, enums -> first
                            value, strings -> "auto reasoning", booleans -> true);
                            else a text reply ``"echo: <last user text>"``.
* ``tool_use(input, name=None)`` -- a tool call with exactly ``input`` (may
                            violate the schema on purpose); ``name`` defaults to
                            the forced tool's name. ``input`` may be a callable
                            ``(request_body) -> dict``.
* ``text(s)``            -- a plain text reply (no tool call). ``s`` may be a
                            callable ``(request_body) -> str``.
* ``reply(content, stop_reason="end_turn")`` -- arbitrary content blocks.
* ``rate_limit(retry_after=None)`` -- 429 ``rate_limit_error`` (+ ``retry-after``).
* ``overloaded(retry_after=None)``  -- 529 ``overloaded_error``.
* ``server_error(status=500)``      -- 5xx ``api_error``.
* ``error(status, type, message, headers=None)`` -- any error response (headers such as
                            ``retry-after-ms`` or ``x-should-retry`` steer the SDK's retries).
* ``raw_response(status, body, headers=None)`` -- exactly these bytes (JSON content-type
                            unless overridden), e.g. a malformed 200.
* ``drop()``              -- close the socket without answering (connection error).
* ``delay(seconds, then)`` -- sleep, then answer with behaviour ``then``.
* ``fn(callable)``        -- ``callable(request_body) -> behaviour``.

Usage tokens in replies are deterministic: ``input_tokens`` = number of
whitespace-separated words in the request text (min 1), ``output_tokens`` =
number of words in the reply text / JSON of tool input (min 1).

Inspection
----------
``fake.base_url``        e.g. ``"http://127.0.0.1:54321"``
``fake.requests``        list of ``Recorded(method, path, headers, body, time)``
``fake.count(path="/v1/messages", method="POST")`` number of such requests
``fake.message_requests()`` bodies of ``POST /v1/messages`` requests
``fake.max_in_flight``   peak number of concurrently-handled ``/v1/messages`` requests
``fake.latency``         seconds every ``/v1/messages`` reply waits (default 0)
``fake.reset()``         clear rules, script, records and counters
``fake.close()``         stop the server (also on ``__exit__``)
"""

from __future__ import annotations

import itertools
import json
import re
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

__all__ = [
    "FakeAnthropic",
    "Recorded",
    "auto",
    "tool_use",
    "text",
    "reply",
    "rate_limit",
    "overloaded",
    "server_error",
    "error",
    "drop",
    "raw_response",
    "delay",
    "fn",
    "fake_anthropic",
    "request_text",
]

LEGACY_VERSION = "2023-06-01"
_SAMPLING_PARAMS = ("temperature", "top_p", "top_k")


# --------------------------------------------------------------------------- behaviours


@dataclass(frozen=True)
class _B:
    kind: str
    args: dict = field(default_factory=dict)


def auto() -> _B:
    return _B("auto")


def tool_use(input: dict | Callable[[dict], dict], name: str | None = None) -> _B:
    return _B("tool_use", {"input": input, "name": name})


def text(s: str | Callable[[dict], str]) -> _B:
    return _B("text", {"text": s})


def reply(content: list[dict], stop_reason: str = "end_turn") -> _B:
    return _B("reply", {"content": content, "stop_reason": stop_reason})


def error(status: int, type: str, message: str = "", headers: dict | None = None) -> _B:
    return _B("error", {"status": status, "type": type, "message": message or type, "headers": headers or {}})


def rate_limit(retry_after: float | None = None) -> _B:
    h = {} if retry_after is None else {"retry-after": _fmt_num(retry_after)}
    return error(429, "rate_limit_error", "Number of requests has exceeded your rate limit", h)


def overloaded(retry_after: float | None = None) -> _B:
    h = {} if retry_after is None else {"retry-after": _fmt_num(retry_after)}
    return error(529, "overloaded_error", "Overloaded", h)


def server_error(status: int = 500) -> _B:
    return error(status, "api_error", "Internal server error")


def raw_response(status: int, body: str | bytes, headers: dict | None = None) -> _B:
    return _B("raw", {"status": status, "body": body, "headers": headers or {}})


def drop() -> _B:
    return _B("drop")


def delay(seconds: float, then: _B | None = None) -> _B:
    return _B("delay", {"seconds": seconds, "then": then or auto()})


def fn(f: Callable[[dict], _B]) -> _B:
    return _B("fn", {"f": f})


def _fmt_num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


# --------------------------------------------------------------------------- helpers


def request_text(body: dict) -> str:
    """All text of a Messages request: system + every message's text/tool_result content."""
    parts: list[str] = []
    system = body.get("system")
    if isinstance(system, str):
        parts.append(system)
    elif isinstance(system, list):
        parts.extend(b.get("text", "") for b in system if isinstance(b, dict))
    for m in body.get("messages") or []:
        parts.append(_content_text(m.get("content")))
    return "\n".join(p for p in parts if p)


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    out: list[str] = []
    for b in content or []:
        if not isinstance(b, dict):
            continue
        if b.get("type") == "text":
            out.append(b.get("text", ""))
        elif b.get("type") == "tool_result":
            out.append(_content_text(b.get("content")))
        elif b.get("type") == "tool_use":
            out.append(json.dumps(b.get("input")))
    return "\n".join(out)


def _last_user_text(body: dict) -> str:
    for m in reversed(body.get("messages") or []):
        if m.get("role") == "user":
            return _content_text(m.get("content"))
    return ""


def _words(s: str) -> int:
    return max(1, len(s.split()))


def _synth(schema: dict) -> Any:
    t = schema.get("type")
    if "enum" in schema:
        return schema["enum"][0]
    if t == "integer":
        return int(schema.get("minimum", 0))
    if t == "number":
        return float(schema.get("minimum", 0.0))
    if t == "boolean":
        return True
    if t == "array":
        return []
    if t == "object":
        props = schema.get("properties") or {}
        return {k: _synth(v) for k, v in props.items()}
    return "auto reasoning"


def _forced_tool(body: dict) -> dict | None:
    tools = body.get("tools") or []
    if not tools:
        return None
    choice = body.get("tool_choice") or {}
    if choice.get("type") == "tool":
        for t in tools:
            if t.get("name") == choice.get("name"):
                return t
    return tools[0]


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict
    body: Any
    time: float


class _Rule:
    def __init__(self, match: str | re.Pattern, behaviours: tuple[_B, ...], sticky: bool) -> None:
        self.match = match
        self.queue = deque(behaviours)
        self.sticky = sticky
        self.last: _B | None = None

    def matches(self, txt: str) -> bool:
        if isinstance(self.match, re.Pattern):
            return self.match.search(txt) is not None
        return self.match in txt


class _Reply(Exception):
    """Internal: an HTTP error reply."""

    def __init__(self, status: int, body: Any, headers: dict | None = None) -> None:
        self.status, self.body, self.headers = status, body, headers or {}


class _Drop(Exception):
    pass


# --------------------------------------------------------------------------- server


class FakeAnthropic:
    def __init__(self, *, default: _B | None = None, latency: float = 0.0) -> None:
        self.default = default or auto()
        self.latency = latency
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self.reset()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a: Any) -> None:  # silence
                pass

            def do_POST(self) -> None:
                fake._handle(self, "POST")

            def do_GET(self) -> None:
                fake._handle(self, "GET")

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.host, self.port = self._server.server_address[:2]
        self.base_url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-anthropic", daemon=True
        )
        self._thread.start()

    # -- programming ---------------------------------------------------------
    def reset(self) -> None:
        with self._lock:
            self.requests: list[Recorded] = []
            self._rules: list[_Rule] = []
            self._script: deque[_B] = deque()
            self.in_flight = 0
            self.max_in_flight = 0

    def on(self, match: str | re.Pattern, *behaviours: _B, sticky: bool = False) -> "FakeAnthropic":
        with self._lock:
            self._rules.append(_Rule(match, behaviours, sticky))
        return self

    def script(self, *behaviours: _B) -> "FakeAnthropic":
        with self._lock:
            self._script.extend(behaviours)
        return self

    # -- inspection ----------------------------------------------------------
    def count(self, path: str = "/v1/messages", method: str = "POST") -> int:
        with self._lock:
            return sum(1 for r in self.requests if r.path == path and r.method == method)

    def message_requests(self) -> list[dict]:
        with self._lock:
            return [r.body for r in self.requests if r.path == "/v1/messages" and r.method == "POST"]

    # -- lifecycle -----------------------------------------------------------
    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> "FakeAnthropic":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- behaviour selection ---------------------------------------------------
    def _pick(self, body: dict) -> _B:
        txt = request_text(body)
        with self._lock:
            for rule in self._rules:
                if rule.matches(txt):
                    if rule.queue:
                        rule.last = rule.queue.popleft()
                        return rule.last
                    if rule.sticky and rule.last is not None:
                        return rule.last
            if self._script:
                return self._script.popleft()
        return self.default

    def _message(self, body: dict, b: _B) -> dict:
        """Run behaviour ``b`` for a Messages request; return a message dict or raise _Reply/_Drop."""
        while True:
            if b.kind == "fn":
                b = b.args["f"](body)
                continue
            if b.kind == "delay":
                time.sleep(b.args["seconds"])
                b = b.args["then"]
                continue
            break
        if b.kind == "drop":
            raise _Drop()
        if b.kind == "error":
            a = b.args
            raise _Reply(a["status"], _err_body(a["type"], a["message"]), a["headers"])
        if b.kind == "raw":
            a = b.args
            raise _Reply(a["status"], a["body"], {"content-type": "application/json", **a["headers"]})
        tool = _forced_tool(body)
        if b.kind == "auto":
            if tool is not None:
                content = [self._tool_block(tool["name"], _synth(tool.get("input_schema") or {}))]
                stop = "tool_use"
            else:
                content = [{"type": "text", "text": "echo: " + _last_user_text(body)}]
                stop = "end_turn"
        elif b.kind == "tool_use":
            inp = b.args["input"]
            inp = inp(body) if callable(inp) else inp
            name = b.args["name"] or (tool["name"] if tool else "tool")
            content, stop = [self._tool_block(name, inp)], "tool_use"
        elif b.kind == "text":
            s = b.args["text"]
            s = s(body) if callable(s) else s
            content, stop = [{"type": "text", "text": s}], "end_turn"
        elif b.kind == "reply":
            content, stop = b.args["content"], b.args["stop_reason"]
        else:  # pragma: no cover
            raise ValueError(f"unknown behaviour {b!r}")
        out_text = " ".join(
            c.get("text", "") if c.get("type") == "text" else json.dumps(c.get("input")) for c in content
        )
        return {
            "id": f"msg_fake_{next(self._ids)}",
            "type": "message",
            "role": "assistant",
            "model": body.get("model"),
            "content": content,
            "stop_reason": stop,
            "stop_sequence": None,
            "usage": {"input_tokens": _words(request_text(body)), "output_tokens": _words(out_text)},
        }

    def _tool_block(self, name: str, inp: Any) -> dict:
        return {"type": "tool_use", "id": f"toolu_fake_{next(self._ids)}", "name": name, "input": inp}

    # -- HTTP ----------------------------------------------------------------
    def _handle(self, h: BaseHTTPRequestHandler, method: str) -> None:
        length = int(h.headers.get("content-length") or 0)
        raw = h.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        path = h.path.split("?", 1)[0]
        headers = {k.lower(): v for k, v in h.headers.items()}
        with self._lock:
            self.requests.append(Recorded(method, path, headers, body, time.time()))
        try:
            status, payload, extra = self._route(method, path, headers, body)
        except _Drop:
            h.close_connection = True
            try:
                h.connection.shutdown(2)
            except OSError:
                pass
            return
        except _Reply as r:
            status, payload, extra = r.status, r.body, r.headers
        if isinstance(payload, (bytes, str)):
            data = payload.encode() if isinstance(payload, str) else payload
            ctype = "application/binary"
        else:
            data = json.dumps(payload).encode()
            ctype = "application/json"
        h.send_response(status)
        if "content-type" not in {k.lower() for k in extra}:
            h.send_header("content-type", ctype)
        h.send_header("content-length", str(len(data)))
        h.send_header("request-id", f"req_fake_{next(self._ids)}")
        for k, v in extra.items():
            h.send_header(k, v)
        h.end_headers()
        h.wfile.write(data)

    def _check_auth(self, headers: dict) -> None:
        auth = headers.get("authorization", "")
        if not (auth.startswith("Bearer ") and auth[7:].strip()) and not headers.get("x-api-key"):
            raise _Reply(401, _err_body("authentication_error", "invalid x-api-key"))

    def _validate_params(self, body: Any, version: str) -> None:
        if not isinstance(body, dict):
            raise _Reply(400, _err_body("invalid_request_error", "body must be a JSON object"))
        for k in ("model", "max_tokens", "messages"):
            if k not in body:
                raise _Reply(400, _err_body("invalid_request_error", f"{k}: Field required"))
        if version != LEGACY_VERSION:
            for k in _SAMPLING_PARAMS:
                if k in body:
                    raise _Reply(400, _err_body("invalid_request_error", f"{k}: Extra inputs are not permitted"))

    def _route(self, method: str, path: str, headers: dict, body: Any) -> tuple[int, Any, dict]:
        self._check_auth(headers)
        version = headers.get("anthropic-version", "")
        if method == "POST" and path == "/v1/messages":
            self._validate_params(body, version)
            with self._lock:
                self.in_flight += 1
                self.max_in_flight = max(self.max_in_flight, self.in_flight)
            try:
                if self.latency:
                    time.sleep(self.latency)
                return 200, self._message(body, self._pick(body)), {}
            finally:
                with self._lock:
                    self.in_flight -= 1
        if method == "POST" and path == "/v1/messages/count_tokens":
            if not isinstance(body, dict) or "model" not in body or "messages" not in body:
                raise _Reply(400, _err_body("invalid_request_error", "model and messages are required"))
            # The same count as a reply's usage.input_tokens for this request.
            return 200, {"input_tokens": _words(request_text(body))}, {}
        raise _Reply(404, _err_body("not_found_error", f"{method} {path}"))


def _err_body(type_: str, message: str) -> dict:
    return {"type": "error", "error": {"type": type_, "message": message}}


try:  # pytest fixture, when pytest is importable
    import pytest

    @pytest.fixture
    def fake_anthropic():
        """A fresh :class:`FakeAnthropic` per test, closed afterwards."""
        with FakeAnthropic() as fake:
            yield fake

except ImportError:  # pragma: no cover
    pass
