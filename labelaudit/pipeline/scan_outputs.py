"""A scan's run directory: ``summary.json`` and the files :func:`write_run` writes from a
:class:`~labelaudit.pipeline.scan_config.ScanResult` (the product's contract, see
docs/run-directory.md)."""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd
import torch

from .. import __version__
from ..audit.calibration import estimated_rows
from ..audit.estimators import per_class_bootstrap_intervals
from ..audit.flags import Audit, review_mask
from ..audit.issue_types import issue_summary
from ..audit.similarity import SimilarityIssues
from ..data.sources import SampleTable
from ..reports import matrix_corner, write_csv, write_json, write_matrix_csv, write_parquet, write_skipped_csv
from ..runs.directory import RunDirectory, as_run_directory, input_paths
from ..runs.fingerprints import table_fingerprint
from ..runs.format import MATRIX_FILES, RUN_FORMAT_VERSION
from ..train.checkpoint import save_model
from .scan_config import ScanResult


def summary(result: ScanResult) -> dict:
    """The run's ``summary.json`` content."""
    audit, table, issues = result.audit, result.table, result.similarity
    names = list(table.class_names)
    out = {
        "kind": "scan",
        "format_version": RUN_FORMAT_VERSION,
        "source": str(table.source),
        "source_kind": table.kind,
        "method": result.config.method,
        "num_samples": len(table),
        "num_classes": len(names),
        "class_names": names,
        "class_counts": {n: int(c) for n, c in table.class_counts().items()},
        "data_fingerprint": table_fingerprint(table),
        "run_id": result.run_id,
        "num_flagged": int(audit.report["suspected_noisy"].sum()),
        "num_skipped": int(len(table.skipped)),
        **_noise_rate_summary(result),
        # Near-duplicates and images of no class (audit.issue_types); outliers are left out of the
        # noise-rate estimates and T. Null counts: not searched (see similarity.skipped).
        **issue_summary(issues),
        "similarity": similarity_summary(issues, result.similarity_skipped),
        "class_overlap": class_overlap(audit, table, issues),
        "ambiguous_pairs": ambiguous_pairs(audit.report),
        **_per_class_summary(result),
        **_transition_summary(result),
        "settings": result.config.to_dict(),
        # What the network learnt from: images, a backbone's embeddings, or the user's files.
        "input": result.inputs,
        "image_cache": None
        if result.store is None
        else {
            "dir": str(result.store.cache_dir),
            "image_size": result.store.image_size,
            "channels": result.store.channels,
            "reused": result.store.reused,
        },
        **_runtime_summary(result),
    }
    if result.truth is not None:
        out["truth"] = {k: v for k, v in result.truth.items() if k != "true_transition_matrix"}
        out["truth"]["true_transition_matrix_file"] = MATRIX_FILES["truth"]
    return out


def _noise_rate_summary(result: ScanResult) -> dict:
    """The estimated noise rate (expected share of wrong labels), the raw model's second estimate,
    the interval, the flag rule and how the probabilities were calibrated."""
    audit = result.audit
    report = audit.report
    return {
        "estimated_noise_rate": audit.noise_rate,
        "flagged_share": float(report["suspected_noisy"].mean()) if len(report) else None,
        "num_ambiguous": int(report["is_ambiguous"].sum()) if "is_ambiguous" in report else None,
        # The raw soft labels' 1 - mean p(given) (estimators.model_noise_rate); NaN-free: null when undefined.
        "model_estimated_noise_rate": _nan_to_none(audit.model_noise_rate),
        "noise_rate_interval_95": {
            "low": result.noise_rate_interval[0],
            "high": result.noise_rate_interval[1],
            "method": "mean p_label_wrong; the count of wrong labels drawn as Binomial(N, rate), 1000 "
            "draws (sampling error only)",
        },
        "flag_rule": audit.flag_rule,
        "calibration": audit.calibration,
        "cross_fit": result.cross_fit,
    }


def _per_class_summary(result: ScanResult) -> dict:
    """Each class's expected share of wrong labels and its interval (null: no samples)."""
    audit, names = result.audit, list(result.table.class_names)
    class_intervals = per_class_bootstrap_intervals(
        audit.p_label_wrong,
        result.table.samples["given_label"].to_numpy(),
        len(names),
        seed=result.config.train.seed,
    )
    return {
        "per_class_noise_rates": {n: _nan_to_none(r) for n, r in zip(names, audit.per_class_noise_rates)},
        # Percentile bootstrap within each class (estimators.per_class_bootstrap_intervals).
        "per_class_noise_rate_intervals_95": {
            n: {"low": _nan_to_none(lo), "high": _nan_to_none(hi)}
            for n, (lo, hi) in zip(names, class_intervals)
        },
    }


def _transition_summary(result: ScanResult) -> dict:
    """Where the two estimates of T are, how each was made, and the noise rate each row implies.
    K x K matrices live in their own CSV files: a 1,000-class summary stays small."""
    audit, names = result.audit, list(result.table.class_names)
    # A class with no probability mass has no row of T to estimate (the identity fills it): null.
    estimated_row = estimated_rows(audit.posterior)
    convention = "T[i][j] = P(given = j | true = i); rows are true classes and sum to 1"
    return {
        "transition_matrix": {
            "file": MATRIX_FILES["cleaned"],
            "convention": convention,
            "estimator": "expected under the calibrated posteriors: T[i, j] proportional to the sum of "
            "P(true = i) over the samples given j",
            "per_class_noise_rates": {
                n: float(1 - audit.transition_matrix[i, i]) if estimated_row[i] else None
                for i, n in enumerate(names)
            },
        },
        "transition_matrix_anchor": {
            "file": MATRIX_FILES["anchor"],
            "convention": convention,
            "estimator": "anchor points (Patrini et al. 2017): per class the sample at the 97th percentile "
            "of p_i under the final model without augmentation, row-normalised",
            "per_class_noise_rates": {
                n: float(1 - result.anchor_transition_matrix[i, i]) for i, n in enumerate(names)
            },
        },
    }


def _runtime_summary(result: ScanResult) -> dict:
    """Where and how the scan computed: times, device, processes, memory, precision, threads,
    training curves and package versions."""
    trainer = result.trainer
    return {
        "seconds": {k: round(v, 3) for k, v in result.seconds.items()},
        "device": str(trainer.device) if trainer is not None else None,
        # Processes that trained together (torchrun) and how they talked; 1 and null for one process.
        "world_size": result.distributed["world_size"],
        "distributed_backend": result.distributed["distributed_backend"],
        # Where the images lived while training and the dtype of the per-sample state (the memory plan).
        "memory": trainer.memory if trainer is not None else None,
        # The arithmetic the network actually trained in (settings.train.precision may say auto).
        "precision": trainer.precision if trainer is not None else None,
        # CPU threads the network computed with (None on a GPU left at torch's setting); results depend on it.
        "threads": trainer.threads if trainer is not None else None,
        "training_curves": trainer.curves if trainer is not None else [],
        "versions": {
            "labelaudit": __version__,
            "torch": torch.__version__,
            "python": platform.python_version(),
            "numpy": np.__version__,
            "pandas": pd.__version__,
        },
    }


def similarity_summary(issues: Optional[SimilarityIssues], skipped: Optional[str]) -> dict:
    """summary.json's ``similarity`` block: what was searched, in which features, at which thresholds."""
    if issues is None:
        return {"searched": False, "skipped": skipped}
    return {
        "searched": True,
        "features": issues.features,
        # Pixel similarity 1 - d/255 of the aligned grey-level difference d (labelaudit.audit.similarity).
        "duplicate_threshold": _nan_to_none(1.0 - issues.duplicate_threshold / 255.0),
        "duplicate_difference_threshold": _nan_to_none(issues.duplicate_threshold),
        "n_in_duplicate_groups": int((issues.duplicate_group >= 0).sum()),
        "n_exact_duplicates": int(issues.exact_duplicate.sum()),
        "outlier_threshold": issues.outlier_threshold,
    }


def ambiguous_pairs(report, top: int = 10) -> list[dict]:
    """The pairs of classes the ambiguous samples sit between (given class and ``ambiguous_with``,
    either way), most first: ``classes`` (sorted) and ``count``, at most ``top`` pairs; empty for a
    report without ambiguity columns."""
    if "is_ambiguous" not in report:
        return []
    rows = report[report["is_ambiguous"].to_numpy(dtype=bool)]
    counts: dict[tuple[str, str], int] = {}
    for given, other in zip(rows["given_label"].astype(str), rows["ambiguous_with"].astype(str)):
        pair = tuple(sorted((given, other)))
        counts[pair] = counts.get(pair, 0) + 1
    ordered = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:top]
    return [{"classes": list(pair), "count": count} for pair, count in ordered]


def class_overlap(
    audit: Audit, table: SampleTable, issues: Optional[SimilarityIssues], top: int = 10
) -> list[dict]:
    """The pairs of classes most often mixed up: flagged samples suggested from one to the other
    (either way) and near-duplicate groups holding both labels, most first (as cleanlab's
    ``find_overlapping_classes``, from counts rather than a joint distribution). ``share`` is
    their sum over the two classes' sample count."""
    names = list(table.class_names)
    k = len(names)
    given = table.samples["given_label"].to_numpy()
    flags = audit.report["suspected_noisy"].to_numpy(dtype=bool)
    flips = np.zeros((k, k), dtype=np.int64)
    np.add.at(flips, (given[flags], audit.cleaned_labels[flags]), 1)
    shared = np.zeros((k, k), dtype=np.int64)
    if issues is not None:
        groups = issues.duplicate_group
        for g in np.unique(groups[groups >= 0]):
            members = np.unique(given[groups == g])
            for a in range(len(members)):
                for b in range(a + 1, len(members)):
                    shared[members[a], members[b]] += 1
    counts = np.bincount(given, minlength=k)
    rows = []
    for a in range(k):
        for b in range(a + 1, k):
            flipped, dup = int(flips[a, b] + flips[b, a]), int(shared[a, b] + shared[b, a])
            if flipped + dup:
                rows.append(
                    {
                        "classes": [names[a], names[b]],
                        "flagged_between": flipped,
                        "duplicate_groups_across": dup,
                        "share": (flipped + dup) / max(int(counts[a] + counts[b]), 1),
                    }
                )
    rows.sort(key=lambda r: (-(r["flagged_between"] + r["duplicate_groups_across"]), r["classes"]))
    return rows[:top]


#: The run directory's matrix files, by estimator.


def _nan_to_none(value: float):
    return None if np.isnan(value) else float(value)


def default_run_dir(source: str | os.PathLike) -> Path:
    """``./labelaudit-runs/<source name>-<YYYYmmdd-HHMMSS>`` in the current directory."""
    name = Path(source).expanduser().resolve().stem or "dataset"
    return Path("labelaudit-runs") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"


def scan_inputs(
    table: SampleTable, *, truth=None, cache_dir=None, weights: str | None = None, files=()
) -> list[Path]:
    """Everything a scan reads, which its run directory may not be, be inside of, or hold: the
    images and their folders, the manifest, the truth file, the cache, a local ``--weights`` file
    and ``files`` (``--embeddings``/``--probs``)."""
    from ..data.images import cache_root

    local_weights = weights if weights is not None and Path(weights).expanduser().exists() else None
    return input_paths(table, [truth, cache_root(cache_dir), local_weights, *files])


def write_run(
    result: ScanResult, out_dir: str | os.PathLike | RunDirectory, *, overwrite: bool = False
) -> Path:
    """Write the run directory all or nothing (see :mod:`labelaudit.runs.directory`). Returns the directory.

    ``out_dir`` is a path, or a :class:`~labelaudit.runs.directory.RunDirectory` opened before the scan
    (the CLI does that, so a bad ``--out`` fails before training and stays locked until written).
    ``overwrite`` replaces an earlier scan's run directory; anything else that is not empty is refused.
    """
    run = as_run_directory(
        out_dir,
        "scan",
        inputs=lambda: scan_inputs(
            result.table, weights=result.config.train.weights, files=[result.inputs.get("file")]
        ),
        overwrite=overwrite,
    )
    with run.writing() as tmp:
        _write_run_files(result, tmp)
    return run.path


def _write_run_files(result: ScanResult, out: Path) -> None:
    audit, table = result.audit, result.table
    names = list(table.class_names)
    info = summary(result)
    fingerprint = info["data_fingerprint"]  # the T files and model.pt carry it too
    soft = pd.DataFrame(audit.soft_labels.astype(np.float32), columns=[f"p_{name}" for name in names])
    full = pd.concat([audit.report.reset_index(drop=True), soft], axis=1)  # one concat: no per-column inserts
    # lets retrain find a sample's row of a --embeddings .npy in manifest order
    if "manifest_row" in table.samples:
        full["manifest_row"] = table.samples["manifest_row"].to_numpy()
    write_parquet(out / "report.parquet", full)
    write_csv(out / "report.csv", audit.report)
    write_csv(out / "flagged.csv", audit.report[review_mask(audit.report)].sort_values("rank", kind="stable"))
    corner = matrix_corner(fingerprint)
    write_matrix_csv(out / MATRIX_FILES["cleaned"], audit.transition_matrix, names, corner)
    write_matrix_csv(out / MATRIX_FILES["anchor"], result.anchor_transition_matrix, names, corner)
    if result.truth is not None:
        write_matrix_csv(
            out / MATRIX_FILES["truth"], np.asarray(result.truth["true_transition_matrix"]), names, corner
        )
    write_skipped_csv(out / "skipped.csv", table.skipped)
    write_json(out / "config.json", result.config.to_dict())
    write_json(out / "summary.json", info)
    from ..runs.plots import PLOTS_DIR, PlotData, write_plots  # matplotlib loads only here, not for --help

    write_plots(PlotData.from_summary(info, audit.report, audit.transition_matrix), out / PLOTS_DIR)
    if result.trainer is None:  # --probs: nothing was trained, so there is no model to save
        return
    extra = {"data_fingerprint": fingerprint, "run_id": result.run_id}
    if result.inputs["kind"] != "images":  # a head: what it needs to see the same embeddings again
        extra["embedding"] = {
            k: v
            for k, v in result.inputs.items()
            if k not in ("cache_file", "seconds", "reused", "images_per_second")
        }
    save_model(
        out / "model.pt",
        result.trainer,
        names,
        depth=result.config.train.depth,
        width=result.config.train.width,
        extra=extra,
    )
