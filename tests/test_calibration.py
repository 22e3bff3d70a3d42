"""Calibrated probabilities without the truth (audit.calibration), the audit's new columns and
estimates, and the cross-fitted heads that feed them (train.methods.cross_fit)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import table_of

from labelaudit.audit.calibration import (
    calibrate,
    easy_disagreement_ratio,
    expected_calibration_error,
    expected_transition_matrix,
    reliability_bins,
)
from labelaudit.audit.flags import AMBIGUITY_FLOOR, audit_from_soft_labels
from labelaudit.train.methods.cross_fit import (
    CrossFitConfig,
    cross_fitted_probs,
    fold_plan,
    forward_corrected_probs,
)


def _noisy_probs(kind: str, n: int = 3000, k: int = 4, rate: float = 0.3, seed: int = 0):
    """``(probs of the given label, given, true)`` from a model that knows the noise process.

    ``class-conditional``: labels flipped at ``rate`` whatever the image, so even a sure image's
    given label is right only ``1 - rate`` of the time. ``instance``: only hard images (the model
    unsure between two classes) carry wrong labels: the true class and the annotator's label are
    drawn independently from the image's class probabilities, so ``P(given is right) = p(given)``.
    """
    rng = np.random.default_rng(seed)
    true = rng.integers(0, k, n)
    if kind == "class-conditional":
        clean = np.full((n, k), 0.02 / (k - 1))
        clean[np.arange(n), true] = 0.98
        t = np.full((k, k), rate / (k - 1))
        np.fill_diagonal(t, 1 - rate)
        probs = clean @ t
        given = np.array([rng.choice(k, p=t[c]) for c in true])
        return probs, given, true
    # instance: a share of images sits between a class and the next one
    hard = rng.random(n) < 2 * rate
    mix = np.where(hard, rng.uniform(0.3, 0.7, n), 0.99)
    probs = np.full((n, k), 0.0)
    probs[np.arange(n), true] = mix
    probs[np.arange(n), (true + 1) % k] = 1 - mix
    probs = 0.995 * probs + 0.005 / k
    true = np.array([rng.choice(k, p=p) for p in probs])
    given = np.array([rng.choice(k, p=p) for p in probs])
    return probs, given, true


@pytest.mark.parametrize("kind, expected", [("class-conditional", "through-T"), ("instance", "plain")])
def test_calibration_matches_the_kind_of_noise(kind, expected):
    probs, given, true = _noisy_probs(kind)
    calibrated = calibrate(probs, given)
    assert calibrated.kind == expected
    wrong = given != true
    assert abs(calibrated.p_label_wrong.mean() - wrong.mean()) < 0.03
    assert expected_calibration_error(calibrated.p_label_wrong, wrong) < 0.05
    # the other calibration is far off on this noise: the switch matters
    other = calibrate(probs, given, kind="plain" if expected == "through-T" else "through-T")
    assert expected_calibration_error(other.p_label_wrong, wrong) > 0.08
    np.testing.assert_allclose(calibrated.posterior.sum(axis=1), 1.0)
    np.testing.assert_allclose(calibrated.transition_matrix.sum(axis=1), 1.0)


def test_easy_disagreement_ratio_separates_the_two_kinds():
    cc = easy_disagreement_ratio(*_noisy_probs("class-conditional")[:2])
    inst = easy_disagreement_ratio(*_noisy_probs("instance")[:2])
    assert cc > 0.8 and inst < 0.3


def test_expected_calibration_error_and_reliability_bins_on_hand_numbers():
    confidence = np.array([0.05, 0.05, 0.95, 0.95, 0.55])
    outcome = np.array([0, 0, 1, 0, 1])
    # bins: [0, 0.1) two at 0.05 vs 0 -> 0.05 each; [0.9, 1] 0.95 vs 0.5 -> 0.45 each; [0.5, 0.6) 0.45
    assert expected_calibration_error(confidence, outcome) == pytest.approx((2 * 0.05 + 2 * 0.45 + 0.45) / 5)
    bins = reliability_bins(confidence, outcome)
    assert [b["count"] for b in bins] == [2, 0, 0, 0, 0, 1, 0, 0, 0, 2]
    assert bins[9]["share_true"] == 0.5 and bins[1]["mean_confidence"] is None
    assert np.isnan(expected_calibration_error(np.array([]), np.array([])))


def test_expected_transition_matrix_sums_posteriors_and_keeps_an_empty_row_identity():
    q = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.0, 1.0, 0.0]])
    given = np.array([0, 1, 1])
    t = expected_transition_matrix(q, given)
    # true 0: 1 given 0, 0.5 given 1; true 1: 0.5 + 1 given 1; true 2: no mass -> identity row
    np.testing.assert_allclose(t, [[2 / 3, 1 / 3, 0], [0, 1, 0], [0, 0, 1]])


def test_audit_columns_ranking_ambiguity_and_expected_estimates():
    given = [0, 0, 1, 2, 1]
    soft = np.array(
        [
            [0.90, 0.05, 0.05],  # right
            [0.05, 0.90, 0.05],  # wrong, confidently: suggested b
            [0.50, 0.30, 0.20],  # given b at 0.30, a at 0.50: flagged, given below the floor -> suspect
            [0.10, 0.50, 0.40],  # given c at 0.40, b at 0.50: flagged, both >= 0.35 -> ambiguous
            [0.02, 0.97, 0.01],  # right, surest
        ]
    )
    audit = audit_from_soft_labels(table_of(given), soft, rule="calibrated", calibration="plain")
    r = audit.report
    assert r["p_label_wrong"].tolist() == pytest.approx([0.10, 0.95, 0.70, 0.60, 0.03])
    assert r["confidence"].tolist() == pytest.approx(1 - r["p_label_wrong"])
    assert r["suspected_noisy"].tolist() == [False, True, True, False, False]
    assert r["is_ambiguous"].tolist() == [False, False, False, True, False]
    assert r["ambiguous_with"].tolist() == ["", "", "", "b", ""]
    assert r["reason"].tolist() == ["", "label", "label", "ambiguous", ""]
    assert AMBIGUITY_FLOOR == 0.35
    # rank: p_label_wrong, highest first
    assert r["rank"].tolist() == [4, 1, 2, 3, 5]
    assert r["suggested_label"].tolist()[:4] == ["a", "b", "a", "b"]
    # the suspect ones take the suggestion; the ambiguous one keeps its label
    assert audit.cleaned_labels.tolist() == [0, 1, 0, 2, 1]
    # estimates sum probabilities: flags and ambiguity do not move them
    assert audit.noise_rate == pytest.approx(np.mean([0.10, 0.95, 0.70, 0.60, 0.03]))
    assert audit.per_class_noise_rates.tolist() == pytest.approx([(0.10 + 0.95) / 2, (0.70 + 0.03) / 2, 0.60])
    np.testing.assert_allclose(audit.transition_matrix, expected_transition_matrix(soft, np.array(given)))


def test_a_fixed_threshold_and_given_flags_still_decide_the_flags():
    soft = np.array([[0.9, 0.05, 0.05], [0.3, 0.6, 0.1], [0.2, 0.2, 0.6]])
    fixed = audit_from_soft_labels(table_of([0, 0, 2]), soft, threshold=0.35, calibration="plain")
    assert fixed.report["suspected_noisy"].tolist() == [False, True, False]
    given_flags = audit_from_soft_labels(
        table_of([0, 0, 2]), soft, flags=np.array([True, False, False]), flag_rule={"rule": "mine"}
    )
    assert given_flags.report["suspected_noisy"].tolist() == [True, False, False]
    assert given_flags.flag_rule["rule"] == "mine"


def _clusters(n=600, k=3, d=8, flip=0.15, seed=0):
    rng = np.random.default_rng(seed)
    true = rng.integers(0, k, n)
    centres = rng.normal(0, 3, (k, d))
    x = centres[true] + rng.normal(0, 1, (n, d))
    flipped = rng.random(n) < flip
    given = np.where(flipped, (true + rng.integers(1, k, n)) % k, true)
    return torch.tensor((x - x.mean(0)) / x.std(0), dtype=torch.float32), torch.tensor(given), true


@pytest.mark.parametrize("loss", ["ce", "gce"])
def test_cross_fitted_heads_score_each_sample_without_its_label(loss):
    x, given, true = _clusters()
    config = CrossFitConfig(weight_decays=(0.01, 0.1))
    fit = cross_fitted_probs(x, given, 3, config, loss, seed=0)
    assert fit.probs.shape == (600, 3) and fit.weight_decay in (0.01, 0.1)
    assert set(fit.out_of_fold_nll) == {"0.01", "0.1"}
    wrong = given.numpy() != true
    p_given = fit.probs[np.arange(600), given.numpy()]
    # a head that never saw a flipped label does not believe it: nearly every one is below 0.5
    assert (p_given[wrong] < 0.5).mean() > 0.9
    assert (p_given[~wrong] > 0.5).mean() > 0.9
    again = cross_fitted_probs(x, given, 3, config, loss, seed=0)
    np.testing.assert_array_equal(fit.probs, again.probs)  # same seed, same result


def test_small_classes_get_fewer_folds_and_a_class_of_one_is_not_called_wrong():
    x, given, true = _clusters(n=300)
    folds, count = fold_plan(given.numpy(), 5, seed=0)
    assert count == 5 and set(folds) == set(range(5))
    # one sample of a fourth class, far from the others: no fold could learn it out of sample
    lone = torch.cat([x, torch.full((1, x.shape[1]), 6.0)])
    labels = torch.cat([given, torch.tensor([3])])
    folds, count = fold_plan(labels.numpy(), 5, seed=0)
    assert count == 2  # the smallest class has 1 sample: the fewest folds
    fit = cross_fitted_probs(lone, labels, 4, CrossFitConfig(weight_decays=(0.01,)), "ce", seed=0)
    assert fit.probs[-1, 3] > 0.5  # scored by the head that saw it, not flagged as a sure error


def test_forward_corrected_heads_recover_the_clean_class_under_class_conditional_noise():
    x, given, true = _clusters(n=900, flip=0.3)
    t = np.full((3, 3), 0.15)
    np.fill_diagonal(t, 0.7)
    fit = forward_corrected_probs(x, given, 3, t, CrossFitConfig(weight_decays=(0.01, 0.1)), seed=0)
    assert fit.loss == "forward" and fit.weight_decay in (0.01, 0.1)
    assert (fit.probs.argmax(axis=1) == true).mean() > 0.95  # the clean class, not the given one


def test_summary_lists_the_class_pairs_ambiguous_samples_sit_between():
    from labelaudit.pipeline.scan_outputs import ambiguous_pairs

    report = pd.DataFrame(
        {
            "given_label": ["Shirt", "T-shirt", "Shirt", "Coat", "Bag"],
            "is_ambiguous": [True, True, True, True, False],
            "ambiguous_with": ["T-shirt", "Shirt", "Coat", "Shirt", ""],
        }
    )
    assert ambiguous_pairs(report) == [
        {"classes": ["Coat", "Shirt"], "count": 2},
        {"classes": ["Shirt", "T-shirt"], "count": 2},
    ]
    assert ambiguous_pairs(report, top=1) == [{"classes": ["Coat", "Shirt"], "count": 2}]
    assert ambiguous_pairs(report.drop(columns=["is_ambiguous", "ambiguous_with"])) == []
