"""A dataset as tensors for training: decoded images (in memory, or read batch by batch from the
cache's memory map) or a frozen backbone's embeddings, with their normalisation statistics."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from ..data.images import ImageStore
from ..errors import ConfigError
from .compute import PLAN_NETWORKS, PLAN_WINDOW, memory_budget, state_plan

log = logging.getLogger(__name__)


def _feature_statistics(features: torch.Tensor, chunk_rows: int = 65536):
    """Per-dimension mean, standard deviation and largest distance from the mean ``(D,)`` of
    ``features`` ``(N, D)``, in float64 (float32 sums of values near 1e38 overflow), a chunk of
    rows at a time (no float64 copy of a large array). ConfigError for NaN or infinite values."""
    n = len(features)
    total = torch.zeros(features.shape[1], dtype=torch.float64)
    for i in range(0, n, chunk_rows):
        chunk = features[i : i + chunk_rows].double()
        if not torch.isfinite(chunk).all():
            raise ConfigError(
                "the embeddings hold NaN or infinite values; recompute them (a float16 overflow?)"
            )
        total += chunk.sum(dim=0)
    mean = total / max(n, 1)
    squares = torch.zeros_like(mean)
    spread = torch.zeros_like(mean)
    for i in range(0, n, chunk_rows):
        deviation = features[i : i + chunk_rows].double() - mean
        squares += deviation.square().sum(dim=0)
        spread = torch.maximum(spread, deviation.abs().amax(dim=0))
    std = (squares / max(n - 1, 1)).sqrt()
    return mean, std, spread


class MappedImages:
    """Images ``(N, C, S, S)`` uint8 read on demand from the decode cache's memory map.

    A dataset larger than the memory budget stays on disk: each batch is read when it is needed
    (the operating system keeps recently read pages cached, and drops them under memory pressure).
    Indexing with a tensor or array of positions returns a ``(B, C, S, S)`` uint8 tensor with
    channels_last strides, exactly as indexing the resident tensor would.
    """

    def __init__(self, pixels: np.ndarray, positions: np.ndarray) -> None:
        self.pixels = pixels  # (M, S, S, C) uint8, memory-mapped read-only
        self.positions = np.asarray(positions, dtype=np.int64)  # (N,) row of `pixels` of each sample
        _, side, _, channels = pixels.shape
        self.shape = torch.Size((len(self.positions), channels, side, side))
        self.device = torch.device("cpu")

    def __len__(self) -> int:
        return len(self.positions)

    def dim(self) -> int:
        return 4

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape))

    def __getitem__(self, index) -> torch.Tensor:
        rows = self.positions[np.asarray(index.cpu() if isinstance(index, torch.Tensor) else index)]
        return torch.from_numpy(self.pixels[rows]).permute(0, 3, 1, 2)

    def subset(self, index) -> "MappedImages":
        """The samples at ``index``, still on disk."""
        return MappedImages(self.pixels, self.positions[np.asarray(index)])

    def chunks(self, max_bytes: int = 64 * 2**20):
        """``(n, S, S, C)`` uint8 arrays of consecutive samples, at most ``max_bytes`` each
        (one sample at least): the whole set in bounded memory."""
        rows = max(1, max_bytes // max(1, int(np.prod(self.shape[1:]))))
        for start in range(0, len(self), rows):
            yield self.pixels[self.positions[start : start + rows]]

    def load(self) -> torch.Tensor:
        """All images in memory: ``(N, C, S, S)`` uint8 with channels_last strides."""
        n, c, s, _ = self.shape
        out = np.empty((n, s, s, c), dtype=np.uint8)
        start = 0
        for chunk in self.chunks():
            out[start : start + len(chunk)] = chunk
            start += len(chunk)
        return torch.from_numpy(out).permute(0, 3, 1, 2)

    def statistics(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel mean and standard deviation ``(C,)`` in [0, 1], from exact integer sums
        of each chunk (no float copy of the images)."""
        channels = self.shape[1]
        total, squares, count = [0] * channels, [0] * channels, 0
        for chunk in self.chunks(16 * 2**20):  # squared as uint16: twice the chunk
            for c in range(channels):
                values = chunk[..., c]
                total[c] += int(values.sum(dtype=np.uint64))
                squares[c] += int(np.square(values, dtype=np.uint16).sum(dtype=np.uint64))
            count += chunk[..., 0].size
        mean = [t / count / 255 for t in total]
        # Unbiased, as torch.std; exact integers until the final division.
        variance = [
            max(q * count - t * t, 0) / (count * max(count - 1, 1)) / 255**2 for q, t in zip(squares, total)
        ]
        return torch.tensor(mean, dtype=torch.float32), torch.tensor(
            np.sqrt(variance), dtype=torch.float32
        ).clamp_min(1e-3)


@dataclass
class TensorData:
    """A dataset as tensors: ``images`` ``(N, C, S, S)`` uint8 (channels_last; in memory, or a
    :class:`MappedImages` read from the cache batch by batch) or, in head mode, embeddings
    ``(N, D)`` (float16 or float32); ``labels`` ``(N,)`` int64."""

    images: torch.Tensor | MappedImages
    labels: torch.Tensor
    num_classes: int
    mean: torch.Tensor  # (C,) per-channel mean of the images in [0, 1]; (D,) per-dimension for embeddings
    std: torch.Tensor  # (C,) or (D,)

    @classmethod
    def from_store(cls, store: ImageStore, max_memory: int | None = None) -> "TensorData":
        """The decoded images of ``store``, read into memory when they fit the part of
        :func:`memory_budget` (``max_memory`` bytes, default a share of the RAM) that the
        per-sample state leaves, else left in the cache and read batch by batch while training
        (same results, see :class:`MappedImages`)."""
        mapped = MappedImages(store.pixels, store.positions)
        mean, std = mapped.statistics()
        labels = torch.from_numpy(store.table.samples["given_label"].to_numpy().astype(np.int64))
        budget = memory_budget(max_memory)
        _, state_bytes = state_plan(len(mapped), store.table.num_classes, PLAN_WINDOW, PLAN_NETWORKS, budget)
        images = mapped if mapped.nbytes > budget - state_bytes else mapped.load()
        return cls(images, labels, store.table.num_classes, mean, std)

    @classmethod
    def from_features(cls, features: np.ndarray, labels: np.ndarray, num_classes: int) -> "TensorData":
        """Embeddings ``(N, D)`` (kept in their dtype, e.g. float16) and given labels ``(N,)``."""
        if features.ndim != 2 or len(features) != len(labels):
            raise ConfigError(
                f"embeddings must be (N, D) with one row per sample ({len(labels)}); got {features.shape}"
            )
        tensor = torch.from_numpy(np.array(features))  # a private copy: the cache file is read-only
        mean, std, spread = _feature_statistics(tensor)
        if len(tensor) > 1 and not (std > 0).any():
            raise ConfigError(
                "the embeddings are the same vector for every sample, so nothing tells the samples "
                "apart; check how they were computed (for --embeddings, the file's values)"
            )
        if float(spread.max()) > 1e30:  # standardising in float32 would overflow on the way
            raise ConfigError(
                f"the embeddings hold values that differ by up to {float(spread.max()):.3g}, too large "
                "to compute with; rescale them (e.g. standardise each dimension) and pass them again"
            )
        mean, std = mean.float(), std.float()
        # A dimension that barely varies in the training set would be blown up by its own tiny
        # spread and swamp the others on new images: floor it at a tenth of the median spread.
        std = std.clamp_min(max(0.1 * float(std.median()), 1e-6))
        return cls(tensor, torch.from_numpy(np.array(labels, dtype=np.int64)), num_classes, mean, std)

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: torch.Tensor) -> "TensorData":
        """The samples at ``index`` (same normalisation statistics); on disk stays on disk."""
        images = self.images.subset(index) if self.streamed else self.images[index]
        return TensorData(images, self.labels[index], self.num_classes, self.mean, self.std)

    @property
    def streamed(self) -> bool:
        """True when the images stay in the cache file and are read batch by batch."""
        return isinstance(self.images, MappedImages)

    @property
    def is_features(self) -> bool:
        """True for embeddings ``(N, D)``, False for images ``(N, C, S, S)``."""
        return self.images.dim() == 2

    @property
    def channels(self) -> int:
        return self.images.shape[1]
