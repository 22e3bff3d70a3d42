"""A perfect reviewer for a scan with a truth file: decides every flagged sample from truth.csv.

Usage: python scripts/simulate_reviewer.py RUN_DIR TRUTH_CSV DECISIONS_CSV (docs/review.md, "What a review
buys").
"""

import sys
from pathlib import Path

import pandas as pd

from labelaudit.data.sources import read_table  # text cells, formula escapes undone

run, truth_file, out = sys.argv[1:4]
flagged = read_table(Path(run) / "flagged.csv", "flagged.csv")
truth = read_table(Path(truth_file), "truth file").set_index("sample_id")["true_label"]
rows = []
for r in flagged.itertuples():
    true = truth[r.sample_id]
    if true == r.suggested_label:
        rows.append((r.sample_id, "accept", r.suggested_label, ""))
    elif true == r.given_label:
        rows.append((r.sample_id, "keep", r.given_label, ""))
    else:
        rows.append((r.sample_id, "relabel", true, ""))
# plain ids here
pd.DataFrame(rows, columns=["sample_id", "decision", "new_label", "note"]).to_csv(out, index=False)
print(pd.Series([d for _, d, _, _ in rows]).value_counts().to_dict())
