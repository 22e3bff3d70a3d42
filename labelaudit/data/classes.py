"""Labels and classes: which class a label names, the order of the classes, and whether a table
has the classes an audit needs."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from ..errors import DatasetError
from .sample_table import IMAGE_EXTENSIONS, SAMPLE_COLUMNS, SampleTable


def labels_as_text(values: pd.Series, *, strip: bool) -> pd.Series:
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


def _refuse_unknown_labels(lookup: dict, class_names: tuple[str, ...]) -> None:
    """DatasetError naming the first label that ``lookup`` (from :func:`match_classes`) could not place."""
    unknown = sorted(label for label, name in lookup.items() if name is None)
    if unknown:
        raise DatasetError(
            f"label {unknown[0]!r} is not one of the given classes {list(class_names)!r} "
            f"({len(unknown)} unknown labels); fix the labels or add the class"
        )


def order_classes(labels: Sequence[str]) -> tuple[str, ...]:
    """The distinct ``labels`` as class names: in numeric order when every one is an integer
    (``"2" < "10"``), else sorted as text."""
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


def class_index(
    label_texts: np.ndarray, used: np.ndarray, classes: Sequence[str] | None
) -> tuple[tuple[str, ...], np.ndarray]:
    """``(class_names, class_of_code)``: the classes (:func:`order_classes` of the labels at
    ``used``, or ``classes``, which each used label must name) and each label's class index
    (``(L,)`` int64, -1 for a label not in ``used``)."""
    used_texts = [str(t) for t in label_texts[used]]
    if classes is not None:
        class_names = tuple(str(c) for c in classes)
        lookup = match_classes(used_texts, class_names)
        _refuse_unknown_labels(lookup, class_names)
    else:
        class_names = order_classes(used_texts)
        lookup = {text: text for text in used_texts}
    index = {name: i for i, name in enumerate(class_names)}
    class_of_code = np.full(len(label_texts), -1, dtype=np.int64)
    class_of_code[used] = [index[lookup[text]] for text in used_texts]
    return class_names, class_of_code


def table_with_classes(
    samples: pd.DataFrame,
    skipped: pd.DataFrame,
    source: Path,
    kind: str,
    classes: Sequence[str] | None,
    all_labels: Sequence[str],
    duplicate_rows: pd.DataFrame | None = None,
) -> SampleTable:
    """A :class:`SampleTable` of ``samples`` (with a ``label`` column of class names or labels),
    ``given_label`` added.

    The classes are ``classes``, which each of ``all_labels`` must name (:func:`match_classes`;
    ``label`` becomes the exact class name), else :func:`order_classes` of ``all_labels``.
    """
    samples = samples.copy()
    if classes is not None:
        class_names = tuple(str(c) for c in classes)
        lookup = match_classes(all_labels, class_names)
        _refuse_unknown_labels(lookup, class_names)
        samples["label"] = samples["label"].map(lookup).astype(object)  # a class's name exactly
    else:
        class_names = order_classes(all_labels)
    index = {name: i for i, name in enumerate(class_names)}
    samples["given_label"] = samples["label"].map(index).astype("int64")
    samples = samples[SAMPLE_COLUMNS + [c for c in ("manifest_row",) if c in samples]].reset_index(drop=True)
    kwargs = {}
    if duplicate_rows is not None:
        kwargs["duplicate_rows"] = duplicate_rows
    return SampleTable(samples, class_names, source, kind, skipped.reset_index(drop=True), **kwargs)


def check_usable(table: SampleTable, require_all_classes: bool = True) -> None:
    """:func:`check_trainable` when ``require_all_classes``, else only "at least one usable image"."""
    if require_all_classes:
        check_trainable(table)
    elif len(table) == 0:
        _raise_no_images(table)


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


def _raise_no_images(table: SampleTable) -> None:
    """DatasetError for a table without usable images, with what was skipped and a likely fix."""
    reasons = table.skipped["reason"].value_counts().to_dict() if len(table.skipped) else {}
    detail = f" ({len(table.skipped)} files skipped: {format_counts(reasons)})" if reasons else ""
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


def format_counts(counts: dict) -> str:
    """``{"missing": 3, "empty": 1}`` as ``"3 missing, 1 empty"``, largest count first."""
    return ", ".join(f"{v} {k}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1]))
