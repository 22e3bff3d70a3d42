"""Read a parquet or CSV manifest: one row per image, with its path, its label and maybe an id.

The columns are found by name (:data:`PATH_COLUMN_CANDIDATES`, ...) or given; relative paths are
read from the manifest's folder. Rows repeating an earlier path are reported (``duplicate_rows``)
and only the first is a sample. Work is column-wise throughout (a Python call per cell only for
the rare cells that need it), and each row is held once as Python strings (its id and absolute
path) plus a few numbers; docs/benchmarks.md ("Scale") measures what that costs.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from ..errors import ManifestError
from .classes import class_index, labels_as_text
from .file_checks import check_files
from .sample_table import ProgressCallback, SampleTable, release_arrow_memory
from .table_files import read_table, table_columns, where_row

#: The suffixes of a manifest (the rest of a source that is not a folder is refused).
MANIFEST_SUFFIXES = (".parquet", ".pq", ".csv")

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


#: Progress phase of reading a manifest's columns and turning them into ids, paths and labels,
#: counted in :data:`_READ_STEPS` steps.
READ_MANIFEST_PHASE = "read manifest"
_READ_STEPS = 4


#: A URL's start (``s3://``, ``https://``; ``s3:/`` once pathlib has collapsed the double slash).
URL_START = r"^[A-Za-z][A-Za-z0-9+.\-]*:/"


# A path cell with none of these is its own sample id and joins the manifest's folder by plain
# concatenation; the rest (rare) go through os.path and pathlib one by one.
_NEEDS_NORMALISING = r"//|(?:^|/)\.\.?(?:/|$)|/$|^~"


def load_manifest(
    path: Path,
    path_column: str | None,
    label_column: str | None,
    id_column: str | None,
    classes: Sequence[str] | None,
    progress: ProgressCallback | None = None,
) -> SampleTable:
    """Read the manifest ``path`` (resolved) into a :class:`SampleTable` with a ``manifest_row``
    column; the arguments are :func:`labelaudit.data.sources.load_source`'s.

    Raises :class:`ManifestError` for an unreadable manifest, a missing column, blank path or label
    cells, URLs or repeated ids; :class:`DatasetError` for a label that none of ``classes`` names.
    """

    def step(done: int) -> None:
        if progress:
            progress(READ_MANIFEST_PHASE, done, _READ_STEPS)

    step(0)
    frame, path_col, label_col, id_col = _read_manifest(path, path_column, label_column, id_column)
    step(1)
    _refuse_blank_cells(frame, path, {"path": path_col, "label": label_col})
    kind = manifest_kind(path)
    label_codes, label_texts = _label_codes(frame[label_col], strip=kind == "csv")
    step(2)
    written = _path_cells(frame[path_col])
    _refuse_urls(written, path, path_col)
    absolute, path_codes = _absolute_paths(written, path.parent)
    ids = _id_cells(frame[id_col]) if id_col is not None else _default_ids(written)
    step(3)
    if id_col is not None:
        _refuse_repeated_ids(ids, path, id_col)
    del frame, written
    # Python strings from here on: hand the Arrow temporaries' memory back first, or the process
    # holds both (pyarrow's allocator keeps freed blocks for reuse).
    release_arrow_memory()
    absolute, ids = absolute.to_numpy(dtype=object), ids.to_numpy(dtype=object)
    release_arrow_memory()
    step(4)

    first = _first_occurrences(path_codes)
    duplicate_rows = _duplicate_rows(absolute, path_codes, first, label_codes, label_texts)
    kept = np.flatnonzero(first)
    class_names, class_of_code = class_index(label_texts, np.unique(label_codes[kept]), classes)

    usable, file_size, mtime_ns, skipped = check_files(ids[kept], absolute[kept], progress)
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


def unlabeled_manifest_rows(
    path: Path, path_column: str | None, id_column: str | None
) -> list[tuple[str, str, str]]:
    """``(sample_id, absolute path, "")`` of each distinct path of the manifest ``path`` (a label
    column, if any, is ignored; rows with a blank path are dropped), in manifest order.

    Raises :class:`ManifestError` for an unreadable manifest, a missing column, URLs, or an id
    given to two different images.
    """
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
    return list(zip(ids[keep], absolute[keep], [""] * int(keep.sum())))


def manifest_kind(path: Path) -> str:
    """The :attr:`SampleTable.kind` of the manifest ``path``: "csv" or "parquet"."""
    return "csv" if path.suffix.lower() == ".csv" else "parquet"


def _refuse_blank_cells(frame: pd.DataFrame, path: Path, columns: dict[str, str]) -> None:
    """ManifestError naming the first row with a blank cell in ``columns`` (role -> column name)."""
    for role, col in columns.items():
        blank = frame[col].isna() | (frame[col].astype(str).str.strip() == "")
        if blank.any():
            first = int(np.flatnonzero(blank.to_numpy())[0])
            raise ManifestError(
                f"manifest {path.name!r} has {int(blank.sum())} rows with no {role} in column "
                f"{col!r} (first {where_row(path, first)}); fill them in or drop those rows"
            )


def _refuse_repeated_ids(ids: pd.Series, path: Path, id_col: str) -> None:
    """ManifestError when the id column ``id_col`` repeats an id."""
    dup_ids = ids[ids.duplicated()]
    if len(dup_ids):
        raise ManifestError(
            f"manifest {path.name!r} column {id_col!r} repeats the id {dup_ids.iloc[0]!r} "
            f"({len(dup_ids)} repeats); ids must be unique"
        )


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


def _path_cells(cells: pd.Series) -> pd.Series:
    """A manifest's path cells as text without surrounding whitespace (blank cells removed before)."""
    text = (
        cells
        if pd.api.types.is_string_dtype(cells) and not cells.dtype == object
        else cells.map(str).astype("str")
    )
    return text.str.strip()


def _refuse_urls(written: pd.Series, path: Path, column: str) -> None:
    """ManifestError when path cells are URLs: joined to the manifest's folder they would be
    reported as missing local files with a mangled name (``.../s3:/bucket/a.png``)."""
    maybe = written.str.contains("://", regex=False).to_numpy(dtype=bool)  # cheap on a million rows
    if not maybe.any():
        return
    is_url = np.zeros(len(written), bool)
    is_url[maybe] = written[maybe].str.contains(URL_START + "/", regex=True).to_numpy(dtype=bool)
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
    ``N`` cells, with :func:`labels_as_text`'s rules."""
    if pd.api.types.is_float_dtype(values) and np.all(np.mod(values.to_numpy(), 1) == 0):
        values = values.astype("int64")
    codes, distinct = pd.factorize(values)
    texts = labels_as_text(pd.Series(distinct), strip=strip)
    # Values that differ only by whitespace (CSV) or type (1 and "1") become one label.
    text_codes, unique_texts = pd.factorize(texts)
    return text_codes[codes].astype(np.int64), np.asarray(unique_texts, dtype=object)
