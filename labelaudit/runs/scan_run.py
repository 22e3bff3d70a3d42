"""Reading a scan's run directory back: the one reader (retrain, apply, export), and the labels a
reviewer's file gives its samples. Torch is not imported here.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..data.sources import SampleTable, read_table, table_from_rows, where_row
from ..errors import ConfigError, ManifestError, some
from ..reports import read_json, read_matrix_csv
from ..train.config import TrainConfig
from .fingerprints import check_matrix_fingerprint, data_fingerprint
from .format import MATRIX_FILES, RUN_FORMAT_VERSION


@dataclass(frozen=True)
class ScanRun:
    """What retrain reads from a scan's run directory."""

    path: Path
    summary: dict
    report: pd.DataFrame  # report.parquet: one row per sample, with p_<class> soft-label columns
    table: SampleTable  # the scanned samples, in report order
    train: TrainConfig  # the scan's network and optimiser settings
    transition_matrix: np.ndarray  # (K, K) the audit's T (transition_matrix.csv), rows = true classes

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.table.class_names

    @property
    def flagged(self) -> np.ndarray:
        return self.report["suspected_noisy"].to_numpy(dtype=bool)

    def soft_labels(self) -> np.ndarray:
        return self.report[[f"p_{name}" for name in self.class_names]].to_numpy(dtype=np.float64)

    def suggested_labels(self) -> np.ndarray:
        index = {name: i for i, name in enumerate(self.class_names)}
        return self.report["suggested_label"].map(index).to_numpy(dtype=np.int64)

    @property
    def input_kind(self) -> str:
        """What retrain trains on: ``images``, ``embeddings`` (the scan's backbone) or
        ``embeddings-file``. A ``--probs`` scan trained nothing: retrain trains on the images."""
        kind = (self.summary.get("input") or {}).get("kind", "images")
        if kind != "probs-file":
            return kind
        from ..train.inputs import resolve_train_mode  # torch: only when asked

        return resolve_train_mode(self.train)


def load_run(run_dir: str | os.PathLike) -> ScanRun:
    """Read and check a scan's run directory.

    Raises
    ------
    ConfigError
        Not a folder, a file missing, another format version, a retrain's run directory, or
        files of different runs or datasets mixed (the data fingerprint does not match).
    DatasetError
        Images of the run no longer exist.
    """
    path = Path(run_dir).expanduser().resolve()
    summary, settings = _read_summary_and_settings(run_dir, path)
    try:
        report = pd.read_parquet(path / "report.parquet")
    except (ValueError, OSError) as exc:
        raise ConfigError(
            f"cannot read report.parquet in {str(path)!r} ({exc}); scan the dataset again"
        ) from None
    _check_summary(path, summary)
    names = tuple(summary["class_names"])
    ids, labels = _check_report(path, report, summary)
    check_matrix_fingerprint(path / MATRIX_FILES["cleaned"], summary["data_fingerprint"])
    try:
        transition = read_matrix_csv(path / MATRIX_FILES["cleaned"], len(names))
    except (ValueError, OSError) as exc:
        raise ConfigError(
            f"cannot read {MATRIX_FILES['cleaned']} in {str(path)!r} ({exc}); scan the dataset again"
        ) from None
    source = Path(summary["source"])
    kind = summary.get("source_kind") or (  # scans before source_kind: from the name
        "folder"
        if source.suffix.lower() not in (".parquet", ".pq", ".csv")
        else source.suffix.lower().lstrip(".")
    )
    table = table_from_rows(ids, report["path"].astype(str).tolist(), labels, names, source, kind)
    train_fields = {f for f in TrainConfig.__dataclass_fields__}
    # The scan's memory budget belongs to the machine it ran on: retrain uses this machine's default.
    train = TrainConfig(
        **{k: v for k, v in settings.get("train", {}).items() if k in train_fields and k != "max_memory"}
    )
    return ScanRun(
        path=path, summary=summary, report=report, table=table, train=train, transition_matrix=transition
    )


def _read_summary_and_settings(run_dir: str | os.PathLike, path: Path) -> tuple[dict, dict]:
    """``summary.json`` and ``config.json`` of the scan run directory ``path``; ConfigError when it
    is not a folder, is a retrain's, or lacks one of the files a scan writes."""
    if not path.is_dir():
        raise ConfigError(
            f"run directory {str(run_dir)!r} does not exist; pass the --out folder of a labelaudit scan"
        )
    summary = read_run_json(path / "summary.json")
    if summary is not None and summary.get("kind") == "retrain":
        raise ConfigError(
            f"{str(path)!r} is a retrain's run directory; pass the run directory of the scan it came from"
        )
    missing = [
        name
        for name in ("summary.json", "report.parquet", "config.json", MATRIX_FILES["cleaned"])
        if not (path / name).is_file()
    ]
    if missing:
        raise ConfigError(
            f"{str(path)!r} is not a complete scan run directory (missing {', '.join(missing)}); pass the "
            "--out "
            "folder of a finished labelaudit scan"
        )
    return summary, read_run_json(path / "config.json")


def _check_summary(path: Path, summary: dict) -> None:
    """ConfigError unless ``summary`` is of this format version and names the source, the classes
    and the data fingerprint."""
    if summary.get("format_version") != RUN_FORMAT_VERSION:
        raise ConfigError(
            f"run directory {str(path)!r} has format version {summary.get('format_version')!r}; this "
            "labelaudit "
            f"reads version {RUN_FORMAT_VERSION}: scan the dataset again with this version"
        )
    absent_keys = [k for k in ("source", "class_names", "data_fingerprint") if k not in summary]
    if absent_keys:
        raise ConfigError(f"summary.json in {str(path)!r} lacks {absent_keys}; scan the dataset again")


def _check_report(path: Path, report: pd.DataFrame, summary: dict) -> tuple[list[str], list[str]]:
    """The report's sample ids and given labels, as text; ConfigError when it lacks a column a reader
    needs or belongs to another scan than ``summary`` (the data fingerprints differ)."""
    needed = ["sample_id", "path", "given_label", "suspected_noisy", "suggested_label"] + [
        f"p_{n}" for n in summary["class_names"]
    ]
    absent = [c for c in needed if c not in report.columns]
    if absent:
        raise ConfigError(f"report.parquet in {str(path)!r} lacks columns {absent}; scan the dataset again")
    ids, labels = report["sample_id"].astype(str).tolist(), report["given_label"].astype(str).tolist()
    if data_fingerprint(ids, labels) != summary["data_fingerprint"]:
        raise ConfigError(
            f"summary.json and report.parquet in {str(path)!r} do not belong to the same scan (their data "
            "fingerprints "
            "differ: files of two runs or datasets are mixed); scan the dataset again into a new --out"
        )
    return ids, labels


def read_run_json(path: Path) -> dict | None:
    """The JSON object in ``path``, None when the file is absent; ConfigError when unreadable."""
    if not path.is_file():
        return None
    try:
        data = read_json(path)
    except (ValueError, OSError) as exc:
        raise ConfigError(
            f"cannot read {path.name} in {str(path.parent)!r} ({exc}); scan the dataset again"
        ) from None
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path.name} in {str(path.parent)!r} is not a labelaudit file; scan the dataset again"
        )
    return data


def read_labels(path: str | os.PathLike, run) -> np.ndarray:
    """Labels for ``retrain --labels``: a parquet/CSV with ``sample_id`` and ``label`` (a cleaned
    manifest of ``apply``; ``cleaned_label`` is read when there is no ``label`` column).

    Returns
    -------
    numpy.ndarray
        Shape ``(N,)`` int64 in ``run.report`` order: the class index of each sample's label in
        the file, ``-1`` for samples the file does not list (not trained on).

    Raises
    ------
    ManifestError
        Unreadable file, a missing column, a repeated or unknown sample id, a blank label or one
        that is not a class of the run (the first is named), or no row at all.
    """
    file = Path(path).expanduser()
    if not file.is_file():
        raise ManifestError(
            f"--labels {str(path)!r} does not exist; pass the cleaned.parquet written by labelaudit apply"
        )
    frame = read_table(file, "--labels file")
    columns = [str(c) for c in frame.columns]
    label_column = "label" if "label" in columns else "cleaned_label" if "cleaned_label" in columns else None
    if "sample_id" not in columns or label_column is None:
        raise ManifestError(
            f"--labels file {file.name!r} needs the columns sample_id and label (found {columns}); pass "
            "the cleaned.parquet written by labelaudit apply"
        )
    if frame.empty:
        raise ManifestError(f"--labels file {file.name!r} has no rows; it must list the samples to train on")
    ids = text_column(frame, "sample_id")
    labels = text_column(frame, label_column)
    check_sample_ids(ids, run, lambda i: f"--labels file {file.name!r} {where_row(file, i)}")
    index = {name: k for k, name in enumerate(run.class_names)}
    bad = ~labels.isin(index)
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise ManifestError(
            f"--labels file {file.name!r} has the label {labels.iloc[i]!r} {where_row(file, i)}, which "
            f"is not a class of the scan ({some(run.class_names)}); use the scan's classes"
        )
    targets = np.full(len(run.report), -1, dtype=np.int64)
    position = pd.Series(np.arange(len(run.report)), index=run.report["sample_id"].astype(str).to_numpy())
    targets[position[ids.to_numpy()].to_numpy()] = labels.map(index).to_numpy(dtype=np.int64)
    return targets


def text_column(frame: pd.DataFrame, column: str) -> pd.Series:
    """``frame[column]`` as text, missing cells (and an absent column) as ""."""
    if column not in frame.columns:
        return pd.Series([""] * len(frame), index=frame.index, dtype=object)
    values = frame[column]
    if (
        pd.api.types.is_float_dtype(values)
        and values.notna().any()
        and np.all(np.mod(values.dropna(), 1) == 0)
    ):
        values = values.astype("Int64")  # integer ids read from parquet with gaps
    return (
        values.map(
            lambda v: "" if v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA else str(v)
        )
        .astype(object)
        .reset_index(drop=True)
    )


def check_sample_ids(ids: pd.Series, run, where) -> None:
    """ManifestError for the first blank, unknown or repeated sample id; ``where(i)`` locates row ``i``."""
    known = set(run.report["sample_id"].astype(str))
    blank = (ids.str.strip() == "").to_numpy()
    if blank.any():
        raise ManifestError(
            f"{where(int(np.flatnonzero(blank)[0]))} has an empty sample_id; fill it in or drop the row"
        )
    unknown = ~ids.isin(known).to_numpy()
    if unknown.any():
        i = int(np.flatnonzero(unknown)[0])
        raise ManifestError(
            f"{where(i)} has the sample_id {ids.iloc[i]!r}, which is not in the scan {str(run.path)!r} "
            f"({int(unknown.sum())} unknown ids); use the sample ids of that scan's report"
        )
    repeated = ids.duplicated().to_numpy()
    if repeated.any():
        i = int(np.flatnonzero(repeated)[0])
        raise ManifestError(f"{where(i)} repeats the sample_id {ids.iloc[i]!r}; keep one row per sample")
