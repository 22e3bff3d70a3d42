"""Instance-dependent noise, the kind a person makes (``inject-noise --kind confusable``): an image
is mislabelled as the class it resembles, and ambiguous images are mislabelled more often.

How much each image resembles each class is :func:`confusion_probabilities` (an out-of-fold
logistic regression on its pixels, :func:`pixel_features`); :func:`confusable_flips` draws exactly
``round(rate * N)`` flips with :func:`inclusion_probabilities` and :func:`systematic_sample`.
docs/benchmarks.md ("Human-like noise") describes the recipe and what it gives.
"""

from __future__ import annotations

import numpy as np

from ..errors import ConfigError
from .noisy_dataset import NoisyLabels


def confusable_flips(
    labels: np.ndarray,
    class_names: tuple[str, ...],
    rate: float,
    confusion: np.ndarray,
    rng: np.random.Generator,
) -> NoisyLabels:
    """Flip ``round(rate * N)`` labels, each to the other class its image resembles most.

    Sample ``n`` can only move to its most probable other class ``o_n`` of ``confusion`` ``(N, K)``;
    it is flipped with probability ``min(1, s * confusion[n, o_n])``, ``s`` set so that these sum
    to the count (:func:`inclusion_probabilities`), and exactly that many are drawn
    (:func:`systematic_sample`). A class left with no sample is a ConfigError.
    """
    n, k = len(labels), len(class_names)
    confusion = np.asarray(confusion, dtype=np.float64)
    if confusion.shape != (n, k) or not np.isfinite(confusion).all() or (confusion < 0).any():
        raise ConfigError(
            f"confusion probabilities must be a finite non-negative ({n}, {k}) array; got {confusion.shape}"
        )
    others = confusion.copy()
    others[np.arange(n), labels] = -np.inf
    target = others.argmax(axis=1)
    weight = others[np.arange(n), target]
    wanted = int(round(rate * n))
    if wanted > int((weight > 0).sum()):
        raise ConfigError(
            f"--rate {rate:g} asks for {wanted} flips but only {int((weight > 0).sum())} images resemble "
            "another class at all; lower --rate"
        )
    probability = inclusion_probabilities(weight, wanted)
    chosen = systematic_sample(probability, rng)
    noisy = labels.copy()
    noisy[chosen] = target[chosen]
    emptied = [c for c in np.unique(labels) if not (noisy == c).any()]
    if emptied:  # a class nobody is given any more vanishes from the manifest (its truth rows then fail)
        c = int(emptied[0])
        raise ConfigError(
            f"confusable noise at --rate {rate:g} moves every image of class {class_names[c]!r} "
            f"({int((labels == c).sum())}) elsewhere and none into it; lower --rate or try another --seed"
        )
    return NoisyLabels(labels, noisy, "confusable", rate, None, class_names, flip_probability=probability)


def inclusion_probabilities(weight: np.ndarray, count: int) -> np.ndarray:
    """``min(1, s * weight)`` with the scale ``s`` found by bisection so they sum to ``count``."""
    weight = np.asarray(weight, dtype=np.float64)
    if count <= 0:
        return np.zeros_like(weight)
    low, high = 0.0, 1.0
    while np.minimum(1.0, high * weight).sum() < count:
        high *= 2
        if high > 1e300:
            raise ConfigError(
                f"cannot choose {count} samples from {int((weight > 0).sum())} with a non-zero weight"
            )
    for _ in range(200):
        middle = (low + high) / 2
        if np.minimum(1.0, middle * weight).sum() < count:
            low = middle
        else:
            high = middle
    probability = np.minimum(1.0, high * weight)
    # exact sum; rounding moves no value above 1 by more than 1e-12
    return probability * (count / probability.sum())


def systematic_sample(probability: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Indexes of a sample of exactly ``round(sum(probability))`` items in which item ``i`` is
    included with probability ``probability[i]``: systematic sampling over a random order."""
    order = rng.permutation(len(probability))
    edges = np.concatenate([[0.0], np.cumsum(np.clip(probability[order], 0.0, 1.0))])
    start = rng.uniform()
    # item j is taken when an integer + start falls in [edges[j], edges[j+1])
    hits = np.floor(edges[1:] - start) - np.floor(edges[:-1] - start)
    return np.sort(order[hits > 0])


def confusion_probabilities(
    features: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    *,
    folds: int = 5,
    weight_decay: float = 1e-2,
    iterations: int = 100,
    seed: int = 0,
) -> tuple[np.ndarray, dict]:
    """Out-of-fold class probabilities of a multinomial logistic regression: how much each image
    resembles each class, to a simple reader of its pixels.

    The features are standardised (per dimension, over all samples); each of ``folds`` seeded
    folds is predicted by a model fitted with L-BFGS (``iterations`` steps from zero weights,
    L2 penalty ``weight_decay / 2 * |W|^2`` on the mean cross-entropy) on the other folds, so no
    image scores itself. Returns ``(N, K)`` probabilities and a description of the recipe with
    the classifier's out-of-fold accuracy on the (clean) labels.
    """
    import torch

    x = torch.as_tensor(np.asarray(features, dtype=np.float64).reshape(len(features), -1))
    x = (x - x.mean(0)) / x.std(0).clamp_min(1e-3)
    y = torch.as_tensor(np.array(labels, dtype=np.int64))
    n = len(y)
    fold_of = np.random.default_rng(seed).permutation(n) % folds
    probs = torch.zeros(n, num_classes, dtype=torch.float64)
    from ..train.compute import torch_threads

    with torch_threads(
        1
    ):  # float sums depend on the thread count: one thread gives the same noise on every machine
        _fit_folds(x, y, fold_of, folds, num_classes, weight_decay, iterations, probs)
    result = probs.numpy()
    recipe = {
        "classifier": "multinomial logistic regression (L-BFGS, float64, one thread) on standardised pixels",
        "folds": folds,
        "weight_decay": weight_decay,
        "iterations": iterations,
        "features": int(x.shape[1]),
        "out_of_fold_accuracy": float((result.argmax(1) == y.numpy()).mean()),
    }
    return result, recipe


def _fit_folds(
    x, y, fold_of: np.ndarray, folds: int, num_classes: int, weight_decay: float, iterations: int, probs
) -> None:
    """Fill ``probs`` (``(N, K)`` float64) fold by fold from zero-started L-BFGS fits on the other folds."""
    import torch

    for fold in range(folds):  # zero start, full batches: nothing random but the folds
        held = torch.from_numpy(fold_of == fold)
        w = torch.zeros(x.shape[1], num_classes, dtype=torch.float64, requires_grad=True)
        b = torch.zeros(num_classes, dtype=torch.float64, requires_grad=True)
        optimizer = torch.optim.LBFGS(
            [w, b], lr=1, max_iter=iterations, history_size=20, line_search_fn="strong_wolfe"
        )
        x_fit, y_fit = x[~held], y[~held]

        def closure():
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(x_fit @ w + b, y_fit) + weight_decay / 2 * (w * w).sum()
            loss.backward()
            return loss

        optimizer.step(closure)
        with torch.no_grad():
            probs[held] = torch.softmax(x[held] @ w + b, dim=1)


def pixel_features(store, max_side: int = 28) -> np.ndarray:
    """``(N, D)`` float32 pixels of an :class:`~labelaudit.data.images.ImageStore` in ``[0, 1]``,
    area-averaged
    down to at most ``max_side`` pixels a side (a logistic regression gains nothing from more)."""
    import torch

    chunks = []
    for start in range(0, len(store), 4096):
        batch = (
            torch.from_numpy(store.images(slice(start, start + 4096))).permute(0, 3, 1, 2).float().div_(255)
        )
        if batch.shape[-1] > max_side:
            batch = torch.nn.functional.adaptive_avg_pool2d(batch, max_side)
        chunks.append(batch.reshape(len(batch), -1))
    return torch.cat(chunks).numpy()
