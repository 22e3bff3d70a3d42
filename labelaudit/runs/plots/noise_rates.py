"""``class_noise_rates.png``: per class, the estimated share of wrong labels among the samples given
that label, with its 95% interval; above :data:`~.canvas.MAX_BARS` classes, the highest shares."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from .canvas import FLAGGED_COLOR, LINE_COLOR, MAX_BARS, axis_label, new_figure, plot_sizes, save_png


def plot_class_noise_rates(
    rates: np.ndarray,
    intervals: np.ndarray,
    class_names: Sequence[str],
    path: str | os.PathLike,
    *,
    counts: np.ndarray | None = None,
    overall: float | None = None,
) -> Path:
    """Draw each class's estimated noise rate with its 95% interval as horizontal bars into ``path``.

    Parameters
    ----------
    rates : array of shape ``(K,)``
        Estimated share of wrong labels among the samples given each label (the mean
        ``p_label_wrong``); NaN: no samples (no bar).
    intervals : array of shape ``(K, 2)``
        ``[low, high]`` per class (percentile bootstrap); NaN: no error bar.
    class_names : sequence of str
        ``K`` names.
    path : path-like
    counts : array of shape ``(K,)``, optional
        Samples given each label, written beside the bars.
    overall : float, optional
        The dataset's noise rate, drawn as a dashed line.

    Returns
    -------
    Path
        ``path``; the picture is ``plot_sizes(K)["class_noise_rates"]`` pixels. Above
        :data:`MAX_BARS` classes it shows the :data:`MAX_BARS` highest shares and says so.
    """
    from matplotlib.ticker import PercentFormatter

    rates = np.asarray(rates, dtype=np.float64)
    intervals = np.asarray(intervals, dtype=np.float64)
    k = len(class_names)
    if rates.shape != (k,) or intervals.shape != (k, 2):
        raise ValueError(
            f"rates must have shape ({k},) and intervals ({k}, 2); got {rates.shape} and {intervals.shape}"
        )
    shown, title = _shown_classes(rates)
    fig = new_figure(plot_sizes(k)["class_noise_rates"])
    ax = fig.add_subplot()
    y = np.arange(len(shown))
    values = rates[shown]
    low, high = intervals[shown, 0], intervals[shown, 1]
    _draw_bars(ax, y, values, low, high)
    top = np.nanmax(np.concatenate([high, values, [overall if overall is not None else np.nan, 0.0]]))
    ax.set_xlim(0, float(min(1.0, max(0.05, top * 1.15))))
    if overall is not None and not np.isnan(overall):
        ax.axvline(
            overall, color=LINE_COLOR, linestyle="--", linewidth=1.2, label=f"all classes: {overall:.1%}"
        )
    fontsize = 9 if len(shown) <= 20 else 7
    ax.set_yticks(y, [axis_label(class_names[i]) for i in shown], fontsize=fontsize)
    ax.set_ylim(len(shown) - 0.5, -0.5)  # first class (or the worst) at the top
    ax.xaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set_xlabel("estimated noise rate of the class (mean P(label wrong))")
    _write_shares(ax, y, shown, rates, counts, fontsize)
    if ax.get_legend_handles_labels()[0]:
        fig.legend(
            *ax.get_legend_handles_labels(), loc="outside lower center", ncols=2, fontsize=8, frameon=False
        )
    fig.suptitle(title, fontsize=10)
    return save_png(fig, path)


def _shown_classes(rates: np.ndarray) -> tuple[np.ndarray, str]:
    """The indexes of the classes to draw, in drawing order, and the picture's title."""
    k = len(rates)
    if k > MAX_BARS:  # the noisiest classes, worst first; NaN (no samples) last
        shown = np.argsort(np.where(np.isnan(rates), -1.0, -rates), kind="stable")[:MAX_BARS]
        return shown, f"Estimated noise rate per class: the {MAX_BARS} highest of {k} (all in summary.json)"
    return np.arange(
        k
    ), "Estimated noise rate per class (expected share of wrong labels among the images given it)"


def _draw_bars(ax, y: np.ndarray, values: np.ndarray, low: np.ndarray, high: np.ndarray) -> None:
    """One bar per class at ``y`` (NaN: none) and its interval as an error bar where it is defined."""
    ax.barh(y, np.nan_to_num(values), color=FLAGGED_COLOR, alpha=0.75, height=0.6)
    has_interval = ~np.isnan(low) & ~np.isnan(high) & ~np.isnan(values)
    if has_interval.any():
        err = np.vstack([values - low, high - values])[:, has_interval]
        ax.errorbar(
            values[has_interval],
            y[has_interval],
            xerr=np.clip(err, 0, None),
            fmt="none",
            ecolor="black",
            elinewidth=1.2,
            capsize=3,
            label="95% bootstrap interval",
        )


def _write_shares(
    ax, y: np.ndarray, shown: np.ndarray, rates: np.ndarray, counts: np.ndarray | None, fontsize: int
) -> None:
    """Each shown class's share (and sample count) as tick labels of a twin axis on the right, for
    which the layout makes room."""
    numbers = ax.twinx()
    numbers.set_ylim(ax.get_ylim())
    numbers.set_yticks(
        y,
        [
            "no samples"
            if np.isnan(rates[i])
            else f"{rates[i]:.1%}" + (f" of {int(counts[i]):,}" if counts is not None else "")
            for i in shown
        ],
        fontsize=fontsize,
    )
    numbers.tick_params(length=0)
