"""Read user-supplied ("bring your own") embeddings and predicted probabilities for a sample table.

``labelaudit scan SOURCE --embeddings FILE`` trains a small head on the user's own per-sample
feature vectors; ``labelaudit scan SOURCE --probs FILE`` flags labels from out-of-sample predicted
probabilities without training (the ``pred_probs`` that ``cleanlab.filter.find_label_issues``
takes). The readers here turn such a file into an array whose row ``i`` belongs to
``table.samples`` row ``i``; nothing else in labelaudit reads these files.

Formats
-------
``.npy`` (``numpy.save``; read memory-mapped, never unpickled)
    A 2-D array with one row per sample, in the source's order:

    - a parquet/CSV manifest: one row per data row of the manifest, in the manifest's row order,
      counting every data row (also those whose image is later skipped, and repeated paths; only
      the rows of usable images are read). An array with exactly ``len(table)`` rows, one per
      usable image in ``table.samples`` order, is accepted too.
    - an image folder: ``table.samples`` order, which is ``load_source(folder).samples`` order:
      class folders sorted by name (Python string order, so ``"B" < "a"``; hidden folders
      skipped), and within each class folder a depth-first walk in which a folder's own image
      files (sorted by name) come before its subfolders (sorted by name). Files that are not
      usable images (other extensions, empty files, hidden files) have no row. Simplest way to
      produce it: iterate ``labelaudit.load_source(folder).samples["path"]``.

``.parquet`` / ``.pq`` / ``.csv``
    One row per sample, in any order, keyed by a ``sample_id`` column (the ids labelaudit uses:
    the image's path relative to the image folder, the manifest's id column, or the manifest's
    path as written), or, when there is no ``sample_id`` column, by a ``path`` column (a relative
    path is resolved against the folder holding the file, as a manifest's paths are). Columns
    named ``sample_id``, ``path`` and unnamed columns (a saved pandas index) are never values.

    - embeddings: a list column named ``embedding``, or the only other column if it holds lists
      (parquet), or else every other column, each one numeric feature, in file order.
    - probabilities: one numeric column per class, named ``p_<class>`` (as in labelaudit's own
      ``report.parquet``) or exactly ``<class>``; all ``p_`` names are used when every class has
      one, else all exact names; any column order; other columns are ignored, except a ``p_`` column
      naming a class the dataset lacks (an error: the rows would not sum to 1 over its classes).

Rows of the file for samples that are not in the table (skipped images, repeated manifest
paths, ids of other datasets) are ignored; how many is logged as a warning on the
``labelaudit.data.user_files`` logger. A sample of the table without a row in the file is an error.

Probabilities are ``P(label = k | x)``, shape ``(N, K)``, columns in ``table.class_names`` order
(the label indices ``0..K-1`` of ``given_label``, as cleanlab orders them). Every row must be
non-negative and sum to 1 within :data:`SUM_TOLERANCE`; such rows are then rescaled to sum to 1
exactly. Rows further off (logits, log-probabilities) are an error, never renormalised.

Every problem with a file is a one-line :class:`~labelaudit.errors.ConfigError` naming the file,
what is wrong and the fix.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import ConfigError, some
from .keyed_files import (
    CHUNK_ROWS,
    EMBEDDING_COLUMN,
    KEY_COLUMNS,
    PROB_PREFIX,
    KeyedFile,
    first_line,
    warn_ignored,
)
from .sample_table import SampleTable, displayable_path

__all__ = [
    "EMBEDDING_COLUMN",
    "KEY_COLUMNS",
    "MANIFEST_ROW_COLUMN",
    "PROB_PREFIX",
    "SUM_TOLERANCE",
    "read_embeddings",
    "read_probs",
]

#: Largest accepted ``|row sum - 1|`` of a probability row.
SUM_TOLERANCE = 1e-3
#: Samples-table column with each sample's 0-based manifest data row, when the source records it.
MANIFEST_ROW_COLUMN = "manifest_row"

_NPY = (".npy",)
_PARQUET = (".parquet", ".pq")
_CSV = (".csv",)


def read_embeddings(path: str | os.PathLike, table: SampleTable) -> np.ndarray:
    """Read per-sample feature vectors from ``path``, aligned with ``table.samples``.

    Parameters
    ----------
    path : path-like
        A ``.npy``, ``.parquet``/``.pq`` or ``.csv`` file (see the module docstring for the
        layouts and, for ``.npy``, the row order).
    table : SampleTable
        The samples to align to.

    Returns
    -------
    numpy.ndarray
        Shape ``(N, D)``, float32, ``N = len(table)``, ``D >= 1``; row ``i`` is the vector of
        ``table.samples`` row ``i``.

    Raises
    ------
    ConfigError
        The file is missing or unreadable, not ``D >= 1`` numbers per sample, lacks a row for a
        sample, repeats a sample, or holds NaN/infinite values.
    """
    file, fmt = _check_file(path, "embeddings file")
    what = f"embeddings file {_shown(file)}"
    if fmt == "npy":
        with _npy(file, what) as array:
            if array.ndim != 2 or array.shape[1] < 1:
                raise ConfigError(
                    f"{what} holds an array of shape {array.shape}, expected 2-D (samples, features) "
                    "with at least one feature; save one row per sample, e.g. numpy.save(file, "
                    "features.reshape(len(features), -1))"
                )
            rows, name_row = _npy_rows(array.shape[0], table, what)
            out = _gather(array, rows, np.float32)
    else:
        keyed = KeyedFile(file, fmt, what)
        rows = keyed.align(table)
        name_row = keyed.name_row
        out = keyed.embeddings(rows)
    _check_finite(out, rows, table, name_row, what)
    return out


def read_probs(path: str | os.PathLike, table: SampleTable) -> np.ndarray:
    """Read out-of-sample predicted probabilities from ``path``, aligned with ``table.samples``.

    The same matrix cleanlab calls ``pred_probs``: ``P(label = k | x)`` for each sample, from a
    model that did not train on that sample (cross-validation).

    Parameters
    ----------
    path : path-like
        A ``.npy`` (columns in ``table.class_names`` order), ``.parquet``/``.pq`` or ``.csv``
        file (one column ``p_<class>`` or ``<class>`` per class); see the module docstring.
    table : SampleTable
        The samples to align to.

    Returns
    -------
    numpy.ndarray
        Shape ``(N, K)``, float64, ``K = table.num_classes``; row ``i`` belongs to
        ``table.samples`` row ``i``, column ``k`` to ``table.class_names[k]``. Rows sum to 1
        exactly (rows within :data:`SUM_TOLERANCE` of 1 are rescaled).

    Raises
    ------
    ConfigError
        The file is missing or unreadable, its columns do not match the classes, it lacks a row
        for a sample or repeats one, or a row is not a probability distribution (NaN/infinite or
        negative values, a sum off 1 by more than :data:`SUM_TOLERANCE`).
    """
    file, fmt = _check_file(path, "probabilities file")
    what = f"probabilities file {_shown(file)}"
    k = table.num_classes
    if fmt == "npy":
        with _npy(file, what) as array:
            if array.ndim != 2 or array.shape[1] != k:
                got = f"{array.shape[1]} columns" if array.ndim == 2 else f"shape {array.shape}"
                raise ConfigError(
                    f"{what} has {got}, expected a 2-D array with one column per class ({k}: "
                    f"{some(table.class_names)}); save pred_probs of shape (samples, {k}) "
                    "with columns in that order"
                )
            rows, name_row = _npy_rows(array.shape[0], table, what)
            out = _gather(array, rows, np.float64)
    else:
        keyed = KeyedFile(file, fmt, what)
        columns = keyed.prob_columns(table.class_names)
        rows = keyed.align(table)
        name_row = keyed.name_row
        out = np.empty((len(rows), k), np.float64)
        for j, column in enumerate(columns):
            out[:, j] = keyed.numbers(column)[rows]
    _check_finite(out, rows, table, name_row, what)
    return _check_distributions(out, rows, table, name_row, what)


# --- files ---------------------------------------------------------------------------------------


def _shown(file: Path) -> str:
    return repr(displayable_path(file))


def _check_file(path: str | os.PathLike, what: str) -> tuple[Path, str]:
    """The existing file, resolved, and its format: "npy", "parquet" or "csv"."""
    shown = repr(displayable_path(path))
    fix = "pass a .npy, .parquet or .csv file"
    file = Path(path).expanduser()
    try:
        if not file.exists():
            raise ConfigError(f"{what} {shown} does not exist; {fix}")
        if file.is_dir():
            raise ConfigError(f"{what} {shown} is a folder, not a file; {fix}")
        file = file.resolve()
    except OSError as exc:
        raise ConfigError(
            f"{what} {shown} cannot be accessed: {exc.strerror or exc}; check its permissions"
        ) from exc
    suffix = file.suffix.lower()
    for fmt, suffixes in (("npy", _NPY), ("parquet", _PARQUET), ("csv", _CSV)):
        if suffix in suffixes:
            return file, fmt
    never = " (labelaudit never unpickles files)" if suffix in (".pt", ".pth", ".pkl", ".pickle") else ""
    raise ConfigError(
        f"{what} {shown} is not a .npy, .parquet or .csv file{never}; save the array with "
        "numpy.save(...) or a table with DataFrame.to_parquet(...)"
    )


class _npy:
    """Context manager: the ``.npy`` array at ``file`` memory-mapped read-only (closed on exit)."""

    def __init__(self, file: Path, what: str):
        self.file, self.what = file, what

    def __enter__(self) -> np.ndarray:
        try:
            self.array = np.lib.format.open_memmap(self.file, mode="r")  # never unpickles
        except Exception as exc:  # bad magic, object dtype, truncated header, I/O errors
            raise ConfigError(
                f"{self.what} cannot be read as .npy: {first_line(exc)}; save a numeric array with "
                "numpy.save(...) (object arrays and pickles are not read)"
            ) from exc
        if self.array.dtype.kind not in "fiu":
            raise ConfigError(
                f"{self.what} holds {self.array.dtype} values, expected numbers; save a float array "
                "with numpy.save(...)"
            )
        return self.array

    def __exit__(self, *exc_info) -> None:
        mm = getattr(self.array, "_mmap", None)
        del self.array
        if mm is not None:
            try:
                mm.close()
            except BufferError:  # a view is still alive; the garbage collector closes it
                pass


# --- alignment -----------------------------------------------------------------------------------


def _npy_rows(n_file: int, table: SampleTable, what: str) -> tuple[np.ndarray, Callable[[int], str]]:
    """Row of a ``.npy`` for each sample of ``table``, and how to name a row in messages.

    Manifest order when the table records each sample's manifest row (column
    :data:`MANIFEST_ROW_COLUMN`) and the array has one row per manifest data row; else the
    table's own order when the array has ``len(table)`` rows.
    """
    n = len(table)
    name_row = lambda r: f"at row {r}, counting from 0"  # noqa: E731
    manifest = table.kind != "folder"
    manifest_rows = len(table.samples) + len(table.skipped) + len(table.duplicate_rows) if manifest else n
    if manifest and MANIFEST_ROW_COLUMN in table.samples.columns and n_file == manifest_rows:
        rows = table.samples[MANIFEST_ROW_COLUMN].to_numpy(dtype=np.int64)
        if len(rows) and (rows.min() < 0 or rows.max() >= n_file):  # a table built some other way
            raise ConfigError(
                f"{what} has {n_file} rows, but the dataset refers to manifest row {int(rows.max())}; "
                "key the rows by sample_id in a parquet or CSV file instead"
            )
        warn_ignored(what, n_file - n, f"{n_file - n} for manifest rows that are not usable images")
        return rows, name_row
    if n_file == n:
        return np.arange(n, dtype=np.int64), name_row
    fix = "or key the rows by sample_id in a parquet or CSV file"
    if not manifest:
        raise ConfigError(
            f"{what} has {n_file} rows but the image folder {str(table.source)!r} has {n} usable "
            f"images; save one row per image in labelaudit's folder order (that of "
            f"labelaudit.load_source(folder).samples) {fix}"
        )
    if MANIFEST_ROW_COLUMN not in table.samples.columns and n_file == manifest_rows:
        raise ConfigError(
            f"{what} has {n_file} rows, one per row of manifest {table.source.name!r}, but only {n} "
            f"of those rows are usable images and labelaudit cannot yet match the others; drop the "
            f"rows of the skipped and repeated images from the array ({n} rows, manifest order) {fix}"
        )
    raise ConfigError(
        f"{what} has {n_file} rows, but manifest {table.source.name!r} has {manifest_rows} data rows "
        f"({n} usable images); save one row per manifest row, in manifest order, {fix}"
    )


def _gather(source: np.ndarray, rows: np.ndarray, dtype) -> np.ndarray:
    """``source[rows]`` as a new ``dtype`` array, copied a chunk of rows at a time: ``source``
    may be a memory map far larger than memory, and only the rows asked for are read."""
    out = np.empty((len(rows), source.shape[1]), dtype)
    in_order = len(rows) == source.shape[0] and bool(np.all(rows == np.arange(len(rows))))
    for start in range(0, len(rows), CHUNK_ROWS):
        stop = min(start + CHUNK_ROWS, len(rows))
        with np.errstate(over="ignore"):  # float64 beyond float32's range becomes inf: reported as such
            out[start:stop] = source[start:stop] if in_order else source[rows[start:stop]]
    return out


# --- value checks --------------------------------------------------------------------------------


def _sample(table: SampleTable, i: int) -> str:
    return f"sample {table.samples['sample_id'].iloc[i]!r}"


def _check_finite(out: np.ndarray, rows: np.ndarray, table: SampleTable, name_row, what: str) -> None:
    """Error naming the first file row (in file order) with a NaN or infinite value."""
    bad = np.zeros(len(out), bool)
    for start in range(0, len(out), CHUNK_ROWS):
        bad[start : start + CHUNK_ROWS] = ~np.isfinite(out[start : start + CHUNK_ROWS]).all(axis=1)
    if bad.any():
        i = _first_in_file(bad, rows)
        big = " or too large for float32" if out.dtype == np.float32 else ""
        raise ConfigError(
            f"{what} has NaN or infinite values{big} in {int(bad.sum())} rows (first "
            f"{name_row(int(rows[i]))}, "
            f"{_sample(table, i)}); every value must be a finite number"
        )


def _first_in_file(bad: np.ndarray, rows: np.ndarray) -> int:
    """Index (into the table) of the flagged sample whose file row comes first."""
    flagged = np.flatnonzero(bad)
    return int(flagged[np.argmin(rows[flagged])])


def _check_distributions(
    out: np.ndarray, rows: np.ndarray, table: SampleTable, name_row, what: str
) -> np.ndarray:
    """Error for negative values or rows summing further than :data:`SUM_TOLERANCE` from 1; the
    remaining rows rescaled (in place) to sum to 1 exactly."""
    negative = (out < 0).any(axis=1)
    if negative.any():
        i = _first_in_file(negative, rows)
        raise ConfigError(
            f"{what} has negative values in {int(negative.sum())} rows (first {name_row(int(rows[i]))}, "
            f"{_sample(table, i)}: {out[i].min():.4g}); pass probabilities (softmax outputs), not "
            "logits or log-probabilities"
        )
    sums = out.sum(axis=1)
    off = np.abs(sums - 1.0) > SUM_TOLERANCE
    if off.any():
        i = _first_in_file(off, rows)
        raise ConfigError(
            f"{what} has {int(off.sum())} rows that do not sum to 1 (first {name_row(int(rows[i]))}, "
            f"{_sample(table, i)}: sum {sums[i]:.6g}, tolerance {SUM_TOLERANCE:g}); pass softmax outputs, "
            "not logits: labelaudit does not renormalise rows"
        )
    out /= sums[:, None]
    return out
