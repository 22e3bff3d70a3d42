"""Read a parquet or CSV table: a manifest, a truth file, a user's embeddings or a reviewer's file.

CSV cells are read as text (only empty cells are missing) and labelaudit's own escaping of
formula-like cells is undone; :func:`where_row` names a row the way a person opening the file
would.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Sequence

import pandas as pd

from ..errors import ManifestError


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
