"""A noisy dataset: labels flipped on purpose (:class:`NoisyLabels`), noise given sample by sample
in a file (:func:`read_flip_table`), and the manifest, truth and description ``inject-noise``
writes (:func:`write_noisy_dataset`)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from ..audit.estimators import transition_matrix
from ..data.sources import SampleTable, match_classes, read_table
from ..errors import ConfigError
from ..reports import write_csv, write_json, write_parquet
from ..runs.directory import as_run_directory, input_paths


@dataclass(frozen=True)
class NoisyLabels:
    """The result of an injection: new given labels and what was done."""

    true_labels: np.ndarray  # (N,) int64, the input labels
    noisy_labels: np.ndarray  # (N,) int64
    kind: str
    requested_rate: float | None
    mapping: dict[str, str] | None  # asymm: class -> class it flips to
    class_names: tuple[str, ...]
    #: confusable: ``(N,)`` each sample's probability of having been flipped (its inclusion probability)
    flip_probability: np.ndarray | None = None
    #: confusable: how the confusion classifier was fitted and how well it did (noise.json ``recipe``)
    recipe: dict | None = None

    @property
    def is_noisy(self) -> np.ndarray:
        return self.noisy_labels != self.true_labels

    @property
    def real_rate(self) -> float:
        return float(self.is_noisy.mean())

    def transition_matrix(self) -> np.ndarray:
        return transition_matrix(self.true_labels, self.noisy_labels, len(self.class_names))


def read_flip_table(path: str | os.PathLike, table: SampleTable) -> NoisyLabels:
    """Noise given sample by sample: a CSV/parquet file with ``sample_id`` (or ``path``) and
    ``label`` (the label to give; ``noisy_label`` and ``to`` are accepted too). Samples not listed
    keep their label."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(
            f"flip table {str(path)!r} does not exist; pass a CSV or parquet file with sample_id,label "
            "columns"
        )
    frame = read_table(path, "flip table")
    columns = {str(c).lower(): c for c in frame.columns}
    key = next((columns[c] for c in ("sample_id", "path") if c in columns), None)
    target = next((columns[c] for c in ("label", "noisy_label", "to") if c in columns), None)
    if key is None or target is None:
        raise ConfigError(
            f"flip table {path.name!r} needs a sample_id (or path) column and a label column; "
            f"it has {[str(c) for c in frame.columns]}"
        )
    by_path = key != columns.get("sample_id")
    ids = table.samples["path" if by_path else "sample_id"].astype(str).to_numpy()
    position = pd.Series(np.arange(len(ids)), index=ids)
    if not position.index.is_unique:
        raise ConfigError(
            f"flip table {path.name!r} names samples by {key!r}, which is not unique in the dataset; use "
            "sample_id"
        )
    if frame[target].isna().any():
        raise ConfigError(
            f"flip table {path.name!r} has an empty {target!r} cell; give every listed sample a label"
        )
    keys = frame[key].astype(str).str.strip().to_numpy()
    values = frame[target].astype(str).to_numpy()
    if by_path:  # as in a manifest or truth file: relative to the flip table's folder
        folder = path.resolve().parent
        keys = np.array([os.path.normpath(os.path.join(folder, k)) for k in keys])
    unknown = [v for v in keys if v not in position.index]
    if unknown:
        raise ConfigError(
            f"flip table {path.name!r} names {len(unknown)} samples that are not in the dataset "
            f"(first: {unknown[0]!r}); list samples by the dataset's {key}"
        )
    if len(set(keys)) != len(keys):
        raise ConfigError(f"flip table {path.name!r} lists a sample twice; give each sample one row")
    index = {str(c): i for i, c in enumerate(table.class_names)}
    named = match_classes(list(values), [str(c) for c in table.class_names])  # "cat" names a folder "cat "
    bad = [v for v in values if named[v] is None]
    if bad:
        raise ConfigError(
            f"flip table {path.name!r} gives label {bad[0]!r}, which is not a class of the dataset "
            f"{list(table.class_names)}"
        )
    labels = table.samples["given_label"].to_numpy().astype(np.int64)
    noisy = labels.copy()
    noisy[position.loc[keys].to_numpy()] = [index[named[v]] for v in values]
    return NoisyLabels(labels, noisy, "table", None, None, tuple(table.class_names))


def write_noisy_dataset(
    table: SampleTable,
    noisy: NoisyLabels,
    out_dir,
    *,
    overwrite: bool = False,
    inputs: Sequence[os.PathLike] = (),
) -> dict:
    """Write ``manifest.parquet`` (sample_id, path, label: the noisy label), ``truth.csv``
    (sample_id, path, given_label, true_label, is_noisy) and ``noise.json`` into ``out_dir``,
    all or nothing.

    Paths are absolute: the images stay where they are and are never copied or changed.
    ``out_dir`` is a path or an opened :class:`~labelaudit.runs.directory.RunDirectory`; it may not be,
    hold or lie inside the source or ``inputs`` (e.g. the map file); ``overwrite`` replaces an
    earlier inject-noise output.
    """
    run = as_run_directory(
        out_dir, "inject-noise", inputs=lambda: input_paths(table, inputs), overwrite=overwrite
    )
    with run.writing() as tmp:
        info = _write_noisy_files(table, noisy, tmp)
    return info


def _write_noisy_files(table: SampleTable, noisy: NoisyLabels, out: Path) -> dict:
    names = np.array(noisy.class_names, dtype=object)
    samples = table.samples
    truth = pd.DataFrame(
        {
            "sample_id": samples["sample_id"].to_numpy(),
            "path": samples["path"].to_numpy(),
            "given_label": names[noisy.noisy_labels],
            "true_label": names[noisy.true_labels],
            "is_noisy": noisy.is_noisy,
        }
    )
    if noisy.flip_probability is not None:
        truth["flip_probability"] = noisy.flip_probability
    manifest = truth[["sample_id", "path", "given_label"]].rename(columns={"given_label": "label"})
    write_parquet(out / "manifest.parquet", manifest)
    write_csv(out / "truth.csv", truth)
    t = noisy.transition_matrix()
    info = {
        "source": str(table.source),
        "kind": noisy.kind,
        "requested_rate": noisy.requested_rate,
        "real_rate": noisy.real_rate,
        "num_samples": int(len(truth)),
        "num_flipped": int(noisy.is_noisy.sum()),
        "mapping": noisy.mapping,
        "recipe": noisy.recipe,
        "class_names": list(noisy.class_names),
        "per_class_real_rate": {n: float(1 - t[i, i]) for i, n in enumerate(noisy.class_names)},
        "transition_matrix": {"convention": "T[i][j] = P(given = j | true = i)", "matrix": t.tolist()},
    }
    write_json(out / "noise.json", info)
    return info
