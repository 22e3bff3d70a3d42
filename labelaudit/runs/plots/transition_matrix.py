"""``transition_matrix.png``: ``T`` as a heatmap, rows = true classes, columns = given labels."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from .canvas import MAX_ANNOTATED_CLASSES, MAX_NAMED_CLASSES, axis_label, new_figure, plot_sizes, save_png


def plot_transition_matrix(matrix: np.ndarray, class_names: Sequence[str], path: str | os.PathLike) -> Path:
    """Draw ``T`` as a heatmap into the PNG file ``path`` (``plot_sizes(K)["transition_matrix"]`` pixels).

    Parameters
    ----------
    matrix : array of shape ``(K, K)``
        ``T[i, j] = P(given = j | true = i)``: rows (true classes) run down the picture, columns
        (given labels) across; rows sum to 1.
    class_names : sequence of str
        ``K`` names, in index order.
    path : path-like

    Returns
    -------
    Path
        ``path``.
    """
    from matplotlib.colors import PowerNorm

    matrix = np.asarray(matrix, dtype=np.float64)
    k = len(class_names)
    if matrix.shape != (k, k):
        raise ValueError(f"matrix must have shape (K, K) = ({k}, {k}); got {matrix.shape}")
    fig = new_figure(plot_sizes(k)["transition_matrix"])
    ax = fig.add_subplot()
    # A square root scale makes a 5% confusion visible beside a 95% diagonal.
    image = ax.imshow(
        matrix,
        cmap="Blues",
        norm=PowerNorm(gamma=0.5, vmin=0.0, vmax=1.0),
        interpolation="nearest" if k <= 200 else "antialiased",
        aspect="equal",
    )
    colorbar = fig.colorbar(image, ax=ax, shrink=0.85)
    colorbar.set_label("P(given = column | true = row)  (square-root scale)")
    title = "Transition matrix T\nrows = true class (the audit's cleaned label), columns = given label"
    if k <= MAX_NAMED_CLASSES:
        labels = [axis_label(n) for n in class_names]
        size = 10 if k <= 12 else 8 if k <= 24 else 6
        ax.set_xticks(
            range(k), labels, rotation=90 if k > 6 else 30, ha="right" if 6 >= k else "center", fontsize=size
        )
        ax.set_yticks(range(k), labels, fontsize=size)
        ax.set_xlabel("given label")
        ax.set_ylabel("true class")
    else:
        ax.set_xlabel("given label (class index)")
        ax.set_ylabel("true class (class index)")
        title += f"\n{k} classes: names left out above {MAX_NAMED_CLASSES}; see transition_matrix.csv"
    if k <= MAX_ANNOTATED_CLASSES:
        for i in range(k):
            for j in range(k):
                value = matrix[i, j]
                ax.text(
                    j,
                    i,
                    f"{value:.2f}",
                    ha="center",
                    va="center",
                    fontsize=9 if k <= 8 else 7,
                    color="white" if value > 0.45 else "black",
                )
    elif k <= MAX_NAMED_CLASSES:
        title += (
            f"\nvalues left out of the cells above {MAX_ANNOTATED_CLASSES} classes; see transition_matrix.csv"
        )
    fig.suptitle(title, fontsize=10)
    return save_png(fig, path)
