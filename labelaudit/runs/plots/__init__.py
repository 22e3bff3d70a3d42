"""Pictures of a scan, for people who would rather look than read: ``<run>/plots/*.png``.

Four PNG files, written by ``scan`` into every run directory (see docs/run-directory.md) and
rebuilt from a finished run directory's files by :func:`write_plots_for_run`, one module each:

- ``transition_matrix.png`` (:mod:`.transition_matrix`): ``T`` as a heatmap,
  ``T[i, j] = P(given = j | true = i)``; rows are true classes (the audit's cleaned labels),
  columns given labels, rows sum to 1. Class names on both axes up to :data:`MAX_NAMED_CLASSES`
  classes, values written in the cells up to :data:`MAX_ANNOTATED_CLASSES`; above that the
  title says what was left out.
- ``class_noise_rates.png`` (:mod:`.noise_rates`): per class, the share of the samples *given*
  that label which are flagged, with its 95% percentile bootstrap interval; above
  :data:`MAX_BARS` classes, the :data:`MAX_BARS` classes with the highest share.
- ``label_quality.png`` (:mod:`.label_quality`): histogram of ``label_quality``
  (``p_given / (p_given + p_best_other)``), flagged and kept samples stacked, with the learned
  flag boundary as a vertical line. The learned rule flags ``log(p_given / p_best_other) < b``;
  ``label_quality`` is the logistic function of that margin, so the same rule is
  ``label_quality < 1 / (1 + exp(-b))``. A fixed ``--threshold`` (on the confidence in the given
  label) and the confident-learning rule of ``cv-ce`` have no single boundary on this axis: the
  plot says so instead of drawing one.
- ``training_curves.png`` (:mod:`.training_curves`): mean loss and accuracy against the given
  labels per epoch, phases shaded and named (PMNAR's warm-up end marked).
- ``reliability.png`` (:mod:`.reliability`, only for a scan with ``--truth``): reliability diagrams
  of ``p_label_wrong`` and ``suggested_confidence`` against the truth.

What they show is a :class:`PlotData` (:mod:`.data`); :mod:`.folder` writes the four into
``plots/``; :mod:`.canvas` holds what they share (sizes, limits, colours, the figure and its save).

Pixel sizes are fixed (a function of ``K`` only, see :func:`plot_sizes`) and bounded for any
``K``: the review page can lay the pictures out before they load. Matplotlib is imported inside
the functions that draw, so ``import labelaudit`` and ``labelaudit --help`` do not load it, and
only its Agg renderer is used, on :class:`matplotlib.figure.Figure` objects that never touch
pyplot's global state (nothing is shown, no figure stays registered).
"""

from .canvas import DPI, MAX_ANNOTATED_CLASSES, MAX_BARS, MAX_NAME_CHARS, MAX_NAMED_CLASSES, plot_sizes
from .data import PlotData
from .folder import PLOT_FILES, PLOTS_DIR, write_plots, write_plots_for_run
from .label_quality import label_quality_boundary, plot_label_quality
from .noise_rates import plot_class_noise_rates
from .training_curves import plot_training_curves
from .transition_matrix import plot_transition_matrix

__all__ = [
    "DPI",
    "MAX_ANNOTATED_CLASSES",
    "MAX_BARS",
    "MAX_NAMED_CLASSES",
    "MAX_NAME_CHARS",
    "PLOTS_DIR",
    "PLOT_FILES",
    "PlotData",
    "label_quality_boundary",
    "plot_class_noise_rates",
    "plot_label_quality",
    "plot_sizes",
    "plot_training_curves",
    "plot_transition_matrix",
    "write_plots",
    "write_plots_for_run",
]
