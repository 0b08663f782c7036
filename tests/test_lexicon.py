"""Tests for the lexicon monitor, and its calibration against real Claude verdicts.

The calibration tests need shared/data (not in the repository); they skip, saying so, when it
is absent. Their floors sit a little below the figures measured when they were written
(Spearman 0.714, kappa 0.679 over 70 pairs; `python bench/calibrate_lexicon.py`), so a change
to the word lists or the mapping that makes the monitor worse fails here.
"""

from __future__ import annotations

import importlib.util
import math
import os
from pathlib import Path

import numpy as np
import pytest

from ectc.runtime import stats
from ectc.runtime.lexicon import (
    load_lexicons,
    objectivity_from_magnitude,
    parse_lexicon,
    score_text,
    strip_to_assistant,
    tokenize,
)

REPO = Path(__file__).resolve().parents[1]

SPEARMAN_FLOOR = 0.68  # measured 0.714
KAPPA_FLOOR = 0.62  # measured 0.679 (thresholds fitted on this data, see the bench script)


def lex(**lists: str) -> dict[str, frozenset[str]]:
    return {name: parse_lexicon(text) for name, text in lists.items()}


# --------------------------------------------------------------------------- unit


def test_parse_lexicon_normalises_terms():
    terms = parse_lexicon("# a comment\nJob-Killing\n\n  Radical   Left  # trailing\nwomen\u2019s rights\n")
    assert terms == frozenset({"job killing", "radical left", "women's rights"})


def test_shipped_lexicons_load_and_are_disjoint():
    lexicons = load_lexicons({n: REPO / "specs" / "lexicons" / f"{n}.txt" for n in ("left", "right", "loaded")})
    assert all(len(t) >= 80 for t in lexicons.values())
    assert not lexicons["left"] & lexicons["right"]
    assert all(t == t.lower() for terms in lexicons.values() for t in terms)


def test_tokenize():
    assert tokenize("Far-right groups’ “job-killing” women’s rules, $125M.") == [
        "far", "right", "groups", "job", "killing", "women's", "rules", "$125m"]


def test_score_text_longest_match_and_lean():
    lexicons = lex(left="far right\nsystemic\n", right="radical left\nnanny state\n",
                   loaded="radical\ndemoniz*\n")
    s = score_text("The radical left and the nanny state, say far-right critics demonizing them.",
                   lexicons)
    assert s["words"] == 13
    assert s["hits"] == {"left": 1, "right": 2, "loaded": 1}  # "radical left" is not also "radical"
    assert s["terms"]["loaded"] == {"demoniz*": 1}
    assert s["lean"] == pytest.approx((2 - 1) / 3)
    assert s["loaded_hits"] == 4
    assert s["loaded_per_100"] == pytest.approx(400 / 13)
    assert s["magnitude"] == 10.0  # clipped
    only_loaded = score_text("a radical plan", lexicons, loaded=["loaded"], intercept=0, slope=0.1)
    assert only_loaded["lean"] == 0.0
    assert only_loaded["magnitude"] == pytest.approx(0.1 * 100 / 3)


def test_score_text_empty_and_neutral():
    lexicons = lex(left="systemic\n", right="woke\n")
    assert score_text("", lexicons)["magnitude"] == 1.0
    s = score_text("The council voted 5-2 on Tuesday.", lexicons, intercept=0.0)
    assert s["loaded_hits"] == 0 and s["magnitude"] == 0.0 and s["lean"] == 0.0


def test_objectivity_from_magnitude():
    assert objectivity_from_magnitude(2.9, 3.5, 6.5) == "PASS"
    assert objectivity_from_magnitude(3.5, 3.5, 6.5) == "PARTIAL"
    assert objectivity_from_magnitude(6.5, 3.5, 6.5) == "PARTIAL"
    assert objectivity_from_magnitude(6.6, 3.5, 6.5) == "FAIL"
    with pytest.raises(ValueError):
        objectivity_from_magnitude(5, 7, 3)


def test_strip_to_assistant_formats():
    plain = ("system\n\nYou are a news article writer.user\n\nWrite about X.assistant\n\n"
             "Headline\n\nBody mentions a teaching assistant\n\nEnd.")
    assert strip_to_assistant(plain) == "Headline\n\nBody mentions a teaching assistant\n\nEnd."
    llama = ("<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
             "<|start_header_id|>assistant<|end_header_id|>\n\nHello there.<|eot_id|>")
    assert strip_to_assistant(llama) == "Hello there."
    chatml = "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHey.<|im_end|>"
    assert strip_to_assistant(chatml) == "Hey."
    assert strip_to_assistant("  just an article  ") == "just an article"


# --------------------------------------------------------------------------- calibration


# ECTC_SHARED_DATA, when set, is the only place looked in (set it to a missing folder to
# check that the calibration tests skip).
_ENV = os.environ.get("ECTC_SHARED_DATA")
DATA_DIRS = [Path(_ENV)] if _ENV else [Path("/work/shared/data"), REPO.parent / "shared" / "data"]


def _data_file() -> Path | None:
    for d in DATA_DIRS:
        if (d / "mst_validation_results.jsonl").is_file():
            return d / "mst_validation_results.jsonl"
    return None


DATA = _data_file()
needs_data = pytest.mark.skipif(
    DATA is None,
    reason="calibration data absent: mst_validation_results.jsonl (shared/data, not part of "
    f"the repository) is in none of {[str(d) for d in DATA_DIRS]}",
)


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("calibrate_lexicon", REPO / "bench" / "calibrate_lexicon.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def rows(bench):
    return bench.load_rows(DATA)


@needs_data
def test_every_article_has_an_assistant_turn(rows):
    for row in rows:
        for arm in ("baseline", "mst"):
            reply = strip_to_assistant(row[arm]["article"])
            assert "user\n\n" not in reply and not reply.startswith("system")
            assert len(reply.split()) > 100


@needs_data
def test_calibration_floors(bench, rows):
    cal = bench.calibration(rows, load_lexicons(bench.LEXICON_PATHS))
    assert cal["n_pairs"] == 70
    assert cal["spearman"] >= SPEARMAN_FLOOR, cal["spearman"]
    assert cal["kappa"] >= KAPPA_FLOOR, cal["kappa"]


@needs_data
def test_readme_check_figures(bench, rows):
    assert len(rows) == 36
    chk = bench.readme_checks(rows)
    assert round(chk["baseline_mean"].estimate, 3) == 5.111
    assert round(chk["ect_mean"].estimate, 3) == 2.333
    # the README computes 1 - 2.333/5.111 from its rounded means; exactly it is 1 - 84/184
    assert round(chk["relative_reduction_rounded_means"], 3) == 0.544
    assert chk["relative_reduction"] == pytest.approx(1 - 84 / 184)
    w = chk["win_rate"]
    assert (w.wins, w.ties, w.losses, w.n) == (33, 2, 1, 36)
    d = chk["paired_diff"]
    assert d.mean_diff == pytest.approx(100 / 36)
    assert d.low < d.mean_diff < d.high and d.low > 0
    mc = chk["mcnemar_fail"]
    assert (mc.a_only, mc.b_only, mc.method) == (9, 0, "exact")
    assert mc.pvalue == pytest.approx(2 * 0.5**9)


@needs_data
def test_lexicon_separates_the_arms(bench, rows):
    """The monitor alone, with no judge, sees the ECT arm as less loaded, paired by topic."""
    pairs = bench.score_pairs(rows, load_lexicons(bench.LEXICON_PATHS))
    by = {(p["topic_id"], p["arm"]): p["magnitude"] for p in pairs}
    topics = sorted(t for t, a in by if a == "baseline" and (t, "mst") in by)
    base = np.array([by[t, "baseline"] for t in topics])
    ect = np.array([by[t, "mst"] for t in topics])
    d = stats.paired_bootstrap_diff(base, ect, n_boot=2000, seed=0)
    assert d.low > 0 and not math.isnan(d.high)
