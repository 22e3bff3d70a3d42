"""``label_quality.png``: the histogram of ``label_quality`` (``p_given / (p_given + p_best_other)``),
flagged and kept samples stacked, with the learned flag boundary as a vertical line.

The learned rule flags ``log(p_given / p_best_other) < b``; ``label_quality`` is the logistic
function of that margin, so the same rule is ``label_quality < 1 / (1 + exp(-b))``. A fixed
``--threshold`` (on the confidence in the given label) and the confident-learning rule of
``cv-ce`` have no single boundary on this axis: the plot says so instead of drawing one.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

import numpy as np

from .canvas import FLAGGED_COLOR, KEPT_COLOR, LINE_COLOR, new_figure, plain_text, plot_sizes, save_png


def label_quality_boundary(flag_rule: Mapping) -> float | None:
    """The flag boundary on the ``label_quality`` scale, or None when the rule has none.

    The learned rule (``"mixture"``) flags ``margin < b`` with ``margin = log(p_given /
    p_best_other)``; since ``label_quality = 1 / (1 + exp(-margin))`` rises with the margin, that
    is ``label_quality < 1 / (1 + exp(-b))``. A fixed confidence threshold and the confident-learning
    or cleanlab rules of ``cv-ce`` do not flag below one ``label_quality``: None.
    """
    if flag_rule.get("rule") != "mixture":
        return None
    if flag_rule.get("label_quality_threshold") is not None:
        return float(flag_rule["label_quality_threshold"])
    if flag_rule.get("margin_boundary") is not None:
        return float(1.0 / (1.0 + np.exp(-float(flag_rule["margin_boundary"]))))
    return None


def plot_label_quality(
    label_quality: np.ndarray, suspected_noisy: np.ndarray, flag_rule: Mapping, path: str | os.PathLike
) -> Path:
    """Draw the histogram of ``label_quality`` (flagged and kept stacked) and the flag boundary into ``path``.

    Parameters
    ----------
    label_quality : array of shape ``(N,)``
        ``p_given / (p_given + p_best_other)``, in ``[0, 1]``.
    suspected_noisy : array of shape ``(N,)``
        The flags.
    flag_rule : mapping
        ``summary.json``'s ``flag_rule``; see :func:`label_quality_boundary` for what is drawn.
    path : path-like

    Returns
    -------
    Path
        ``path``; the picture is 800 x 500 pixels.
    """
    quality = np.asarray(label_quality, dtype=np.float64)
    flags = np.asarray(suspected_noisy, dtype=bool)
    if quality.shape != flags.shape or quality.ndim != 1:
        raise ValueError(
            "label_quality and suspected_noisy must be 1-D of the same shape; got "
            f"{quality.shape} and {flags.shape}"
        )
    fig = new_figure(plot_sizes(0)["label_quality"])
    ax = fig.add_subplot()
    bins = np.linspace(0.0, 1.0, 51)
    clipped = np.clip(quality, 0.0, 1.0)
    ax.hist(
        [clipped[~flags], clipped[flags]],
        bins=bins,
        stacked=True,
        color=[KEPT_COLOR, FLAGGED_COLOR],
        label=[f"kept ({int((~flags).sum()):,})", f"flagged ({int(flags.sum()):,})"],
    )
    ax.set_yscale("log")  # a 1% tail of wrong labels stays visible beside the pile near 1
    boundary = label_quality_boundary(flag_rule)
    rule = flag_rule.get("rule")
    title = f"Label quality of {len(quality):,} images"
    if boundary is not None:
        ax.axvline(
            boundary, color=LINE_COLOR, linewidth=2, label=f"learned boundary: flagged below {boundary:.3f}"
        )
    elif rule == "fixed":
        title += (
            "\nflagged where the confidence in the given label < "
            f"{flag_rule.get('confidence_threshold')} "
            "(--threshold): no single boundary on this axis"
        )
    elif rule:
        title += f"\nflagged by the rule {plain_text(rule)}: no single boundary on this axis"
    else:
        title += "\nthe flag rule is not recorded: no boundary drawn"
    ax.axvline(
        0.5, color="#555555", linestyle=":", linewidth=1, label="0.5: given label ties with the best other"
    )
    ax.set_xlim(0, 1)
    ax.set_xlabel("label quality = p_given / (p_given + p_best_other)   (low = label likely wrong)")
    ax.set_ylabel("images (log scale)")
    ax.legend(loc="best", fontsize=8)
    ax.set_title(title, fontsize=10)
    return save_png(fig, path)
