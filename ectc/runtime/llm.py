"""Claude client for data generation and judging: cached, retried, bounded, accounted.

Public API
----------
``llm_available(api_key=None) -> bool``
    Whether the runtime should use Claude (an API key is given or
    ``ANTHROPIC_API_KEY`` is set, ``ECTC_OFFLINE`` is not set, ``anthropic`` is
    importable) or fall back to offline monitors.

``LLMClient(model, *, api_key=None, base_url=None, cache_dir, max_concurrency=8, ...)``
    ``.complete(prompts, system=None, temperature=None, max_tokens=1024, progress=None, use_batches=None) -> list[Result]``
    ``.judge(items, rubric_template, schema, system=None, temperature=None, max_tokens=1024, reasks=2, progress=None, use_batches=None) -> list[Verdict]``
    ``.usage`` -- cumulative :class:`Usage` of this client (thread-safe snapshot via ``usage_snapshot()``).

``Result`` (index, prompt, ok, text, stop_reason, error, cached, key, raw, usage) and
``Verdict`` (index, item, scored, fields, reason, raw, attempts, cached, key, prompt, usage;
``v["magnitude"]`` raises KeyError when unscored) both have ``to_dict()``.
``Usage`` is summable (``a + b``, ``sum(...)``).

Errors: per-item failures never raise -- they come back as ``Result.ok=False`` /
``Verdict.scored=False`` with a reason (``api_error: ...``, ``no_tool_call: ...``,
``schema_violation: ...``, ``no_text: ...``, ``refusal``). ``LLMAuthError`` (401/403)
aborts the run; ``LLMRequestError`` escapes only from Message Batch submission;
``LLMUnavailable`` from the constructor when no key is configured. Template errors
(``jinja2`` ``UndefinedError``/``SecurityError``) are raised before any request.

Design notes
------------
* Judging uses tool use: one tool (default name ``record_verdict``) whose
  ``input_schema`` is built from the typed fields, forced with
  ``tool_choice={"type": "tool", "name": ...}``. The tool input is validated
  against the declared types. A reply that cannot be parsed/validated is
  re-asked (multi-turn: the bad reply plus an ``is_error`` tool_result / a
  reminder) at most ``reasks`` times, then returned **unscored** with its reason
  -- never a default score. Every verdict keeps the judge's raw reply.
* Cache identity = model, system, rendered prompt, tool definition, temperature,
  max_tokens (+ a format version). Only successful results are cached, written
  atomically as soon as each item finishes, so a killed run resumes paying only
  for the missing items, and an unchanged rerun makes zero API calls.
* Retries: ``anthropic.Anthropic(max_retries=0)``; this module retries 408, 409,
  429, 5xx (529 included) and connection errors with exponential backoff + jitter,
  waiting at least the server's ``retry-after``/``retry-after-ms``.
* Sampling parameters: API version 2026-10-21 (sent by SDK 2.x) rejects
  ``temperature``/``top_p``/``top_k`` with HTTP 400, even at default values.
  ``temperature=None`` (default) sends none. A float ``temperature`` is sent in
  the body together with the header ``anthropic-version: 2023-06-01``
  (``LEGACY_SAMPLING_API_VERSION``), the last version that accepts it.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import re
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Callable, Mapping, Sequence

from .cache import DiskCache, cache_key

log = logging.getLogger(__name__)

__all__ = [
    "llm_available",
    "LLMClient",
    "LLMUnavailable",
    "LLMRequestError",
    "LLMAuthError",
    "Usage",
    "Result",
    "Verdict",
    "build_tool_schema",
    "validate_fields",
    "render_rubric",
    "DEFAULT_PRICES",
    "LEGACY_SAMPLING_API_VERSION",
]

CACHE_FORMAT = 1
LEGACY_SAMPLING_API_VERSION = "2023-06-01"
RETRYABLE_STATUS = frozenset({408, 409, 429})  # plus every status >= 500 (529 "overloaded" included)

#: USD per million tokens: (input, output). Longest matching model-name prefix wins.
#: Cache writes are billed at 1.25x input, cache reads at 0.1x input; batches at 50%.
DEFAULT_PRICES: dict[str, tuple[float, float]] = {
    "claude-opus-4-7": (5.0, 25.0),
    "claude-opus-4-6": (5.0, 25.0),
    "claude-opus-4-5": (5.0, 25.0),
    "claude-opus-4-1": (15.0, 75.0),
    "claude-opus-4": (15.0, 75.0),
    "claude-sonnet-4": (3.0, 15.0),
    "claude-3-7-sonnet": (3.0, 15.0),
    "claude-3-5-sonnet": (3.0, 15.0),
    "claude-haiku-4-5": (1.0, 5.0),
    "claude-3-5-haiku": (0.8, 4.0),
    "claude-3-haiku": (0.25, 1.25),
}


class LLMUnavailable(RuntimeError):
    """No API key / no ``anthropic`` package: use the offline monitors instead."""


def llm_available(api_key: str | None = None) -> bool:
    """True if Claude can be used: a key (argument or ``ANTHROPIC_API_KEY``), ``anthropic``
    importable, and ``ECTC_OFFLINE`` unset/false."""
    if os.environ.get("ECTC_OFFLINE", "").strip().lower() not in ("", "0", "false", "no"):
        return False
    if not (api_key or os.environ.get("ANTHROPIC_API_KEY", "").strip()):
        return False
    try:
        import anthropic  # noqa: F401
    except ImportError:
        return False
    return True


# --------------------------------------------------------------------------- accounting


@dataclass
class Usage:
    """Token/cost accounting. Summable: ``a + b``, ``sum(usages, Usage())``, ``sum(usages)``."""

    calls: int = 0  # HTTP requests sent for messages (every attempt, failed ones included)
    retries: int = 0  # attempts repeated after a retryable transport/API error
    reasks: int = 0  # judge re-asks after an unparseable/invalid reply
    cache_hits: int = 0  # items answered from the disk cache (no request)
    unscored: int = 0  # judge items returned unscored / completions that failed
    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0
    batch_requests: int = 0  # requests sent inside Message Batches (subset of tokens billed at 50%)
    cost_usd: float = 0.0
    unpriced_calls: int = 0  # replies of models absent from the price table (cost not counted)

    def __add__(self, other: "Usage") -> "Usage":
        if not isinstance(other, Usage):
            return NotImplemented
        return Usage(**{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)})

    def __radd__(self, other: Any) -> "Usage":
        if other == 0:  # sum() starts from 0
            return Usage(**asdict(self))
        return self.__add__(other)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Result:
    """One completion (``LLMClient.complete``)."""

    index: int
    prompt: str
    ok: bool
    text: str | None
    stop_reason: str | None = None
    error: str | None = None
    cached: bool = False
    key: str = ""
    raw: dict | None = None  # the reply as JSON (Message.model_dump)
    usage: Usage = field(default_factory=Usage)

    def to_dict(self) -> dict:
        """JSON-serialisable form (usage as a dict)."""
        return asdict(self)


@dataclass
class Verdict:
    """One judgement (``LLMClient.judge``). ``scored`` False means: no score, see ``reason``."""

    index: int
    item: dict
    scored: bool
    fields: dict | None  # validated verdict fields (None when unscored)
    reason: str | None = None  # why unscored
    raw: Any = None  # the judge's raw reply (final attempt) as JSON; None only if no reply was ever received
    attempts: list = field(default_factory=list)  # every raw reply received, re-asks included
    cached: bool = False
    key: str = ""
    prompt: str = ""
    usage: Usage = field(default_factory=Usage)

    def __getitem__(self, name: str) -> Any:
        if not self.scored or self.fields is None:
            raise KeyError(f"unscored verdict has no field {name!r} ({self.reason})")
        return self.fields[name]

    def get(self, name: str, default: Any = None) -> Any:
        return self.fields.get(name, default) if self.scored and self.fields else default

    def to_dict(self) -> dict:
        """JSON-serialisable form (usage as a dict)."""
        return asdict(self)


# --------------------------------------------------------------------------- schema


_TYPE_ALIASES = {
    "int": "int", "integer": "int",
    "float": "float", "number": "float",
    "enum": "enum",
    "text": "text", "str": "text", "string": "text",
    "bool": "bool", "boolean": "bool",
}  # fmt: skip


def _norm_type(name: str, spec: Mapping) -> str:
    t = _TYPE_ALIASES.get(str(spec.get("type", "")).lower())
    if t is None:
        raise ValueError(f"verdict field {name!r}: unknown type {spec.get('type')!r} (int|float|enum|text|bool)")
    if t == "enum" and not (isinstance(spec.get("values"), (list, tuple)) and spec["values"]):
        raise ValueError(f"verdict field {name!r}: enum needs a non-empty 'values' list")
    return t


def build_tool_schema(schema: Mapping[str, Mapping]) -> dict:
    """JSON schema (tool ``input_schema``) from typed verdict fields.

    Field spec keys: ``type`` (int|float|enum|text|bool), ``min``/``max`` (numbers),
    ``values`` (enum), ``min_length``/``max_length`` (text), ``description``,
    ``required`` (default True).
    """
    if not schema:
        raise ValueError("verdict schema has no fields")
    props: dict[str, dict] = {}
    required: list[str] = []
    for name, spec in schema.items():
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,63}", name):
            raise ValueError(f"verdict field name {name!r} is not an identifier")
        t = _norm_type(name, spec)
        p: dict[str, Any] = {}
        if t in ("int", "float"):
            p["type"] = "integer" if t == "int" else "number"
            if spec.get("min") is not None:
                p["minimum"] = spec["min"]
            if spec.get("max") is not None:
                p["maximum"] = spec["max"]
        elif t == "enum":
            p["type"] = "string"
            p["enum"] = [str(v) for v in spec["values"]]
        elif t == "bool":
            p["type"] = "boolean"
        else:
            p["type"] = "string"
            if spec.get("min_length") is not None:
                p["minLength"] = spec["min_length"]
            if spec.get("max_length") is not None:
                p["maxLength"] = spec["max_length"]
        if spec.get("description"):
            p["description"] = str(spec["description"])
        props[name] = p
        if spec.get("required", True):
            required.append(name)
    return {"type": "object", "properties": props, "required": required, "additionalProperties": False}


def validate_fields(schema: Mapping[str, Mapping], value: Any) -> tuple[dict | None, str | None]:
    """Check a tool input against the typed fields. Returns ``(fields, None)`` or ``(None, reason)``.

    Strict: no coercion of strings to numbers; integral floats (``7.0``) are accepted as ints;
    unknown keys are rejected.
    """
    if not isinstance(value, dict):
        return None, f"tool input is {type(value).__name__}, expected an object"
    problems: list[str] = []
    out: dict[str, Any] = {}
    extra = sorted(set(value) - set(schema))
    if extra:
        problems.append(f"unexpected field(s) {extra}")
    for name, spec in schema.items():
        t = _norm_type(name, spec)
        if name not in value or value[name] is None:
            if spec.get("required", True):
                problems.append(f"{name}: missing")
            continue
        v = value[name]
        if t in ("int", "float"):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or (isinstance(v, float) and not math.isfinite(v)):
                problems.append(f"{name}: expected {'integer' if t == 'int' else 'number'}, got {v!r}")
                continue
            if t == "int":
                if isinstance(v, float):
                    if not v.is_integer():
                        problems.append(f"{name}: expected integer, got {v!r}")
                        continue
                    v = int(v)
            else:
                v = float(v)
            lo, hi = spec.get("min"), spec.get("max")
            if (lo is not None and v < lo) or (hi is not None and v > hi):
                problems.append(f"{name}: {v!r} outside [{lo}, {hi}]")
                continue
        elif t == "enum":
            allowed = [str(x) for x in spec["values"]]
            if not isinstance(v, str) or v not in allowed:
                problems.append(f"{name}: {v!r} not one of {allowed}")
                continue
        elif t == "bool":
            if not isinstance(v, bool):
                problems.append(f"{name}: expected boolean, got {v!r}")
                continue
        else:
            if not isinstance(v, str):
                problems.append(f"{name}: expected string, got {type(v).__name__}")
                continue
            lo, hi = spec.get("min_length"), spec.get("max_length")
            if (lo is not None and len(v) < lo) or (hi is not None and len(v) > hi):
                problems.append(f"{name}: length {len(v)} outside [{lo}, {hi}]")
                continue
        out[name] = v
    if problems:
        return None, "; ".join(problems)
    return out, None


# --------------------------------------------------------------------------- rubric


_jinja_env = None
_jinja_lock = threading.Lock()


def _env():
    global _jinja_env
    with _jinja_lock:
        if _jinja_env is None:
            from ..sandbox import environment

            _jinja_env = environment(keep_trailing_newline=True)
        return _jinja_env


def render_rubric(template: str, item: Mapping[str, Any]) -> str:
    """Render a rubric (jinja2, sandboxed, StrictUndefined) over one item.

    The item's keys are template variables, and the whole item is also ``item``.
    Values are data: a value containing ``{{ ... }}`` is inserted literally, never
    evaluated; unsafe attribute access in the template raises ``SecurityError``; a
    missing variable raises ``UndefinedError``.
    """
    tpl = _env().from_string(template)
    ctx = dict(item)
    ctx.setdefault("item", dict(item))
    return tpl.render(**ctx)


# --------------------------------------------------------------------------- client


class LLMRequestError(RuntimeError):
    """A request failed for good (non-retryable error or attempts exhausted).

    Per-item failures become unscored verdicts / failed results; this escapes only
    from Message Batch submission/polling (items finished before it stay cached).
    """


_GiveUp = LLMRequestError


class LLMAuthError(LLMRequestError):
    """401/403: the key is wrong or lacks permission. Aborts the whole run (never N unscored items)."""


FATAL_STATUS = frozenset({401, 403})


@dataclass
class _Job:
    index: int
    key: str
    identity: dict
    prompt: str
    item: dict | None = None  # judge only


class LLMClient:
    """Cached, retried, concurrency-bounded Claude client (see module docstring).

    Parameters
    ----------
    model: Claude model id, e.g. ``"claude-sonnet-4-6"``.
    api_key: defaults to ``ANTHROPIC_API_KEY``; raises :class:`LLMUnavailable` when neither is set.
    base_url: API base URL (tests: the fake server's ``base_url``).
    cache_dir: directory of the disk cache (``None`` disables caching).
    max_concurrency: at most this many requests in flight (thread pool size).
    max_attempts: attempts per request including the first (retryable errors only).
    backoff_base, backoff_max: exponential backoff ``base * 2**n`` seconds, capped, with jitter
        in ``[0.5, 1.0]`` of that; a ``retry-after`` (capped at ``retry_after_max``) is a floor.
    sleep: the sleep function (tests inject a recorder).
    prices: model-prefix -> (USD/MTok input, USD/MTok output); defaults to :data:`DEFAULT_PRICES`.
    timeout: per-request HTTP timeout in seconds.
    use_batches: default for ``complete``/``judge``: use the Message Batches API.
    batch_poll_interval, batch_timeout: polling of Message Batches, seconds.
    tool_name: the judge tool's name.
    client: an already-built ``anthropic.Anthropic`` (then api_key/base_url/timeout are ignored).
    """

    def __init__(
        self,
        model: str,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        cache_dir: str | os.PathLike[str] | None,
        max_concurrency: int = 8,
        max_attempts: int = 6,
        backoff_base: float = 1.0,
        backoff_max: float = 60.0,
        retry_after_max: float = 300.0,
        sleep: Callable[[float], None] = time.sleep,
        prices: Mapping[str, tuple[float, float]] | None = None,
        timeout: float = 600.0,
        use_batches: bool = False,
        batch_poll_interval: float = 30.0,
        batch_timeout: float = 26 * 3600.0,
        tool_name: str = "record_verdict",
        client: Any = None,
    ) -> None:
        if max_concurrency < 1 or max_attempts < 1:
            raise ValueError("max_concurrency and max_attempts must be >= 1")
        self.model = model
        self.max_concurrency = int(max_concurrency)
        self.max_attempts = int(max_attempts)
        self.backoff_base = float(backoff_base)
        self.backoff_max = float(backoff_max)
        self.retry_after_max = float(retry_after_max)
        self._sleep = sleep
        self.prices = dict(DEFAULT_PRICES if prices is None else prices)
        self.use_batches = use_batches
        self.batch_poll_interval = float(batch_poll_interval)
        self.batch_timeout = float(batch_timeout)
        self.tool_name = tool_name
        self.cache = DiskCache(cache_dir) if cache_dir is not None else None
        self.usage = Usage()
        self._lock = threading.Lock()
        self._rng = random.Random()
        self._slots = threading.BoundedSemaphore(self.max_concurrency)
        if client is not None:
            self._client = client
        else:
            key = api_key or os.environ.get("ANTHROPIC_API_KEY", "").strip()
            if not key:
                raise LLMUnavailable("no Anthropic API key: pass api_key= or set ANTHROPIC_API_KEY")
            try:
                import anthropic
            except ImportError as e:  # pragma: no cover
                raise LLMUnavailable(f"the 'anthropic' package is not importable: {e}") from e
            self._client = anthropic.Anthropic(api_key=key, base_url=base_url, max_retries=0, timeout=timeout)

    # ------------------------------------------------------------------ accounting
    def usage_snapshot(self) -> Usage:
        with self._lock:
            return Usage(**asdict(self.usage))

    def _account(self, u: Usage, delta: Usage) -> None:
        for f in fields(Usage):
            setattr(u, f.name, getattr(u, f.name) + getattr(delta, f.name))
        with self._lock:
            for f in fields(Usage):
                setattr(self.usage, f.name, getattr(self.usage, f.name) + getattr(delta, f.name))

    def price_for(self, model: str) -> tuple[float, float] | None:
        best = None
        for prefix, p in self.prices.items():
            if model.startswith(prefix) and (best is None or len(prefix) > len(best[0])):
                best = (prefix, p)
        return best[1] if best else None

    def _usage_of(self, msg: Any, *, batch: bool = False) -> Usage:
        u = getattr(msg, "usage", None)
        d = Usage()
        if u is None:
            return d
        d.input_tokens = int(getattr(u, "input_tokens", 0) or 0)
        d.output_tokens = int(getattr(u, "output_tokens", 0) or 0)
        d.cache_creation_input_tokens = int(getattr(u, "cache_creation_input_tokens", 0) or 0)
        d.cache_read_input_tokens = int(getattr(u, "cache_read_input_tokens", 0) or 0)
        price = self.price_for(getattr(msg, "model", None) or self.model) or self.price_for(self.model)
        if price is None:
            d.unpriced_calls = 1
        else:
            pin, pout = price
            cost = (
                d.input_tokens * pin
                + d.output_tokens * pout
                + d.cache_creation_input_tokens * pin * 1.25
                + d.cache_read_input_tokens * pin * 0.1
            ) / 1e6
            d.cost_usd = cost * (0.5 if batch else 1.0)
        return d

    # ------------------------------------------------------------------ request building
    def _identity(self, kind: str, system: str | None, prompt: str, tool: dict | None, temperature, max_tokens) -> dict:
        return {
            "format": CACHE_FORMAT,
            "kind": kind,
            "model": self.model,
            "system": system,
            "prompt": prompt,
            "tool": tool,
            "temperature": temperature,
            "max_tokens": int(max_tokens),
        }

    def _params(self, ident: dict, messages: list[dict]) -> tuple[dict, dict]:
        """(params for messages.create, extra kwargs: extra_body/extra_headers)."""
        p: dict[str, Any] = {"model": ident["model"], "max_tokens": ident["max_tokens"], "messages": messages}
        if ident["system"] is not None:
            p["system"] = ident["system"]
        if ident["tool"] is not None:
            p["tools"] = [ident["tool"]]
            p["tool_choice"] = {"type": "tool", "name": ident["tool"]["name"]}
        extra: dict[str, Any] = {}
        if ident["temperature"] is not None:
            extra["extra_body"] = {"temperature": ident["temperature"]}
            extra["extra_headers"] = {"anthropic-version": LEGACY_SAMPLING_API_VERSION}
        return p, extra

    # ------------------------------------------------------------------ retries
    @staticmethod
    def _retry_after(exc: Any) -> float | None:
        resp = getattr(exc, "response", None)
        headers = getattr(resp, "headers", None)
        if headers is None:
            return None
        for name, scale in (("retry-after-ms", 1e-3), ("retry-after", 1.0)):
            v = headers.get(name)
            if v is None:
                continue
            try:
                return max(0.0, float(v) * scale)
            except ValueError:
                try:
                    from email.utils import parsedate_to_datetime

                    return max(0.0, parsedate_to_datetime(v).timestamp() - time.time())
                except Exception:
                    continue
        return None

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        d = min(self.backoff_max, self.backoff_base * (2**attempt))
        with self._lock:
            d *= 0.5 + 0.5 * self._rng.random()
        if retry_after is not None:
            d = max(d, min(retry_after, self.retry_after_max))
        return d

    def _with_retries(self, fn: Callable[[], Any], u: Usage | None) -> Any:
        import anthropic

        last = ""
        for attempt in range(self.max_attempts):
            if u is not None:
                self._account(u, Usage(calls=1, retries=1 if attempt else 0))
            try:
                with self._slots:  # client-wide bound on requests in flight
                    return fn()
            except anthropic.APIStatusError as e:
                status = e.status_code
                last = f"HTTP {status}: {getattr(e, 'api_message', None) or e.message}"
                if status in FATAL_STATUS:
                    raise LLMAuthError(last) from e
                if not (status in RETRYABLE_STATUS or status >= 500):
                    raise _GiveUp(last) from e
                ra = self._retry_after(e)
            except anthropic.APIConnectionError as e:  # includes timeouts
                last = f"{type(e).__name__}: {e}"
                ra = None
            except json.JSONDecodeError as e:  # a 200 whose body is not JSON (proxy glitch): retry
                last = f"malformed reply body: {e}"
                ra = None
            except anthropic.AnthropicError as e:  # e.g. response validation: not retryable
                raise _GiveUp(f"{type(e).__name__}: {e}") from e
            if attempt + 1 < self.max_attempts:
                delay = self._backoff(attempt, ra)
                log.info("retryable error (%s); attempt %d/%d, sleeping %.2fs", last, attempt + 1, self.max_attempts, delay)
                self._sleep(delay)
        raise _GiveUp(f"gave up after {self.max_attempts} attempts: {last}")

    def _create(self, ident: dict, messages: list[dict], u: Usage) -> Any:
        params, extra = self._params(ident, messages)
        msg = self._with_retries(lambda: self._client.messages.create(**params, **extra), u)
        self._account(u, self._usage_of(msg))
        return msg

    # ------------------------------------------------------------------ reply parsing
    @staticmethod
    def _dump(msg: Any) -> dict:
        try:
            return msg.model_dump(mode="json", exclude_none=True)
        except Exception:  # pragma: no cover
            return json.loads(json.dumps(msg, default=str))

    @staticmethod
    def _blocks(msg: Any) -> list:
        return list(getattr(msg, "content", None) or [])

    @classmethod
    def _text_of(cls, msg: Any) -> str:
        return "".join(getattr(b, "text", "") or "" for b in cls._blocks(msg) if getattr(b, "type", None) == "text")

    def _parse_verdict(self, msg: Any, schema: Mapping) -> tuple[dict | None, str | None, Any]:
        """-> (fields, reason, offending tool_use block or None)."""
        calls = [b for b in self._blocks(msg) if getattr(b, "type", None) == "tool_use"]
        mine = [b for b in calls if getattr(b, "name", None) == self.tool_name]
        if not mine:
            txt = self._text_of(msg).strip().replace("\n", " ")
            what = f"tool(s) {[b.name for b in calls]}" if calls else f"text {txt[:120]!r}"
            return None, f"no_tool_call: reply (stop_reason={msg.stop_reason}) has {what}", None
        out, reason = validate_fields(schema, getattr(mine[0], "input", None))
        if reason:
            trunc = " (reply truncated at max_tokens)" if msg.stop_reason == "max_tokens" else ""
            return None, f"schema_violation: {reason}{trunc}", mine[0]
        return out, None, mine[0]

    def _reask_messages(self, msg: Any, reason: str) -> list[dict]:
        """Assistant turn (the bad reply) + user turn asking to call the tool correctly."""
        assistant: list[dict] = []
        for b in self._blocks(msg):
            t = getattr(b, "type", None)
            if t == "text" and b.text:
                assistant.append({"type": "text", "text": b.text})
            elif t == "tool_use":
                assistant.append({"type": "tool_use", "id": b.id, "name": b.name, "input": b.input})
        if not assistant:
            assistant = [{"type": "text", "text": "(empty reply)"}]
        instruction = (
            f"Your reply could not be used: {reason}. Call the `{self.tool_name}` tool again, exactly once, "
            "with arguments that satisfy its input schema."
        )
        results = [
            {"type": "tool_result", "tool_use_id": b["id"], "is_error": True, "content": instruction}
            for b in assistant
            if b["type"] == "tool_use"
        ]
        user = results if results else [{"type": "text", "text": instruction}]
        return [{"role": "assistant", "content": assistant}, {"role": "user", "content": user}]

    # ------------------------------------------------------------------ per-item workers
    def _run_complete(self, job: _Job) -> Result:
        u = Usage()
        ident = job.identity
        try:
            msg = self._create(ident, [{"role": "user", "content": job.prompt}], u)
        except LLMAuthError:
            raise
        except _GiveUp as e:
            self._account(u, Usage(unscored=1))
            return Result(job.index, job.prompt, False, None, error=f"api_error: {e}", key=job.key, usage=u)
        return self._finish_complete(job, msg, u)

    def _finish_complete(self, job: _Job, msg: Any, u: Usage) -> Result:
        raw = self._dump(msg)
        if msg.stop_reason == "refusal":
            self._account(u, Usage(unscored=1))
            return Result(job.index, job.prompt, False, None, "refusal", error="refusal", key=job.key, raw=raw, usage=u)
        if not any(getattr(b, "type", None) == "text" for b in self._blocks(msg)):
            self._account(u, Usage(unscored=1))
            why = f"no_text: reply (stop_reason={msg.stop_reason}) has no text block"
            return Result(job.index, job.prompt, False, None, msg.stop_reason, error=why, key=job.key, raw=raw, usage=u)
        text = self._text_of(msg)
        value = {"text": text, "stop_reason": msg.stop_reason, "raw": raw}
        if self.cache is not None:
            self.cache.put_by_key(job.key, value, job.identity)
        return Result(job.index, job.prompt, True, text, msg.stop_reason, key=job.key, raw=raw, usage=u)

    def _run_judge(self, job: _Job, schema: Mapping, reasks: int) -> Verdict:
        u = Usage()
        messages: list[dict] = [{"role": "user", "content": job.prompt}]
        attempts: list = []
        reason = None
        for attempt in range(reasks + 1):
            if attempt:
                self._account(u, Usage(reasks=1))
            try:
                msg = self._create(job.identity, messages, u)
            except LLMAuthError:
                raise
            except _GiveUp as e:
                reason = f"api_error: {e}"
                break
            raw = self._dump(msg)
            attempts.append(raw)
            out, reason, _ = self._parse_verdict(msg, schema)
            if out is not None:
                return self._finish_verdict(job, out, raw, attempts, u)
            if attempt < reasks:
                messages = messages + self._reask_messages(msg, reason)
        else:
            reason = f"{reason} (after {reasks} re-ask{'s' if reasks != 1 else ''})"
        self._account(u, Usage(unscored=1))
        return Verdict(
            job.index, job.item or {}, False, None, reason=reason, raw=attempts[-1] if attempts else None,
            attempts=attempts, key=job.key, prompt=job.prompt, usage=u,
        )  # fmt: skip

    def _finish_verdict(self, job: _Job, out: dict, raw: Any, attempts: list, u: Usage) -> Verdict:
        if self.cache is not None:
            self.cache.put_by_key(job.key, {"fields": out, "raw": raw, "attempts": attempts}, job.identity)
        return Verdict(job.index, job.item or {}, True, out, None, raw, attempts, False, job.key, job.prompt, u)

    # ------------------------------------------------------------------ cache lookups
    def _cached_result(self, job: _Job) -> Result | None:
        v = self.cache.get_by_key(job.key) if self.cache is not None else None
        if not (isinstance(v, dict) and isinstance(v.get("text"), str)):
            return None
        u = Usage(cache_hits=1)
        self._account(Usage(), u)
        return Result(job.index, job.prompt, True, v["text"], v.get("stop_reason"), None, True, job.key, v.get("raw"), u)

    def _cached_verdict(self, job: _Job, schema: Mapping) -> Verdict | None:
        v = self.cache.get_by_key(job.key) if self.cache is not None else None
        if not isinstance(v, dict):
            return None
        out, reason = validate_fields(schema, v.get("fields"))
        if out is None:
            return None
        u = Usage(cache_hits=1)
        self._account(Usage(), u)
        return Verdict(job.index, job.item or {}, True, out, None, v.get("raw"), v.get("attempts") or [], True, job.key, job.prompt, u)

    # ------------------------------------------------------------------ scheduling
    def _schedule(
        self,
        jobs: list[_Job],
        cached: Callable[[_Job], Any],
        run: Callable[[_Job], Any],
        progress: Callable[[int, int], None] | None,
    ) -> list:
        """Cache lookups, then run misses on the pool; identical requests run once.

        ``progress(done, total)`` is called in the caller's thread after each item.
        If it (or anything) raises, pending items are cancelled; in-flight ones finish
        and are cached, so a resumed run pays only for what is missing.
        """
        total = len(jobs)
        out: list = [None] * total
        done = 0
        by_key: dict[str, list[_Job]] = {}
        for j in jobs:
            by_key.setdefault(j.key, []).append(j)
        misses: list[list[_Job]] = []
        for group in by_key.values():
            hit = cached(group[0])
            if hit is None:
                misses.append(group)
                continue
            for j in group:
                out[j.index] = hit if j is group[0] else _reindex(hit, j)
                done += 1
                if progress:
                    progress(done, total)
        if not misses:
            return out
        pool = ThreadPoolExecutor(max_workers=self.max_concurrency, thread_name_prefix="ectc-llm")
        try:
            futs: dict[Future, list[_Job]] = {pool.submit(run, g[0]): g for g in misses}
            pending = set(futs)
            while pending:
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                for f in finished:
                    group = futs[f]
                    res = f.result()
                    for j in group:
                        out[j.index] = res if j is group[0] else _reindex(res, j)
                        done += 1
                        if progress:
                            progress(done, total)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        return out

    # ------------------------------------------------------------------ public API
    def complete(
        self,
        prompts: Sequence[str],
        system: str | None = None,
        temperature: float | None = None,
        max_tokens: int = 1024,
        progress: Callable[[int, int], None] | None = None,
        use_batches: bool | None = None,
    ) -> list[Result]:
        """Generate one text reply per prompt (single user turn). Results are in prompt order."""
        jobs = []
        for i, p in enumerate(prompts):
            if not isinstance(p, str):
                raise TypeError(f"prompt {i} is {type(p).__name__}, expected str")
            ident = self._identity("complete", system, p, None, temperature, max_tokens)
            jobs.append(_Job(i, cache_key(ident), ident, p))
        if self._batches(use_batches):
            return self._batch_run(jobs, self._cached_result, kind="complete", progress=progress)
        return self._schedule(jobs, self._cached_result, self._run_complete, progress)

    def judge(
        self,
        items: Sequence[Mapping[str, Any]],
        rubric_template: str,
        schema: Mapping[str, Mapping],
        system: str | None = None,
        temperature: float | None = None,
        max_tokens: int = 1024,
        reasks: int = 2,
        progress: Callable[[int, int], None] | None = None,
        use_batches: bool | None = None,
        tool_description: str = "Record your verdict. Call this tool exactly once.",
    ) -> list[Verdict]:
        """Judge each item with a structured (tool-use) verdict. Verdicts are in item order.

        ``items``: what the judge may see (rendered into ``rubric_template``).
        ``schema``: typed verdict fields, see :func:`build_tool_schema`.
        Unparseable/invalid replies are re-asked up to ``reasks`` times, then unscored.
        """
        if reasks < 0:
            raise ValueError("reasks must be >= 0")
        schema = {k: dict(v) for k, v in schema.items()}
        tool = {"name": self.tool_name, "description": tool_description, "input_schema": build_tool_schema(schema)}
        jobs = []
        for i, item in enumerate(items):
            item = dict(item)
            prompt = render_rubric(rubric_template, item)  # render all first: template errors fail fast
            ident = self._identity("judge", system, prompt, tool, temperature, max_tokens)
            jobs.append(_Job(i, cache_key(ident), ident, prompt, item))
        if self._batches(use_batches):
            return self._batch_run(jobs, lambda j: self._cached_verdict(j, schema), kind="judge", progress=progress,
                                   schema=schema, reasks=reasks)  # fmt: skip
        return self._schedule(
            jobs, lambda j: self._cached_verdict(j, schema), lambda j: self._run_judge(j, schema, reasks), progress
        )

    def _batches(self, use_batches: bool | None) -> bool:
        return self.use_batches if use_batches is None else bool(use_batches)

    # ------------------------------------------------------------------ Message Batches
    def _batch_run(
        self,
        jobs: list[_Job],
        cached: Callable[[_Job], Any],
        *,
        kind: str,
        progress: Callable[[int, int], None] | None,
        schema: Mapping | None = None,
        reasks: int = 0,
    ) -> list:
        """Message Batches path: cache lookups, then rounds of batches over the misses.

        Round r submits every still-open item (with its re-ask turns for judges);
        succeeded replies are parsed, valid ones cached at once. Errored/expired/canceled
        requests are retried in the next round while attempts remain (counted as retries).
        """
        total = len(jobs)
        out: list = [None] * total
        done = 0
        groups: dict[str, list[_Job]] = {}
        for j in jobs:
            groups.setdefault(j.key, []).append(j)

        ready: list[tuple[list[_Job], Any]] = []

        def emit(group: list[_Job], res: Any) -> None:
            ready.append((group, res))

        def flush() -> None:
            nonlocal done
            while ready:
                group, res = ready.pop(0)
                for j in group:
                    out[j.index] = res if j is group[0] else _reindex(res, j)
                    done += 1
                    if progress:
                        progress(done, total)

        @dataclass
        class _Open:
            group: list[_Job]
            messages: list[dict]
            usage: Usage = field(default_factory=Usage)
            attempts: list = field(default_factory=list)
            reasks_used: int = 0
            failures: int = 0
            reason: str | None = None

        open_: dict[str, _Open] = {}
        for key, group in groups.items():
            hit = cached(group[0])
            if hit is not None:
                emit(group, hit)
            else:
                open_[key] = _Open(group, [{"role": "user", "content": group[0].prompt}])
        flush()

        while open_:
            custom = {f"r{n}": key for n, key in enumerate(open_)}
            requests = []
            for cid, key in custom.items():
                st = open_[key]
                params, extra = self._params(st.group[0].identity, st.messages)
                if "extra_body" in extra:
                    params.update(extra["extra_body"])
                requests.append({"custom_id": cid, "params": params})
            headers = {"anthropic-version": LEGACY_SAMPLING_API_VERSION} if any(
                "temperature" in r["params"] for r in requests) else None  # fmt: skip
            results = self._batch_submit_and_collect(requests, headers)
            for cid, key in custom.items():
                st = open_[key]
                job = st.group[0]
                r = results.get(cid)
                self._account(st.usage, Usage(batch_requests=1))
                rtype = getattr(r, "type", None) if r is not None else None
                if rtype != "succeeded":
                    st.failures += 1
                    err = getattr(getattr(getattr(r, "error", None), "error", None), "message", None)
                    st.reason = f"batch_{rtype or 'missing'}: {err or 'no result'}"
                    if st.failures < self.max_attempts:
                        self._account(st.usage, Usage(retries=1))
                        continue
                    self._account(st.usage, Usage(unscored=1))
                    reason = f"api_error: gave up after {st.failures} batch attempts: {st.reason}"
                    if kind == "judge":
                        res = Verdict(job.index, job.item or {}, False, None, reason,
                                      st.attempts[-1] if st.attempts else None, st.attempts, False, job.key,
                                      job.prompt, st.usage)  # fmt: skip
                    else:
                        res = Result(job.index, job.prompt, False, None, error=reason, key=job.key, usage=st.usage)
                    del open_[key]
                    emit(st.group, res)
                    continue
                msg = r.message
                self._account(st.usage, self._usage_of(msg, batch=True))
                if kind == "complete":
                    del open_[key]
                    emit(st.group, self._finish_complete(job, msg, st.usage))
                    continue
                raw = self._dump(msg)
                st.attempts.append(raw)
                fields_, reason, _ = self._parse_verdict(msg, schema)
                if fields_ is not None:
                    del open_[key]
                    emit(st.group, self._finish_verdict(job, fields_, raw, st.attempts, st.usage))
                elif st.reasks_used < reasks:
                    st.reasks_used += 1
                    self._account(st.usage, Usage(reasks=1))
                    st.messages = st.messages + self._reask_messages(msg, reason)
                else:
                    self._account(st.usage, Usage(unscored=1))
                    why = f"{reason} (after {reasks} re-ask{'s' if reasks != 1 else ''})"
                    del open_[key]
                    emit(st.group, Verdict(job.index, job.item or {}, False, None, why, raw, st.attempts, False,
                                           job.key, job.prompt, st.usage))  # fmt: skip
            flush()  # after the whole round is cached: an exception in progress() loses nothing paid for
        return out

    def _batch_submit_and_collect(self, requests: list[dict], headers: dict | None, chunk: int = 10_000) -> dict:
        results: dict[str, Any] = {}
        for start in range(0, len(requests), chunk):
            part = requests[start : start + chunk]
            kw = {"extra_headers": headers} if headers else {}
            batch = self._with_retries(lambda: self._client.messages.batches.create(requests=part, **kw), None)
            log.info("submitted message batch %s (%d requests)", batch.id, len(part))
            deadline = time.monotonic() + self.batch_timeout
            while batch.processing_status != "ended":
                if time.monotonic() > deadline:
                    raise TimeoutError(f"message batch {batch.id} not ended after {self.batch_timeout}s")
                self._sleep(self.batch_poll_interval)
                batch = self._with_retries(lambda: self._client.messages.batches.retrieve(batch.id), None)
            for line in self._with_retries(lambda: list(self._client.messages.batches.results(batch.id)), None):
                results[line.custom_id] = line.result
        return results


def _reindex(res: Any, job: _Job) -> Any:
    """A copy of ``res`` for another job with the same request (same key): accounted once, so zero usage."""
    import copy

    r = copy.copy(res)
    r.index = job.index
    if isinstance(r, Verdict):
        r.item = job.item or {}
    r.usage = Usage()
    return r


def data_mode(plan) -> str:
    """Whether the data stage writes LLM data fields with Claude ("anthropic") or with the
    offline procedural writer; part of the data stage's key."""
    return "anthropic" if plan.uses_llm_data and llm_available() else "offline"
