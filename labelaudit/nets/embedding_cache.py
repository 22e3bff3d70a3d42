"""The embedding cache on disk: one entry per backbone, weights, preprocessing and set of images.

Layout, under the cache root (:func:`labelaudit.data.images.default_cache_dir` or ``cache_dir``)::

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
import shutil
from pathlib import Path
from typing import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .._atomic import atomic_path, remove_stale_temporaries, temporary_sibling
from ..data.images import cache_root, entry_folders, is_cache_key, open_cache_entry
from ..errors import ConfigError
from .backbones import PRETRAINED_BACKBONES, Backbone

EMBEDDINGS_FORMAT_VERSION = 1
_SIDECAR_META = b"labelaudit.nets.embeddings"

log = logging.getLogger(__name__)


def entry_file(root: Path, backbone: Backbone, unique_sha1: np.ndarray) -> Path:
    """The ``.npy`` of the entry of ``backbone`` for the distinct images ``unique_sha1`` (sorted)
    under the cache root ``root``, whose folder is created (ConfigError when it cannot be written)
    and cleared of temporaries that interrupted runs left."""
    folder = open_cache_entry(root / "embeddings", backbone.name)
    remove_stale_temporaries(folder)
    return folder / f"{cache_key(backbone, unique_sha1)}.npy"


def cache_key(backbone: Backbone, unique_sha1: np.ndarray) -> str:
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


def load_entry(array_file: Path, unique_sha1: np.ndarray, dim: int) -> np.ndarray | None:
    """The cached ``(U, D)`` float16 memory map when the entry is complete and whole, else None.

    A damaged entry (unreadable sidecar, other hashes, truncated or garbage ``.npy``, wrong
    shape or dtype, NaN or infinite values) is deleted, so it is computed again.
    """
    sidecar = array_file.with_suffix(".parquet")
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


def write_entry(
    array_file: Path, unique_sha1: np.ndarray, backbone: Backbone, batches: Iterable[tuple[int, np.ndarray]]
) -> None:
    """Write a new entry from ``batches`` of ``(begin, (b, D) float32 features)`` of the distinct
    images ``unique_sha1``, rows ``begin`` to ``begin + b``: the array, then the sidecar that marks
    it complete. ConfigError for features beyond float16's range."""
    tmp = temporary_sibling(array_file, ".npy")
    try:
        out = np.lib.format.open_memmap(
            tmp, mode="w+", dtype=np.float16, shape=(len(unique_sha1), backbone.dim)
        )
        for begin, features in batches:
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
    with atomic_path(array_file.with_suffix(".parquet")) as tmp_sidecar:
        pq.write_table(table, tmp_sidecar)


def clear_cache(cache_dir: str | os.PathLike | None = None) -> int:
    """Delete the cache entries under ``cache_dir`` (default :func:`default_cache_dir`); return bytes freed.

    Only folders named like cache entries (24 hex digits) are removed, and in
    ``embeddings/<backbone name>/`` the embedding files named by their 24-hex-digit key, never
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
