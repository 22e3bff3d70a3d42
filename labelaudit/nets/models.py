"""Networks: a small CIFAR-style ResNet for small images, pretrained backbones
(:mod:`labelaudit.nets.backbones`)
with a fresh classifier for larger ones, and heads on embeddings."""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError
from . import HEADS


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection (He et al. 2016)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet with a 3x3 stem and three stages of widths ``w, 2w, 4w`` (depth = 6n + 2).

    ``depth=8`` gives one block per stage (ResNet-8), ``depth=20`` three (ResNet-20).
    """

    def __init__(self, in_channels: int, num_classes: int, depth: int = 8, width: int = 16) -> None:
        super().__init__()
        if (depth - 2) % 6 != 0 or depth < 8:
            raise ConfigError(f"cifar-resnet depth must be 6n+2 (8, 14, 20, 32...); got {depth!r}")
        blocks = (depth - 2) // 6
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)
        )
        layers, channels = [], width
        for stage, stage_width in enumerate((width, 2 * width, 4 * width)):
            for block in range(blocks):
                stride = 2 if stage > 0 and block == 0 else 1
                layers.append(BasicBlock(channels, stage_width, stride))
                channels = stage_width
        self.stages = nn.Sequential(*layers)
        self.head = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(self.stem(x))  # (B, 4w, H/4, W/4)
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))  # (B, K)


class _GrayToRGB(nn.Module):
    """Repeat a single channel three times so ImageNet backbones accept grayscale input."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x)


#: Heads trained on the embeddings of a frozen backbone (``--train head``).
HEAD_HIDDEN = 512


def build_head(kind: str, in_features: int, num_classes: int) -> nn.Module:
    """A classifier on ``(B, in_features)`` standardised embeddings returning ``(B, num_classes)`` logits.

    ``linear``: one linear layer (a linear probe). ``mlp``: linear -> layer norm -> ReLU -> linear
    with :data:`HEAD_HIDDEN` hidden units; layer norm keeps the step size of the shared training
    loop (learning rate 0.1) stable on any embedding scale and, unlike batch norm, works on a
    last batch of one sample.
    """
    if kind == "linear":
        return nn.Linear(in_features, num_classes)
    if kind == "mlp":
        return nn.Sequential(
            nn.Linear(in_features, HEAD_HIDDEN),
            nn.LayerNorm(HEAD_HIDDEN),
            nn.ReLU(inplace=True),
            nn.Linear(HEAD_HIDDEN, num_classes),
        )
    raise ConfigError(f"head must be one of {list(HEADS)}; got {kind!r}")


class Ensemble(nn.Module):
    """Several networks of the same architecture; ``forward`` returns ``(M, B, K)`` stacked logits."""

    def __init__(self, networks: list[nn.Module]) -> None:
        super().__init__()
        self.networks = nn.ModuleList(networks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([net(x) for net in self.networks])


def mean_softmax(logits: torch.Tensor) -> torch.Tensor:
    """float32 softmax over classes; the ``(M, B, K)`` logits of an :class:`Ensemble` give the mean
    of its networks' softmax, ``(B, K)``."""
    probs = torch.softmax(logits.float(), dim=-1)
    return probs.mean(dim=0) if probs.dim() == 3 else probs


def build_model(
    backbone: str,
    in_channels: int,
    num_classes: int,
    *,
    depth: int = 8,
    width: int = 16,
    weights: str | None = None,
) -> nn.Module:
    """Create a classifier for ``(B, in_channels, S, S)`` inputs returning ``(B, num_classes)`` logits.

    Parameters
    ----------
    backbone : str
        ``cifar-resnet`` (trained from scratch), or a network of :mod:`labelaudit.nets.backbones`
        (``resnet18/34/50``, ``efficientnet_b0``, ``convnext_tiny``, ``vit_b_16``,
        ``efficientnet_lite0``).
    in_channels : int
        1 (grayscale, repeated to RGB for the pretrained networks) or 3 (RGB).
    num_classes : int
    depth, width : int
        Depth (6n+2) and base width of ``cifar-resnet``; ignored otherwise.
    weights : str, optional
        Pretrained networks only: a torchvision weight name (``"IMAGENET1K_V1"``, ``"DEFAULT"``;
        downloaded on a connected machine) or a local state_dict file, loaded by
        :func:`labelaudit.nets.backbones.load_backbone`; None: random initialisation (training from
        scratch, or a ``model.pt`` state_dict loaded afterwards). The classification layer is
        always a fresh one with ``num_classes`` outputs.
    """
    if backbone == "cifar-resnet":
        if weights:
            raise ConfigError(
                "--weights applies to pretrained backbones (resnet18, efficientnet_lite0, ...), not "
                "cifar-resnet"
            )
        return CifarResNet(in_channels, num_classes, depth=depth, width=width)
    from .backbones import PRETRAINED_BACKBONES, load_backbone

    if backbone not in PRETRAINED_BACKBONES:
        raise ConfigError(
            f"backbone must be one of {['cifar-resnet', *PRETRAINED_BACKBONES]}; got {backbone!r}"
        )
    return _GrayToRGB(load_backbone(backbone, weights).classifier(num_classes))


def default_backbone(image_size: int) -> str:
    """cifar-resnet up to 64x64 inputs (trainable on a CPU), resnet18 above."""
    return "cifar-resnet" if image_size <= 64 else "resnet18"
