"""Decode a dataset's images once into a memory-mapped uint8 array on disk.

Training epochs read :attr:`ImageStore.pixels` and never touch PIL. The cache lives under
:func:`~labelaudit.data.cache_dir.cache_root` (never inside the user's input), keyed by every
file's path, size and modification time: a second run on unchanged files reuses it, a changed file
builds a new one.

Layout of one cache entry ``<cache_dir>/<key>/``:

- ``files-maxpx{P}.parquet``: the header pass: per sample ``width, height, mode, format, sha1, reason``.
- ``pixels-s{S}-c{C}.npy``: ``(M, S, S, C)`` uint8, one row per sample whose header was readable.
- ``decode-s{S}-c{C}.parquet``: rows of that array that failed to decode, with reasons; written
  after the pixels, so its presence marks a complete array.

Files are written under temporary names tagged with the writer's pid and renamed when complete;
each run deletes the temporaries of dead processes (:func:`labelaudit._atomic.remove_stale_temporaries`).
A damaged file (unreadable parquet, truncated ``.npy``, wrong shape) is deleted and rebuilt.
Decoding workers die with the process that started them.
"""

from __future__ import annotations

import hashlib
import logging
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from multiprocessing import get_all_start_methods, get_context
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import pandas as pd

from .._atomic import temporary_sibling
from ..errors import ConfigError
from ..reports import write_parquet
from ..resources import usable_cpus
from . import _decode
from .cache_dir import cache_root, default_cache_dir, entry_folders, is_cache_key, open_cache_entry
from .sources import HF_KIND, SKIPPED_COLUMNS, SampleTable, check_usable

CACHE_FORMAT_VERSION = 1
#: Pillow's own decompression-bomb error threshold (2 x its warning limit).
DEFAULT_MAX_PIXELS = 2 * 89_478_485
AUTO_SIZE_RANGE = (16, 64)
#: Below this many files the work runs in-process: a worker pool costs more than it saves.
_POOL_MIN_FILES = 512
_CHUNK = 128
_HEADER_COLUMNS = ("width", "height", "mode", "format", "sha1", "reason", "detail")
_STATUS_COLUMNS = ("position", "reason", "detail")

__all__ = [
    "AUTO_SIZE_RANGE",
    "CACHE_FORMAT_VERSION",
    "DEFAULT_MAX_PIXELS",
    "ImageStore",
    "ProgressCallback",
    "cache_root",
    "default_cache_dir",
    "entry_folders",
    "is_cache_key",
    "load_images",
    "open_cache_entry",
]

log = logging.getLogger(__name__)

ProgressCallback = Callable[..., None]
"""``progress(phase, done, total, extra="")``: called as work advances; the CLI draws bars from it.
``extra`` is a short status text (e.g. the selected fraction during training)."""


@dataclass(frozen=True)
class ImageStore:
    """Decoded images of a sample table, ready for training.

    Attributes
    ----------
    table : SampleTable
        The usable samples; row ``i`` of ``table.samples`` is image ``positions[i]`` of ``pixels``.
        Files that failed to read or decode are in ``table.skipped``.
    pixels : numpy.ndarray
        ``(M, S, S, C)`` uint8 array, memory-mapped read-only; ``M >= N``.
    positions : numpy.ndarray
        ``(N,)`` int64 row of ``pixels`` for each usable sample.
    files : pandas.DataFrame
        Per usable sample (aligned with ``table.samples``): ``width, height, mode, format, sha1``
        of the original file.
    image_size : int
        ``S``, the side of the square cached images.
    channels : int
        ``C``: 1 when every image is grayscale, else 3.
    cache_dir : pathlib.Path
        The cache entry holding the arrays.
    reused : bool
        True when the pixels came from an existing cache entry without decoding.
    """

    table: SampleTable
    pixels: np.ndarray
    positions: np.ndarray
    files: pd.DataFrame
    image_size: int
    channels: int
    cache_dir: Path
    reused: bool

    def __len__(self) -> int:
        return len(self.positions)

    def images(self, index: Iterable[int] | slice | None = None) -> np.ndarray:
        """Return ``(n, S, S, C)`` uint8 images of the usable samples at ``index`` (all if None)."""
        rows = self.positions if index is None else self.positions[index]
        return np.asarray(self.pixels[rows])


def load_images(
    table: SampleTable,
    *,
    image_size: int | None = None,
    cache_dir: str | os.PathLike | None = None,
    workers: int | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    progress: ProgressCallback | None = None,
    channels: int | None = None,
    require_all_classes: bool = True,
) -> ImageStore:
    """Decode (or reuse the cached decode of) every image in ``table``.

    Parameters
    ----------
    table : SampleTable
        From :func:`labelaudit.data.sources.load_source`.
    image_size : int, optional
        Side of the square cached images. Default: the median shorter side of the images,
        clamped to ``[16, 64]`` (the network sizes a CPU trains in minutes).
    cache_dir : path-like, optional
        Cache root; default :func:`default_cache_dir`. Must not be inside the source folder.
    workers : int, optional
        Decoding processes; default all available cores.
    max_pixels : int, default=178956970
        Images with more pixels are skipped as ``too_large`` without being decoded.
    progress : callable, optional
        ``progress(phase, done, total)`` with phases ``"read headers"`` and ``"decode"``.
    channels : {1, 3}, optional
        Channels of the cached images; default 1 when every image is grayscale, else 3. A
        trained model fixes it for the images it is applied to.
    require_all_classes : bool, default=True
        As in :func:`labelaudit.load_source`: False for evaluation or unlabelled sets.

    Returns
    -------
    ImageStore
        Files that failed are moved from ``table.samples`` to ``table.skipped``.

    Raises
    ------
    ConfigError
        Bad ``image_size``/``workers``, or a cache directory inside the source, that is a file
        or that cannot be written.
    DatasetError
        Fewer than two classes, or any class, has no decodable image.
    """
    if image_size is not None and not (isinstance(image_size, int) and 4 <= image_size <= 1024):
        raise ConfigError(f"image_size must be an integer in [4, 1024]; got {image_size!r}")
    if workers is not None and not (isinstance(workers, int) and workers >= 1):
        raise ConfigError(f"workers must be a positive integer; got {workers!r}")
    workers = workers or usable_cpus()
    root = cache_root(cache_dir).resolve()
    table.check_outside_input(root, "cache directory", "--cache-dir (or LABELAUDIT_CACHE_DIR)")
    entry = open_cache_entry(root, _cache_key(table))

    headers = _headers(table, entry, workers, max_pixels, progress)
    readable = headers["reason"] == ""
    if not readable.any():
        header_skips = _skips(table, headers, ~readable)
        check_usable(table.without(header_skips), require_all_classes)  # raises: nothing readable
    size = image_size or _auto_size(headers[readable])
    channels = _cache_channels(channels, headers[readable])
    decodable = np.flatnonzero(readable.to_numpy())
    decoded = _decoded_pixels(table, entry, decodable, size, channels, max_pixels, workers, progress)
    return _store(table, headers, decodable, decoded, entry, require_all_classes)


def _cache_channels(channels: int | None, readable_headers: pd.DataFrame) -> int:
    """``channels`` when given (1 or 3, else ConfigError), else 1 when every image is grayscale."""
    if channels not in (None, 1, 3):
        raise ConfigError(f"channels must be 1 or 3; got {channels!r}")
    return channels or (1 if readable_headers["mode"].isin(_decode.GRAY_MODES).all() else 3)


@dataclass(frozen=True)
class _Decoded:
    """The cached ``(M, S, S, C)`` pixels of the decodable rows, their failures, and whether the
    array came from an earlier run."""

    pixels: np.ndarray
    failures: pd.DataFrame
    reused: bool


def _decoded_pixels(
    table: SampleTable,
    entry: Path,
    decodable: np.ndarray,
    size: int,
    channels: int,
    max_pixels: int,
    workers: int,
    progress: ProgressCallback | None,
) -> _Decoded:
    """The pixels of the ``decodable`` rows of ``table`` from the cache entry, decoded first when
    no complete array is there. ConfigError when the array cannot be read back after writing."""
    # The decodable rows depend on max_pixels, so it is part of the name of the array they index.
    pixels_file = entry / f"pixels-s{size}-c{channels}-maxpx{max_pixels}.npy"
    status_file = entry / f"decode-s{size}-c{channels}-maxpx{max_pixels}.parquet"
    shape = (len(decodable), size, size, channels)
    cached = _load_decoded(pixels_file, status_file, shape)
    if cached is not None:
        return _Decoded(*cached, reused=True)
    _decode_all(table, decodable, pixels_file, status_file, size, channels, workers, progress)
    cached = _load_decoded(pixels_file, status_file, shape)
    if cached is None:
        raise ConfigError(
            f"the image cache in {str(entry)!r} cannot be read back right after writing it; "
            "check the disk, or pass another --cache-dir or set LABELAUDIT_CACHE_DIR"
        )
    return _Decoded(*cached, reused=False)


def _store(
    table: SampleTable,
    headers: pd.DataFrame,
    decodable: np.ndarray,
    decoded: _Decoded,
    entry: Path,
    require_all_classes: bool,
) -> ImageStore:
    """The :class:`ImageStore` of the samples whose header was read and whose pixels decoded; the
    others moved to ``skipped`` (:func:`check_usable` raises when too few remain)."""
    # Map failures back: decode positions are rows of `pixels`, i.e. indexes into `decodable`.
    failures = decoded.failures
    decode_reason = pd.Series("", index=headers.index, dtype=object)
    decode_detail = pd.Series("", index=headers.index, dtype=object)
    failed_rows = decodable[failures["position"].to_numpy(dtype=np.int64)]
    decode_reason.iloc[failed_rows] = failures["reason"].to_numpy()
    decode_detail.iloc[failed_rows] = failures["detail"].to_numpy()
    headers = headers.assign(
        reason=headers["reason"].where(headers["reason"] != "", decode_reason),
        detail=headers["detail"].where(headers["reason"] != "", decode_detail),
    )
    usable = (headers["reason"] == "").to_numpy()
    position_of_row = np.full(len(headers), -1, dtype=np.int64)
    position_of_row[decodable] = np.arange(len(decodable))

    kept = table.without(_skips(table, headers, ~usable))
    check_usable(kept, require_all_classes)
    files = headers.loc[usable, ["width", "height", "mode", "format", "sha1"]].reset_index(drop=True)
    return ImageStore(
        table=kept,
        pixels=decoded.pixels,
        positions=position_of_row[usable],
        files=files,
        image_size=decoded.pixels.shape[1],  # S and C: _load_decoded checked the array's shape
        channels=decoded.pixels.shape[3],
        cache_dir=entry,
        reused=decoded.reused,
    )


def _discard(*files: Path) -> None:
    """Delete damaged cache files (already gone is fine)."""
    for file in files:
        try:
            file.unlink()
        except FileNotFoundError:
            pass


def _load_decoded(pixels_file: Path, status_file: Path, shape: tuple[int, int, int, int]):
    """``(pixels, failures)`` of a complete cached array of ``shape``, or None to decode.

    A damaged pair (unreadable status parquet, truncated or garbage ``.npy``, wrong shape or
    dtype, failure rows outside the array) is deleted, so it is decoded again.
    """
    if not status_file.exists():
        return None  # never written, or a run in progress: the next decode replaces the pixels
    try:
        failures = pd.read_parquet(status_file)
        positions = failures["position"].to_numpy(dtype=np.int64)
        pixels = np.load(pixels_file, mmap_mode="r")
        valid = (
            set(_STATUS_COLUMNS) <= set(failures.columns)
            and bool(((positions >= 0) & (positions < shape[0])).all())
            and pixels.dtype == np.uint8
            and pixels.shape == shape
        )
    except Exception as exc:  # damage raises anything: ValueError, OSError, ArrowInvalid...
        log.warning("damaged image cache file in %s (%s); decoding again", pixels_file.parent, exc)
        valid = False
    if valid:
        return pixels, failures[list(_STATUS_COLUMNS)]
    pixels = None  # drop the memory map before deleting its file
    _discard(status_file, pixels_file)
    return None


def _cache_key(table: SampleTable) -> str:
    digest = hashlib.sha256(f"labelaudit-cache-v{CACHE_FORMAT_VERSION}\n".encode())
    cols = table.samples[["path", "file_size", "mtime_ns"]]
    for path, size, mtime in cols.itertuples(index=False):
        digest.update(f"{path}\t{size}\t{mtime}\n".encode())
    return digest.hexdigest()[:24]


def _skips(table: SampleTable, headers: pd.DataFrame, mask) -> pd.DataFrame:
    mask = np.asarray(mask, dtype=bool)
    frame = table.samples.loc[mask, ["sample_id", "path"]].copy()
    frame["reason"] = headers.loc[mask, "reason"].to_numpy()
    frame["detail"] = headers.loc[mask, "detail"].to_numpy()
    if table.kind == HF_KIND and "manifest_row" in table.samples:  # from a dataset row: name it
        rows = table.samples.loc[mask, "manifest_row"].to_numpy()
        frame["detail"] = [f"row {r}: {d}" for r, d in zip(rows, frame["detail"])]
    return frame[SKIPPED_COLUMNS].astype(object)


def _auto_size(readable_headers: pd.DataFrame) -> int:
    shorter = np.minimum(readable_headers["width"], readable_headers["height"])
    low, high = AUTO_SIZE_RANGE
    return int(np.clip(int(np.median(shorter)), low, high))


def _run_chunks(
    task,
    chunks: list[tuple],
    sizes: list[int],
    workers: int,
    phase: str,
    progress: ProgressCallback | None,
    keep=None,
) -> list:
    """Run ``task(*chunk)`` over chunks of ``sizes`` files (in a process pool when worth it);
    results in chunk order, each passed through ``keep`` (if given) as it arrives, so only the
    compact form of every chunk's result is held."""
    keep = keep or (lambda result: result)
    total = sum(sizes)
    results: list = [None] * len(chunks)
    done = 0
    if progress:
        progress(phase, 0, total)
    if workers > 1 and total >= _POOL_MIN_FILES:
        # Workers are forked by this thread, which waits for them below: they die with it
        # (see _decode.init_worker), so a killed run leaves no worker behind.
        pool = ProcessPoolExecutor(
            max_workers=workers,
            mp_context=_pool_context(),
            initializer=_decode.init_worker,
            initargs=(os.getpid(),),
        )
        try:
            futures = {pool.submit(task, *chunk): i for i, chunk in enumerate(chunks)}
            for future in as_completed(futures):
                i = futures[future]
                results[i] = keep(future.result())
                done += sizes[i]
                if progress:
                    progress(phase, done, total)
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)  # Ctrl-C: don't wait for the queued chunks
            raise
        pool.shutdown(wait=True)
    else:
        for i, chunk in enumerate(chunks):
            results[i] = keep(task(*chunk))
            done += sizes[i]
            if progress:
                progress(phase, done, total)
    return results


def _pool_context():
    """fork where available: workers start at once and need no ``if __name__ == "__main__"`` guard
    in the user's script. Safe although the parent may hold torch threads: workers only run
    Pillow and numpy code from :mod:`labelaudit.data._decode`, never torch."""
    methods = get_all_start_methods()
    return get_context("fork" if "fork" in methods else "spawn")


def _headers(
    table: SampleTable, entry: Path, workers: int, max_pixels: int, progress: ProgressCallback | None
) -> pd.DataFrame:
    headers_file = entry / f"files-maxpx{max_pixels}.parquet"
    if headers_file.exists():
        try:
            cached = pd.read_parquet(headers_file)
            if set(_HEADER_COLUMNS) <= set(cached.columns) and len(cached) == len(table.samples):
                return cached
        except Exception as exc:  # a damaged parquet raises many types
            log.warning("damaged image cache file %s (%s); reading the headers again", headers_file, exc)
        _discard(headers_file)
    paths = table.samples["path"].tolist()
    chunks = [(paths[i : i + _CHUNK], max_pixels) for i in range(0, len(paths), _CHUNK)]
    sizes = [len(chunk[0]) for chunk in chunks]
    results = _run_chunks(
        _decode.header_chunk, chunks, sizes, workers, "read headers", progress, keep=_as_columns
    )
    headers = pd.DataFrame(
        {name: [value for chunk in results for value in chunk[j]] for j, name in enumerate(_HEADER_COLUMNS)}
    )
    del results
    headers = headers.astype({"width": "int64", "height": "int64"})
    # A permission fix changes neither size nor mtime: never cache an "unreadable" verdict.
    if not headers["reason"].isin(["unreadable", "missing"]).any():
        write_parquet(headers_file, headers)
    return headers


def _as_columns(rows: list[dict]) -> list[list]:
    """A chunk's header dicts as one list per :data:`_HEADER_COLUMNS` entry: a dict per file
    would cost about twice its values (docs/benchmarks.md, "Scale")."""
    return [[row[name] for row in rows] for name in _HEADER_COLUMNS]


def _decode_all(
    table: SampleTable,
    decodable: np.ndarray,
    pixels_file: Path,
    status_file: Path,
    size: int,
    channels: int,
    workers: int,
    progress: ProgressCallback | None,
) -> pd.DataFrame:
    tmp_pixels = temporary_sibling(pixels_file, ".npy")
    array = np.lib.format.open_memmap(
        tmp_pixels, mode="w+", dtype=np.uint8, shape=(len(decodable), size, size, channels)
    )
    del array  # workers reopen the file; the header is already written
    paths = table.samples["path"].to_numpy()[decodable].tolist()
    positions = list(range(len(decodable)))
    chunks = [
        (str(tmp_pixels), positions[i : i + _CHUNK], paths[i : i + _CHUNK], size, channels)
        for i in range(0, len(paths), _CHUNK)
    ]
    try:
        sizes = [len(chunk[1]) for chunk in chunks]
        results = _run_chunks(_decode.decode_chunk, chunks, sizes, workers, "decode", progress)
        os.replace(tmp_pixels, pixels_file)
    finally:
        if tmp_pixels.exists():
            tmp_pixels.unlink()
    failures = pd.DataFrame(
        [row for chunk in results for row in chunk], columns=["position", "reason", "detail"]
    ).astype({"position": "int64", "reason": object, "detail": object})
    write_parquet(status_file, failures)
    return failures
