"""Reviewers' decisions from Label Studio: a JSON export (Export -> JSON) of the tasks that
``labelaudit export`` wrote, read as :class:`~labelaudit.review.decisions.Decisions`.

Tasks join on ``data.sample_id``; an annotation counts when ``was_cancelled`` is false and it
holds a choice of the ``label`` Choices. When a task has several such annotations (several
reviewers, or a task imported twice), the most recently updated one wins (``updated_at``, then
``created_at``, then the annotation id): :data:`MULTIPLE_ANNOTATIONS_RULE`. A task with none
(skipped, or not annotated) is unreviewed. The chosen class becomes ``accept`` when it is the
scan's suggestion, ``keep`` when it is the given label, ``relabel`` otherwise.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from ..errors import ManifestError, some
from ..reports import read_json
from .decisions import DECISION_COLUMNS, Decisions

#: How one decision is chosen among a task's annotations (recorded in ``apply.json``).
MULTIPLE_ANNOTATIONS_RULE = (
    "the most recently updated non-cancelled annotation with a choice wins (updated_at, then "
    "created_at, then annotation id)"
)


def read_label_studio_export(path: Path, run, *, choices_name: str = "label") -> Decisions:
    """A Label Studio JSON export (Export -> JSON) of the tasks ``labelaudit export`` wrote.

    See the module docstring for the rules; tasks are joined on ``data.sample_id``.
    """
    tasks = _read_tasks(path)
    known = set(run.report["sample_id"].astype(str))
    chosen: dict[str, list[tuple[tuple, str]]] = {}  # sample id -> (order key, class); in task order
    for position, task in enumerate(tasks):
        where, sample_id = _task_sample_id(task, position, path, run, known)
        chosen.setdefault(sample_id, []).extend(
            _counted_choices(task, position, where, sample_id, path, run, choices_name)
        )
    report = run.report.set_index(run.report["sample_id"].astype(str))
    rows, conflicting = [], 0
    for sample_id, choices in chosen.items():
        if not choices:
            continue  # skipped or not annotated: unreviewed
        conflicting += len({c for _, c in choices}) > 1
        label = max(choices)[1]
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


def _read_tasks(path: Path) -> list:
    """The list of tasks in the export; ManifestError when unreadable or not a list."""
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
    return tasks


def _task_sample_id(task, position: int, path: Path, run, known: set[str]) -> tuple[str, str]:
    """``(where, sample_id)``: how messages name the task, and its ``data.sample_id``, which must be
    a sample of the scan."""
    where = f"task {task.get('id', position + 1)!r}" if isinstance(task, dict) else f"entry {position + 1}"
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
    return where, sample_id


def _counted_choices(
    task: dict, position: int, where: str, sample_id: str, path: Path, run, choices_name: str
) -> list[tuple[tuple, str]]:
    """The class chosen by each counted annotation of ``task``, with the key that orders them (the
    largest wins: :data:`MULTIPLE_ANNOTATIONS_RULE`, then the order of the file)."""
    classes = set(run.class_names)
    counted = []
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
        key = (
            _when(annotation.get("updated_at")),
            _when(annotation.get("created_at")),
            _number(annotation.get("id")),
            position,
            k,
        )
        counted.append((key, choice))
    return counted


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
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def _number(value) -> float:
    """An annotation id as a number for ordering (``-inf`` when it is not one)."""
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else -math.inf
