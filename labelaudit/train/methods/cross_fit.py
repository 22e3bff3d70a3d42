"""``cv-gce``: cross-fitted linear heads on embeddings, the head-mode method.

Every sample is scored by a linear head that never saw it: the samples are split into
``folds`` stratified folds and each fold is predicted by a head trained on the others. A model
that trained on a wrong label has learnt part of it; one that did not cannot have, so the
out-of-fold probabilities show human-like mistakes that a single head (truncated GCE, the
previous default) had fitted (docs/calibration.md: flag F1 0.50 -> 0.77 on Fashion-MNIST with
30% confusable noise).

Each head is multinomial logistic regression on the standardised embeddings, trained on the
whole training fold at once by L-BFGS with the GCE loss ``(1 - p_y^q) / q`` (Zhang & Sabuncu
2018, seed 004), which lets a wrong label pull less than cross-entropy does. The weight decay
is chosen without the truth: the value of a grid whose cross-entropy heads give the given labels
the best out-of-fold likelihood. The model the run saves is the same head trained on every sample.

A linear head trains in about a second, so the whole method (the grid, the folds and the final
head) costs less than training one head by SGD.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch

from ...errors import ConfigError
from ..config import TrainConfig
from ..losses import EPS
from ..tensors import TensorData
from ..trainer import Trainer
from .baselines import stratified_folds


@dataclass(frozen=True)
class CrossFitConfig:
    """Settings of ``cv-gce``."""

    folds: int = 5
    q: float = 0.7  # GCE's exponent (seed 004)
    # searched by out-of-fold likelihood; pretrained embeddings chose 0.03-0.3, a scan's own
    # penultimate features 0.001-0.01 (docs/calibration.md)
    weight_decays: tuple[float, ...] = (0.001, 0.01, 0.03, 0.1, 0.3, 1.0)
    max_iter: int = 50  # L-BFGS iterations per head: 50 gave the same flags as 200 in half the time

    def validate(self) -> "CrossFitConfig":
        if self.folds < 2:
            raise ConfigError(f"cv-gce needs folds >= 2; got {self.folds!r}")
        if not 0 < self.q <= 1:
            raise ConfigError(f"q must be in (0, 1]; got {self.q!r}")
        if not self.weight_decays or any(not wd >= 0 for wd in self.weight_decays):
            raise ConfigError(f"weight_decays must be non-negative numbers; got {self.weight_decays!r}")
        if self.max_iter < 1:
            raise ConfigError(f"max_iter must be >= 1; got {self.max_iter!r}")
        return self

    def scaled(self, scale: float) -> "CrossFitConfig":
        return replace(self, max_iter=max(1, round(self.max_iter * scale)))

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class CrossFit:
    """What :func:`run_cross_fit` found: out-of-fold probabilities and the chosen weight decay."""

    probs: np.ndarray  # (N, K) out-of-fold softmax
    weight_decay: float
    out_of_fold_nll: dict  # {weight decay: out-of-fold NLL of the given labels under CE}
    loss: str = "gce"
    features: torch.Tensor | None = None  # (N, D) the standardised features the heads read

    def summary(self) -> dict:
        """``summary.json``'s ``cross_fit``: the heads' loss and the weight decay chosen."""
        return {"loss": self.loss, "weight_decay": self.weight_decay, "out_of_fold_nll": self.out_of_fold_nll}


def run_cross_fit(
    data: TensorData, config: CrossFitConfig, train_config: TrainConfig, progress=None
) -> tuple[CrossFit, Trainer]:
    """Run ``cv-gce`` on embeddings ``data``; returns the result and a trainer holding the final head.

    The trainer's model is a linear head (``train_config.head`` is overridden to ``linear``)
    whose weights are the GCE head fitted on every sample, so that ``predict`` and the saved
    model work as after any other method.
    """
    config.validate()
    if not data.is_features:
        raise ConfigError(
            "cv-gce trains linear heads on embeddings: add --backbone (a pretrained backbone's "
            "embeddings) or --embeddings FILE, or choose another --method for a network on the pixels"
        )
    trainer = Trainer(data, replace(train_config, head="linear"), progress)
    with trainer.compute_threads():
        x = torch.cat(
            [trainer.normalize(trainer.batches.gather(i)).cpu() for i in torch.arange(len(data)).split(4096)]
        )
        started = time.perf_counter()
        y, k = data.labels.cpu(), data.num_classes
        fit = cross_fitted_probs(x, y, k, config, "gce", train_config.seed, progress)
        w, b = _fit_linear(x, y, k, "gce", config.q, fit.weight_decay, config.max_iter)
    with torch.no_grad():
        trainer.model.weight.copy_(w.T.to(trainer.device))
        trainer.model.bias.copy_(b.to(trainer.device))
    trainer.phase_seconds["cv-gce"] = time.perf_counter() - started
    return fit, trainer


def cross_fitted_probs(
    x: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    config: CrossFitConfig,
    loss: str,
    seed: int,
    progress=None,
) -> CrossFit:
    """Out-of-fold probabilities of linear heads on the features ``x`` ``(N, D)`` (standardised).

    The weight decay is the one of ``config.weight_decays`` whose cross-entropy heads give the
    given ``labels`` the lowest out-of-fold negative log-likelihood; the heads that score the
    samples are then trained with ``loss`` (``ce`` or ``gce``) at that weight decay. Folds:
    :func:`fold_plan`.
    """
    x, y = x.float(), labels.long()
    folds, count = fold_plan(y.numpy(), config.folds, seed)
    grid = tuple(config.weight_decays)
    report = _progress_counter(progress, "cross-fit", (len(grid) + (loss != "ce")) * count)
    probs, nll, starts = {}, {}, {}
    # Strongest decay first, each fold's head starting from the previous one's: the cross-entropy
    # problems are convex, so the optimum is the same, reached in fewer iterations.
    for weight_decay in sorted(grid, reverse=True):
        logits = _out_of_fold(x, y, num_classes, folds, "ce", weight_decay, config, None, report, starts)
        probs[weight_decay] = torch.softmax(logits, dim=1).numpy()
        nll[weight_decay] = _nll(probs[weight_decay], y)
    chosen = min(nll, key=nll.get)
    if loss != "ce":
        logits = _out_of_fold(x, y, num_classes, folds, loss, chosen, config, None, report)
        probs[chosen] = torch.softmax(logits, dim=1).numpy()
    return CrossFit(probs[chosen], chosen, {str(k): v for k, v in nll.items()}, loss, x)


def forward_corrected_probs(
    x: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    transition: np.ndarray,
    config: CrossFitConfig,
    seed: int,
    progress=None,
) -> CrossFit:
    """Out-of-fold probabilities of the *clean* class from heads trained through ``transition``
    (forward correction, Patrini et al. 2017: the cross-entropy of ``softmax(z) @ T`` against the
    given label). The weight decay is the one whose heads give the given labels the best
    out-of-fold likelihood through T. For class-conditional noise, where a head trained on the
    noisy labels spends its capacity on fitting the flips (docs/calibration.md)."""
    x, y = x.float(), labels.long()
    t = torch.as_tensor(transition, dtype=torch.float32)
    folds, count = fold_plan(y.numpy(), config.folds, seed)
    report = _progress_counter(progress, "forward-corrected", len(config.weight_decays) * count)
    probs, nll = {}, {}
    for weight_decay in config.weight_decays:
        logits = _out_of_fold(x, y, num_classes, folds, "forward", weight_decay, config, t, report)
        clean = torch.softmax(logits, dim=1).numpy()
        probs[weight_decay] = clean
        nll[weight_decay] = _nll(clean @ np.asarray(transition, dtype=np.float64), y)
    chosen = min(nll, key=nll.get)
    return CrossFit(probs[chosen], chosen, {str(k): v for k, v in nll.items()}, "forward")


def _nll(probs: np.ndarray, labels: torch.Tensor) -> float:
    """Mean negative log-likelihood of ``labels`` under ``probs`` ``(N, K)`` (floored at EPS)."""
    return float(-np.log(np.clip(probs[np.arange(len(labels)), labels.numpy()], EPS, 1)).mean())


def fold_plan(labels: np.ndarray, folds: int, seed: int) -> tuple[np.ndarray, int]:
    """``(fold of each sample, number of folds)``: stratified folds
    (:func:`~labelaudit.train.methods.baselines.stratified_folds`), fewer than ``folds`` when the
    smallest class has fewer samples (at least 2), so that every class is in every fold's
    training part wherever it can be."""
    sizes = np.bincount(labels)
    smallest = int(sizes[sizes > 0].min()) if len(labels) else 2
    count = max(2, min(folds, smallest))
    return stratified_folds(labels, count, seed), count


def _out_of_fold(
    x, y, num_classes, folds, loss, weight_decay, config, transition, report, starts=None
) -> torch.Tensor:
    """``(N, K)`` float64 logits, each sample's from the head trained on the other folds. A sample
    whose class is absent from its fold's training part (a class of one sample) has no such head
    to learn its class from; it is scored by the head trained on every sample instead.

    ``starts``: a dict ``{fold: (W, b)}`` each fold's head starts from (absent: zero), updated with
    the heads found, so that the next weight decay of a grid starts where this one ended."""
    logits = torch.zeros(len(y), num_classes, dtype=torch.float64)
    unseen = np.zeros(len(y), dtype=bool)
    labels = y.numpy()
    for f in range(int(folds.max()) + 1):
        held = np.flatnonzero(folds == f)
        train = np.flatnonzero(folds != f)
        start = None if starts is None else starts.get(f)
        w, b = _fit_linear(
            x[train], y[train], num_classes, loss, config.q, weight_decay, config.max_iter, transition, start
        )
        if starts is not None:
            starts[f] = (w, b)
        logits[held] = (x[held] @ w + b).double()
        unseen[held] = ~np.isin(labels[held], labels[train])
        report(f"weight decay {weight_decay:g}")
    if unseen.any():
        w, b = _fit_linear(x, y, num_classes, loss, config.q, weight_decay, config.max_iter, transition)
        logits[unseen] = (x[unseen] @ w + b).double()
    return logits


def _progress_counter(progress, phase: str, total: int):
    """``report(extra)``: one more fit of ``total`` done, told to ``progress`` (if any)."""
    done = [0]

    def report(extra: str) -> None:
        done[0] += 1
        if progress is not None:
            progress(phase, done[0], total, extra)

    return report


def _fit_linear(x, y, num_classes, loss, q, weight_decay, max_iter, transition=None, start=None):
    """``(W (D, K), b (K,))`` of multinomial logistic regression by full-batch L-BFGS from zero (or
    from ``start``, a ``(W, b)``): mean ``ce``, ``gce`` or ``forward`` (cross-entropy of
    ``softmax(z) @ transition``) loss plus ``weight_decay / 2 * ||W||^2``."""
    if start is None:
        w = torch.zeros(x.shape[1], num_classes, requires_grad=True)
        b = torch.zeros(num_classes, requires_grad=True)
    else:
        w, b = (t.clone().requires_grad_(True) for t in start)
    optimizer = torch.optim.LBFGS(
        [w, b], lr=1, max_iter=max_iter, history_size=20, line_search_fn="strong_wolfe"
    )

    def objective():
        optimizer.zero_grad()
        logits = x @ w + b
        if loss == "ce":
            per_sample = torch.nn.functional.cross_entropy(logits, y, reduction="none")
        elif loss == "forward":
            noisy = torch.softmax(logits, dim=1) @ transition
            per_sample = -noisy.gather(1, y[:, None]).squeeze(1).clamp_min(EPS).log()
        else:
            p_y = torch.softmax(logits, dim=1).gather(1, y[:, None]).squeeze(1).clamp_min(EPS)
            per_sample = (1 - p_y**q) / q
        value = per_sample.mean() + 0.5 * weight_decay * (w * w).sum()
        value.backward()
        return value

    optimizer.step(objective)
    return w.detach(), b.detach()
