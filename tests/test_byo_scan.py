"""``scan --embeddings`` and ``scan --probs`` end to end: real image folders, real files, the CLI.

The embeddings and probabilities carry the true class (plus noise), so a working pipeline must
find the planted wrong labels; the inputs must come out unchanged.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pandas as pd
import pytest

from conftest import make_noisy_pattern_dataset, run_cli
from labelaudit.methods.baselines import cv_flags


def _tree_digest(*paths) -> str:
    digest = hashlib.sha256()
    for root in paths:
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for path in files:
            digest.update(str(path).encode() + path.read_bytes())
    return digest.hexdigest()


@pytest.fixture()
def noisy(tmp_path):
    root = tmp_path / "data"
    truth = make_noisy_pattern_dataset(root, per_class=40, noise_rate=0.2, seed=3)
    return root, truth, tmp_path / "data_truth.csv"


def _class_signal(truth: pd.DataFrame, dim: int, seed: int) -> np.ndarray:
    """Per sample: its TRUE class as a one-hot over the first classes, plus Gaussian noise."""
    classes = sorted(truth["true_label"].unique())
    index = truth["true_label"].map({c: i for i, c in enumerate(classes)}).to_numpy()
    rng = np.random.default_rng(seed)
    signal = np.zeros((len(truth), dim))
    signal[np.arange(len(truth)), index] = 3.0
    return signal + rng.normal(0, 0.7, signal.shape)


def test_scan_with_own_embeddings_trains_a_head_and_finds_the_wrong_labels(noisy, tmp_path, capsys):
    root, truth, truth_file = noisy
    features = _class_signal(truth, dim=16, seed=0).astype(np.float32)
    shuffled = truth.assign(embedding=list(features)).sample(frac=1, random_state=0)  # keyed by id, any order
    emb_file = tmp_path / "emb.parquet"
    shuffled[["sample_id", "embedding"]].to_parquet(emb_file, index=False)
    before = _tree_digest(root, emb_file)

    code, out, err = run_cli(["scan", root, "--embeddings", emb_file, "--truth", truth_file, "--out", tmp_path / "run",
                              "--quiet", "--json"], capsys)
    assert code == 0, err
    summary = json.loads(out)
    assert summary["input"]["kind"] == "embeddings-file" and summary["input"]["dim"] == 16
    assert summary["image_cache"] is None  # the images were not decoded
    assert summary["truth"]["f1"] > 0.8  # 160 samples, 20% wrong: measured 0.86
    assert _tree_digest(root, emb_file) == before

    # The head is saved with what it was trained on; predict says why it cannot embed new images.
    code, _, err = run_cli(["predict", tmp_path / "run", root, "--out", tmp_path / "pred.csv"], capsys)
    assert code == 2 and "scan --embeddings" in err and not (tmp_path / "pred.csv").exists()
    # retrain trains a head on the same embeddings file.
    code, out, err = run_cli(["retrain", tmp_path / "run", "--out", tmp_path / "re", "--epochs", "3", "--quiet", "--json"],
                             capsys)
    assert code == 0, err
    assert json.loads(out)["input"]["kind"] == "embeddings-file"


def test_scan_with_given_probabilities_flags_by_the_cv_rule_and_writes_no_model(noisy, tmp_path, capsys):
    root, truth, truth_file = noisy
    logits = _class_signal(truth, dim=4, seed=1)
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    classes = sorted(truth["given_label"].unique())
    probs_file = tmp_path / "pred_probs.npy"
    # A folder's samples come in sorted class-folder order, then file name: the truth table's order sorted so.
    order = truth.sort_values("sample_id").index.to_numpy()
    np.save(probs_file, probs[order])

    code, out, err = run_cli(["scan", root, "--probs", probs_file, "--truth", truth_file, "--out", tmp_path / "run",
                              "--quiet", "--json"], capsys)
    assert code == 0, err
    summary = json.loads(out)
    assert summary["input"]["kind"] == "probs-file" and summary["training_curves"] == []
    assert not (tmp_path / "run" / "model.pt").exists()
    report = pd.read_parquet(tmp_path / "run" / "report.parquet")
    given = report["given_label"].map({c: i for i, c in enumerate(classes)}).to_numpy()
    expected, _ = cv_flags(probs[order], given, "confident-learning")
    np.testing.assert_array_equal(report["suspected_noisy"].to_numpy(), expected)
    assert summary["truth"]["f1"] > 0.85  # measured 0.90

    code, _, err = run_cli(["predict", tmp_path / "run", root, "--out", tmp_path / "pred.csv"], capsys)
    assert code == 2 and "no model file" in err


@pytest.mark.parametrize("extra, message", [
    (["--probs", "p.npy", "--embeddings", "e.npy"], "not both"),
    (["--embeddings", "e.npy", "--backbone", "resnet18"], "--embeddings replaces the backbone"),
    (["--train", "head"], "--train head needs a pretrained backbone"),
])
def test_contradicting_input_options_are_one_line_errors(noisy, tmp_path, capsys, extra, message):
    root, _, _ = noisy
    code, _, err = run_cli(["scan", root, "--out", tmp_path / "run", *extra], capsys)
    assert code == 2 and message in err
    assert not (tmp_path / "run").exists()
