"""Features of a dataset's images from a frozen pretrained backbone, computed once and cached on disk.

:func:`compute_embeddings` reads each original file (not the small decoded cache), applies the
backbone's own preprocessing and stores its pooled penultimate features as float16. A method
trained on these ``(N, D)`` features instead of pixels audits large photos in minutes on a CPU.

The cache's layout and its entries are :mod:`labelaudit.nets.embedding_cache`'s.
"""

from __future__ import annotations

import os
import queue
import threading
import time
import warnings
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

import numpy as np
import torch
from PIL import Image, ImageOps

from ..data import _decode
from ..data.images import cache_root
from ..errors import ConfigError, DatasetError
from .backbones import Backbone
from .embedding_cache import EMBEDDINGS_FORMAT_VERSION, clear_cache, entry_file, load_entry, write_entry

if TYPE_CHECKING:
    from ..data.images import ImageStore

# The cache's format version and its cleaner are importable from here too, where they used to live.
__all__ = [
    "DEFAULT_CPU_BATCH_SIZE",
    "EMBEDDINGS_FORMAT_VERSION",
    "Embeddings",
    "clear_cache",
    "compute_embeddings",
    "embed_files",
    "open_rgb",
]

#: Images per forward pass on the CPU: small batches keep the activations in the CPU's cache
#: (docs/benchmarks.md, "Embedding speed per backbone").
DEFAULT_CPU_BATCH_SIZE = 16

ProgressCallback = Callable[..., None]
"""``progress(phase, done, total, extra="")`` with phase ``"embed"``, called after each batch;
``extra`` is the throughput so far, e.g. ``"412 img/s"``."""


@dataclass
class Embeddings:
    """Backbone features of the usable samples of an :class:`~labelaudit.data.images.ImageStore`.

    Attributes
    ----------
    features : numpy.ndarray
        ``(N, D)`` float16, read-only; row ``i`` belongs to ``store.table.samples`` row ``i``.
        Memory-mapped from the cache when the samples are its rows in order (distinct images
        sorted by content hash), else an in-memory copy gathered from it.
    path : pathlib.Path
        The cache entry's ``.npy`` file: ``(U, D)`` float16, one row per distinct image.
    key : str
        24 hex digits naming the entry.
    reused : bool
        True when the features came from the cache without running the backbone.
    seconds : float
        Wall time of this call.
    backbone : str
    weights_id : str
        :attr:`labelaudit.nets.backbones.Backbone.weights_id` of the weights used.
    preprocess : dict
        :meth:`labelaudit.nets.backbones.Preprocess.to_dict` of the preprocessing used.
    images_per_second : float or None
        Distinct images embedded per second of that pass (decode + forward); None when reused.
    """

    features: np.ndarray
    path: Path
    key: str
    reused: bool
    seconds: float
    backbone: str
    weights_id: str
    preprocess: dict
    images_per_second: float | None


def compute_embeddings(
    store: "ImageStore",
    backbone: Backbone,
    *,
    cache_dir: str | os.PathLike | None = None,
    batch_size: int | None = None,
    device: str | torch.device = "cpu",
    progress: ProgressCallback | None = None,
) -> Embeddings:
    """Embed every usable image of ``store`` with ``backbone``, or reuse the cached embedding.

    Parameters
    ----------
    store : ImageStore
        From :func:`labelaudit.data.images.load_images`; its ``files["sha1"]`` identifies each image.
    backbone : Backbone
        From :func:`labelaudit.nets.backbones.load_backbone`.
    cache_dir : path-like, optional
        Cache root; default :func:`labelaudit.data.images.default_cache_dir`. Must not be inside the
        input folder.
    batch_size : int, optional
        Images per forward pass; default :data:`DEFAULT_CPU_BATCH_SIZE` (16) on the CPU, 64 on CUDA.
    device : {"cpu", "cuda", "cuda:<n>", "auto"} or torch.device, default="cpu"
        On CUDA the forward runs under float16 autocast.
    progress : callable, optional
        ``progress("embed", done, total, extra)`` after each batch; ``total`` counts distinct images.

    Returns
    -------
    Embeddings
        ``features`` ``(N, D)`` float16 aligned with ``store.table.samples``.

    Raises
    ------
    ConfigError
        Bad ``batch_size`` or ``device``; a cache directory inside the input, that is a file or
        cannot be written.
    DatasetError
        An image that was readable when ``store`` was loaded cannot be read now.
    """
    start = time.perf_counter()
    device = _resolve_device(device)
    batch_size = _check_batch_size(batch_size, device)
    sha1 = store.files["sha1"].astype(str).to_numpy()
    paths = store.table.samples["path"].astype(str).to_numpy()
    if len(sha1) != len(paths) or (sha1 == "").any():
        raise ValueError("store.files['sha1'] must hold one content hash per row of store.table.samples")
    unique, first, inverse = np.unique(sha1, return_index=True, return_inverse=True)  # (U,), (U,), (N,)
    root = cache_root(cache_dir).resolve()
    store.table.check_outside_input(root, "cache directory", "--cache-dir (or LABELAUDIT_CACHE_DIR)")
    array_file = entry_file(root, backbone, unique)
    cached, rate = _cached_or_embedded(
        array_file, paths[first].tolist(), unique, backbone, batch_size, device, progress
    )
    if len(unique) == len(sha1) and (inverse == np.arange(len(sha1))).all():
        features = cached  # samples are the cache rows in order: keep the memory map
    else:
        features = cached[inverse]  # (N, D) gathered: duplicates and any order
        features.setflags(write=False)
    return Embeddings(
        features=features,
        path=array_file,
        key=array_file.stem,
        reused=rate is None,
        seconds=time.perf_counter() - start,
        backbone=backbone.name,
        weights_id=backbone.weights_id,
        preprocess=backbone.preprocess.to_dict(),
        images_per_second=rate,
    )


def embed_files(
    paths: list[str],
    backbone: Backbone,
    *,
    batch_size: int | None = None,
    device: str | torch.device = "cpu",
    progress: ProgressCallback | None = None,
) -> np.ndarray:
    """Embed image files without any cache (e.g. new images to predict on).

    Files are opened exactly as :func:`compute_embeddings` opens them, so a file gets the same
    features here as there (up to float16 rounding).

    Parameters
    ----------
    paths : list of str
        Image files; each must open with Pillow.
    backbone : Backbone
    batch_size, device, progress
        As in :func:`compute_embeddings`.

    Returns
    -------
    numpy.ndarray
        ``(n, D)`` float32, row ``i`` for ``paths[i]``.

    Raises
    ------
    DatasetError
        A file that cannot be read as an image (the message names it).
    """
    device = _resolve_device(device)
    batch_size = _check_batch_size(batch_size, device)
    out = np.empty((len(paths), backbone.dim), dtype=np.float32)
    for begin, features in _embed(list(map(str, paths)), backbone, batch_size, device, progress):
        out[begin : begin + len(features)] = features
    return out


def open_rgb(path: str, min_side: int) -> Image.Image:
    """Open an image file as an RGB PIL image the way the image cache decodes it.

    EXIF orientation is applied; transparency is composited over white; 16-bit and float images
    are scaled to 8 bits; CMYK, palette and grayscale become RGB. A JPEG is decoded at the
    smallest DCT scale whose sides stay >= ``min_side`` (much faster on large photos and
    invisible after resizing the shorter side to ``min_side``).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with Image.open(path) as img:
            img.draft("RGB", (min_side, min_side))
            img.load()
            img = ImageOps.exif_transpose(img)
            return _decode.to_channels(img, 3)


# ------------------------------------------------------------------------------------------- private


def _check_batch_size(batch_size: int | None, device: torch.device) -> int:
    """``batch_size`` checked, or the default for ``device``: 16 on the CPU, 64 on CUDA."""
    if batch_size is None:
        return 64 if device.type == "cuda" else DEFAULT_CPU_BATCH_SIZE
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or not 1 <= batch_size <= 4096:
        raise ConfigError(f"batch_size must be an integer in [1, 4096]; got {batch_size!r}")
    return batch_size


def _resolve_device(device: str | torch.device) -> torch.device:
    """A torch.device from ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:<n>"`` or a torch.device."""
    if isinstance(device, torch.device):
        return device
    if not isinstance(device, str) or not (device in ("auto", "cpu", "cuda") or device.startswith("cuda:")):
        raise ConfigError(f"device must be auto, cpu or cuda; got {device!r}")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(
            "--device cuda was requested but no CUDA GPU is available; use --device cpu or auto"
        )
    return torch.device(device)


def _cached_or_embedded(
    array_file: Path,
    paths: list[str],
    unique_sha1: np.ndarray,
    backbone: Backbone,
    batch_size: int,
    device: torch.device,
    progress: ProgressCallback | None,
) -> tuple[np.ndarray, float | None]:
    """``(features, images per second)`` of the cache entry ``array_file``: the entry as it is (rate
    None) when complete and whole, else embedded afresh from ``paths`` (one per distinct image, in
    ``unique_sha1`` order), written and read back."""
    cached = load_entry(array_file, unique_sha1, backbone.dim)
    if cached is not None:
        return cached, None
    start = time.perf_counter()
    write_entry(array_file, unique_sha1, backbone, _embed(paths, backbone, batch_size, device, progress))
    rate = len(paths) / max(time.perf_counter() - start, 1e-9)
    cached = load_entry(array_file, unique_sha1, backbone.dim)
    if cached is None:
        raise ConfigError(
            f"the embedding cache {str(array_file)!r} cannot be read back right after writing it; "
            "check the disk, or pass another --cache-dir or set LABELAUDIT_CACHE_DIR"
        )
    return cached, rate


def _embed(
    paths: list[str],
    backbone: Backbone,
    batch_size: int,
    device: torch.device,
    progress: ProgressCallback | None,
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(begin, features)``: ``(b, D)`` float32 features of ``paths[begin:begin + b]``, in order."""
    total = len(paths)
    if progress:
        progress("embed", 0, total, "")
    if total == 0:
        return
    module = backbone.inference_module(device)
    preprocess = backbone.preprocess
    autocast = torch.autocast("cuda", dtype=torch.float16) if device.type == "cuda" else nullcontext()
    start, done = time.perf_counter(), 0
    # On a CPU the forward keeps every core busy and decoding ahead gains nothing
    # (docs/benchmarks.md); with a GPU computing, the CPU is free to decode meanwhile.
    batches = _prefetched if device.type == "cuda" else _sequential
    for begin, pixels in batches(paths, preprocess, batch_size):
        x = torch.from_numpy(pixels).to(device, non_blocking=True)  # (B, H, W, 3) uint8
        x = preprocess.normalize(x.permute(0, 3, 1, 2))  # (B, 3, H, W) float32, channels_last strides
        with torch.inference_mode(), autocast:
            features = module(x)  # (B, D)
        features = features.float().cpu().numpy()
        bad = ~np.isfinite(features).all(axis=1)
        if bad.any():  # damaged weights, or float16 overflow under CUDA autocast
            raise ConfigError(
                f"the {backbone.name} weights ({backbone.weights_id}) give NaN or infinite features for "
                f"{paths[begin + int(np.argmax(bad))]!r}; check the weights file, or use --device cpu"
            )
        yield begin, features
        done += len(pixels)
        if progress:
            progress("embed", done, total, f"{done / max(time.perf_counter() - start, 1e-9):.0f} img/s")


def _sequential(paths: list[str], preprocess, batch_size: int) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(begin, pixels)`` batches, ``(B, crop, crop, 3)`` uint8, decoded when asked for."""
    for begin in range(0, len(paths), batch_size):
        yield begin, _load_batch(paths[begin : begin + batch_size], preprocess)


def _prefetched(paths: list[str], preprocess, batch_size: int) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(begin, pixels)`` batches, ``(B, crop, crop, 3)`` uint8, decoding the next batch in a
    background thread while the caller runs the network (Pillow releases the GIL while decoding)."""
    batches: queue.Queue = queue.Queue(maxsize=1)
    stop = threading.Event()

    def put(item) -> None:
        while not stop.is_set():  # the consumer may have stopped early (an error, Ctrl-C)
            try:
                batches.put(item, timeout=0.1)
                return
            except queue.Full:
                pass

    def work() -> None:
        try:
            for begin in range(0, len(paths), batch_size):
                if stop.is_set():
                    return
                put((begin, _load_batch(paths[begin : begin + batch_size], preprocess)))
        except BaseException as exc:  # handed to the consumer, which raises it
            put(exc)

    thread = threading.Thread(target=work, name="labelaudit-embed-decode", daemon=True)
    thread.start()
    try:
        for _ in range(0, len(paths), batch_size):
            item = batches.get()
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join()


def _load_batch(paths: list[str], preprocess) -> np.ndarray:
    """``(B, crop, crop, 3)`` uint8 preprocessed pixels of ``paths``."""
    out = np.empty((len(paths), preprocess.crop_size, preprocess.crop_size, 3), dtype=np.uint8)
    for i, path in enumerate(paths):
        try:
            out[i] = preprocess.pixels(open_rgb(path, preprocess.resize_size))
        except Exception as exc:  # any decoder error: name the file
            reason, detail = _decode.classify_error(exc)
            raise DatasetError(
                f"image {path!r} cannot be read for embedding ({reason}: {detail}); it must open with "
                "Pillow: fix or remove the file (and run again to refresh the image cache)"
            ) from None
    return out
