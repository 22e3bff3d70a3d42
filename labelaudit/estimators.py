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
        raise ValueError(f"true_labels and given_labels must have the same shape; got {true_labels.shape} and {given_labels.shape}")
    counts = np.zeros((num_classes, num_classes))
    np.add.at(counts, (true_labels, given_labels), 1)
    rows = counts.sum(axis=1, keepdims=True)
    return np.where(rows > 0, counts / np.maximum(rows, 1), np.eye(num_classes))


def per_class_noise_rates(flags: np.ndarray, given_labels: np.ndarray, num_classes: int) -> np.ndarray:
    """``(K,)`` share of the samples *given* each label that are flagged (NaN for an empty class)."""
    flags = np.asarray(flags, dtype=bool)
    given_labels = np.asarray(given_labels, dtype=np.int64)
    totals = np.bincount(given_labels, minlength=num_classes).astype(float)
    flagged = np.bincount(given_labels[flags], minlength=num_classes).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, flagged / totals, np.nan)
