"""The ``plots/`` folder of a run directory: the four pictures written together, and rebuilt whole
from a finished run's files."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from ..._atomic import remove_stale_temporaries, temporary_sibling
from ...errors import OutputError
from ..directory import replace_folder
from .data import PlotData
from .label_quality import plot_label_quality
from .noise_rates import plot_class_noise_rates
from .reliability import plot_reliability
from .training_curves import plot_training_curves
from .transition_matrix import plot_transition_matrix

#: The folder inside a run directory that holds the pictures.
PLOTS_DIR = "plots"
#: The picture files, by plot.
PLOT_FILES = {
    "transition_matrix": "transition_matrix.png",
    "class_noise_rates": "class_noise_rates.png",
    "label_quality": "label_quality.png",
    "training_curves": "training_curves.png",
}
#: The reliability diagram, drawn only for a scan with ``--truth``.
RELIABILITY_FILE = "reliability.png"


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
    if data.reliability:
        paths["reliability"] = plot_reliability(
            data.reliability, folder / RELIABILITY_FILE, data.calibration_errors
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
        replace_folder(tmp, target)
        return
    try:
        os.rename(tmp, target)
    except OSError:
        if not target.is_dir():  # not a lost race: a real failure
            raise
        # Another rebuild put its plots/ in place first; drawn from the same files: keep it.
