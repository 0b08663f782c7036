"""ectc.jsonio: what every JSON writer of the project goes through."""

import json
import math

import numpy as np
import pytest

from ectc import jsonio


def test_non_finite_numbers_become_null_everywhere():
    obj = {"a": math.nan, "b": [1.5, -math.inf, (math.inf, 2)], "c": {"d": np.float64("nan"), "e": np.float32(0.5)},
           "f": np.array([1.0, np.nan]), "g": np.int64(3), "h": True, "i": None, "j": "NaN"}
    text = jsonio.dumps(obj, sort_keys=True)
    assert json.loads(text) == {"a": None, "b": [1.5, None, [None, 2]], "c": {"d": None, "e": 0.5},
                                "f": [1.0, None], "g": 3, "h": True, "i": None, "j": "NaN"}
    assert jsonio.loads(text) == json.loads(text)


def test_formatting_options_pass_through_unchanged():
    obj = {"b": 1, "a": [0.1, "é"]}
    for options in ({}, {"indent": 2, "ensure_ascii": False}, {"sort_keys": True, "separators": (",", ":")}):
        assert jsonio.dumps(obj, **options) == json.dumps(obj, **options)


def test_strict_loads_refuses_bare_constants():
    for text in ("NaN", '{"x": Infinity}', "[-Infinity]"):
        with pytest.raises(ValueError, match="not JSON"):
            jsonio.loads(text)


def test_missing_reads_old_and_new_files():
    assert jsonio.missing(None) and jsonio.missing(math.nan)
    assert not jsonio.missing(0.0) and not jsonio.missing(math.inf) and not jsonio.missing("n/a")
