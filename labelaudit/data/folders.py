"""Read an image folder: one subfolder per class, images in any nested folders inside a class.

Hidden files and folders (``.x``, ``__MACOSX``) are ignored; every other file is a sample or a
skip with its reason (another extension, an image outside a class folder, a name that is not
UTF-8, a sub-folder that cannot be listed).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import pandas as pd

from ..errors import DatasetError
from .classes import format_counts, table_with_classes
from .file_checks import stat_rows
from .sample_table import (
    IMAGE_EXTENSIONS,
    SKIPPED_COLUMNS,
    ProgressCallback,
    SampleTable,
    displayable_path,
    is_utf8,
)


def load_folder(
    root: Path, classes: Sequence[str] | None, progress: ProgressCallback | None = None
) -> SampleTable:
    """Read the image folder ``root`` (resolved) into a :class:`SampleTable`; the classes are its
    subfolders' names, or ``classes`` (each subfolder must name one).

    Raises :class:`DatasetError` when ``root`` or a class folder cannot be listed, when there is no
    class subfolder, or when a class folder holds no usable file.
    """
    try:
        entries = sorted(os.scandir(root), key=lambda e: e.name)
    except OSError as exc:
        raise _unreadable_folder(root, exc) from exc
    folders = [e.name for e in entries if e.is_dir() and not _is_hidden(e.name)]
    # A folder name that is not UTF-8 cannot be a class name in a report: its files are skipped.
    class_dirs = [name for name in folders if is_utf8(name)]
    rows: list[tuple[str, str, str]] = []
    skipped = _images_outside_class_folders(entries)
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
        class_rows, class_skipped = _read_class_folder(root, class_name)
        rows += class_rows
        skipped += class_skipped
    samples, missing = stat_rows(rows, progress)
    skipped_df = pd.concat(
        [pd.DataFrame(skipped, columns=SKIPPED_COLUMNS).astype(object), missing], ignore_index=True
    )
    return table_with_classes(samples, skipped_df, root, "folder", classes, class_dirs)


def unlabeled_folder_rows(
    root: Path,
) -> tuple[list[tuple[str, str, str]], list[tuple[str, str, str, str]]]:
    """Every image under ``root``, in class subfolders or not, as :func:`walk_images` rows with an
    empty label, and the skips. Raises :class:`DatasetError` when ``root`` cannot be listed."""
    try:
        return walk_images(root, root, "")
    except OSError as exc:
        raise _unreadable_folder(root, exc) from exc


def _unreadable_folder(root: Path, exc: OSError) -> DatasetError:
    return DatasetError(
        f"folder {str(root)!r} cannot be read: {exc.strerror or exc}; make it readable "
        "(e.g. chmod -R u+rX) or pass another source"
    )


def _images_outside_class_folders(entries: list[os.DirEntry]) -> list[tuple[str, str, str, str]]:
    """Skips for the image files directly in the source folder (``entries``), in their order."""
    skipped = []
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
    return skipped


def _read_class_folder(
    root: Path, class_name: str
) -> tuple[list[tuple[str, str, str]], list[tuple[str, str, str, str]]]:
    """:func:`walk_images` of one class folder; DatasetError when it cannot be listed or has no
    image it can use."""
    class_root = root / class_name
    try:
        class_rows, class_skipped = walk_images(class_root, root, class_name)
    except OSError as exc:
        raise DatasetError(
            f"class folder {str(class_root)!r} cannot be read: {exc.strerror or exc}; make it "
            f"readable (e.g. chmod -R u+rX {str(class_root)!r}) or remove it"
        ) from exc
    if not class_rows:
        reasons = pd.Series([r[2] for r in class_skipped], dtype=object).value_counts().to_dict()
        detail = f" it can use ({len(class_skipped)} skipped: {format_counts(reasons)})" if reasons else ""
        raise DatasetError(
            f"class folder {str(class_root)!r} contains no images{detail}; add images to it or remove it"
        )
    return class_rows, class_skipped


def walk_images(
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
        _, skipped = walk_images(folder, root, "")  # no rows: every path below is non-UTF-8
    except OSError:
        skipped = []
    if not skipped:
        shown = displayable_path(folder.name)
        skipped = [
            (shown, displayable_path(folder), "non_utf8_name", f"the folder name {shown} is not valid UTF-8")
        ]
    return skipped


def _is_hidden(name: str) -> bool:
    return name.startswith(".") or name.startswith("__MACOSX")


def _has_image_ext(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS
