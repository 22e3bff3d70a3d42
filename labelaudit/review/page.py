"""``review``: a self-contained review page for the samples a scan flagged.

:func:`write_review` writes ``<run>/review/``, a folder that opens from disk in any browser
(no server, no network, nothing from a CDN):

- ``index.html``, ``review.css``, ``review.js``: the page (static files from
  ``labelaudit/review/assets``; they hold no data, so nothing in them needs escaping);
- ``data.js``: the data, as strict JSON assigned to ``window.LABELAUDIT_REVIEW`` (a page opened
  from ``file://`` cannot ``fetch()`` a JSON file beside it, but it can load a script);
- ``thumbs/<position>.jpg``: one JPEG per flagged sample shown, at most ``thumb_size`` pixels a
  side, EXIF orientation applied; ``plots/*.png``: the run's plots, copied when present;
- ``review.json``: what was written (counts, settings, the unreadable images);
  ``unreadable.csv`` (``sample_id, path, reason, detail``) when some image could not be read:
  such a sample gets a placeholder on the page, never an error.

The page builds every element with ``textContent`` and DOM properties, never ``innerHTML`` with
data, and its Content-Security-Policy forbids inline scripts and network requests: a class
named ``<img src=x onerror=alert(1)>`` shows as text. Decisions persist in the browser's
``localStorage`` under :attr:`ReviewData.review_key` and are exported as ``decisions.csv``
(``sample_id, decision, new_label, note, source, check_size, check_max_wrong``; ``source`` says
whether a decision was manual or bulk after a spot-check; see docs/review.md).

The folder is written all or nothing: built in a hidden temporary sibling inside the run
directory and renamed into place while the run directory's lock is held. An earlier
``review/`` is replaced only with ``overwrite=True``, and never when it holds files a review
does not write. Nothing else in the run directory, and nothing outside it but the lock file
beside it, is written; the images are only read.
"""

from __future__ import annotations

import os
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Callable, Iterator, Optional

import numpy as np
import pandas as pd

from .. import __version__
from .._atomic import remove_stale_temporaries, temporary_sibling
from ..errors import ConfigError, LabelAuditError, OutputError
from ..reports import json_text, write_csv
from ..runs.directory import FolderLock, replace_folder
from ..runs.format import MATRIX_FILES, RUN_FORMAT_VERSION  # noqa: F401  (importable here as before)
from .page_data import (  # noqa: F401  (re-exported: importable from review.page as before)
    DECISION_COLUMNS,
    DECISIONS,
    HISTOGRAM_BINS,
    PAGE_SIZE,
    REPORT_COLUMNS,
    ReviewData,
    page_data,
    read_review_data,
)
from .thumbnails import make_thumbnails, thumbnail  # noqa: F401

REVIEW_DIR = "review"
#: Static files of the page, copied from ``labelaudit/review/assets``.
ASSET_FILES = ("index.html", "review.css", "review.js")
#: Every name a review folder may hold; an existing ``review/`` with anything else is never replaced.
REVIEW_FILES = frozenset(ASSET_FILES + ("data.js", "review.json", "unreadable.csv", "thumbs", "plots"))
#: The plots a scan writes into ``<run>/plots/``; the page shows those that exist.
PLOT_FILES = ("transition_matrix.png", "class_noise_rates.png", "label_quality.png", "training_curves.png")
ProgressCallback = Callable[..., None]


@dataclass
class ReviewResult:
    """The written review folder."""

    folder: Path  # <run>/review
    index: Path  # <run>/review/index.html
    num_samples: int
    num_flagged: int
    num_shown: int
    unreadable: pd.DataFrame  # sample_id, path, reason, detail
    plots: list[str]
    seconds: dict[str, float] = field(default_factory=dict)


def write_review(
    run_dir: str | os.PathLike,
    *,
    overwrite: bool = False,
    thumb_size: int = 96,
    limit: Optional[int] = None,
    workers: Optional[int] = None,
    progress: Optional[ProgressCallback] = None,
) -> ReviewResult:
    """Write ``<run_dir>/review/``: the review page of a scan's flagged samples.

    Parameters
    ----------
    run_dir : path-like
        A scan's run directory.
    overwrite : bool, default=False
        Replace an earlier ``review/`` (one holding only files a review writes).
    thumb_size : int, default=96
        Longest side of the thumbnails in pixels, 16..512 (images are never enlarged).
    limit : int, optional
        Show only the ``limit`` most suspect flagged samples.
    workers : int, optional
        Threads making thumbnails [default: the number of CPU cores].
    progress : callable, optional
        ``progress(phase, done, total, extra="")``.

    Returns
    -------
    ReviewResult
        Where the page is and what it holds; ``unreadable`` lists the images that got a
        placeholder.

    Raises
    ------
    ConfigError
        A bad run directory (see :func:`read_review_data`) or setting.
    OutputError
        ``review/`` exists (without ``overwrite``, or holding foreign files), the run directory
        is not writable, or another labelaudit process is writing into it.
    """
    if not 16 <= thumb_size <= 512:
        raise ConfigError(f"thumb_size must be between 16 and 512 pixels; got {thumb_size!r}")
    started = time.perf_counter()
    data = read_review_data(run_dir, limit=limit)
    target = data.run_dir / REVIEW_DIR
    _check_review_folder(target, overwrite)  # before any work
    with _review_folder_writing(data.run_dir, target, overwrite) as tmp:
        read = time.perf_counter()
        has_thumb, unreadable = make_thumbnails(
            data.flagged["path"].astype(str).tolist(),
            tmp / "thumbs",
            size=thumb_size,
            workers=workers,
            progress=progress,
        )
        positions = unreadable.pop("position").to_numpy(dtype=np.int64)
        unreadable.insert(0, "sample_id", data.flagged["sample_id"].astype(str).to_numpy()[positions])
        thumbs = time.perf_counter()
        plots = _copy_plots(data.run_dir, tmp / "plots")
        for name in ASSET_FILES:
            (tmp / name).write_bytes(resources.files("labelaudit.review.assets").joinpath(name).read_bytes())
        payload = page_data(data, has_thumb, unreadable, plots, thumb_size)
        (tmp / "data.js").write_text(
            f"window.LABELAUDIT_REVIEW = {json_text(payload, indent=None)};\n", encoding="utf-8"
        )
        if len(unreadable):
            write_csv(tmp / "unreadable.csv", unreadable)
        seconds = {
            "read": read - started,
            "thumbnails": thumbs - read,
            "total": time.perf_counter() - started,
        }
        info = _review_info(data, len(unreadable), thumb_size, limit, plots, seconds)
        (tmp / "review.json").write_text(json_text(info) + "\n", encoding="utf-8")
    seconds["total"] = time.perf_counter() - started
    return ReviewResult(
        folder=target,
        index=target / "index.html",
        num_samples=data.num_samples,
        num_flagged=data.num_flagged,
        num_shown=len(data.flagged),
        unreadable=unreadable,
        plots=plots,
        seconds=seconds,
    )


def _review_info(
    data: ReviewData, num_unreadable: int, thumb_size: int, limit: Optional[int], plots: list, seconds: dict
) -> dict:
    """``review.json``: what the review folder holds and how it was made."""
    return {
        "kind": "review",
        "run_dir": str(data.run_dir),
        "num_samples": data.num_samples,
        "num_flagged": data.num_flagged,
        "num_shown": len(data.flagged),
        "num_unreadable": num_unreadable,
        "thumb_size": thumb_size,
        "limit": limit,
        "plots": plots,
        "review_key": data.review_key,
        "seconds": {k: round(v, 3) for k, v in seconds.items()},
        "labelaudit": __version__,
    }


@contextmanager
def _review_folder_writing(run_dir: Path, target: Path, overwrite: bool) -> Iterator[Path]:
    """Under the run directory's lock, yield a hidden temporary folder (with ``thumbs/`` made) that
    becomes ``target`` whole when the block ends, or is deleted when it fails."""
    lock = FolderLock(run_dir, "run directory")
    try:
        lock.acquire()
    except OSError as exc:
        raise OutputError(
            f"cannot lock run directory {str(run_dir)!r} ({exc.strerror or exc}); pass a run "
            "directory in a folder you can write to"
        ) from None
    tmp: Path | None = None
    try:
        remove_stale_temporaries(run_dir)  # what killed reviews left behind
        _check_review_folder(target, overwrite)  # again, under the lock
        tmp = temporary_sibling(target)
        try:
            (tmp / "thumbs").mkdir(parents=True)
        except OSError as exc:
            raise OutputError(
                f"cannot write into run directory {str(run_dir)!r} ({exc.strerror or exc}); pass a "
                "run directory you can write to"
            ) from None
        yield tmp
        _move_into_place(tmp, target, overwrite)
        tmp = None
    except OSError as exc:
        raise OutputError(
            f"cannot write {str(target)!r} ({exc.strerror or exc}); pass a run directory you can write to"
        ) from None
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        lock.release()


def _check_review_folder(target: Path, overwrite: bool) -> None:
    """Raise :class:`OutputError` unless ``target`` (``<run>/review``) may be written."""
    if not target.exists() and not target.is_symlink():
        return
    if target.is_symlink() or not target.is_dir():
        raise OutputError(
            f"{str(target)!r} exists and is not a review folder; move it away, then run labelaudit "
            "review again"
        )
    foreign = sorted(p.name for p in target.iterdir() if p.name not in REVIEW_FILES)
    if foreign:
        raise OutputError(
            f"{str(target)!r} holds files a review does not write ({', '.join(foreign[:3])}); move them "
            "out of it (an exported decisions.csv belongs elsewhere), then run labelaudit review again"
        )
    if not overwrite and any(target.iterdir()):
        raise OutputError(
            f"{str(target)!r} holds an earlier review page; pass --overwrite to replace it (decisions "
            "made in the browser are kept: they live in the browser, not in this folder)"
        )


def _move_into_place(tmp: Path, target: Path, overwrite: bool) -> None:
    """Rename ``tmp`` to ``target`` (checked again first), replacing an earlier review."""
    _check_review_folder(target, overwrite)
    replace_folder(tmp, target)


def _copy_plots(run_dir: Path, folder: Path) -> list[str]:
    """Put the run's plots into the review folder; their names in page order.

    ``<run>/plots/*.png`` are copied. A run written before scans drew plots has no ``plots/``:
    they are drawn from the run's files straight into the review folder (the run directory
    itself is not changed). Without matplotlib, or when the run's files cannot be drawn, the page
    has no plots: they are an aid, not the review.
    """
    source = run_dir / "plots"
    if not source.is_dir():
        try:
            from ..runs.plots import PlotData, write_plots

            write_plots(PlotData.from_run_dir(run_dir), folder)
        except (ImportError, LabelAuditError):
            shutil.rmtree(folder, ignore_errors=True)
            return []
        return [name for name in PLOT_FILES if (folder / name).is_file()]
    found = [name for name in PLOT_FILES if (source / name).is_file()]
    if found:
        folder.mkdir()
        for name in found:
            shutil.copyfile(source / name, folder / name)
    return found
