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
(``sample_id, decision, new_label, note``; see docs/review.md).

The folder is written all or nothing: built in a hidden temporary sibling inside the run
directory and renamed into place while the run directory's lock is held. An earlier
``review/`` is replaced only with ``overwrite=True``, and never when it holds files a review
does not write. Nothing else in the run directory, and nothing outside it but the lock file
beside it, is written; the images are only read.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import pandas as pd
from PIL import Image, ImageOps

from .. import __version__
from .._atomic import remove_stale_temporaries, temporary_sibling
from ..data._decode import GRAY_MODES, classify_error, to_channels
from ..data.sources import read_table
from ..errors import ConfigError, LabelAuditError, OutputError
from ..reports import json_text, write_csv
from ..resources import usable_cpus
from ..runs.directory import FolderLock, check_matrix_fingerprint, data_fingerprint, replace_folder
from ..runs.format import MATRIX_FILES, RUN_FORMAT_VERSION
from ..runs.scan_run import read_run_json

REVIEW_DIR = "review"
#: Static files of the page, copied from ``labelaudit/review/assets``.
ASSET_FILES = ("index.html", "review.css", "review.js")
#: Every name a review folder may hold; an existing ``review/`` with anything else is never replaced.
REVIEW_FILES = frozenset(ASSET_FILES + ("data.js", "review.json", "unreadable.csv", "thumbs", "plots"))
#: The plots a scan writes into ``<run>/plots/``; the page shows those that exist.
PLOT_FILES = ("transition_matrix.png", "class_noise_rates.png", "label_quality.png", "training_curves.png")
#: The threshold slider's resolution: ``histogram[i]`` counts samples with label_quality < i / BINS.
HISTOGRAM_BINS = 1000
#: Cards per page of the grid.
PAGE_SIZE = 100
#: decisions.csv columns and decision values (the contract with ``labelaudit apply``).
DECISION_COLUMNS = ("sample_id", "decision", "new_label", "note")
DECISIONS = ("accept", "keep", "relabel", "remove", "unsure")
REPORT_COLUMNS = (
    "sample_id",
    "path",
    "given_label",
    "suspected_noisy",
    "confidence",
    "suggested_label",
    "suggested_confidence",
    "label_quality",
    "rank",
)
#: Near-duplicate and outlier columns, in the reports of scans that searched them.
SIMILARITY_COLUMNS = (
    "duplicate_group",
    "duplicate_of",
    "duplicate_similarity",
    "duplicate_conflict",
    "outlier_score",
    "is_outlier",
    "reason",
)

ProgressCallback = Callable[..., None]


@dataclass(frozen=True)
class ReviewData:
    """What the page shows, read from a scan's run directory.

    ``flagged`` holds the report rows the page lists, worst first (by ``rank``), at most
    ``limit`` of them: suspect labels, and near-duplicates of another label and outliers (a
    non-empty ``reason``); ``num_flagged`` counts all of them.
    ``transition_matrix`` is ``(K, K)`` with ``T[i, j] = P(given = j | true = i)`` (rows = true
    class). ``histogram`` has ``HISTOGRAM_BINS + 1`` entries: ``histogram[i]`` = number of samples
    (all of them, flagged or not) with ``label_quality < i / HISTOGRAM_BINS``.
    """

    run_dir: Path
    summary: dict
    class_names: tuple[str, ...]
    flagged: pd.DataFrame
    num_samples: int
    num_flagged: int
    transition_matrix: np.ndarray
    histogram: np.ndarray
    review_key: str


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


def read_review_data(run_dir: str | os.PathLike, *, limit: Optional[int] = None) -> ReviewData:
    """Read and check what the review page needs from a scan's run directory.

    Parameters
    ----------
    run_dir : path-like
        The ``--out`` folder of a finished ``labelaudit scan``.
    limit : int, optional
        List only the ``limit`` most suspect flagged samples (all when None).

    Raises
    ------
    ConfigError
        Not a folder, not a scan's run directory, a file missing or unreadable, another format
        version, or files of two runs mixed (the data fingerprints differ).
    """
    if limit is not None and limit < 1:
        raise ConfigError(f"limit must be a whole number >= 1; got {limit!r}")
    path = Path(run_dir).expanduser().resolve()
    if not path.is_dir():
        raise ConfigError(
            f"run directory {str(run_dir)!r} does not exist; pass the --out folder of a labelaudit scan"
        )
    missing = [
        name
        for name in ("summary.json", "report.parquet", MATRIX_FILES["cleaned"])
        if not (path / name).is_file()
    ]
    summary = read_run_json(path / "summary.json")
    if summary is not None and summary.get("kind") != "scan":
        raise ConfigError(
            f"{str(path)!r} is the output of labelaudit {summary.get('kind')!r}, not of a scan; pass "
            "the run directory of a scan"
        )
    if missing:
        raise ConfigError(
            f"{str(path)!r} is not a complete scan run directory (missing {', '.join(missing)}); pass "
            "the --out folder of a finished labelaudit scan"
        )
    if summary.get("format_version") != RUN_FORMAT_VERSION:
        raise ConfigError(
            f"run directory {str(path)!r} has format version {summary.get('format_version')!r}; this "
            f"labelaudit reads version {RUN_FORMAT_VERSION}: scan the dataset again with this version"
        )
    if not isinstance(summary.get("class_names"), list) or "data_fingerprint" not in summary:
        raise ConfigError(
            f"summary.json in {str(path)!r} lacks class_names or data_fingerprint; scan the dataset again"
        )
    names = tuple(str(n) for n in summary["class_names"])
    try:
        import pyarrow.parquet as pq

        present = set(pq.read_schema(path / "report.parquet").names)
        extra = [c for c in SIMILARITY_COLUMNS if c in present]
        report = pd.read_parquet(path / "report.parquet", columns=list(REPORT_COLUMNS) + extra)
    except (ValueError, OSError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(
            f"cannot read report.parquet in {str(path)!r} ({first}); scan the dataset again"
        ) from None
    ids, given = report["sample_id"].astype(str), report["given_label"].astype(str)
    if data_fingerprint(ids.tolist(), given.tolist()) != summary["data_fingerprint"]:
        raise ConfigError(
            f"summary.json and report.parquet in {str(path)!r} do not belong to the same scan (their "
            "data fingerprints differ); scan the dataset again into a new --out"
        )
    unknown = sorted((set(given) | set(report["suggested_label"].astype(str))) - set(names))
    if unknown:
        raise ConfigError(
            f"report.parquet in {str(path)!r} has labels that are not classes of the scan "
            f"({unknown[:3]!r}); scan the dataset again"
        )
    check_matrix_fingerprint(path / MATRIX_FILES["cleaned"], summary["data_fingerprint"])
    transition = _read_transition_matrix(path / MATRIX_FILES["cleaned"], names)

    quality = report["label_quality"].to_numpy(dtype=np.float64)
    edges = np.arange(HISTOGRAM_BINS + 1) / HISTOGRAM_BINS
    histogram = np.searchsorted(np.sort(quality[np.isfinite(quality)]), edges, side="left")
    # Listed: suspect labels and, where the scan searched them, near-duplicates of another label and outliers.
    from .export import flagged_report

    flagged = flagged_report(report)
    digest = hashlib.sha256(f"labelaudit-review-v1\n{summary['data_fingerprint']}\n".encode())
    for sample_id, suggested in zip(flagged["sample_id"].astype(str), flagged["suggested_label"].astype(str)):
        digest.update(f"{sample_id}\t{suggested}\n".encode("utf-8", "surrogatepass"))
    num_flagged = len(flagged)
    if limit is not None:
        flagged = flagged.head(limit)
    return ReviewData(
        run_dir=path,
        summary=summary,
        class_names=names,
        flagged=flagged.reset_index(drop=True),
        num_samples=len(report),
        num_flagged=num_flagged,
        transition_matrix=transition,
        histogram=histogram,
        review_key=digest.hexdigest()[:32],
    )


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
    lock = FolderLock(data.run_dir, "run directory")
    try:
        lock.acquire()
    except OSError as exc:
        raise OutputError(
            f"cannot lock run directory {str(data.run_dir)!r} ({exc.strerror or exc}); pass a run "
            "directory in a folder you can write to"
        ) from None
    tmp: Path | None = None
    try:
        remove_stale_temporaries(data.run_dir)  # what killed reviews left behind
        _check_review_folder(target, overwrite)  # again, under the lock
        tmp = temporary_sibling(target)
        try:
            (tmp / "thumbs").mkdir(parents=True)
        except OSError as exc:
            raise OutputError(
                f"cannot write into run directory {str(data.run_dir)!r} ({exc.strerror or exc}); pass a "
                "run directory you can write to"
            ) from None
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
        info = {
            "kind": "review",
            "run_dir": str(data.run_dir),
            "num_samples": data.num_samples,
            "num_flagged": data.num_flagged,
            "num_shown": len(data.flagged),
            "num_unreadable": len(unreadable),
            "thumb_size": thumb_size,
            "limit": limit,
            "plots": plots,
            "review_key": data.review_key,
            "seconds": {k: round(v, 3) for k, v in seconds.items()},
            "labelaudit": __version__,
        }
        (tmp / "review.json").write_text(json_text(info) + "\n", encoding="utf-8")
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


def page_data(
    data: ReviewData,
    has_thumb: Sequence[bool],
    unreadable: pd.DataFrame,
    plots: Sequence[str],
    thumb_size: int,
) -> dict:
    """The object ``data.js`` assigns to ``window.LABELAUDIT_REVIEW`` (columns as arrays).

    ``samples.given``/``samples.suggested`` are indices into ``classes``; ``samples.thumb[i]``
    is 1 when ``thumbs/<i>.jpg`` exists; ``threshold`` is the slider's starting position (in
    ``1 / HISTOGRAM_BINS`` steps): the scan's learned label-quality boundary, raised where
    needed so that every listed sample lies below it.
    """
    flagged, summary = data.flagged, data.summary
    index = {name: i for i, name in enumerate(data.class_names)}
    quality = flagged["label_quality"].to_numpy(dtype=np.float64)
    # The slider filters suspect labels; near-duplicates and outliers stay listed.
    suspect = (
        flagged["suspected_noisy"].to_numpy(dtype=bool)
        if "suspected_noisy" in flagged
        else np.ones(len(flagged), bool)
    )
    finite = quality[np.isfinite(quality) & suspect]
    rule = summary.get("flag_rule") or {}
    learned = rule.get("label_quality_threshold")
    # The learned rule is label_quality < learned: start there (rounded down to a slider step, so
    # the count shown never exceeds the scan's), but never below a flagged sample's value.
    threshold = (
        int(np.floor(learned * HISTOGRAM_BINS))
        if isinstance(learned, (int, float)) and np.isfinite(learned)
        else 0
    )
    if len(finite):
        threshold = max(threshold, int(np.floor(finite.max() * HISTOGRAM_BINS)) + 1)
    elif not threshold:
        threshold = HISTOGRAM_BINS // 2
    threshold = min(threshold, HISTOGRAM_BINS)

    def numbers(column: str) -> list:
        return [round(float(v), 4) for v in flagged[column].to_numpy(dtype=np.float64)]

    return {
        "format": 1,
        "review_key": data.review_key,
        "run": {
            "name": data.run_dir.name,
            "path": str(data.run_dir),
            "source": str(summary.get("source", "")),
            "method": summary.get("method"),
            "data_fingerprint": summary["data_fingerprint"],
            "estimated_noise_rate": summary.get("estimated_noise_rate"),
            "flag_rule": summary.get("flag_rule"),
        },
        "generated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "labelaudit": __version__,
        "classes": list(data.class_names),
        "transition_matrix": np.round(data.transition_matrix, 4).tolist(),
        "num_samples": data.num_samples,
        "num_flagged": data.num_flagged,
        "histogram_bins": HISTOGRAM_BINS,
        "histogram": data.histogram.tolist(),
        "threshold": threshold,
        "page_size": PAGE_SIZE,
        "thumb_size": thumb_size,
        "plots": list(plots),
        "unreadable": unreadable.head(1000).to_dict(orient="records"),
        "num_unreadable": len(unreadable),
        "samples": {
            "id": flagged["sample_id"].astype(str).tolist(),
            "path": flagged["path"].astype(str).tolist(),
            "given": flagged["given_label"].astype(str).map(index).astype(int).tolist(),
            "suggested": flagged["suggested_label"].astype(str).map(index).astype(int).tolist(),
            "confidence": numbers("confidence"),
            "suggested_confidence": numbers("suggested_confidence"),
            "label_quality": [float(v) for v in quality],  # unrounded: the slider compares it with i / BINS
            "rank": flagged["rank"].astype(int).tolist(),
            "thumb": [int(bool(t)) for t in has_thumb],
            **_similarity_arrays(flagged),
        },
        "class_overlap": summary.get("class_overlap") or [],
    }


def _similarity_arrays(flagged: pd.DataFrame) -> dict:
    """The page's near-duplicate and outlier columns: ``reason`` (``;``-separated), ``group``
    (-1: none), ``partner`` (position in the list of the near-copy, -1 when not listed),
    ``partner_id``, ``duplicate_similarity`` and ``outlier_score`` (null when not searched)."""
    from ..audit.flags import reason_column

    n = len(flagged)
    if "duplicate_group" not in flagged:
        reasons = reason_column(flagged).tolist() if "suspected_noisy" in flagged else ["label"] * n
        return {
            "reason": reasons,
            "group": [-1] * n,
            "partner": [-1] * n,
            "partner_id": [""] * n,
            "duplicate_similarity": [None] * n,
            "outlier_score": [None] * n,
        }
    position = {sample_id: i for i, sample_id in enumerate(flagged["sample_id"].astype(str))}
    partner_id = flagged["duplicate_of"].fillna("").astype(str)
    similarity = flagged["duplicate_similarity"].to_numpy(dtype=np.float64)
    return {
        "reason": flagged["reason"].fillna("").astype(str).tolist(),
        "group": flagged["duplicate_group"].astype(int).tolist(),
        "partner": [position.get(p, -1) if p else -1 for p in partner_id],
        "partner_id": partner_id.tolist(),
        "duplicate_similarity": [None if np.isnan(v) else round(float(v), 4) for v in similarity],
        "outlier_score": [round(float(v), 4) for v in flagged["outlier_score"].to_numpy(dtype=np.float64)],
    }


def make_thumbnails(
    paths: Sequence[str],
    folder: Path,
    *,
    size: int = 96,
    workers: Optional[int] = None,
    progress: Optional[ProgressCallback] = None,
) -> tuple[np.ndarray, pd.DataFrame]:
    """Write ``folder/<position>.jpg`` for each image in ``paths``.

    A file that cannot be read or decoded gets no thumbnail and a row in the returned table
    (``position, path, reason, detail``; reasons as in ``skipped.csv``). Pillow decodes and
    encodes without holding the GIL, so threads use the cores without a process pool's start-up.

    Returns
    -------
    has_thumb : ndarray of bool, shape (len(paths),)
    unreadable : DataFrame
    """
    workers = max(1, workers or usable_cpus())
    has_thumb = np.zeros(len(paths), dtype=bool)
    failures: list[tuple[int, str, str, str]] = []
    chunk = max(1, min(256, -(-len(paths) // (4 * workers))))  # several chunks per thread, for balance

    def work(start: int) -> list[tuple[int, str, str, str]]:
        failed = []
        for position in range(start, min(start + chunk, len(paths))):
            error = thumbnail(paths[position], folder / f"{position}.jpg", size)
            if error is None:
                has_thumb[position] = True
            else:
                failed.append((position, paths[position], *error))
        return failed

    done = 0
    if progress is not None:
        progress("thumbnails", 0, len(paths))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for start, failed in zip(range(0, len(paths), chunk), pool.map(work, range(0, len(paths), chunk))):
            failures += failed
            done = min(start + chunk, len(paths))
            if progress is not None:
                progress("thumbnails", done, len(paths))
    return has_thumb, pd.DataFrame(failures, columns=["position", "path", "reason", "detail"])


def thumbnail(source: str, target: Path, size: int) -> tuple[str, str] | None:
    """Write a JPEG of ``source`` at most ``size`` pixels a side; ``(reason, detail)`` when it fails.

    EXIF orientation is applied, transparency composited over white, 16-bit and float images
    scaled to 8 bits; grayscale stays grayscale. Never raises for a bad image; raises ``OSError``
    when ``target`` cannot be written.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(source) as img:
                channels = 1 if img.mode in GRAY_MODES else 3
                img.draft("L" if channels == 1 else "RGB", (size, size))  # JPEG: decode at a reduced scale
                img.load()
                img = to_channels(ImageOps.exif_transpose(img), channels)  # a new image: outlives the file
                img.thumbnail((size, size), Image.Resampling.BICUBIC)
    except Exception as exc:  # any decoder failure is a placeholder, never fatal
        return classify_error(exc)
    img.save(target, "JPEG", quality=88)  # a failed write (disk full) is not the image's fault: raised
    return None


def _read_transition_matrix(file: Path, names: tuple[str, ...]) -> np.ndarray:
    """``(K, K)`` T from ``transition_matrix.csv``, checked against the class names."""
    try:
        frame = read_table(file, "transition matrix")
        values = frame.iloc[:, 1:].to_numpy(dtype=np.float64)
    except Exception as exc:  # ManifestError, or text where numbers belong
        raise ConfigError(
            f"cannot read {file.name} in {str(file.parent)!r} ({exc}); scan the dataset again"
        ) from None
    rows, columns = [str(v) for v in frame.iloc[:, 0]], [str(c) for c in frame.columns[1:]]
    if rows != list(names) or columns != list(names) or not np.isfinite(values).all():
        raise ConfigError(
            f"{file.name} in {str(file.parent)!r} is not the {len(names)} x {len(names)} matrix of this "
            "scan's classes; scan the dataset again"
        )
    return values


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
