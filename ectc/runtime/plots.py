"""Report figures: bars with CIs, dose-response over a label sweep, stacked verdict shares.

Matplotlib through the Agg canvas only (no pyplot, no global state, no display needed).
Output is deterministic: fixed size and dpi, fixed colours, no timestamp in the PNG metadata,
and every file is written to a temporary name in the target directory then moved into place
with ``os.replace`` so a reader never sees a half-written PNG.

Nothing here knows about an experiment: arms, categories and axes are arguments.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg", force=False)
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

__all__ = ["bar_with_ci", "dose_response", "stacked_shares", "save_figure", "arm_colours"]

# Colour-blind-safe palette (Okabe-Ito). An arm's colour is the one at its index in the plan
# (`arm_colours`), so it is the same in every plot, whichever arms a plot shows.
PALETTE = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000"]
# Fixed colours for the usual verdict categories; others take the palette.
VERDICT_COLOURS = {"PASS": "#009E73", "PARTIAL": "#E69F00", "FAIL": "#D55E00"}
_DPI = 120
_METADATA = {"Software": "ectc"}


def arm_colours(arms: Sequence[str]) -> dict[str, str]:
    """Each arm's colour, by its index in `arms` (the plan's arms, in order): the one mapping
    every plot of a report uses."""
    return {arm: PALETTE[i % len(PALETTE)] for i, arm in enumerate(arms)}


def _new_figure(width: float = 6.4, height: float = 4.2) -> Figure:
    fig = Figure(figsize=(width, height), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, path: str | os.PathLike[str]) -> Path:
    """Write ``fig`` as PNG to ``path`` atomically (temp file in the same dir + os.replace)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fig.savefig(fh, format="png", dpi=_DPI, metadata=_METADATA)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; a report file should be readable
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return target


def _finite(x: Any) -> bool:
    return x is not None and not (isinstance(x, float) and math.isnan(x))


def _err(means: Sequence[float], lows: Sequence[float] | None, highs: Sequence[float] | None):
    """Asymmetric error lengths, 0 where a bound is missing/NaN (no bar drawn)."""
    lo_err, hi_err = [], []
    for i, m in enumerate(means):
        lo = None if lows is None else lows[i]
        hi = None if highs is None else highs[i]
        lo_err.append(m - lo if _finite(lo) else 0.0)
        hi_err.append(hi - m if _finite(hi) else 0.0)
    return [lo_err, hi_err]


def bar_with_ci(
    path: str | os.PathLike[str],
    arms: Sequence[str],
    means: Sequence[float],
    lows: Sequence[float] | None,
    highs: Sequence[float] | None,
    title: str = "",
    ylabel: str = "",
    annotate: bool = True,
    colours: Mapping[str, str] | None = None,
) -> Path:
    """One bar per arm with its CI as an error bar (NaN bounds: no error bar). `colours`: each
    arm's colour (`arm_colours` of the plan's arms); by default the palette in the order given."""
    if len(arms) != len(means):
        raise ValueError("arms and means differ in length")
    fig = _new_figure(max(4.0, 1.3 * len(arms) + 2), 4.2)
    ax = fig.add_subplot()
    xs = list(range(len(arms)))
    given = arm_colours(arms) if colours is None else colours
    colours_ = [given[arm] for arm in arms]
    ax.bar(xs, means, color=colours_, width=0.6, zorder=2)
    ax.errorbar(xs, means, yerr=_err(means, lows, highs), fmt="none", ecolor="black",
                capsize=5, linewidth=1.2, zorder=3)
    if annotate:
        for x, m in zip(xs, means):
            ax.annotate(f"{m:.2f}", (x, m), xytext=(8, 3), textcoords="offset points",
                        fontsize=8, ha="left")
    ax.set_xticks(xs, list(arms))
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3, zorder=0)
    return save_figure(fig, path)


def _is_categorical(x_values: Sequence[Any]) -> bool:
    return any(isinstance(x, str) for x in x_values)


def dose_response(
    path: str | os.PathLike[str],
    x_values: Sequence[Any],
    series: Mapping[str, tuple[Sequence[float], Sequence[float] | None, Sequence[float] | None]],
    train_range: Any = None,
    holdout_ranges: Sequence[Any] = (),
    deploy_value: Any = None,
    xlabel: str = "",
    ylabel: str = "",
    title: str = "",
    colours: Mapping[str, str] | None = None,
) -> Path:
    """A metric against the evaluation-label value, one line per arm with its CI band.
    `colours`: each series' colour (`arm_colours` of the plan's arms); by default the palette
    in the order given.

    Numeric axis: ``train_range`` is ``(lo, hi)``, ``holdout_ranges`` a list of ``(lo, hi)``
    shaded grey, ``deploy_value`` a number marked by a dashed vertical line.

    Enum axis (any ``x_values`` entry is a string): x is categorical in the order given;
    ``train_range`` is the collection of values seen in training, ``holdout_ranges`` the
    collection of held-out values (each shaded over its slot), ``deploy_value`` one value.
    """
    xs_given = list(x_values)
    categorical = _is_categorical(xs_given)
    pos = {v: i for i, v in enumerate(xs_given)}
    xs = list(range(len(xs_given))) if categorical else [float(x) for x in xs_given]

    fig = _new_figure(7.0, 4.4)
    ax = fig.add_subplot()

    def span(lo: Any, hi: Any) -> tuple[float, float]:
        if categorical:
            return pos[lo] - 0.5, pos[hi] + 0.5
        return float(lo), float(hi)

    if train_range is not None:
        spans = [span(v, v) for v in train_range] if categorical else [span(*train_range)]
        for k, (a, b) in enumerate(spans):
            ax.axvspan(a, b, color="#009E73", alpha=0.08, lw=0, zorder=0,
                       label="training range" if k == 0 else None)
    labelled = False
    for h in holdout_ranges:
        a, b = span(h, h) if categorical else span(*h)
        ax.axvspan(a, b, color="grey", alpha=0.22, lw=0, zorder=0, hatch="//",
                   label=None if labelled else "held out")
        labelled = True
    if deploy_value is not None:
        dx = pos[deploy_value] if categorical else float(deploy_value)
        ax.axvline(dx, color="black", linestyle="--", linewidth=1.2, label="deployment label")

    given = arm_colours(list(series)) if colours is None else colours
    for arm, (means, lows, highs) in series.items():
        if len(means) != len(xs):
            raise ValueError(f"series {arm!r}: {len(means)} means for {len(xs)} x values")
        colour = given[arm]
        ax.plot(xs, means, marker="o", color=colour, label=arm, zorder=3)
        if lows is not None and highs is not None:
            if categorical:
                ax.errorbar(xs, means, yerr=_err(means, lows, highs), fmt="none",
                            ecolor=colour, capsize=3, zorder=3)
            else:
                lo = [lo if _finite(lo) else m for lo, m in zip(lows, means)]
                hi = [hi if _finite(hi) else m for hi, m in zip(highs, means)]
                ax.fill_between(xs, lo, hi, color=colour, alpha=0.18, lw=0, zorder=2)

    if categorical:
        ax.set_xticks(xs, [str(v) for v in xs_given], rotation=30 if len(xs) > 5 else 0)
        ax.set_xlim(-0.5, len(xs) - 0.5)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3, zorder=0)
    ax.legend(fontsize=8, loc="best")
    return save_figure(fig, path)


def stacked_shares(
    path: str | os.PathLike[str],
    arms: Sequence[str],
    shares: Mapping[str, Mapping[str, float]],
    categories: Sequence[str] | None = None,
    title: str = "",
    ylabel: str = "share",
) -> Path:
    """Stacked bars of category shares per arm (e.g. PASS / PARTIAL / FAIL), labelled in %."""
    if categories is None:
        categories = list(dict.fromkeys(c for arm in arms for c in shares[arm]))
    fig = _new_figure(max(4.0, 1.3 * len(arms) + 2.5), 4.2)
    ax = fig.add_subplot()
    xs = list(range(len(arms)))
    bottoms = [0.0] * len(arms)
    for j, cat in enumerate(categories):
        vals = [float(shares[arm].get(cat, 0.0)) for arm in arms]
        colour = VERDICT_COLOURS.get(cat, PALETTE[j % len(PALETTE)])
        ax.bar(xs, vals, bottom=bottoms, color=colour, width=0.6, label=cat, zorder=2)
        for x, v, b in zip(xs, vals, bottoms):
            if v >= 0.04:
                ax.text(x, b + v / 2, f"{100 * v:.0f}%", ha="center", va="center", fontsize=8)
        bottoms = [b + v for b, v in zip(bottoms, vals)]
    ax.set_xticks(xs, list(arms))
    ax.set_ylim(0, max(1.0, max(bottoms, default=1.0)))
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return save_figure(fig, path)
