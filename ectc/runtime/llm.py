"""Claude client for data generation and judging: cached, bounded, accounted.

``LLMClient(model, cache_dir=..., base_url=..., max_concurrency=...)`` has two calls:
``complete(prompts, ...) -> list[Result]`` (text replies) and
``judge(items, rubric_template, returns, ...) -> list[Verdict]`` (structured verdicts).
``llm_available()`` says whether Claude is usable at all (a key, ``anthropic`` importable,
``ECTC_OFFLINE`` unset).

* A verdict's fields are the plan's ``returns`` (``{name: {"type", "min", "max", "values"}}``).
  :func:`verdict_model` turns them into one pydantic model: its JSON schema is the judge tool's
  ``input_schema`` and it validates the tool input; a reply it rejects is re-asked with
  pydantic's error messages, at most ``reasks`` times, then returned unscored with its reason
  (never a default score). Every verdict keeps the judge's raw replies.
* Retries are the SDK's own (``anthropic.Anthropic(max_retries=...)``): 408, 409, 429, 5xx and
  connection errors, exponential backoff, the server's ``retry-after``/``retry-after-ms`` and
  ``x-should-retry`` honoured. A middleware counts the attempts for the accounting and has the
  SDK retry a 200 whose body is not JSON.
* Only successful results are cached (disk, keyed by model, system, prompt, tool, temperature,
  max_tokens), each written as soon as it arrives: a killed run resumes paying only for what is
  missing, an unchanged re-run makes no request. A failed item is ``ok=False``/``scored=False``
  with its reason and is asked again next run; 401/403 raise :class:`LLMAuthError` instead.
* API version 2026-10-21 (the SDK's) rejects ``temperature`` with HTTP 400; a temperature is
  therefore sent with ``anthropic-version: 2023-06-01``, the last version that accepts it.
"""

from __future__ import annotations

import copy
import os
import threading
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field, fields
from typing import Annotated, Any, Callable, Literal, Mapping, Sequence

from ..prices import PRICES, cost_usd, price_for
from .cache import DiskCache, cache_key

CACHE_FORMAT = 2  # 2: tool input_schema from the pydantic verdict model
LEGACY_SAMPLING_API_VERSION = "2023-06-01"
TOOL_NAME = "record_verdict"
TOOL_DESCRIPTION = "Record your verdict. Call this tool exactly once."



class LLMUnavailable(RuntimeError):
    """No API key or no ``anthropic`` package: use the offline monitors instead."""


class LLMAuthError(RuntimeError):
    """401/403: the key is wrong or lacks permission. Aborts the run (never N unscored items)."""


class _Failed(Exception):
    """A request failed for good (the SDK's retries spent, or not retryable): this item only."""


def llm_available(api_key: str | None = None) -> bool:
    """True if Claude can be used: a key (argument or ``ANTHROPIC_API_KEY``), ``anthropic``
    importable, and ``ECTC_OFFLINE`` unset or false."""
    if os.environ.get("ECTC_OFFLINE", "").strip().lower() not in ("", "0", "false", "no"):
        return False
    if not (api_key or os.environ.get("ANTHROPIC_API_KEY", "").strip()):
        return False
    try:
        import anthropic  # noqa: F401
    except ImportError:
        return False
    return True


# ---- results and accounting ------------------------------------------------------------


@dataclass
class Usage:
    """Token and cost accounting; summable (``a + b``, ``sum(usages)``)."""

    calls: int = 0  # HTTP requests sent (every attempt, retried ones included)
    retries: int = 0  # attempts the SDK repeated after a retryable error
    reasks: int = 0  # judge re-asks after an invalid reply
    cache_hits: int = 0  # items answered from the disk cache
    unscored: int = 0  # verdicts unscored / completions failed
    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0
    cost_usd: float = 0.0
    unpriced_calls: int = 0  # replies of models absent from the price table (cost not counted)

    def __add__(self, other: Usage) -> Usage:
        if not isinstance(other, Usage):
            return NotImplemented
        return Usage(**{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)})

    def __radd__(self, other: Any) -> Usage:
        return self + Usage() if other == 0 else self.__add__(other)  # sum() starts from 0

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Result:
    """One completion; ``ok`` False means no text, see ``error``."""

    index: int
    prompt: str
    ok: bool
    text: str | None
    stop_reason: str | None = None
    error: str | None = None
    cached: bool = False
    key: str = ""
    raw: dict | None = None  # the reply as JSON
    usage: Usage = field(default_factory=Usage)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Verdict:
    """One judgement; ``scored`` False means no fields, see ``reason``."""

    index: int
    item: dict
    scored: bool
    fields: dict | None
    reason: str | None = None
    raw: Any = None  # the final reply as JSON; None only when no reply ever came
    attempts: list = field(default_factory=list)  # every reply received, re-asks included
    cached: bool = False
    key: str = ""
    prompt: str = ""
    usage: Usage = field(default_factory=Usage)

    def __getitem__(self, name: str) -> Any:
        if not self.scored:
            raise KeyError(f"unscored verdict has no field {name!r} ({self.reason})")
        return self.fields[name]

    def get(self, name: str, default: Any = None) -> Any:
        return self.fields.get(name, default) if self.scored else default

    def to_dict(self) -> dict:
        return asdict(self)


# ---- the verdict model ----------------------------------------------------------------


def verdict_model(returns: Mapping[str, Mapping]):
    """The pydantic model of a judge's verdict, from the plan's ``returns``.

    Strict: no string-to-number or number-to-bool coercion, no unknown fields, finite numbers.
    Fields are stored under positional names with the declared name as alias, so any declared
    name (``json``, ``model_config``, ...) is safe from BaseModel's own attributes.
    """
    from pydantic import ConfigDict, Field, create_model

    if not returns:
        raise ValueError("a verdict needs at least one field")
    kinds = {"int": int, "real": float, "bool": bool, "text": str}
    spec = {}
    for i, (name, f) in enumerate(returns.items()):
        if f["type"] == "enum":
            type_ = Literal[tuple(f["values"])]
        elif f["type"] in kinds:
            type_ = kinds[f["type"]]
        else:
            raise ValueError(f"verdict field {name!r}: unknown type {f['type']!r}")
        bounds = {}
        if f["type"] in ("int", "real"):  # the plan writes every bound as a float
            bounds = {k: type_(f[b]) for k, b in (("ge", "min"), ("le", "max")) if f.get(b) is not None}
        spec[f"f{i}"] = (Annotated[type_, Field(alias=name, **bounds)], ...)
    config = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False, title="verdict")
    return create_model("Verdict", __config__=config, **spec)


def verdict_tool(model) -> dict:
    """The forced tool a judge answers through, from its verdict model."""
    return {"name": TOOL_NAME, "description": TOOL_DESCRIPTION, "input_schema": model.model_json_schema(by_alias=True)}


def _validate(model, value: Any) -> tuple[dict | None, str | None]:
    """(fields, None), or (None, pydantic's errors in one line)."""
    from pydantic import ValidationError

    try:
        return model.model_validate(value).model_dump(by_alias=True), None
    except ValidationError as e:
        return None, "; ".join(_describe(err) for err in e.errors(include_url=False))


def _describe(err: dict) -> str:
    where = ".".join(str(p) for p in err["loc"]) or "input"
    got = "" if err["type"] == "missing" else f", got {err['input']!r}"
    return f"{where}: {err['msg']}{got}"


# ---- rubric ----------------------------------------------------------------------------

_jinja_env = None
_jinja_lock = threading.Lock()


def render_rubric(template: str, item: Mapping[str, Any]) -> str:
    """Render a rubric (sandboxed jinja2, undefined variables are errors) over one item.

    The item's keys are variables and the whole item is ``item``. Values are data: a value
    holding ``{{ ... }}`` is inserted as written, never evaluated.
    """
    global _jinja_env
    with _jinja_lock:
        if _jinja_env is None:
            from ..sandbox import environment

            _jinja_env = environment(keep_trailing_newline=True)
    return _jinja_env.from_string(template).render(**{"item": dict(item), **item})


# ---- the client ------------------------------------------------------------------------


@dataclass
class _Job:
    index: int
    key: str
    identity: dict
    prompt: str
    item: dict | None = None  # judge only


class LLMClient:
    """Cached, retried, concurrency-bounded Claude client (see the module docstring).

    ``max_concurrency`` bounds requests in flight across every call and thread of this client;
    ``max_retries`` is the SDK's (attempts = 1 + retries); ``prices`` maps a model-name prefix
    to USD per million tokens (input, output); ``cache_dir=None`` disables caching.
    """

    def __init__(
        self,
        model: str,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        cache_dir: str | os.PathLike[str] | None,
        max_concurrency: int = 8,
        max_retries: int = 5,
        prices: Mapping[str, tuple[float, float]] | None = None,
    ) -> None:
        if max_concurrency < 1 or max_retries < 0:
            raise ValueError("max_concurrency must be >= 1 and max_retries >= 0")
        key = api_key or os.environ.get("ANTHROPIC_API_KEY", "").strip()
        if not key:
            raise LLMUnavailable("no Anthropic API key: pass api_key= or set ANTHROPIC_API_KEY")
        try:
            import anthropic
        except ImportError as e:  # pragma: no cover
            raise LLMUnavailable(f"the 'anthropic' package is not importable: {e}") from e
        self.model = model
        self.max_concurrency = max_concurrency
        self.prices = dict(PRICES if prices is None else prices)
        self.cache = DiskCache(cache_dir) if cache_dir is not None else None
        self.usage = Usage()
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(max_concurrency)
        self._attempts = threading.local()  # HTTP attempts of the request this thread is making
        self._client = anthropic.Anthropic(
            api_key=key, base_url=base_url, max_retries=max_retries, middleware=[self._count_attempt]
        )

    # ---- accounting
    def _count_attempt(self, request: Any, call_next: Callable) -> Any:
        """Middleware: the SDK runs it once per HTTP attempt, inside its retry loop."""
        import anthropic

        self._attempts.n += 1
        response = call_next(request)
        if response.http_response.is_success:
            try:
                response.parse()  # kept by the response: the caller's parse reuses it
            except ValueError as e:  # a 200 whose body is not JSON (a proxy's page): retried like a 5xx
                raise anthropic.RetryableError(f"reply body is not JSON: {e}") from e
        return response

    def _account(self, u: Usage, delta: Usage) -> None:
        for f in fields(Usage):
            setattr(u, f.name, getattr(u, f.name) + getattr(delta, f.name))
        with self._lock:
            for f in fields(Usage):
                setattr(self.usage, f.name, getattr(self.usage, f.name) + getattr(delta, f.name))

    def price_for(self, model: str) -> tuple[float, float] | None:
        return price_for(model, self.prices)

    def _usage_of(self, msg: Any) -> Usage:
        u = getattr(msg, "usage", None)
        if u is None:
            return Usage()
        d = Usage(**{name: int(getattr(u, name, 0) or 0) for name in (
            "input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")})
        price = self.price_for(getattr(msg, "model", None) or self.model) or self.price_for(self.model)
        if price is None:
            d.unpriced_calls = 1
        else:
            d.cost_usd = cost_usd(price, d.input_tokens, d.output_tokens, d.cache_creation_input_tokens,
                                  d.cache_read_input_tokens)
        return d

    # ---- one request
    def _identity(self, kind: str, system: str | None, prompt: str, tool: dict | None, temperature, max_tokens) -> dict:
        return {"format": CACHE_FORMAT, "kind": kind, "model": self.model, "system": system, "prompt": prompt,
                "tool": tool, "temperature": temperature, "max_tokens": int(max_tokens)}

    def _create(self, ident: dict, messages: list[dict], u: Usage) -> Any:
        import anthropic

        params: dict[str, Any] = {"model": ident["model"], "max_tokens": ident["max_tokens"], "messages": messages}
        if ident["system"] is not None:
            params["system"] = ident["system"]
        if ident["tool"] is not None:
            params["tools"] = [ident["tool"]]
            params["tool_choice"] = {"type": "tool", "name": ident["tool"]["name"]}
        if ident["temperature"] is not None:
            params["extra_body"] = {"temperature": ident["temperature"]}
            params["extra_headers"] = {"anthropic-version": LEGACY_SAMPLING_API_VERSION}
        self._attempts.n = 0
        try:
            with self._slots:
                msg = self._client.messages.create(**params)
        except (anthropic.AuthenticationError, anthropic.PermissionDeniedError) as e:
            raise LLMAuthError(f"HTTP {e.status_code}: {e.api_message or e.message}") from e
        except anthropic.APIStatusError as e:
            raise _Failed(f"HTTP {e.status_code} after {self._attempts.n} attempt(s): {e.api_message or e.message}")
        except anthropic.AnthropicError as e:  # connection errors, timeouts, a body never JSON
            raise _Failed(f"{type(e).__name__} after {self._attempts.n} attempt(s): {e}")
        finally:
            self._account(u, Usage(calls=self._attempts.n, retries=max(0, self._attempts.n - 1)))
        self._account(u, self._usage_of(msg))
        return msg

    # ---- completions
    def _run_complete(self, job: _Job) -> Result:
        u = Usage()
        try:
            msg = self._create(job.identity, [{"role": "user", "content": job.prompt}], u)
        except _Failed as e:
            self._account(u, Usage(unscored=1))
            return Result(job.index, job.prompt, False, None, error=f"api_error: {e}", key=job.key, usage=u)
        raw = _dump(msg)
        if msg.stop_reason == "refusal" or not any(b.type == "text" for b in _blocks(msg)):
            self._account(u, Usage(unscored=1))
            why = "refusal" if msg.stop_reason == "refusal" else \
                f"no_text: reply (stop_reason={msg.stop_reason}) has no text block"
            return Result(job.index, job.prompt, False, None, msg.stop_reason, why, key=job.key, raw=raw, usage=u)
        text = "".join(b.text for b in _blocks(msg) if b.type == "text")
        if self.cache is not None:
            self.cache.put_by_key(job.key, {"text": text, "stop_reason": msg.stop_reason, "raw": raw}, job.identity)
        return Result(job.index, job.prompt, True, text, msg.stop_reason, key=job.key, raw=raw, usage=u)

    def _cached_result(self, job: _Job) -> Result | None:
        v = self.cache.get_by_key(job.key) if self.cache is not None else None
        if not (isinstance(v, dict) and isinstance(v.get("text"), str)):
            return None
        u = Usage(cache_hits=1)
        self._account(Usage(), u)
        return Result(job.index, job.prompt, True, v["text"], v.get("stop_reason"), None, True, job.key, v.get("raw"),
                      u)

    # ---- verdicts
    def _run_judge(self, job: _Job, model, reasks: int) -> Verdict:
        u = Usage()
        messages: list[dict] = [{"role": "user", "content": job.prompt}]
        attempts: list = []
        for attempt in range(reasks + 1):
            try:
                msg = self._create(job.identity, messages, u)
            except _Failed as e:
                reason = f"api_error: {e}"
                break
            attempts.append(_dump(msg))
            out, reason = self._read_verdict(msg, model)
            if out is not None:
                if self.cache is not None:
                    self.cache.put_by_key(job.key, {"fields": out, "raw": attempts[-1], "attempts": attempts},
                                          job.identity)
                return Verdict(job.index, job.item, True, out, None, attempts[-1], attempts, False, job.key,
                               job.prompt, u)
            if attempt < reasks:
                self._account(u, Usage(reasks=1))
                messages = messages + self._reask(msg, reason)
        else:
            reason = f"{reason} (after {reasks} re-ask{'s' if reasks != 1 else ''})"
        self._account(u, Usage(unscored=1))
        return Verdict(job.index, job.item, False, None, reason, attempts[-1] if attempts else None, attempts,
                       False, job.key, job.prompt, u)

    def _read_verdict(self, msg: Any, model) -> tuple[dict | None, str | None]:
        calls = [b for b in _blocks(msg) if b.type == "tool_use"]
        mine = [b for b in calls if b.name == TOOL_NAME]
        if not mine:
            what = f"tool(s) {[b.name for b in calls]}" if calls else \
                f"text {''.join(getattr(b, 'text', '') for b in _blocks(msg)).strip()[:120]!r}"
            return None, f"no_tool_call: reply (stop_reason={msg.stop_reason}) has {what}"
        out, errors = _validate(model, mine[0].input)
        if errors:
            truncated = " (reply truncated at max_tokens)" if msg.stop_reason == "max_tokens" else ""
            return None, f"schema_violation: {errors}{truncated}"
        return out, None

    def _reask(self, msg: Any, reason: str) -> list[dict]:
        """The bad reply as the assistant's turn, then a user turn saying what was wrong."""
        said = [{"type": "text", "text": b.text} if b.type == "text" else
                {"type": "tool_use", "id": b.id, "name": b.name, "input": b.input}
                for b in _blocks(msg) if b.type == "tool_use" or (b.type == "text" and b.text)]
        instruction = (f"Your reply could not be used: {reason}. Call the `{TOOL_NAME}` tool again, exactly once, "
                       "with arguments that satisfy its input schema.")
        answers = [{"type": "tool_result", "tool_use_id": b["id"], "is_error": True, "content": instruction}
                   for b in said if b["type"] == "tool_use"]
        return [{"role": "assistant", "content": said or [{"type": "text", "text": "(empty reply)"}]},
                {"role": "user", "content": answers or [{"type": "text", "text": instruction}]}]

    def _cached_verdict(self, job: _Job, model) -> Verdict | None:
        v = self.cache.get_by_key(job.key) if self.cache is not None else None
        out, _ = _validate(model, v.get("fields")) if isinstance(v, dict) else (None, None)
        if out is None:
            return None
        u = Usage(cache_hits=1)
        self._account(Usage(), u)
        return Verdict(job.index, job.item, True, out, None, v.get("raw"), v.get("attempts") or [], True, job.key,
                       job.prompt, u)

    # ---- scheduling
    def _schedule(self, jobs: list[_Job], cached: Callable, run: Callable, progress: Callable | None) -> list:
        """Cache look-ups first, then the misses on a thread pool; identical requests run once.

        ``progress(done, total)`` runs in the caller's thread after each item. If anything raises
        (a progress callback, LLMAuthError), pending items are cancelled and in-flight ones finish
        and are cached, so a resumed run pays only for what is missing.
        """
        out: list = [None] * len(jobs)
        done = 0

        def settle(group: list[_Job], res: Any) -> None:
            nonlocal done
            for j in group:
                out[j.index] = res if j is group[0] else _reindex(res, j)
                done += 1
                if progress:
                    progress(done, len(jobs))

        groups: dict[str, list[_Job]] = {}
        for j in jobs:
            groups.setdefault(j.key, []).append(j)
        misses = []
        for group in groups.values():
            hit = cached(group[0])
            if hit is None:
                misses.append(group)
            else:
                settle(group, hit)
        if misses:
            pool = ThreadPoolExecutor(max_workers=self.max_concurrency, thread_name_prefix="ectc-llm")
            try:
                futures = {pool.submit(run, g[0]): g for g in misses}
                for f in as_completed(futures):
                    settle(futures[f], f.result())
            finally:
                pool.shutdown(wait=True, cancel_futures=True)
        return out

    # ---- public calls
    def complete(self, prompts: Sequence[str], system: str | None = None, temperature: float | None = None,
                 max_tokens: int = 1024, progress: Callable[[int, int], None] | None = None) -> list[Result]:
        """One text reply per prompt (a single user turn), in prompt order."""
        jobs = []
        for i, p in enumerate(prompts):
            if not isinstance(p, str):
                raise TypeError(f"prompt {i} is {type(p).__name__}, expected str")
            ident = self._identity("complete", system, p, None, temperature, max_tokens)
            jobs.append(_Job(i, cache_key(ident), ident, p))
        return self._schedule(jobs, self._cached_result, self._run_complete, progress)

    def count_tokens(self, prompts: Sequence[str], system: str | None = None, tool: dict | None = None) -> list[int]:
        """Input tokens of each one-turn request as the API counts them (`messages.count_tokens`,
        free of charge): what `ectc plan`'s bill estimates with. Raises LLMUnavailable when the
        API does not answer (the bill then says it approximated)."""
        import anthropic

        out = []
        for prompt in prompts:
            params: dict[str, Any] = {"model": self.model, "messages": [{"role": "user", "content": prompt}]}
            if system is not None:
                params["system"] = system
            if tool is not None:
                params["tools"] = [tool]
            self._attempts.n = 0
            try:
                out.append(int(self._client.messages.count_tokens(**params).input_tokens))
            except anthropic.AnthropicError as e:
                raise LLMUnavailable(f"token counting failed: {type(e).__name__}: {e}") from e
        return out

    def judge(self, items: Sequence[Mapping[str, Any]], rubric_template: str, returns: Mapping[str, Mapping],
              system: str | None = None, temperature: float | None = None, max_tokens: int = 1024,
              reasks: int = 2, progress: Callable[[int, int], None] | None = None) -> list[Verdict]:
        """One verdict per item, in item order, through a forced tool call.

        ``items`` is what the judge may see (rendered into ``rubric_template``); ``returns`` the
        plan's verdict fields (see :func:`verdict_model`).
        """
        if reasks < 0:
            raise ValueError("reasks must be >= 0")
        model = verdict_model(returns)
        tool = verdict_tool(model)
        jobs = []
        for i, item in enumerate(items):
            prompt = render_rubric(rubric_template, item)  # every prompt first: a template error costs nothing
            ident = self._identity("judge", system, prompt, tool, temperature, max_tokens)
            jobs.append(_Job(i, cache_key(ident), ident, prompt, dict(item)))
        return self._schedule(jobs, lambda j: self._cached_verdict(j, model),
                              lambda j: self._run_judge(j, model, reasks), progress)


def _blocks(msg: Any) -> list:
    return list(getattr(msg, "content", None) or [])


def _dump(msg: Any) -> dict:
    return msg.model_dump(mode="json", exclude_none=True)


def _reindex(res: Any, job: _Job) -> Any:
    """``res`` for another job with the same request: accounted once, so with zero usage."""
    r = copy.copy(res)
    r.index, r.usage = job.index, Usage()
    if isinstance(r, Verdict):
        r.item = job.item
    return r


def data_mode(plan) -> str:
    """Whether the data stage writes LLM data fields with Claude ("anthropic") or with the
    offline procedural writer; part of the data stage's key."""
    return "anthropic" if plan.uses_llm_data and llm_available() else "offline"
