"""Anchor-point T, confident-learning flags, bootstrap interval and loss correction."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from labelaudit.audit.estimators import anchor_transition_matrix, bootstrap_interval, confident_learning_flags
from labelaudit.train.losses import backward_corrected_loss, forward_corrected_loss, invert_transition

TRUE_T = np.array([[0.8, 0.2, 0.0], [0.1, 0.7, 0.2], [0.0, 0.3, 0.7]])


def test_anchor_estimator_recovers_a_known_t():
    rng = np.random.default_rng(0)
    n = 3000
    # Most samples are near-anchors of their class (clean posterior close to one-hot, with a
    # continuous spread as a network's would have); some are ambiguous.
    eps = rng.uniform(0, 0.05, (n, 1))
    clean = (1 - eps) * np.eye(3)[rng.integers(0, 3, n)] + eps * rng.dirichlet(np.ones(3), n)
    mixed = rng.random(n) < 0.2
    clean[mixed] = rng.dirichlet(np.ones(3), mixed.sum())
    probs = clean @ TRUE_T  # P(given = j | x) = sum_i P(true = i | x) T[i, j]
    before = probs.copy()
    t = anchor_transition_matrix(probs)
    np.testing.assert_allclose(t, TRUE_T, atol=0.01)
    np.testing.assert_array_equal(probs, before)  # the caller's array is untouched
    np.testing.assert_allclose(anchor_transition_matrix(probs, percentile=100).sum(axis=1), 1.0)


def test_confident_learning_rule_on_a_hand_made_table():
    probs = np.array(
        [
            [0.9, 0.1, 0.0],  # given 0
            [0.7, 0.2, 0.1],  # given 0
            [0.2, 0.7, 0.1],  # given 1
            [0.85, 0.1, 0.05],  # given 1: class 0 clears t0 = 0.8 and beats p1 -> flagged
            [0.1, 0.1, 0.8],  # given 2
            [0.3, 0.45, 0.25],  # given 2: class 1 clears t1 = 0.4 and beats p2 -> flagged
            [0.5, 0.1, 0.4],  # given 2: class 0 beats p2 but misses t0 -> kept
        ]
    )
    given = np.array([0, 0, 1, 1, 2, 2, 2])
    flags = confident_learning_flags(probs, given)
    assert flags.tolist() == [False, False, False, True, False, True, False]


def test_bootstrap_interval_brackets_the_rate_and_is_deterministic():
    flags = np.zeros(1000, bool)
    flags[:200] = True
    low, high = bootstrap_interval(flags, seed=1)
    assert low < 0.2 < high and high - low < 0.07
    assert bootstrap_interval(flags, seed=1) == (low, high)


def test_forward_with_identity_is_cross_entropy():
    logits = torch.randn(5, 3)
    labels = torch.tensor([0, 1, 2, 1, 0])
    ce = torch.nn.functional.cross_entropy(logits, labels, reduction="none")
    assert forward_corrected_loss(logits, labels, torch.eye(3)).tolist() == pytest.approx(
        ce.tolist(), rel=1e-5
    )
    assert backward_corrected_loss(logits, labels, torch.eye(3)).tolist() == pytest.approx(
        ce.tolist(), rel=1e-5
    )


def test_backward_loss_finite_at_extreme_probabilities():
    t_inv = torch.from_numpy(invert_transition(TRUE_T)).float()
    logits = torch.tensor([[60.0, -60.0, 0.0], [-60.0, 60.0, -60.0]], requires_grad=True)
    loss = backward_corrected_loss(logits, torch.tensor([1, 1]), t_inv)
    assert torch.isfinite(loss).all()
    loss.sum().backward()
    assert torch.isfinite(logits.grad).all()


def test_invert_transition_mixes_a_singular_matrix_with_the_identity():
    singular = np.array([[0.5, 0.5], [0.5, 0.5]])
    inverse = invert_transition(singular)
    assert np.isfinite(inverse).all()
    np.testing.assert_allclose(invert_transition(TRUE_T) @ TRUE_T, np.eye(3), atol=1e-9)
