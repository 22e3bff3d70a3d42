"""The kinds of problem a scan lists a sample for, one definition each.

A sample is listed for review when its label looks wrong (``label``), when the evidence cannot
place it between its given class and one other (``ambiguous``), when it is a near-duplicate of a
sample with another label (``duplicate_conflict``), or when it looks like no class of the dataset
(``outlier``). Each kind is an :class:`IssueType`: the name that stands in the report's
``reason`` column, the report column that lists a sample for it, the columns it adds, its counts
in ``summary.json`` and the words the review page and the exports use for it.

Everything that lists issue types is derived from :data:`ISSUE_TYPES`: the ``reason`` column
(:func:`labelaudit.audit.flags.reason_column`), the similarity columns a report carries
(:func:`labelaudit.audit.flags.with_similarity`), the summary counts (``pipeline/scan.py``), the
review page's views and its columns, and the Label Studio, CSV and FiftyOne exports. A new kind
of issue is one more entry here, found in ``audit/`` (see docs/architecture.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Optional

import numpy as np

if TYPE_CHECKING:  # annotations only: the issue types are read by modules that never load torch
    from .similarity import SimilarityIssues


@dataclass(frozen=True)
class IssueType:
    """One kind of problem a sample is listed for.

    Attributes
    ----------
    reason : str
        Its name in the report's ``reason`` column, in the review page's views and in the exports.
    flag_column : str
        The report's boolean column that lists a sample for it.
    title : str
        How the review page describes it (the view's name and a card's note).
    view_title : str
        The review page's view of all samples listed for it.
    tag : str
        The FiftyOne export's tag for it.
    columns : tuple of str
        The report columns it adds, ``flag_column`` among them, in report order; empty for
        ``label`` and ``ambiguous``, whose columns every report has.
    report_columns : callable, optional
        ``report_columns(issues, sample_ids) -> {column: (N,) array}``: :attr:`columns` from a
        :class:`~labelaudit.audit.similarity.SimilarityIssues`; None for the audit's own kinds.
    export_columns : tuple of str
        The columns of its evidence that a Label Studio task carries in its ``data``.
    summary_keys : tuple of str
        Its counts in ``summary.json``: properties of ``SimilarityIssues`` of the same names (null
        in the summary when the scan did not search for it).
    """

    reason: str
    flag_column: str
    title: str
    view_title: str
    tag: str
    columns: tuple[str, ...] = ()
    report_columns: Optional[Callable[["SimilarityIssues", np.ndarray], dict]] = None
    export_columns: tuple[str, ...] = ()
    summary_keys: tuple[str, ...] = ()


def _duplicate_columns(issues: "SimilarityIssues", sample_ids: np.ndarray) -> dict:
    has_copy = issues.duplicate_of >= 0
    return {
        "duplicate_group": issues.duplicate_group,
        "duplicate_of": np.where(has_copy, sample_ids[np.maximum(issues.duplicate_of, 0)], ""),
        "duplicate_similarity": issues.duplicate_similarity,
        "duplicate_conflict": issues.duplicate_conflict,
    }


def _outlier_columns(issues: "SimilarityIssues", sample_ids: np.ndarray) -> dict:
    return {"outlier_score": issues.outlier_score, "is_outlier": issues.is_outlier}


LABEL = IssueType(
    reason="label",
    flag_column="suspected_noisy",
    title="suspect label",
    view_title="suspect labels",
    tag="suspected_noisy",
)
AMBIGUOUS = IssueType(
    reason="ambiguous",
    flag_column="is_ambiguous",
    title="ambiguous between two classes",
    view_title="ambiguous labels",
    tag="ambiguous",
    export_columns=("ambiguous_with",),
)
DUPLICATE_CONFLICT = IssueType(
    reason="duplicate_conflict",
    flag_column="duplicate_conflict",
    title="near-duplicate with another label",
    view_title="near-duplicates with another label",
    tag="duplicate_conflict",
    columns=("duplicate_group", "duplicate_of", "duplicate_similarity", "duplicate_conflict"),
    report_columns=_duplicate_columns,
    export_columns=("duplicate_of", "duplicate_similarity"),
    summary_keys=("n_duplicate_groups", "n_duplicate_conflicts"),
)
OUTLIER = IssueType(
    reason="outlier",
    flag_column="is_outlier",
    title="outlier",
    view_title="outliers",
    tag="outlier",
    columns=("outlier_score", "is_outlier"),
    report_columns=_outlier_columns,
    export_columns=("outlier_score",),
    summary_keys=("n_outliers",),
)

#: Every issue type, in the order of the ``reason`` column.
ISSUE_TYPES: dict[str, IssueType] = {t.reason: t for t in (LABEL, AMBIGUOUS, DUPLICATE_CONFLICT, OUTLIER)}

#: The values of the report's ``reason`` column (``;``-separated, in this order).
REASONS = tuple(ISSUE_TYPES)

#: The report columns the near-duplicate and outlier search adds, in report order, then ``reason``.
SIMILARITY_COLUMNS = (*(c for t in ISSUE_TYPES.values() for c in t.columns), "reason")


def issue_summary(issues: Optional["SimilarityIssues"]) -> dict:
    """``summary.json``'s issue counts: ``{key: int}`` of every searched issue type, or None for
    each key when the scan did not search (``issues`` is None)."""
    keys = [key for t in ISSUE_TYPES.values() for key in t.summary_keys]
    return {key: None if issues is None else int(getattr(issues, key)) for key in keys}


def page_issue_types() -> list[dict]:
    """What the review page needs to know of each issue type: ``reason``, ``title``, ``view``."""
    return [{"reason": t.reason, "title": t.title, "view": t.view_title} for t in ISSUE_TYPES.values()]


def tags(reason: str) -> list[str]:
    """The FiftyOne tags of a report row's ``reason`` (``;``-separated; empty counts as ``label``)."""
    return [ISSUE_TYPES[r].tag if r in ISSUE_TYPES else r for r in (reason or LABEL.reason).split(";")]
