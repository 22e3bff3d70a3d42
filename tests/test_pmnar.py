"""PMNAR parts against hand-computed values, and its invariants during a real (small) run."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from labelaudit.errors import ConfigError
from labelaudit.train.methods.pmnar import (
    PMNARConfig,
    adaptive_weights,
    consistency_kl,
    default_beta,
    initial_complementary,
    pm_loss_per_sample,
    remove_predicted,
    run_pmnar,
)
from labelaudit.train.tensors import TensorData
from labelaudit.train.trainer import TrainConfig, Trainer


def test_pm_loss_by_hand():
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3]])
    labels = torch.tensor([0, 1])
    s = torch.tensor([[False, True, True], [True, False, False]])  # sample 1 already lost class 2
    expected = [-math.log(0.7) - math.log(0.8) - math.log(0.9), -math.log(0.6) - math.log(0.9)]
    assert pm_loss_per_sample(probs, labels, s).tolist() == pytest.approx(expected)


def test_complementary_sets_exclude_the_label_and_only_shrink():
    labels = torch.tensor([0, 2, 1])
    s = initial_complementary(labels, 3)
    assert s.tolist() == [[False, True, True], [True, True, False], [True, False, True]]
    before = s.clone()
    remove_predicted(s, torch.tensor([[0.1, 0.8, 0.1], [0.2, 0.1, 0.7], [0.6, 0.3, 0.1]]))
    assert s.tolist() == [[False, False, True], [True, True, False], [False, False, True]]
    assert not (s & ~before).any()  # nothing was added


def test_adaptive_weights_nonnegative_and_zero_for_least_confident():
    w = adaptive_weights(torch.tensor([0.9, 0.05, 0.5, 0.3]))
    assert w.tolist() == pytest.approx([0.85, 0.0, 0.45, 0.25])
    assert (w >= 0).all()


def test_consistency_kl_by_hand():
    target = torch.tensor([[0.5, 0.5]])
    logits = torch.log(torch.tensor([[0.25, 0.75]]))
    expected = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    assert consistency_kl(target, logits).item() == pytest.approx(expected, rel=1e-5)
    assert consistency_kl(target, torch.zeros(1, 2)).item() == pytest.approx(0.0, abs=1e-6)


def test_default_beta_shrinks_with_classes():
    assert default_beta(2) == 1.0 and default_beta(10) == 1.0 and default_beta(100) == pytest.approx(0.1)


def _tiny_data(n=64, k=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 1, 8, 8), generator=g, dtype=torch.uint8)
    labels = torch.arange(n) % k
    return TensorData(images, labels, k, torch.tensor([0.5]), torch.tensor([0.25]))


def test_two_networks_differ_at_initialisation():
    trainer = Trainer(_tiny_data(), TrainConfig(width=4, seed=0), networks=2)
    first, second = trainer.model.networks
    assert not torch.equal(first.stem[0].weight, second.stem[0].weight)
    assert trainer.model(torch.zeros(3, 1, 8, 8)).shape == (2, 3, 4)


def test_run_keeps_label_out_of_sets_and_histories_finite():
    data = _tiny_data()
    trainer = Trainer(data, TrainConfig(width=4, seed=0), networks=2)
    state = run_pmnar(trainer, PMNARConfig(epochs=4, warmup=1))
    assert torch.isfinite(trainer.history.mean()).all()
    s = state.complementary
    assert s.shape == (2, 64, 4)
    assert not s[:, torch.arange(64), data.labels].any()  # the given label never enters S
    assert (s.sum(dim=2) < 3).any()  # some sets shrank after warm-up
    assert (state.weights >= 0).all() and (state.weights.min(dim=1).values == 0).all()
    assert trainer.history.filled == 4


@pytest.mark.parametrize("variant, networks", [("pm", 1), ("pm-ar", 1)])
def test_single_network_ablations_run(variant, networks):
    trainer = Trainer(_tiny_data(), TrainConfig(width=4, seed=0), networks=networks)
    run_pmnar(trainer, PMNARConfig(epochs=2, warmup=1, variant=variant))
    assert trainer.history.filled == 2


def test_batch_norm_statistics_are_recomputed_from_the_data_after_training():
    """After run_pmnar, every running mean is the exact average of its layer's batch means over
    one un-augmented pass: the stem's first BN sees the stem conv's output, so its running mean
    equals that output's per-channel mean over the data (equal batches here: 64 = 2 x 32)."""
    data = _tiny_data()
    trainer = Trainer(data, TrainConfig(width=4, seed=0, batch_size=32, precision="fp32"), networks=2)
    run_pmnar(trainer, PMNARConfig(epochs=3, warmup=1))
    net = trainer.model.networks[0]
    with torch.no_grad():
        conv = net.stem[0](trainer.normalize(trainer._gather(torch.arange(64))))
    np.testing.assert_allclose(
        net.stem[1].running_mean.numpy(), conv.mean(dim=(0, 2, 3)).numpy(), rtol=1e-4, atol=1e-5
    )
    # The switches for measuring the paper's choices are checked at the boundary.
    with pytest.raises(ConfigError, match="reweight_from"):
        PMNARConfig(reweight_from="both").validate()
    with pytest.raises(ConfigError, match="consistency_target"):
        PMNARConfig(consistency_target="peer").validate()


def test_sets_stay_whole_without_shrinking():
    data = _tiny_data()
    trainer = Trainer(data, TrainConfig(width=4, seed=0), networks=2)
    state = run_pmnar(trainer, PMNARConfig(epochs=4, warmup=1, shrink_sets=False, reweight_from="own"))
    assert (state.complementary.sum(dim=2) == 3).all()  # every class but the given one, throughout
