"""NLNL: Negative Learning for Noisy Labels (Kim et al., ICCV 2019), seed 000.

Three phases on one network:

1. **NL**: push down the probability of complementary labels ("this image is *not* class k").
   A wrong given label is rarely learned, because NL never says what the image *is*.
2. **SelNL**: NL only on samples whose 10-epoch mean ``p_y > 1/K``.
3. **SelPL**: class-weighted cross-entropy only on samples whose mean ``p_y >= gamma``.

After SelPL the 10-epoch mean softmax is the audit's soft label.

Complementary labels: the paper draws one per sample (``complementary=1``). On CPU budgets that
barely learns; the multi-negative form of seed 001 (every class but ``y`` at once,
``complementary="all"``) learns several times faster and is the default (docs/methods.md).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Union

import torch

from ...errors import ConfigError
from ..history import History
from ..losses import EPS
from ..schedule import scaled_epochs
from ..trainer import Trainer


def class_weights(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``w_c = max_k n_k / n_c`` from label counts; a class with no samples gets 0, not inf."""
    counts = torch.bincount(labels, minlength=num_classes).float()
    return torch.where(counts > 0, counts.max() / counts.clamp_min(1), torch.zeros_like(counts))


def draw_complementary(
    labels: torch.Tensor, num_classes: int, draws: int, generator: torch.Generator
) -> torch.Tensor:
    """``(B, draws)`` complementary labels ``(y + U{1..K-1}) % K``: never the given label."""
    offsets = torch.randint(1, num_classes, (len(labels), draws), generator=generator).to(labels.device)
    return (labels[:, None] + offsets) % num_classes


def nl_loss_per_sample(probs: torch.Tensor, complementary: torch.Tensor) -> torch.Tensor:
    """``-sum_k log(1 - p_{ybar_k})`` over the complementary labels of each sample.

    ``probs`` ``(B, K)``; ``complementary`` is either ``(B, n)`` label indices (draws, repeats
    allowed) or a ``(B, K)`` boolean mask of complementary classes. Returns ``(B,)``.
    Not divided by the number of draws: that would shrink the gradient.
    """
    if complementary.dtype == torch.bool:
        terms = -torch.log((1 - probs).clamp_min(EPS)) * complementary
    else:
        terms = -torch.log((1 - probs.gather(1, complementary)).clamp_min(EPS))
    return terms.sum(dim=1)


def nl_loss(probs, complementary, labels, weights, mask) -> tuple[torch.Tensor, torch.Tensor]:
    """Class-weighted NL loss averaged over the samples in ``mask``; ``(loss, n_used)``.

    ``weights`` ``(K,)`` class weights, ``mask`` ``(B,)`` bool. An all-masked batch gives 0, not NaN.
    """
    per_sample = nl_loss_per_sample(probs, complementary) * weights[labels] * mask
    used = mask.sum()
    return per_sample.sum() / used.clamp_min(1), used


def selective_ce_loss(logits, labels, weights, mask) -> tuple[torch.Tensor, torch.Tensor]:
    """Class-weighted cross-entropy on the samples in ``mask``, normalised by the sum of weights."""
    log_p = torch.log_softmax(logits, dim=1).gather(1, labels[:, None]).squeeze(1)
    w = weights[labels] * mask
    return -(w * log_p).sum() / w.sum().clamp_min(EPS), mask.sum()


@dataclass(frozen=True)
class NLNLConfig:
    """Schedule and selection settings of NLNL. ``epochs`` = (NL, SelNL, SelPL)."""

    epochs: tuple[int, int, int] = (20, 20, 20)
    lrs: tuple[float, float, float] = (0.1, 0.1, 0.05)
    complementary: Union[int, str] = "all"  # draws per sample, or "all" (every class but y)
    gamma: float = 0.5  # SelPL keeps samples with mean p_y >= gamma
    min_class_fraction: float = 0.2  # SelPL guard: keep at least this share of each class
    selpl_schedule: str = "constant"  # SelPL learning rate: constant (paper) or cosine decay

    def validate(self, num_classes: int) -> "NLNLConfig":
        if self.complementary != "all" and not (
            isinstance(self.complementary, int) and self.complementary >= 1
        ):
            raise ConfigError(
                f"complementary must be a positive integer or 'all'; got {self.complementary!r}"
            )
        if not 0 < self.gamma < 1:
            raise ConfigError(f"gamma must be in (0, 1); got {self.gamma!r}")
        if len(self.epochs) != 3 or len(self.lrs) != 3:
            raise ConfigError("NLNL needs three epochs and three learning rates (NL, SelNL, SelPL)")
        return self

    def scaled(self, scale: float) -> "NLNLConfig":
        return replace(self, epochs=scaled_epochs(self.epochs, scale))

    def to_dict(self) -> dict:
        return asdict(self)


def selnl_mask(mean_given: torch.Tensor, num_classes: int) -> torch.Tensor:
    """SelNL trains on samples whose mean ``p_y`` beats chance: ``p_y > 1/K``."""
    return mean_given > 1.0 / num_classes


def selpl_mask(
    mean_given: torch.Tensor, labels: torch.Tensor, num_classes: int, gamma: float, min_fraction: float
) -> torch.Tensor:
    """Samples with mean ``p_y >= gamma``, topped up per class to ``min_fraction`` of the class.

    The top-up keeps SelPL from collapsing when it starts from a weak model: a class with few
    confident samples keeps its most confident ones instead of vanishing.
    """
    mask = mean_given >= gamma
    for k in range(num_classes):
        members = torch.nonzero(labels == k).squeeze(1)
        need = int(round(min_fraction * len(members)))
        if need == 0 or int(mask[members].sum()) >= need:
            continue
        best = members[torch.argsort(mean_given[members], descending=True)[:need]]
        mask[best] = True
    return mask


def run_nlnl(trainer: Trainer, config: NLNLConfig) -> None:
    """Train ``trainer.model`` with NL -> SelNL -> SelPL; the soft labels end in ``trainer.history``."""
    data = trainer.data
    k = data.num_classes
    config.validate(k)
    weights = class_weights(data.labels, k).to(trainer.device)
    everyone = torch.ones(len(data), dtype=torch.bool)

    def negative(logits, labels, index, mask):
        probs = torch.softmax(logits, dim=1)
        if config.complementary == "all":
            complementary = torch.ones_like(probs, dtype=torch.bool)
            complementary[torch.arange(len(labels), device=labels.device), labels] = False
        else:
            complementary = draw_complementary(labels, k, config.complementary, trainer.generator)
        return nl_loss(probs, complementary, labels, weights, mask[index].float())

    def positive(logits, labels, index, mask):
        return selective_ce_loss(logits, labels, weights, mask[index].float())

    def selnl_select(history: History) -> torch.Tensor:
        return selnl_mask(history.mean_given(data.labels), k)

    def selpl_select(history: History) -> torch.Tensor:
        return selpl_mask(
            history.mean_given(data.labels), data.labels, k, config.gamma, config.min_class_fraction
        )

    def describe(mask) -> str:
        return f"selected {mask.float().mean().item():.0%}"

    nl_epochs, selnl_epochs, selpl_epochs = config.epochs
    nl_lr, selnl_lr, selpl_lr = config.lrs
    trainer.run_phase("NL", nl_epochs, nl_lr, negative, lambda _: everyone, describe)
    trainer.run_phase("SelNL", selnl_epochs, selnl_lr, negative, selnl_select, describe)
    trainer.run_phase(
        "SelPL", selpl_epochs, selpl_lr, positive, selpl_select, describe, config.selpl_schedule
    )
