"""``apply``: a scan plus reviewers' decisions -> a cleaned manifest.

Decisions come from a ``decisions.csv`` (the review page, or ``export --format csv`` filled in
a spreadsheet) or from a Label Studio JSON export of the tasks ``labelaudit export`` wrote.

Decisions (:data:`DECISIONS`), one per reviewed sample:

- ``accept``: take the scan's suggested label; ``keep``: keep the given label;
  ``relabel``: take ``new_label`` (a class of the run); ``remove``: drop the sample;
  ``unsure``: as if nobody had reviewed it.

Every sample ends in exactly one of two places. ``cleaned.parquet``/``.csv`` (``sample_id,
path, label, original_label, label_source``; a manifest ``labelaudit scan`` reads directly)
holds the kept samples with ``label_source``: ``reviewed`` (accept, keep, relabel), ``given``
(unflagged samples, and flagged ones nobody reviewed under ``accept_unreviewed="given"``) or
``suggested`` (flagged and unreviewed under ``accept_unreviewed="suggested"``).
``removed.csv`` holds the samples a reviewer removed and, under ``accept_unreviewed="drop"``,
the flagged samples nobody reviewed.

Label Studio exports: tasks join on ``data.sample_id``; an annotation counts when
``was_cancelled`` is false and it holds a choice of the ``label`` Choices. When a task has several
such annotations (several reviewers, or a task imported twice), the most recently updated one
wins (``updated_at``, then ``created_at``, then the annotation id); a task with none (skipped, or
not annotated) is unreviewed. The chosen class becomes ``accept`` when it is the scan's
suggestion, ``keep`` when it is the given label, ``relabel`` otherwise.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd

from .. import __version__
from .._atomic import atomic_path
from ..data.sources import read_table, where_row
from ..errors import ConfigError, ManifestError, some
from ..reports import read_json, write_csv, write_json
from ..runs.directory import RunDirectory, data_fingerprint, input_paths
from ..runs.scan_run import ScanRun, check_sample_ids, load_run, text_column

DECISIONS = ("accept", "keep", "relabel", "remove", "unsure")
ACCEPT_UNREVIEWED = ("given", "suggested", "drop")
LABEL_SOURCES = ("given", "reviewed", "suggested")
#: Columns of a decisions file (``new_label`` and ``note`` may be absent; other columns are ignored).
DECISION_COLUMNS = ["sample_id", "decision", "new_label", "note"]
CLEANED_COLUMNS = ["sample_id", "path", "label", "original_label", "label_source"]
REMOVED_COLUMNS = ["sample_id", "path", "original_label", "suggested_label", "reason", "note"]
MULTIPLE_ANNOTATIONS_RULE = (
    "the most recently updated non-cancelled annotation with a choice wins (updated_at, then "
    "created_at, then annotation id)"
)


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
    """

    frame: pd.DataFrame
    path: Path
    format: str
    num_conflicting: int = 0


def read_decisions(path: str | os.PathLike, run) -> Decisions:
    """Read a decisions file (``.csv``/``.parquet``) or a Label Studio JSON export (``.json``),
    checked against ``run`` (a :class:`labelaudit.pipeline.retrain.ScanRun`).

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


def read_decisions_table(path: Path, run) -> Decisions:
    """A ``decisions.csv`` (or parquet): columns ``sample_id, decision`` and, for ``relabel``,
    ``new_label`` (``accept``/``keep`` may repeat the suggested/given label there, as the review
    page writes it; another label is an error); ``note`` optional, other columns ignored. Cells escaped
    against spreadsheet
    formulas (``'=x``) read back unescaped. A row with an empty ``decision`` is unreviewed,
    unless it has a ``new_label``, which then means ``relabel``. One row per sample.
    """
    frame = read_table(path, "decisions file")
    columns = [str(c) for c in frame.columns]
    missing = [c for c in ("sample_id", "decision") if c not in columns]
    if missing:
        raise ManifestError(
            f"decisions file {path.name!r} lacks the column(s) {missing} (found {columns}); it needs "
            "sample_id, decision and, for relabel, new_label"
        )
    text = {c: text_column(frame, c) for c in DECISION_COLUMNS}
    filled = (
        (text["sample_id"].str.strip() != "")
        | (text["decision"].str.strip() != "")
        | (text["new_label"].str.strip() != "")
    ).to_numpy()
    text = {c: v[filled].reset_index(drop=True) for c, v in text.items()}  # a spreadsheet's empty rows
    rows = np.flatnonzero(filled)

    def line(i: int) -> str:  # where row i (after dropping empty rows) is in the file
        return where_row(path, int(rows[i]))

    ids, decision, new_label, note = (
        text["sample_id"],
        text["decision"].str.strip().str.lower(),
        text["new_label"],
        text["note"],
    )
    check_sample_ids(ids, run, lambda i: f"decisions file {path.name!r} {line(i)}")
    decision = decision.where(~((decision == "") & (new_label.str.strip() != "")), "relabel")
    bad = ~decision.isin(DECISIONS + ("",))
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise ManifestError(
            f"decisions file {path.name!r} has the decision {decision.iloc[i]!r} {line(i)}; "
            f"use one of {', '.join(DECISIONS)} (or leave it empty: unreviewed)"
        )
    relabel = (decision == "relabel").to_numpy()
    blank = relabel & (new_label.str.strip() == "").to_numpy()
    if blank.any():
        i = int(np.flatnonzero(blank)[0])
        raise ManifestError(
            f"decisions file {path.name!r} says relabel with an empty new_label {line(i)}; "
            "write the class in new_label"
        )
    # accept / keep may repeat the label they stand for (the review page writes it); it must agree.
    report = run.report.set_index(run.report["sample_id"].astype(str))
    implied = pd.Series("", index=decision.index, dtype=object)
    for kind, column in (("accept", "suggested_label"), ("keep", "given_label")):
        chosen = (decision == kind).to_numpy()
        implied[chosen] = report.loc[ids[chosen], column].astype(str).to_numpy()
    written = new_label.str.strip()
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
    return Decisions(out[out["decision"] != ""].reset_index(drop=True), path, "decisions-csv")


def read_label_studio_export(path: Path, run, *, choices_name: str = "label") -> Decisions:
    """A Label Studio JSON export (Export -> JSON) of the tasks ``labelaudit export`` wrote.

    See the module docstring for the rules; tasks are joined on ``data.sample_id``.
    """
    try:
        tasks = read_json(path)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ManifestError(
            f"cannot read Label Studio export {str(path)!r}: {exc}; export the project with Export -> JSON"
        ) from None
    if not isinstance(tasks, list):
        raise ManifestError(
            f"{str(path)!r} is not a Label Studio JSON export (expected a list of tasks, got "
            f"{type(tasks).__name__}); export the project with Export -> JSON"
        )
    known = set(run.report["sample_id"].astype(str))
    classes = set(run.class_names)
    chosen: dict[str, list[tuple[tuple, str]]] = {}
    order: list[str] = []
    for position, task in enumerate(tasks):
        where = (
            f"task {task.get('id', position + 1)!r}" if isinstance(task, dict) else f"entry {position + 1}"
        )
        if not isinstance(task, dict) or not isinstance(task.get("data"), dict):
            raise ManifestError(
                f"{where} of {path.name!r} has no 'data' object: not a Label Studio JSON export; export "
                "with Export -> JSON (not JSON_MIN or CSV)"
            )
        sample_id = task["data"].get("sample_id")
        if sample_id is None:
            raise ManifestError(
                f"{where} of {path.name!r} has no data.sample_id; import the tasks.json written by "
                "labelaudit export, and export that project"
            )
        sample_id = str(sample_id)
        if sample_id not in known:
            raise ManifestError(
                f"{where} of {path.name!r} has the sample_id {sample_id!r}, which is not in the scan "
                f"{str(run.path)!r}; apply the export to the scan its tasks came from"
            )
        if sample_id not in chosen:
            chosen[sample_id] = []
            order.append(sample_id)
        for k, annotation in enumerate(task.get("annotations") or []):
            if not isinstance(annotation, dict) or annotation.get("was_cancelled", False):
                continue
            choice = _choice(annotation.get("result") or [], choices_name)
            if choice is None:
                continue
            if choice not in classes:
                raise ManifestError(
                    f"{where} of {path.name!r} (sample_id {sample_id!r}) chose {choice!r}, which is not "
                    f"a class of the scan ({some(run.class_names)}); label with the label_config.xml "
                    "of labelaudit export"
                )
            chosen[sample_id].append(
                (
                    (
                        _when(annotation.get("updated_at")),
                        _when(annotation.get("created_at")),
                        _number(annotation.get("id")),
                        position,
                        k,
                    ),
                    choice,
                )
            )
    report = run.report.set_index(run.report["sample_id"].astype(str))
    rows, conflicting = [], 0
    for sample_id in order:
        if not chosen[sample_id]:
            continue  # skipped or not annotated: unreviewed
        conflicting += len({c for _, c in chosen[sample_id]}) > 1
        label = max(chosen[sample_id])[1]
        row = report.loc[sample_id]
        decision = (
            "accept"
            if label == str(row["suggested_label"])
            else "keep"
            if label == str(row["given_label"])
            else "relabel"
        )
        rows.append((sample_id, decision, label, ""))
    frame = pd.DataFrame(rows, columns=DECISION_COLUMNS, dtype=object)
    return Decisions(frame, Path(path), "label-studio", conflicting)


@dataclass
class ApplyResult:
    """What :func:`apply_decisions` made.

    ``cleaned`` (:data:`CLEANED_COLUMNS`) and ``removed`` (:data:`REMOVED_COLUMNS`) partition the
    run's samples; ``decisions`` are the decisions applied (as read); ``counts`` go to ``apply.json``.
    """

    run: object  # labelaudit.pipeline.retrain.ScanRun
    decisions: Decisions
    accept_unreviewed: str
    cleaned: pd.DataFrame
    removed: pd.DataFrame
    counts: dict = field(default_factory=dict)


def apply_decisions(
    run_dir, decisions: str | os.PathLike | Decisions, *, accept_unreviewed: str = "given"
) -> ApplyResult:
    """Apply reviewers' decisions to a scan's samples.

    Parameters
    ----------
    run_dir : path-like or labelaudit.pipeline.retrain.ScanRun
        The scan's run directory.
    decisions : path-like or Decisions
        A decisions file or Label Studio export (see :func:`read_decisions`).
    accept_unreviewed : {"given", "suggested", "drop"}, default="given"
        What a flagged sample without a decision (or with ``unsure``) becomes: its given label,
        the scan's suggested label, or removed.

    Returns
    -------
    ApplyResult
    """
    if accept_unreviewed not in ACCEPT_UNREVIEWED:
        raise ConfigError(
            f"--accept-unreviewed must be one of {', '.join(ACCEPT_UNREVIEWED)}; got {accept_unreviewed!r}"
        )
    run = run_dir if isinstance(run_dir, ScanRun) else load_run(run_dir)
    if not isinstance(decisions, Decisions):
        decisions = read_decisions(decisions, run)
    report = run.report
    ids = report["sample_id"].astype(str).to_numpy(dtype=object)
    given = report["given_label"].astype(str).to_numpy(dtype=object)
    suggested = report["suggested_label"].astype(str).to_numpy(dtype=object)
    flagged = report["suspected_noisy"].to_numpy(dtype=bool)
    n = len(report)

    position = pd.Series(np.arange(n), index=ids)
    decision = np.full(n, "", dtype=object)
    new_label = np.full(n, "", dtype=object)
    note = np.full(n, "", dtype=object)
    at = position[decisions.frame["sample_id"].to_numpy()].to_numpy()
    decision[at] = decisions.frame["decision"].to_numpy()
    new_label[at] = decisions.frame["new_label"].to_numpy()
    note[at] = decisions.frame["note"].to_numpy()

    label = given.copy()
    source = np.full(n, "given", dtype=object)
    removed = decision == "remove"
    reason = np.where(removed, "remove", "").astype(object)
    for name, take in (("accept", suggested), ("keep", given), ("relabel", new_label)):
        mask = decision == name
        label[mask] = take[mask]
        source[mask] = "reviewed"
    unreviewed = flagged & np.isin(decision, ["", "unsure"])
    if accept_unreviewed == "suggested":
        label[unreviewed] = suggested[unreviewed]
        source[unreviewed] = "suggested"
    elif accept_unreviewed == "drop":
        removed |= unreviewed
        reason[unreviewed] = "unreviewed"

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
    counts = {
        "num_samples": int(n),
        "num_flagged": int(flagged.sum()),
        "num_decisions": int(len(decisions.frame)),
        "decisions": {name: int((decision == name).sum()) for name in DECISIONS},
        "num_reviewed": int(np.isin(decision, ["accept", "keep", "relabel", "remove"]).sum()),
        "num_unreviewed_flagged": int(unreviewed.sum()),
        "num_reviewed_unflagged": int(
            (~flagged & np.isin(decision, ["accept", "keep", "relabel", "remove"])).sum()
        ),
        "num_kept": int(keep.sum()),
        "num_removed": int(removed.sum()),
        "num_changed": int((label[keep] != given[keep]).sum()),
        "label_sources": {name: int((source[keep] == name).sum()) for name in LABEL_SOURCES},
        "num_conflicting_reviews": int(decisions.num_conflicting),
    }
    return ApplyResult(
        run=run,
        decisions=decisions,
        accept_unreviewed=accept_unreviewed,
        cleaned=cleaned,
        removed=removed_frame,
        counts=counts,
    )


def apply_summary(result: ApplyResult) -> dict:
    """``apply.json``: where the decisions came from, the rule for unreviewed samples, and counts."""
    run = result.run
    return {
        "kind": "apply",
        "format_version": 1,
        "scan_run_dir": str(run.path),
        "source": str(run.table.source),
        "decisions_file": str(result.decisions.path.resolve()),
        "decisions_format": result.decisions.format,
        "accept_unreviewed": result.accept_unreviewed,
        "multiple_annotations_rule": MULTIPLE_ANNOTATIONS_RULE
        if result.decisions.format == "label-studio"
        else None,
        **result.counts,
        "class_names": list(run.class_names),
        "scan_data_fingerprint": run.summary.get("data_fingerprint"),
        # Of the kept samples and their cleaned labels, in cleaned.csv order.
        "data_fingerprint": data_fingerprint(
            result.cleaned["sample_id"].tolist(), result.cleaned["label"].tolist()
        ),
        "files": ["cleaned.parquet", "cleaned.csv", "removed.csv", "decisions.csv", "apply.json"],
        "labelaudit_version": __version__,
    }


def default_apply_dir(run_dir: str | os.PathLike) -> Path:
    """``<scan run dir>-cleaned`` beside the scan's run directory."""
    path = Path(run_dir).expanduser().resolve()
    return path.parent / f"{path.name}-cleaned"


def apply_inputs(run, decisions_path: str | os.PathLike | None) -> list[Path]:
    """Everything ``apply`` reads: the scan's run directory, its images (folders), the decisions file."""
    return input_paths(run.table, [run.path, decisions_path])


def write_apply(
    result: ApplyResult, out_dir: str | os.PathLike | RunDirectory, *, overwrite: bool = False
) -> Path:
    """Write ``cleaned.parquet``, ``cleaned.csv``, ``removed.csv``, ``decisions.csv`` (the decisions
    applied, in the decisions-file format) and ``apply.json``, all or nothing.

    ``out_dir`` is a path or an opened :class:`~labelaudit.runs.directory.RunDirectory`; ``overwrite``
    replaces an earlier apply's folder (nothing else that is not empty is ever replaced).
    """
    if isinstance(out_dir, RunDirectory):
        output = out_dir
    else:
        output = RunDirectory(
            out_dir, "apply", inputs=apply_inputs(result.run, result.decisions.path), overwrite=overwrite
        )
    with output.writing() as tmp:
        with atomic_path(tmp / "cleaned.parquet") as file:
            result.cleaned.to_parquet(file, index=False)
        write_csv(tmp / "cleaned.csv", result.cleaned)
        write_csv(tmp / "removed.csv", result.removed)
        frame = result.decisions.frame.copy()
        if result.decisions.format == "label-studio":  # the chosen class matters only for relabel
            frame["new_label"] = frame["new_label"].where(frame["decision"] == "relabel", "")
        write_csv(tmp / "decisions.csv", frame[DECISION_COLUMNS])
        write_json(tmp / "apply.json", apply_summary(result))
    return output.path


def _choice(result: list, choices_name: str) -> str | None:
    """The first choice of the result item from the Choices ``choices_name``, or None."""
    for item in result:
        if not isinstance(item, dict) or item.get("from_name") != choices_name:
            continue
        choices = (item.get("value") or {}).get("choices") if isinstance(item.get("value"), dict) else None
        if isinstance(choices, list) and choices:
            return str(choices[0])
    return None


def _when(text) -> float:
    """An ISO timestamp as seconds (``-inf`` when absent or unreadable), for ordering annotations."""
    if not isinstance(text, str):
        return -math.inf
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return -math.inf
    if moment.tzinfo is None:
        from datetime import timezone

        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def _number(value) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else -math.inf
