"""Figures of a test run: DET curves and score histograms, one PNG each, drawn with Agg.

Figures are built on :class:`matplotlib.figure.Figure` with an Agg canvas, never through
``pyplot``: no global backend switch, no figure registry to leak from in a long-running process.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from scipy.special import ndtri

DET_TICKS = (
    0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05,
    0.1, 0.2, 0.4, 0.6, 0.8, 0.9, 0.95, 0.98, 0.99,
)  # fmt: skip
DPI = 120


def _tick_label(rate: float) -> str:
    return f"{100 * rate:g}"


def _det_limits(n_max: int, eers: list[float]) -> tuple[float, float]:
    """Axis range in probability: from the tick at or below half a trial of the largest class
    (where a zero rate is drawn) to 50 %, or 99 % when an EER is near or above 40 %."""
    floor = max(DET_TICKS[0], 0.5 / max(n_max, 1))
    low = max(t for t in DET_TICKS if t <= floor)
    high = 0.99 if max(eers, default=0.0) > 0.35 else 0.5
    return low, high


def plot_det_curves(
    path: str | Path,
    curves: Mapping[str, tuple[np.ndarray, np.ndarray, float]],
    trials: Mapping[str, int] | None = None,
) -> Path:
    """One DET curve per test set on normal-deviate axes (false acceptance of spoofs against
    missed bona fide, in %), each set's EER marked on the diagonal.

    ``curves`` maps a set name to its ``(frr, far, eer)`` (from its result record); ``trials``
    to its number of trials (sets the axis floor).
    """
    fig = Figure(figsize=(6.4, 6.0), dpi=DPI)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    curves = {name: (far, frr, eer) for name, (frr, far, eer) in curves.items()}
    n_max = max((trials or {}).values(), default=1000)
    low, high = _det_limits(n_max, [eer for *_, eer in curves.values()])
    # Rates of 0 and 1 are off the probit axis: draw them just outside the visible range.
    clip_lo, clip_hi = low / 2, (1 + high) / 2

    def probit(p: np.ndarray | float) -> np.ndarray:
        return ndtri(np.clip(p, clip_lo, clip_hi))

    for name, (far, frr, eer) in curves.items():
        (line,) = ax.plot(probit(far), probit(frr), label=f"{name} (EER {100 * eer:.2f}%)")
        ax.plot(probit(eer), probit(eer), "o", color=line.get_color(), markersize=6)
    ticks = [t for t in DET_TICKS if low <= t <= high]
    ax.plot(probit(np.array([low, high])), probit(np.array([low, high])), "--", color="0.6", lw=0.8)
    for set_ticks, set_labels, set_lim in (
        (ax.set_xticks, ax.set_xticklabels, ax.set_xlim),
        (ax.set_yticks, ax.set_yticklabels, ax.set_ylim),
    ):
        set_ticks(probit(np.array(ticks)))
        set_labels([_tick_label(t) for t in ticks])
        set_lim(float(probit(low)), float(probit(high)))
    ax.set_xlabel("False acceptance rate: spoofs accepted (%)")
    ax.set_ylabel("False rejection rate: bona fide rejected (%)")
    ax.set_title("DET curves (EER marked)")
    ax.grid(True, color="0.85", lw=0.6)
    ax.legend(loc="upper right", fontsize="small")
    fig.tight_layout()
    fig.savefig(path)
    return Path(path)


def plot_score_histograms(
    path: str | Path, sets: Mapping[str, tuple[np.ndarray, np.ndarray]], bins: int = 50
) -> Path:
    """One panel per test set: bona fide and spoof score densities on shared bins, with the
    decision boundary (score 0) marked. ``sets`` maps a name to ``(bonafide, spoof)`` scores."""
    n = max(len(sets), 1)
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(4.6 * cols, 3.4 * rows), dpi=DPI)
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, (name, (bona, spoof)) in zip(axes, sets.items(), strict=False):
        both = np.concatenate([bona, spoof])
        edges = np.histogram_bin_edges(both, bins=bins) if both.size else bins
        for scores, label, color in ((bona, "bona fide", "tab:green"), (spoof, "spoof", "tab:red")):
            if scores.size:
                ax.hist(
                    scores,
                    bins=edges,
                    density=True,
                    alpha=0.55,
                    color=color,
                    label=f"{label} ({scores.size})",
                )
        ax.axvline(0.0, color="0.3", ls="--", lw=0.8)
        ax.set_title(name)
        ax.set_xlabel("score (log-odds of bona fide)")
        ax.set_ylabel("density")
        ax.legend(fontsize="small")
    for ax in axes[len(sets) :]:
        ax.set_visible(False)
    fig.tight_layout()
    fig.savefig(path)
    return Path(path)
