"""Writers for everything labelaudit puts on disk; every write is atomic.

CSV files are safe to open in a spreadsheet: a text cell (or column name) that starts with
``=``, ``+``, ``-``, ``@``, a tab or a carriage return, which Excel, LibreOffice and Google
Sheets would run as a formula, is written with a leading apostrophe (OWASP's rule against CSV
injection); :func:`unescape_cell` undoes it and labelaudit's own readers apply it. Numbers are
written as numbers. Parquet files keep every value as it is.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd

from ._atomic import atomic_path, write_text


def write_json(path: str | os.PathLike, data: dict) -> None:
    """Write ``data`` as indented strict JSON (NaN and infinities become null), atomically."""
    write_text(path, json_text(data) + "\n")


def read_json(path: str | os.PathLike):
    """The JSON value in the UTF-8 file ``path``.

    Raises OSError when the file cannot be read, and ValueError (a one-line reason) when it is not
    UTF-8, not JSON, or nested too deeply for Python's parser (``[[[[...`` 100,000 levels deep
    raises RecursionError inside :mod:`json`; callers that catch ValueError then catch it too).
    """
    text = Path(path).read_text(encoding="utf-8")
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("the JSON is nested too deeply to be read") from None


def json_text(data, indent: int | None = 2) -> str:
    """``data`` as strict JSON text: NaN and infinite numbers (Python or numpy) become ``null``,
    numpy scalars and arrays become numbers and lists, paths become strings.

    Python's ``json`` writes bare ``NaN``/``Infinity``, which strict parsers (JavaScript,
    ``jq``, most other languages) reject; this never does (``allow_nan=False`` guards it).
    """
    return json.dumps(_finite(data), indent=indent, default=_json_default, allow_nan=False)


#: First characters that make a spreadsheet treat a cell as a formula.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def escape_cell(value):
    """``value`` with a leading apostrophe when it is text a spreadsheet would run as a formula.

    Text that already starts with apostrophes before such a character gets one more, so that
    :func:`unescape_cell` gives every value back exactly.
    """
    if isinstance(value, str) and value.lstrip("'").startswith(FORMULA_START):
        return "'" + value
    return value


def unescape_cell(value):
    """Undo :func:`escape_cell`: drop one apostrophe in front of (apostrophes and) a formula character."""
    if isinstance(value, str) and value.startswith("'") and value.lstrip("'").startswith(FORMULA_START):
        return value[1:]
    return value


#: What :func:`escape_cell` escapes, as a regular expression (Arrow's RE2).
_FORMULA_PATTERN = "^'*[=+\\-@\t\r]"


def spreadsheet_safe(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``frame`` with every text cell and column name passed through :func:`escape_cell`."""
    safe = frame.rename(columns=lambda c: escape_cell(str(c)))
    for column in safe.columns:
        values = safe[column]
        if values.dtype == object and pd.api.types.infer_dtype(values, skipna=True) != "string":
            safe[column] = values.map(escape_cell)  # mixed types: only the text cells change
        elif values.dtype == object or pd.api.types.is_string_dtype(values):
            # Text only: find the formula-like cells in one vectorised pass (a million-row
            # skipped list has none), and call escape_cell on those alone.
            text = values.astype("str") if values.dtype == object else values
            risky = text.str.contains(_FORMULA_PATTERN, regex=True, na=False).to_numpy(dtype=bool)
            if risky.any():
                escaped = values.copy()
                escaped[risky] = values[risky].map(escape_cell).to_numpy()
                safe[column] = escaped
    return safe


def write_parquet(path: str | os.PathLike, frame: pd.DataFrame) -> None:
    """Write ``frame`` as parquet without the index, atomically."""
    with atomic_path(path) as tmp:
        frame.to_parquet(tmp, index=False)


def write_csv(path: str | os.PathLike, frame: pd.DataFrame) -> None:
    """Write ``frame`` as CSV without the index, atomically, with formula-like text escaped."""
    with atomic_path(path) as tmp:
        spreadsheet_safe(frame).to_csv(tmp, index=False)


#: The corner cell of a matrix CSV: the orientation (a run's files add the data fingerprint,
#: :func:`matrix_corner`).
MATRIX_CORNER = "true \\ given"


def write_matrix_csv(path: str | os.PathLike, matrix, names, corner: str = MATRIX_CORNER) -> None:
    """Write a ``(K, K)`` matrix with class names as header and first column (escaped), atomically."""
    frame = pd.DataFrame(matrix, columns=list(names))
    frame.insert(0, corner, list(names))
    write_csv(path, frame)


def matrix_corner(fingerprint: str) -> str:
    """The corner cell that makes a run's matrix CSV carry its data fingerprint (a CSV has no
    other room for it; a copy from another dataset is then refused, a value edited by hand is not)."""
    return f"{MATRIX_CORNER}; data {fingerprint}"


def matrix_fingerprint(path: str | os.PathLike) -> str | None:
    """The data fingerprint in the corner cell of a matrix CSV (:func:`matrix_corner`), or None."""
    import csv
    import re

    try:
        with open(path, newline="", encoding="utf-8") as fh:
            header = next(csv.reader(fh), [])
    except (OSError, UnicodeDecodeError, csv.Error):
        return None
    found = re.search(r"; data (sha256:[0-9a-f]{64})$", unescape_cell(header[0])) if header else None
    return found.group(1) if found else None


def read_matrix_csv(path: str | os.PathLike, size: int) -> np.ndarray:
    """Read a ``(size, size)`` matrix written by :func:`write_matrix_csv`; ValueError when it is not one."""
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    values = frame.iloc[:, 1:].to_numpy(dtype=np.float64)
    if values.shape != (size, size) or not np.isfinite(values).all():
        raise ValueError(f"expected a finite {size} x {size} matrix, found shape {values.shape}")
    return values


def write_skipped_csv(path: str | os.PathLike, skipped: pd.DataFrame) -> None:
    """Write the skipped files (``path, reason, detail``) as CSV, atomically."""
    write_csv(path, skipped[["path", "reason", "detail"]])


def _finite(value):
    """``value`` with every non-finite float (nested in dicts, lists and tuples) replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):  # numpy scalars and arrays, tensors
        return _finite(value.tolist())
    return value


def _json_default(value):
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot serialise {type(value).__name__} to JSON")
