"""Noise estimates from an audit: the transition matrix ``T`` and per-class noise rates.

Convention (stated once, tested in ``tests/test_estimators.py``): ``T[i, j] = P(given = j | true = i)``;
rows are true classes and sum to 1. cleanlab's ``noise_matrix`` is the transpose.
"""

from __future__ import annotations

import numpy as np


def transition_matrix(true_labels: np.ndarray, given_labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Estimate ``T`` from paired labels.

    Parameters
    ----------
    true_labels : array of shape ``(N,)``
        The true class of each sample, or the audit's best guess of it (the cleaned label).
    given_labels : array of shape ``(N,)``
        The label the dataset gives.
    num_classes : int
        ``K``.

    Returns
    -------
    numpy.ndarray of shape ``(K, K)``
        ``T[i, j] = P(given = j | true = i)``; a row with no samples is the identity row
        (nothing observed, nothing assumed flipped).
    """
    true_labels = np.asarray(true_labels, dtype=np.int64)
    given_labels = np.asarray(given_labels, dtype=np.int64)
    if true_labels.shape != given_labels.shape:
        raise ValueError(
            f"true_labels and given_labels must have the same shape; got {true_labels.shape} and "
            f"{given_labels.shape}"
        )
    counts = np.zeros((num_classes, num_classes))
    np.add.at(counts, (true_labels, given_labels), 1)
    rows = counts.sum(axis=1, keepdims=True)
    return np.where(rows > 0, counts / np.maximum(rows, 1), np.eye(num_classes))


def per_class_noise_rates(flags: np.ndarray, given_labels: np.ndarray, num_classes: int) -> np.ndarray:
    """``(K,)`` mean of ``flags`` over the samples *given* each label (NaN for an empty class):
    the share flagged for 0/1 flags, the expected share wrong for probabilities."""
    flags = np.asarray(flags, dtype=np.float64)
    given_labels = np.asarray(given_labels, dtype=np.int64)
    totals = np.bincount(given_labels, minlength=num_classes).astype(float)
    flagged = np.bincount(given_labels, weights=flags, minlength=num_classes)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, flagged / totals, np.nan)


def anchor_transition_matrix(
    probs: np.ndarray, *, percentile: float = 97.0, min_samples_per_class: int = 100
) -> np.ndarray:
    """Estimate ``T`` from anchor points (Patrini et al. 2017).

    For each class ``i``, the anchor is the sample whose predicted ``p_i`` sits at the
    ``percentile``-th percentile over all samples (robust to a few over-confident outliers);
    row ``i`` of ``T`` is that sample's predicted distribution, and rows are normalised.

    Parameters
    ----------
    probs : array of shape ``(N, K)``
        Predictions of a model trained with plain cross-entropy on the noisy labels, *without*
        augmentation: ``probs[n, j]`` estimates ``P(given = j | x_n)``.
    percentile : float, default=97.0
        100 takes the plain argmax.
    min_samples_per_class : int, default=100
        Below ``N / K < min_samples_per_class`` the argmax is used (too few samples for a percentile).

    Returns
    -------
    numpy.ndarray of shape ``(K, K)``, ``T[i, j] = P(given = j | true = i)``, rows sum to 1.
    """
    probs = np.asarray(probs, dtype=np.float64)
    n, k = probs.shape
    use_argmax = percentile >= 100 or n / k < min_samples_per_class
    t = np.empty((k, k))
    for i in range(k):
        column = probs[:, i].copy()  # thresholding below must not modify the caller's array
        if not use_argmax:
            threshold = np.percentile(column, percentile, method="higher")
            column[column >= threshold] = 0.0
        t[i] = probs[np.argmax(column)]
    return t / t.sum(axis=1, keepdims=True)


def confident_learning_flags(probs: np.ndarray, given_labels: np.ndarray) -> np.ndarray:
    """Flags by the confident-learning rule (Northcutt et al.; cleanlab's confident joint).

    Per-class threshold ``t_k`` = mean ``p_k`` over the samples given label ``k``. A sample is
    flagged when some other class ``k`` clears its threshold (``p_k >= t_k``) and beats the given
    label (``p_k > p_given``).

    Parameters
    ----------
    probs : array of shape ``(N, K)``
        Out-of-sample predicted probabilities.
    given_labels : array of shape ``(N,)``

    Returns
    -------
    numpy.ndarray of shape ``(N,)``, bool.
    """
    probs = np.asarray(probs, dtype=np.float64)
    given_labels = np.asarray(given_labels, dtype=np.int64)
    n, k = probs.shape
    thresholds = np.array(
        [probs[given_labels == j, j].mean() if (given_labels == j).any() else 1.0 for j in range(k)]
    )
    p_given = probs[np.arange(n), given_labels]
    candidates = (probs >= thresholds) & (probs > p_given[:, None])
    candidates[np.arange(n), given_labels] = False
    return candidates.any(axis=1)


def bootstrap_interval(
    flags: np.ndarray, *, resamples: int = 1000, level: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of the flagged share (the estimated noise rate).

    Resamples the ``N`` samples with replacement ``resamples`` times; deterministic for a seed.
    It measures sampling uncertainty only, not the bias of the flag rule.
    """
    flags = np.asarray(flags, dtype=np.float64)
    rng = np.random.default_rng(seed)
    means = np.array([flags[rng.integers(0, len(flags), len(flags))].mean() for _ in range(resamples)])
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


def per_class_bootstrap_intervals(
    flags: np.ndarray,
    given_labels: np.ndarray,
    num_classes: int,
    *,
    resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> np.ndarray:
    """Percentile bootstrap interval of each class's flagged share (its estimated noise rate).

    For each class ``k`` the ``n_k`` samples *given* label ``k`` are resampled with replacement
    ``resamples`` times, and the interval is the ``(1 - level) / 2`` and ``(1 + level) / 2``
    percentiles of the flagged share over the resamples, as :func:`bootstrap_interval` does for
    the whole dataset. The number of flagged samples in a resample of ``n_k`` 0/1 flags of which
    a share ``r_k`` is 1 follows ``Binomial(n_k, r_k)`` exactly, so it is drawn as one binomial
    number per resample: the same distribution at ``O(resamples)`` cost per class instead of
    ``O(resamples * n_k)``. Deterministic for a seed; it measures sampling uncertainty only, not
    the bias of the flag rule.

    Parameters
    ----------
    flags : array of shape ``(N,)``
        Whether each sample is flagged (``suspected_noisy``), or the probability that its label is
        wrong (``p_label_wrong``): then each class's count of wrong labels is drawn as
        ``Binomial(n_k, mean p)``, the distribution of the count when every resampled label is
        wrong with its own probability.
    given_labels : array of shape ``(N,)``
        The given label of each sample, as indexes in ``0..K-1``.
    num_classes : int
        ``K``.
    resamples : int, default=1000
    level : float, default=0.95
        Coverage of the interval, in ``(0, 1)``.
    seed : int, default=0

    Returns
    -------
    numpy.ndarray of shape ``(K, 2)``
        ``[low, high]`` per class; both NaN for a class no sample is given (nothing to estimate).
    """
    flags = np.asarray(flags, dtype=np.float64)
    given_labels = np.asarray(given_labels, dtype=np.int64)
    if flags.shape != given_labels.shape or flags.ndim != 1:
        raise ValueError(
            f"flags and given_labels must be 1-D arrays of the same shape; got {flags.shape} and "
            f"{given_labels.shape}"
        )
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1); got {level!r}")
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1; got {resamples!r}")
    totals = np.bincount(given_labels, minlength=num_classes)
    flagged = np.bincount(given_labels, weights=flags, minlength=num_classes)
    rng = np.random.default_rng(seed)
    tail = (1 - level) / 2 * 100
    out = np.full((num_classes, 2), np.nan)
    for k in range(num_classes):  # in class order: the same seed gives the same intervals
        if totals[k] == 0:
            continue
        shares = rng.binomial(totals[k], flagged[k] / totals[k], size=resamples) / totals[k]
        out[k] = np.percentile(shares, [tail, 100 - tail])
    return out


def model_noise_rate(soft_labels: np.ndarray, given_labels: np.ndarray) -> float:
    """The noise rate the soft labels imply, apart from any flag rule: ``1 - mean(p_given)``.

    If the soft labels were calibrated probabilities of the true class, ``1 - p_given`` would be
    each sample's probability of a wrong label and this their expected share. They are not
    calibrated (averaged training-time softmax, pulled towards labels the network learned), so
    this estimate errs in its own way: high where the network stays unsure of right labels,
    low where it learned wrong ones. It is reported beside the flagged share so that a user
    sees two estimates with different failure modes; docs/benchmarks.md measures both.

    Parameters
    ----------
    soft_labels : array of shape ``(N, K)``, rows summing to 1
    given_labels : array of shape ``(N,)``

    Returns
    -------
    float in ``[0, 1]``
    """
    soft = np.asarray(soft_labels, dtype=np.float64)
    given = np.asarray(given_labels, dtype=np.int64)
    if soft.ndim != 2 or soft.shape[0] != given.shape[0]:
        raise ValueError(
            f"soft_labels must be (N, K) with N = len(given_labels) = {len(given)}; got {soft.shape}"
        )
    if len(given) == 0:
        return float("nan")
    return float(np.clip(1.0 - soft[np.arange(len(given)), given].mean(), 0.0, 1.0))
