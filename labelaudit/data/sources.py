"""Turn an image folder or a parquet/CSV manifest into one :class:`SampleTable`.

Every later stage (image cache, training, reports) reads the sample table and never the source
itself. Glossary used throughout the package:

- ``N``: number of samples, ``K``: number of classes.
- ``class_names``: the ``K`` class names in a stable order (numeric order when every label is an
  integer, otherwise sorted as text); ``given_label`` is an index into it.
- ``sample_id``: a string unique per sample: the path relative to the image folder, the manifest's
  id column, or the path as written in the manifest.

Files that cannot be used are never fatal on their own: they are set aside in ``skipped`` with a
reason code (see :data:`SKIP_REASONS`).
"""

from __future__ import annotations

import csv
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from ..errors import ConfigError, DatasetError, ManifestError, SourceNotFoundError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})

#: Reason codes written to ``skipped.csv``, with what each means.
SKIP_REASONS = {
    "missing": "the file does not exist",
    "empty": "the file has zero bytes",
    "unsupported_extension": "not one of the image extensions labelaudit reads",
    "outside_class_folder": "an image directly in the source folder, not in a class subfolder",
    "not_an_image": "the file is not an image format Pillow can identify",
    "truncated": "the image data ends early",
    "corrupt": "the image data cannot be decoded",
    "too_large": "the image has more pixels than the decompression-bomb limit",
    "unreadable": "the file or folder cannot be read (permissions or I/O error)",
    "non_utf8_name": "the file or folder name is not valid UTF-8; rename it",
}

PATH_COLUMN_CANDIDATES = (
    "path",
    "image",
    "image_path",
    "filepath",
    "file_path",
    "file_name",
    "filename",
    "file",
)
LABEL_COLUMN_CANDIDATES = ("label", "given_label", "class", "class_name", "target")
ID_COLUMN_CANDIDATES = ("sample_id", "id")

#: Classes with fewer samples than this are reported as too small to audit reliably.
FEW_SAMPLES_THRESHOLD = 10

SAMPLE_COLUMNS = ["sample_id", "path", "label", "given_label", "file_size", "mtime_ns"]
SKIPPED_COLUMNS = ["sample_id", "path", "reason", "detail"]

#: Progress phase of reading a manifest's columns and turning them into ids, paths and labels,
#: counted in :data:`_READ_STEPS` steps (together about a second per million rows).
READ_MANIFEST_PHASE = "read manifest"
_READ_STEPS = 4
#: Progress phase of the per-file ``stat`` that finds missing, empty and unreadable files.
CHECK_FILES_PHASE = "check files"
#: Files stat-ed between two progress reports (and per UTF-8 check of a batch of names).
_STAT_BATCH = 4096
#: Paths per batch in :func:`parent_folders`.
_FOLDER_BATCH = 1 << 16

ProgressCallback = Callable[..., None]
"""``progress(phase, done, total, extra="")``: called as work advances; the CLI draws bars from it."""


def displayable_path(path: str | os.PathLike) -> str:
    """``path`` as text every writer accepts: bytes of a name that are not valid UTF-8 become
    ``\\xe9``-style escapes (``caf\\xe9.png``). For reports only: the result may not open the file."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def is_utf8(text: str) -> bool:
    """False when ``text`` (e.g. a name from ``os.walk``) holds undecodable bytes as surrogate escapes."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def parent_folders(paths: Sequence[str]) -> set[str]:
    """The distinct ``os.path.dirname`` of ``paths``.

    Computed on Arrow strings, then ``dirname`` on the distinct remainders only: a Python call
    per path costs seconds on a million-row manifest.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    values = np.asarray(paths, dtype=object)
    heads: set[str] = set()
    for start in range(0, len(values), _FOLDER_BATCH):  # batches: the Arrow copy stays small
        text = pa.array(values[start : start + _FOLDER_BATCH], type=pa.string())
        # up to the last "/"
        heads.update(pc.unique(pc.replace_substring_regex(text, r"[^/]*$", "")).to_pylist())
    _release_arrow_memory()
    return {os.path.dirname(head) if head.rstrip("/") else head for head in heads}


def empty_skipped() -> pd.DataFrame:
    """Return an empty skipped-files frame with the standard columns."""
    return pd.DataFrame({c: pd.Series(dtype=object) for c in SKIPPED_COLUMNS})


@dataclass(frozen=True)
class SampleTable:
    """The samples of a dataset and their given labels.

    Attributes
    ----------
    samples : pandas.DataFrame
        One row per usable sample, columns ``sample_id`` (str), ``path`` (str, absolute),
        ``label`` (str, the class name), ``given_label`` (int64 index into ``class_names``),
        ``file_size`` (bytes) and ``mtime_ns`` (used to detect changed files); manifest sources
        also ``manifest_row``, each sample's 0-based data row in the manifest.
    class_names : tuple of str
        The ``K`` classes in a stable order.
    source : pathlib.Path
        The image folder or manifest file, resolved.
    kind : {"folder", "parquet", "csv"}
        What the source is.
    skipped : pandas.DataFrame
        Files set aside, columns ``sample_id, path, reason, detail``.
    duplicate_rows : pandas.DataFrame
        Manifest rows whose path already appeared (``path, first_label, label, conflicting``);
        only the first row of each path is kept as a sample.
    """

    samples: pd.DataFrame
    class_names: tuple[str, ...]
    source: Path
    kind: str
    skipped: pd.DataFrame = field(default_factory=empty_skipped)
    duplicate_rows: pd.DataFrame = field(
        default_factory=lambda: pd.DataFrame(columns=["path", "first_label", "label", "conflicting"])
    )

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def root(self) -> Path:
        """The folder that relative paths refer to: the image folder or the manifest's folder."""
        return self.source if self.kind == "folder" else self.source.parent

    def input_folder_containing(self, path: str | os.PathLike) -> Path | None:
        """The input folder that ``path`` lies in (or is), or None when it is outside the input.

        The input is the image folder; for a manifest, every folder holding one of its images
        (a run directory beside the manifest is fine, one among the images is not).
        """
        target = Path(path).expanduser().resolve()
        if self.kind == "folder":
            folders = {self.source}
        else:
            names = parent_folders(self.samples["path"]) | parent_folders(self.skipped["path"])
            folders = {Path(name) for name in names}
        for candidate in (target, *target.parents):
            if candidate in folders:
                return candidate
        return None

    def check_outside_input(self, path: str | os.PathLike, what: str, option: str) -> None:
        """Raise :class:`ConfigError` when ``path`` is inside the input (labelaudit never writes there)."""
        inside = self.input_folder_containing(path)
        if inside is not None:
            raise ConfigError(
                f"{what} {str(path)!r} is inside the input folder {str(inside)!r}; labelaudit never "
                f"writes into the input: pass {option} elsewhere"
            )

    def class_counts(self) -> pd.Series:
        """Samples per class, indexed by class name in ``class_names`` order (zeros included)."""
        counts = np.bincount(self.samples["given_label"].to_numpy(), minlength=self.num_classes)
        return pd.Series(counts, index=list(self.class_names), name="count")

    def few_sample_classes(self, threshold: int = FEW_SAMPLES_THRESHOLD) -> list[str]:
        """Names of the classes with fewer than ``threshold`` samples (default
        :data:`FEW_SAMPLES_THRESHOLD`), in ``class_names`` order; too small to audit reliably."""
        counts = self.class_counts()
        return [str(name) for name, n in counts.items() if n < threshold]

    def without(self, drop: pd.DataFrame) -> "SampleTable":
        """Return a copy with the samples whose ``sample_id`` is in ``drop`` moved to ``skipped``."""
        if drop.empty:
            return self
        keep = ~self.samples["sample_id"].isin(drop["sample_id"])
        skipped = pd.concat([self.skipped, drop[SKIPPED_COLUMNS]], ignore_index=True)
        return SampleTable(
            samples=self.samples[keep].reset_index(drop=True),
            class_names=self.class_names,
            source=self.source,
            kind=self.kind,
            skipped=skipped,
            duplicate_rows=self.duplicate_rows,
        )


def load_source(
    source: str | os.PathLike,
    *,
    path_column: str | None = None,
    label_column: str | None = None,
    id_column: str | None = None,
    classes: Sequence[str] | None = None,
    require_all_classes: bool = True,
    progress: ProgressCallback | None = None,
) -> SampleTable:
    """Read an image folder or a parquet/CSV manifest into a :class:`SampleTable`.

    Parameters
    ----------
    source : path-like
        A folder with one subfolder per class (nested folders inside a class are allowed), or a
        ``.parquet`` / ``.csv`` manifest with one row per image.
    path_column, label_column, id_column : str, optional
        Manifest column names. By default the first present of
        :data:`PATH_COLUMN_CANDIDATES`, :data:`LABEL_COLUMN_CANDIDATES` and
        :data:`ID_COLUMN_CANDIDATES` (the id column is optional). Ignored for folders.
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
        The manifest is unreadable or lacks a needed column.
    DatasetError
        No images, a single class, an empty or unreadable class folder, an unknown label, or a
        source path that is not valid UTF-8.
    """
    path = _resolve_source(
        source, "pass an image folder (one subfolder per class) or a .parquet/.csv manifest"
    )
    if path.is_dir():
        table = _load_folder(path, classes, progress)
    elif path.suffix.lower() in (".parquet", ".pq", ".csv"):
        table = _load_manifest(path, path_column, label_column, id_column, classes, progress)
    else:
        raise SourceNotFoundError(
            f"source {str(source)!r} is neither a folder nor a .parquet/.csv manifest; "
            "pass an image folder or a manifest file"
        )
    check_usable(table, require_all_classes)
    return table


def check_usable(table: SampleTable, require_all_classes: bool = True) -> None:
    """:func:`check_trainable` when ``require_all_classes``, else only "at least one usable image"."""
    if require_all_classes:
        check_trainable(table)
    elif len(table) == 0:
        _raise_no_images(table)


def _resolve_source(source: str | os.PathLike, fix: str) -> Path:
    """The existing source, resolved; one-line errors for a missing, inaccessible or non-UTF-8 path."""
    shown = displayable_path(source)
    path = Path(source).expanduser()
    try:
        if not path.exists() and re.match(_URL_START, str(source)):  # pathlib made s3://b of s3:/b
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


def _raise_no_images(table: SampleTable) -> None:
    reasons = table.skipped["reason"].value_counts().to_dict() if len(table.skipped) else {}
    detail = f" ({len(table.skipped)} files skipped: {_format_counts(reasons)})" if reasons else ""
    if table.kind != "folder" and reasons and max(reasons, key=reasons.get) == "missing":
        # Most often the paths are relative to another folder than the manifest's.
        first = table.skipped.loc[table.skipped["reason"] == "missing", "path"].iloc[0]
        raise DatasetError(
            f"no usable images found in {str(table.source)!r}{detail}; relative paths are read from "
            f"the manifest's folder {str(table.root)!r} (first missing file: {first!r}): fix the "
            "paths or move the manifest next to the images"
        )
    raise DatasetError(
        f"no usable images found in {str(table.source)!r}{detail}; check the path and that "
        f"images have one of the extensions {', '.join(sorted(IMAGE_EXTENSIONS))}"
    )


def load_unlabeled(
    source: str | os.PathLike, *, path_column: str | None = None, id_column: str | None = None
) -> SampleTable:
    """Read images to predict: every image under a folder (class subfolders or not), or the path
    column of a parquet/CSV manifest (a label column, if any, is ignored).

    The table has no classes (``class_names == ()``, ``label`` empty, ``given_label`` -1).
    """
    path = _resolve_source(source, "pass an image folder or a .parquet/.csv manifest")
    skipped: list[tuple[str, str, str, str]] = []
    if path.is_dir():
        try:
            rows, skipped = _walk_images(path, path, "")
        except OSError as exc:
            raise DatasetError(
                f"folder {str(path)!r} cannot be read: {exc.strerror or exc}; make it readable "
                "(e.g. chmod -R u+rX) or pass another source"
            ) from exc
        kind = "folder"
    elif path.suffix.lower() in (".parquet", ".pq", ".csv"):
        frame, path_col, _, id_col = _read_manifest(path, path_column, None, id_column, with_label=False)
        frame = frame[frame[path_col].notna() & (frame[path_col].astype(str).str.strip() != "")]
        written = _path_cells(frame[path_col])
        _refuse_urls(written, path, path_col)
        absolute, codes = _absolute_paths(written, path.parent)
        ids = _id_cells(frame[id_col]) if id_col is not None else _default_ids(written)
        absolute, ids = absolute.to_numpy(dtype=object), ids.to_numpy(dtype=object)
        keep = _first_occurrences(codes)
        repeated = pd.Series(ids[keep], dtype=object)
        repeated = repeated[repeated.duplicated()]
        if len(repeated):
            raise ManifestError(
                f"manifest {path.name!r} repeats the id {repeated.iloc[0]!r} for different images "
                f"({len(repeated)} repeats); ids must be unique"
            )
        rows = list(zip(ids[keep], absolute[keep], [""] * int(keep.sum())))
        kind = "csv" if path.suffix.lower() == ".csv" else "parquet"
    else:
        raise SourceNotFoundError(f"source {str(source)!r} is neither a folder nor a .parquet/.csv manifest")
    samples, missing = _stat_rows(rows)
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
    samples, missing = _stat_rows(list(zip(sample_ids, paths, labels)))
    if len(missing):
        first = missing.iloc[0]
        raise DatasetError(
            f"{len(missing)} images listed in the run no longer exist or cannot be read (first: "
            f"{first['path']!r}, {first['reason']}); restore them or scan the dataset again"
        )
    return _finish(samples, missing, Path(source), kind, classes, list(labels))


def check_trainable(table: SampleTable) -> None:
    """Raise :class:`DatasetError` unless ``table`` has images in at least two classes."""
    if len(table) == 0:
        _raise_no_images(table)
    counts = table.class_counts()
    present = counts[counts > 0]
    if len(present) < 2:
        only = present.index[0] if len(present) else "none"
        raise DatasetError(
            f"only one class ({only!r}) has usable images in {str(table.source)!r}; an audit needs "
            "at least two classes: add the other classes' images"
        )
    empty = counts[counts == 0]
    if len(empty):
        raise DatasetError(
            f"class {empty.index[0]!r} has no usable images; add images to it or remove it "
            f"(empty classes: {', '.join(map(repr, empty.index))})"
        )


def _format_counts(counts: dict) -> str:
    return ", ".join(f"{v} {k}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1]))


def _is_hidden(name: str) -> bool:
    return name.startswith(".") or name.startswith("__MACOSX")


def _stat_rows(
    rows: list[tuple[str, str, str]], progress: ProgressCallback | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Stat ``(sample_id, abs_path, label)`` rows; return (present rows, skipped rows)."""
    sample_ids = np.array([row[0] for row in rows], dtype=object)
    paths = np.array([row[1] for row in rows], dtype=object)
    labels = np.array([row[2] for row in rows], dtype=object)
    usable, file_size, mtime_ns, skipped = _check_files(sample_ids, paths, progress)
    good = pd.DataFrame(
        {
            "sample_id": pd.Series(sample_ids[usable], dtype=object),
            "path": pd.Series(paths[usable], dtype=object),
            "label": pd.Series(labels[usable], dtype=object),
            "file_size": file_size[usable],
            "mtime_ns": mtime_ns[usable],
        }
    )
    return good, skipped


# Outcomes of the per-file check, as codes in a uint8 array; the reason and detail of each skip.
_USABLE, _MISSING, _UNREADABLE, _DIRECTORY, _NOT_REGULAR, _EMPTY, _NON_UTF8 = range(7)
_CHECK_REASONS = np.array(
    ["", "missing", "unreadable", "not_an_image", "not_an_image", "empty", "non_utf8_name"], dtype=object
)
_CHECK_DETAILS = np.array(
    [
        "",
        "no such file",
        "",
        "is a directory",
        "not a regular file",
        "zero bytes",
        "the path is not valid UTF-8",
    ],
    dtype=object,
)


def _check_files(
    sample_ids: np.ndarray, paths: np.ndarray, progress: ProgressCallback | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, pd.DataFrame]:
    """Stat every file once.

    Parameters
    ----------
    sample_ids, paths : numpy.ndarray
        ``(N,)`` object arrays of str: each sample's id and absolute path.
    progress : callable, optional
        ``progress(CHECK_FILES_PHASE, done, N)`` every :data:`_STAT_BATCH` files.

    Returns
    -------
    usable : numpy.ndarray
        ``(N,)`` bool: the file exists, is a regular file, is not empty and its name is UTF-8.
    file_size, mtime_ns : numpy.ndarray
        ``(N,)`` int64, meaningful where ``usable``.
    skipped : pandas.DataFrame
        The other rows, in input order, with ``SKIPPED_COLUMNS`` (object dtype).
    """
    total = len(paths)
    outcome = np.zeros(total, dtype=np.uint8)
    file_size = np.zeros(total, dtype=np.int64)
    mtime_ns = np.zeros(total, dtype=np.int64)
    errors: dict[int, str] = {}  # row -> the OSError text of an unreadable file
    if progress:
        progress(CHECK_FILES_PHASE, 0, total)
    for start in range(0, total, _STAT_BATCH):
        stop = min(start + _STAT_BATCH, total)
        batch_paths, batch_ids = paths[start:stop], sample_ids[start:stop]
        # One encode per batch: a manifest's names are UTF-8 already, only a folder walk's may not be.
        all_utf8 = is_utf8("".join(batch_paths)) and is_utf8("".join(batch_ids))
        for i in range(start, stop):
            file_path = paths[i]
            if not all_utf8 and not (is_utf8(file_path) and is_utf8(sample_ids[i])):
                outcome[i] = _NON_UTF8  # cannot be stored in a report
                continue
            try:
                st = os.stat(file_path)
            except FileNotFoundError:
                outcome[i] = _MISSING
                continue
            except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the path
                outcome[i] = _UNREADABLE
                errors[i] = str(exc)
                continue
            if not stat.S_ISREG(st.st_mode):
                outcome[i] = _DIRECTORY if stat.S_ISDIR(st.st_mode) else _NOT_REGULAR
            elif st.st_size == 0:
                outcome[i] = _EMPTY
            else:
                file_size[i] = st.st_size
                mtime_ns[i] = st.st_mtime_ns
        if progress:
            progress(CHECK_FILES_PHASE, stop, total)
    usable = outcome == _USABLE
    bad = np.flatnonzero(~usable)
    detail = _CHECK_DETAILS[outcome[bad]]
    if errors:
        detail[np.searchsorted(bad, np.fromiter(errors, dtype=np.int64))] = list(errors.values())
    skipped = pd.DataFrame(
        {
            "sample_id": pd.Series(sample_ids[bad], dtype=object),
            "path": pd.Series(paths[bad], dtype=object),
            "reason": pd.Series(_CHECK_REASONS[outcome[bad]], dtype=object),
            "detail": pd.Series(detail, dtype=object),
        }
    )
    non_utf8 = skipped["reason"] == "non_utf8_name"
    if non_utf8.any():
        for column in ("sample_id", "path"):
            skipped.loc[non_utf8, column] = skipped.loc[non_utf8, column].map(displayable_path)
    return usable, file_size, mtime_ns, skipped


def _order_classes(labels: Sequence[str]) -> tuple[str, ...]:
    unique = sorted(set(labels))
    if all(_is_int_text(x) for x in unique):
        return tuple(sorted(unique, key=int))
    return tuple(unique)


def _is_int_text(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True


def _finish(
    samples: pd.DataFrame,
    skipped: pd.DataFrame,
    source: Path,
    kind: str,
    classes: Sequence[str] | None,
    all_labels: Sequence[str],
    duplicate_rows: pd.DataFrame | None = None,
) -> SampleTable:
    samples = samples.copy()
    if classes is not None:
        class_names = tuple(str(c) for c in classes)
        lookup = match_classes(all_labels, class_names)
        _refuse_unknown_labels(lookup, class_names)
        samples["label"] = samples["label"].map(lookup).astype(object)  # a class's name exactly
    else:
        class_names = _order_classes(all_labels)
    index = {name: i for i, name in enumerate(class_names)}
    samples["given_label"] = samples["label"].map(index).astype("int64")
    samples = samples[SAMPLE_COLUMNS + [c for c in ("manifest_row",) if c in samples]].reset_index(drop=True)
    kwargs = {}
    if duplicate_rows is not None:
        kwargs["duplicate_rows"] = duplicate_rows
    return SampleTable(samples, class_names, source, kind, skipped.reset_index(drop=True), **kwargs)


def _load_folder(
    root: Path, classes: Sequence[str] | None, progress: ProgressCallback | None = None
) -> SampleTable:
    try:
        entries = sorted(os.scandir(root), key=lambda e: e.name)
    except OSError as exc:
        raise DatasetError(
            f"folder {str(root)!r} cannot be read: {exc.strerror or exc}; make it readable "
            "(e.g. chmod -R u+rX) or pass another source"
        ) from exc
    folders = [e.name for e in entries if e.is_dir() and not _is_hidden(e.name)]
    # A folder name that is not UTF-8 cannot be a class name in a report: its files are skipped.
    class_dirs = [name for name in folders if is_utf8(name)]
    rows: list[tuple[str, str, str]] = []
    skipped: list[tuple[str, str, str, str]] = []
    for entry in entries:
        if entry.is_file() and not _is_hidden(entry.name) and _has_image_ext(entry.name):
            if is_utf8(entry.name):
                skipped.append(
                    (entry.name, entry.path, "outside_class_folder", "move it into a class subfolder")
                )
            else:
                skipped.append(
                    (
                        displayable_path(entry.name),
                        displayable_path(entry.path),
                        "non_utf8_name",
                        "the file name is not valid UTF-8",
                    )
                )
    for name in folders:
        if not is_utf8(name):
            skipped += _non_utf8_class_folder(root / name, root)
    if not class_dirs:
        hint = f" ({len(folders)} folder names are not valid UTF-8: rename them)" if folders else ""
        raise DatasetError(
            f"folder {str(root)!r} has no class subfolders{hint}; put each class's images in a "
            "subfolder named after the class, or pass a .parquet/.csv manifest"
        )
    for class_name in class_dirs:
        class_root = root / class_name
        try:
            class_rows, class_skipped = _walk_images(class_root, root, class_name)
        except OSError as exc:
            raise DatasetError(
                f"class folder {str(class_root)!r} cannot be read: {exc.strerror or exc}; make it "
                f"readable (e.g. chmod -R u+rX {str(class_root)!r}) or remove it"
            ) from exc
        rows += class_rows
        skipped += class_skipped
        if not class_rows:
            reasons = pd.Series([r[2] for r in class_skipped], dtype=object).value_counts().to_dict()
            detail = (
                f" it can use ({len(class_skipped)} skipped: {_format_counts(reasons)})" if reasons else ""
            )
            raise DatasetError(
                f"class folder {str(class_root)!r} contains no images{detail}; add images to it or remove it"
            )
    samples, missing = _stat_rows(rows, progress)
    skipped_df = pd.concat(
        [pd.DataFrame(skipped, columns=SKIPPED_COLUMNS).astype(object), missing], ignore_index=True
    )
    return _finish(samples, skipped_df, root, "folder", classes, class_dirs)


def _walk_images(
    folder: Path, root: Path, label: str
) -> tuple[list[tuple[str, str, str]], list[tuple[str, str, str, str]]]:
    """Every non-hidden file under ``folder`` in sorted order: images as ``(sample_id, path,
    label)`` rows, other files as ``unsupported_extension`` skips; ids are relative to ``root``.

    A file whose path below ``root`` is not valid UTF-8 is a ``non_utf8_name`` skip (with a
    displayable path); a sub-folder that cannot be listed is an ``unreadable`` skip whose path is
    the folder. Raises the ``OSError`` when ``folder`` itself cannot be listed.
    """
    rows, skipped = [], []
    errors: list[OSError] = []
    for dirpath, dirnames, filenames in os.walk(folder, onerror=errors.append):
        dirnames[:] = sorted(d for d in dirnames if not _is_hidden(d))
        for name in sorted(filenames):
            if _is_hidden(name):
                continue
            file_path = os.path.join(dirpath, name)
            sample_id = Path(os.path.relpath(file_path, root)).as_posix()
            if not is_utf8(sample_id):
                bad = next(part for part in Path(sample_id).parts if not is_utf8(part))
                skipped.append(
                    (
                        displayable_path(sample_id),
                        displayable_path(file_path),
                        "non_utf8_name",
                        f"the name {displayable_path(bad)} is not valid UTF-8",
                    )
                )
            elif _has_image_ext(name):
                rows.append((sample_id, file_path, label))
            else:
                skipped.append(
                    (sample_id, file_path, "unsupported_extension", Path(name).suffix or "no extension")
                )
    for exc in errors:
        failed = exc.filename if exc.filename is not None else folder
        if os.path.normpath(failed) == os.path.normpath(folder):
            raise exc
        sample_id = displayable_path(Path(os.path.relpath(failed, root)).as_posix())
        skipped.append(
            (
                sample_id,
                displayable_path(failed),
                "unreadable",
                f"folder cannot be listed: {exc.strerror or exc}",
            )
        )
    return rows, skipped


def _non_utf8_class_folder(folder: Path, root: Path) -> list[tuple[str, str, str, str]]:
    """Skips for a class folder whose name is not UTF-8: each of its files, or the folder itself
    when it has none (or cannot be listed), so it never disappears without a trace."""
    try:
        _, skipped = _walk_images(folder, root, "")  # no rows: every path below is non-UTF-8
    except OSError:
        skipped = []
    if not skipped:
        shown = displayable_path(folder.name)
        skipped = [
            (shown, displayable_path(folder), "non_utf8_name", f"the folder name {shown} is not valid UTF-8")
        ]
    return skipped


def _has_image_ext(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def read_table(path: Path, what: str, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """Read a parquet (``.parquet``/``.pq``) or CSV file; CSV cells are text, and only empty
    cells are missing (class names such as ``NA`` or ``None`` stay text). A CSV cell escaped
    against spreadsheet formulas (``'=x``, as labelaudit writes them) reads back as ``=x``.

    ``columns`` (names as returned, e.g. from :func:`table_columns`) reads only those columns:
    a million-row manifest's other columns never reach memory.

    Raises :class:`ManifestError` naming ``what`` (e.g. "manifest") when the file cannot be read.
    """
    kind = "parquet" if path.suffix.lower() in (".parquet", ".pq") else "csv"
    try:
        if kind == "csv":
            if columns is not None:
                return _unescape_frame(_read_csv_columns(path, list(columns)))
            return _unescape_frame(pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""]))
        return pd.read_parquet(path, columns=None if columns is None else list(columns))
    except Exception as exc:  # pyarrow/pandas raise many types for a bad file
        raise _unreadable(path, what, kind, exc) from exc


def table_columns(path: Path, what: str) -> tuple[list[str], bool]:
    """``(column names, has rows)`` of a parquet or CSV file, names as :func:`read_table` returns
    them, without reading the rows (a CSV's first data row at most).

    Raises :class:`ManifestError` naming ``what`` when the file cannot be read.
    """
    from ..reports import unescape_cell

    kind = "parquet" if path.suffix.lower() in (".parquet", ".pq") else "csv"
    try:
        if kind == "csv":
            head = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""], nrows=1)
            return [unescape_cell(str(c)) for c in head.columns], len(head) > 0
        import pyarrow.parquet as pq

        parquet = pq.ParquetFile(path)
        index_columns = {
            c
            for c in (parquet.schema_arrow.pandas_metadata or {}).get("index_columns", [])
            if isinstance(c, str)
        }
        names = [name for name in parquet.schema_arrow.names if name not in index_columns]
        return names, parquet.metadata.num_rows > 0
    except Exception as exc:  # pyarrow/pandas raise many types for a bad file
        raise _unreadable(path, what, kind, exc) from exc


def _unreadable(path: Path, what: str, kind: str, exc: Exception) -> ManifestError:
    first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return ManifestError(
        f"cannot read {what} {str(path)!r} as {kind}: {first_line}; check that it is a valid {kind} file"
    )


def _read_csv_columns(path: Path, columns: list[str]) -> pd.DataFrame:
    """The CSV's ``columns`` (named as after unescaping), as text; the other columns are skipped
    while parsing. pyarrow's multi-threaded reader when the header is plain (unique, non-empty
    names), else (or when it refuses the file) pandas' reader, whose messages name the problem."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    from ..reports import unescape_cell

    with open(path, newline="", encoding="utf-8-sig") as fh:
        header = next((record for record in csv.reader(fh) if record), [])
    shown = [unescape_cell(name) for name in header]
    if len(set(header)) == len(header) and all(header) and len(set(shown)) == len(shown):
        raw = [header[shown.index(name)] for name in columns]
        try:
            table = pacsv.read_csv(
                path,
                parse_options=pacsv.ParseOptions(newlines_in_values=True),
                convert_options=pacsv.ConvertOptions(
                    include_columns=raw,
                    column_types={name: pa.string() for name in raw},
                    strings_can_be_null=True,
                    null_values=[""],
                ),
            )
            frame = table.to_pandas()
            del table
            return frame.astype({name: "str" for name in raw})
        except (pa.ArrowException, ValueError):
            pass  # e.g. a short row, which pandas reads with missing cells
    everything = [unescape_cell(str(c)) for c in pd.read_csv(path, dtype=str, nrows=0).columns]
    positions = [everything.index(name) for name in columns]
    return pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""], usecols=positions)


def _unescape_frame(frame: pd.DataFrame) -> pd.DataFrame:
    from ..reports import unescape_cell

    frame = frame.rename(columns=unescape_cell)
    for column in frame.columns:
        quoted = frame[column].str.startswith("'", na=False)
        if quoted.any():  # only these few cells pay for the Python-level call
            frame.loc[quoted, column] = frame.loc[quoted, column].map(unescape_cell)
    return frame


def _read_manifest(
    path: Path,
    path_column: str | None,
    label_column: str | None,
    id_column: str | None,
    *,
    with_label: bool = True,
) -> tuple[pd.DataFrame, str, str | None, str | None]:
    """``(frame, path column, label column, id column)``: only the columns needed are read."""
    columns, has_rows = table_columns(path, "manifest")
    if not has_rows:
        raise ManifestError(f"manifest {str(path)!r} has no rows; add one row per image")
    path_col = _pick_column(columns, path_column, PATH_COLUMN_CANDIDATES, "path", "--path-column", path)
    label_col = None
    if with_label:
        label_col = _pick_column(
            columns, label_column, LABEL_COLUMN_CANDIDATES, "label", "--label-column", path
        )
    id_col = _pick_column(columns, id_column, ID_COLUMN_CANDIDATES, "id", "--id-column", path, required=False)
    needed = list(dict.fromkeys(c for c in (path_col, label_col, id_col) if c is not None))
    frame = read_table(path, "manifest", columns=needed)
    if frame.empty:
        raise ManifestError(f"manifest {str(path)!r} has no rows; add one row per image")
    return frame, path_col, label_col, id_col


def _pick_column(
    columns: Sequence[str],
    wanted: str | None,
    candidates: Sequence[str],
    role: str,
    option: str,
    path: Path,
    required: bool = True,
) -> str | None:
    columns = [str(c) for c in columns]
    if wanted is not None:
        if wanted in columns:
            return wanted
        raise ManifestError(
            f"manifest {path.name!r} has no {role} column {wanted!r} (columns: {columns}); "
            f"pass the right name with {option}"
        )
    lowered = {c.lower(): c for c in columns}
    for candidate in candidates:
        if candidate in lowered:
            return lowered[candidate]
    if not required:
        return None
    raise ManifestError(
        f"manifest {path.name!r} has no {role} column (looked for {list(candidates)}, found "
        f"{columns}); name it with {option}"
    )


def where_row(path: Path, index: int) -> str:
    """Where row ``index`` (0-based, as read by :func:`read_table`) of a manifest is, in the
    words a person opening the file would use: the line number of a CSV (the header is line 1;
    blank lines and quoted line breaks counted), the 1-based row of a parquet file."""
    if path.suffix.lower() in (".parquet", ".pq"):
        return f"at row {index + 1}, counting from 1"
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            records = -1  # the header is the first non-blank record, as for pandas
            while True:
                start = reader.line_num + 1
                if next(reader) and (records := records + 1) == index + 1:
                    return f"on line {start}"
    except (OSError, UnicodeDecodeError, csv.Error, StopIteration):
        pass
    return f"at data row {index + 1} after the header"


def _labels_as_text(values: pd.Series, *, strip: bool) -> pd.Series:
    """Labels as strings; integral floats (``3.0``, from a column with gaps) become ``"3"``.

    ``strip`` removes surrounding whitespace: for CSV cells, typed by hand; a parquet label is
    kept exactly, like a class folder's name (``"cat "`` stays ``"cat "``).
    """
    if pd.api.types.is_float_dtype(values) and np.all(np.mod(values.to_numpy(), 1) == 0):
        values = values.astype("int64")
    return values.map(lambda v: str(v).strip() if strip else str(v)).astype(object)


def match_classes(labels: Sequence[str], class_names: Sequence[str]) -> dict[str, str | None]:
    """Each distinct label -> the class of ``class_names`` it names, or None.

    A label names the class of the same text, else the one class whose name differs from it only
    by surrounding whitespace (a CSV cell loses the trailing space of a folder named ``"cat "``);
    None when there is no such class or several.
    """
    exact = set(class_names)
    loose: dict[str, list[str]] = {}
    for name in class_names:
        loose.setdefault(name.strip(), []).append(name)
    lookup: dict[str, str | None] = {}
    for label in dict.fromkeys(labels):
        if label in exact:
            lookup[label] = label
        else:
            near = loose.get(str(label).strip(), [])
            lookup[label] = near[0] if len(near) == 1 else None
    return lookup


def _load_manifest(
    path: Path,
    path_column: str | None,
    label_column: str | None,
    id_column: str | None,
    classes: Sequence[str] | None,
    progress: ProgressCallback | None = None,
) -> SampleTable:
    # Column-wise throughout: a million-row manifest costs seconds, and each row is held once as
    # Python strings (its id and absolute path) plus a few numbers.
    def step(done: int) -> None:
        if progress:
            progress(READ_MANIFEST_PHASE, done, _READ_STEPS)

    step(0)
    frame, path_col, label_col, id_col = _read_manifest(path, path_column, label_column, id_column)
    step(1)
    for col, role in ((path_col, "path"), (label_col, "label")):
        blank = frame[col].isna() | (frame[col].astype(str).str.strip() == "")
        if blank.any():
            first = int(np.flatnonzero(blank.to_numpy())[0])
            raise ManifestError(
                f"manifest {path.name!r} has {int(blank.sum())} rows with no {role} in column "
                f"{col!r} (first {where_row(path, first)}); fill them in or drop those rows"
            )
    kind = "csv" if path.suffix.lower() == ".csv" else "parquet"
    label_codes, label_texts = _label_codes(frame[label_col], strip=kind == "csv")
    step(2)
    written = _path_cells(frame[path_col])
    _refuse_urls(written, path, path_col)
    absolute, path_codes = _absolute_paths(written, path.parent)
    ids = _id_cells(frame[id_col]) if id_col is not None else _default_ids(written)
    step(3)
    if id_col is not None:
        dup_ids = ids[ids.duplicated()]
        if len(dup_ids):
            raise ManifestError(
                f"manifest {path.name!r} column {id_col!r} repeats the id {dup_ids.iloc[0]!r} "
                f"({len(dup_ids)} repeats); ids must be unique"
            )
    del frame, written
    # Python strings from here on: hand the Arrow temporaries' memory back first, or the process
    # holds both (pyarrow's allocator keeps freed blocks for reuse).
    _release_arrow_memory()
    absolute, ids = absolute.to_numpy(dtype=object), ids.to_numpy(dtype=object)
    _release_arrow_memory()
    step(4)

    first = _first_occurrences(path_codes)
    duplicate_rows = _duplicate_rows(absolute, path_codes, first, label_codes, label_texts)
    kept = np.flatnonzero(first)
    class_names, class_of_code = _class_index(label_texts, np.unique(label_codes[kept]), classes)

    usable, file_size, mtime_ns, skipped = _check_files(ids[kept], absolute[kept], progress)
    rows = kept[usable]
    given_label = class_of_code[label_codes[rows]]
    samples = pd.DataFrame(
        {
            "sample_id": pd.Series(ids[rows], dtype=object),
            "path": pd.Series(absolute[rows], dtype=object),
            "label": pd.Series(np.array(class_names, dtype=object)[given_label], dtype=object),
            "given_label": given_label,
            "file_size": file_size[usable],
            "mtime_ns": mtime_ns[usable],
            # Each sample's 0-based data row in the manifest (rows that become skips or repeats
            # count too): a user's .npy of embeddings or probabilities in manifest order is
            # aligned by it (labelaudit.data.user_files).
            "manifest_row": rows.astype(np.int64),
        }
    )
    return SampleTable(samples, class_names, path, kind, skipped, duplicate_rows=duplicate_rows)


# A path cell with none of these is its own sample id and joins the manifest's folder by plain
# concatenation; the rest (rare) go through os.path and pathlib one by one.
_NEEDS_NORMALISING = r"//|(?:^|/)\.\.?(?:/|$)|/$|^~"


def _path_cells(cells: pd.Series) -> pd.Series:
    """A manifest's path cells as text without surrounding whitespace (blank cells removed before)."""
    text = (
        cells
        if pd.api.types.is_string_dtype(cells) and not cells.dtype == object
        else cells.map(str).astype("str")
    )
    return text.str.strip()


#: A URL's start (``s3://``, ``https://``; ``s3:/`` once pathlib has collapsed the double slash).
_URL_START = r"^[A-Za-z][A-Za-z0-9+.\-]*:/"


def _refuse_urls(written: pd.Series, path: Path, column: str) -> None:
    """ManifestError when path cells are URLs: joined to the manifest's folder they would be
    reported as missing local files with a mangled name (``.../s3:/bucket/a.png``)."""
    maybe = written.str.contains("://", regex=False).to_numpy(dtype=bool)  # cheap on a million rows
    if not maybe.any():
        return
    is_url = np.zeros(len(written), bool)
    is_url[maybe] = written[maybe].str.contains(_URL_START + "/", regex=True).to_numpy(dtype=bool)
    if is_url.any():
        first = int(np.flatnonzero(is_url)[0])
        raise ManifestError(
            f"manifest {path.name!r} column {column!r} holds {int(is_url.sum())} URLs (first "
            f"{where_row(path, int(written.index[first]))}: {written.iloc[first]!r}); labelaudit reads local "
            "image files only: download the images (e.g. aws s3 sync, gsutil rsync, wget) and list their "
            "local paths"
        )


def _absolute_paths(written: pd.Series, root: Path) -> tuple[pd.Series, np.ndarray]:
    """``(absolute, codes)``: ``os.path.normpath(os.path.join(root, os.path.expanduser(cell)))``
    per cell, and ``(N,)`` int codes equal for equal paths (numbered in order of first appearance)."""
    prefix = os.path.join(str(root), "")
    is_absolute = written.str.startswith("/").to_numpy(dtype=bool)
    if not is_absolute.any():  # the usual manifest: one kind of path, no per-row choice to make
        joined = prefix + written
    elif is_absolute.all():
        joined = written
    else:
        joined = written.where(is_absolute, prefix + written)
    unusual = written.str.contains(_NEEDS_NORMALISING, regex=True).to_numpy(dtype=bool)
    if unusual.any():
        joined = joined.copy()
        joined[unusual] = [
            os.path.normpath(os.path.join(root, os.path.expanduser(p))) for p in written[unusual]
        ]
    codes, _ = pd.factorize(joined)
    return joined, codes


def _default_ids(written: pd.Series) -> pd.Series:
    """Sample ids of a manifest without an id column: each path cell as a POSIX path (``./a.png``
    is ``a.png``)."""
    unusual = written.str.contains(_NEEDS_NORMALISING, regex=True).to_numpy(dtype=bool)
    if not unusual.any():
        return written
    ids = written.copy()
    ids[unusual] = [Path(p).as_posix() for p in written[unusual]]
    return ids


def _id_cells(cells: pd.Series) -> pd.Series:
    """A manifest's id cells as text (a missing cell is the text ``"nan"``)."""
    if pd.api.types.is_string_dtype(cells) and not cells.dtype == object and not cells.isna().any():
        return cells
    return cells.map(str).astype(object)


def _release_arrow_memory() -> None:
    """Return the blocks pyarrow's allocator keeps after its arrays are freed to the system."""
    import pyarrow as pa

    pa.default_memory_pool().release_unused()


def _first_occurrences(codes: np.ndarray) -> np.ndarray:
    """``(N,)`` bool: True where a code appears for the first time. Codes are numbered in order of
    first appearance (:func:`pandas.factorize`), so a first appearance raises the running maximum."""
    running = np.maximum.accumulate(codes) if len(codes) else codes
    first = np.ones(len(codes), dtype=bool)
    first[1:] = running[1:] > running[:-1]
    return first


def _duplicate_rows(
    absolute: np.ndarray,
    path_codes: np.ndarray,
    first: np.ndarray,
    label_codes: np.ndarray,
    label_texts: np.ndarray,
) -> pd.DataFrame:
    """Rows repeating an earlier path: ``path, first_label, label, conflicting``."""
    repeats = np.flatnonzero(~first)
    first_row_of_code = np.flatnonzero(first)  # code c first appears in row first_row_of_code[c]
    first_codes = label_codes[first_row_of_code[path_codes[repeats]]]
    rows = pd.DataFrame(
        {
            "path": absolute[repeats],
            "first_label": label_texts[first_codes],
            "label": label_texts[label_codes[repeats]],
        }
    )
    rows["conflicting"] = first_codes != label_codes[repeats]
    return rows


def _label_codes(values: pd.Series, *, strip: bool) -> tuple[np.ndarray, np.ndarray]:
    """``(codes, texts)``: each label's index into ``texts``, the distinct labels as text
    (``(N,)`` int64 and ``(L,)`` object arrays). Converts the ``L`` distinct values, not the
    ``N`` cells, with :func:`_labels_as_text`'s rules."""
    if pd.api.types.is_float_dtype(values) and np.all(np.mod(values.to_numpy(), 1) == 0):
        values = values.astype("int64")
    codes, distinct = pd.factorize(values)
    texts = _labels_as_text(pd.Series(distinct), strip=strip)
    # Values that differ only by whitespace (CSV) or type (1 and "1") become one label.
    text_codes, unique_texts = pd.factorize(texts)
    return text_codes[codes].astype(np.int64), np.asarray(unique_texts, dtype=object)


def _class_index(
    label_texts: np.ndarray, used: np.ndarray, classes: Sequence[str] | None
) -> tuple[tuple[str, ...], np.ndarray]:
    """``(class_names, class_of_code)``: the classes (:func:`_order_classes` of the labels at
    ``used``, or ``classes``, which each used label must name) and each label's class index
    (``(L,)`` int64, -1 for a label not in ``used``)."""
    used_texts = [str(t) for t in label_texts[used]]
    if classes is not None:
        class_names = tuple(str(c) for c in classes)
        lookup = match_classes(used_texts, class_names)
        _refuse_unknown_labels(lookup, class_names)
    else:
        class_names = _order_classes(used_texts)
        lookup = {text: text for text in used_texts}
    index = {name: i for i, name in enumerate(class_names)}
    class_of_code = np.full(len(label_texts), -1, dtype=np.int64)
    class_of_code[used] = [index[lookup[text]] for text in used_texts]
    return class_names, class_of_code


def _refuse_unknown_labels(lookup: dict, class_names: tuple[str, ...]) -> None:
    """DatasetError naming the first label that ``lookup`` (from :func:`match_classes`) could not place."""
    unknown = sorted(label for label, name in lookup.items() if name is None)
    if unknown:
        raise DatasetError(
            f"label {unknown[0]!r} is not one of the given classes {list(class_names)!r} "
            f"({len(unknown)} unknown labels); fix the labels or add the class"
        )
