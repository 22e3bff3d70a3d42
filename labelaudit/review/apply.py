"""``apply``: a scan plus reviewers' decisions -> a cleaned manifest.

Decisions come from a ``decisions.csv`` (the review page, or ``export --format csv`` filled in
a spreadsheet; :mod:`labelaudit.review.decisions`, which lists what each decision means) or from
a Label Studio JSON export of the tasks ``labelaudit export`` wrote
(:mod:`labelaudit.review.label_studio_decisions`, which says which annotation counts).

Every sample ends in exactly one of two places. ``cleaned.parquet``/``.csv`` (``sample_id,
path, label, original_label, label_source``; a manifest ``labelaudit scan`` reads directly)
holds the kept samples with ``label_source``: ``reviewed`` (accept, keep, relabel), ``given``
(unflagged samples, and flagged ones nobody reviewed under ``accept_unreviewed="given"``) or
``suggested`` (flagged and unreviewed under ``accept_unreviewed="suggested"``).
``removed.csv`` holds the samples a reviewer removed and, under ``accept_unreviewed="drop"``,
the flagged samples nobody reviewed.

Several decisions files (one per reviewer) are merged first (:mod:`labelaudit.review.reviewers`:
agreement, conflicts and the ``conflicts`` rule); ``conflicts.csv`` lists the samples they
disagree on, and a conflict left undecided keeps its given label.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .. import __version__
from ..errors import ConfigError, ManifestError
from ..reports import write_csv, write_json, write_parquet
from ..runs.directory import RunDirectory, as_run_directory, input_paths
from ..runs.fingerprints import data_fingerprint
from ..runs.scan_run import ScanRun, load_run
from .decisions import DECISION_COLUMNS, DECISIONS, SOURCE_COLUMNS, Decisions, read_decisions_table
from .label_studio_decisions import MULTIPLE_ANNOTATIONS_RULE, read_label_studio_export
from .reviewers import CONFLICT_COLUMNS, CONFLICT_RULES, Reviews, merge_reviews

#: The names importable from here, including those of the decisions readers, which have their own
#: modules.
__all__ = [
    "ACCEPT_UNREVIEWED",
    "CLEANED_COLUMNS",
    "CONFLICT_COLUMNS",
    "CONFLICT_RULES",
    "DECISIONS",
    "DECISION_COLUMNS",
    "LABEL_SOURCES",
    "MULTIPLE_ANNOTATIONS_RULE",
    "REMOVED_COLUMNS",
    "SOURCE_COLUMNS",
    "ApplyResult",
    "Decisions",
    "Reviews",
    "apply_decisions",
    "apply_inputs",
    "apply_summary",
    "default_apply_dir",
    "read_decisions",
    "read_decisions_table",
    "read_label_studio_export",
    "write_apply",
]

ACCEPT_UNREVIEWED = ("given", "suggested", "drop")
LABEL_SOURCES = ("given", "reviewed", "suggested")
CLEANED_COLUMNS = ["sample_id", "path", "label", "original_label", "label_source"]
REMOVED_COLUMNS = ["sample_id", "path", "original_label", "suggested_label", "reason", "note"]
#: The decisions that count a sample as reviewed (``unsure`` does not).
_REVIEWED = ["accept", "keep", "relabel", "remove"]


def read_decisions(path: str | os.PathLike, run) -> Decisions:
    """Read a decisions file (``.csv``/``.parquet``) or a Label Studio JSON export (``.json``),
    checked against ``run`` (a :class:`labelaudit.runs.scan_run.ScanRun`).

    Raises
    ------
    ManifestError
        The file is missing or unreadable, lacks a column, repeats a sample, names a sample id
        that is not in the run, a class that is not one of its classes, or an unknown decision
        (the message names the first and where it is).
    """
    file = Path(path).expanduser()
    if not file.is_file():
        raise ManifestError(
            f"decisions file {str(path)!r} does not exist; pass the decisions.csv of the review page "
            "or a Label Studio JSON export"
        )
    if file.suffix.lower() == ".json":
        return read_label_studio_export(file, run)
    if file.suffix.lower() not in (".csv", ".parquet", ".pq"):
        raise ManifestError(
            f"decisions file {str(path)!r} must be a .csv (sample_id, decision, new_label, note) or a "
            "Label Studio export .json"
        )
    return read_decisions_table(file, run)


@dataclass
class ApplyResult:
    """What :func:`apply_decisions` made.

    ``cleaned`` (:data:`CLEANED_COLUMNS`) and ``removed`` (:data:`REMOVED_COLUMNS`) partition the
    run's samples; ``decisions`` are the decisions applied (as read; merged from several reviewers
    when ``reviews`` is set); ``counts`` go to ``apply.json``.
    """

    run: object  # labelaudit.runs.scan_run.ScanRun
    decisions: Decisions
    accept_unreviewed: str
    cleaned: pd.DataFrame
    removed: pd.DataFrame
    counts: dict = field(default_factory=dict)
    reviews: Reviews | None = None

    @property
    def sources(self) -> list[Decisions]:
        """The decisions files read: one, or one per reviewer."""
        return self.reviews.sources if self.reviews is not None else [self.decisions]


def apply_decisions(
    run_dir,
    decisions,
    *,
    accept_unreviewed: str = "given",
    conflicts: str = "skip",
) -> ApplyResult:
    """Apply reviewers' decisions to a scan's samples.

    Parameters
    ----------
    run_dir : path-like or labelaudit.runs.scan_run.ScanRun
        The scan's run directory.
    decisions : path-like or Decisions, or a list of them
        A decisions file or Label Studio export (see :func:`read_decisions`), or several, one per
        reviewer (merged by :func:`labelaudit.review.reviewers.merge_reviews`).
    accept_unreviewed : {"given", "suggested", "drop"}, default="given"
        What a flagged sample without a decision (or with ``unsure``) becomes: its given label,
        the scan's suggested label, or removed.
    conflicts : {"skip", "majority", "latest"}, default="skip"
        Several reviewers: what a sample they disagree on becomes (skip: no decision, it keeps
        its given label; majority: the most common decision, a tie skips; latest: the last file's).

    Returns
    -------
    ApplyResult
    """
    if accept_unreviewed not in ACCEPT_UNREVIEWED:
        raise ConfigError(
            f"--accept-unreviewed must be one of {', '.join(ACCEPT_UNREVIEWED)}; got {accept_unreviewed!r}"
        )
    if conflicts not in CONFLICT_RULES:
        raise ConfigError(f"--conflicts must be one of {', '.join(CONFLICT_RULES)}; got {conflicts!r}")
    run = run_dir if isinstance(run_dir, ScanRun) else load_run(run_dir)
    given_list = list(decisions) if isinstance(decisions, (list, tuple)) else [decisions]
    if not given_list:
        raise ConfigError("apply needs at least one decisions file")
    read = [d if isinstance(d, Decisions) else read_decisions(d, run) for d in given_list]
    reviews = merge_reviews(read, run, conflicts=conflicts) if len(read) > 1 else None
    decisions = reviews.decisions if reviews is not None else read[0]
    report = run.report
    ids = report["sample_id"].astype(str).to_numpy(dtype=object)
    given = report["given_label"].astype(str).to_numpy(dtype=object)
    suggested = report["suggested_label"].astype(str).to_numpy(dtype=object)
    flagged = report["suspected_noisy"].to_numpy(dtype=bool)
    # Ambiguous labels are listed for review like suspect ones; unreviewed, they are dropped under
    # "drop" but keep their given label under "suggested" (no confident suggestion exists).
    ambiguous = report["is_ambiguous"].to_numpy(dtype=bool) if "is_ambiguous" in report else None
    decision, new_label, note = _decisions_by_sample(ids, decisions.frame)
    skipped = np.isin(ids, reviews.skipped) if reviews is not None else None
    label, source, removed, reason = _outcomes(
        given, suggested, flagged, decision, new_label, accept_unreviewed, ambiguous, skipped
    )
    paths = report["path"].astype(str).to_numpy(dtype=object)
    keep = ~removed
    cleaned = pd.DataFrame(
        {
            "sample_id": ids[keep],
            "path": paths[keep],
            "label": label[keep],
            "original_label": given[keep],
            "label_source": source[keep],
        }
    )
    removed_frame = pd.DataFrame(
        {
            "sample_id": ids[removed],
            "path": paths[removed],
            "original_label": given[removed],
            "suggested_label": suggested[removed],
            "reason": reason[removed],
            "note": note[removed],
        }
    )
    return ApplyResult(
        run=run,
        decisions=decisions,
        accept_unreviewed=accept_unreviewed,
        cleaned=cleaned,
        removed=removed_frame,
        counts=_counts(decisions, decision, flagged, label, given, source, keep, skipped),
        reviews=reviews,
    )


def _decisions_by_sample(ids: np.ndarray, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(decision, new_label, note)``, ``(N,)`` text each, in the order of the samples ``ids``:
    the row of ``frame`` (:data:`DECISION_COLUMNS`) for a reviewed sample, "" for the others."""
    n = len(ids)
    position = pd.Series(np.arange(n), index=ids)
    decision = np.full(n, "", dtype=object)
    new_label = np.full(n, "", dtype=object)
    note = np.full(n, "", dtype=object)
    at = position[frame["sample_id"].to_numpy()].to_numpy()
    decision[at] = frame["decision"].to_numpy()
    new_label[at] = frame["new_label"].to_numpy()
    note[at] = frame["note"].to_numpy()
    return decision, new_label, note


def _outcomes(
    given: np.ndarray,
    suggested: np.ndarray,
    flagged: np.ndarray,
    decision: np.ndarray,
    new_label: np.ndarray,
    accept_unreviewed: str,
    ambiguous: np.ndarray | None = None,
    skipped: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """What becomes of each sample: ``(label, label_source, removed, reason)``, ``(N,)`` each;
    ``reason`` is ``remove`` or ``unreviewed`` for a removed sample, "" otherwise. ``skipped``
    (``(N,)`` bool): reviewers' conflicts left undecided, which keep their given label whatever
    ``accept_unreviewed`` says."""
    label = given.copy()
    source = np.full(len(given), "given", dtype=object)
    removed = decision == "remove"
    reason = np.where(removed, "remove", "").astype(object)
    for name, take in (("accept", suggested), ("keep", given), ("relabel", new_label)):
        mask = decision == name
        label[mask] = take[mask]
        source[mask] = "reviewed"
    unreviewed = flagged & np.isin(decision, ["", "unsure"])
    if skipped is not None:
        unreviewed &= ~skipped
        if ambiguous is not None:
            ambiguous = ambiguous & ~skipped
    if accept_unreviewed == "suggested":
        label[unreviewed] = suggested[unreviewed]
        source[unreviewed] = "suggested"
    elif accept_unreviewed == "drop":
        if ambiguous is not None:
            unreviewed = unreviewed | (ambiguous & np.isin(decision, ["", "unsure"]))
        removed |= unreviewed
        reason[unreviewed] = "unreviewed"
    return label, source, removed, reason


def _counts(
    decisions: Decisions,
    decision: np.ndarray,
    flagged: np.ndarray,
    label: np.ndarray,
    given: np.ndarray,
    source: np.ndarray,
    keep: np.ndarray,
    skipped: np.ndarray | None = None,
) -> dict:
    """The counts of ``apply.json``: samples, decisions, what was kept, removed and changed."""
    reviewed = np.isin(decision, _REVIEWED)
    unreviewed = flagged & np.isin(decision, ["", "unsure"])
    if skipped is not None:
        unreviewed &= ~skipped
    return {
        "num_samples": int(len(decision)),
        "num_flagged": int(flagged.sum()),
        "num_decisions": int(len(decisions.frame)),
        "decisions": {name: int((decision == name).sum()) for name in DECISIONS},
        "num_reviewed": int(reviewed.sum()),
        "num_unreviewed_flagged": int(unreviewed.sum()),
        "num_reviewed_unflagged": int((~flagged & reviewed).sum()),
        "num_kept": int(keep.sum()),
        "num_removed": int((~keep).sum()),
        "num_changed": int((label[keep] != given[keep]).sum()),
        "label_sources": {name: int((source[keep] == name).sum()) for name in LABEL_SOURCES},
        "num_conflicting_reviews": int(decisions.num_conflicting),
        **_source_counts(decisions.frame),
    }


def _source_counts(frame: pd.DataFrame) -> dict:
    """How the decisions applied were made (their ``source``, :data:`SOURCE_COLUMNS`; ``manual``
    for a file without it): ``num_bulk_decided`` (``bulk:<id>``), ``num_spot_checked``
    (``check:<id>``) and, per spot-check id, ``check_size``, ``check_max_wrong`` and how many of
    its cards (``num_checked``) and bulk decisions (``num_bulk_decided``) the decisions hold."""
    if "source" not in frame:
        return {"num_bulk_decided": 0, "num_spot_checked": 0, "spot_checks": {}}
    source = frame["source"].astype(str)
    kind = source.str.split(":", n=1).str[0]
    checks: dict[str, dict] = {}
    for src, size, rate in zip(source, frame["check_size"], frame["check_max_wrong"]):
        if ":" not in src:
            continue
        how, check = src.split(":", 1)
        entry = checks.setdefault(check, {"check_size": int(size), "check_max_wrong": float(rate)})
        entry.setdefault("num_checked", 0)
        entry.setdefault("num_bulk_decided", 0)
        entry["num_checked" if how == "check" else "num_bulk_decided"] += 1
    return {
        "num_bulk_decided": int((kind == "bulk").sum()),
        "num_spot_checked": int((kind == "check").sum()),
        "spot_checks": checks,
    }


def apply_summary(result: ApplyResult) -> dict:
    """``apply.json``: where the decisions came from, the rule for unreviewed samples, and counts.

    With several reviewers also ``reviewers`` (name, file, format, number of decisions each),
    ``conflicts`` (the rule), ``num_conflicts``, ``num_conflicts_skipped`` and ``agreement``
    (:attr:`labelaudit.review.reviewers.Reviews.agreement`); ``decisions_file`` is then None.
    """
    run = result.run
    reviews = result.reviews
    several = {}
    if reviews is not None:
        several = {
            "reviewers": [
                {
                    "name": name,
                    "decisions_file": str(d.path.resolve()),
                    "decisions_format": d.format,
                    "num_decisions": int(len(d.frame)),
                }
                for name, d in zip(reviews.reviewers, reviews.sources)
            ],
            "conflicts": reviews.rule,
            "num_conflicts": int(len(reviews.conflicts)),
            "num_conflicts_skipped": len(reviews.skipped),
            "agreement": reviews.agreement,
        }
    return {
        "kind": "apply",
        "format_version": 1,
        "scan_run_dir": str(run.path),
        "source": str(run.table.source),
        "decisions_file": None if reviews is not None else str(result.decisions.path.resolve()),
        "decisions_format": result.decisions.format,
        "accept_unreviewed": result.accept_unreviewed,
        "multiple_annotations_rule": MULTIPLE_ANNOTATIONS_RULE
        if any(d.format == "label-studio" for d in result.sources)
        else None,
        **several,
        **result.counts,
        "class_names": list(run.class_names),
        "scan_data_fingerprint": run.summary.get("data_fingerprint"),
        # Of the kept samples and their cleaned labels, in cleaned.csv order.
        "data_fingerprint": data_fingerprint(
            result.cleaned["sample_id"].tolist(), result.cleaned["label"].tolist()
        ),
        "files": ["cleaned.parquet", "cleaned.csv", "removed.csv", "decisions.csv"]
        + (["conflicts.csv"] if reviews is not None else [])
        + ["apply.json"],
        "labelaudit_version": __version__,
    }


def default_apply_dir(run_dir: str | os.PathLike) -> Path:
    """``<scan run dir>-cleaned`` beside the scan's run directory."""
    path = Path(run_dir).expanduser().resolve()
    return path.parent / f"{path.name}-cleaned"


def apply_inputs(run, decisions_path) -> list[Path]:
    """Everything ``apply`` reads: the scan's run directory, its images (folders), the decisions
    file(s) (``decisions_path``: a path, a list of paths, or None)."""
    files = list(decisions_path) if isinstance(decisions_path, (list, tuple)) else [decisions_path]
    return input_paths(run.table, [run.path, *files])


def write_apply(
    result: ApplyResult, out_dir: str | os.PathLike | RunDirectory, *, overwrite: bool = False
) -> Path:
    """Write ``cleaned.parquet``, ``cleaned.csv``, ``removed.csv``, ``decisions.csv`` (the decisions
    applied, in the decisions-file format, with :data:`SOURCE_COLUMNS` when a file had them; merged
    with several reviewers), ``conflicts.csv``
    (several reviewers: :data:`CONFLICT_COLUMNS`) and ``apply.json``, all or nothing.

    ``out_dir`` is a path or an opened :class:`~labelaudit.runs.directory.RunDirectory`; ``overwrite``
    replaces an earlier apply's folder (nothing else that is not empty is ever replaced).
    """
    output = as_run_directory(
        out_dir,
        "apply",
        inputs=lambda: apply_inputs(result.run, [d.path for d in result.sources]),
        overwrite=overwrite,
    )
    with output.writing() as tmp:
        write_parquet(tmp / "cleaned.parquet", result.cleaned)
        write_csv(tmp / "cleaned.csv", result.cleaned)
        write_csv(tmp / "removed.csv", result.removed)
        frame = result.decisions.frame.copy()
        if result.decisions.format in ("label-studio", "merged"):  # the class matters only for relabel
            frame["new_label"] = frame["new_label"].where(frame["decision"] == "relabel", "")
        columns = DECISION_COLUMNS + (SOURCE_COLUMNS if "source" in frame else [])
        write_csv(tmp / "decisions.csv", frame[columns])
        if result.reviews is not None:
            write_csv(tmp / "conflicts.csv", result.reviews.conflicts[CONFLICT_COLUMNS])
        write_json(tmp / "apply.json", apply_summary(result))
    return output.path
