"""What a run's network learns from: decoded pixels, a frozen backbone's embeddings, or nothing.

A scan takes one of four inputs (``summary.json`` ``"input"``, docs/run-directory.md):

- ``images``: the decoded pixels; a network is trained end to end (``--train full``; from
  scratch, or fine-tuning a pretrained ``--backbone``).
- ``embeddings``: a pretrained backbone's embeddings of each image, computed once and cached
  (:mod:`labelaudit.nets.embeddings`); a small head is trained on them (``--train head``).
- ``embeddings-file``: the user's own embeddings (``scan --embeddings FILE``); a head is trained.
- ``probs-file``: the user's out-of-sample predicted probabilities (``scan --probs FILE``); nothing
  is trained, the audit flags from them directly.

:func:`resolve_train_mode` decides which; :func:`prepare_inputs` reads or computes them (decoding
the images, embedding them with :func:`backbone_embeddings`, or reading the user's file) and
:meth:`PreparedInputs.training_data` makes them the network's :class:`~labelaudit.train.tensors.TensorData`.
``scan`` and ``retrain`` prepare their inputs with these, and ``predict`` embeds with the same
backbone, so that a head trained on a scan's embeddings sees the same embeddings later.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from ..data.images import ImageStore, ProgressCallback, load_images
from ..data.sources import SampleTable
from ..data.user_files import read_embeddings, read_probs
from ..errors import ConfigError, DatasetError
from . import distributed
from .compute import resolve_device
from .config import TrainConfig
from .tensors import TensorData

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


def decode_settings(train: TrainConfig, image_size: int | None) -> tuple[int | None, int | None]:
    """``(image_size, channels)`` to decode the images at for a network trained on their pixels.

    A pretrained backbone (fine-tuning) sees its own crop size, unless ``image_size`` is given, in
    RGB; it is loaded here, so that a bad name or weights file fails before any image is decoded.
    Otherwise ``image_size`` as given and the images' own channels (None: the image cache decides).
    """
    if not uses_pretrained(train):
        return image_size, None
    from ..nets.backbones import load_backbone

    load_backbone(train.backbone, train.weights)
    crop, _, _ = pretrained_image_settings(train)
    return image_size or crop, 3


@dataclass
class PreparedInputs:
    """What a network learns from, for the samples of ``table`` (:func:`prepare_inputs`)."""

    kind: str  # one of INPUT_KINDS
    table: SampleTable  # the samples that have an input: images that could not be decoded are left out
    store: Optional[ImageStore] = None  # the decoded images; None when the user's files replace them
    features: Optional[np.ndarray] = None  # (N, D) embeddings: a pretrained backbone's or the user's
    probs: Optional[np.ndarray] = None  # (N, K) the user's out-of-sample probabilities (probs-file)
    info: dict = field(default_factory=dict)  # summary.json "input": what they are and where from

    def training_data(self, train: TrainConfig) -> TensorData:
        """The inputs with their given labels as the :class:`TensorData` a network of ``train``
        learns from: the embeddings for a head; else the pixels, normalised as a pretrained
        backbone's weights expect when fine-tuning (by the images' own statistics otherwise)."""
        if self.features is not None:
            labels = self.table.samples["given_label"].to_numpy()
            return TensorData.from_features(self.features, labels, self.table.num_classes)
        data = TensorData.from_store(self.store, train.max_memory)
        if uses_pretrained(train):
            _, mean, std = pretrained_image_settings(train)
            data = replace(data, mean=torch.tensor(mean), std=torch.tensor(std))
        return data

    def network_inputs(self) -> torch.Tensor:
        """Every sample's input in one tensor, as a trained network predicts from it: the ``(N, D)``
        embeddings, or the ``(N, C, S, S)`` uint8 pixels."""
        if self.features is not None:
            return torch.from_numpy(np.array(self.features))
        return torch.from_numpy(self.store.images()).permute(0, 3, 1, 2)


def prepare_inputs(
    table: SampleTable,
    kind: str,
    train: TrainConfig,
    *,
    image_size: int | None = None,
    channels: int | None = None,
    file: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    workers: int | None = None,
    progress: ProgressCallback | None = None,
    expect_weights_id: Optional[str] = None,
    require_all_classes: bool = True,
    every_image: bool = False,
) -> PreparedInputs:
    """Read or compute the inputs of ``kind`` (:data:`INPUT_KINDS`) for the samples of ``table``.

    - ``probs-file``, ``embeddings-file``: the user's ``file``, one row per sample
      (:mod:`labelaudit.data.user_files`); no image is decoded.
    - ``images``: the images decoded at ``image_size`` and ``channels`` (:func:`decode_settings`),
      through the image cache (``cache_dir``, ``workers``, ``require_all_classes`` as in
      :func:`~labelaudit.data.images.load_images`).
    - ``embeddings``: the images decoded at ``image_size``, then embedded by ``train``'s
      pretrained backbone (cached; ``expect_weights_id`` as in :func:`backbone_embeddings`). The
      backbone is loaded first, so that a bad choice fails before decoding.

    ``every_image``: ``table`` is a run's, whose images all decoded when it was scanned; one that
    no longer decodes is a :class:`~labelaudit.errors.DatasetError` before anything is computed.
    Under torchrun the first process of each machine fills the caches and the others read them.
    """
    if kind in ("probs-file", "embeddings-file"):
        return _read_user_file(table, kind, file)
    backbone = None
    if kind == "embeddings":
        from ..nets.backbones import load_backbone

        backbone = load_backbone(train.backbone, train.weights if train.weights is not None else "DEFAULT")
    with distributed.primary_first():  # rank 0 fills the caches, the other ranks read them
        store = load_images(
            table,
            image_size=image_size,
            channels=channels,
            cache_dir=cache_dir,
            workers=workers,
            progress=progress,
            require_all_classes=require_all_classes,
        )
        if every_image and len(store.table) != len(table):
            first = store.table.skipped.iloc[0]
            raise DatasetError(
                f"{len(table) - len(store.table)} images of the run can no longer be decoded (first: "
                f"{first['path']!r}, {first['reason']}); fix them or scan the dataset again"
            )
        if kind == "images":
            return PreparedInputs(kind, store.table, store=store, info={"kind": kind})
        embedded = backbone_embeddings(
            store,
            train,
            cache_dir=cache_dir,
            progress=progress,
            expect_weights_id=expect_weights_id,
            backbone=backbone,
        )
    return PreparedInputs(kind, store.table, store=store, features=embedded.features, info=embedded.info)


def _read_user_file(table: SampleTable, kind: str, file: str | os.PathLike) -> PreparedInputs:
    """The user's ``--probs`` or ``--embeddings`` file, row ``i`` for sample ``i`` of ``table``."""
    info = {"kind": kind, "file": str(Path(file).expanduser().resolve())}
    if kind == "probs-file":
        return PreparedInputs(kind, table, probs=read_probs(file, table), info=info)
    features = read_embeddings(file, table)
    return PreparedInputs(kind, table, features=features, info={**info, "dim": int(features.shape[1])})
