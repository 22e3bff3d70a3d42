"""Lq / truncated Lq losses by hand and their limits, and a baseline scan end to end."""

from __future__ import annotations

import math

import pytest
import torch

from labelaudit.pipeline.scan import ScanConfig, scan
from labelaudit.train.methods.baselines import BaselineConfig, lq_loss_per_sample, truncation_weights
from labelaudit.train.trainer import TrainConfig

LOGITS = torch.log(torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3], [0.05, 0.05, 0.9]]))
LABELS = torch.tensor([0, 2, 1])


def test_lq_by_hand():
    expected = [(1 - 0.7**0.7) / 0.7, (1 - 0.3**0.7) / 0.7, (1 - 0.05**0.7) / 0.7]
    assert lq_loss_per_sample(LOGITS, LABELS, 0.7).tolist() == pytest.approx(expected, rel=1e-5)


def test_lq_tends_to_ce_as_q_goes_to_zero():
    ce = torch.nn.functional.cross_entropy(LOGITS, LABELS, reduction="none")
    assert lq_loss_per_sample(LOGITS, LABELS, 1e-4).tolist() == pytest.approx(ce.tolist(), rel=1e-3)


def test_lq_is_half_mae_at_q_one():
    p = torch.softmax(LOGITS, dim=1)
    mae = (p - torch.nn.functional.one_hot(LABELS, 3)).abs().sum(dim=1)
    assert lq_loss_per_sample(LOGITS, LABELS, 1.0).tolist() == pytest.approx((mae / 2).tolist(), rel=1e-5)


def test_lq_finite_gradient_at_zero_probability():
    logits = torch.tensor([[100.0, -100.0]], requires_grad=True)
    lq_loss_per_sample(logits, torch.tensor([1]), 0.7).sum().backward()
    assert torch.isfinite(logits.grad).all()


def test_truncation_weights():
    assert truncation_weights(torch.tensor([0.9, 0.5, 0.2, 0.51]), 0.5).tolist() == [1.0, 0.0, 0.0, 1.0]


@pytest.mark.parametrize("method", ["ce", "truncated-gce"])
def test_baseline_scans_run_end_to_end(method, tmp_path):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from conftest import make_noisy_pattern_dataset

    root = tmp_path / "data"
    make_noisy_pattern_dataset(root, per_class=30, noise_rate=0.2, seed=3)
    config = ScanConfig(
        method=method,
        train=TrainConfig(width=8, batch_size=32),
        baseline=BaselineConfig(epochs=10, prune_every=2),
    )
    result = scan(root, config, truth=tmp_path / "data_truth.csv", cache_dir=tmp_path / "cache")
    assert result.audit.soft_labels.shape == (120, 4)
    assert result.truth["recall"] > 0.5 and math.isfinite(result.truth["f1"])
    assert result.config.baseline.epochs == 10


def test_stratified_folds_spread_each_class_evenly():
    import numpy as np

    from labelaudit.train.methods.baselines import stratified_folds

    labels = np.repeat([0, 1, 2], [50, 30, 20])
    fold = stratified_folds(labels, 5, seed=0)
    for k in range(3):
        counts = np.bincount(fold[labels == k], minlength=5)
        assert counts.max() - counts.min() <= 1
    assert (stratified_folds(labels, 5, seed=0) == fold).all()


@pytest.mark.parametrize("flagger", ["confident-learning", "cleanlab"])
def test_cv_ce_scan_flags_noise_far_better_than_chance(flagger, tmp_path):
    import sys
    from pathlib import Path

    if flagger == "cleanlab":
        pytest.importorskip("cleanlab")
    sys.path.insert(0, str(Path(__file__).parent))
    from conftest import make_noisy_pattern_dataset

    root = tmp_path / "data"
    make_noisy_pattern_dataset(root, per_class=40, noise_rate=0.2, seed=4)
    config = ScanConfig(
        method="cv-ce",
        train=TrainConfig(width=8, batch_size=32),
        baseline=BaselineConfig(folds=3, fold_epochs=6, flagger=flagger),
    )
    result = scan(root, config, truth=tmp_path / "data_truth.csv", cache_dir=tmp_path / "cache")
    assert result.truth["precision"] >= 0.6 and result.truth["recall"] >= 0.6
    assert result.audit.flag_rule["rule"].startswith(
        "confident" if flagger == "confident-learning" else "cleanlab"
    )
    assert {f"CV fold {f}/3" for f in (1, 2, 3)} <= set(result.seconds)
