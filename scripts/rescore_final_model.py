"""Re-score finished scans from their final model instead of the soft labels they reported.

For each run directory: the report's soft labels (what the scan flagged from) and the saved
``model.pt``'s prediction on the same images (no augmentation, flip-averaged when trained with
flips; float32), each flagged by the learned boundary and by a fixed 0.5 threshold, scored
against the truth. Used for docs/methods.md "Quality against budget" (issue 16).

Usage: python scripts/rescore_final_model.py sample_data/fashion_mnist_noisy/images \\
           --truth sample_data/fashion_mnist_noisy/truth.csv RUN_DIR [RUN_DIR ...]
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd
import torch

from labelaudit import load_images, load_source
from labelaudit.audit.flags import audit_from_soft_labels
from labelaudit.audit.metrics import audit_truth_metrics, load_truth
from labelaudit.train.checkpoint import load_model


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("source")
    parser.add_argument("--truth", required=True)
    parser.add_argument("runs", nargs="+")
    args = parser.parse_args()
    store = load_images(load_source(args.source))
    table = store.table
    true = load_truth(args.truth, table)
    given = table.samples["given_label"].to_numpy()
    print(
        "| run | soft labels | rule | F1 | precision | recall | flagged | noise-rate error (points) | "
        "p_given < 0.5 |"
    )
    print("|---|---|---|---:|---:|---:|---:|---:|---:|")
    for run in args.runs:
        report = (
            pd.read_parquet(f"{run}/report.parquet").set_index("sample_id").loc[table.samples["sample_id"]]
        )
        reported = report[[f"p_{c}" for c in table.class_names]].to_numpy()
        model = load_model(f"{run}/model.pt")
        final = model.predict_store(store)
        # The same networks with batch-norm batch statistics (as PMNAR's own training-time
        # predictions use) instead of the running averages: batches of 512 in a shuffled order.
        order = np.random.default_rng(0).permutation(len(given))
        model.model.train()
        with torch.no_grad():
            shuffled = model.predict_proba(store.images()[order])
        model.model.eval()
        batch_stats = np.empty_like(shuffled)
        batch_stats[order] = shuffled
        for name, soft in (
            ("reported", reported),
            ("final model", final),
            ("final, batch statistics", batch_stats),
        ):
            for threshold in (None, 0.5):
                audit = audit_from_soft_labels(table, soft, threshold=threshold)
                m = audit_truth_metrics(audit, given, true)
                low = np.mean(soft[np.arange(len(given)), given] < 0.5)
                print(
                    f"| {run} | {name} | {'boundary' if threshold is None else threshold} | {m['f1']:.3f} | "
                    f"{m['precision']:.3f} | {m['recall']:.3f} | {audit.noise_rate:.1%} | "
                    f"{m['noise_rate_error'] * 100:.1f} | {low:.1%} |"
                )


if __name__ == "__main__":
    main()
