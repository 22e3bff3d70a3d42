"""Data fingerprints: a hash of a run's samples and labels, which tells its files apart from files
of another dataset or another run."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Sequence

import numpy as np

from ..data.sample_table import SampleTable
from ..errors import ConfigError
from ..reports import matrix_fingerprint


def data_fingerprint(sample_ids: Sequence[str], labels: Sequence[str]) -> str:
    """A hash of the samples and their labels, in order: ``sha256:<hex>``.

    Written into ``summary.json`` and ``model.pt``; readers compare it to tell a run's files
    apart from files of another dataset or another run.
    """
    digest = hashlib.sha256(b"labelaudit-data-v1\n")
    for sample_id, label in zip(sample_ids, labels):
        digest.update(f"{sample_id}\t{label}\n".encode("utf-8", "surrogatepass"))
    return "sha256:" + digest.hexdigest()


def table_fingerprint(table: SampleTable) -> str:
    """:func:`data_fingerprint` of a table's sample ids and given class names, in table order."""
    names = np.asarray(table.class_names, dtype=object)
    return data_fingerprint(
        table.samples["sample_id"].tolist(), names[table.samples["given_label"].to_numpy()].tolist()
    )


def check_matrix_fingerprint(path: Path, expected: str | None) -> None:
    """ConfigError when the matrix file ``path`` carries another data fingerprint than ``expected``
    (:func:`labelaudit.reports.matrix_fingerprint`; a file without one, as written by earlier
    versions or by hand, and an ``expected`` of None are not checked)."""
    found = matrix_fingerprint(path)
    if found is not None and expected is not None and found != expected:
        raise ConfigError(
            f"{path.name} in {str(path.parent)!r} belongs to another dataset (its data fingerprint differs "
            "from "
            "summary.json's: copied from another run); put back the scan's own file, or scan the dataset "
            "again"
        )
