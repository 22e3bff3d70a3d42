"""``reliability.png`` (scans with ``--truth``): how far the scan's probabilities are from the truth.

Two reliability diagrams side by side, from ``summary.json``'s ``truth.reliability``: for each of
10 equal-width bins of ``p_label_wrong`` (all samples), the share of labels that are really wrong,
and for ``suggested_confidence`` (flagged and ambiguous samples) the share of suggestions that are
the true class. A calibrated probability lies on the diagonal; each point is sized by its bin's
count and the title carries the expected calibration error.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

from .canvas import FLAGGED_COLOR, LINE_COLOR, new_figure, save_png

#: The picture's size in pixels (two square panels).
RELIABILITY_SIZE = (960, 480)
_PANELS = (
    ("p_label_wrong", "P(label wrong)", "share of labels really wrong"),
    ("suggested_confidence", "P(suggestion right), flagged samples", "share of suggestions right"),
)


def plot_reliability(reliability: Mapping, path: str | os.PathLike, ece: Mapping | None = None) -> Path:
    """Draw the two reliability diagrams of ``reliability`` (``{name: [bin, ...]}``, bins as
    :func:`labelaudit.audit.calibration.reliability_bins` returns them) into ``path``; ``ece``
    ``{name: float}`` goes in each panel's title."""
    fig = new_figure(RELIABILITY_SIZE)
    axes = fig.subplots(1, 2)
    for ax, (name, xlabel, ylabel) in zip(axes, _PANELS):
        bins = [b for b in reliability.get(name, []) if b.get("count")]
        ax.plot([0, 1], [0, 1], color=LINE_COLOR, linestyle="--", linewidth=1)
        if bins:
            total = sum(b["count"] for b in bins)
            ax.scatter(
                [b["mean_confidence"] for b in bins],
                [b["share_true"] for b in bins],
                s=[20 + 400 * b["count"] / total for b in bins],
                color=FLAGGED_COLOR,
                alpha=0.8,
                zorder=3,
            )
            ax.plot(
                [b["mean_confidence"] for b in bins], [b["share_true"] for b in bins], color=FLAGGED_COLOR
            )
        else:
            ax.text(0.5, 0.5, "no samples", ha="center", va="center", transform=ax.transAxes)
        value = (ece or {}).get(name)
        ax.set_title(f"{xlabel}" + (f"\nexpected calibration error {value:.3f}" if value is not None else ""))
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("mean predicted probability in the bin")
        ax.set_ylabel(ylabel)
        ax.set_aspect("equal")
    return save_png(fig, path)
