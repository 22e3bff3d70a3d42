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

from labelaudit.audit.flags import cv_flags


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

    code, out, err = run_cli(
        [
            "scan",
            root,
            "--embeddings",
            emb_file,
            "--truth",
            truth_file,
            "--out",
            tmp_path / "run",
            "--quiet",
            "--json",
        ],
        capsys,
    )
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
    code, out, err = run_cli(
        ["retrain", tmp_path / "run", "--out", tmp_path / "re", "--epochs", "3", "--quiet", "--json"], capsys
    )
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

    code, out, err = run_cli(
        [
            "scan",
            root,
            "--probs",
            probs_file,
            "--truth",
            truth_file,
            "--out",
            tmp_path / "run",
            "--quiet",
            "--json",
        ],
        capsys,
    )
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


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--probs", "p.npy", "--embeddings", "e.npy"], "not both"),
        (["--embeddings", "e.npy", "--backbone", "resnet18"], "--embeddings replaces the backbone"),
        (["--train", "head"], "--train head needs a pretrained backbone"),
    ],
)
def test_contradicting_input_options_are_one_line_errors(noisy, tmp_path, capsys, extra, message):
    root, _, _ = noisy
    code, _, err = run_cli(["scan", root, "--out", tmp_path / "run", *extra], capsys)
    assert code == 2 and message in err
    assert not (tmp_path / "run").exists()


def test_mlp_head_with_a_last_batch_of_one_sample(noisy, tmp_path, capsys):
    root, truth, truth_file = noisy  # 160 samples: batches of 53 leave one sample for the last batch
    emb_file = tmp_path / "emb.parquet"
    truth.assign(embedding=list(_class_signal(truth, dim=16, seed=0).astype(np.float32)))[
        ["sample_id", "embedding"]
    ].to_parquet(emb_file, index=False)
    code, out, err = run_cli(
        [
            "scan",
            root,
            "--embeddings",
            emb_file,
            "--head",
            "mlp",
            "--batch-size",
            "53",
            "--truth",
            truth_file,
            "--out",
            tmp_path / "run",
            "--quiet",
            "--json",
        ],
        capsys,
    )
    assert code == 0, err  # batch norm used to fail on a batch of one
    assert json.loads(out)["truth"]["f1"] > 0.7  # measured 0.78: the mlp head fits more of the noise


def test_retrain_of_a_probs_scan_trains_on_the_images(noisy, tmp_path, capsys):
    root, truth, _ = noisy
    order = truth.sort_values("sample_id").index.to_numpy()
    logits = _class_signal(truth, dim=4, seed=1)[order]
    np.save(tmp_path / "p.npy", np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True))
    code, _, err = run_cli(
        ["scan", root, "--probs", tmp_path / "p.npy", "--out", tmp_path / "run", "--quiet"], capsys
    )
    assert code == 0, err
    code, out, err = run_cli(
        ["retrain", tmp_path / "run", "--out", tmp_path / "re", "--epochs", "1", "--quiet", "--json"], capsys
    )
    assert code == 0, err
    assert json.loads(out)["input"]["kind"] == "images"
    assert (tmp_path / "re" / "model.pt").is_file()


def test_embeddings_npy_in_manifest_order_with_a_skipped_row_scan_and_retrain(noisy, tmp_path, capsys):
    root, truth, truth_file = noisy
    manifest = truth[["sample_id", "path", "given_label"]].rename(columns={"given_label": "label"})
    missing = pd.DataFrame(
        {"sample_id": ["gone"], "path": [str(root / "gone.png")], "label": [manifest["label"][0]]}
    )
    manifest = pd.concat([manifest.iloc[:5], missing, manifest.iloc[5:]], ignore_index=True)
    manifest.to_csv(tmp_path / "manifest.csv", index=False)
    features = _class_signal(truth, dim=16, seed=0).astype(np.float32)
    # one row per manifest row
    rows = np.concatenate([features[:5], np.zeros((1, 16), np.float32), features[5:]])
    np.save(tmp_path / "emb.npy", rows)
    code, out, err = run_cli(
        [
            "scan",
            tmp_path / "manifest.csv",
            "--embeddings",
            tmp_path / "emb.npy",
            "--truth",
            truth_file,
            "--out",
            tmp_path / "run",
            "--quiet",
            "--json",
        ],
        capsys,
    )
    assert code == 0, err
    summary = json.loads(out)
    assert summary["num_samples"] == len(truth) and summary["truth"]["f1"] > 0.8
    code, out, err = run_cli(
        ["retrain", tmp_path / "run", "--out", tmp_path / "re", "--epochs", "3", "--quiet", "--json"], capsys
    )
    assert code == 0, err
    cleaned = pd.read_parquet(tmp_path / "re" / "cleaned_labels.parquet")
    right = cleaned.merge(truth, on="sample_id")
    # the rows were matched, not shifted (chance: 0.25)
    assert (right["cleaned_label"] == right["true_label"]).mean() > 0.8


def test_library_warnings_reach_the_terminal_as_labelaudit_warning_lines(noisy, tmp_path, capsys):
    root, truth, _ = noisy
    extra = pd.DataFrame({"sample_id": ["not-in-the-dataset"], "embedding": [np.zeros(16, np.float32)]})
    rows = truth.assign(embedding=list(_class_signal(truth, dim=16, seed=0).astype(np.float32)))[
        ["sample_id", "embedding"]
    ]
    pd.concat([rows, extra], ignore_index=True).to_parquet(tmp_path / "emb.parquet", index=False)
    code, _, err = run_cli(
        ["scan", root, "--embeddings", tmp_path / "emb.parquet", "--out", tmp_path / "run", "--quiet"], capsys
    )
    assert code == 0, err
    warnings = [line for line in err.splitlines() if "ignored 1 rows" in line]
    assert len(warnings) == 1 and warnings[0].startswith("labelaudit: warning: "), err
