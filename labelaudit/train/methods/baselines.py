"""Baselines: plain cross-entropy and the generalized cross-entropy losses of seed 004.

They run on the same loop, history and flag rule as the noise-robust methods, so a user can see
on their own data whether NLNL or PMNAR beat the simple choices.

- ``ce``: cross-entropy on every sample.
- ``gce``: ``Lq = (1 - p_y^q) / q`` with ``q = 0.7`` (tends to CE as ``q -> 0``, to MAE/2 at ``q = 1``).
- ``truncated-gce``: ``Lq`` with samples whose ``p_y <= k`` (``k = 0.5``) given weight 0; the
  weights are recomputed every 10 epochs from the current model, starting at the first
  learning-rate drop (before it every weight is 1).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch

from ...errors import ConfigError
from ..config import TrainConfig
from ..history import History
from ..losses import EPS
from ..schedule import scaled_epochs
from ..tensors import TensorData
from ..trainer import Trainer

BASELINES = ("ce", "gce", "truncated-gce")  # trained like the other methods; cv-ce is separate


def lq_loss_per_sample(logits: torch.Tensor, labels: torch.Tensor, q: float) -> torch.Tensor:
    """``(1 - p_y^q) / q`` per sample, ``(B,)``, with ``p_y`` clamped to at least 1e-7."""
    p_y = torch.softmax(logits, dim=1).gather(1, labels[:, None]).squeeze(1).clamp_min(EPS)
    return (1 - p_y**q) / q


def truncation_weights(p_y: torch.Tensor, k: float) -> torch.Tensor:
    """``(N,)`` weight 1 where ``p_y > k``, else 0 (truncated Lq)."""
    return (p_y > k).float()


@dataclass(frozen=True)
class BaselineConfig:
    """Schedule of the baselines: ``epochs`` at ``lr``, divided by 10 at 40% and 80% of them."""

    epochs: int = 60
    lr: float = 0.1
    schedule: str = "step"
    q: float = 0.7
    k: float = 0.5
    prune_every: int = 10
    folds: int = 5  # cv-ce: cross-validation folds
    fold_epochs: int = 15  # cv-ce: epochs per fold model (5 x 15 x 4/5 = 60 epochs of data)
    flagger: str = "confident-learning"  # cv-ce: confident-learning | cleanlab

    def validate(self) -> "BaselineConfig":
        if not 0 < self.q <= 1:
            raise ConfigError(f"q must be in (0, 1]; got {self.q!r}")
        if not 0 <= self.k < 1:
            raise ConfigError(f"k must be in [0, 1); got {self.k!r}")
        if self.folds < 2 or self.fold_epochs < 1:
            raise ConfigError(
                f"cv-ce needs folds >= 2 and fold_epochs >= 1; got {self.folds!r}, {self.fold_epochs!r}"
            )
        if self.flagger not in ("confident-learning", "cleanlab"):
            raise ConfigError(f"flagger must be 'confident-learning' or 'cleanlab'; got {self.flagger!r}")
        if self.epochs < 1 or self.prune_every < 1:
            raise ConfigError(
                f"epochs and prune_every must be >= 1; got {self.epochs!r}, {self.prune_every!r}"
            )
        return self

    def scaled(self, scale: float) -> "BaselineConfig":
        epochs, fold_epochs = scaled_epochs((self.epochs, self.fold_epochs), scale)
        return replace(
            self, epochs=epochs, fold_epochs=fold_epochs, prune_every=max(1, round(self.prune_every * scale))
        )

    def to_dict(self) -> dict:
        return asdict(self)


def run_baseline(trainer: Trainer, method: str, config: BaselineConfig, phase: str | None = None) -> None:
    """Train ``trainer.model`` with ``method`` in :data:`BASELINES`."""
    if method not in BASELINES:
        raise ConfigError(f"baseline must be one of {list(BASELINES)}; got {method!r}")
    config.validate()
    n = len(trainer.data)
    first_drop = math.ceil(0.4 * config.epochs)  # first epoch at the reduced rate (step schedule)
    weights = torch.ones(n, device=trainer.device)
    epoch = {"index": 0}

    def select(_: History) -> torch.Tensor:
        e = epoch["index"]
        if method == "truncated-gce" and e >= first_drop and (e - first_drop) % config.prune_every == 0:
            p = trainer.clean_probs_all()
            weights.copy_(truncation_weights(p.gather(1, trainer.labels[:, None]).squeeze(1), config.k))
        epoch["index"] += 1
        return weights

    def loss(logits, labels, index, w):
        if method == "ce":
            per_sample = torch.nn.functional.cross_entropy(logits, labels, reduction="none")
        else:
            per_sample = lq_loss_per_sample(logits, labels, config.q)
        batch_w = w[index]
        return (per_sample * batch_w).sum() / batch_w.sum().clamp_min(1.0), (batch_w > 0).sum()

    def describe(w) -> str:
        return f"kept {w.mean().item():.0%}" if method == "truncated-gce" else ""

    trainer.run_phase(
        phase or method.upper(), config.epochs, config.lr, loss, select, describe, config.schedule
    )


def stratified_folds(labels: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """``(N,)`` fold index per sample: each class spread evenly over the folds, shuffled by ``seed``."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    fold = np.empty(len(labels), dtype=np.int64)
    for k in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == k))
        fold[members] = np.arange(len(members)) % folds
    return fold


def cross_validated_probs(
    data: TensorData, config: BaselineConfig, train_config: TrainConfig, progress=None
) -> tuple[np.ndarray, Trainer]:
    """Out-of-fold probabilities ``(N, K)`` from ``config.folds`` cross-entropy models.

    Each model trains ``config.fold_epochs`` epochs (the baselines' step schedule) on the other
    folds and predicts its own fold without augmentation. Returns the probabilities and the
    first fold's trainer (its model is the one a run directory saves).
    """
    fold = stratified_folds(data.labels.numpy(), config.folds, train_config.seed)
    probs = np.zeros((len(data), data.num_classes))
    first = None
    for f in range(config.folds):
        train_idx = torch.from_numpy(np.flatnonzero(fold != f))
        held_idx = torch.from_numpy(np.flatnonzero(fold == f))
        trainer = Trainer(data.subset(train_idx), replace(train_config, seed=train_config.seed + f), progress)
        run_baseline(
            trainer, "ce", replace(config, epochs=config.fold_epochs), phase=f"CV fold {f + 1}/{config.folds}"
        )
        probs[held_idx.numpy()] = trainer.predict(images=data.subset(held_idx).images).numpy()
        if first is None:
            first = trainer
        else:  # keep every fold's wall time in the run's summary
            first.phase_seconds.update(trainer.phase_seconds)
    return probs, first
