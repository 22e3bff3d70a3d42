"""The benchmark's tables: the per-run metrics averaged over seeds (``summary.csv``) and shown as
markdown (``summary.md``)."""

from __future__ import annotations

import pandas as pd

#: Columns of the per-run table (results.csv), and the ones averaged over seeds.
METRICS = (
    "precision",
    "recall",
    "f1",
    "auroc",
    "auprc",
    "true_noise_rate",
    "estimated_noise_rate",
    "noise_rate_error",
    "model_estimated_noise_rate",
    "model_noise_rate_error",
    "transition_matrix_mae",
    "relabel_accuracy",
    "ece_p_label_wrong",
    "ece_suggested_confidence",
    "seconds",
    "peak_memory_mb",
)


def summarise(results: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard deviation (over seeds) of every metric per noise setting and method."""
    ok = results[results["error"].fillna("") == ""] if "error" in results else results
    if ok.empty:
        return pd.DataFrame(columns=["noise", "method", "seeds"])
    present = [m for m in METRICS if m in ok.columns]
    grouped = ok.groupby(["noise", "method"], sort=False)[present]
    mean = grouped.mean().add_suffix("_mean")
    std = grouped.std(ddof=1).add_suffix("_std")
    counts = grouped.size().rename("seeds")
    table = pd.concat([counts, mean, std], axis=1).reset_index()
    ordered = ["noise", "method", "seeds"] + [f"{m}_{s}" for m in present for s in ("mean", "std")]
    return table[ordered]


def markdown_table(summary: pd.DataFrame) -> str:
    """The summary as a markdown table: mean ± std (std shown when there are several seeds)."""
    columns = [
        ("precision", "precision", 3),
        ("recall", "recall", 3),
        ("f1", "F1", 3),
        ("auroc", "AUROC", 3),
        ("auprc", "AUPRC", 3),
        ("true_noise_rate", "true noise", 3),
        ("estimated_noise_rate", "estimated noise", 3),
        ("model_estimated_noise_rate", "model estimate", 3),
        ("transition_matrix_mae", "T MAE", 4),
        ("relabel_accuracy", "relabel acc.", 3),
        ("ece_p_label_wrong", "ECE P(wrong)", 3),
        ("ece_suggested_confidence", "ECE P(sugg.)", 3),
        ("seconds", "seconds", 0),
        ("peak_memory_mb", "peak MB", 0),
    ]
    header = ["noise", "method", "seeds"] + [title for _, title, _ in columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in summary.itertuples(index=False):
        row = row._asdict()
        cells = [row["noise"], row["method"], str(row["seeds"])]
        for key, _, digits in columns:
            mean, std = row.get(f"{key}_mean"), row.get(f"{key}_std")
            if mean is None or pd.isna(mean):
                cells.append("-")
            elif row["seeds"] > 1 and not pd.isna(std):
                cells.append(f"{mean:.{digits}f} ± {std:.{digits}f}")
            else:
                cells.append(f"{mean:.{digits}f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
