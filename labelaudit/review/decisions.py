"""Reviewers' decisions: the :class:`Decisions` that ``apply`` applies, and the reader of a
``decisions.csv`` (the review page's, or ``export --format csv`` filled in a spreadsheet).

Decisions (:data:`DECISIONS`), one per reviewed sample:

- ``accept``: take the scan's suggested label; ``keep``: keep the given label;
  ``relabel``: take ``new_label`` (a class of the run); ``remove``: drop the sample;
  ``unsure``: as if nobody had reviewed it.

How a decision was made may travel with it (the review page writes it; :data:`SOURCE_COLUMNS`):
``source`` is ``manual`` (a reviewer decided the sample), ``check:<id>`` (decided one by one as a
card of the spot-check ``<id>``) or ``bulk:<id>`` (decided in bulk, after every card of the
spot-check ``<id>`` agreed with the decision); ``check_size`` is that check's number of cards and
``check_max_wrong`` the share of wrong decisions among the bulk-decided that it bounds at 95%
confidence.

A Label Studio export becomes :class:`Decisions` too (:mod:`labelaudit.review.label_studio_decisions`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from ..data.sources import read_table, where_row
from ..errors import ManifestError, some
from ..runs.scan_run import check_sample_ids, text_column

DECISIONS = ("accept", "keep", "relabel", "remove", "unsure")
#: Columns of a decisions file (``new_label`` and ``note`` may be absent; other columns are ignored).
DECISION_COLUMNS = ["sample_id", "decision", "new_label", "note"]
#: Optional columns of a decisions file saying how each decision was made (see the module docstring).
SOURCE_COLUMNS = ["source", "check_size", "check_max_wrong"]
_SOURCE = re.compile(r"(manual|(check|bulk):[A-Za-z0-9_-]{1,64})")


@dataclass(frozen=True)
class Decisions:
    """Reviewers' decisions, one row per reviewed sample.

    Attributes
    ----------
    frame : pandas.DataFrame
        ``sample_id, decision, new_label, note``: ``decision`` one of :data:`DECISIONS`;
        ``new_label`` the class for ``relabel`` (for Label Studio: the chosen class of every
        decision), empty otherwise.
    path : pathlib.Path
        The file read.
    format : {"decisions-csv", "label-studio"}
    num_conflicting : int
        Label Studio: tasks whose counted annotations chose different classes (the latest won).
    reviewer : str or None
        Who decided: the file's ``reviewer`` column (one name per file), None without one.
    with_source : bool
        The file has a ``source`` column; ``frame`` then also holds :data:`SOURCE_COLUMNS`
        (``source`` ``manual`` where the file left it empty).
    """

    frame: pd.DataFrame
    path: Path
    format: str
    num_conflicting: int = 0
    reviewer: str | None = None
    with_source: bool = False

    @property
    def reviewer_name(self) -> str:
        """The ``reviewer`` column's name, else the file's stem (``alice.csv`` -> ``alice``)."""
        return self.reviewer or self.path.stem


def read_decisions_table(path: Path, run) -> Decisions:
    """A ``decisions.csv`` (or parquet): columns ``sample_id, decision`` and, for ``relabel``,
    ``new_label`` (``accept``/``keep`` may repeat the suggested/given label there, as the review
    page writes it; another label is an error); ``note`` optional, other columns ignored. Cells
    escaped against spreadsheet formulas (``'=x``) read back unescaped. A row with an empty
    ``decision`` is unreviewed, unless it has a ``new_label``, which then means ``relabel``. One
    row per sample. An optional ``reviewer`` column names who decided: one name in the whole file
    (empty cells allowed), since a file is one reviewer's (``apply`` takes one file per reviewer).
    Optional :data:`SOURCE_COLUMNS` say how each decision was made (checked, kept in the frame).
    """
    table = read_table(path, "decisions file")
    with_source = "source" in [str(c) for c in table.columns]
    reviewer = _reviewer(path, table)
    text, line = _filled_rows(path, table)
    ids, decision, new_label, note = (
        text["sample_id"],
        text["decision"].str.strip().str.lower(),
        text["new_label"],
        text["note"],
    )
    check_sample_ids(ids, run, lambda i: f"decisions file {path.name!r} {line(i)}")
    decision = decision.where(~((decision == "") & (new_label.str.strip() != "")), "relabel")
    _check_decision_words(path, decision, new_label, line)
    relabel = (decision == "relabel").to_numpy()
    _check_repeated_labels(path, run, ids, decision, new_label, line)
    classes = set(run.class_names)
    labels = new_label.map(lambda v: v if v in classes or v.strip() not in classes else v.strip())
    unknown = relabel & ~labels.isin(classes).to_numpy()
    if unknown.any():
        i = int(np.flatnonzero(unknown)[0])
        raise ManifestError(
            f"decisions file {path.name!r} relabels to {labels.iloc[i]!r} {line(i)}, which "
            f"is not a class of the scan ({some(run.class_names)}); use one of its classes"
        )
    out = pd.DataFrame(
        {"sample_id": ids, "decision": decision, "new_label": labels.where(relabel, ""), "note": note}
    )
    if with_source:
        out = out.assign(**_sources(path, text, line))
    return Decisions(
        out[out["decision"] != ""].reset_index(drop=True),
        path,
        "decisions-csv",
        reviewer=reviewer,
        with_source=with_source,
    )


def _sources(path: Path, text: dict[str, pd.Series], line: Callable[[int], str]) -> dict[str, pd.Series]:
    """The :data:`SOURCE_COLUMNS` of the filled rows (``text``, from :func:`_filled_rows`), checked:
    ``source`` empty (``manual``), ``manual``, ``check:<id>`` or ``bulk:<id>``; beside ``check:`` and
    ``bulk:`` a whole ``check_size`` >= 1 and a ``check_max_wrong`` in (0, 1)."""
    source, size, rate = (text[c].str.strip() for c in SOURCE_COLUMNS)
    source = source.where(source != "", "manual")
    for i, (s, n, r) in enumerate(zip(source, size, rate)):
        if not _SOURCE.fullmatch(s):
            raise ManifestError(
                f"decisions file {path.name!r} has the source {s!r} {line(i)}; use manual, check:<id> "
                "or bulk:<id> (the review page's spot-checks), or leave it empty"
            )
        if s == "manual":
            continue
        try:
            good = int(n) >= 1 and float(n) == int(n) and 0 < float(r) < 1
        except ValueError:
            good = False
        if not good:
            raise ManifestError(
                f"decisions file {path.name!r} has the source {s!r} {line(i)} with check_size {n!r} and "
                f"check_max_wrong {r!r}; a spot-check needs a whole number of cards >= 1 and a rate "
                "between 0 and 1 (as the review page writes them)"
            )
    return {"source": source, "check_size": size, "check_max_wrong": rate}


def _reviewer(path: Path, frame: pd.DataFrame) -> str | None:
    """The one name in ``frame``'s ``reviewer`` column, None without the column or a name in it."""
    if "reviewer" not in [str(c) for c in frame.columns]:
        return None
    names = sorted({v.strip() for v in text_column(frame, "reviewer") if v.strip()})
    if len(names) > 1:
        raise ManifestError(
            f"decisions file {path.name!r} names {len(names)} reviewers in its reviewer column "
            f"({some(names)}); give apply one file per reviewer"
        )
    return names[0] if names else None


def _filled_rows(path: Path, frame: pd.DataFrame) -> tuple[dict[str, pd.Series], Callable[[int], str]]:
    """The :data:`DECISION_COLUMNS` and :data:`SOURCE_COLUMNS` of ``frame`` as text (absent: ""),
    without a spreadsheet's empty rows, and ``line(i)``: where the ``i``-th row kept is in the file."""
    columns = [str(c) for c in frame.columns]
    missing = [c for c in ("sample_id", "decision") if c not in columns]
    if missing:
        raise ManifestError(
            f"decisions file {path.name!r} lacks the column(s) {missing} (found {columns}); it needs "
            "sample_id, decision and, for relabel, new_label"
        )
    text = {c: text_column(frame, c) for c in DECISION_COLUMNS + SOURCE_COLUMNS}
    filled = (
        (text["sample_id"].str.strip() != "")
        | (text["decision"].str.strip() != "")
        | (text["new_label"].str.strip() != "")
    ).to_numpy()
    text = {c: v[filled].reset_index(drop=True) for c, v in text.items()}  # a spreadsheet's empty rows
    rows = np.flatnonzero(filled)

    def line(i: int) -> str:  # where row i (after dropping empty rows) is in the file
        return where_row(path, int(rows[i]))

    return text, line


def _check_decision_words(
    path: Path, decision: pd.Series, new_label: pd.Series, line: Callable[[int], str]
) -> None:
    """ManifestError for the first decision that is not one of :data:`DECISIONS` (or empty), or the
    first ``relabel`` without a ``new_label``."""
    bad = ~decision.isin(DECISIONS + ("",))
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise ManifestError(
            f"decisions file {path.name!r} has the decision {decision.iloc[i]!r} {line(i)}; "
            f"use one of {', '.join(DECISIONS)} (or leave it empty: unreviewed)"
        )
    blank = (decision == "relabel").to_numpy() & (new_label.str.strip() == "").to_numpy()
    if blank.any():
        i = int(np.flatnonzero(blank)[0])
        raise ManifestError(
            f"decisions file {path.name!r} says relabel with an empty new_label {line(i)}; "
            "write the class in new_label"
        )


def _check_repeated_labels(
    path: Path, run, ids: pd.Series, decision: pd.Series, new_label: pd.Series, line: Callable[[int], str]
) -> None:
    """ManifestError for the first ``new_label`` beside a decision other than ``relabel`` that is not
    the label the decision stands for: ``accept`` / ``keep`` may repeat the suggested / given label
    (the review page writes it), nothing else may hold one."""
    report = run.report.set_index(run.report["sample_id"].astype(str))
    implied = pd.Series("", index=decision.index, dtype=object)
    for kind, column in (("accept", "suggested_label"), ("keep", "given_label")):
        chosen = (decision == kind).to_numpy()
        implied[chosen] = report.loc[ids[chosen], column].astype(str).to_numpy()
    written = new_label.str.strip()
    relabel = (decision == "relabel").to_numpy()
    stray = ~relabel & (written != "").to_numpy() & (written != implied).to_numpy()
    if stray.any():
        i = int(np.flatnonzero(stray)[0])
        meaning = {
            "accept": f"the suggested label {implied.iloc[i]!r}",
            "keep": f"the given label {implied.iloc[i]!r}",
        }
        raise ManifestError(
            f"decisions file {path.name!r} has new_label {new_label.iloc[i]!r} with the decision "
            f"{decision.iloc[i]!r} {line(i)}, which means "
            f"{meaning.get(decision.iloc[i], 'no label')}; clear new_label or make it relabel"
        )
