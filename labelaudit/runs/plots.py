"""Pictures of a scan, for people who would rather look than read: ``<run>/plots/*.png``.

Four PNG files, written by ``scan`` into every run directory (see docs/run-directory.md) and
rebuilt from a finished run directory's files by :func:`write_plots_for_run`:

- ``transition_matrix.png``: ``T`` as a heatmap, ``T[i, j] = P(given = j | true = i)``; rows
  are true classes (the audit's cleaned labels), columns given labels, rows sum to 1. Class
  names on both axes up to :data:`MAX_NAMED_CLASSES` classes, values written in the cells up to
  :data:`MAX_ANNOTATED_CLASSES`; above that the title says what was left out.
- ``class_noise_rates.png``: per class, the share of the samples *given* that label which are
  flagged, with its 95% percentile bootstrap interval; above :data:`MAX_BARS` classes, the
  :data:`MAX_BARS` classes with the highest share.
- ``label_quality.png``: histogram of ``label_quality`` (``p_given / (p_given + p_best_other)``),
  flagged and kept samples stacked, with the learned flag boundary as a vertical line. The
  learned rule flags ``log(p_given / p_best_other) < b``; ``label_quality`` is the logistic
  function of that margin, so the same rule is ``label_quality < 1 / (1 + exp(-b))``. A fixed
  ``--threshold`` (on the confidence in the given label) and the confident-learning rule of
  ``cv-ce`` have no single boundary on this axis: the plot says so instead of drawing one.
- ``training_curves.png``: mean loss and accuracy against the given labels per epoch, phases
  shaded and named (PMNAR's warm-up end marked).

Pixel sizes are fixed (a function of ``K`` only, see :func:`plot_sizes`) and bounded for any
``K``: the review page can lay the pictures out before they load. Matplotlib is imported inside
the functions that draw, so ``import labelaudit`` and ``labelaudit --help`` do not load it, and
only its Agg renderer is used, on :class:`matplotlib.figure.Figure` objects that never touch
pyplot's global state (nothing is shown, no figure stays registered).
"""

from __future__ import annotations

import os
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from .._atomic import atomic_path, remove_stale_temporaries, temporary_sibling
from ..errors import ConfigError, OutputError
from ..reports import read_json
from .directory import check_matrix_fingerprint

#: The folder inside a run directory that holds the pictures.
PLOTS_DIR = "plots"
#: The picture files, by plot.
PLOT_FILES = {
    "transition_matrix": "transition_matrix.png",
    "class_noise_rates": "class_noise_rates.png",
    "label_quality": "label_quality.png",
    "training_curves": "training_curves.png",
}
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

_FLAGGED_COLOR = "#c0392b"
_KEPT_COLOR = "#95a5a6"
_LINE_COLOR = "#1f4e79"


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


@dataclass(frozen=True)
class PlotData:
    """Everything the pictures show, as plain arrays; built from a scan or a run directory.

    Attributes
    ----------
    class_names : tuple of str
        The ``K`` class names, in index order.
    transition_matrix : numpy.ndarray
        ``(K, K)`` ``T[i, j] = P(given = j | true = i)``; rows are true classes and sum to 1.
    noise_rates : numpy.ndarray
        ``(K,)`` share of the samples given each label that are flagged; NaN for a class without samples.
    noise_rate_intervals : numpy.ndarray
        ``(K, 2)`` ``[low, high]`` 95% percentile bootstrap interval of each rate; NaN where undefined.
    class_counts : numpy.ndarray
        ``(K,)`` number of samples given each label.
    noise_rate : float
        The estimated noise rate of the whole dataset (share flagged).
    label_quality : numpy.ndarray
        ``(N,)`` ``p_given / (p_given + p_best_other)`` per sample.
    suspected_noisy : numpy.ndarray
        ``(N,)`` bool, the flags.
    flag_rule : dict
        How the flags were decided (``summary.json``'s ``flag_rule``).
    training_curves : list of dict
        One row per epoch: ``phase, epoch, lr, loss, train_accuracy, used_fraction, seconds``.
    method : str
        The scan's method (``nlnl``, ``pmnar``, ``cv-ce``...).
    warmup_epochs : int
        PMNAR's warm-up epochs (0 for other methods), marked on the training curves.
    """

    class_names: tuple[str, ...]
    transition_matrix: np.ndarray
    noise_rates: np.ndarray
    noise_rate_intervals: np.ndarray
    class_counts: np.ndarray
    noise_rate: float
    label_quality: np.ndarray
    suspected_noisy: np.ndarray
    flag_rule: dict = field(default_factory=dict)
    training_curves: list = field(default_factory=list)
    method: str = ""
    warmup_epochs: int = 0

    @classmethod
    def from_summary(
        cls, summary: Mapping, report: pd.DataFrame, transition_matrix: np.ndarray
    ) -> "PlotData":
        """Build from a scan's ``summary.json`` content, its report and its ``T``.

        Parameters
        ----------
        summary : mapping
            :func:`labelaudit.pipeline.scan.summary`'s dict, or ``summary.json`` read back (NaN or null
            for missing numbers). A summary written before ``per_class_noise_rate_intervals_95``
            existed gets the intervals computed from ``report`` with the scan's seed.
        report : pandas.DataFrame
            ``N`` rows with ``given_label`` (class names), ``suspected_noisy`` and ``label_quality``.
        transition_matrix : array of shape ``(K, K)``
            ``T[i, j] = P(given = j | true = i)``.

        Returns
        -------
        PlotData
        """
        from ..audit.estimators import per_class_bootstrap_intervals

        names = tuple(str(n) for n in summary["class_names"])
        k = len(names)
        matrix = np.asarray(transition_matrix, dtype=np.float64)
        if matrix.shape != (k, k):
            raise ValueError(f"transition_matrix must have shape (K, K) = ({k}, {k}); got {matrix.shape}")
        flags = report["suspected_noisy"].to_numpy(dtype=bool)
        index = {name: i for i, name in enumerate(names)}
        given = report["given_label"].astype(str).map(index)
        if given.isna().any():
            raise ValueError(
                f"report has given labels that are not classes of the summary, e.g. "
                f"{report['given_label'][given.isna()].iloc[0]!r}"
            )
        given = given.to_numpy(dtype=np.int64)
        counts = np.bincount(given, minlength=k)
        rates_by_name = summary.get("per_class_noise_rates") or {}
        rates = np.array([_number(rates_by_name.get(n)) for n in names])
        stored = summary.get("per_class_noise_rate_intervals_95")
        if isinstance(stored, Mapping) and all(isinstance(stored.get(n), Mapping) for n in names):
            intervals = np.array(
                [[_number(stored[n].get("low")), _number(stored[n].get("high"))] for n in names]
            )
        else:  # a run from before the per-class intervals: the same computation the scan does now
            seed = ((summary.get("settings") or {}).get("train") or {}).get("seed", 0)
            intervals = per_class_bootstrap_intervals(flags, given, k, seed=int(seed or 0))
        settings = summary.get("settings") or {}
        method = str(summary.get("method", ""))
        warmup = int(((settings.get("pmnar") or {}).get("warmup") or 0)) if method == "pmnar" else 0
        return cls(
            class_names=names,
            transition_matrix=matrix,
            noise_rates=rates,
            noise_rate_intervals=intervals.reshape(k, 2),
            class_counts=counts,
            noise_rate=_number(summary.get("estimated_noise_rate", flags.mean() if len(flags) else None)),
            label_quality=report["label_quality"].to_numpy(dtype=np.float64),
            suspected_noisy=flags,
            flag_rule=dict(summary.get("flag_rule") or {}),
            training_curves=list(summary.get("training_curves") or []),
            method=method,
            warmup_epochs=warmup,
        )

    @classmethod
    def from_run_dir(cls, run_dir: str | os.PathLike) -> "PlotData":
        """Read a finished scan's ``summary.json``, ``report.parquet`` and ``transition_matrix.csv``.

        Raises
        ------
        ConfigError
            ``run_dir`` is not a scan's run directory, or one of the three files is missing or unreadable.
        """
        from ..reports import read_matrix_csv

        path = Path(run_dir).expanduser()
        if not path.is_dir():
            raise ConfigError(
                f"run directory {str(run_dir)!r} does not exist; pass the --out folder of a labelaudit scan"
            )
        missing = [
            n for n in ("summary.json", "report.parquet", "transition_matrix.csv") if not (path / n).is_file()
        ]
        if missing:
            raise ConfigError(
                f"{str(path)!r} is not a complete scan run directory (missing "
                f"{', '.join(missing)}); "
                "pass the --out folder of a finished labelaudit scan"
            )
        try:
            summary = read_json(path / "summary.json")
        except (OSError, ValueError) as exc:
            raise ConfigError(
                f"cannot read summary.json in {str(path)!r} ({exc}); scan the dataset again"
            ) from None
        if (
            not isinstance(summary, dict)
            or summary.get("kind") != "scan"
            or not isinstance(summary.get("class_names"), list)
        ):
            raise ConfigError(
                f"summary.json in {str(path)!r} is not a labelaudit scan's summary; pass the "
                "--out "
                "folder of a labelaudit scan"
            )
        columns = ["given_label", "suspected_noisy", "label_quality"]
        try:
            report = pd.read_parquet(path / "report.parquet", columns=columns)
        except (OSError, ValueError, KeyError) as exc:  # pyarrow's errors subclass these
            raise ConfigError(
                f"cannot read {columns} from report.parquet in {str(path)!r} ({exc}); scan the dataset again"
            ) from None
        check_matrix_fingerprint(path / "transition_matrix.csv", summary.get("data_fingerprint"))
        try:
            matrix = read_matrix_csv(path / "transition_matrix.csv", len(summary["class_names"]))
        except (OSError, ValueError) as exc:
            raise ConfigError(
                f"cannot read transition_matrix.csv in {str(path)!r} ({exc}); scan the dataset again"
            ) from None
        try:
            return cls.from_summary(summary, report, matrix)
        except (ValueError, TypeError, AttributeError) as exc:
            raise ConfigError(
                f"the files in {str(path)!r} do not fit together ({exc}); scan the dataset again"
            ) from None


def write_plots(data: PlotData, folder: str | os.PathLike) -> dict[str, Path]:
    """Write the four pictures of :data:`PLOT_FILES` into ``folder`` (created), each atomically.

    Parameters
    ----------
    data : PlotData
    folder : path-like
        Normally ``<run>/plots`` inside the temporary run folder that a scan renames into place.

    Returns
    -------
    dict
        Plot name -> path of its PNG file.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {name: folder / file for name, file in PLOT_FILES.items()}
    plot_transition_matrix(data.transition_matrix, data.class_names, paths["transition_matrix"])
    plot_class_noise_rates(
        data.noise_rates,
        data.noise_rate_intervals,
        data.class_names,
        paths["class_noise_rates"],
        counts=data.class_counts,
        overall=data.noise_rate,
    )
    plot_label_quality(data.label_quality, data.suspected_noisy, data.flag_rule, paths["label_quality"])
    plot_training_curves(
        data.training_curves, paths["training_curves"], method=data.method, warmup_epochs=data.warmup_epochs
    )
    return paths


def write_plots_for_run(run_dir: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """(Re)build ``<run_dir>/plots/`` from a finished scan's files; returns the plots folder.

    For run directories written before scans drew pictures. Reads ``summary.json``,
    ``report.parquet`` and ``transition_matrix.csv`` (see :meth:`PlotData.from_run_dir`), draws
    into a hidden temporary sibling of ``plots/`` and renames it into place, so ``plots/``
    appears whole or not at all; a killed rebuild leaves only the temporary, which the next
    rebuild deletes. When another process renames its own ``plots/`` into place first (two
    review pages opened at once), that one is kept: both were drawn from the same files.

    Parameters
    ----------
    run_dir : path-like
        A scan's run directory.
    overwrite : bool, default=False
        Replace an existing ``plots/`` folder; without it an existing one is an error.

    Raises
    ------
    ConfigError
        Not a scan's run directory, or its files are missing or unreadable.
    OutputError
        ``plots/`` exists and ``overwrite`` is false, or the run directory cannot be written.
    """
    data = PlotData.from_run_dir(run_dir)
    target = Path(run_dir).expanduser() / PLOTS_DIR
    if target.exists() and not overwrite:
        raise OutputError(f"{str(target)!r} exists; pass overwrite=True to draw it again")
    if target.exists() and not target.is_dir():
        raise OutputError(
            f"{str(target)!r} is a file, not labelaudit's plots folder; move it away and try again"
        )
    remove_stale_temporaries(target.parent)
    tmp = temporary_sibling(target)
    try:
        try:
            tmp.mkdir()
        except OSError as exc:
            raise OutputError(
                f"cannot write plots into {str(target.parent)!r} ({exc.strerror or exc}); copy "
                "the run "
                "directory somewhere writable"
            ) from None
        write_plots(data, tmp)
        _move_into_place(tmp, target, overwrite=overwrite)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _move_into_place(tmp: Path, target: Path, *, overwrite: bool) -> None:
    """Rename the finished ``tmp`` folder to ``target``; with ``overwrite`` swap out an old ``target``."""
    if overwrite and target.is_dir():
        from .directory import replace_folder

        replace_folder(tmp, target)
        return
    try:
        os.rename(tmp, target)
    except OSError:
        if not target.is_dir():  # not a lost race: a real failure
            raise
        # Another rebuild put its plots/ in place first; drawn from the same files: keep it.


# --- the four pictures -------------------------------------------------------------------------


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
    fig = _figure(plot_sizes(k)["transition_matrix"])
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
        labels = [_label(n) for n in class_names]
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
    return _save(fig, path)


def plot_class_noise_rates(
    rates: np.ndarray,
    intervals: np.ndarray,
    class_names: Sequence[str],
    path: str | os.PathLike,
    *,
    counts: np.ndarray | None = None,
    overall: float | None = None,
) -> Path:
    """Draw each class's flagged share with its 95% interval as horizontal bars into ``path``.

    Parameters
    ----------
    rates : array of shape ``(K,)``
        Share of the samples given each label that are flagged; NaN: no samples (no bar).
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
    if k > MAX_BARS:  # the noisiest classes, worst first; NaN (no samples) last
        shown = np.argsort(np.where(np.isnan(rates), -1.0, -rates), kind="stable")[:MAX_BARS]
        title = f"Flagged share per class: the {MAX_BARS} highest of {k} classes (all in summary.json)"
    else:
        shown = np.arange(k)
        title = "Flagged share per class (share of the images given the label that are flagged)"
    fig = _figure(plot_sizes(k)["class_noise_rates"])
    ax = fig.add_subplot()
    y = np.arange(len(shown))
    values = rates[shown]
    low, high = intervals[shown, 0], intervals[shown, 1]
    ax.barh(y, np.nan_to_num(values), color=_FLAGGED_COLOR, alpha=0.75, height=0.6)
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
    top = np.nanmax(np.concatenate([high, values, [overall if overall is not None else np.nan, 0.0]]))
    ax.set_xlim(0, float(min(1.0, max(0.05, top * 1.15))))
    if overall is not None and not np.isnan(overall):
        ax.axvline(
            overall, color=_LINE_COLOR, linestyle="--", linewidth=1.2, label=f"all classes: {overall:.1%}"
        )
    fontsize = 9 if len(shown) <= 20 else 7
    ax.set_yticks(y, [_label(class_names[i]) for i in shown], fontsize=fontsize)
    ax.set_ylim(len(shown) - 0.5, -0.5)  # first class (or the worst) at the top
    ax.xaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set_xlabel("flagged share (estimated noise rate of the class)")
    # The numbers as tick labels of a twin axis on the right: the layout makes room for them.
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
    if ax.get_legend_handles_labels()[0]:
        fig.legend(
            *ax.get_legend_handles_labels(), loc="outside lower center", ncols=2, fontsize=8, frameon=False
        )
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)


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
    fig = _figure(plot_sizes(0)["label_quality"])
    ax = fig.add_subplot()
    bins = np.linspace(0.0, 1.0, 51)
    clipped = np.clip(quality, 0.0, 1.0)
    ax.hist(
        [clipped[~flags], clipped[flags]],
        bins=bins,
        stacked=True,
        color=[_KEPT_COLOR, _FLAGGED_COLOR],
        label=[f"kept ({int((~flags).sum()):,})", f"flagged ({int(flags.sum()):,})"],
    )
    ax.set_yscale("log")  # a 1% tail of wrong labels stays visible beside the pile near 1
    boundary = label_quality_boundary(flag_rule)
    rule = flag_rule.get("rule")
    title = f"Label quality of {len(quality):,} images"
    if boundary is not None:
        ax.axvline(
            boundary, color=_LINE_COLOR, linewidth=2, label=f"learned boundary: flagged below {boundary:.3f}"
        )
    elif rule == "fixed":
        title += (
            "\nflagged where the confidence in the given label < "
            f"{flag_rule.get('confidence_threshold')} "
            "(--threshold): no single boundary on this axis"
        )
    elif rule:
        title += f"\nflagged by the rule {_text(rule)}: no single boundary on this axis"
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
    return _save(fig, path)


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

    fig = _figure(plot_sizes(0)["training_curves"])
    loss_ax, acc_ax = fig.subplots(1, 2)
    epochs = np.arange(1, len(curves) + 1)
    loss = np.array([_number(row.get("loss")) for row in curves])
    accuracy = np.array([_number(row.get("train_accuracy")) for row in curves])
    used = np.array([_number(row.get("used_fraction")) for row in curves])
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
        loss_ax.plot(epochs, loss, color=_LINE_COLOR, marker=marker, markersize=3, label="mean loss")
        acc_ax.plot(
            epochs,
            accuracy,
            color=_FLAGGED_COLOR,
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
    fig.suptitle(_text(title), fontsize=10)
    return _save(fig, path)


# --- helpers -----------------------------------------------------------------------------------


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
                _text(name),
                transform=ax.get_xaxis_transform(),
                ha="center",
                va="top",
                fontsize=8,
                color="#34495e",
                clip_on=True,
            )


def _figure(size_px: tuple[int, int]):
    """A pyplot-free figure of exactly ``size_px`` pixels at :data:`DPI`, rendered by Agg."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(size_px[0] / DPI, size_px[1] / DPI), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: str | os.PathLike) -> Path:
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


def _text(value: str) -> str:
    """``value`` safe for a matplotlib text: ``$`` would start mathtext."""
    return str(value).replace("$", r"\$")


def _label(name: str) -> str:
    """A class name for an axis: cut to :data:`MAX_NAME_CHARS` characters, ``$`` escaped."""
    name = str(name)
    if len(name) > MAX_NAME_CHARS:
        name = name[: MAX_NAME_CHARS - 1] + "\u2026"
    return _text(name)


def _number(value) -> float:
    """``value`` as a float; None (JSON null) becomes NaN."""
    return float("nan") if value is None else float(value)
