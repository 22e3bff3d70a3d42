"""The shipped sample data matches its description: 5,000 images, 20% in a wrong class folder."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from labelaudit import load_source

SAMPLE = Path(__file__).resolve().parent.parent / "sample_data" / "fashion_mnist_noisy"


def test_folder_manifest_and_truth_agree():
    folder = load_source(SAMPLE / "images")
    manifest = load_source(SAMPLE / "manifest.parquet")
    truth = pd.read_csv(SAMPLE / "truth.csv")
    assert len(folder) == len(manifest) == len(truth) == 5000
    assert folder.skipped.empty and manifest.skipped.empty
    assert folder.class_names == manifest.class_names and len(folder.class_names) == 10
    by_id = truth.set_index("sample_id")
    assert (
        by_id.loc[folder.samples["sample_id"], "given_label"].to_numpy() == folder.samples["label"].to_numpy()
    ).all()
    assert truth["is_noisy"].mean() == 0.2
    assert (truth["is_noisy"] == (truth["given_label"] != truth["true_label"])).all()
