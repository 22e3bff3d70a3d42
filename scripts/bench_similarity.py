"""Near-duplicates and outliers against the planted truth, and against cleanlab's Datalab (issue 18).

Scans the folder written by ``make_duplicates_benchmark.py`` (default scan: NLNL, ``--budget``),
then scores what it found against ``planted.csv``:

- near-duplicate pairs: recall and precision of the linked pairs (a pair of the planted ones is
  found when both images are in one group); conflicting pairs (linked, different given labels):
  recall over the planted conflicts and precision;
- outliers: AUROC of ``outlier_score`` for the planted digits, recall among the 100 highest
  scores, and precision/recall of ``is_outlier``;

and runs cleanlab's ``Datalab.find_issues`` (``near_duplicate`` and ``outlier``) on the same
features: the scan network's penultimate activations (our candidates' features) and the grey
thumbnails (our outlier features). Then times the search over the 60,000 Fashion-MNIST training
images (features from the same network) in a fresh process and reports its peak memory.

Usage (docs/benchmarks.md, "Near-duplicates and outliers"):
    OMP_NUM_THREADS=1 python scripts/bench_similarity.py /tmp/dup10k --out /tmp/bench-similarity
"""

from __future__ import annotations

import argparse
import gzip
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from labelaudit.audit import similarity
from labelaudit.pipeline.scan import ScanConfig, scan

DATASET_DIR = Path("/usr/share/datasets/fashion-mnist")


def auroc(positive: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve (ties count half), without scikit-learn."""
    ranks = pd.Series(score).rank().to_numpy()
    n_pos, n_neg = positive.sum(), (~positive).sum()
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def score_pairs(found: set, labels: np.ndarray, planted_pairs: set, planted_conflicts: set) -> dict:
    conflicts = {p for p in found if labels[p[0]] != labels[p[1]]}
    return {
        "pairs_found": len(found),
        "pair_recall": len(found & planted_pairs) / len(planted_pairs),
        "pair_precision": len(found & planted_pairs) / max(len(found), 1),
        "conflicts_found": len(conflicts),
        "conflict_recall": len(conflicts & planted_conflicts) / len(planted_conflicts),
        "conflict_precision": len(conflicts & planted_conflicts) / max(len(conflicts), 1),
    }


def score_outliers(digits: np.ndarray, score: np.ndarray, flagged: np.ndarray) -> dict:
    top = np.argsort(-score, kind="stable")[:100]
    return {
        "outlier_auroc": auroc(digits, score),
        "outlier_recall_at_100": float(digits[top].mean()),
        "outliers_flagged": int(flagged.sum()),
        "outlier_precision": float(digits[flagged].mean()) if flagged.any() else 0.0,
        "outlier_recall": float(flagged[digits].mean()),
    }


def group_pairs(groups: np.ndarray) -> set:
    """Every pair of samples that share a group (a group of three gives three pairs)."""
    out = set()
    for g in np.unique(groups[groups >= 0]):
        members = np.flatnonzero(groups == g)
        out |= {(int(a), int(b)) for i, a in enumerate(members) for b in members[i + 1 :]}
    return out


def datalab(features: np.ndarray, labels: np.ndarray) -> tuple[dict, float]:
    from cleanlab import Datalab

    start = time.perf_counter()
    lab = Datalab(data={"label": labels}, label_name="label", verbosity=0)
    lab.find_issues(features=features, issue_types={"near_duplicate": {}, "outlier": {}})
    seconds = time.perf_counter() - start
    near = lab.get_issues("near_duplicate")
    found = set()
    for i, members in enumerate(near["near_duplicate_sets"]):
        for j in members:
            found.add((min(i, int(j)), max(i, int(j))))
    outliers = lab.get_issues("outlier")
    return {
        "found": found,
        "outlier_score": 1.0 - outliers["outlier_score"].to_numpy(),
        "is_outlier": outliers["is_outlier_issue"].to_numpy(dtype=bool),
    }, seconds


def read_idx(path: Path) -> np.ndarray:
    with gzip.open(path) as f:
        return np.frombuffer(f.read(), dtype=np.uint8, offset=16).reshape(-1, 28, 28)


def read_labels(path: Path) -> np.ndarray:
    with gzip.open(path) as f:
        return np.frombuffer(f.read(), dtype=np.uint8, offset=8).astype(np.int64)


SEARCH_60K = """
import sys, time, json
import numpy as np
from labelaudit.audit.similarity import find_similarity_issues
images = np.load(sys.argv[1], mmap_mode="r"); features = np.load(sys.argv[2]); labels = np.load(sys.argv[3])
start = time.perf_counter()
issues = find_similarity_issues(images, labels, features=features)
seconds = time.perf_counter() - start
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent across exec.
peak = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:")) / 1024
print(json.dumps({"seconds": seconds, "peak_rss_mib": peak,
                  "groups": issues.n_duplicate_groups, "conflicts": issues.n_duplicate_conflicts,
                  "outliers": issues.n_outliers}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("folder", type=Path, help="a folder written by make_duplicates_benchmark.py")
    parser.add_argument("--budget", type=float, default=1.0)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--no-datalab", action="store_true")
    parser.add_argument("--no-60k", action="store_true")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    result = scan(
        args.folder / "images", ScanConfig(epochs_scale=args.budget), truth=args.folder / "truth.csv"
    )
    ids = result.table.samples["sample_id"].tolist()
    labels = result.table.samples["given_label"].to_numpy()
    at = {s: i for i, s in enumerate(ids)}
    planted = pd.read_csv(args.folder / "planted.csv")
    near = planted[planted["kind"] == "near_duplicate"]
    pairs = {(min(at[a], at[b]), max(at[a], at[b])) for a, b in zip(near["sample_id"], near["source"])}
    conflicts = {
        (min(at[a], at[b]), max(at[a], at[b]))
        for a, b, c in zip(near["sample_id"], near["source"], near["conflict"])
        if c
    }
    digits = np.zeros(len(ids), dtype=bool)
    digits[[at[s] for s in planted.loc[planted["kind"] == "outlier", "sample_id"]]] = True

    issues = result.similarity
    ours = {
        "tool": "labelaudit",
        "features": "penultimate+thumbnails, pixel check; outliers: thumbnails",
        "seconds": result.seconds["similarity"],
        **score_pairs(group_pairs(issues.duplicate_group), labels, pairs, conflicts),
        **score_outliers(digits, issues.outlier_score, issues.is_outlier),
    }
    rows = [ours]
    print(json.dumps(ours), flush=True)
    penultimate = result.trainer.predict(flip_average=False, features=True)[1].numpy()
    thumbs = similarity.thumbnails(similarity.comparison_images(result.store.images()))
    if not args.no_datalab:
        for name, features in (("penultimate", penultimate), ("thumbnails", thumbs)):
            found, seconds = datalab(features, labels)
            row = {
                "tool": "cleanlab Datalab",
                "features": name,
                "seconds": seconds,
                **score_pairs(found["found"], labels, pairs, conflicts),
                **score_outliers(digits, found["outlier_score"], found["is_outlier"]),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    frame = pd.DataFrame(rows)
    frame.to_csv(args.out / "similarity.csv", index=False)
    columns = [
        "tool",
        "features",
        "pair_recall",
        "pair_precision",
        "conflict_recall",
        "conflict_precision",
        "outlier_auroc",
        "outlier_recall_at_100",
        "outlier_precision",
        "outlier_recall",
        "seconds",
    ]
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for row in rows:
        print(
            "| "
            + " | ".join(f"{row[c]:.3f}" if isinstance(row[c], float) else str(row[c]) for c in columns)
            + " |"
        )
    print(
        f"scan F1 {result.truth['f1']:.3f}; duplicate threshold {issues.duplicate_threshold:.2f} grey levels"
    )

    if not args.no_60k:
        images = read_idx(DATASET_DIR / "train-images-idx3-ubyte.gz")[..., None]  # (60000, 28, 28, 1)
        train_labels = read_labels(DATASET_DIR / "train-labels-idx1-ubyte.gz")
        tensor = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
        features = result.trainer.predict(flip_average=False, images=tensor, features=True)[1].numpy()
        np.save(args.out / "images60k.npy", images)
        np.save(args.out / "features60k.npy", features)
        np.save(args.out / "labels60k.npy", train_labels)
        done = subprocess.run(
            [
                sys.executable,
                "-c",
                SEARCH_60K,
                str(args.out / "images60k.npy"),
                str(args.out / "features60k.npy"),
                str(args.out / "labels60k.npy"),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        print("60k search:", done.stdout.strip())


if __name__ == "__main__":
    main()
