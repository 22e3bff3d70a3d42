"""NLNL losses, complementary labels and selection rules against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from labelaudit.errors import ConfigError
from labelaudit.train.methods.nlnl import (
    NLNLConfig,
    class_weights,
    draw_complementary,
    nl_loss,
    nl_loss_per_sample,
    selective_ce_loss,
    selnl_mask,
    selpl_mask,
)
from labelaudit.train.trainer import History, scaled_epochs

PROBS = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3]])
LABELS = torch.tensor([0, 1])


def test_nl_loss_all_complementary_by_hand():
    mask = torch.tensor([[False, True, True], [True, False, True]])
    per_sample = nl_loss_per_sample(PROBS, mask)
    expected = [-math.log(0.8) - math.log(0.9), -math.log(0.9) - math.log(0.7)]
    assert per_sample.tolist() == pytest.approx(expected)


def test_nl_loss_draws_are_summed_not_averaged():
    draws = torch.tensor([[1, 1], [2, 0]])
    assert nl_loss_per_sample(PROBS, draws).tolist() == pytest.approx(
        [-2 * math.log(0.8), -math.log(0.7) - math.log(0.9)]
    )


def test_nl_loss_class_weights_and_mask():
    draws = torch.tensor([[1], [2]])
    weights = torch.tensor([2.0, 1.0, 1.0])
    loss, used = nl_loss(PROBS, draws, LABELS, weights, torch.tensor([1.0, 0.0]))
    assert used.item() == 1
    assert loss.item() == pytest.approx(2 * -math.log(0.8))  # only sample 0, weight 2, mean over 1
    loss, used = nl_loss(PROBS, draws, LABELS, weights, torch.tensor([1.0, 1.0]))
    assert loss.item() == pytest.approx((2 * -math.log(0.8) - math.log(0.7)) / 2)


def test_fully_masked_batch_gives_zero_not_nan():
    logits = torch.randn(2, 3, requires_grad=True)
    for loss, used in (
        nl_loss(torch.softmax(logits, 1), torch.tensor([[1], [2]]), LABELS, torch.ones(3), torch.zeros(2)),
        selective_ce_loss(logits, LABELS, torch.ones(3), torch.zeros(2)),
    ):
        assert used.item() == 0 and loss.item() == 0.0 and not torch.isnan(loss)
        loss.backward()
        assert not torch.isnan(logits.grad).any()


def test_nl_loss_is_finite_when_p_reaches_one():
    probs = torch.tensor([[1.0, 0.0, 0.0]])
    assert torch.isfinite(nl_loss_per_sample(probs, torch.tensor([[0]]))).all()


def test_selective_ce_normalised_by_weights():
    logits = torch.log(PROBS)
    weights = torch.tensor([3.0, 1.0, 1.0])
    loss, used = selective_ce_loss(logits, LABELS, weights, torch.tensor([1.0, 1.0]))
    expected = (3 * -math.log(0.7) + 1 * -math.log(0.6)) / 4
    assert used.item() == 2 and loss.item() == pytest.approx(expected, rel=1e-5)


def test_complementary_labels_never_equal_the_given_label():
    labels = torch.randint(0, 10, (5000,))
    draws = draw_complementary(labels, 10, 3, torch.Generator().manual_seed(0))
    assert draws.shape == (5000, 3)
    assert not (draws == labels[:, None]).any()
    assert set(draws.unique().tolist()) == set(range(10))


def test_class_weights_max_over_count_and_zero_for_empty():
    weights = class_weights(torch.tensor([0, 0, 0, 0, 1, 1]), 3)
    assert weights.tolist() == [1.0, 2.0, 0.0]


def test_selnl_mask_is_strictly_above_chance():
    assert selnl_mask(torch.tensor([0.1, 0.1001, 0.5, 0.05]), 10).tolist() == [False, True, True, False]


def test_selpl_mask_threshold_and_per_class_guard():
    mean_given = torch.tensor([0.9, 0.5, 0.49, 0.1, 0.2, 0.3, 0.05, 0.6])
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    plain = selpl_mask(mean_given, labels, 2, gamma=0.5, min_fraction=0.0)
    assert plain.tolist() == [True, True, False, False, False, False, False, True]
    guarded = selpl_mask(mean_given, labels, 2, gamma=0.5, min_fraction=0.5)
    # class 1 has one sample >= 0.5, so its next most confident (0.3) joins to reach half
    assert guarded.tolist() == [True, True, False, False, False, True, False, True]


def test_history_ring_buffer_mean():
    history = History(num_samples=2, num_classes=2, window=2)
    assert history.mean().tolist() == [[0.5, 0.5], [0.5, 0.5]]
    for p in (0.2, 0.4, 0.8):
        history.push(torch.tensor([[p, 1 - p], [1 - p, p]]))
    assert history.mean()[0].tolist() == pytest.approx([0.6, 0.4])  # last two epochs only
    assert history.mean_given(torch.tensor([0, 0])).tolist() == pytest.approx([0.6, 0.4])


def test_schedule_scaling_and_validation():
    assert scaled_epochs((20, 20, 20), 0.5) == (10, 10, 10)
    assert scaled_epochs((20, 0, 3), 0.1) == (2, 0, 1)
    with pytest.raises(ConfigError, match="complementary must be a positive integer or 'all'"):
        NLNLConfig(complementary=0).validate(10)
