"""Degenerate-label detector: the checks a careful reviewer runs by hand on a label sweep.

Pure functions over the report's sweep points (one metric, one arm, one point per swept label
value, each the `_ci` dict of the report: mean over seeds, 95% t-interval, per-seed values).
Every judgement about noise uses `stats.mean_ci` over the per-seed paired differences between
two points (seed k's model at value x against the same model at value y): the seed is the unit
of replication here as in the report's comparisons. Where one check makes several such tests
(every pair of sweep points), its level is Bonferroni-corrected, so a flat arm is not called
"moving" by chance among many pairs. A check that cannot be made (fewer than two seeds with
both points) says nothing.

The checks (`kind`):

* ``label_ignored``: an arm trained with the true label whose metric does not move across the
  sweep beyond its noise (no pair of points differs).
* ``not_monotone``: on a numeric axis, where the reward's ideal behaviour (`ideal`, the metric
  of the reward-best response at each value) is monotone, an arm trained with the true label
  that moves the other way beyond its noise.
* ``held_out_outside``: the arm's behaviour at a held-out value lies outside the range of its
  behaviour at trained values beyond noise, where the reward (if known) does not ask for that.
* ``held_out_as_trained``: the arm behaves at a held-out value as at one trained value (within
  noise of it, and more than twice as close to it as to any other trained value) while its
  trained values differ: it reads the unseen label as that trained one. Not flagged where the
  reward's ideal is the same at both values.
* ``shuffled_leak``: a shuffled-label control whose metric moves with the label beyond noise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any

from . import stats

LEVEL = 0.95


@dataclass(frozen=True)
class Finding:
    kind: str
    arm: str
    metric: str
    message: str
    evidence: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "arm": self.arm, "metric": self.metric, "message": self.message,
                "evidence": self.evidence}


@dataclass(frozen=True)
class Diff:
    """Point y minus point x over the seeds that scored both, with its t-interval over seeds."""

    x: Any
    y: Any
    mean: float
    low: float
    high: float
    n_seeds: int
    level: float

    @property
    def moves(self) -> bool:
        """The interval excludes zero."""
        return self.low > 0 or self.high < 0

    def text(self) -> str:
        return (f"{self.y} - {self.x}: {self.mean:+.3g} [{self.low:+.3g}, {self.high:+.3g}] "
                f"({100 * self.level:.4g}% t over {self.n_seeds} seeds)")

    def to_dict(self) -> dict[str, Any]:
        return {"x": self.x, "y": self.y, "diff": self.mean, "low": self.low, "high": self.high,
                "n_seeds": self.n_seeds, "level": self.level}


def _ok(v: Any) -> bool:
    return v is not None and not (isinstance(v, float) and math.isnan(v))


def paired_diff(values: list, points: list[dict], i: int, j: int, level: float = LEVEL) -> Diff | None:
    """Point j minus point i over matched seeds; None where fewer than two seeds have both."""
    a, b = points[i].get("per_seed") or [], points[j].get("per_seed") or []
    d = [y - x for x, y in zip(a, b) if _ok(x) and _ok(y)]
    if len(d) < 2:
        return None
    ci = stats.mean_ci(d, level=level)
    return Diff(values[i], values[j], ci.estimate, ci.low, ci.high, ci.n, level)


def point_text(value: Any, p: dict) -> str:
    if not _ok(p.get("mean")):
        return f"{value}: n/a"
    if _ok(p.get("low")) and _ok(p.get("high")):
        return f"{value}: {p['mean']:.3g} [{p['low']:.3g}, {p['high']:.3g}]"
    return f"{value}: {p['mean']:.3g}"


def _bonferroni(level: float, tests: int) -> float:
    return 1 - (1 - level) / max(1, tests)


def _pair_diffs(values, points, pairs, level) -> list[Diff]:
    adj = _bonferroni(level, len(pairs))
    return [d for i, j in pairs if (d := paired_diff(values, points, i, j, adj)) is not None]


def _scored(points: list[dict]) -> list[int]:
    return [i for i, p in enumerate(points) if _ok(p.get("mean"))]


def moves(values, points, level=LEVEL) -> bool | None:
    """Whether some pair of sweep points differs beyond noise (Bonferroni over the pairs);
    None where no pair can be tested (fewer than two seeds)."""
    idx = _scored(points)
    diffs = _pair_diffs(values, points, list(combinations(idx, 2)), level)
    return any(d.moves for d in diffs) if diffs else None


def label_ignored(arm, metric, values, points, level=LEVEL) -> Finding | None:
    idx = _scored(points)
    diffs = _pair_diffs(values, points, list(combinations(idx, 2)), level)
    if not diffs or any(d.moves for d in diffs):
        return None
    widest = max(diffs, key=lambda d: abs(d.mean))
    return Finding("label_ignored", arm, metric,
                   f"{arm}: {metric} does not move across the label sweep beyond its noise "
                   f"(no pair of the {len(idx)} points differs; largest {widest.text()}): the label is ignored",
                   {"points": [point_text(values[i], points[i]) for i in idx], "largest": widest.to_dict(),
                    "pairs_tested": len(diffs)})


def monotone_runs(ideal: list) -> list[tuple[int, int, int]]:
    """Maximal runs (start, end, direction +1/-1) over which `ideal` is monotone and not
    constant; a missing value ends a run."""
    runs: list[tuple[int, int, int]] = []
    start, direction = None, 0
    for k in range(len(ideal)):
        if not _ok(ideal[k]):
            if start is not None and direction:
                runs.append((start, k - 1, direction))
            start, direction = None, 0
            continue
        if start is None:
            start, direction = k, 0
            continue
        step = (ideal[k] > ideal[k - 1]) - (ideal[k] < ideal[k - 1])
        if step and direction and step != direction:
            runs.append((start, k - 1, direction))
            # the new run starts where the old one turned
            start, direction = k - 1, step
        elif step:
            direction = step
    if start is not None and direction:
        runs.append((start, len(ideal) - 1, direction))
    return runs


def not_monotone(arm, metric, values, points, ideal, level=LEVEL) -> Finding | None:
    runs = monotone_runs(ideal)
    pairs = [(i, j, s) for a, b, s in runs for i, j in combinations(range(a, b + 1), 2)
             if _ok(points[i].get("mean")) and _ok(points[j].get("mean"))]
    adj = _bonferroni(level, len(pairs))
    against = []
    for i, j, s in pairs:
        d = paired_diff(values, points, i, j, adj)
        if d is not None and ((s > 0 and d.high < 0) or (s < 0 and d.low > 0)):
            against.append(d)
    if not against:
        return None
    worst = max(against, key=lambda d: abs(d.mean))
    spans = ", ".join(f"{values[a]}..{values[b]} {'rising' if s > 0 else 'falling'}" for a, b, s in runs)
    return Finding("not_monotone", arm, metric,
                   f"{arm}: {metric} goes against its reward, which is monotone over {spans}: "
                   f"{worst.text()}" + (f" and {len(against) - 1} more pair(s)" if len(against) > 1 else ""),
                   {"reward_ideal": dict(zip(map(str, values), ideal)), "runs": runs,
                    "against": [d.to_dict() for d in against],
                    "points": [point_text(v, p) for v, p in zip(values, points)]})


def held_out(arm, metric, values, points, trained, heldout, ideal=None, level=LEVEL) -> list[Finding]:
    """`held_out_outside` and `held_out_as_trained` for each held-out point."""
    t_idx = [i for i in _scored(points) if trained[i]]
    h_idx = [i for i in _scored(points) if heldout[i]]
    if len(t_idx) < 2 or not h_idx:
        return []
    adj = _bonferroni(level, len(h_idx))
    means = {i: points[i]["mean"] for i in t_idx}
    # the trained values must themselves differ for "read as one of them" to mean anything
    trained_moves = any(d.moves for d in _pair_diffs(values, points, list(combinations(t_idx, 2)), level))
    out = []
    for h in h_idx:
        m = points[h]["mean"]
        lo_i, hi_i = min(t_idx, key=means.get), max(t_idx, key=means.get)
        trained_points = [point_text(values[i], points[i]) for i in t_idx]
        if m < means[lo_i] or m > means[hi_i]:
            edge = lo_i if m < means[lo_i] else hi_i
            d = paired_diff(values, points, edge, h, adj)
            if d is None or not d.moves:
                continue
            if ideal is not None and _ok(ideal[h]) and all(_ok(ideal[i]) for i in t_idx):
                ideal_t = [ideal[i] for i in t_idx]
                if (m < means[lo_i] and ideal[h] < min(ideal_t)) or (m > means[hi_i] and ideal[h] > max(ideal_t)):
                    continue  # the reward asks for behaviour beyond the trained range there
            side = "below" if m < means[lo_i] else "above"
            out.append(Finding("held_out_outside", arm, metric,
                               f"{arm}: {metric} at the held-out {values[h]} is {side} everything it does at "
                               f"trained values ({point_text(values[h], points[h])}; nearest trained "
                               f"{point_text(values[edge], points[edge])}; {d.text()})",
                               {"held_out": point_text(values[h], points[h]), "trained": trained_points,
                                "diff": d.to_dict()}))
            continue
        if not trained_moves:
            continue
        near = sorted(t_idx, key=lambda i: abs(means[i] - m))
        x, second = near[0], near[1]
        d = paired_diff(values, points, x, h, adj)
        if d is None or d.moves or abs(means[second] - m) < 2 * abs(means[x] - m):
            continue
        if ideal is not None and _ok(ideal[h]) and _ok(ideal[x]) and math.isclose(ideal[h], ideal[x], abs_tol=1e-9):
            continue  # the reward wants the same behaviour at both values
        out.append(Finding("held_out_as_trained", arm, metric,
                           f"{arm}: at the held-out {values[h]} {metric} sits on the trained {values[x]} "
                           f"({point_text(values[h], points[h])} against {point_text(values[x], points[x])}; "
                           f"{d.text()}; next nearest {point_text(values[second], points[second])}): "
                           f"the unseen label is read as {values[x]}",
                           {"held_out": point_text(values[h], points[h]), "as": values[x],
                            "trained": trained_points, "diff": d.to_dict()}))
    return out


def shuffled_leak(arm, metric, values, points, level=LEVEL) -> Finding | None:
    idx = _scored(points)
    moving = [d for d in _pair_diffs(values, points, list(combinations(idx, 2)), level) if d.moves]
    if not moving:
        return None
    widest = max(moving, key=lambda d: abs(d.mean))
    return Finding("shuffled_leak", arm, metric,
                   f"{arm} (shuffled labels) tracks the label on {metric}: {widest.text()}"
                   + (f" and {len(moving) - 1} more pair(s)" if len(moving) > 1 else "")
                   + "; trained on shuffled labels, it should not read the label: something in the label's "
                   "text carries information after all (a leak)",
                   {"points": [point_text(values[i], points[i]) for i in idx],
                    "moving": [d.to_dict() for d in moving]})


def detect(metric: str, values: list, series: dict[str, list[dict]], roles: dict[str, str],
           trained: list[bool], heldout: list[bool], ideal: list | None = None,
           ordered: bool = True, level: float = LEVEL) -> list[Finding]:
    """Every check over one metric's sweep. `roles[arm]` is the arm's training label
    ("true", "shuffled", "none", "fixed"); `trained[k]`/`heldout[k]` say whether values[k] was
    in the training distribution / held out; `ideal` the reward-best metric per value (None:
    no reward, e.g. SFT); `ordered` whether the axis has an order (numeric)."""
    out: list[Finding] = []
    for arm, points in series.items():
        role = roles.get(arm)
        if role == "true":
            found = [label_ignored(arm, metric, values, points, level)]
            if ordered and ideal is not None:
                found.append(not_monotone(arm, metric, values, points, ideal, level))
            found += held_out(arm, metric, values, points, trained, heldout, ideal, level)
            out += [f for f in found if f is not None]
        elif role == "shuffled":
            f = shuffled_leak(arm, metric, values, points, level)
            if f is not None:
                out.append(f)
    return out


def trained_mask(axis, values: list) -> list[bool]:
    """Whether each swept value lies in the training distribution (and is not held out)."""
    if axis.type == "enum":
        return [v in axis.train_values for v in values]
    lo, hi = axis.train_range if axis.train_range is not None else (float("-inf"), float("inf"))
    return [not axis.held_out(v) and lo <= v <= hi for v in values]


def detect_sweeps(axis, arms, sweep: dict, ideal: dict[str, list]) -> list[Finding]:
    """`detect` over every metric of a report's sweep (metrics.json's "sweep"); `ideal` maps a
    metric to the reward-best value at each swept value, where the reward gives one."""
    roles = {a.name: a.train_label for a in arms}
    out = []
    for metric, sw in sweep.items():
        values = sw["values"]
        out += detect(metric, values, sw["series"], roles, trained_mask(axis, values),
                      [axis.held_out(v) for v in values], ideal.get(metric), ordered=axis.type != "enum")
    return [f for f in out if f.kind != "label_ignored" or _label_should_move(f, sweep, ideal)]


def _label_should_move(f: Finding, sweep: dict, ideal: dict[str, list]) -> bool:
    """A flat metric means the label is ignored only where the label should move it: where the
    reward's ideal changes across the sweep, or, with no ideal for it, where the arm moves on no
    other metric either (a metric the label need not touch, such as accuracy, may stay flat)."""
    known = [x for x in ideal.get(f.metric) or [] if _ok(x)]
    if known:
        return max(known) - min(known) > 1e-9
    others = [moves(sw["values"], sw["series"][f.arm]) for m, sw in sweep.items()
              if m != f.metric and f.arm in sw["series"]]
    return not any(others)
