"""What the review page shows: a scan's run directory read and checked, and the data the page's
script receives (``data.js``; see :mod:`labelaudit.review.page`)."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import pandas as pd

from .. import __version__
from ..audit.issue_types import SIMILARITY_COLUMNS, page_issue_types
from ..data.sources import read_table
from ..errors import ConfigError
from ..runs.directory import check_matrix_fingerprint, data_fingerprint
from ..runs.format import MATRIX_FILES, RUN_FORMAT_VERSION
from ..runs.scan_run import read_run_json

#: The threshold slider's resolution: ``HISTOGRAM_BINS + 1`` positions. On ``p_label_wrong``
#: (:func:`p_wrong_edges`, a logit scale) ``histogram[i]`` counts samples with
#: ``p_label_wrong > edges[i]``; on ``label_quality`` (scans before calibrated probabilities;
#: :func:`slider_edges`, a log scale) samples with ``label_quality < edges[i]``.
HISTOGRAM_BINS = 1000
#: The smallest and largest decade the log-scale slider may start at (10**-8 ... 10**-1).
_LOWEST_DECADE, _HIGHEST_DECADE = -8, -1
#: The fewest and most decades of odds either side of 0.5 on the logit-scale slider.
_FEWEST_ODDS_DECADES, _MOST_ODDS_DECADES = 2, 10
#: What the slider acts on, and which side of its threshold is flagged.
SLIDER_COLUMNS = {"p_label_wrong": "above", "label_quality": "below"}
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
#: Report columns of scans since calibrated probabilities (read when present).
CALIBRATED_COLUMNS = ("p_label_wrong", "is_ambiguous", "ambiguous_with")


@dataclass(frozen=True)
class ReviewData:
    """What the page shows, read from a scan's run directory.

    ``flagged`` holds the report rows the page lists, worst first (by ``rank``), at most
    ``limit`` of them: suspect labels, and near-duplicates of another label and outliers (a
    non-empty ``reason``); ``num_flagged`` counts all of them.
    ``transition_matrix`` is ``(K, K)`` with ``T[i, j] = P(given = j | true = i)`` (rows = true
    class). The threshold slider acts on ``slider_column``: ``p_label_wrong`` (flagged above the
    threshold) or, for a scan made before calibrated probabilities, ``label_quality`` (flagged
    below it). ``histogram`` has ``HISTOGRAM_BINS + 1`` entries: ``histogram[i]`` = number of
    samples (all of them, flagged or not) on the flagged side of ``edges[i]``: ``p_label_wrong >
    edges[i]`` or ``label_quality < edges[i]``. ``edges`` (``(BINS + 1,)``, increasing,
    :func:`p_wrong_edges` or :func:`slider_edges`) are the slider's values, ``i / HISTOGRAM_BINS``
    (a linear scale) when None.
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
    edges: np.ndarray | None = None
    slider_column: str = "label_quality"

    @property
    def slider_edges(self) -> np.ndarray:
        """``edges``, or the linear ``i / HISTOGRAM_BINS`` when None; shape ``(HISTOGRAM_BINS + 1,)``."""
        if self.edges is not None:
            return np.asarray(self.edges, dtype=np.float64)
        return np.arange(HISTOGRAM_BINS + 1) / HISTOGRAM_BINS


def slider_edges(quality: np.ndarray) -> np.ndarray:
    """The threshold slider's label-quality values, on a log scale, shape ``(HISTOGRAM_BINS + 1,)``.

    ``edges[0] = 0`` (nothing below it); ``edges[1:]`` rise log-evenly from ``10**lo`` to
    ``edges[HISTOGRAM_BINS] = 1``, ``lo`` the decade at or below the smallest positive value of
    ``quality`` (``(N,)``, any order; within ``[-8, -1]``; ``-3`` when none is positive). Flagged
    samples sit at small values (most below 0.003 on a real scan): a linear scale gave them 3 of
    its 1,000 steps, this one hundreds.
    """
    quality = np.asarray(quality, dtype=np.float64)
    positive = quality[np.isfinite(quality) & (quality > 0)]
    lo = int(np.floor(np.log10(positive.min()))) if positive.size else -3
    lo = min(max(lo, _LOWEST_DECADE), _HIGHEST_DECADE)
    edges = np.empty(HISTOGRAM_BINS + 1, dtype=np.float64)
    edges[0] = 0.0
    edges[1:] = 10.0 ** (lo * (1.0 - np.arange(HISTOGRAM_BINS) / (HISTOGRAM_BINS - 1)))
    edges[1], edges[-1] = 10.0**lo, 1.0  # exactly
    return edges


def p_wrong_edges(p_wrong: np.ndarray) -> np.ndarray:
    """The threshold slider's ``p_label_wrong`` values, on a logit scale, shape ``(HISTOGRAM_BINS + 1,)``.

    ``edges[0] = 0`` and ``edges[HISTOGRAM_BINS] = 1``; ``edges[1:-1]`` rise evenly in
    ``log10(p / (1 - p))`` from ``-d`` to ``d`` decades of odds, with ``edges[HISTOGRAM_BINS // 2]
    = 0.5`` exactly (the scan's rule, ``p_label_wrong > 0.5``, is a position of the slider). ``d``
    is the largest ``|log10 odds|`` of ``p_wrong`` (``(N,)``, any order; values of exactly 0 or 1
    left out) rounded up, within ``[2, 10]``. Listed samples sit close to 1 (on a real scan half
    of them above 0.99): a linear scale gave ``p > 0.99`` 10 of its 1,000 steps, this one
    about 400; the logit is symmetric, so the clean samples near 0 are spread as well.
    """
    p_wrong = np.asarray(p_wrong, dtype=np.float64)
    inside = p_wrong[np.isfinite(p_wrong) & (p_wrong > 0) & (p_wrong < 1)]
    odds = np.abs(np.log10(inside) - np.log10(1 - inside)) if inside.size else np.zeros(0)
    d = int(np.ceil(odds.max())) if odds.size else _FEWEST_ODDS_DECADES
    d = min(max(d, _FEWEST_ODDS_DECADES), _MOST_ODDS_DECADES)
    logit = np.linspace(-d, d, HISTOGRAM_BINS - 1)  # log10 odds at positions 1 .. BINS - 1
    edges = np.empty(HISTOGRAM_BINS + 1, dtype=np.float64)
    edges[0], edges[-1] = 0.0, 1.0
    edges[1:-1] = 1.0 / (1.0 + 10.0 ** (-logit))
    edges[HISTOGRAM_BINS // 2] = 0.5  # exactly
    return edges


def slider_histogram(values: np.ndarray, edges: np.ndarray, column: str) -> np.ndarray:
    """``(HISTOGRAM_BINS + 1,)`` counts of ``values`` (``(N,)``, non-finite ones left out) on the
    flagged side of each of ``edges``: ``values > edges[i]`` for ``p_label_wrong``,
    ``values < edges[i]`` for ``label_quality``."""
    values = np.sort(values[np.isfinite(values)])
    if SLIDER_COLUMNS[column] == "above":
        return len(values) - np.searchsorted(values, edges, side="right")
    return np.searchsorted(values, edges, side="left")


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
    summary = _read_scan_summary(path, run_dir)
    names = tuple(str(n) for n in summary["class_names"])
    report = _read_report(path, summary, names)
    check_matrix_fingerprint(path / MATRIX_FILES["cleaned"], summary["data_fingerprint"])
    transition = _read_transition_matrix(path / MATRIX_FILES["cleaned"], names)

    # The slider acts on the calibrated P(label wrong); a scan from before it has label quality.
    column = "p_label_wrong" if "p_label_wrong" in report else "label_quality"
    values = report[column].to_numpy(dtype=np.float64)
    edges = p_wrong_edges(values) if column == "p_label_wrong" else slider_edges(values)
    histogram = slider_histogram(values, edges, column)
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
        edges=edges,
        slider_column=column,
    )


def _read_scan_summary(path: Path, given: str | os.PathLike) -> dict:
    """``summary.json`` of the scan run directory ``path`` (``given`` as the user wrote it), checked:
    a finished scan's folder, of this format version, with class names and a data fingerprint."""
    if not path.is_dir():
        raise ConfigError(
            f"run directory {str(given)!r} does not exist; pass the --out folder of a labelaudit scan"
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
    return summary


def _read_report(path: Path, summary: dict, names: tuple[str, ...]) -> pd.DataFrame:
    """The columns of ``report.parquet`` the page shows, checked against ``summary.json``: the same
    scan (data fingerprint) and labels that are classes of it."""
    try:
        import pyarrow.parquet as pq

        present = set(pq.read_schema(path / "report.parquet").names)
        extra = [c for c in (*CALIBRATED_COLUMNS, *SIMILARITY_COLUMNS) if c in present]
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
    return report


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


def page_data(
    data: ReviewData,
    has_thumb: Sequence[bool],
    unreadable: pd.DataFrame,
    plots: Sequence[str],
    thumb_size: int,
) -> dict:
    """The object ``data.js`` assigns to ``window.LABELAUDIT_REVIEW`` (columns as arrays).

    ``samples.given``/``samples.suggested`` are indices into ``classes``; ``samples.thumb[i]``
    is 1 when ``thumbs/<i>.jpg`` exists. The slider acts on ``slider_column`` (``p_label_wrong``,
    flagging above its threshold, or ``label_quality`` of an older scan, flagging below it; that
    column of ``samples`` is sent unrounded, since the page compares it with the edges):
    ``slider_edges[i]`` is the value of the slider's position ``i`` and ``histogram[i]`` the
    number of all samples on its flagged side; ``threshold`` is the slider's starting position:
    the scan's learned boundary, moved where needed so that every listed suspect label is kept.
    """
    flagged, summary = data.flagged, data.summary
    index = {name: i for i, name in enumerate(data.class_names)}
    column = data.slider_column
    edges = data.slider_edges
    threshold = _slider_start(flagged, summary.get("flag_rule") or {}, edges, column)

    def numbers(name: str) -> list:
        return [round(float(v), 4) for v in flagged[name].to_numpy(dtype=np.float64)]

    def unrounded(name: str) -> list:
        return [float(v) for v in flagged[name].to_numpy(dtype=np.float64)]

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
        "slider_column": column,
        "slider_flags": SLIDER_COLUMNS[column],  # "above" or "below" the threshold
        "slider_edges": [float(v) for v in edges],
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
            "rank": flagged["rank"].astype(int).tolist(),
            # The calibrated probability that the given label is wrong (null: a scan from before
            # it, whose cards and slider show label_quality instead); the slider's column unrounded.
            "p_label_wrong": unrounded("p_label_wrong") if "p_label_wrong" in flagged else None,
            "label_quality": unrounded("label_quality") if column == "label_quality" else None,
            "thumb": [int(bool(t)) for t in has_thumb],
            **_similarity_arrays(flagged),
        },
        "class_overlap": summary.get("class_overlap") or [],
        # reason, title and view name of each issue type (audit.issue_types): the page's views
        "issue_types": page_issue_types(),
    }


def _slider_start(flagged: pd.DataFrame, rule: dict, edges: np.ndarray, column: str) -> int:
    """The slider's starting position (an index into ``edges``, ``(BINS + 1,)`` increasing): the
    scan's learned boundary (``p_label_wrong_threshold`` or ``label_quality_threshold`` of its
    ``flag_rule``), moved where needed so that every listed suspect label is on the flagged side."""
    values = flagged[column].to_numpy(dtype=np.float64)
    # The slider filters suspect labels; near-duplicates, outliers and ambiguous labels stay listed.
    suspect = (
        flagged["suspected_noisy"].to_numpy(dtype=bool)
        if "suspected_noisy" in flagged
        else np.ones(len(flagged), bool)
    )
    finite = values[np.isfinite(values) & suspect]
    learned = rule.get(f"{column}_threshold")
    known = isinstance(learned, (int, float)) and np.isfinite(learned)
    if SLIDER_COLUMNS[column] == "above":
        # The rule is p_label_wrong > learned: start there (rounded up to a slider step, so the
        # count shown never exceeds the scan's), but never at or above a listed sample's value.
        threshold = int(np.searchsorted(edges, learned, side="left")) if known else HISTOGRAM_BINS
        if len(finite):
            threshold = min(threshold, int(np.searchsorted(edges, finite.min(), side="left")) - 1)
        elif not known:
            threshold = HISTOGRAM_BINS // 2  # p_label_wrong > 0.5
        return max(threshold, 0)
    # The rule is label_quality < learned: start there (rounded down to a slider step, so the
    # count shown never exceeds the scan's), but never below a flagged sample's value.
    threshold = max(0, int(np.searchsorted(edges, learned, side="right")) - 1) if known else 0
    if len(finite):
        threshold = max(threshold, int(np.searchsorted(edges, finite.max(), side="right")))
    elif not threshold:
        threshold = int(np.searchsorted(edges, 0.5))
    return min(threshold, HISTOGRAM_BINS)


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
