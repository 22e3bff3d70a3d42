"""The settings of a network and its optimiser (no torch import: run directories are read without it)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional

from ..errors import ConfigError
from ..nets import HEADS


@dataclass(frozen=True)
class TrainConfig:
    """Settings of the network and the optimiser, shared by every method."""

    backbone: str = "auto"  # "auto": cifar-resnet up to 64 px, resnet18 above
    depth: int = 8  # cifar-resnet depth (6n+2)
    width: int = 16  # cifar-resnet base width
    weights: Optional[str] = None  # torchvision weight name or local state_dict (torchvision backbones)
    batch_size: int = 128
    momentum: float = 0.9
    weight_decay: float = 5e-4
    crop_padding: int = 2  # random-crop padding in pixels; 0 disables
    flip: bool = True  # random horizontal flips
    device: str = "auto"  # auto | cpu | cuda
    seed: int = 0
    history_window: int = 10  # epochs of training-time softmax kept per sample
    train: str = (
        "auto"  # auto | full (train the network end to end) | head (frozen backbone's embeddings + a head)
    )
    head: str = "linear"  # head mode: linear (a linear probe) or mlp (one hidden layer)
    precision: str = (
        "auto"  # auto | fp32 | bf16: arithmetic of a network's forward and backward (see resolve_precision)
    )
    max_memory: Optional[int] = None  # bytes for images and per-sample state (None: memory_budget's default)
    threads: Optional[int] = None  # CPU threads (None: cpu_threads' choice); results depend on the count

    def validate(self) -> "TrainConfig":
        if self.train not in ("auto", "full", "head"):
            raise ConfigError(f"train must be auto, full or head; got {self.train!r}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {list(PRECISIONS)}; got {self.precision!r}")
        if self.head not in HEADS:
            raise ConfigError(f"head must be one of {list(HEADS)}; got {self.head!r}")
        if self.width < 1 or self.depth < 1:
            raise ConfigError(f"width and depth must be >= 1; got width={self.width!r}, depth={self.depth!r}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1; got {self.batch_size!r}")
        if self.crop_padding < 0:
            raise ConfigError(f"crop_padding must be >= 0; got {self.crop_padding!r}")
        if self.max_memory is not None and not (isinstance(self.max_memory, int) and self.max_memory >= 1):
            raise ConfigError(f"max_memory must be a positive number of bytes; got {self.max_memory!r}")
        if self.threads is not None and not (isinstance(self.threads, int) and self.threads >= 1):
            raise ConfigError(f"threads must be a positive integer; got {self.threads!r}")
        if self.history_window < 1:
            raise ConfigError(f"history_window must be >= 1; got {self.history_window!r}")
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise ConfigError(f"device must be auto, cpu or cuda; got {self.device!r}")
        return self

    def to_dict(self) -> dict:
        return asdict(self)


PRECISIONS = ("auto", "fp32", "bf16")
