"""Strict JSON: every JSON file ectc writes parses with any JSON parser.

Python's `json` writes NaN and Infinity as bare `NaN`/`Infinity`, which JSON (RFC 8259) does
not have: jq, JavaScript and pandas' strict readers refuse the whole file. Here a non-finite
number becomes `null`; where a value is missing for a reason (one seed: no interval), the
writer of that value puts the reason beside it, since only it knows the reason. Imported by
the compiler and the runtime alike, so it imports nothing of either.
"""

from __future__ import annotations

import json
import math
from typing import Any

__all__ = ["finite", "dumps", "loads", "missing"]


def finite(obj: Any) -> Any:
    """`obj` with every NaN/±Infinity replaced by None, tuples as lists and numpy scalars and
    arrays as Python numbers and lists (anything else is left for `default`)."""
    if isinstance(obj, float):  # numpy.float64 too
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    if type(obj).__module__ == "numpy" and hasattr(obj, "tolist"):  # np.float32, np.int64, arrays
        return finite(obj.tolist())
    return obj


def dumps(obj: Any, **options: Any) -> str:
    """`json.dumps` with non-finite numbers as null; `options` as json.dumps takes them."""
    if "default" not in options:
        # Most objects are plain and finite: encode them as they are; `allow_nan=False` and the
        # refusal of numpy types send the rest through `finite` (walking every value first cost
        # a quarter of `ectc build`'s JSON time).
        try:
            return json.dumps(obj, allow_nan=False, **options)
        except (ValueError, TypeError):
            pass
    return json.dumps(finite(obj), allow_nan=False, **options)


def _refuse(constant: str) -> Any:
    raise ValueError(f"not JSON: bare {constant}")


def loads(text: str | bytes) -> Any:
    """Parse strict JSON: `NaN`, `Infinity` and `-Infinity` are errors, not numbers."""
    return json.loads(text, parse_constant=_refuse)


def missing(x: Any) -> bool:
    """A number that is not there: null in a file written now, NaN in one written before."""
    return x is None or (isinstance(x, float) and math.isnan(x))
