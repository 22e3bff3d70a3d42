"""The run directory's names and version: what a scan writes and every reader expects (no torch).

docs/run-directory.md describes every file and column.
"""

#: 2: summary.json holds the data fingerprint and names the matrix files instead of holding the matrices.
RUN_FORMAT_VERSION = 2

#: The transition-matrix files of a scan, by estimator.
MATRIX_FILES = {
    "cleaned": "transition_matrix.csv",
    "anchor": "transition_matrix_anchor.csv",
    "truth": "true_transition_matrix.csv",
}
