"""Flag rules and noise-rate estimators side by side, on finished scans with a known truth.

Reads each scan's soft labels (``report.parquet``) and the truth file it was scored against,
and prints, per run: the flag F1 of the mixture boundary capped at 0 (the rule before issue 14)
and of :func:`labelaudit.audit.flags.mixture_boundary` (the current rule), and the error of each
noise-rate estimator against the true rate:

- ``flagged``: the share flagged by the current rule;
- ``mixture``: the weight of the mixture's low component;
- ``1-mean_py``: one minus the mean soft-label probability of the given label;
- ``confident_joint``: cleanlab's calibrated confident joint (per-class thresholds = mean
  self-confidence, rows rescaled to the given-label counts), ``1 - trace / N``;
- ``py<0.5``: the NLNL paper's filter, the share with ``p_y < 0.5``.

Usage:
    python scripts/compare_flag_rules.py BENCHMARK_DIR ...          # every nlnl run in it
    python scripts/compare_flag_rules.py --run RUN_DIR TRUTH_CSV ... # single scans
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

from labelaudit.audit.flags import fit_two_gaussians, label_margin, mixture_boundary


def load_run(run: Path, truth_csv: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Soft labels ``(N, K)``, given labels ``(N,)`` and ``is_noisy`` ``(N,)`` of a scan."""
    report = pd.read_parquet(run / "report.parquet")
    names = json.loads((run / "summary.json").read_text())["class_names"]
    index = {n: i for i, n in enumerate(names)}
    truth = (
        pd.read_csv(truth_csv, dtype=str, keep_default_na=False)
        .set_index("sample_id")
        .loc[report["sample_id"]]
    )
    soft = report[[f"p_{n}" for n in names]].to_numpy(np.float64).copy()
    soft /= soft.sum(axis=1, keepdims=True)
    return (
        soft,
        report["given_label"].map(index).to_numpy(),
        (truth["is_noisy"].str.lower() == "true").to_numpy(),
    )


def f1(flags: np.ndarray, noisy: np.ndarray) -> float:
    hits = (flags & noisy).sum()
    precision, recall = hits / max(flags.sum(), 1), hits / max(noisy.sum(), 1)
    return float(2 * precision * recall / max(precision + recall, 1e-12))


def confident_joint_rate(soft: np.ndarray, given: np.ndarray) -> float:
    n, k = soft.shape
    thresholds = np.array([soft[given == j, j].mean() if (given == j).any() else 1.0 for j in range(k)])
    above = soft >= thresholds
    assigned = np.where(above, soft, -1).argmax(axis=1)
    confident = above.any(axis=1)
    joint = np.zeros((k, k))
    np.add.at(joint, (given[confident], assigned[confident]), 1)
    counts = np.bincount(given, minlength=k)
    return float((counts * (1 - np.diag(joint) / np.maximum(joint.sum(axis=1), 1))).sum() / n)


def measure(soft: np.ndarray, given: np.ndarray, noisy: np.ndarray) -> dict:
    margin = label_margin(soft, given)
    fit = fit_two_gaussians(margin)
    flags = margin < mixture_boundary(fit)
    p_given = soft[np.arange(len(given)), given]
    true = float(noisy.mean())
    estimates = {
        "flagged": float(flags.mean()),
        "mixture": fit.weights[0],
        "1-mean_py": float(1 - p_given.mean()),
        "confident_joint": confident_joint_rate(soft, given),
        "py<0.5": float((p_given < 0.5).mean()),
    }
    return {
        "true": true,
        "f1_capped": f1(margin < min(fit.boundary, 0.0), noisy),
        "f1": f1(flags, noisy),
        **{f"err_{k}": v - true for k, v in estimates.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("benchmarks", nargs="*", type=Path)
    parser.add_argument(
        "--run", nargs=2, action="append", type=Path, default=[], metavar=("RUN_DIR", "TRUTH_CSV")
    )
    parser.add_argument("--method", default="nlnl", help="method of the benchmark runs to read [nlnl]")
    args = parser.parse_args()
    pairs = list(map(tuple, args.run))
    for bench in args.benchmarks:
        for run in sorted(bench.glob(f"runs/*/{args.method}")):
            pairs.append((run, bench / "data" / run.parent.name / "truth.csv"))
    rows = []
    for run, truth in pairs:
        rows.append(
            {
                "run": f"{run.parent.parent.parent.name}/{run.parent.name}"
                if run.parent.name != "runs"
                else str(run),
                **measure(*load_run(run, truth)),
            }
        )
    table = pd.DataFrame(rows)
    errors = [c for c in table.columns if c.startswith("err_")]
    with pd.option_context(
        "display.width", 200, "display.max_columns", 20, "display.float_format", "{:.3f}".format
    ):
        print(table.to_string(index=False))
        print("\nmean absolute error: " + ", ".join(f"{c[4:]} {table[c].abs().mean():.3f}" for c in errors))
        print("largest absolute error: " + ", ".join(f"{c[4:]} {table[c].abs().max():.3f}" for c in errors))


if __name__ == "__main__":
    main()
