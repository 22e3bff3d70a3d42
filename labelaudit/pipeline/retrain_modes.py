"""How ``retrain`` trains, one function per mode (docs/methods.md "Retrain"), and its settings.

- ``pseudo`` (NLNL paper section 3.5): a fresh network learns the samples the audit kept (class
  weights from the kept subset); its 10-epoch mean softmax relabels the flagged samples (or all,
  ``relabel="all"``); a second fresh network learns every sample from those soft labels with
  cross-entropy, weighted by the class of each soft label's argmax.
- ``drop``: the first network of ``pseudo`` alone (kept samples only).
- ``forward``: one network on every given label with the forward-corrected loss
  ``-log (T^T p)_y``, ``T`` being the audit's transition-matrix estimate.
- ``labels`` (``RetrainConfig(labels=FILE)``, ``retrain --labels FILE``): one network on the labels
  of a file matched by ``sample_id`` (``apply``'s ``cleaned.parquet``: the reviewed labels), with
  class weights as in ``drop``; the scan's flags are not used, samples absent from the file are
  not trained on.

Each mode takes a :class:`RetrainJob` and returns :class:`Retrained`; :data:`TRAIN_BY_MODE` maps
a mode's name to its function.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from functools import cached_property
from typing import Callable, Optional

import numpy as np
import torch

from ..data.images import ProgressCallback
from ..errors import ConfigError
from ..runs.scan_run import ScanRun
from ..train.losses import forward_corrected_loss, masked_mean
from ..train.methods.nlnl import class_weights
from ..train.tensors import TensorData
from ..train.trainer import TrainConfig, Trainer

MODES = ("pseudo", "drop", "forward", "labels")
RELABEL = ("flagged", "all")


@dataclass(frozen=True)
class RetrainConfig:
    """How to retrain. ``epochs`` is per network (``pseudo`` trains two)."""

    mode: str = "pseudo"
    relabel: str = "flagged"  # pseudo only: which samples take the first network's soft label
    epochs: int = 30
    lr: float = 0.1
    schedule: str = "step"  # lr / 10 at 40% and 80% of each network's epochs
    seed: Optional[int] = None  # None: the scan's seed
    device: Optional[str] = None  # None: the scan's device setting
    threads: Optional[int] = None  # None: the scan's setting (training.cpu_threads)
    labels: Optional[str] = (
        None  # mode "labels": a parquet/CSV with sample_id and label (apply's cleaned.parquet)
    )

    def validate(self) -> "RetrainConfig":
        if self.mode not in MODES:
            raise ConfigError(f"mode must be one of {list(MODES)}; got {self.mode!r}")
        if self.mode == "labels" and self.labels is None:
            raise ConfigError(
                "mode 'labels' trains on the labels of a file: pass --labels FILE (e.g. the cleaned.parquet "
                "of labelaudit apply)"
            )
        if self.labels is not None and self.mode != "labels":
            raise ConfigError(
                f"--labels trains one network on the file's labels and takes no --mode; got --mode "
                f"{self.mode!r}: drop --mode (or --labels)"
            )
        if self.relabel not in RELABEL:
            raise ConfigError(f"relabel must be one of {list(RELABEL)}; got {self.relabel!r}")
        if self.threads is not None and not (isinstance(self.threads, int) and self.threads >= 1):
            raise ConfigError(f"threads must be a positive integer; got {self.threads!r}")
        if self.epochs < 1 or not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(
                f"retrain needs --epochs >= 1 and a finite --lr > 0; got {self.epochs!r}, {self.lr!r}"
            )
        return self

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class RetrainJob:
    """What a mode trains from: the scan's run, its samples as tensors, and the settings."""

    run: ScanRun
    config: RetrainConfig
    train: TrainConfig  # the scan's network settings, with the retrain's seed, device and threads
    data: TensorData  # every sample of the run, labelled with its given label
    reviewed: Optional[np.ndarray]  # mode labels: (N,) class index from --labels, -1 where not listed
    progress: Optional[ProgressCallback] = None

    @cached_property
    def kept(self) -> torch.Tensor:
        """``(N,)`` bool: the samples the first network learns (not flagged; or listed in --labels)."""
        return torch.from_numpy(~self.run.flagged if self.reviewed is None else self.reviewed >= 0)

    def run_phase(self, trainer: Trainer, name: str, loss, context, describe) -> None:
        """Train ``trainer`` for the retrain's epochs at its learning rate and schedule."""
        config = self.config
        trainer.run_phase(name, config.epochs, config.lr, loss, context, describe, config.schedule)


@dataclass
class Retrained:
    """The networks a mode trained and the label each sample ends with."""

    trainers: list[Trainer]  # in training order; the last one holds the final model
    cleaned: np.ndarray  # (N,) class index each sample ends with (cleaned_labels.csv cleaned_label)
    confidence_source: np.ndarray  # (N, K) soft labels; the entry at the cleaned label is its confidence
    in_training: np.ndarray  # (N,) bool: the final network learnt the sample

    @property
    def final(self) -> Trainer:
        return self.trainers[-1]


def learn_reviewed_labels(job: RetrainJob) -> Retrained:
    """Mode ``labels``: one network on the labels of the --labels file, listed samples only."""
    kept, given = job.kept, job.data.labels
    learnt = torch.from_numpy(np.where(job.reviewed >= 0, job.reviewed, given.numpy()))
    final = Trainer(replace(job.data, labels=learnt), job.train, job.progress)
    job.run_phase(
        final,
        "reviewed labels",
        _weighted_ce(class_weights(learnt[kept], job.data.num_classes)),
        lambda _: kept.float(),
        lambda _: f"listed {kept.float().mean().item():.0%}",
    )
    return Retrained([final], learnt.numpy(), job.run.soft_labels(), kept.numpy())


def learn_kept_samples(job: RetrainJob) -> Retrained:
    """Mode ``drop``: one network on the samples the scan kept; the flagged ones take its
    suggested label in cleaned_labels.csv."""
    first = _train_on_kept(job)
    cleaned = np.where(job.run.flagged, job.run.suggested_labels(), job.data.labels.numpy())
    return Retrained([first], cleaned, job.run.soft_labels(), job.kept.numpy())


def pseudo_label(job: RetrainJob) -> Retrained:
    """Mode ``pseudo``: the network of ``drop``, whose mean softmax relabels the flagged samples
    (or all), then a second fresh network on every sample's soft label."""
    first = _train_on_kept(job)
    data, k = job.data, job.data.num_classes
    soft = first.history.mean()  # (N, K) the first network's 10-epoch mean softmax
    relabel = torch.ones(len(data), dtype=torch.bool) if job.config.relabel == "all" else ~job.kept
    targets = torch.nn.functional.one_hot(data.labels, k).float()
    targets[relabel] = soft[relabel]
    hard = targets.argmax(dim=1)
    second = Trainer(replace(data, labels=hard), replace(job.train, seed=job.train.seed + 1), job.progress)
    job.run_phase(
        second,
        "soft labels",
        _soft_ce(targets, class_weights(hard, k)),
        lambda _: targets,
        lambda _: f"relabelled {relabel.float().mean().item():.0%}",
    )
    return Retrained([first, second], hard.numpy(), soft.numpy(), np.ones(len(data), dtype=bool))


def forward_correct(job: RetrainJob) -> Retrained:
    """Mode ``forward``: one network on every given label, through the scan's ``T``."""
    transition = torch.from_numpy(job.run.transition_matrix).float()
    final = Trainer(job.data, job.train, job.progress)
    job.run_phase(final, "forward correction", _forward(transition), None, None)
    everyone = np.ones(len(job.data), dtype=bool)
    return Retrained([final], job.data.labels.numpy(), job.run.soft_labels(), everyone)


#: Each mode of :class:`RetrainConfig` and the function that trains it.
TRAIN_BY_MODE: dict[str, Callable[[RetrainJob], Retrained]] = {
    "pseudo": pseudo_label,
    "drop": learn_kept_samples,
    "forward": forward_correct,
    "labels": learn_reviewed_labels,
}


def _train_on_kept(job: RetrainJob) -> Trainer:
    """A fresh network trained with class-weighted CE on the kept samples (``pseudo``, ``drop``);
    flagged samples pass through it with weight 0, so its history records their predictions."""
    data, kept, run = job.data, job.kept, job.run
    kept_counts = np.bincount(data.labels[kept].numpy(), minlength=data.num_classes)
    if (kept_counts == 0).any():
        empty = run.class_names[int(np.flatnonzero(kept_counts == 0)[0])]
        raise ConfigError(
            f"the scan flagged every sample given class {empty!r}, so --mode {job.config.mode} has nothing "
            "to learn it "
            "from; use --mode forward, or review the flags (flagged.csv) first"
        )
    first = Trainer(data, job.train, job.progress)
    job.run_phase(
        first,
        "kept samples",
        _weighted_ce(class_weights(data.labels[kept], data.num_classes)),
        lambda _: kept.float(),
        lambda _: f"kept {kept.float().mean().item():.0%}",
    )
    return first


def _weighted_ce(weights: torch.Tensor):
    """Class-weighted CE on the samples whose mask entry is 1 (context: ``(N,)`` float mask)."""

    def loss(logits, labels, index, mask):
        per_sample = torch.nn.functional.cross_entropy(logits, labels, reduction="none")
        return masked_mean(per_sample, weights.to(logits.device)[labels] * mask[index])

    return loss


def _soft_ce(targets: torch.Tensor, weights: torch.Tensor):
    """``-sum_k t_k log p_k`` weighted by the class of ``argmax t`` (context: ``(N, K)`` targets)."""

    def loss(logits, labels, index, soft):
        per_sample = -(soft[index] * torch.log_softmax(logits, dim=1)).sum(dim=1)
        return masked_mean(per_sample, weights.to(logits.device)[labels])

    return loss


def _forward(transition: torch.Tensor):
    """The forward-corrected loss ``-log (T^T p)_y`` with the scan's ``T``, averaged over the batch."""

    def loss(logits, labels, index, _):
        per_sample = forward_corrected_loss(logits, labels, transition.to(logits.device))
        return per_sample.mean(), torch.tensor(len(index))

    return loss
