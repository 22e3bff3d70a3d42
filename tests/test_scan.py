"""End-to-end scans of generated images with known injected noise, through the library and CLI."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import make_noisy_pattern_dataset

from labelaudit.pipeline.scan import ScanConfig, scan, write_run
from labelaudit.train.methods.nlnl import NLNLConfig
from labelaudit.train.trainer import TrainConfig

# Small but real: 240 images of 16x16, ResNet-8 of width 8, 4+4+4 epochs (a few seconds).
SMALL = ScanConfig(train=TrainConfig(width=8, seed=0), nlnl=NLNLConfig(epochs=(4, 4, 4)))
RUN_FILES = {
    "report.parquet",
    "report.csv",
    "flagged.csv",
    "summary.json",
    "transition_matrix.csv",
    "transition_matrix_anchor.csv",
    ".labelaudit-output.json",
    "true_transition_matrix.csv",
    "skipped.csv",
    "config.json",
    "model.pt",
    "plots",
}


@pytest.fixture(scope="module")
def noisy_patterns(tmp_path_factory):
    root = tmp_path_factory.mktemp("patterns") / "data"
    truth = make_noisy_pattern_dataset(root, per_class=60, noise_rate=0.2, seed=0)
    return root, truth


@pytest.fixture(scope="module")
def scanned(noisy_patterns, tmp_path_factory):
    root, _ = noisy_patterns
    cache = tmp_path_factory.mktemp("scan-cache")
    return scan(root, SMALL, truth=root.parent / "data_truth.csv", cache_dir=cache)


def test_scan_flags_injected_noise_far_better_than_chance(scanned):
    truth = scanned.truth
    # Chance (flagging 20% at random) gives precision ~0.2; demand far more.
    assert truth["precision"] >= 0.8 and truth["recall"] >= 0.8
    assert truth["noise_rate_error"] <= 0.08
    assert truth["relabel_accuracy_on_noisy_flagged"] >= 0.8


def test_run_directory_contract(scanned, tmp_path):
    run = write_run(scanned, tmp_path / "run")
    assert {p.name for p in run.iterdir()} == RUN_FILES
    report = pd.read_parquet(run / "report.parquet")
    assert report.columns[:12].tolist() == [
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
    ]
    np.testing.assert_allclose(report["confidence"] + report["p_label_wrong"], 1.0, atol=1e-6)
    soft = report[[f"p_{c}" for c in scanned.store.table.class_names]].to_numpy()
    np.testing.assert_allclose(soft.sum(axis=1), 1.0, atol=1e-5)
    assert sorted(report["rank"]) == list(range(1, len(report) + 1))
    flagged = pd.read_csv(run / "flagged.csv", keep_default_na=False)
    # flagged.csv lists every suspect label, and the near-duplicates of another label and outliers (reason).
    assert (flagged["reason"] != "").all() and flagged["rank"].is_monotonic_increasing
    assert set(flagged["sample_id"]) == set(report.loc[report["reason"] != "", "sample_id"])
    assert set(report.loc[report["suspected_noisy"], "sample_id"]) <= set(flagged["sample_id"])
    assert (
        flagged["reason"].str.contains("label") == (flagged["suspected_noisy"].astype(str) == "True")
    ).all()
    t = pd.read_csv(run / "transition_matrix.csv", index_col=0)
    assert list(t.columns) == list(scanned.store.table.class_names)
    np.testing.assert_allclose(t.to_numpy().sum(axis=1), 1.0)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["num_samples"] == 240 and summary["truth"]["f1"] == scanned.truth["f1"]
    assert set(summary["seconds"]) >= {"NL", "SelNL", "SelPL", "total"}
    assert json.loads((run / "config.json").read_text())["nlnl"]["epochs"] == [4, 4, 4]
    model = torch.load(run / "model.pt", weights_only=True)
    assert model["class_names"] == list(scanned.store.table.class_names)
    assert model["preprocessing"]["image_size"] == 16 and model["preprocessing"]["channels"] == 1
    assert not any(p.name.endswith(".tmp") for p in run.iterdir())


def test_same_seed_same_report(noisy_patterns, scanned, tmp_path):
    root, _ = noisy_patterns
    again = scan(root, SMALL, cache_dir=tmp_path)
    pd.testing.assert_frame_equal(again.audit.report, scanned.audit.report)
    np.testing.assert_array_equal(again.audit.soft_labels, scanned.audit.soft_labels)


def test_single_complementary_label_form_runs(noisy_patterns, tmp_path):
    root, _ = noisy_patterns
    config = ScanConfig(train=TrainConfig(width=8), nlnl=NLNLConfig(epochs=(2, 1, 1), complementary=1))
    result = scan(root, config, cache_dir=tmp_path)
    assert result.audit.soft_labels.shape == (240, 4)


def test_output_inside_input_is_refused(scanned):
    from labelaudit.errors import ConfigError

    with pytest.raises(ConfigError, match="is inside the input"):
        write_run(scanned, scanned.store.table.root / "run")


def test_pmnar_scan_flags_injected_noise_far_better_than_chance(noisy_patterns, tmp_path):
    from labelaudit.train.methods.pmnar import PMNARConfig

    root, _ = noisy_patterns
    config = ScanConfig(
        method="pmnar", train=TrainConfig(width=8, seed=0), pmnar=PMNARConfig(epochs=12, warmup=6)
    )
    result = scan(root, config, truth=root.parent / "data_truth.csv", cache_dir=tmp_path)
    assert result.truth["precision"] >= 0.8 and result.truth["recall"] >= 0.8
    run = write_run(result, tmp_path / "run")
    model = torch.load(run / "model.pt", weights_only=True)
    assert model["networks"] == 2 and any(k.startswith("networks.1.") for k in model["state_dict"])


def test_summary_has_both_transition_matrices_and_an_interval(scanned, tmp_path):
    run = write_run(scanned, tmp_path / "run")
    summary = json.loads((run / "summary.json").read_text())
    names = list(scanned.store.table.class_names)
    for key in ("transition_matrix", "transition_matrix_anchor"):
        block = summary[key]
        assert "estimator" in block and "matrix" not in block  # K x K tables live in their own files
        matrix = pd.read_csv(run / block["file"], index_col=0)
        assert matrix.index.tolist() == names and matrix.columns.tolist() == names
        np.testing.assert_allclose(matrix.to_numpy().sum(axis=1), 1.0)
        assert list(block["per_class_noise_rates"]) == names
    np.testing.assert_allclose(
        pd.read_csv(run / "transition_matrix.csv", index_col=0).to_numpy(), scanned.audit.transition_matrix
    )
    assert summary["truth"]["true_transition_matrix_file"] == "true_transition_matrix.csv"
    interval = summary["noise_rate_interval_95"]
    assert interval["low"] <= summary["estimated_noise_rate"] <= interval["high"]
    assert "transition_matrix_mae_anchor" in summary["truth"]
