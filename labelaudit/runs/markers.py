"""How labelaudit recognises its own output folders: the marker file it writes into each.

Every output folder labelaudit makes holds :data:`MARKER`, which names the command that wrote it
and every entry it wrote there. A folder is replaced (``--overwrite``) only when its marker says it
is an output of the same command and it holds nothing the marker does not list (see
:func:`labelaudit.runs.directory.check_output_folder`); ``review/`` and ``plots/``, which labelaudit
adds to a finished scan later, count as its own. Scan and retrain folders of versions before the
marker are recognised by their ``summary.json`` and their file names (:data:`LEGACY_ENTRIES`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable

from .._atomic import write_text
from ..reports import read_json

#: The commands that write output folders.
KINDS = ("scan", "retrain", "inspect", "inject-noise", "benchmark", "export", "apply")
#: Written by labelaudit into every output folder it makes: ``{"written_by": "labelaudit", "kind",
#: "format_version", "entries"}`` (the top-level names it wrote).
MARKER = ".labelaudit-output.json"
MARKER_FORMAT_VERSION = 1
#: Folders labelaudit adds to a finished scan's run directory later (``review``, ``write_plots_for_run``).
LATER_ENTRIES = frozenset({"review", "plots"})
#: Scan and retrain folders written before the marker existed: recognised by ``summary.json``'s
#: ``kind`` and ``format_version`` only when they hold nothing but these names.
LEGACY_ENTRIES = {
    "scan": frozenset(
        {
            "report.parquet",
            "report.csv",
            "flagged.csv",
            "summary.json",
            "transition_matrix.csv",
            "transition_matrix_anchor.csv",
            "true_transition_matrix.csv",
            "skipped.csv",
            "config.json",
            "model.pt",
        }
    ),
    "retrain": frozenset(
        {"model.pt", "cleaned_labels.csv", "cleaned_labels.parquet", "summary.json", "config.json"}
    ),
}


def read_marker(folder: Path) -> dict | None:
    """The :data:`MARKER` labelaudit wrote into ``folder`` (or the equivalent of one for a scan or
    retrain folder of an earlier version, see :data:`LEGACY_ENTRIES`), or None."""
    try:
        marker = read_json(folder / MARKER)
    except (OSError, ValueError):
        return _legacy_marker(folder)
    if not (
        isinstance(marker, dict)
        and marker.get("written_by") == "labelaudit"
        and marker.get("kind") in KINDS
        and isinstance(marker.get("entries"), list)
    ):
        return None
    return marker


def _legacy_marker(folder: Path) -> dict | None:
    """The marker a scan or retrain folder of an earlier version would have (:data:`LEGACY_ENTRIES`),
    or None when ``folder`` is not recognisably one."""
    try:
        summary = read_json(folder / "summary.json")
        names = set(os.listdir(folder))
    except (OSError, ValueError):
        return None
    kind = summary.get("kind") if isinstance(summary, dict) else None
    if kind not in LEGACY_ENTRIES or summary.get("format_version") not in (1, 2):
        return None
    if not names - LATER_ENTRIES <= LEGACY_ENTRIES[kind]:
        return None  # something else is in there: not recognisably ours
    return {"written_by": "labelaudit", "kind": kind, "entries": sorted(names)}


def write_marker(folder: Path, kind: str, entries: Iterable[str] | None = None) -> None:
    """Mark ``folder`` as a ``kind`` output of labelaudit listing ``entries`` (default: what is in it now)."""
    names = sorted(os.listdir(folder)) if entries is None else sorted(entries)
    marker = {
        "written_by": "labelaudit",
        "kind": kind,
        "format_version": MARKER_FORMAT_VERSION,
        "entries": [n for n in names if n != MARKER],
    }
    write_text(folder / MARKER, json.dumps(marker, indent=2) + "\n")


def output_kind(folder: Path) -> str | None:
    """The command whose output ``folder`` is (``"scan"``, ``"retrain"``...), by its marker, or None."""
    marker = read_marker(folder)
    return None if marker is None else marker["kind"]


def foreign_entries(folder: Path) -> list[str]:
    """Names in ``folder`` that labelaudit did not write there (all of them without a marker)."""
    marker = read_marker(folder)
    ours = set() if marker is None else {*marker["entries"], *LATER_ENTRIES, MARKER}
    return sorted(name for name in os.listdir(folder) if name not in ours)
