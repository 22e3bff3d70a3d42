"""Re-apply the current flag rule to a finished benchmark's runs, without training again.

A scan's training does not depend on the flag rule: its soft labels (``report.parquet``) are
what the method produced. This script recomputes, for every run of a ``labelaudit benchmark``
folder, the audit from those soft labels with :func:`labelaudit.audit.flags.audit_from_soft_labels`
(the rule of the installed labelaudit) and scores it against the run's truth, exactly as
``scan --truth`` would; wall time and memory are the runs' own. ``cv-ce`` and ``cleanlab`` rows
use their own rules and are recomputed by the same code paths as the benchmark.

It writes ``summary-rescored.md`` and ``results-rescored.csv`` beside the benchmark's own files
and prints the table.

Usage: python scripts/rescore_benchmark.py BENCHMARK_DIR
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

from labelaudit._atomic import write_text
from labelaudit.audit.flags import audit_from_soft_labels, cv_flags
from labelaudit.audit.metrics import audit_truth_metrics, load_truth, ranking_metrics
from labelaudit.pipeline.benchmark_runs import measure_cleanlab, results_row, run_report_table, truth_is_noisy
from labelaudit.pipeline.benchmark_tables import markdown_table, summarise
from labelaudit.reports import write_csv


def rescore_run(run_dir: Path, data_dir: Path, method: str) -> dict:
    names, report, table = run_report_table(run_dir, data_dir)
    soft = report[[f"p_{n}" for n in names]].to_numpy(np.float64)
    given = table.samples["given_label"].to_numpy()
    flags = rule = None
    if method == "cv-ce":
        flags, rule = cv_flags(soft / soft.sum(axis=1, keepdims=True), given, "confident-learning")
    audit = audit_from_soft_labels(table, soft, flags=flags, flag_rule=rule)
    true = load_truth(data_dir / "truth.csv", table)
    metrics = audit_truth_metrics(audit, given, true)
    ranking = ranking_metrics(
        audit.report["p_label_wrong"].to_numpy(),
        truth_is_noisy(data_dir / "truth.csv", report["sample_id"]),
    )
    timing = json.loads(run_dir.with_name(f"{run_dir.name}.timing.json").read_text())
    return results_row(metrics, ranking, timing["seconds"], timing["peak_memory_mb"])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("benchmark", type=Path)
    args = parser.parse_args()
    settings = json.loads((args.benchmark / "benchmark.json").read_text())
    custom = [a for a in settings.get("scan_args", []) if a.split("=")[0] in ("--threshold", "--flagger")]
    if custom:
        raise SystemExit(
            f"this benchmark set {custom[0]} for its scans; rescoring applies the default flag rules only"
        )
    old = pd.read_csv(args.benchmark / "results.csv", keep_default_na=False)
    rows = []
    for row in old.itertuples(index=False):
        if str(getattr(row, "error", "")).strip():  # a failed run has nothing to rescore: keep its row
            rows.append(row._asdict())
            continue
        setting = f"{row.kind}-{row.rate:g}-seed{row.seed}"
        data_dir = args.benchmark / "data" / setting
        base = {
            "noise": row.noise,
            "kind": row.kind,
            "rate": row.rate,
            "seed": row.seed,
            "method": row.method,
        }
        if row.method == "cleanlab":
            cv_dir = args.benchmark / "runs" / setting / "cv-ce"
            timing = json.loads(cv_dir.with_name("cv-ce.timing.json").read_text())
            rows.append({**base, **measure_cleanlab(data_dir, cv_dir, timing)})
        else:
            rows.append(
                {**base, **rescore_run(args.benchmark / "runs" / setting / row.method, data_dir, row.method)}
            )
    results = pd.DataFrame(rows)
    # whole or not at all, like the benchmark's own files
    write_csv(args.benchmark / "results-rescored.csv", results)
    table = markdown_table(summarise(results))
    write_text(args.benchmark / "summary-rescored.md", table)
    print(table)


if __name__ == "__main__":
    main()
