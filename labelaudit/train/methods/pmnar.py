"""PMNAR: Positive and Multi-Negative learning with Adaptive Reweighting (seed 001).

No public code exists; this follows the paper's Algorithm 1. Choices the paper leaves open are
marked "choice:" and listed in docs/methods.md.

Per network ``f`` (two of them, ``f`` and ``f'``, different initialisations):

    loss_i = w_i * PM(f(aug(x_i)), y_i, S_i) + beta * KL( (f(x_i) + f'(x_i)) / 2  ||  f(aug(x_i)) )
    PM     = -log p_y - sum_{k in S_i} log(1 - p_k)

- ``S_i`` starts as every class but ``y_i``; after warm-up, each epoch, the class the network
  currently predicts for ``x_i`` leaves ``S_i`` for good (it may be the true label).
- ``w_i = f'_y(x_i) - min_j f'_y(x_j)`` from the *peer* network (and the reverse), recomputed
  every epoch over all samples after warm-up; 1 during warm-up.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import torch

from ...errors import ConfigError
from ..history import History
from ..losses import EPS
from ..schedule import scaled_epochs
from ..trainer import Trainer

VARIANTS = ("pm", "pm-ar", "full")


def pm_loss_per_sample(
    probs: torch.Tensor, labels: torch.Tensor, complementary: torch.Tensor
) -> torch.Tensor:
    """``-log p_y - sum_{k in S} log(1 - p_k)`` per sample.

    ``probs`` ``(B, K)``, ``labels`` ``(B,)``, ``complementary`` ``(B, K)`` bool mask of ``S``
    (never containing the label). Returns ``(B,)``.
    """
    positive = -torch.log(probs.gather(1, labels[:, None]).squeeze(1).clamp_min(EPS))
    negative = -(torch.log((1 - probs).clamp_min(EPS)) * complementary).sum(dim=1)
    return positive + negative


def initial_complementary(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``(N, K)`` bool: every class but the given label."""
    mask = torch.ones(len(labels), num_classes, dtype=torch.bool)
    mask[torch.arange(len(labels)), labels] = False
    return mask


def remove_predicted(complementary: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
    """Drop each sample's argmax class from its complementary set (in place; sets only shrink)."""
    complementary[torch.arange(len(probs)), probs.argmax(dim=1)] = False
    return complementary


def adaptive_weights(peer_given_probs: torch.Tensor) -> torch.Tensor:
    """``w_i = q_i - min_j q_j`` where ``q`` is the peer network's probability of the given label."""
    return peer_given_probs - peer_given_probs.min()


def consistency_kl(target: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """``KL(target || softmax(logits))`` per sample, ``(B,)``; ``target`` ``(B, K)`` is fixed."""
    log_q = torch.log_softmax(logits, dim=-1)
    return (target * (torch.log(target.clamp_min(EPS)) - log_q)).sum(dim=-1)


def default_beta(num_classes: int) -> float:
    """Consistency weight by class count: 1 up to 10 classes, shrinking as ``10 / K`` above.

    The paper finds beta irrelevant on CIFAR-10 and better small on CIFAR-100; see docs/methods.md
    for the measurement at K = 10.
    """
    return min(1.0, 10.0 / num_classes)


@dataclass(frozen=True)
class PMNARConfig:
    """Schedule and parts of PMNAR. ``variant``: ``pm`` (PM loss, one network), ``pm-ar`` (PM +
    adaptive reweighting from itself, one network) or ``full`` (two networks reweighting each
    other, with consistency).

    ``reweight_from``, ``shrink_sets`` and ``consistency_target`` exist to measure the paper's
    choices against their alternatives (docs/methods.md, "Where our PMNAR differs from the
    paper"); the defaults are the paper's."""

    # The budget at which PMNAR matches NLNL's default (docs/methods.md, "Quality against budget").
    epochs: int = 240
    warmup: int = 50
    lr: float = 0.1
    schedule: str = "constant"  # better than the paper-shaped "step" at this budget (docs/methods.md)
    beta: float | None = None  # None: default_beta(K)
    variant: str = "full"
    reweight_from: str = "peer"  # peer (paper) or own: whose confidence in the given label weights a sample
    shrink_sets: bool = True  # paper: each epoch after warm-up the argmax class leaves the multi-negative set
    consistency_target: str = "ensemble"  # ensemble (paper: mean of both networks' clean views) or own

    def validate(self) -> "PMNARConfig":
        if self.variant not in VARIANTS:
            raise ConfigError(f"pmnar variant must be one of {list(VARIANTS)}; got {self.variant!r}")
        if self.warmup < 0 or self.epochs < 1:
            raise ConfigError(
                f"pmnar needs epochs >= 1 and warmup >= 0; got {self.epochs!r}, {self.warmup!r}"
            )
        if self.reweight_from not in ("peer", "own"):
            raise ConfigError(f"pmnar reweight_from must be 'peer' or 'own'; got {self.reweight_from!r}")
        if self.consistency_target not in ("ensemble", "own"):
            raise ConfigError(
                f"pmnar consistency_target must be 'ensemble' or 'own'; got {self.consistency_target!r}"
            )
        if self.beta is not None and self.beta < 0:
            raise ConfigError(f"beta must be >= 0; got {self.beta!r}")
        return self

    def scaled(self, scale: float) -> "PMNARConfig":
        epochs, warmup = scaled_epochs((self.epochs, self.warmup), scale)
        return replace(self, epochs=epochs, warmup=min(warmup, epochs - 1) if self.warmup else 0)

    @property
    def networks(self) -> int:
        return 2 if self.variant == "full" else 1

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class PMNARState:
    """Per-sample state at the end of training: ``complementary`` ``(M, N, K)`` bool sets and
    ``weights`` ``(M, N)`` adaptive weights, one row per network."""

    complementary: torch.Tensor
    weights: torch.Tensor


def run_pmnar(trainer: Trainer, config: PMNARConfig) -> PMNARState:
    """Train ``trainer.model`` (one or two networks, see ``config.networks``) with PMNAR."""
    config.validate()
    data, device = trainer.data, trainer.device
    n, k, m = len(data), data.num_classes, trainer.networks
    if m != config.networks:
        raise ConfigError(
            f"pmnar variant {config.variant!r} needs a trainer with {config.networks} networks; got {m}"
        )
    beta = (config.beta if config.beta is not None else default_beta(k)) if config.variant == "full" else 0.0
    labels = data.labels.to(device)
    complementary = initial_complementary(data.labels, k).to(device).expand(m, n, k).clone()  # (M, N, K)
    # Last epoch's un-augmented softmax, written per batch (tracked: complete on every rank of a
    # data-parallel run at each epoch's end).
    clean = trainer.track_rows(
        torch.full((m, n, k), 1.0 / k, device=device, dtype=trainer.state_dtype), dim=1
    )
    weights = torch.ones(m, n, device=device)
    epoch = {"index": 0}

    def start_epoch(_: History) -> torch.Tensor:
        # Never before the first epoch: `clean` is still uniform and its argmax meaningless.
        if epoch["index"] >= max(config.warmup, 1):
            given = clean[:, torch.arange(n, device=device), labels]  # (M, N)
            for net in range(m):
                if config.shrink_sets:
                    remove_predicted(complementary[net], clean[net])
                if config.variant != "pm":
                    # The other network (itself when there is only one, or when measuring "own").
                    peer = (net + 1) % m if config.reweight_from == "peer" else net
                    weights[net] = adaptive_weights(given[peer])
        epoch["index"] += 1
        return weights

    def loss(logits, batch_labels, index, w):
        logits = logits.view(m, len(index), k)  # one network gives (B, K): view as (1, B, K)
        probs_aug = torch.softmax(logits, dim=-1)
        probs_clean = trainer.clean_probs(index).view(m, len(index), k)
        clean[:, index] = probs_clean.to(clean.dtype)
        target = probs_clean.mean(dim=0)  # ensemble prediction on the un-augmented view
        total = logits.new_zeros(())
        for net in range(m):
            per_sample = w[net, index] * pm_loss_per_sample(
                probs_aug[net], batch_labels, complementary[net, index]
            )
            if beta:
                own = config.consistency_target == "own"
                per_sample = per_sample + beta * consistency_kl(
                    probs_clean[net] if own else target, logits[net]
                )
            total = total + per_sample.mean()
        return total, torch.tensor(len(index))

    def describe(w) -> str:
        return (
            f"weight>0 {(w > 0).float().mean().item():.0%}" if epoch["index"] > config.warmup else "warm-up"
        )

    trainer.run_phase("PMNAR", config.epochs, config.lr, loss, start_epoch, describe, config.schedule)
    trainer.recompute_batch_norm()  # the saved model and the anchor estimator predict in eval mode
    return PMNARState(complementary.cpu(), weights.cpu())
