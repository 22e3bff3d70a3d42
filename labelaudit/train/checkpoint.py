"""``model.pt``: save a trained network with what it needs to be used again, and load it back.

One file format serves ``scan``, ``retrain``, ``predict`` and ``evaluate`` (docs/run-directory.md).
It holds tensors, strings and numbers only, so it loads with ``torch.load(weights_only=True)``:
opening a model file someone sent you cannot run code.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .._atomic import atomic_path
from ..errors import ConfigError
from ..nets import HEADS
from ..nets.models import Ensemble, build_head, build_model, mean_softmax
from ..nets.weights import load_weights_only
from ..reports import read_json
from .config import TrainConfig

MODEL_FORMAT_VERSION = 1
_REQUIRED_KEYS = ("format_version", "state_dict", "class_names", "backbone", "networks", "preprocessing")


def save_model(
    path: str | os.PathLike, trainer, class_names, *, depth: int, width: int, extra: dict | None = None
) -> None:
    """Write ``trainer.model`` and its preprocessing to ``path`` atomically."""
    checkpoint = {
        "format_version": MODEL_FORMAT_VERSION,
        "state_dict": {k: v.detach().cpu() for k, v in trainer.model.state_dict().items()},
        "class_names": list(class_names),
        "backbone": trainer.backbone,
        "networks": trainer.networks,
        "depth": depth,
        "width": width,
        "preprocessing": trainer.preprocessing(),
        **(extra or {}),
    }
    with atomic_path(path) as tmp:
        torch.save(checkpoint, tmp)


@dataclass
class LoadedModel:
    """A trained classifier ready to predict: the network in eval mode and how to feed it."""

    model: nn.Module
    class_names: tuple[str, ...]
    image_size: int
    channels: int
    mean: torch.Tensor  # (C,)
    std: torch.Tensor  # (C,)
    flip_average: bool
    path: Path
    checkpoint: dict
    embedding: dict | None = None  # head models: the backbone (or file) their embeddings came from

    def use_backbone_weights(self, weights: str | None) -> "LoadedModel":
        """Embed with the backbone weights at ``weights`` (a moved or copied weights file) instead of
        the recorded ones; they must be the same weights (checked by ``weights_id`` when embedding).
        None: keep the recorded weights. Returns self."""
        if weights is None:
            return self
        if self.embedding is None or self.embedding.get("kind") != "embeddings":
            raise ConfigError(
                f"--weights applies to a head trained on a pretrained backbone's embeddings; "
                f"{str(self.path)!r} is not one: drop --weights"
            )
        from .inputs import absolute_weights

        self.embedding = {**self.embedding, "weights": absolute_weights(weights)}
        return self

    @property
    def image_size_for_cache(self) -> int | None:
        """Image size to decode new images at: the model's, or None (automatic) for a head."""
        return None if self.embedding is not None else self.image_size

    @property
    def image_channels(self) -> int | None:
        """Channels to decode new images with: the model's, or None (automatic) for a head."""
        return None if self.embedding is not None else self.channels

    def predict_store(self, store, *, cache_dir=None, progress=None) -> np.ndarray:
        """``(N, K)`` probabilities of the images of an :class:`~labelaudit.data.images.ImageStore`.

        A head model embeds them first with the backbone it was trained on (cached like a scan's).
        """
        if self.embedding is None:
            return self.predict_proba(store.images())
        self.check_takes_images()
        from .inputs import backbone_embeddings

        spec = TrainConfig(
            backbone=self.embedding["backbone"], weights=self.embedding.get("weights"), device="cpu"
        )
        embedded = backbone_embeddings(
            store,
            spec,
            cache_dir=cache_dir,
            progress=progress,
            expect_weights_id=self.embedding.get("weights_id"),
        )
        return self.predict_features(embedded.features)

    def check_takes_images(self) -> "LoadedModel":
        """Raise ConfigError for a head on the user's own embeddings (``scan --embeddings``), which
        labelaudit cannot compute for new images; call it before decoding any. Returns self."""
        if self.embedding is not None and self.embedding.get("kind") != "embeddings":
            raise ConfigError(
                f"{str(self.path)!r} is a head trained on embeddings you passed to scan --embeddings; "
                "labelaudit cannot "
                "compute those for new images: apply the head to your own embeddings with "
                "LoadedModel.predict_features, "
                "or scan with --backbone to get a model that embeds images itself"
            )
        return self

    @torch.no_grad()
    def predict_features(self, features: np.ndarray, batch_size: int = 4096) -> np.ndarray:
        """``(N, K)`` probabilities of a head model for embeddings ``(N, D)``."""
        if self.embedding is None:
            raise ConfigError(f"{str(self.path)!r} classifies images, not embeddings; use predict_proba")
        if features.ndim != 2 or features.shape[1] != self.channels:
            raise ConfigError(f"embeddings must be (N, {self.channels}) for this model; got {features.shape}")
        mean, std = self.mean.view(1, -1), self.std.view(1, -1)
        out = [
            mean_softmax(
                self.model(
                    torch.from_numpy(np.asarray(features[i : i + batch_size], dtype=np.float32))
                    .sub(mean)
                    .div(std)
                )
            )
            for i in range(0, len(features), batch_size)
        ]
        return torch.cat(out).numpy() if out else np.zeros((0, len(self.class_names)), dtype=np.float32)

    @torch.no_grad()
    def predict_proba(self, images: np.ndarray, batch_size: int = 512) -> np.ndarray:
        """``(N, K)`` class probabilities of uint8 images ``(N, S, S, C)`` (an ``ImageStore``'s pixels).

        Averages the horizontally flipped view when the network was trained with flips; several
        networks (PMNAR) are averaged too.
        """
        if self.embedding is not None:
            raise ConfigError(
                f"{str(self.path)!r} is a head on embeddings; use predict_store (it embeds the images)"
            )
        if images.ndim != 4 or images.shape[1:] != (self.image_size, self.image_size, self.channels):
            raise ConfigError(
                f"images must be (N, {self.image_size}, {self.image_size}, {self.channels}) for this model; "
                f"got {images.shape}"
            )
        mean, std = self.mean.view(1, -1, 1, 1), self.std.view(1, -1, 1, 1)
        out = []
        for start in range(0, len(images), batch_size):
            batch = torch.from_numpy(np.ascontiguousarray(images[start : start + batch_size])).permute(
                0, 3, 1, 2
            )
            x = batch.float().div_(255).sub_(mean).div_(std).contiguous()
            p = mean_softmax(self.model(x))
            if self.flip_average:
                p = (p + mean_softmax(self.model(x.flip(3)))) / 2
            out.append(p)
        return torch.cat(out).numpy() if out else np.zeros((0, len(self.class_names)), dtype=np.float32)


def _check_same_run(target: Path, checkpoint: dict) -> None:
    """A model.pt beside a summary.json must come from the same run (same data fingerprint)."""
    summary_file = target.parent / "summary.json"
    if not summary_file.is_file():
        return
    try:
        summary = read_json(summary_file)
        expected, run_id = summary.get("data_fingerprint"), summary.get("run_id")
    except (OSError, ValueError, AttributeError):
        return  # not a run's summary: nothing to compare with
    if (expected is not None and checkpoint.get("data_fingerprint") != expected) or (
        run_id is not None and checkpoint.get("run_id") != run_id
    ):
        raise ConfigError(
            f"{str(target)!r} does not belong to the run in its folder (its data fingerprint or run id "
            "differs "
            "from summary.json's: files of two runs are mixed); run the scan or retrain again into a new "
            "--out"
        )


def resolve_model_path(path: str | os.PathLike) -> Path:
    """A ``model.pt`` file, or a run directory containing one."""
    target = Path(path).expanduser()
    if target.is_dir():
        target = target / "model.pt"
    if not target.is_file():
        raise ConfigError(
            f"no model file at {str(target)!r}; pass a model.pt or the run directory of a scan or retrain "
            "that wrote one"
        )
    return target.resolve()


def load_model(path: str | os.PathLike) -> LoadedModel:
    """Load a ``model.pt`` written by :func:`save_model` (or a run directory holding one).

    Raises
    ------
    ConfigError
        The file is missing, is not a labelaudit model, or has another format version.
    """
    target = resolve_model_path(path)
    checkpoint = _read_checkpoint(target)
    _check_same_run(target, checkpoint)
    try:
        prep = checkpoint["preprocessing"]
        model, embedding = _network(checkpoint)
        broken = next(
            (
                k
                for k, v in checkpoint["state_dict"].items()
                if torch.is_floating_point(v) and not torch.isfinite(v).all()
            ),
            None,
        )
        loaded = LoadedModel(
            model=model.eval(),
            class_names=tuple(checkpoint["class_names"]),
            image_size=int(prep["image_size"]),
            channels=int(prep["channels"]),
            mean=torch.tensor(prep["mean"], dtype=torch.float32),
            std=torch.tensor(prep["std"], dtype=torch.float32),
            flip_average=bool(prep.get("flip_average", False)),
            path=target,
            checkpoint=checkpoint,
            embedding=embedding,
        )
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:  # damaged or foreign content
        raise ConfigError(
            f"{str(target)!r} is a damaged labelaudit model file ({type(exc).__name__}: {str(exc)[:120]}); "
            "pass an intact model.pt"
        ) from None
    if broken is not None:  # e.g. saved by a version that did not stop diverged training
        raise ConfigError(
            f"{str(target)!r} holds weights that are not finite numbers ({broken!r}): its training diverged; "
            "train it again with a lower learning rate"
        )
    return loaded


def _read_checkpoint(target: Path) -> dict:
    """The dict saved in ``target``; ConfigError unless it is a labelaudit model of this format version."""
    try:
        checkpoint = load_weights_only(target)
    except Exception as exc:  # unpickling errors come in many types; all mean "not our file"
        raise ConfigError(
            f"{str(target)!r} is not a readable labelaudit model file ({type(exc).__name__}); pass the "
            "model.pt of a run"
        ) from None
    if not isinstance(checkpoint, dict) or any(k not in checkpoint for k in _REQUIRED_KEYS):
        raise ConfigError(
            f"{str(target)!r} is not a labelaudit model file (missing keys); pass the model.pt of a run"
        )
    if checkpoint["format_version"] != MODEL_FORMAT_VERSION:
        raise ConfigError(
            f"{str(target)!r} has model format version {checkpoint['format_version']!r}; this labelaudit "
            "reads "
            f"version {MODEL_FORMAT_VERSION}: use the labelaudit version that wrote it, or run the scan again"
        )
    return checkpoint


def _network(checkpoint: dict) -> tuple[nn.Module, dict | None]:
    """The checkpoint's network with its weights loaded, and where its embeddings came from (None
    for a network on images). KeyError, TypeError, ValueError or RuntimeError for damaged content."""
    prep = checkpoint["preprocessing"]
    names = tuple(checkpoint["class_names"])
    embedding = checkpoint.get("embedding")
    if prep.get("input") == "embeddings":
        if not isinstance(embedding, dict):
            raise KeyError("embedding")
        head = str(checkpoint["backbone"]).removeprefix("head-")
        if head not in HEADS:
            raise ValueError(f"unknown head {head!r}")
        nets = [build_head(head, int(prep["dim"]), len(names)) for _ in range(checkpoint["networks"])]
    else:
        embedding = None
        nets = [
            build_model(
                checkpoint["backbone"],
                prep["channels"],
                len(names),
                depth=checkpoint.get("depth", 8),
                width=checkpoint.get("width", 16),
            )
            for _ in range(checkpoint["networks"])
        ]
    model = nets[0] if len(nets) == 1 else Ensemble(nets)
    model.load_state_dict(checkpoint["state_dict"])
    return model, embedding
