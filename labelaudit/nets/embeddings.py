"""Features of a dataset's images from a frozen pretrained backbone, computed once and cached on disk.

:func:`compute_embeddings` reads each original file (not the small decoded cache), applies the
backbone's own preprocessing and stores its pooled penultimate features as float16. A method
trained on these ``(N, D)`` features instead of pixels audits large photos in minutes on a CPU.

Cache layout, under the cache root (:func:`labelaudit.data.images.default_cache_dir` or ``cache_dir``)::

    embeddings/<backbone>/<key>.npy       (U, D) float16, one row per distinct image content
    embeddings/<backbone>/<key>.parquet   column ``sha1``: the content hash of each row, sorted

``key`` hashes the format version, the backbone name, the weights' identity, the preprocessing
and the sorted distinct SHA-1s of the images' bytes: the same images reuse the entry whatever
their paths, order or duplicates; other weights or another preprocessing get another entry.
The ``.npy`` is written under a temporary name and renamed when complete, then the sidecar;
the sidecar's presence marks a complete entry. A damaged entry (unreadable sidecar, truncated
array, wrong shape) is deleted and computed again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import queue
import shutil
import threading
import time
import warnings
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from PIL import Image, ImageOps

from .._atomic import atomic_path, remove_stale_temporaries, temporary_sibling
from ..data import _decode
from ..data.images import cache_root, entry_folders, is_cache_key
from ..errors import ConfigError, DatasetError
from .backbones import PRETRAINED_BACKBONES, Backbone

if TYPE_CHECKING:
    from ..data.images import ImageStore

EMBEDDINGS_FORMAT_VERSION = 1
#: Images per forward pass on the CPU: small batches keep activations in cache (2 cores: 16
#: images/batch embed up to 1.5x faster than 64 with EfficientNets, as fast with ResNets).
DEFAULT_CPU_BATCH_SIZE = 16
_SIDECAR_META = b"labelaudit.nets.embeddings"

log = logging.getLogger(__name__)

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
        Images per forward pass; default 16 on the CPU, 64 on CUDA. On 2 CPU cores 16 measured
        as fast as 32 or 64 for ResNets and up to 1.5x faster for EfficientNets (activations
        stay in cache).
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
    from ..data.images import open_cache_entry

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
    # checks it is writable; may raise ConfigError
    folder = open_cache_entry(root / "embeddings", backbone.name)
    remove_stale_temporaries(folder)
    key = _cache_key(backbone, unique)
    array_file, sidecar = folder / f"{key}.npy", folder / f"{key}.parquet"

    cached = _load_entry(array_file, sidecar, unique, backbone.dim)
    reused = cached is not None
    rate = None
    if cached is None:
        rate = _write_entry(
            array_file, sidecar, paths[first].tolist(), unique, backbone, batch_size, device, progress
        )
        cached = _load_entry(array_file, sidecar, unique, backbone.dim)
        if cached is None:
            raise ConfigError(
                f"the embedding cache {str(array_file)!r} cannot be read back right after writing it; "
                "check the disk, or pass another --cache-dir or set LABELAUDIT_CACHE_DIR"
            )
    if len(unique) == len(sha1) and (inverse == np.arange(len(sha1))).all():
        features = cached  # samples are the cache rows in order: keep the memory map
    else:
        features = cached[inverse]  # (N, D) gathered: duplicates and any order
        features.setflags(write=False)
    return Embeddings(
        features=features,
        path=array_file,
        key=key,
        reused=reused,
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


def _cache_key(backbone: Backbone, unique_sha1: np.ndarray) -> str:
    """24 hex digits from the format, backbone, weights, preprocessing and sorted distinct SHA-1s."""
    header = {
        "format": EMBEDDINGS_FORMAT_VERSION,
        "backbone": backbone.name,
        "weights_id": backbone.weights_id,
        "preprocess": backbone.preprocess.to_dict(),
    }
    digest = hashlib.sha256(json.dumps(header, sort_keys=True).encode() + b"\n")
    digest.update("\n".join(unique_sha1.tolist()).encode())
    return digest.hexdigest()[:24]


def _load_entry(array_file: Path, sidecar: Path, unique_sha1: np.ndarray, dim: int) -> np.ndarray | None:
    """The cached ``(U, D)`` float16 memory map when the entry is complete and whole, else None.

    A damaged entry (unreadable sidecar, other hashes, truncated or garbage ``.npy``, wrong
    shape or dtype, NaN or infinite values) is deleted, so it is computed again.
    """
    if not sidecar.exists():
        return None  # never written, or a run in progress: the next write replaces the array
    try:
        hashes = pq.read_table(sidecar, columns=["sha1"]).column("sha1").to_numpy(zero_copy_only=False)
        features = np.load(array_file, mmap_mode="r")
        valid = (
            features.dtype == np.float16
            and features.shape == (len(unique_sha1), dim)
            and len(hashes) == len(unique_sha1)
            and bool((hashes.astype(str) == unique_sha1).all())
            and bool(np.isfinite(features).all())  # same size, bytes overwritten: NaN would fail every scan
        )
    except Exception as exc:  # damage raises anything: ValueError, OSError, ArrowInvalid...
        log.warning("damaged embedding cache %s (%s); computing it again", array_file, exc)
        valid = False
    if valid:
        return features
    features = None  # drop the memory map before deleting its file
    for file in (sidecar, array_file):
        try:
            file.unlink()
        except FileNotFoundError:
            pass
    return None


def _write_entry(
    array_file: Path,
    sidecar: Path,
    paths: list[str],
    unique_sha1: np.ndarray,
    backbone: Backbone,
    batch_size: int,
    device: torch.device,
    progress: ProgressCallback | None,
) -> float:
    """Embed ``paths`` (one per distinct image, in ``unique_sha1`` order) into a new cache entry;
    return images per second."""
    start = time.perf_counter()
    tmp = temporary_sibling(array_file, ".npy")
    try:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16, shape=(len(paths), backbone.dim))
        for begin, features in _embed(paths, backbone, batch_size, device, progress):
            if np.abs(features).max(initial=0.0) > np.finfo(np.float16).max:
                raise ConfigError(
                    f"the {backbone.name} weights ({backbone.weights_id}) give features beyond float16's "
                    f"range (|x| > 65504), which the embedding cache stores; check the weights file"
                )
            out[begin : begin + len(features)] = features  # float32 -> float16
        out.flush()
        del out
        os.replace(tmp, array_file)
    finally:
        if tmp.exists():
            tmp.unlink()
    meta = {
        "format": EMBEDDINGS_FORMAT_VERSION,
        "backbone": backbone.name,
        "weights_id": backbone.weights_id,
        "preprocess": backbone.preprocess.to_dict(),
        "dim": backbone.dim,
    }
    table = pa.table({"sha1": pa.array(unique_sha1.tolist(), pa.string())})
    table = table.replace_schema_metadata({_SIDECAR_META: json.dumps(meta).encode()})
    with atomic_path(sidecar) as tmp_sidecar:
        pq.write_table(table, tmp_sidecar)
    return len(paths) / max(time.perf_counter() - start, 1e-9)


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
    # Decoding the next batch in a background thread measured no faster on 2 CPU cores (the
    # forward keeps both busy); with a GPU computing, the CPU is free to decode meanwhile.
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


def clear_cache(cache_dir: str | os.PathLike | None = None) -> int:
    """Delete the cache entries under ``cache_dir`` (default :func:`default_cache_dir`); return bytes freed.

    Only folders named like cache entries (24 hex digits) are removed, and in
    ``embeddings/<backbone name>/`` the embedding files named by their 24-hex-digit key
    (:mod:`labelaudit.nets.embeddings`), never
    anything else there.
    """
    root = cache_root(cache_dir)
    if not root.is_dir():
        return 0
    freed = 0
    for entry in entry_folders(root):
        freed += sum(f.stat().st_size for f in entry.rglob("*") if f.is_file())
        shutil.rmtree(entry)
    for backbone_dir in (root / "embeddings").glob("*"):
        if (
            backbone_dir.name not in PRETRAINED_BACKBONES
            or not backbone_dir.is_dir()
            or backbone_dir.is_symlink()
        ):
            continue
        for file in backbone_dir.iterdir():
            key, _, suffix = file.name.partition(".")
            if (
                suffix in ("npy", "parquet")
                and is_cache_key(key)
                and file.is_file()
                and not file.is_symlink()
            ):
                freed += file.stat().st_size
                file.unlink()
    return freed
