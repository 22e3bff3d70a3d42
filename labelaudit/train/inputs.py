"""What a run's network learns from: decoded pixels, a frozen backbone's embeddings, or nothing.

A scan takes one of four inputs (``summary.json`` ``"input"``, docs/run-directory.md):

- ``images``: the decoded pixels; a network is trained end to end (``--train full``; from
  scratch, or fine-tuning a pretrained ``--backbone``).
- ``embeddings``: a pretrained backbone's embeddings of each image, computed once and cached
  (:mod:`labelaudit.nets.embeddings`); a small head is trained on them (``--train head``).
- ``embeddings-file``: the user's own embeddings (``scan --embeddings FILE``); a head is trained.
- ``probs-file``: the user's out-of-sample predicted probabilities (``scan --probs FILE``); nothing
  is trained, the audit flags from them directly.

:func:`resolve_train_mode` decides which, :func:`backbone_embeddings` computes (or reuses) the
embeddings of an :class:`~labelaudit.data.images.ImageStore`. ``scan``, ``retrain`` and ``predict``
share them so that a head trained on a scan's embeddings sees the same embeddings later.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from ..data.images import ImageStore, ProgressCallback
from ..errors import ConfigError
from .compute import resolve_device
from .trainer import TrainConfig

INPUT_KINDS = ("images", "embeddings", "embeddings-file", "probs-file")


def pretrained_backbones() -> tuple[str, ...]:
    from ..nets.backbones import PRETRAINED_BACKBONES

    return tuple(PRETRAINED_BACKBONES)


def absolute_weights(weights: str | None) -> str | None:
    """``weights`` as recorded in a run: a local file as its absolute path (``~`` expanded), so that
    retrain and predict find it from any directory; a weight name (``DEFAULT``) or None unchanged."""
    if weights is None:
        return None
    local = Path(weights).expanduser()
    return str(local.resolve()) if local.exists() else weights


def uses_pretrained(train: TrainConfig) -> bool:
    """True when ``train`` names a pretrained backbone: weights given, or a backbone that only
    comes pretrained (EfficientNet-Lite0's weights ship in a package)."""
    if train.backbone in ("auto", "cifar-resnet"):
        return False
    return train.weights is not None or train.backbone == "efficientnet_lite0"


def resolve_train_mode(train: TrainConfig, *, embeddings_file=None, probs_file=None) -> str:
    """The input kind of a scan (one of :data:`INPUT_KINDS`).

    ``--train auto`` picks ``head`` for a pretrained backbone when no CUDA GPU will be used (a
    CPU fine-tunes a 224 px network at tens of images per second) and ``full`` otherwise.

    Raises
    ------
    ConfigError
        Contradicting options: both files, a file with a backbone, ``--train head`` without a
        pretrained backbone.
    """
    if embeddings_file is not None and probs_file is not None:
        raise ConfigError("pass --embeddings or --probs, not both: --probs needs no training at all")
    for option, given in (("--embeddings", embeddings_file), ("--probs", probs_file)):
        if given is None:
            continue
        if train.backbone != "auto" or train.weights is not None:
            raise ConfigError(
                f"{option} replaces the backbone: drop --backbone/--weights, or drop {option} to "
                "compute embeddings with that backbone"
            )
        if train.train == "full":
            raise ConfigError(f"{option} trains no network on the images; drop --train full")
        return "embeddings-file" if option == "--embeddings" else "probs-file"
    pretrained = uses_pretrained(train)
    if train.train == "head":
        if not pretrained:
            raise ConfigError(
                "--train head needs a pretrained backbone: pass --backbone NAME (one of "
                f"{', '.join(pretrained_backbones())}) with --weights DEFAULT or a weights file, "
                "or --embeddings FILE"
            )
        return "embeddings"
    if train.train == "full":
        return "images"
    gpu = resolve_device(train.device).type == "cuda"
    return "embeddings" if pretrained and not gpu else "images"


@dataclass
class EmbeddingInput:
    """Embeddings of a scan's samples and where they came from (``summary.json`` ``"input"``)."""

    features: np.ndarray  # (N, D), row i = table.samples row i
    info: dict = field(default_factory=dict)


def backbone_embeddings(
    store: ImageStore,
    train: TrainConfig,
    *,
    cache_dir: str | os.PathLike | None = None,
    progress: ProgressCallback | None = None,
    expect_weights_id: Optional[str] = None,
    backbone=None,
) -> EmbeddingInput:
    """Embed every image of ``store`` with the pretrained backbone of ``train`` (cached on disk).

    ``expect_weights_id``: the weights a trained head was fitted on (``retrain``, ``predict``);
    other weights give a ConfigError instead of silently wrong predictions. ``backbone``: the
    :class:`~labelaudit.nets.backbones.Backbone` if already loaded.
    """
    from ..nets.backbones import load_backbone
    from ..nets.embeddings import compute_embeddings

    weights = train.weights if train.weights is not None else "DEFAULT"
    backbone = backbone if backbone is not None else load_backbone(train.backbone, weights)
    if expect_weights_id is not None and backbone.weights_id != expect_weights_id:
        raise ConfigError(
            f"the {train.backbone} weights {weights!r} are not the ones this run's head was trained on "
            f"({backbone.weights_id} here, {expect_weights_id} in the run); pass the weights file the scan "
            "used "
            "(--weights FILE, if it moved)"
        )
    device = resolve_device(train.device)
    embeddings = compute_embeddings(store, backbone, cache_dir=cache_dir, device=device, progress=progress)
    info = {
        "kind": "embeddings",
        "backbone": backbone.name,
        "weights": weights,
        "weights_id": backbone.weights_id,
        "preprocess": backbone.preprocess.to_dict(),
        "dim": int(embeddings.features.shape[1]),
        "cache_file": str(embeddings.path),
        "reused": bool(embeddings.reused),
        "seconds": round(float(embeddings.seconds), 3),
        "images_per_second": None
        if embeddings.images_per_second is None
        else round(float(embeddings.images_per_second), 1),
    }
    return EmbeddingInput(embeddings.features, info)


def pretrained_image_settings(train: TrainConfig) -> tuple[int, tuple, tuple]:
    """``(crop_size, mean, std)`` of a pretrained backbone's own preprocessing (``--train full``)."""
    from ..nets.backbones import backbone_preprocess

    spec = backbone_preprocess(train.backbone, train.weights if train.weights is not None else "DEFAULT")
    return spec.crop_size, tuple(spec.mean), tuple(spec.std)
