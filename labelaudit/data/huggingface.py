"""Read a Hugging Face ``datasets`` dataset: images embedded as bytes, integer labels named in the
schema.

Three shapes of the same Arrow data are read, all without importing ``datasets`` (only a
:class:`datasets.Dataset` object needs it, and the caller already has it):

- a parquet or Arrow file, as ``Dataset.to_parquet`` writes and the Hub serves: an image column
  that is a struct of ``bytes`` and ``path`` (``datasets.Image()``), and a label column whose
  ``ClassLabel`` names sit in the schema metadata (key ``huggingface``, JSON
  ``info.features.<column>.names``);
- a folder written by ``Dataset.save_to_disk`` (``state.json``, ``dataset_info.json`` and the
  ``data-*.arrow`` files it lists);
- a :class:`datasets.Dataset` in memory.

Each image's bytes are written once, content-addressed, to the image cache
(``<cache>/embedded-images/<sha256[:2]>/<sha256>.<ext>``), and that file becomes the sample's
``path``: the decode cache, head mode, the review page and exports then read it like any other
image file, and a second scan of the same dataset finds the same files (same path, size and
modification time) and reuses its decoded pixels. The dataset itself is only read.

Sample ids: the ``--id-column`` when given, else the image struct's ``path`` when every row has
one and no two rows share it, else ``row-000123`` (the 0-based row). Rows without a usable image
(a null cell, empty bytes, a missing file) are skipped with their row in ``skipped.csv``; images
that do not decode are skipped later by the image cache, also with their row.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import pandas as pd

from .._atomic import temporary_sibling
from ..errors import ConfigError, DatasetError, ManifestError, some
from .cache_dir import cache_root
from .classes import class_index
from .file_checks import check_files
from .sample_table import EXTRACTED_FOLDER, IMAGE_EXTENSIONS, SKIPPED_COLUMNS, ProgressCallback, SampleTable

#: :attr:`SampleTable.kind` of every Hugging Face source.
HF_KIND = "huggingface"

#: File suffixes read as Hugging Face tables (parquet only when its schema says so).
HF_FILE_SUFFIXES = (".parquet", ".pq", ".arrow")


#: Progress phase of writing the embedded images to the cache, counted in rows.
EXTRACT_PHASE = "extract images"

#: Label column names looked for when the schema has no ClassLabel column.
HF_LABEL_CANDIDATES = ("label", "labels", "class", "class_name", "target", "fine_label")

#: Image column names looked for when the schema names no ``Image`` feature.
HF_IMAGE_CANDIDATES = ("image", "img", "picture", "photo")

_SCHEMA_KEY = b"huggingface"
_BATCH_ROWS = 1024

# Magic numbers of the formats Pillow reads, for the extension of an extracted file.
_MAGIC = (
    (b"\x89PNG", ".png"),
    (b"\xff\xd8", ".jpg"),
    (b"GIF8", ".gif"),
    (b"BM", ".bmp"),
    (b"II*\x00", ".tif"),
    (b"MM\x00*", ".tif"),
)


def is_dataset_object(source) -> bool:
    """True for a :class:`datasets.Dataset` or ``DatasetDict`` (checked without importing datasets)."""
    module = type(source).__module__ or ""
    return module.split(".")[0] == "datasets" and (hasattr(source, "features") or hasattr(source, "keys"))


def is_hf_folder(path: Path) -> bool:
    """True for a folder that ``save_to_disk`` wrote: a dataset (``state.json``) or a
    ``DatasetDict`` (``dataset_dict.json``)."""
    return (path / "state.json").is_file() or (path / "dataset_dict.json").is_file()


def is_hf_file(path: Path) -> bool:
    """True for an ``.arrow`` file, and for a parquet file whose schema holds an image struct
    (a column of ``bytes`` and ``path``) or a ``huggingface`` Image feature."""
    suffix = path.suffix.lower()
    if suffix == ".arrow":
        return True
    if suffix not in (".parquet", ".pq"):
        return False
    try:
        import pyarrow.parquet as pq

        schema = pq.read_schema(path)
    except Exception:  # not readable as parquet: the manifest reader names the problem
        return False
    features = _schema_features(schema)
    return any(_is_image_struct(schema.field(i).type) for i in range(len(schema.names))) or any(
        isinstance(f, dict) and f.get("_type") == "Image" for f in features.values()
    )


def read_label_names(path: str | os.PathLike) -> tuple[str, ...]:
    """Class names from a text file, one per line: line 1 names label 0, line 2 label 1, ...

    Surrounding whitespace of a line is removed and blank lines at the end ignored. ConfigError for
    a missing or unreadable file, an empty one, a blank line among the names, or a repeated name.
    """
    shown = str(path)
    try:
        text = Path(path).expanduser().read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ConfigError(
            f"--label-names file {shown!r} does not exist; pass a text file with one class name per line"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"--label-names file {shown!r} cannot be read ({exc}); pass a UTF-8 text file with one "
            "class name per line"
        ) from None
    names = [line.strip() for line in text.splitlines()]
    while names and not names[-1]:
        names.pop()
    if not names:
        raise ConfigError(
            f"--label-names file {shown!r} is empty; write one class name per line (label 0 first)"
        )
    if "" in names:
        raise ConfigError(
            f"--label-names file {shown!r} has a blank line {names.index('') + 1} among the names; "
            "write one class name per line, line i+1 naming label i"
        )
    repeated = pd.Series(names)[pd.Series(names).duplicated()]
    if len(repeated):
        raise ConfigError(
            f"--label-names file {shown!r} repeats the class name {repeated.iloc[0]!r}; class names must "
            "be unique"
        )
    return tuple(names)


@dataclass(frozen=True)
class _HFData:
    """What every shape of Hugging Face source comes down to: a schema, its features and batches."""

    name: str  # how messages name the source
    source: Path  # SampleTable.source
    schema: object  # pyarrow.Schema
    features: dict  # column -> feature dict (``{"_type": "ClassLabel", "names": [...]}``)
    num_rows: int
    batches: object  # callable(columns) -> iterator of pyarrow.RecordBatch / Table
    folder: Path | None  # where relative struct paths are read from, if anywhere


def load_huggingface(
    source,
    path: Path | None,
    *,
    image_column: str | None,
    label_column: str | None,
    id_column: str | None,
    label_names: Sequence[str] | str | os.PathLike | None,
    classes: Sequence[str] | None,
    cache_dir: str | os.PathLike | None,
    progress: ProgressCallback | None = None,
    labelled: bool = True,
) -> SampleTable:
    """Read a Hugging Face dataset (``path`` of a parquet/Arrow file or ``save_to_disk`` folder,
    or ``source``, a :class:`datasets.Dataset`) into a :class:`SampleTable` of kind
    :data:`HF_KIND`, writing its images to the cache (see the module docstring).

    ``image_column`` is ``--path-column``; ``label_names`` a file (path) or the names themselves.
    The table has a ``manifest_row`` column: each sample's 0-based row in the dataset.
    ``labelled=False`` ignores any label column: a table without classes, to predict.

    Raises :class:`ManifestError` for an unreadable file, a missing image or label column, labels
    that are not integers or text, integer labels without names, labels out of range or missing,
    and repeated ids; :class:`ConfigError` for a bad ``label_names`` file or cache folder.
    """
    data = _open(source, path)
    image_col = _image_column(data, image_column)
    label_col = _label_column(data, label_column, image_col) if labelled else None
    if id_column is not None and id_column not in data.schema.names:
        raise ManifestError(
            f"dataset {data.name!r} has no id column {id_column!r} (columns: {data.schema.names}); "
            "pass the right name with --id-column"
        )
    if data.num_rows == 0:
        raise DatasetError(f"dataset {data.name!r} has no rows; pass a dataset with one row per image")
    if labelled:
        class_names, class_of_code, label_codes = _classes(data, label_col, label_names, classes)
    else:
        class_names, class_of_code, label_codes = (), np.array([-1]), np.zeros(data.num_rows, dtype=np.int64)

    root = cache_root(cache_dir).expanduser().resolve()
    if data.source.is_dir() and (root == data.source or data.source in root.parents):
        raise ConfigError(
            f"cache directory {str(root)!r} is inside the dataset folder {str(data.source)!r}; labelaudit "
            "never writes into the input: pass --cache-dir (or LABELAUDIT_CACHE_DIR) elsewhere"
        )
    blobs, struct_paths, skips = _extract(data, image_col, root, progress)
    ids = _sample_ids(data, id_column, struct_paths)
    has_blob = np.array([b is not None for b in blobs], dtype=bool)
    rows = np.flatnonzero(has_blob)
    paths = np.array([blobs[r] for r in rows], dtype=object)
    usable, file_size, mtime_ns, missing = check_files(ids[rows], paths)
    skipped = pd.DataFrame(
        [(ids[r], shown, reason, f"row {r}: {detail}") for r, shown, reason, detail in skips],
        columns=SKIPPED_COLUMNS,
    ).astype(object)
    skipped = pd.concat([skipped, missing], ignore_index=True)
    kept = rows[usable]
    given = class_of_code[label_codes[kept]]
    samples = pd.DataFrame(
        {
            "sample_id": pd.Series(ids[kept], dtype=object),
            "path": pd.Series(paths[usable], dtype=object),
            "label": pd.Series(np.array(class_names or ("",), dtype=object)[given], dtype=object),
            "given_label": given.astype(np.int64),
            "file_size": file_size[usable],
            "mtime_ns": mtime_ns[usable],
            "manifest_row": kept.astype(np.int64),
        }
    )
    return SampleTable(samples, class_names, data.source, HF_KIND, skipped)


# ---------------------------------------------------------------------------------------------
# Opening the three shapes


def _open(source, path: Path | None) -> _HFData:
    if path is None:
        return _open_dataset(source)
    if path.is_dir():
        return _open_folder(path)
    if path.suffix.lower() == ".arrow":
        table = _read_arrow(path)
        return _from_table(path.name, path, table, _schema_features(table.schema), path.parent)
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
        schema = parquet.schema_arrow
    except Exception as exc:
        raise _unreadable(path, "parquet", exc) from exc

    def batches(columns):
        return parquet.iter_batches(batch_size=_BATCH_ROWS, columns=columns)

    return _HFData(
        path.name, path, schema, _schema_features(schema), parquet.metadata.num_rows, batches, path.parent
    )


def _open_folder(path: Path) -> _HFData:
    if (path / "dataset_dict.json").is_file() and not (path / "state.json").is_file():
        splits = sorted(p.name for p in path.iterdir() if (p / "state.json").is_file())
        raise ManifestError(
            f"{str(path)!r} is a DatasetDict saved with save_to_disk (splits: {some(splits)}); pass one "
            f"split's folder, e.g. {str(path / (splits[0] if splits else 'train'))!r}"
        )
    try:
        state = json.loads((path / "state.json").read_text(encoding="utf-8"))
        files = [path / entry["filename"] for entry in state["_data_files"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ManifestError(
            f"cannot read {str(path / 'state.json')!r} ({exc}); pass a folder written by "
            "datasets' save_to_disk, or save the dataset again"
        ) from None
    if not files:
        raise DatasetError(f"dataset folder {str(path)!r} lists no data files in state.json; save it again")
    import pyarrow as pa

    tables = [_read_arrow(file) for file in files]
    try:
        table = pa.concat_tables(tables) if len(tables) > 1 else tables[0]
    except pa.ArrowInvalid as exc:
        raise ManifestError(
            f"the arrow files of {str(path)!r} have different columns ({exc}); save it again"
        ) from None
    features = _schema_features(table.schema)
    try:
        info = json.loads((path / "dataset_info.json").read_text(encoding="utf-8"))
        features = info.get("features") or features
    except (OSError, ValueError):
        pass  # the schema metadata carries the same features
    return _from_table(path.name, path, table, features, path)


def _open_dataset(dataset) -> _HFData:
    if type(dataset).__name__.startswith("Iterable"):
        raise ManifestError(
            f"load_source was given a streaming {type(dataset).__name__}, which has no length and cannot "
            "be read twice; load it without streaming=True, or save it with save_to_disk and pass the folder"
        )
    if not hasattr(dataset, "features") or not hasattr(dataset, "with_format"):
        splits = list(dataset.keys()) if hasattr(dataset, "keys") else []
        raise ManifestError(
            f"load_source was given a {type(dataset).__name__} with splits {some(splits)}; pass one split, "
            f"e.g. dataset[{(splits[0] if splits else 'train')!r}]"
        )
    arrow = dataset.with_format("arrow")
    try:
        schema = dataset.features.arrow_schema
    except AttributeError:  # older datasets
        schema = dataset.data.schema
    files = [Path(f["filename"]) for f in (getattr(dataset, "cache_files", None) or []) if "filename" in f]
    source = files[0].parent.resolve() if files else Path("<datasets.Dataset in memory>")

    def batches(columns):
        for start in range(0, len(dataset), _BATCH_ROWS):
            yield arrow[start : start + _BATCH_ROWS].select(columns)

    return _HFData(
        "datasets.Dataset",
        source,
        schema,
        dataset.features.to_dict(),
        len(dataset),
        batches,
        source if files else None,
    )


def _from_table(name: str, source: Path, table, features: dict, folder: Path | None) -> _HFData:
    def batches(columns):
        return table.select(columns).to_batches(max_chunksize=_BATCH_ROWS)

    return _HFData(name, source, table.schema, features, table.num_rows, batches, folder)


def _read_arrow(path: Path):
    """The table of an Arrow IPC file, memory-mapped: the stream format ``datasets`` writes, or
    the file format."""
    import pyarrow as pa

    try:
        with pa.memory_map(str(path)) as source:
            try:
                return pa.ipc.open_stream(source).read_all()
            except pa.ArrowInvalid:
                source.seek(0)
                return pa.ipc.open_file(source).read_all()
    except FileNotFoundError:
        raise ManifestError(f"arrow file {str(path)!r} does not exist; save the dataset again") from None
    except Exception as exc:
        raise _unreadable(path, "arrow", exc) from exc


def _unreadable(path: Path, kind: str, exc: Exception) -> ManifestError:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return ManifestError(
        f"cannot read {str(path)!r} as {kind}: {first}; check that it is a valid {kind} file"
    )


def _schema_features(schema) -> dict:
    """``info.features`` of the ``huggingface`` JSON in the schema metadata, else ``{}``."""
    raw = (schema.metadata or {}).get(_SCHEMA_KEY)
    if not raw:
        return {}
    try:
        meta = json.loads(raw)
    except ValueError:
        return {}
    features = (meta.get("info") or {}).get("features") if isinstance(meta, dict) else None
    return features if isinstance(features, dict) else {}


# ---------------------------------------------------------------------------------------------
# Columns


def _is_image_struct(arrow_type) -> bool:
    import pyarrow as pa

    if not pa.types.is_struct(arrow_type):
        return False
    names = {arrow_type.field(i).name: arrow_type.field(i).type for i in range(arrow_type.num_fields)}
    return "bytes" in names and (
        pa.types.is_binary(names["bytes"]) or pa.types.is_large_binary(names["bytes"])
    )


def _image_column(data: _HFData, wanted: str | None) -> str:
    columns = data.schema.names
    if wanted is not None:
        if wanted not in columns:
            raise ManifestError(
                f"dataset {data.name!r} has no image column {wanted!r} (columns: {columns}); pass the "
                "image column's name with --path-column"
            )
        chosen = wanted
    else:
        typed = [c for c, f in data.features.items() if isinstance(f, dict) and f.get("_type") == "Image"]
        named = [c for c in HF_IMAGE_CANDIDATES if c in columns]
        structs = [c for c in columns if _is_image_struct(data.schema.field(c).type)]
        found = [c for c in typed + named + structs if c in columns]
        if not found:
            raise ManifestError(
                f"dataset {data.name!r} has no image column (a struct of bytes and path, as datasets.Image() "
                f"stores images; columns: {columns}); name it with --path-column, or cast it with "
                "dataset.cast_column(name, datasets.Image())"
            )
        chosen = found[0]
    arrow_type = data.schema.field(chosen).type
    if not _is_image_struct(arrow_type):
        raise ManifestError(
            f"dataset {data.name!r} column {chosen!r} holds {arrow_type}, not images (a struct of bytes and "
            "path, as datasets.Image() stores them); pass the image column with --path-column, or cast it "
            f"with dataset.cast_column({chosen!r}, datasets.Image())"
        )
    return chosen


def _label_column(data: _HFData, wanted: str | None, image_col: str) -> str:
    columns = data.schema.names
    if wanted is not None:
        if wanted not in columns:
            raise ManifestError(
                f"dataset {data.name!r} has no label column {wanted!r} (columns: {columns}); pass the right "
                "name with --label-column"
            )
        return wanted
    typed = [c for c, f in data.features.items() if isinstance(f, dict) and f.get("_type") == "ClassLabel"]
    lowered = {c.lower(): c for c in columns if c != image_col}
    named = [lowered[c] for c in HF_LABEL_CANDIDATES if c in lowered]
    found = [c for c in typed + named if c in columns]
    if not found:
        raise ManifestError(
            f"dataset {data.name!r} has no label column (looked for a ClassLabel feature and "
            f"{list(HF_LABEL_CANDIDATES)}, found {columns}); name it with --label-column"
        )
    return found[0]


def _classes(
    data: _HFData, column: str, label_names, classes: Sequence[str] | None
) -> tuple[tuple[str, ...], np.ndarray, np.ndarray]:
    """``(class_names, class_of_code, label_codes)`` as :func:`~labelaudit.data.classes.class_index`
    gives them, plus each row's code. Integer labels keep their names' order (the classes with no
    row left out), so ``given_label`` is the dataset's own label when every class has images."""
    names_given = _names(label_names)
    label_texts, label_codes = _labels(data, column, names_given)
    used = np.unique(label_codes)
    order = classes
    if classes is None and (names_given or _feature(data, column).get("_type") == "ClassLabel"):
        order = [str(t) for t in label_texts[used]]
    class_names, class_of_code = class_index(label_texts, used, order)
    return class_names, class_of_code, label_codes


def _feature(data: _HFData, column: str) -> dict:
    """The ``datasets`` feature of ``column`` as a dict (``{}`` when the schema names none)."""
    feature = data.features.get(column)
    return feature if isinstance(feature, dict) else {}


def _names(label_names) -> tuple[str, ...] | None:
    if label_names is None:
        return None
    if isinstance(label_names, (str, os.PathLike)):
        return read_label_names(label_names)
    names = tuple(str(n) for n in label_names)
    if not names or len(set(names)) != len(names):
        raise ConfigError(
            f"label_names must be unique class names, label i naming class i; got {list(names)!r}"
        )
    return names


def _column(data: _HFData, column: str):
    """The whole of one (small) column as a pyarrow ChunkedArray."""
    import pyarrow as pa

    chunks = [batch.column(0) for batch in data.batches([column])]
    chunks = [c.combine_chunks() if isinstance(c, pa.ChunkedArray) else c for c in chunks]
    return pa.chunked_array(chunks, type=data.schema.field(column).type)


def _labels(data: _HFData, column: str, names_given: tuple[str, ...] | None) -> tuple[np.ndarray, np.ndarray]:
    """``(texts, codes)``: the distinct labels as class names (``(L,)`` object) and each row's index
    into them (``(N,)`` int64). Integer labels are indexes into the ClassLabel names (or
    ``names_given``); text labels are class names."""
    import pyarrow as pa
    import pyarrow.compute as pc

    values = _column(data, column)
    arrow_type = values.type
    if pa.types.is_dictionary(arrow_type):
        values = values.cast(arrow_type.value_type)
        arrow_type = arrow_type.value_type
    is_int = pa.types.is_integer(arrow_type)
    if is_int:
        missing = pc.fill_null(pc.less(values, 0), True)
    elif pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        missing = pc.fill_null(pc.equal(pc.utf8_trim_whitespace(values), ""), True)
    else:
        raise ManifestError(
            f"dataset {data.name!r} label column {column!r} holds {arrow_type} values; labelaudit needs "
            "integer class indexes (with ClassLabel names or --label-names) or class names as text: pass "
            "the label column with --label-column"
        )
    missing = np.asarray(missing.to_numpy(zero_copy_only=False), dtype=bool)
    if missing.any():
        first = int(np.flatnonzero(missing)[0])
        raise ManifestError(
            f"dataset {data.name!r} has {int(missing.sum())} rows with no label in column {column!r} (null"
            f"{', -1' if is_int else ' or blank'}; first at row {first}, counting from 0); drop them first, "
            f"e.g. dataset.filter(lambda row: row[{column!r}] is not None and row[{column!r}] != -1)"
        )
    if not is_int:
        codes, texts = pd.factorize(pd.Series(values.to_pylist(), dtype=object))
        if names_given is not None:
            raise ConfigError(
                f"--label-names names integer labels, but column {column!r} of {data.name!r} holds class "
                "names as text; drop --label-names"
            )
        return np.asarray(texts, dtype=object), codes.astype(np.int64)
    names = names_given or tuple(_feature(data, column).get("names") or ())
    if not names:
        raise ManifestError(
            f"dataset {data.name!r} label column {column!r} holds integer labels but the dataset has no "
            "class names for them (no ClassLabel feature); pass --label-names FILE, a text file with one "
            "class name per line (line 1 = label 0), or cast the column to datasets.ClassLabel(names=[...])"
        )
    codes = values.to_numpy(zero_copy_only=False).astype(np.int64)
    beyond = codes >= len(names)
    if beyond.any():
        first = int(np.flatnonzero(beyond)[0])
        raise ManifestError(
            f"dataset {data.name!r} label column {column!r} has label {int(codes[first])} at row {first} "
            f"(counting from 0), but only {len(names)} class names ({some(names)}); add the missing names "
            "(to --label-names or the ClassLabel) or fix the labels"
        )
    return np.asarray(names, dtype=object), codes


def _sample_ids(data: _HFData, id_column: str | None, struct_paths: list) -> np.ndarray:
    """``(N,)`` object array of str: the id column, else the unique struct paths, else ``row-000123``."""
    n = data.num_rows
    if id_column is not None:
        values = _column(data, id_column).to_pylist()
        blank = [i for i, v in enumerate(values) if v is None or str(v).strip() == ""]
        if blank:
            raise ManifestError(
                f"dataset {data.name!r} has {len(blank)} rows with no id in column {id_column!r} (first at "
                f"row {blank[0]}, counting from 0); fill them in or drop --id-column"
            )
        ids = pd.Series([str(v) for v in values], dtype=object)
        repeated = ids[ids.duplicated()]
        if len(repeated):
            raise ManifestError(
                f"dataset {data.name!r} column {id_column!r} repeats the id {repeated.iloc[0]!r} "
                f"({len(repeated)} repeats); ids must be unique: pass another --id-column or none"
            )
        return ids.to_numpy(dtype=object)
    if all(p for p in struct_paths) and len(set(struct_paths)) == n:
        return np.array(struct_paths, dtype=object)
    width = max(6, len(str(n - 1)))
    return np.array([f"row-{i:0{width}d}" for i in range(n)], dtype=object)


# ---------------------------------------------------------------------------------------------
# Images


def _extract(
    data: _HFData, column: str, root: Path, progress: ProgressCallback | None
) -> tuple[list, list, list]:
    """Write every row's image bytes to the cache, content-addressed.

    Returns ``(files, struct_paths, skips)``: per row the image file to read (None for a row
    without an image), per row the struct's ``path`` text (``""`` when absent), and
    ``(row, path, reason, detail)`` for each row without an image.
    """
    folder = root / EXTRACTED_FOLDER
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"cache directory {str(root)!r} cannot be written: {exc.strerror or exc}; pass another "
            "--cache-dir or set LABELAUDIT_CACHE_DIR to a writable folder"
        ) from exc
    files: list = []
    struct_paths: list[str] = []
    skips: list[tuple[int, str, str, str]] = []
    made: set[str] = set()
    row = 0
    if progress:
        progress(EXTRACT_PHASE, 0, data.num_rows)
    for values, paths in _image_batches(data, column):
        for blob, written in zip(values, paths):
            written = written or ""
            struct_paths.append(written)
            files.append(_one_image(blob, written, row, data, folder, made, skips))
            row += 1
        if progress:
            progress(EXTRACT_PHASE, row, data.num_rows)
    return files, struct_paths, skips


def _image_batches(data: _HFData, column: str) -> Iterator[tuple[list, list]]:
    """``(bytes or None per row, path or None per row)`` of each batch of the image column."""
    import pyarrow as pa

    for batch in data.batches([column]):
        cells = batch.column(0)
        if isinstance(cells, pa.ChunkedArray):
            cells = cells.combine_chunks()
        valid = cells.is_valid().to_numpy(zero_copy_only=False)
        blobs = cells.field("bytes").to_pylist()
        has_path = "path" in [cells.type.field(i).name for i in range(cells.type.num_fields)]
        paths = cells.field("path").to_pylist() if has_path else [None] * len(cells)
        yield (
            [b if ok else None for b, ok in zip(blobs, valid)],
            [p if ok else None for p, ok in zip(paths, valid)],
        )


def _one_image(
    blob, written: str, row: int, data: _HFData, folder: Path, made: set, skips: list
) -> str | None:
    """The file holding row ``row``'s image (written to ``folder`` when it came as bytes), or None
    with a row appended to ``skips``."""
    if blob is None:
        if written:  # an image stored by path, not embedded (datasets reads the file then)
            target = Path(written).expanduser()
            if not target.is_absolute() and data.folder is not None:
                target = data.folder / target
            if target.is_file():
                return os.path.abspath(target)
            skips.append((row, written, "missing", f"no image bytes, and no file at {written!r}"))
            return None
        skips.append((row, "", "no_image", "the image cell is null"))
        return None
    if len(blob) == 0:
        skips.append((row, written, "empty", "the image bytes are empty"))
        return None
    digest = hashlib.sha256(blob).hexdigest()
    target = folder / digest[:2] / (digest + _extension(blob, written))
    key = str(target)
    if key not in made:
        made.add(key)
        try:
            if not (target.is_file() and target.stat().st_size == len(blob)):
                target.parent.mkdir(exist_ok=True)
                tmp = temporary_sibling(target)
                tmp.write_bytes(blob)
                os.replace(tmp, target)  # same content under the same name: a concurrent run is harmless
        except OSError as exc:
            raise ConfigError(
                f"cannot write the images of {data.name!r} to the cache {str(folder)!r}: "
                f"{exc.strerror or exc}; free some space, or pass another --cache-dir"
            ) from exc
    return key


def _extension(blob: bytes, written: str) -> str:
    """The struct path's image extension, else one from the bytes' magic number, else ``.img``."""
    suffix = os.path.splitext(written)[1].lower()
    if suffix in IMAGE_EXTENSIONS:
        return suffix
    head = bytes(blob[:12])
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return ".webp"
    for magic, ext in _MAGIC:
        if head.startswith(magic):
            return ext
    return ".img"
