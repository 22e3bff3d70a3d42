"""Quality against training budget: F1, noise-rate error and time per method and --budget.

Runs ``labelaudit scan SOURCE --truth TRUTH --method M --budget B --json`` for every method and
budget not yet in ``--out`` (one process at a time, so the wall times are comparable; a finished
scan's JSON is kept, so an interrupted curve resumes), then prints a markdown table and draws
``--plot`` (F1 and noise-rate error against wall time, one line per method).

``--budgets`` multiply each method's default schedule. docs/methods.md's pmnar rows were measured
when that was 24 epochs; it is 240 since issue 16, so repeat them with ``--budgets 0.1,0.2,0.5,1``.

Usage:
  python scripts/budget_curve.py sample_data/fashion_mnist_noisy/images \\
      --truth sample_data/fashion_mnist_noisy/truth.csv --methods pmnar,nlnl,gce --budgets 1,2,5,10 \\
      --out /tmp/budget-curve --plot docs/images/budget-curve.png
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from labelaudit.reports import write_json


def run_scan(source: str, truth: str, method: str, budget: float, out: Path, extra: list[str]) -> dict:
    """The summary of ``scan`` at ``budget`` (from ``out/<method>-<budget>.json`` when already run)."""
    result = out / f"{method}-{budget:g}.json"
    if result.exists():
        return json.loads(result.read_text())
    command = [
        sys.executable,
        "-m",
        "labelaudit",
        "scan",
        source,
        "--truth",
        truth,
        "--method",
        method,
        "--budget",
        f"{budget:g}",
        "--out",
        str(out / f"{method}-{budget:g}"),
        "--overwrite",
        "--json",
        "--quiet",
        *extra,
    ]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr}")
    summary = json.loads(done.stdout)
    write_json(result, summary)  # atomic: an interrupted run leaves no half-written file
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("source")
    parser.add_argument("--truth", required=True)
    parser.add_argument("--methods", default="pmnar,nlnl,gce")
    parser.add_argument("--budgets", default="1,2,5,10")
    parser.add_argument("--out", required=True, help="Folder for the run directories and their summaries.")
    parser.add_argument("--plot", default=None, help="PNG to draw the curve into.")
    parser.add_argument("--summarize-only", action="store_true", help="Only what is already in --out.")
    parser.add_argument("scan_args", nargs="*", help="More scan options after --, e.g. -- --no-flip.")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for method in args.methods.split(","):
        for budget in (float(b) for b in args.budgets.split(",")):
            if args.summarize_only and not (out / f"{method}-{budget:g}.json").exists():
                continue
            s = run_scan(args.source, args.truth, method, budget, out, args.scan_args)
            t = s["truth"]
            wall = s["seconds"]["total"]  # the scan's own time, from reading the source to the audit
            rows.append(
                (
                    method,
                    budget,
                    t["f1"],
                    t["precision"],
                    t["recall"],
                    t["noise_rate_error"] * 100,
                    s["estimated_noise_rate"] * 100,
                    wall,
                )
            )
    print("| method | budget | F1 | precision | recall | flagged % | noise-rate error (points) | scan s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for method, budget, f1, p, r, err, flagged, wall in rows:
        print(
            f"| {method} | {budget:g}x | {f1:.3f} | {p:.3f} | {r:.3f} | {flagged:.1f} | {err:.1f} | "
            f"{wall:.0f} |"
        )
    if args.plot and rows:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
        for method in dict.fromkeys(r[0] for r in rows):
            mine = [r for r in rows if r[0] == method]
            walls = [r[7] / 60 for r in mine]
            left.plot(walls, [r[2] for r in mine], marker="o", label=method)
            right.plot(walls, [r[5] for r in mine], marker="o", label=method)
            for r, w in zip(mine, walls):
                left.annotate(f"{r[1]:g}x", (w, r[2]), textcoords="offset points", xytext=(3, 3), fontsize=8)
        left.set(xlabel="scan time (minutes)", ylabel="F1 of the flags", title="F1 against training time")
        right.set(
            xlabel="scan time (minutes)",
            ylabel="|estimated - true| noise rate (points)",
            title="Noise-rate error against training time",
        )
        left.legend()
        left.grid(alpha=0.3)
        right.grid(alpha=0.3)
        fig.tight_layout()
        tmp = Path(args.plot).with_suffix(".tmp.png")
        fig.savefig(tmp, dpi=110)
        tmp.replace(args.plot)


if __name__ == "__main__":
    main()
