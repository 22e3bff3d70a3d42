"""A user's parquet or CSV file whose rows are keyed by ``sample_id`` or ``path``.

:class:`KeyedFile` finds the key column, aligns the rows with a sample table and reads the
embedding or probability columns (the layouts are described in :mod:`labelaudit.data.user_files`,
which is the module users call).
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import ConfigError, LabelAuditError, some
from .sample_table import SampleTable
from .table_files import read_table, where_row

# The logger that labelaudit.data.user_files documents for "rows ignored" warnings.
log = logging.getLogger("labelaudit.data.user_files")

#: Columns that identify a row (the first one present is the key); never read as values.
KEY_COLUMNS = ("sample_id", "path")


#: The column read as the embedding when several columns are present.
EMBEDDING_COLUMN = "embedding"


#: Prefix of a class's probability column (labelaudit's report.parquet writes ``p_<class>``).
PROB_PREFIX = "p_"


CHUNK_ROWS = 4096  # rows copied (and checked) at a time: bounds the temporaries of a 100k x 2048 read


_UNNAMED = re.compile(r"^(Unnamed: \d+|__index_level_\d+__)$")  # a saved pandas index


def first_line(exc: BaseException) -> str:
    """The first line of ``exc``'s message, or its type's name when it has none."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _type_name(kind) -> str:
    """A pyarrow type as a person would say it: ``text`` for every string type."""
    import pyarrow as pa

    texts = (pa.types.is_string, pa.types.is_large_string, getattr(pa.types, "is_string_view", None))
    return "text" if any(test is not None and test(kind) for test in texts) else str(kind)


def warn_ignored(what: str, count: int, detail: str) -> None:
    """Log that ``count`` rows of the file ``what`` belong to no sample (``detail``: which)."""
    if count > 0:
        log.warning("%s: ignored %d rows (%s)", what, count, detail)


class KeyedFile:
    """A parquet or CSV file whose rows are keyed by ``sample_id`` or ``path``.

    Parquet is read with pyarrow, only the columns needed, a list column streamed in batches;
    CSV through :func:`labelaudit.data.table_files.read_table` (text cells, our formula escaping undone).
    """

    def __init__(self, file: Path, fmt: str, what: str):
        self.file, self.fmt, self.what = file, fmt, what
        self._arrow = {}  # parquet column name -> pyarrow ChunkedArray
        if fmt == "parquet":
            import pyarrow.parquet as pq

            try:
                self._schema = pq.read_schema(file)
            except Exception as exc:
                raise self._unreadable(exc) from exc
            self.columns = [str(name) for name in self._schema.names]
            self._frame = None
        else:
            try:
                self._frame = read_table(file, "file")
            except LabelAuditError as exc:
                raise self._unreadable(exc.__cause__ or exc) from exc
            self._frame.columns = [str(c) for c in self._frame.columns]
            self.columns = list(self._frame.columns)
        key = next((c for c in KEY_COLUMNS if c in self.columns), None)
        if key is None:
            raise ConfigError(
                f"{what} has no sample_id or path column (columns: {some(self.columns)}); add "
                "a sample_id column with labelaudit's ids (see the report's sample_id) or a path column"
            )
        self.key = key
        self.values = [c for c in self.columns if c not in KEY_COLUMNS and not _UNNAMED.match(c)]

    def _unreadable(self, exc: BaseException) -> ConfigError:
        return ConfigError(
            f"{self.what} cannot be read as {self.fmt}: {first_line(exc)}; check that it is a valid "
            f"{self.fmt} file"
        )

    def name_row(self, index: int) -> str:
        return where_row(self.file, index)

    # raw columns

    def _column(self, name: str):
        """A parquet column as a pyarrow ChunkedArray (read once)."""
        if name not in self._arrow:
            import pyarrow.parquet as pq

            try:
                column = pq.read_table(self.file, columns=[name]).column(0)
            except Exception as exc:
                raise self._unreadable(exc) from exc
            self._arrow[name] = column
        return self._arrow[name]

    def _is_list(self, name: str) -> bool:
        if self.fmt != "parquet":
            return False
        import pyarrow as pa

        kind = self._schema.field(name).type
        return pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind)

    def numbers(self, name: str) -> np.ndarray:
        """Column ``name`` as a 1-D numeric array (missing cells NaN); error when not numeric."""
        if self.fmt == "parquet":
            import pyarrow as pa

            kind = self._schema.field(name).type
            if not (pa.types.is_integer(kind) or pa.types.is_floating(kind)):
                raise self._not_numeric(name, f"holds {_type_name(kind)} values")
            return self._column(name).to_numpy(zero_copy_only=False)
        text = self._frame[name]
        values = pd.to_numeric(text, errors="coerce")
        bad = values.isna() & text.notna() & ~text.str.strip().str.lower().isin(["nan", "-nan", "+nan"])
        if bad.any():
            first = int(np.flatnonzero(bad.to_numpy())[0])
            raise self._not_numeric(name, f"holds the text {text.iloc[first]!r} {self.name_row(first)}")
        return values.to_numpy(dtype=np.float64)

    def _not_numeric(self, name: str, detail: str) -> ConfigError:
        return ConfigError(f"{self.what} column {name!r} {detail}, expected numbers; fix or drop that column")

    def keys(self) -> np.ndarray:
        """The key of every row as text; a path key resolved like a manifest's paths."""
        if self.fmt == "parquet":
            raw = pd.Series(self._column(self.key).to_pandas(), dtype=object)
        else:
            raw = self._frame[self.key]
        missing = raw.isna() | (raw.map(str).str.strip() == "")
        if missing.any():
            first = int(np.flatnonzero(missing.to_numpy())[0])
            raise ConfigError(
                f"{self.what} has {int(missing.sum())} rows with no {self.key} (first "
                f"{self.name_row(first)}); fill them in or drop those rows"
            )
        if self.key == "sample_id":
            return raw.map(str).to_numpy(dtype=object)
        root = self.file.parent  # as manifests.py resolves a manifest's paths against its folder
        resolved = raw.map(lambda p: os.path.normpath(os.path.join(root, os.path.expanduser(str(p).strip()))))
        return resolved.to_numpy(dtype=object)

    # alignment and values

    def align(self, table: SampleTable) -> np.ndarray:
        """The file row of each sample of ``table``; errors for repeated keys and missing samples."""
        keys = pd.Index(self.keys())
        repeated = keys[keys.duplicated()]
        if len(repeated):
            raise ConfigError(
                f"{self.what} repeats the {self.key} {repeated[0]!r} ({len(repeated)} repeated rows); "
                f"keep one row per sample"
            )
        wanted = table.samples[self.key]
        rows = keys.get_indexer(wanted)
        absent = rows < 0
        if absent.any():
            example = f"; its {self.key}s look like {keys[0]!r}" if len(keys) else ""
            where = " (relative paths are read from the file's folder)" if self.key == "path" else ""
            raise ConfigError(
                f"{self.what} has no row for {int(absent.sum())} of the dataset's {len(table)} samples "
                f"(first: {self.key} {wanted.iloc[int(np.flatnonzero(absent)[0])]!r}{example}){where}; "
                f"add a row for every sample, keyed by labelaudit's {self.key}"
            )
        extra = len(keys) - len(rows)
        if extra:
            skipped = set(table.skipped[self.key].map(str))
            if self.key == "path":
                skipped |= set(table.duplicate_rows["path"].map(str))
            unused = np.ones(len(keys), bool)
            unused[rows] = False
            of_skipped = int(keys[unused].isin(skipped).sum())
            warn_ignored(
                self.what,
                extra,
                f"{of_skipped} for images the dataset skipped, "
                f"{extra - of_skipped} for samples not in the dataset",
            )
        return rows.astype(np.int64)

    def embeddings(self, rows: np.ndarray) -> np.ndarray:
        """``(len(rows), D)`` float32: the embedding of file row ``rows[i]`` in row ``i``."""
        if EMBEDDING_COLUMN in self.values:
            chosen = [EMBEDDING_COLUMN]
        elif len(self.values) == 1 and self._is_list(self.values[0]):
            chosen = self.values
        else:
            chosen = self.values
            lists = [c for c in chosen if self._is_list(c)]
            if lists:
                raise ConfigError(
                    f"{self.what} has list column {lists[0]!r} among {len(chosen)} value columns; name "
                    f"the embedding column {EMBEDDING_COLUMN!r} or keep only the key and one list column"
                )
        if not chosen:
            raise ConfigError(
                f"{self.what} has no embedding columns besides {self.key!r}; add an {EMBEDDING_COLUMN!r} "
                "list column or one numeric column per feature"
            )
        if len(chosen) == 1 and self._is_list(chosen[0]):
            return self._list_embeddings(chosen[0], rows)
        out = np.empty((len(rows), len(chosen)), np.float32)
        for j, name in enumerate(chosen):
            with np.errstate(over="ignore"):  # beyond float32's range becomes inf: reported as such
                out[:, j] = self.numbers(name)[rows]
        return out

    def _list_embeddings(self, name: str, rows: np.ndarray) -> np.ndarray:
        """``(len(rows), D)`` float32 from parquet list column ``name``, streamed a batch of rows
        at a time: each batch's values are one flat buffer, reshaped without a copy (no per-row
        Python objects, never the whole column in memory at once). Errors for null rows, rows of
        different lengths, empty lists or non-numeric items."""
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        item = self._schema.field(name).type.value_type
        if not (pa.types.is_integer(item) or pa.types.is_floating(item)):
            raise self._not_numeric(name, f"holds lists of {_type_name(item)} values")
        order = np.argsort(rows, kind="stable")
        wanted = rows[order]  # file rows in file order; order[i] is the sample that wants wanted[i]
        out, dim, offset = None, None, 0
        try:
            batches = pq.ParquetFile(self.file, pre_buffer=False, buffer_size=1 << 22).iter_batches(
                batch_size=CHUNK_ROWS, columns=[name]
            )
            for batch in batches:
                chunk = batch.column(0)
                if chunk.null_count:
                    first = offset + int(np.flatnonzero(chunk.is_null().to_numpy(zero_copy_only=False))[0])
                    raise ConfigError(
                        f"{self.what} column {name!r} has empty (null) rows (first {self.name_row(first)}); "
                        "give every sample an embedding"
                    )
                lengths = pc.list_value_length(chunk).to_numpy(zero_copy_only=False)
                if dim is None and len(lengths):
                    dim = int(lengths[0])
                    if dim < 1:
                        raise ConfigError(
                            f"{self.what} column {name!r} holds empty lists; every embedding needs at "
                            "least one value"
                        )
                    out = np.empty((len(rows), dim), np.float32)
                uneven = np.flatnonzero(lengths != dim)
                if len(uneven):
                    raise ConfigError(
                        f"{self.what} column {name!r} holds {int(lengths[uneven[0]])} values "
                        f"{self.name_row(offset + int(uneven[0]))} but {dim} in the first row; every "
                        "embedding needs the same length"
                    )
                if len(chunk):
                    block = chunk.flatten().to_numpy(zero_copy_only=False).reshape(len(chunk), dim)
                    start, stop = np.searchsorted(wanted, [offset, offset + len(chunk)])
                    with np.errstate(over="ignore"):  # beyond float32's range becomes inf: reported as such
                        out[order[start:stop]] = block[wanted[start:stop] - offset]
                offset += len(chunk)
        except LabelAuditError:
            raise
        except Exception as exc:  # a damaged data page
            raise self._unreadable(exc) from exc
        return out if out is not None else np.empty((len(rows), 1), np.float32)

    def prob_columns(self, class_names) -> list[str]:
        """The column of each class: every ``p_<class>`` when all exist, else every ``<class>``."""
        present = set(self.values)
        prefixed = [PROB_PREFIX + name for name in class_names]
        exact = list(class_names)
        if all(c in present for c in prefixed):
            # A p_ column for a class the dataset lacks: the rows' mass is spread over other
            # classes than the dataset's, so the rows would not sum to 1 over its own.
            foreign = [c for c in self.values if c.startswith(PROB_PREFIX) and c not in set(prefixed)]
            if foreign:
                raise ConfigError(
                    f"{self.what} has column {foreign[0]!r} for a class the dataset does not have "
                    f"({len(foreign)} such column{'s' if len(foreign) > 1 else ''}; the dataset's classes "
                    "are "
                    f"{some(class_names)}); pass probabilities over the dataset's classes only (check the "
                    "class "
                    "names, or drop those columns and renormalise the rows)"
                )
            return prefixed
        if all(c in present for c in exact):
            return exact
        closer = (
            prefixed if sum(c in present for c in prefixed) >= sum(c in present for c in exact) else exact
        )
        missing = [name for name, c in zip(class_names, closer) if c not in present]
        raise ConfigError(
            f"{self.what} has no column for class {missing[0]!r} ({len(missing)} of {len(class_names)} "
            f"classes missing); add one column per class named {PROB_PREFIX + missing[0]!r} (or "
            f"{missing[0]!r}): classes are {some(class_names)}"
        )
