"""Check every listed file once: missing, empty, unreadable, not a regular file or not UTF-8.

One ``stat`` per file into numpy arrays; a file that fails the check becomes a row of the skipped
table with its reason code (:data:`~labelaudit.data.sample_table.SKIP_REASONS`), never an error.
"""

from __future__ import annotations

import os
import stat

import numpy as np
import pandas as pd

from .sample_table import ProgressCallback, displayable_path, is_utf8

#: Progress phase of the per-file ``stat`` that finds missing, empty and unreadable files.
CHECK_FILES_PHASE = "check files"


#: Files stat-ed between two progress reports (and per UTF-8 check of a batch of names).
_STAT_BATCH = 4096


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


def check_files(
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


def stat_rows(
    rows: list[tuple[str, str, str]], progress: ProgressCallback | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Stat ``(sample_id, abs_path, label)`` rows; return (present rows, skipped rows)."""
    sample_ids = np.array([row[0] for row in rows], dtype=object)
    paths = np.array([row[1] for row in rows], dtype=object)
    labels = np.array([row[2] for row in rows], dtype=object)
    usable, file_size, mtime_ns, skipped = check_files(sample_ids, paths, progress)
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
