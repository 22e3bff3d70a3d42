"""What every picture of :mod:`labelaudit.runs.plots` shares: pixel sizes and limits, colours, a
pyplot-free figure, its atomic PNG save, and text made safe for matplotlib.

Matplotlib is imported inside :func:`new_figure`, so importing this module does not load it.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from ..._atomic import atomic_path

#: Dots per inch of every PNG (sizes below are in pixels).
DPI = 100
#: Up to this many classes, the heatmap names every class on both axes.
MAX_NAMED_CLASSES = 40
#: Up to this many classes, the heatmap writes each value in its cell.
MAX_ANNOTATED_CLASSES = 12
#: The noise-rate plot shows at most this many classes (the highest shares above it).
MAX_BARS = 40
#: Class names longer than this are cut (with an ellipsis) on the axes.
MAX_NAME_CHARS = 24

#: Flagged samples (bars, histogram, accuracy curve).
FLAGGED_COLOR = "#c0392b"
#: Kept samples (histogram).
KEPT_COLOR = "#95a5a6"
#: Reference lines: the dataset's noise rate, the learned boundary, the loss curve.
LINE_COLOR = "#1f4e79"


def plot_sizes(num_classes: int) -> dict[str, tuple[int, int]]:
    """``(width, height)`` in pixels of each picture for a ``num_classes``-class run.

    The heatmap grows with ``K`` from 700 x 600 to at most 1600 x 1500; the noise-rate plot grows
    with the number of bars shown (at most :data:`MAX_BARS`) up to 800 x 1280; the histogram is
    800 x 500 and the training curves 1000 x 450.
    """
    side = int(min(1600, max(700, 200 + 45 * num_classes)))
    bars = min(num_classes, MAX_BARS)
    return {
        "transition_matrix": (side, side - 100),
        "class_noise_rates": (800, int(max(400, min(1300, 160 + 28 * bars)))),
        "label_quality": (800, 500),
        "training_curves": (1000, 450),
    }


def new_figure(size_px: tuple[int, int]):
    """A pyplot-free figure of exactly ``size_px`` pixels at :data:`DPI`, rendered by Agg."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(size_px[0] / DPI, size_px[1] / DPI), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_png(fig, path: str | os.PathLike) -> Path:
    """Write ``fig`` as PNG to ``path`` atomically (no ``bbox_inches``: the pixel size stays fixed)."""
    path = Path(path)
    with warnings.catch_warnings():
        # Class names in scripts DejaVu Sans lacks draw as boxes; constrained layout may give up on
        # very long names. Neither is worth a warning line in the user's terminal.
        warnings.filterwarnings("ignore", message=r"Glyph .* missing from")
        warnings.filterwarnings("ignore", message=r".*constrained_layout not applied")
        warnings.filterwarnings("ignore", message=r".*[Cc]onstrained layout")
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=DPI, metadata={"Software": None})
    fig.clear()
    return path


def plain_text(value: str) -> str:
    """``value`` safe for a matplotlib text: ``$`` would start mathtext."""
    return str(value).replace("$", r"\$")


def axis_label(name: str) -> str:
    """A class name for an axis: cut to :data:`MAX_NAME_CHARS` characters, ``$`` escaped."""
    name = str(name)
    if len(name) > MAX_NAME_CHARS:
        name = name[: MAX_NAME_CHARS - 1] + "\u2026"
    return plain_text(name)


def number_or_nan(value) -> float:
    """``value`` as a float; None (JSON null) becomes NaN."""
    return float("nan") if value is None else float(value)
