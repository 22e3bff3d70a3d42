"""How samples reach the network: each torchrun rank's share of every batch, where the images are
kept, batches gathered on the device (read one batch ahead when they come from disk or host
memory), augmented and normalised."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Iterator

import torch
from torch import nn

from ..errors import ConfigError
from .config import TrainConfig
from .tensors import TensorData


def check_shareable(num_samples: int, batch_size: int, world: int) -> None:
    """ConfigError unless ``world`` processes can each train a sample of every batch."""
    if num_samples < world:
        raise ConfigError(
            f"{num_samples} samples cannot be shared by {world} processes (each needs a sample "
            f"of every batch); run at most {num_samples} processes (torchrun --nproc-per-node), or "
            "one process without torchrun"
        )
    if batch_size < world:
        raise ConfigError(
            f"batches of {batch_size} samples cannot be shared by {world} processes "
            f"(each needs a sample of every batch); raise --batch-size to at least {world} "
            "or run fewer processes (torchrun --nproc-per-node)"
        )


def local_batches(order: torch.Tensor, batch_size: int, world: int, rank: int) -> list[torch.Tensor]:
    """Rank ``rank``'s share of each batch of ``batch_size`` samples of ``order``: the whole batch
    in one process; else every ``world``-th sample, a last batch too small to share merged into the
    one before (every rank then takes the same number of steps, none on an empty batch)."""
    batches = list(order.split(batch_size))
    if world == 1:
        return batches
    if len(batches) > 1 and len(batches[-1]) < world:
        batches[-2:] = [torch.cat(batches[-2:])]
    return [batch[rank::world] for batch in batches]


def image_placement(data: TensorData, device: torch.device) -> str:
    """Where the images are kept while training: ``"streamed"`` (read from the cache file batch by
    batch), ``"host"`` (in RAM, moved to the GPU batch by batch: they would fill more than half of
    its free memory) or ``"resident"`` (on the device, copied there once)."""
    if data.streamed:
        return "streamed"
    if device.type == "cuda" and data.images.nbytes > 0.5 * torch.cuda.mem_get_info(device)[0]:
        return "host"
    return "resident"


class BatchLoader:
    """The images (or embeddings) of a :class:`TensorData` as the network's input, batch by batch.

    ``placement`` is :func:`image_placement`'s; ``memory_format`` the model's; ``generator`` draws
    the random crops and flips of :meth:`augment` (shared with whoever else draws from it, so the
    order of draws is part of a seeded run's result).
    """

    def __init__(
        self,
        data: TensorData,
        config: TrainConfig,
        device: torch.device,
        placement: str,
        memory_format: torch.memory_format,
        generator: torch.Generator,
    ) -> None:
        self.is_features = data.is_features
        self.device = device
        self.resident = placement == "resident"
        self.images = data.images.to(device) if self.resident else data.images
        shape = (1, -1) if data.is_features else (1, -1, 1, 1)
        self.mean = data.mean.to(device).view(shape)
        self.std = data.std.to(device).view(shape)
        self.memory_format = memory_format
        self.crop_padding = config.crop_padding
        self.flip = config.flip
        self.generator = generator

    def gather(self, index: torch.Tensor) -> torch.Tensor:
        """uint8 images (or embeddings) of the samples at ``index`` on the device."""
        if self.resident:
            return self.images[index.to(self.device)]
        return self.images[index.cpu()].to(self.device, non_blocking=True)

    def epoch(self, batches: list[torch.Tensor]) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """``(index on the device, images on the device)`` per batch of sample positions; images
        not resident on the device are read one batch ahead in a background thread while the
        current batch trains."""
        if self.resident:
            for index in batches:
                index = index.to(self.device)
                yield index, self.images[index]
            return
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="labelaudit-prefetch") as pool:
            ahead = pool.submit(self.images.__getitem__, batches[0]) if batches else None
            for i, index in enumerate(batches):
                images = ahead.result()
                if i + 1 < len(batches):
                    ahead = pool.submit(self.images.__getitem__, batches[i + 1])
                yield index.to(self.device), images.to(self.device, non_blocking=True)

    def normalize(self, batch: torch.Tensor) -> torch.Tensor:
        """uint8 ``(B, C, S, S)`` -> normalised float in the model's memory format; embeddings
        ``(B, D)`` -> standardised per dimension."""
        if self.is_features:
            return batch.float().sub_(self.mean).div_(self.std)
        x = batch.float().div_(255).sub_(self.mean).div_(self.std)
        return x.contiguous(memory_format=self.memory_format)

    def augment(self, batch: torch.Tensor) -> torch.Tensor:
        """Random crop with zero padding and random horizontal flip, on the whole batch at once.

        Embeddings are not augmented: they come from one fixed view of each image.
        """
        if self.is_features:
            return batch
        pad = self.crop_padding
        b, _, h, w = batch.shape
        if pad:
            padded = nn.functional.pad(batch, (pad, pad, pad, pad))
            dy = torch.randint(0, 2 * pad + 1, (b,), generator=self.generator).to(batch.device)
            dx = torch.randint(0, 2 * pad + 1, (b,), generator=self.generator).to(batch.device)
            rows = (dy[:, None] + torch.arange(h, device=batch.device))[:, None, :, None]  # (B, 1, H, 1)
            cols = (dx[:, None] + torch.arange(w, device=batch.device))[:, None, None, :]  # (B, 1, 1, W)
            batch = padded[
                torch.arange(b, device=batch.device)[:, None, None, None],
                torch.arange(batch.shape[1], device=batch.device)[None, :, None, None],
                rows,
                cols,
            ]
        if self.flip:
            flip = (torch.rand(b, generator=self.generator) < 0.5).to(batch.device)
            batch = torch.where(flip[:, None, None, None], batch.flip(3), batch)
        return batch


def input_preprocessing(data: TensorData, config: TrainConfig) -> dict:
    """What a model trained on ``data``'s batches needs to prepare new images (or embeddings) the
    same way (``model.pt``'s ``preprocessing``)."""
    if data.is_features:
        return {
            "input": "embeddings",
            "dim": int(data.channels),
            "channels": int(data.channels),
            "mean": [float(v) for v in data.mean],
            "std": [float(v) for v in data.std],
            "image_size": 0,
            "flip_average": False,
        }
    return {
        "image_size": int(data.images.shape[-1]),
        "channels": int(data.channels),
        "mean": [float(v) for v in data.mean],
        "std": [float(v) for v in data.std],
        "resize": "shorter side to image_size, centre crop",
        "flip_average": bool(config.flip),  # predictions average the horizontally flipped view
    }
