"""Turn an image folder or a parquet/CSV manifest into one :class:`SampleTable`.

Every later stage (image cache, training, reports) reads the sample table and never the source
itself. :func:`load_source` picks the reader by the source's shape; the pieces live by concept:

- :mod:`~labelaudit.data.sample_table`: :class:`SampleTable`, its columns, skip reasons and the
  glossary (``N``, ``K``, ``class_names``, ``sample_id``);
- :mod:`~labelaudit.data.folders` and :mod:`~labelaudit.data.manifests`: the two readers;
- :mod:`~labelaudit.data.file_checks`: one ``stat`` per listed file;
- :mod:`~labelaudit.data.classes`: which class a label names, class order, "enough classes";
- :mod:`~labelaudit.data.table_files`: reading any parquet/CSV table.

Their public names are importable from here too.

Files that cannot be used are never fatal on their own: they are set aside in ``skipped`` with a
reason code (see :data:`SKIP_REASONS`).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from ..errors import ConfigError, DatasetError, SourceNotFoundError
from .classes import (
    check_trainable,
    check_usable,
    labels_as_text,
    match_classes,
    table_with_classes,
)
from .file_checks import CHECK_FILES_PHASE, stat_rows
from .folders import load_folder, unlabeled_folder_rows
from .huggingface import HF_KIND, is_dataset_object, is_hf_file, is_hf_folder, load_huggingface
from .manifests import (
    ID_COLUMN_CANDIDATES,
    LABEL_COLUMN_CANDIDATES,
    MANIFEST_SUFFIXES,
    PATH_COLUMN_CANDIDATES,
    READ_MANIFEST_PHASE,
    URL_START,
    load_manifest,
    manifest_kind,
    unlabeled_manifest_rows,
)
from .sample_table import (
    FEW_SAMPLES_THRESHOLD,
    IMAGE_EXTENSIONS,
    SAMPLE_COLUMNS,
    SKIP_REASONS,
    SKIPPED_COLUMNS,
    ProgressCallback,
    SampleTable,
    displayable_path,
    empty_skipped,
    is_utf8,
    parent_folders,
)
from .table_files import read_table, table_columns, where_row

__all__ = [
    "CHECK_FILES_PHASE",
    "FEW_SAMPLES_THRESHOLD",
    "HF_KIND",
    "ID_COLUMN_CANDIDATES",
    "IMAGE_EXTENSIONS",
    "LABEL_COLUMN_CANDIDATES",
    "PATH_COLUMN_CANDIDATES",
    "READ_MANIFEST_PHASE",
    "SAMPLE_COLUMNS",
    "SKIPPED_COLUMNS",
    "SKIP_REASONS",
    "ProgressCallback",
    "SampleTable",
    "check_trainable",
    "check_usable",
    "displayable_path",
    "empty_skipped",
    "is_utf8",
    "labels_as_text",
    "load_source",
    "load_unlabeled",
    "match_classes",
    "parent_folders",
    "read_table",
    "table_columns",
    "table_from_rows",
    "where_row",
]


def load_source(
    source,
    *,
    path_column: str | None = None,
    label_column: str | None = None,
    id_column: str | None = None,
    classes: Sequence[str] | None = None,
    require_all_classes: bool = True,
    progress: ProgressCallback | None = None,
    label_names: Sequence[str] | str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> SampleTable:
    """Read an image folder, a parquet/CSV manifest or a Hugging Face dataset into a
    :class:`SampleTable`.

    Parameters
    ----------
    source : path-like or datasets.Dataset
        A folder with one subfolder per class (nested folders inside a class are allowed), a
        ``.parquet`` / ``.csv`` manifest with one row per image, or a Hugging Face dataset: a
        parquet or ``.arrow`` file with images embedded as bytes (``Dataset.to_parquet``, the
        Hub's parquet), a ``Dataset.save_to_disk`` folder, or a :class:`datasets.Dataset`
        (see :mod:`labelaudit.data.huggingface`).
    path_column, label_column, id_column : str, optional
        Manifest column names. By default the first present of
        :data:`PATH_COLUMN_CANDIDATES`, :data:`LABEL_COLUMN_CANDIDATES` and
        :data:`ID_COLUMN_CANDIDATES` (the id column is optional). Ignored for folders. For a
        Hugging Face dataset ``path_column`` is the image column (default: its ``Image``
        feature), ``label_column`` defaults to its ``ClassLabel`` feature, and without
        ``id_column`` the ids are the images' unique ``path`` texts, else ``row-000123``.
    label_names : sequence of str or path-like, optional
        Hugging Face datasets only: the class name of each integer label (label ``i`` is
        ``label_names[i]``), or a text file with one name per line; needed when the label
        column has no ``ClassLabel`` names, and used instead of them when given.
    cache_dir : path-like, optional
        Hugging Face datasets only: the image cache root (as for :func:`labelaudit.load_images`)
        that their embedded images are written to, once per distinct image.
    classes : sequence of str, optional
        The allowed class names, in the order to use. A label names the class of the same text,
        or the one class it differs from only by surrounding whitespace (:func:`match_classes`);
        any other label is an error.
    require_all_classes : bool, default=True
        Training needs images in every class (and at least two); an evaluation set may cover
        only some of ``classes``: pass False to require just one usable image.
    progress : callable, optional
        ``progress(phase, done, total)``: for a manifest, phase :data:`READ_MANIFEST_PHASE` in
        steps, then (folders too) :data:`CHECK_FILES_PHASE` per file, ``total`` = the files to
        check (a manifest's distinct paths).

    Returns
    -------
    SampleTable

    Raises
    ------
    SourceNotFoundError
        The source does not exist or cannot be accessed.
    ManifestError
        The manifest is unreadable or lacks a needed column; a Hugging Face dataset's image or
        label column is missing or of the wrong type, or its integer labels have no names.
    DatasetError
        No images, a single class, an empty or unreadable class folder, an unknown label, or a
        source path that is not valid UTF-8.
    """
    hf_options = dict(
        image_column=path_column,
        label_column=label_column,
        id_column=id_column,
        label_names=label_names,
        classes=classes,
        cache_dir=cache_dir,
        progress=progress,
    )
    if is_dataset_object(source):
        return _checked(load_huggingface(source, None, **hf_options), require_all_classes)
    path = _resolve_source(
        source,
        "pass an image folder (one subfolder per class), a .parquet/.csv manifest or a Hugging Face "
        "dataset (.parquet, .arrow or a save_to_disk folder)",
    )
    if _is_huggingface_path(path):
        return _checked(load_huggingface(None, path, **hf_options), require_all_classes)
    if label_names is not None:
        raise ConfigError(
            f"--label-names names the integer labels of a Hugging Face dataset, and {str(source)!r} is "
            "not one; drop --label-names"
        )
    if path.is_dir():
        table = load_folder(path, classes, progress)
    elif path.suffix.lower() in MANIFEST_SUFFIXES:
        table = load_manifest(path, path_column, label_column, id_column, classes, progress)
    else:
        raise SourceNotFoundError(
            f"source {str(source)!r} is neither a folder nor a .parquet/.csv manifest; pass an image "
            "folder, a manifest file or a Hugging Face dataset (.parquet, .arrow, a save_to_disk folder)"
        )
    check_usable(table, require_all_classes)
    return table


def _is_huggingface_path(path: Path) -> bool:
    """A Hugging Face dataset on disk: a parquet/arrow file of image structs or a save_to_disk folder."""
    return (path.is_dir() and is_hf_folder(path)) or is_hf_file(path)


def _checked(table: SampleTable, require_all_classes: bool) -> SampleTable:
    """``table`` after :func:`~labelaudit.data.classes.check_usable`."""
    check_usable(table, require_all_classes)
    return table


def load_unlabeled(
    source,
    *,
    path_column: str | None = None,
    id_column: str | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> SampleTable:
    """Read images to predict: every image under a folder (class subfolders or not), the path
    column of a parquet/CSV manifest, or the images of a Hugging Face dataset (as in
    :func:`load_source`; a label column, if any, is ignored).

    The table has no classes (``class_names == ()``, ``label`` empty, ``given_label`` -1).
    """
    hf_options = dict(
        image_column=path_column,
        label_column=None,
        id_column=id_column,
        label_names=None,
        classes=None,
        cache_dir=cache_dir,
        labelled=False,
    )
    if is_dataset_object(source):
        return _checked(load_huggingface(source, None, **hf_options), require_all_classes=False)
    path = _resolve_source(source, "pass an image folder, a .parquet/.csv manifest or a Hugging Face dataset")
    if _is_huggingface_path(path):
        return _checked(load_huggingface(None, path, **hf_options), require_all_classes=False)
    skipped: list[tuple[str, str, str, str]] = []
    if path.is_dir():
        rows, skipped = unlabeled_folder_rows(path)
        kind = "folder"
    elif path.suffix.lower() in MANIFEST_SUFFIXES:
        rows = unlabeled_manifest_rows(path, path_column, id_column)
        kind = manifest_kind(path)
    else:
        raise SourceNotFoundError(f"source {str(source)!r} is neither a folder nor a .parquet/.csv manifest")
    samples, missing = stat_rows(rows)
    samples["given_label"] = np.int64(-1)
    skipped_df = pd.concat(
        [pd.DataFrame(skipped, columns=SKIPPED_COLUMNS).astype(object), missing], ignore_index=True
    )
    table = SampleTable(samples[SAMPLE_COLUMNS].reset_index(drop=True), (), path, kind, skipped_df)
    check_usable(table, require_all_classes=False)
    return table


def table_from_rows(
    sample_ids: Sequence[str],
    paths: Sequence[str],
    labels: Sequence[str],
    classes: Sequence[str],
    source: Path,
    kind: str,
) -> SampleTable:
    """A :class:`SampleTable` of known samples (e.g. the rows of a scan's report), in this order.

    Raises :class:`DatasetError` when a file no longer exists: the caller's rows must stay aligned.
    """
    samples, missing = stat_rows(list(zip(sample_ids, paths, labels)))
    if len(missing):
        first = missing.iloc[0]
        raise DatasetError(
            f"{len(missing)} images listed in the run no longer exist or cannot be read (first: "
            f"{first['path']!r}, {first['reason']}); restore them or scan the dataset again"
        )
    return table_with_classes(samples, missing, Path(source), kind, classes, list(labels))


def _resolve_source(source: str | os.PathLike, fix: str) -> Path:
    """The existing source, resolved; one-line errors for a missing, inaccessible or non-UTF-8 path."""
    shown = displayable_path(source)
    path = Path(source).expanduser()
    try:
        if not path.exists() and re.match(URL_START, str(source)):  # pathlib made s3://b of s3:/b
            url = re.sub(r"^([^:/]+:)/(?!/)", r"\1//", shown)
            raise SourceNotFoundError(
                f"source {url!r} is a URL, and labelaudit reads local folders and manifests only; download "
                "the data first (e.g. aws s3 sync, gsutil rsync, wget) and pass the local copy"
            )
        if not path.exists():
            raise SourceNotFoundError(f"source {shown!r} does not exist; {fix}")
        path = path.resolve()
        path.is_dir()
    except OSError as exc:  # e.g. a parent folder without search permission
        raise SourceNotFoundError(
            f"source {shown!r} cannot be accessed: {exc.strerror or exc}; check the permissions "
            f"of it and its parent folders, or {fix}"
        ) from exc
    if not is_utf8(str(path)):
        raise DatasetError(
            f"source path '{displayable_path(path)}' is not valid UTF-8 text, and labelaudit stores "
            "paths as UTF-8 in its reports; rename the folder(s) with the \\x.. bytes (e.g. with "
            "convmv) or move the data to a UTF-8 path"
        )
    return path
