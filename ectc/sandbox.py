"""The one jinja2 sandbox for user templates: the checker, `explain` and the runtime use it.

Beyond jinja2's own sandbox (no attribute escapes), it bounds the work a template can ask for,
so no spec can hang or exhaust `check`, `explain` or `run`:

* no globals (`range`, `cycler`, `lipsum`, `namespace`, `dict`, `joiner`): a template sees
  the variables the spec declares and nothing else;
* `**`, `*` and `%` are intercepted, so jinja's optimizer never folds them at compile time
  (`{{ 9 ** 999999999 }}` hung `check`), and at render time a result over the limits below is
  refused with a SecurityError;
* padding and repetition (`format`, `center`, `indent`, `str.format`, `ljust`, ...) are bounded
  the same way (`'%999999999d' | format(1)` took 25 s and 2.5 GB).
"""

from __future__ import annotations

import functools
import math
import operator
import re
import string
from typing import Any

import jinja2
from jinja2.sandbox import SandboxedEnvironment, SecurityError

MAX_TEXT = 100_000        # characters (or items) a single operation may produce
MAX_POWER_BITS = 4_096    # an integer power's size
_PRINTF_NUMBERS = re.compile(r"%[-+ #0]*(\*|\d+)?(?:\.(\*|\d+))?")
_PADDING_METHODS = {"center", "ljust", "rjust", "zfill", "expandtabs"}


def _too_big(what: str) -> SecurityError:
    return SecurityError(f"{what} exceeds ectc's template limit of {MAX_TEXT} characters")


def _check_printf(fmt: str) -> None:
    for width, precision in _PRINTF_NUMBERS.findall(fmt):
        for n in (width, precision):
            if n == "*" or (n and int(n) > MAX_TEXT):
                raise _too_big("a %-format width")


def _check_format_spec(fmt: str) -> None:
    for _, _, spec, _ in string.Formatter().parse(fmt):
        if "{" in (spec or ""):
            raise SecurityError("a format width given by another field is not allowed in ectc templates")
        for n in re.findall(r"\d+", spec or ""):
            if int(n) > MAX_TEXT:
                raise _too_big("a format width")


def _power(base: Any, exponent: Any) -> Any:
    if isinstance(base, int) and isinstance(exponent, int) and abs(base) > 1:
        if exponent > MAX_POWER_BITS or exponent * math.log2(abs(base)) > MAX_POWER_BITS:
            raise SecurityError(f"{base} ** {exponent} exceeds ectc's template limit of {MAX_POWER_BITS} bits")
    return operator.pow(base, exponent)


def _times(left: Any, right: Any) -> Any:
    for seq, n in ((left, right), (right, left)):
        if isinstance(seq, (str, list, tuple)) and isinstance(n, int) and len(seq) * n > MAX_TEXT:
            raise _too_big("a repetition")
    return operator.mul(left, right)


def _modulo(left: Any, right: Any) -> Any:
    if isinstance(left, str):
        _check_printf(left)
    return operator.mod(left, right)


def _format_filter(value: Any, *args: Any, **kwargs: Any) -> str:
    _check_printf(str(value))
    return jinja2.filters.do_format(value, *args, **kwargs)


def _center_filter(value: Any, width: int = 80) -> str:
    if width > MAX_TEXT:
        raise _too_big("a centring width")
    return jinja2.filters.do_center(value, width)


def _indent_filter(value: Any, width: Any = 4, *args: Any, **kwargs: Any) -> str:
    if (isinstance(width, int) and width > MAX_TEXT) or (isinstance(width, str) and len(width) > MAX_TEXT):
        raise _too_big("an indent")
    return jinja2.filters.do_indent(value, width, *args, **kwargs)


class BoundedSandbox(SandboxedEnvironment):
    intercepted_binops = frozenset({"**", "*", "%"})
    default_binop_table = {**SandboxedEnvironment.default_binop_table, "**": _power, "*": _times, "%": _modulo}

    def call(__self, __context, __obj, *args, **kwargs):  # noqa: N805 (jinja's own signature)
        name = getattr(__obj, "__name__", "")
        owner = getattr(__obj, "__self__", None)
        if isinstance(owner, str):
            if name in _PADDING_METHODS and any(isinstance(a, int) and a > MAX_TEXT for a in args):
                raise _too_big(f"str.{name}")
        return super().call(__context, __obj, *args, **kwargs)

    def wrap_str_format(self, value: Any):
        wrapped = super().wrap_str_format(value)
        if wrapped is None:
            return None
        fmt = value.__self__

        def bounded(*args: Any, **kwargs: Any) -> str:
            _check_format_spec(fmt)
            return wrapped(*args, **kwargs)

        return bounded


@functools.lru_cache(maxsize=None)
def environment(keep_trailing_newline: bool = False) -> BoundedSandbox:
    env = BoundedSandbox(undefined=jinja2.StrictUndefined, autoescape=False,
                         keep_trailing_newline=keep_trailing_newline)
    env.globals.clear()
    env.filters.update(format=_format_filter, center=_center_filter, indent=_indent_filter)
    return env
