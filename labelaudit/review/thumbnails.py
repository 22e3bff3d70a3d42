"""Thumbnails of the flagged images for the review page: small JPEGs made in threads, with a
reason for each image that could not be read (that sample gets a placeholder, never an error)."""

from __future__ import annotations

import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import pandas as pd
from PIL import Image, ImageOps

from ..data._decode import GRAY_MODES, classify_error, to_channels
from ..resources import usable_cpus

ProgressCallback = Callable[..., None]


def make_thumbnails(
    paths: Sequence[str],
    folder: Path,
    *,
    size: int = 96,
    workers: Optional[int] = None,
    progress: Optional[ProgressCallback] = None,
) -> tuple[np.ndarray, pd.DataFrame]:
    """Write ``folder/<position>.jpg`` for each image in ``paths``.

    A file that cannot be read or decoded gets no thumbnail and a row in the returned table
    (``position, path, reason, detail``; reasons as in ``skipped.csv``). Pillow decodes and
    encodes without holding the GIL, so threads use the cores without a process pool's start-up.

    Returns
    -------
    has_thumb : ndarray of bool, shape (len(paths),)
    unreadable : DataFrame
    """
    workers = max(1, workers or usable_cpus())
    has_thumb = np.zeros(len(paths), dtype=bool)
    failures: list[tuple[int, str, str, str]] = []
    chunk = max(1, min(256, -(-len(paths) // (4 * workers))))  # several chunks per thread, for balance

    def work(start: int) -> list[tuple[int, str, str, str]]:
        failed = []
        for position in range(start, min(start + chunk, len(paths))):
            error = thumbnail(paths[position], folder / f"{position}.jpg", size)
            if error is None:
                has_thumb[position] = True
            else:
                failed.append((position, paths[position], *error))
        return failed

    done = 0
    if progress is not None:
        progress("thumbnails", 0, len(paths))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for start, failed in zip(range(0, len(paths), chunk), pool.map(work, range(0, len(paths), chunk))):
            failures += failed
            done = min(start + chunk, len(paths))
            if progress is not None:
                progress("thumbnails", done, len(paths))
    return has_thumb, pd.DataFrame(failures, columns=["position", "path", "reason", "detail"])


def thumbnail(source: str, target: Path, size: int) -> tuple[str, str] | None:
    """Write a JPEG of ``source`` at most ``size`` pixels a side; ``(reason, detail)`` when it fails.

    EXIF orientation is applied, transparency composited over white, 16-bit and float images
    scaled to 8 bits; grayscale stays grayscale. Never raises for a bad image; raises ``OSError``
    when ``target`` cannot be written.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(source) as img:
                channels = 1 if img.mode in GRAY_MODES else 3
                img.draft("L" if channels == 1 else "RGB", (size, size))  # JPEG: decode at a reduced scale
                img.load()
                img = to_channels(ImageOps.exif_transpose(img), channels)  # a new image: outlives the file
                img.thumbnail((size, size), Image.Resampling.BICUBIC)
    except Exception as exc:  # any decoder failure is a placeholder, never fatal
        return classify_error(exc)
    img.save(target, "JPEG", quality=88)  # a failed write (disk full) is not the image's fault: raised
    return None
