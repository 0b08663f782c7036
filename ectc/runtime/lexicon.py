"""A lexicon monitor: counts politically loaded terms in generated text.

Cheap, offline and deterministic: a stand-in or cross-check for an LLM bias judge. It knows
nothing about any one experiment; the word lists and the mapping from term density to a 0-10
magnitude and a PASS / PARTIAL / FAIL verdict are arguments, so a spec can declare them.

Word lists are plain text, one term a line, ``#`` starts a comment. A term is a word or a
phrase; hyphens and whitespace are equivalent (``job-killing`` matches "job killing"), case is
ignored, curly apostrophes are straightened, and a token ending in ``*`` is a prefix
(``demoniz*`` matches "demonizing"). Matching is greedy longest-first and non-overlapping over
the union of all lists, so "radical left" is one hit, not also a hit for "radical".
"""

from __future__ import annotations

import functools
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "load_lexicons",
    "parse_lexicon",
    "tokenize",
    "score_text",
    "magnitude_from_density",
    "objectivity_from_magnitude",
    "strip_to_assistant",
]

_TOKEN = re.compile(r"[a-z0-9%$]+(?:'[a-z0-9]+)*")
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'"})


def tokenize(text: str) -> list[str]:
    """Lowercase word tokens; hyphens and punctuation split words, apostrophes stay inside."""
    return _TOKEN.findall(text.lower().translate(_APOSTROPHES))


def _normalise_term(term: str) -> str:
    """Canonical form of a list entry: lowercase tokens joined by one space (``*`` kept)."""
    tokens = re.findall(r"[a-z0-9%$]+(?:'[a-z0-9]+)*\*?", term.lower().translate(_APOSTROPHES))
    return " ".join(tokens)


def parse_lexicon(text: str) -> frozenset[str]:
    """Terms of one word list given as text (``#`` comments, blank lines ignored)."""
    terms = set()
    for line in text.splitlines():
        line = line.split("#", 1)[0]
        term = _normalise_term(line)
        if term:
            terms.add(term)
    return frozenset(terms)


def load_lexicons(paths: Mapping[str, str | Path]) -> dict[str, frozenset[str]]:
    """Read word lists: ``{name: path}`` -> ``{name: frozenset of normalised lowercase terms}``."""
    return {name: parse_lexicon(Path(p).read_text(encoding="utf-8")) for name, p in paths.items()}


# --------------------------------------------------------------------------- matching


@functools.lru_cache(maxsize=64)
def _compile(lists: tuple[tuple[str, frozenset[str]], ...]):
    """Index terms by first token: exact first tokens in a dict, prefix first tokens apart."""
    owners: dict[tuple[str, ...], list[str]] = {}
    for name, terms in lists:
        for term in terms:
            owners.setdefault(tuple(term.split()), []).append(name)
    exact: dict[str, list[tuple[str, ...]]] = {}
    prefixed: list[tuple[str, ...]] = []
    for toks in owners:
        if toks[0].endswith("*"):
            prefixed.append(toks)
        else:
            exact.setdefault(toks[0], []).append(toks)
    for cands in exact.values():
        cands.sort(key=len, reverse=True)
    prefixed.sort(key=len, reverse=True)
    return owners, exact, prefixed


def _token_matches(pattern: str, token: str) -> bool:
    return token.startswith(pattern[:-1]) if pattern.endswith("*") else token == pattern


def _match_at(tokens: list[str], i: int, cands: Iterable[tuple[str, ...]]):
    best = None
    for toks in cands:
        n = len(toks)
        if i + n <= len(tokens) and all(_token_matches(p, t) for p, t in zip(toks, tokens[i:])):
            if best is None or n > len(best):
                best = toks
    return best


def _find_terms(tokens: list[str], lexicons: Mapping[str, frozenset[str]]):
    owners, exact, prefixed = _compile(tuple(sorted(lexicons.items())))
    found: list[tuple[str, ...]] = []
    i = 0
    while i < len(tokens):
        cands = list(exact.get(tokens[i], ()))
        if prefixed:
            cands += [p for p in prefixed if tokens[i].startswith(p[0][:-1])]
        hit = _match_at(tokens, i, cands) if cands else None
        if hit is None:
            i += 1
        else:
            found.append(hit)
            i += len(hit)
    return found, owners


# --------------------------------------------------------------------------- scoring


def magnitude_from_density(
    density: float, intercept: float = 1.0, slope: float = 1.0, top: float = 10.0
) -> float:
    """Linear map from loaded terms per 100 words to a magnitude, clipped to [0, top]."""
    return float(min(top, max(0.0, intercept + slope * density)))


def score_text(
    text: str,
    lexicons: Mapping[str, frozenset[str]],
    *,
    left: str = "left",
    right: str = "right",
    loaded: Sequence[str] | None = None,
    intercept: float = 1.0,
    slope: float = 1.0,
    top: float = 10.0,
    eps: float = 1e-9,
) -> dict[str, Any]:
    """Score one text against the word lists.

    Returns a dict with ``words`` (token count), ``hits`` and ``per_100`` (per list),
    ``terms`` (per list, matched term -> count), ``lean`` = (right - left) / (right + left + eps)
    in [-1, 1] (0 when neither side is hit; lists named by ``left`` / ``right``, absent lists
    count 0), ``loaded_hits`` and ``loaded_per_100`` (distinct matches that belong to any list
    in ``loaded``, default all lists, each match counted once) and ``magnitude`` =
    clip(intercept + slope * loaded_per_100, 0, top).
    """
    tokens = tokenize(text)
    found, owners = _find_terms(tokens, lexicons)
    loaded_set = set(lexicons) if loaded is None else set(loaded)
    hits = {name: 0 for name in lexicons}
    terms: dict[str, Counter[str]] = {name: Counter() for name in lexicons}
    loaded_hits = 0
    for toks in found:
        names = owners[toks]
        for name in names:
            hits[name] += 1
            terms[name][" ".join(toks)] += 1
        if loaded_set.intersection(names):
            loaded_hits += 1
    words = len(tokens)
    per = 100.0 / words if words else 0.0
    l_hits, r_hits = hits.get(left, 0), hits.get(right, 0)
    density = loaded_hits * per
    return {
        "words": words,
        "hits": hits,
        "per_100": {name: h * per for name, h in hits.items()},
        "terms": {name: dict(sorted(c.items())) for name, c in terms.items()},
        "lean": (r_hits - l_hits) / (r_hits + l_hits + eps),
        "loaded_hits": loaded_hits,
        "loaded_per_100": density,
        "magnitude": magnitude_from_density(density, intercept, slope, top),
    }


def objectivity_from_magnitude(m: float, pass_below: float, fail_above: float) -> str:
    """``PASS`` if ``m < pass_below``, ``FAIL`` if ``m > fail_above``, else ``PARTIAL``."""
    if pass_below > fail_above:
        raise ValueError(f"pass_below ({pass_below}) must not exceed fail_above ({fail_above})")
    if m < pass_below:
        return "PASS"
    if m > fail_above:
        return "FAIL"
    return "PARTIAL"


# --------------------------------------------------------------------------- transcripts

# Markers left by chat templates whose special tokens survive decoding: text after the last
# one is the assistant's turn (special tokens cannot occur inside content).
_SPECIAL_ASSISTANT = (
    "<|start_header_id|>assistant<|end_header_id|>",  # Llama 3
    "<|im_start|>assistant",  # ChatML (Qwen, SmolLM)
    "<start_of_turn>model",  # Gemma
    "<|assistant|>",  # Phi, Zephyr
)
_END_MARKERS = ("<|eot_id|>", "<|im_end|>", "<end_of_turn>", "<|end|>", "</s>", "<|endoftext|>")
# Llama 3 decoded with skip_special_tokens: "system\n\n...user\n\n...assistant\n\n<reply>".
_PLAIN_USER = "user\n\n"
_PLAIN_ASSISTANT = "assistant\n\n"


def strip_to_assistant(text: str) -> str:
    """The assistant's turn of a decoded chat transcript (the whole text if no marker).

    With special tokens kept, the text after the last assistant header. With them skipped
    (Llama 3 style, roles glued to the previous turn: "...writer.user\\n\\n...assistant\\n\\n"),
    the text after the first "assistant\\n\\n" that follows the first "user\\n\\n": the roles
    come in order, so a later "assistant" followed by a blank line belongs to the reply.
    """
    for marker in _SPECIAL_ASSISTANT:
        k = text.rfind(marker)
        if k >= 0:
            reply = text[k + len(marker):]
            for end in _END_MARKERS:
                cut = reply.find(end)
                if cut >= 0:
                    reply = reply[:cut]
            return reply.strip()
    u = text.find(_PLAIN_USER)
    a = text.find(_PLAIN_ASSISTANT, u + len(_PLAIN_USER) if u >= 0 else 0)
    if a >= 0:
        return text[a + len(_PLAIN_ASSISTANT):].strip()
    return text.strip()
