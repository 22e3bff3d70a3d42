"""``training_curves.png``: mean loss and accuracy against the given labels per epoch, the training
phases shaded and named (PMNAR's warm-up end marked)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from .canvas import FLAGGED_COLOR, LINE_COLOR, new_figure, number_or_nan, plain_text, plot_sizes, save_png


def plot_training_curves(
    curves: Sequence[Mapping], path: str | os.PathLike, *, method: str = "", warmup_epochs: int = 0
) -> Path:
    """Draw loss and training accuracy per epoch, phases shaded and named, into ``path``.

    Parameters
    ----------
    curves : sequence of mapping
        ``summary.json``'s ``training_curves``: one row per epoch in training order with
        ``phase``, ``loss`` (None where no sample was used), ``train_accuracy`` and ``used_fraction``.
        Epochs are numbered 1, 2... along the whole run.
    path : path-like
    method : str, optional
        Named in the title (``cv-ce``: the curves are those of the first fold's model, the one saved).
    warmup_epochs : int, default=0
        PMNAR's warm-up: a dotted line where it ends.

    Returns
    -------
    Path
        ``path``; the picture is 1000 x 450 pixels.
    """
    from matplotlib.ticker import MaxNLocator

    fig = new_figure(plot_sizes(0)["training_curves"])
    loss_ax, acc_ax = fig.subplots(1, 2)
    epochs = np.arange(1, len(curves) + 1)
    loss = np.array([number_or_nan(row.get("loss")) for row in curves])
    accuracy = np.array([number_or_nan(row.get("train_accuracy")) for row in curves])
    used = np.array([number_or_nan(row.get("used_fraction")) for row in curves])
    phases = [str(row.get("phase", "")) for row in curves]
    title = f"Training curves ({method})" if method else "Training curves"
    if method == "cv-ce":
        title += ": the first fold's model (the one saved in model.pt)"
    if not len(curves):
        for ax in (loss_ax, acc_ax):
            ax.text(
                0.5,
                0.5,
                "no training curves recorded in this run",
                ha="center",
                va="center",
                transform=ax.transAxes,
            )
    else:
        for ax in (loss_ax, acc_ax):
            _mark_phases(ax, phases)
            if warmup_epochs and warmup_epochs < len(curves):
                ax.axvline(
                    warmup_epochs + 0.5, color="#555555", linestyle=":", linewidth=1.2, label="end of warm-up"
                )
        marker = "o" if len(curves) <= 60 else None
        loss_ax.plot(epochs, loss, color=LINE_COLOR, marker=marker, markersize=3, label="mean loss")
        acc_ax.plot(
            epochs,
            accuracy,
            color=FLAGGED_COLOR,
            marker=marker,
            markersize=3,
            label="accuracy against the given labels",
        )
        if np.nanmin(used, initial=1.0) < 1.0:
            acc_ax.plot(
                epochs, used, color="#27ae60", linestyle="--", linewidth=1.2, label="share of samples used"
            )
        acc_ax.set_ylim(0, 1.05)
        for ax in (loss_ax, acc_ax):
            ax.set_xlim(0.5, len(curves) + 0.5)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.legend(loc="best", fontsize=8)
    loss_ax.set_xlabel("epoch")
    acc_ax.set_xlabel("epoch")
    loss_ax.set_ylabel("mean training loss (each phase has its own loss)")
    acc_ax.set_ylabel("share of training images")
    fig.suptitle(plain_text(title), fontsize=10)
    return save_png(fig, path)


def _mark_phases(ax, phases: Sequence[str]) -> None:
    """Shade every other contiguous run of one phase and write its name at the top of the axes."""
    start = 0
    spans = []
    for i in range(1, len(phases) + 1):
        if i == len(phases) or phases[i] != phases[start]:
            spans.append((start, i - 1, phases[start]))
            start = i
    for n, (first, last, name) in enumerate(spans):
        if n % 2:
            ax.axvspan(first + 0.5, last + 1.5, color="#ecf0f1", zorder=0)
        if n:
            ax.axvline(first + 0.5, color="#7f8c8d", linewidth=0.8, zorder=1)
        if len(spans) <= 8:
            ax.text(
                (first + last) / 2 + 1,
                0.99,
                plain_text(name),
                transform=ax.get_xaxis_transform(),
                ha="center",
                va="top",
                fontsize=8,
                color="#34495e",
                clip_on=True,
            )
