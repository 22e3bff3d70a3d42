"""``export``: a scan's flagged samples in a form a review tool reads.

Formats (:data:`FORMATS`), each written into its own output folder, all or nothing:

- ``label-studio``: ``tasks.json`` (Label Studio import JSON: one task per flagged sample, the
  suggested label as a ``choices`` prediction with its score) and ``label_config.xml`` (the
  matching labeling config), plus ``README.txt`` with the steps to serve the local images.
- ``csv``: ``review.csv``, the flagged rows worst first with empty ``decision, new_label, note``
  columns: filled in a spreadsheet it is a decisions file for ``labelaudit apply``.
- ``fiftyone``: ``fiftyone.json``, the flagged samples as plain JSON with a ``filepath`` and
  FiftyOne-style ``Classification`` dicts (``README.txt`` holds the few lines that load it).

Every folder also holds ``export.json`` (what was exported from which run; it marks the folder
as an export output for ``--overwrite``).

Label Studio facts this module follows (checked against a real server, label-studio 1.23.2):
a task's image is the host-relative, percent-encoded ``/data/local-files/?d=<path relative to
the document root>``; the server serves it when started with local files serving and that
document root, and when a "Local files" source storage of the project holds the image's folder
(a strict subfolder of the document root). ``sample_id`` and the given label travel in the
task's ``data`` under keys that differ from the Choices name, so that the export joins back.
"""

from __future__ import annotations

import os
import re
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence
from xml.sax.saxutils import quoteattr

import numpy as np
import pandas as pd

from .. import __version__
from .._atomic import write_text
from ..audit.issue_types import ISSUE_TYPES
from ..audit.issue_types import tags as issue_tags
from ..errors import ConfigError, DatasetError
from ..reports import json_text, write_csv, write_json
from ..runs.directory import RunDirectory, input_paths
from ..runs.scan_run import ScanRun, load_run

FORMATS = ("label-studio", "csv", "fiftyone")

#: Names used in the labeling config; the tasks' predictions and ``apply`` refer to them.
CHOICES_NAME = "label"
IMAGE_NAME = "image"
#: How Label Studio serves a file below its document root (``?d=`` takes the quoted relative path).
LOCAL_FILES_PREFIX = "/data/local-files/?d="

#: Columns of ``review.csv`` (the ``csv`` format); the first four are those of a decisions file.
REVIEW_COLUMNS = [
    "sample_id",
    "decision",
    "new_label",
    "note",
    "given_label",
    "suggested_label",
    "suggested_confidence",
    "label_quality",
    "rank",
    "reason",
    "path",
]

# Characters XML 1.0 cannot hold at all (not even escaped): C0 controls other than tab, LF, CR.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_run` wrote.

    Attributes
    ----------
    path : pathlib.Path
        The output folder.
    format : str
        One of :data:`FORMATS`.
    num_exported : int
        Flagged samples written (tasks, rows or samples).
    files : list of str
        File names in ``path``.
    document_root, storage_folders :
        ``label-studio`` only: the document root the image references are relative to, and the
        folders to add as Local files storages (None / empty otherwise).
    """

    path: Path
    format: str
    num_exported: int
    files: list[str]
    document_root: Path | None = None
    storage_folders: list[Path] = field(default_factory=list)


def flagged_report(report: pd.DataFrame) -> pd.DataFrame:
    """The rows of a scan's ``report`` to review, most suspect label first (by ``rank``): those with
    ``suspected_noisy`` true and, in a scan that searched them, near-duplicates of another label
    and outliers (a non-empty ``reason``). A report without ``reason`` (an older scan) gets one."""
    from ..audit.flags import reason_column, review_mask

    flagged = report[review_mask(report)]
    flagged = flagged.assign(reason=reason_column(flagged)) if "reason" not in flagged else flagged
    return flagged.sort_values("rank", kind="stable").reset_index(drop=True)


def dataset_folder(paths: Sequence[str], source: Path, kind: str) -> Path:
    """The folder holding the dataset: the image folder of a folder scan, else the deepest folder
    holding every image of the manifest (``paths``). Resolved."""
    if kind == "folder":
        return Path(source).resolve()
    folders = sorted({os.path.realpath(d) for d in {os.path.dirname(p) for p in paths}})
    return Path(os.path.commonpath(folders)) if folders else Path(source).resolve().parent


def default_document_root(dataset: Path) -> Path:
    """The parent of the dataset folder (Label Studio then serves ``<dataset name>/<class>/<file>``)."""
    if dataset.parent == dataset:
        raise ConfigError(
            f"the images lie directly under {str(dataset)!r}, which has no parent folder to serve them "
            "from; pass --document-root and a storage folder below it"
        )
    return dataset.parent


def local_files_url(path: str | os.PathLike, document_root: Path) -> str:
    """Label Studio's reference to an image: ``/data/local-files/?d=`` + the percent-encoded path
    relative to ``document_root`` (``+``, spaces, ``?``, ``&``, ``#`` and non-ASCII encoded).

    Raises :class:`ConfigError` when the image is not inside ``document_root``.
    """
    image = Path(os.path.realpath(path))
    try:
        relative = image.relative_to(document_root)
    except ValueError:
        raise ConfigError(
            f"image {str(path)!r} is outside --document-root {str(document_root)!r}, so Label Studio "
            f"cannot serve it; pass a --document-root that contains every image"
        ) from None
    return LOCAL_FILES_PREFIX + urllib.parse.quote(relative.as_posix(), safe="/")


def storage_folders(paths: Sequence[str], document_root: Path, dataset: Path) -> list[Path]:
    """The folders to add as Label Studio "Local files" storages so that every image is served.

    Label Studio refuses the document root itself as a storage: the dataset folder when it lies
    strictly below the root, else each first-level folder of the root holding an image.
    Raises :class:`ConfigError` for an image directly in the document root (no storage can hold it).
    """
    if document_root in dataset.parents:
        return [dataset]
    tops = set()
    for p in paths:
        relative = Path(os.path.realpath(p)).relative_to(document_root)
        if len(relative.parts) < 2:
            raise ConfigError(
                f"image {str(p)!r} lies directly in --document-root {str(document_root)!r}; Label Studio "
                "serves only files of a storage folder strictly below the root: pass the parent folder "
                "as --document-root"
            )
        tops.add(document_root / relative.parts[0])
    return sorted(tops)


def label_config(class_names: Sequence[str]) -> str:
    """The Label Studio labeling config: the image, the given label as a header, and one
    single-choice ``<Choice>`` per class. Class names are escaped with ``quoteattr``.

    Raises :class:`DatasetError` for a class name with a control character XML cannot hold.
    """
    for name in class_names:
        if _NOT_XML.search(name):
            raise DatasetError(
                f"class name {name!r} holds a control character that XML (and so a Label Studio config) "
                "cannot contain; rename the class, or export with --format csv"
            )
    choices = "\n".join(f"    <Choice value={quoteattr(name)}/>" for name in class_names)
    return (
        "<View>\n"
        f'  <Image name={quoteattr(IMAGE_NAME)} value="$image" zoom="true"/>\n'
        '  <Header value="Given label: $given_label" size="5"/>\n'
        f'  <Choices name={quoteattr(CHOICES_NAME)} toName={quoteattr(IMAGE_NAME)} choice="single" '
        'showInline="true" required="true">\n'
        f"{choices}\n"
        "  </Choices>\n"
        "</View>\n"
    )


def label_studio_tasks(flagged: pd.DataFrame, document_root: Path, model_version: str) -> list[dict]:
    """One Label Studio task per row of ``flagged`` (a scan report's flagged rows).

    ``data`` holds ``image`` (the local-files reference), ``sample_id``, ``given_label``,
    ``suggested_label``, ``suggested_confidence``, ``label_quality``, ``rank``, ``reason`` (why
    it is listed: ``label``, ``duplicate_conflict``, ``outlier``, ``;``-separated) and, when the
    scan searched them, ``duplicate_of`` (the sample id of its near-copy, or ``""``),
    ``duplicate_similarity`` and ``outlier_score`` (never a key named like the Choices,
    ``label``); ``predictions`` holds the suggested label as a ``choices``
    result with ``score`` = the suggested label's probability.
    """
    tasks = []
    for row in flagged.itertuples(index=False):
        score = float(row.suggested_confidence)
        tasks.append(
            {
                "data": {
                    IMAGE_NAME: local_files_url(row.path, document_root),
                    "sample_id": str(row.sample_id),
                    "given_label": str(row.given_label),
                    "suggested_label": str(row.suggested_label),
                    "suggested_confidence": score,
                    "label_quality": float(row.label_quality),
                    "rank": int(row.rank),
                    **_similarity_fields(row),
                },
                "predictions": [
                    {
                        "model_version": model_version,
                        "score": score,
                        "result": [
                            {
                                "from_name": CHOICES_NAME,
                                "to_name": IMAGE_NAME,
                                "type": "choices",
                                "value": {"choices": [str(row.suggested_label)]},
                            }
                        ],
                    }
                ],
            }
        )
    return tasks


def _similarity_fields(row) -> dict:
    """A flagged row's ``reason`` and near-duplicate and outlier fields (JSON-safe: no NaN)."""
    fields = {"reason": str(getattr(row, "reason", "label") or "label")}
    for column in (c for t in ISSUE_TYPES.values() for c in t.export_columns):
        if hasattr(row, column):  # the evidence of each issue type the scan looked for, but its yes/no flag
            fields[column] = _json_value(getattr(row, column))
    return fields


def _json_value(value):
    """A report cell as JSON can hold it: NaN as null, numpy numbers as Python's, a missing
    string as ``""``."""
    if isinstance(value, str):
        return value
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    return value.item() if isinstance(value, np.generic) else value


def review_table(flagged: pd.DataFrame) -> pd.DataFrame:
    """The ``csv`` format: :data:`REVIEW_COLUMNS`, decision columns empty, worst first."""
    decision_columns = ("decision", "new_label", "note")  # for the reviewer to fill in
    table = flagged[[c for c in REVIEW_COLUMNS if c not in decision_columns]].copy()
    for column in decision_columns:
        table[column] = ""
    return table[REVIEW_COLUMNS]


def fiftyone_samples(flagged: pd.DataFrame, class_names: Sequence[str]) -> dict:
    """The ``fiftyone`` format: ``{"format", "classes", "samples": [...]}``; each sample has
    ``filepath`` (absolute), ``tags`` (``suspected_noisy`` for a suspect label, and
    ``duplicate_conflict`` / ``outlier`` by ``reason``), ``labelaudit_id`` (the sample
    id), ``ground_truth`` ``{"label"}`` (the given label), ``suggested`` ``{"label", "confidence"}``,
    ``label_quality`` and ``rank``: the keyword arguments of ``fiftyone.Sample`` and
    ``fiftyone.Classification``."""
    samples = [
        {
            "filepath": str(row.path),
            "tags": issue_tags(str(getattr(row, "reason", "") or "")),
            "labelaudit_id": str(row.sample_id),
            "ground_truth": {"label": str(row.given_label)},
            "suggested": {"label": str(row.suggested_label), "confidence": float(row.suggested_confidence)},
            "label_quality": float(row.label_quality),
            "rank": int(row.rank),
        }
        for row in flagged.itertuples(index=False)
    ]
    return {"format": "labelaudit-fiftyone-1", "classes": list(class_names), "samples": samples}


def default_export_dir(run_dir: str | os.PathLike, format: str) -> Path:
    """``<scan run dir>-export-<format>`` beside the scan's run directory."""
    path = Path(run_dir).expanduser().resolve()
    return path.parent / f"{path.name}-export-{format}"


def export_run(
    run_dir,
    out: str | os.PathLike | None = None,
    *,
    format: str = "label-studio",
    document_root: str | os.PathLike | None = None,
    overwrite: bool = False,
) -> ExportResult:
    """Write a scan's flagged samples for review in ``format`` into the folder ``out``.

    Parameters
    ----------
    run_dir : path-like or labelaudit.pipeline.retrain.ScanRun
        A scan's run directory (checked as ``retrain`` checks it: complete, one scan, images present).
    out : path-like, optional
        New output folder (default: :func:`default_export_dir`), written all or nothing; an earlier
        export's folder is replaced only with ``overwrite``.
    format : {"label-studio", "csv", "fiftyone"}, default="label-studio"
    document_root : path-like, optional
        ``label-studio`` only: the folder Label Studio serves files from
        (``LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT``). Default: the parent of the dataset folder.
        Every flagged image must lie inside it.

    Returns
    -------
    ExportResult

    Raises
    ------
    ConfigError
        Unknown format, a document root that is missing or does not hold the images, a bad run
        directory or ``--out``.
    """
    if format not in FORMATS:
        raise ConfigError(f"--format must be one of {', '.join(FORMATS)}; got {format!r}")
    if document_root is not None and format != "label-studio":
        raise ConfigError(f"--document-root is for --format label-studio only; got --format {format}")
    run = run_dir if isinstance(run_dir, ScanRun) else load_run(run_dir)
    flagged = flagged_report(run.report)
    root = folders = None
    if format == "label-studio":  # checks every image is under the document root, before --out
        contents, root, folders = _label_studio_files(run, flagged, document_root)
    elif format == "csv":
        contents = {"review.csv": review_table(flagged)}
    else:
        contents = {"fiftyone.json": json_text(fiftyone_samples(flagged, run.class_names)) + "\n"}
    target = out if out is not None else default_export_dir(run.path, format)
    output = RunDirectory(
        target, "export", inputs=input_paths(run.table, [run.path]), overwrite=overwrite
    ).open()  # before the files are made: a bad --out fails first
    with output.writing() as tmp:
        for name, content in contents.items():
            if isinstance(content, pd.DataFrame):
                write_csv(tmp / name, content)
            else:
                write_text(tmp / name, content)
        result = ExportResult(
            path=output.path,
            format=format,
            num_exported=len(flagged),
            files=[*contents, "README.txt", "export.json"],
            document_root=root,
            storage_folders=folders or [],
        )
        write_text(tmp / "README.txt", readme(result, run.path))
        write_json(tmp / "export.json", export_summary(result, run))
    return result


def _label_studio_files(run: ScanRun, flagged: pd.DataFrame, document_root) -> tuple[dict, Path, list[Path]]:
    """``({file name: text}, document root, storage folders)`` of a Label Studio export: the tasks
    (every image checked to lie under the document root) and the labeling config."""
    dataset = dataset_folder(run.report["path"].astype(str).tolist(), run.table.source, run.table.kind)
    if document_root is None:
        root = default_document_root(dataset)
    else:
        root = Path(document_root).expanduser()
        if not root.is_dir():
            raise ConfigError(
                f"--document-root {str(document_root)!r} is not a folder; pass the folder Label "
                "Studio serves files from (it must contain the images)"
            )
        root = root.resolve()
    model_version = f"labelaudit-{__version__}-{run.summary.get('method', 'scan')}"
    tasks = label_studio_tasks(flagged, root, model_version)  # checks every image is under the root
    folders = storage_folders(flagged["path"].astype(str).tolist(), root, dataset)
    contents = {"tasks.json": json_text(tasks) + "\n", "label_config.xml": label_config(run.class_names)}
    return contents, root, folders


def export_summary(result: ExportResult, run) -> dict:
    """``export.json``: what was exported, from which run, and for Label Studio the serving settings."""
    out = {
        "kind": "export",
        "format": result.format,
        "scan_run_dir": str(run.path),
        "source": str(run.table.source),
        "num_samples": int(len(run.report)),
        "num_exported": result.num_exported,
        "class_names": list(run.class_names),
        "scan_data_fingerprint": run.summary.get("data_fingerprint"),
        "files": result.files,
        "labelaudit_version": __version__,
    }
    if result.format == "label-studio":
        out["label_studio"] = {
            "document_root": str(result.document_root),
            "storage_folders": [str(f) for f in result.storage_folders],
            "choices_name": CHOICES_NAME,
            "image_name": IMAGE_NAME,
        }
    return out


def readme(result: ExportResult, run_path: Path) -> str:
    """``README.txt``: the steps from this folder to a cleaned dataset, with this export's paths."""
    out = result.path
    apply_line = f"   labelaudit apply {_shell(run_path)} DECISIONS_FILE --out CLEANED_DIR"
    if result.format == "csv":
        return (
            f"{result.num_exported} flagged images of the scan {run_path}, worst first.\n\n"
            "1. Open review.csv in a spreadsheet. For each row fill in `decision`:\n"
            "   accept (take suggested_label), keep (keep given_label), relabel (write the class in "
            "new_label),\n"
            "   remove (drop the image from the dataset) or unsure; leave it empty for rows nobody "
            "reviewed.\n"
            "2. Save as CSV and apply the decisions (the scan and this file are only read):\n"
            f"{apply_line.replace('DECISIONS_FILE', _shell(out / 'review.csv'))}\n"
        )
    if result.format == "fiftyone":
        return (
            f"{result.num_exported} flagged images of the scan {run_path}, worst first, for FiftyOne.\n\n"
            "Load them (pip install fiftyone):\n\n"
            "    import json, fiftyone as fo\n"
            f"    d = json.load(open({str(out / 'fiftyone.json')!r}, encoding='utf-8'))\n"
            "    dataset = fo.Dataset('labelaudit-review')\n"
            "    dataset.default_classes = d['classes']\n"
            "    dataset.add_samples([fo.Sample(filepath=s['filepath'], tags=s['tags'], "
            "labelaudit_id=s['labelaudit_id'],\n"
            "                                   label_quality=s['label_quality'], rank=s['rank'],\n"
            "                                   ground_truth=fo.Classification(**s['ground_truth']),\n"
            "                                   suggested=fo.Classification(**s['suggested'])) for s in "
            "d['samples']])\n"
            "    fo.launch_app(dataset.sort_by('rank'))\n\n"
            "Write the decisions as a CSV with columns sample_id (= labelaudit_id), decision, new_label, "
            "note and run\n"
            f"{apply_line}\n"
        )
    storages = "\n".join(f"      {f}" for f in result.storage_folders)
    return (
        f"{result.num_exported} flagged images of the scan {run_path}, worst first, for Label Studio.\n\n"
        "1. Start Label Studio so that it serves the images from this document root:\n\n"
        "      export LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true\n"
        f"      export LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT={_shell(result.document_root)}\n"
        "      label-studio start\n\n"
        "2. Create a project. Settings -> Labeling Interface -> Code: paste label_config.xml, Save.\n"
        "3. Settings -> Cloud Storage -> Add Source Storage -> Local files, with this absolute local path\n"
        "   (one storage per line; the document root itself is refused by Label Studio):\n\n"
        f"{storages}\n\n"
        "   Add the storage but do NOT press Sync: a sync would add every image as an extra, unlabeled "
        "task.\n"
        "4. Import tasks.json (Import -> Upload Files). Each task shows the image, its given label, and the\n"
        "   suggested label as a prediction (score = its probability; sort by it in the Data Manager).\n"
        "5. Review: choose the right class and Submit (the suggested class = accept, the given class = "
        "keep,\n"
        "   another class = relabel); Skip leaves a task unreviewed.\n"
        "6. Export -> JSON, and apply the reviews (the scan and the export are only read):\n\n"
        f"{apply_line.replace('DECISIONS_FILE', 'EXPORT.json')}\n\n"
        "   When several reviewers annotated a task, the most recently updated, non-skipped annotation "
        "wins.\n"
    )


def _shell(path) -> str:
    """``path`` quoted for a POSIX shell when it needs quoting."""
    import shlex

    return shlex.quote(str(path))
