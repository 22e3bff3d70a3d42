"""The sample table: what every later stage reads instead of the source, and its vocabulary.

Glossary used throughout the package:

- ``N``: number of samples, ``K``: number of classes.
- ``class_names``: the ``K`` class names in a stable order (numeric order when every label is an
  integer, otherwise sorted as text); ``given_label`` is an index into it.
- ``sample_id``: a string unique per sample: the path relative to the image folder, the manifest's
  id column, or the path as written in the manifest; for a Hugging Face dataset its id column,
  the image's unique ``path`` text, or ``row-000123``.

Files that cannot be used are never fatal on their own: they are set aside in ``skipped`` with a
reason code (see :data:`SKIP_REASONS`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from ..errors import ConfigError

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
    "no_image": "a Hugging Face dataset row whose image cell is null",
}


#: The folder under the image cache root that holds the images extracted from Hugging Face datasets.
EXTRACTED_FOLDER = "embedded-images"


#: Classes with fewer samples than this are reported as too small to audit reliably.
FEW_SAMPLES_THRESHOLD = 10


SAMPLE_COLUMNS = ["sample_id", "path", "label", "given_label", "file_size", "mtime_ns"]


SKIPPED_COLUMNS = ["sample_id", "path", "reason", "detail"]


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

    Computed on Arrow strings, then ``dirname`` on the distinct remainders only: no Python call
    per path (docs/benchmarks.md, "Scale", measures what that saves on a large manifest).
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    values = np.asarray(paths, dtype=object)
    heads: set[str] = set()
    for start in range(0, len(values), _FOLDER_BATCH):  # batches: the Arrow copy stays small
        text = pa.array(values[start : start + _FOLDER_BATCH], type=pa.string())
        # up to the last "/"
        heads.update(pc.unique(pc.replace_substring_regex(text, r"[^/]*$", "")).to_pylist())
    release_arrow_memory()
    return {os.path.dirname(head) if head.rstrip("/") else head for head in heads}


def release_arrow_memory() -> None:
    """Return the blocks pyarrow's allocator keeps after its arrays are freed to the system."""
    import pyarrow as pa

    pa.default_memory_pool().release_unused()


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
    kind : {"folder", "parquet", "csv", "huggingface"}
        What the source is ("huggingface": a Hugging Face dataset file, ``save_to_disk``
        folder or ``datasets.Dataset``, whose ``path`` are its images extracted to the cache).
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
        """The folder that relative paths refer to: the image folder (or a dataset's
        ``save_to_disk`` folder) or the manifest's folder."""
        if self.kind == "folder" or (self.kind == "huggingface" and self.source.is_dir()):
            return self.source
        return self.source.parent

    def input_folder_containing(self, path: str | os.PathLike) -> Path | None:
        """The input folder that ``path`` lies in (or is), or None when it is outside the input.

        The input is the image folder; for a manifest, every folder holding one of its images
        (a run directory beside the manifest is fine, one among the images is not).
        """
        target = Path(path).expanduser().resolve()
        if self.kind == "folder":
            folders = {self.source}
        elif self.kind == "huggingface":
            # The dataset, and the folders of images it refers to by path; not the cache, where
            # its embedded images were extracted.
            names = parent_folders(self.samples["path"]) | parent_folders(self.skipped["path"])
            folders = {self.source} | {Path(n) for n in names if f"/{EXTRACTED_FOLDER}/" not in f"{n}/"}
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
