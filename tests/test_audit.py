"""Audit report, estimators (T orientation) and truth metrics on hand-made numbers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import table_of

from labelaudit.audit.estimators import per_class_noise_rates, transition_matrix
from labelaudit.audit.flags import audit_from_soft_labels
from labelaudit.audit.metrics import detection_metrics, load_truth, truth_metrics
from labelaudit.errors import ManifestError

REPORT_COLUMNS = [
    "sample_id",
    "path",
    "given_label",
    "suspected_noisy",
    "confidence",
    "p_label_wrong",
    "suggested_label",
    "suggested_confidence",
    "label_quality",
    "rank",
    "is_ambiguous",
    "ambiguous_with",
    "reason",
]


def test_audit_report_flags_ranks_and_suggestions():
    table = table_of([0, 1, 2, 0])
    soft = np.array([[0.9, 0.05, 0.05], [0.6, 0.3, 0.1], [0.2, 0.2, 0.6], [0.45, 0.55, 0.0]])
    audit = audit_from_soft_labels(table, soft, threshold=0.5, calibration="plain")
    report = audit.report
    assert report.columns.tolist() == REPORT_COLUMNS
    # s3: given a at 0.45 and b at 0.55 both keep >= 0.35: ambiguous, not a confident error
    assert report["suspected_noisy"].tolist() == [False, True, False, False]
    assert report["is_ambiguous"].tolist() == [False, False, False, True]
    assert report["reason"].tolist() == ["", "label", "", "ambiguous"]
    assert report["confidence"].tolist() == pytest.approx([0.9, 0.3, 0.6, 0.45])
    assert report["p_label_wrong"].tolist() == pytest.approx([0.1, 0.7, 0.4, 0.55])
    assert report["suggested_label"].tolist() == ["a", "a", "c", "b"]
    # label_quality = p_given / (p_given + p_best_other)
    assert report["label_quality"].tolist() == pytest.approx([0.9 / 0.95, 0.3 / 0.9, 0.6 / 0.8, 0.45 / 1.0])
    assert report["rank"].tolist() == [4, 1, 3, 2]  # highest p_label_wrong first
    assert audit.cleaned_labels.tolist() == [0, 0, 2, 0]  # the ambiguous label is kept
    assert audit.noise_rate == pytest.approx((0.1 + 0.7 + 0.4 + 0.55) / 4)  # expected share wrong
    np.testing.assert_allclose(audit.transition_matrix.sum(axis=1), 1.0)
    # T expected under the posteriors: true a carries 0.9 + 0.45 given a, 0.6 given b, 0.2 given c
    np.testing.assert_allclose(audit.transition_matrix[0], np.array([1.35, 0.6, 0.2]) / 2.15)


def _soft_labels(rng, given, kind):
    """Soft labels over 4 classes: 'clean' (given label dominant), 'hard' (given label loses
    narrowly to a neighbour) or 'wrong' (given label near zero)."""
    k = 4
    soft = np.zeros((len(given), k))
    for i, g in enumerate(given):
        other = (g + 1 + rng.integers(0, k - 1)) % k
        if kind[i] == "clean":
            p = rng.uniform(0.9, 0.999)
            soft[i, g], soft[i, other] = p, 1 - p
        elif kind[i] == "hard":
            p = rng.uniform(0.3, 0.45)
            soft[i, g], soft[i, other] = p, 1 - p
        else:
            p = 10 ** rng.uniform(-5, -3)
            soft[i, g], soft[i, other] = p, 1 - p
    return soft


def test_learned_boundary_flags_wrong_labels_not_hard_ones():
    rng = np.random.default_rng(0)
    kind = np.array(["clean"] * 700 + ["hard"] * 100 + ["wrong"] * 200)
    given = rng.integers(0, 4, len(kind))
    table = table_of(list(given), names=("a", "b", "c", "d"))
    audit = audit_from_soft_labels(table, _soft_labels(rng, given, kind), calibration="plain")
    flags = audit.report["suspected_noisy"].to_numpy()
    assert (flags == (kind == "wrong")).all()  # the p=0.5 rule would also flag the 100 hard ones
    assert flags.mean() == pytest.approx(0.2)
    assert audit.flag_rule["rule"] == "mixture" and audit.flag_rule["margin_boundary"] < 0
    fixed = audit_from_soft_labels(
        table, _soft_labels(np.random.default_rng(0), given, kind), threshold=0.5, calibration="plain"
    )
    listed = fixed.report["suspected_noisy"] | fixed.report["is_ambiguous"]
    assert listed.sum() == 300


def test_learned_boundary_never_flags_the_most_likely_label():
    rng = np.random.default_rng(1)
    kind = np.array(["clean"] * 300 + ["hard"] * 0)
    given = rng.integers(0, 4, len(kind))
    audit = audit_from_soft_labels(
        table_of(list(given), names=("a", "b", "c", "d")), _soft_labels(rng, given, kind)
    )
    assert not audit.report["suspected_noisy"].any()


def test_audit_rejects_wrong_shapes():
    with pytest.raises(ValueError, match=r"soft_labels must have shape \(N, K\) = \(2, 3\); got \(2, 2\)"):
        audit_from_soft_labels(table_of([0, 1]), np.ones((2, 2)) / 2)


def test_transition_matrix_orientation_rows_are_true_classes():
    true = np.array([0, 0, 0, 0, 1, 1])
    given = np.array([0, 0, 0, 1, 1, 1])
    t = transition_matrix(true, given, 3)
    assert t[0].tolist() == [0.75, 0.25, 0.0]  # P(given = 1 | true = 0) = 1/4
    assert t[1].tolist() == [0.0, 1.0, 0.0]
    assert t[2].tolist() == [0.0, 0.0, 1.0]  # no samples of true class 2: identity row
    np.testing.assert_allclose(t.sum(axis=1), 1.0)


def test_per_class_noise_rates_by_given_label():
    rates = per_class_noise_rates(np.array([True, False, True, True]), np.array([0, 0, 1, 1]), 3)
    assert rates[:2].tolist() == [0.5, 1.0] and np.isnan(rates[2])


def test_detection_metrics_by_hand():
    flags = np.array([True, True, False, False, True])
    noisy = np.array([True, False, True, False, True])
    m = detection_metrics(flags, noisy)
    assert (m["precision"], m["recall"], m["true_positives"]) == (
        pytest.approx(2 / 3),
        pytest.approx(2 / 3),
        2,
    )
    assert m["f1"] == pytest.approx(2 / 3)
    assert detection_metrics(np.zeros(3, bool), np.array([True, False, False]))["f1"] == 0.0


def test_truth_metrics_noise_rate_and_relabel_accuracy():
    given = np.array([0, 1, 2, 0])
    true = np.array([0, 0, 2, 1])
    flags = np.array([False, True, False, False])
    suggested = np.array([0, 0, 2, 0])
    m = truth_metrics(flags, given, true, suggested, 0.25, transition_matrix(given, given, 3))
    assert m["true_noise_rate"] == 0.5 and m["noise_rate_error"] == 0.25
    assert (m["precision"], m["recall"]) == (1.0, 0.5)
    assert m["relabel_accuracy_on_noisy_flagged"] == 1.0
    assert m["transition_matrix_mae"] > 0


def test_load_truth_by_sample_id_and_by_path(tmp_path):
    table = table_of([0, 1, 2])
    by_id = tmp_path / "t.csv"
    pd.DataFrame({"sample_id": ["s2", "s0", "s1"], "true_label": ["a", "a", "b"]}).to_csv(by_id, index=False)
    assert load_truth(by_id, table).tolist() == [0, 1, 0]
    by_path = tmp_path / "p.parquet"
    pd.DataFrame(
        {"path": ["/data/s0.png", "/data/s1.png", "/data/s2.png"], "label": ["c", "c", "c"]}
    ).to_parquet(by_path)
    assert load_truth(by_path, table).tolist() == [2, 2, 2]


def test_load_truth_errors(tmp_path):
    table = table_of([0, 1, 2])
    partial = tmp_path / "t.csv"
    pd.DataFrame({"sample_id": ["s0", "s1"], "true_label": ["a", "b"]}).to_csv(partial, index=False)
    with pytest.raises(ManifestError, match=r"has no row for 1 samples \(first: 's2'\)"):
        load_truth(partial, table)
    unknown = tmp_path / "u.csv"
    pd.DataFrame({"sample_id": ["s0", "s1", "s2"], "true_label": ["a", "b", "zebra"]}).to_csv(
        unknown, index=False
    )
    with pytest.raises(ManifestError, match="uses label 'zebra'"):
        load_truth(unknown, table)
    with pytest.raises(ManifestError, match="does not exist"):
        load_truth(tmp_path / "none.csv", table)


def test_fixed_threshold_never_suggests_the_given_label():
    table = table_of([0, 1])
    soft = np.array([[0.4, 0.33, 0.27], [0.1, 0.8, 0.1]])
    audit = audit_from_soft_labels(table, soft, threshold=0.5, calibration="plain")
    report = audit.report
    assert report["suspected_noisy"].tolist() == [True, False]
    assert report["suggested_label"].tolist() == ["b", "b"]  # flagged 'a' -> strongest other class
    assert report["suggested_confidence"].tolist() == pytest.approx([0.33, 0.8])
    assert audit.cleaned_labels.tolist() == [1, 1]


def test_load_truth_relative_path_and_na_like_class_names(tmp_path, monkeypatch):
    table = table_of([0, 1, 2], names=("NA", "None", "null"))
    (tmp_path / "t.csv").write_text("sample_id,true_label\ns0,NA\ns1,None\ns2,NA\n")
    monkeypatch.chdir(tmp_path)
    assert load_truth("t.csv", table).tolist() == [0, 1, 0]
    by_path = tmp_path / "p.csv"
    pd.DataFrame({"path": ["/data/s0.png", "/data/s1.png", "/data/s2.png"], "label": ["null"] * 3}).to_csv(
        by_path, index=False
    )
    assert load_truth("p.csv", table).tolist() == [2, 2, 2]


def test_mixture_boundary_ignores_the_far_left_tail_crossing():
    from labelaudit.audit.flags import _crossing

    # A narrow wrong-label component and a wide right-label one cross twice: near -6 and again far
    # out in the left tail; the boundary is the crossing between the means.
    boundary = _crossing(np.array([-8.0, 4.0]), np.array([1.0, 6.0]), np.array([0.2, 0.8]), lowest=-30.0)
    assert -8.0 < boundary < 4.0


def test_mixture_boundary_goes_above_zero_only_for_a_component_of_disputed_labels():
    from labelaudit.audit.flags import MixtureFit, mixture_boundary

    def fit(low_mean, boundary):
        return MixtureFit(means=(low_mean, 7.0), stds=(5.0, 2.3), weights=(0.45, 0.55), boundary=boundary)

    assert mixture_boundary(fit(-2.4, 3.5)) == 3.5  # clearly disputed labels: the whole crossing
    assert mixture_boundary(fit(-0.5, 3.5)) == pytest.approx(1.75)  # half of it
    assert mixture_boundary(fit(1.5, 4.0)) == 0.0  # hard but right labels: capped at 0
    assert mixture_boundary(fit(-8.0, -1.9)) == -1.9  # below 0: as fitted
    # No jump when the low component's mean crosses 0 (a shift of 0.01 moved 14% of flags before).
    assert abs(mixture_boundary(fit(-0.005, 2.5)) - mixture_boundary(fit(0.005, 2.5))) < 0.02


def test_learned_boundary_flags_learned_wrong_labels_just_above_zero():
    """Human-like noise: wrong labels the network half learned sit at small positive margins,
    mixed with disputed ones below 0; the fitted boundary (above 0) flags them, and a flagged
    sample whose given label is still the most likely class is suggested its strongest rival."""
    rng = np.random.default_rng(0)
    n_right, n_wrong = 700, 300
    given = rng.integers(0, 3, n_right + n_wrong)
    margin = np.concatenate([rng.normal(7.0, 1.5, n_right), rng.normal(-1.5, 1.5, n_wrong)])
    other = (given + 1) % 3
    soft = np.full((len(given), 3), 1e-4)
    p_given = 1 / (1 + np.exp(-margin))
    soft[np.arange(len(given)), given] = p_given
    soft[np.arange(len(given)), other] = 1 - p_given
    audit = audit_from_soft_labels(table_of(list(given)), soft, calibration="plain")
    # suspect or ambiguous: both are what the boundary flagged
    flags = (audit.report["suspected_noisy"] | audit.report["is_ambiguous"]).to_numpy()
    assert audit.flag_rule["margin_boundary"] > 0
    wrong = np.arange(len(given)) >= n_right
    assert flags[wrong].mean() > 0.85 and flags[~wrong].mean() < 0.02
    learned = flags & (margin > 0)  # flagged though the given label is the most likely
    assert learned.any()
    assert (
        audit.report["suggested_label"].to_numpy()[learned] != audit.report["given_label"].to_numpy()[learned]
    ).all()


def test_model_noise_rate_is_the_expected_share_of_wrong_labels():
    from labelaudit.audit.estimators import model_noise_rate

    soft = np.array([[0.9, 0.1], [0.2, 0.8], [0.5, 0.5]])
    assert model_noise_rate(soft, np.array([0, 0, 1])) == pytest.approx(1 - (0.9 + 0.2 + 0.5) / 3)
    table = table_of([0, 0, 1], names=("a", "b"))
    audit = audit_from_soft_labels(table, soft, threshold=0.5, calibration="plain")
    assert audit.model_noise_rate == pytest.approx(1 - (0.9 + 0.2 + 0.5) / 3)
    assert audit.noise_rate == pytest.approx(audit.report["p_label_wrong"].mean())
    assert audit.report["suspected_noisy"].mean() == pytest.approx(1 / 3)  # the flagged share stays separate
    with pytest.raises(ValueError, match="soft_labels must be"):
        model_noise_rate(soft, np.array([0, 1]))
