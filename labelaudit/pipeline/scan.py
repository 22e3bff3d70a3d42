"""``scan``: source -> sample table -> image cache [-> embeddings] -> method -> audit -> run directory.

:func:`scan` does the work and returns a :class:`ScanResult`; :func:`write_run` writes the run
directory (the product's contract, see docs/run-directory.md). The CLI calls exactly these two.
"""

from __future__ import annotations

import os
import platform
import time
import uuid
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd
import torch

from .. import __version__
from .._atomic import atomic_path
from ..audit.estimators import anchor_transition_matrix, bootstrap_interval, per_class_bootstrap_intervals
from ..audit.flags import Audit, audit_from_soft_labels, cv_flags, review_mask, with_similarity
from ..audit.issue_types import issue_summary
from ..audit.metrics import audit_truth_metrics, load_truth
from ..audit.similarity import SimilarityIssues, find_similarity_issues
from ..data.images import ImageStore, ProgressCallback
from ..data.sources import SampleTable, load_source
from ..errors import ConfigError, TrainingError
from ..reports import matrix_corner, write_csv, write_json, write_matrix_csv, write_skipped_csv
from ..runs.directory import RunDirectory, check_not_input, data_fingerprint, input_paths
from ..runs.format import MATRIX_FILES, RUN_FORMAT_VERSION
from ..train import distributed
from ..train.checkpoint import save_model
from ..train.compute import holding_cpus
from ..train.inputs import (
    PreparedInputs,
    absolute_weights,
    decode_settings,
    prepare_inputs,
    resolve_train_mode,
)
from ..train.methods.baselines import BASELINES, BaselineConfig, cross_validated_probs, run_baseline
from ..train.methods.nlnl import NLNLConfig, run_nlnl
from ..train.methods.pmnar import PMNARConfig, run_pmnar
from ..train.tensors import TensorData
from ..train.trainer import TrainConfig, Trainer

METHODS = ("auto", "nlnl", "pmnar", *BASELINES, "cv-ce")
#: What ``method="auto"`` runs, by input kind: on a head over embeddings truncated GCE beat NLNL
#: and GCE on every measured setting (docs/pretrained.md), on pixels NLNL does (docs/methods.md).
AUTO_METHOD = {
    "images": "nlnl",
    "embeddings": "truncated-gce",
    "embeddings-file": "truncated-gce",
    "probs-file": "given-probs",
}


@dataclass(frozen=True)
class ScanConfig:
    """Everything that decides a scan's result; saved as the run's ``config.json``."""

    method: str = "auto"  # auto: nlnl on images, truncated-gce on a head over embeddings (AUTO_METHOD)
    image_size: Optional[int] = None  # None: median shorter side clamped to 16..64
    epochs_scale: float = 1.0  # multiplies every phase's epochs
    # None: the learned boundary (docs/methods.md); else flag p(given) < threshold
    threshold: Optional[float] = None
    # near-duplicates and outliers: None = up to SIMILARITY_MAX_SAMPLES, True, False
    similarity: Optional[bool] = None
    # pixel similarity for near-duplicates; None: read from the data
    duplicate_threshold: Optional[float] = None
    train: TrainConfig = field(default_factory=TrainConfig)
    nlnl: NLNLConfig = field(default_factory=NLNLConfig)
    pmnar: PMNARConfig = field(default_factory=PMNARConfig)
    baseline: BaselineConfig = field(default_factory=BaselineConfig)

    def validate(self) -> "ScanConfig":
        if self.method not in METHODS:
            raise ConfigError(f"method must be one of {list(METHODS)}; got {self.method!r}")
        from ..audit.flags import require_cleanlab
        from ..train.trainer import check_budget

        check_budget(self.epochs_scale)  # finite and > 0: inf would train forever
        if self.threshold is not None and not 0 < self.threshold < 1:
            raise ConfigError(f"threshold must be in (0, 1); got {self.threshold!r}")
        if self.duplicate_threshold is not None and not 0 < self.duplicate_threshold <= 1:
            raise ConfigError(f"duplicate threshold must be in (0, 1]; got {self.duplicate_threshold!r}")
        self.train.validate()
        self.pmnar.validate()
        self.baseline.validate()
        if self.method == "cv-ce" and self.baseline.flagger == "cleanlab" and self.threshold is None:
            require_cleanlab()  # before any training, not after five fold models
        return self

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class ScanResult:
    """What a scan produced: the data, the trained model, the audit and its timings.

    ``store`` is None when the scan read no images (``--embeddings``/``--probs`` files) and
    ``trainer`` is None when it trained nothing (``--probs``). ``inputs`` says what the network
    learnt from (:mod:`labelaudit.train.inputs`).
    """

    table: SampleTable
    store: Optional[ImageStore]
    config: ScanConfig
    trainer: Optional[Trainer]
    audit: Audit
    seconds: dict[str, float]
    truth: Optional[dict] = None
    anchor_transition_matrix: Optional[np.ndarray] = None  # (K, K) from the final model, no augmentation
    noise_rate_interval: tuple[float, float] = (float("nan"), float("nan"))
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex)  # in summary.json and model.pt
    distributed: dict = field(default_factory=distributed.description)  # world_size and backend, at scan time
    inputs: dict = field(default_factory=lambda: {"kind": "images"})
    similarity: Optional[SimilarityIssues] = None  # near-duplicates and outliers; None when not searched
    similarity_skipped: Optional[str] = None  # why they were not searched


# --probs trains nothing
@holding_cpus(lambda call: None if call["probs"] is not None else call["config"].train)
def scan(
    source: str | os.PathLike | SampleTable,
    config: ScanConfig = ScanConfig(),
    *,
    path_column: str | None = None,
    label_column: str | None = None,
    id_column: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    workers: int | None = None,
    truth: str | os.PathLike | None = None,
    out_dir: str | os.PathLike | None = None,
    progress: ProgressCallback | None = None,
    embeddings: str | os.PathLike | None = None,
    probs: str | os.PathLike | None = None,
) -> ScanResult:
    """Audit the labels of the dataset at ``source``.

    Parameters
    ----------
    source : path-like or SampleTable
        Image folder or parquet/CSV manifest (see :func:`labelaudit.load_source`), or its
        already loaded sample table.
    config : ScanConfig
        Method, schedule, network and flagging settings.
    path_column, label_column, id_column : str, optional
        Manifest columns (ignored for a SampleTable).
    cache_dir, workers, progress :
        Passed to :func:`labelaudit.load_images`: ``progress(phase, done, total, extra="")``.
    truth : path-like, optional
        A file with each sample's true label; adds precision/recall/F1 and estimate errors.
    out_dir : path-like, optional
        Where :func:`write_run` will write; checked against the inputs before training so a bad
        choice fails fast.
    embeddings : path-like, optional
        The user's own per-sample embeddings (:func:`labelaudit.data.user_files.read_embeddings`): a head is
        trained on them instead of a network on the images, which are not decoded.
    probs : path-like, optional
        Out-of-sample predicted probabilities (:func:`labelaudit.data.user_files.read_probs`, cleanlab's
        ``pred_probs``): nothing is trained; flags come from them by cv-ce's rule (``--flagger``)
        or ``threshold``.

    Runs that together would need more CPU threads than the machine has take turns
    (:func:`labelaudit.train.compute.cpu_share`): each computes with the threads it would have alone.

    Returns
    -------
    ScanResult
    """
    config.validate()
    distributed.setup(config.train.device)  # under torchrun: join the other processes (else nothing)
    config, kind = _settled_config(config, embeddings, probs)
    started = time.perf_counter()
    if isinstance(source, SampleTable):
        table = source
    else:
        table = load_source(source, path_column=path_column, label_column=label_column, id_column=id_column)
    if out_dir is not None:  # before decoding and training, so a bad choice fails at once
        _check_out_dir(out_dir, table, config, truth, cache_dir, (embeddings, probs))
    inputs = _prepare_inputs(table, kind, config, embeddings, probs, cache_dir, workers, progress)
    true_labels = load_truth(truth, inputs.table) if truth is not None else None
    prepared = time.perf_counter()
    fitted = _fit_and_audit(inputs, config, progress)
    trained = time.perf_counter()
    audit, similarity, skipped = _search_similarity(fitted.audit, inputs, fitted.penultimate, config)
    anchor_t = anchor_transition_matrix(fitted.anchor_probs)
    interval = bootstrap_interval(audit.report["suspected_noisy"].to_numpy(), seed=config.train.seed)
    seconds = _seconds(started, prepared, trained if similarity is not None else None, fitted, inputs)
    return ScanResult(
        table=inputs.table,
        store=inputs.store,
        config=_resolved_config(fitted.config, inputs, fitted.trainer),
        trainer=fitted.trainer,
        audit=audit,
        seconds=seconds,
        truth=None if true_labels is None else _truth_metrics(audit, inputs.table, true_labels, anchor_t),
        anchor_transition_matrix=anchor_t,
        noise_rate_interval=interval,
        inputs=inputs.info,
        similarity=similarity,
        similarity_skipped=skipped,
    )


def _settled_config(config: ScanConfig, embeddings, probs) -> tuple[ScanConfig, str]:
    """The scan's input kind (:func:`~labelaudit.train.inputs.resolve_train_mode`) and its config
    with the method ``auto`` picks for that kind and the weights as the run records them."""
    kind = resolve_train_mode(config.train, embeddings_file=embeddings, probs_file=probs)
    if kind == "probs-file" and config.method != "auto":
        raise ConfigError(
            f"--probs trains nothing, so --method {config.method} does not apply; drop --method "
            "(flags come from the probabilities by --flagger, or --threshold)"
        )
    if config.method == "auto":
        config = replace(config, method=AUTO_METHOD[kind])
    weights = config.train.weights
    if config.train.backbone == "efficientnet_lite0" and weights is None:
        weights = "DEFAULT"  # its weights ship in a package
    return replace(config, train=replace(config.train, weights=absolute_weights(weights))), kind


def _check_out_dir(out_dir, table: SampleTable, config: ScanConfig, truth, cache_dir, files) -> None:
    """Refuse an output folder that is, holds or lies inside anything the scan reads (:func:`scan_inputs`)."""
    read = scan_inputs(table, truth=truth, cache_dir=cache_dir, weights=config.train.weights, files=files)
    check_not_input(out_dir, read)


def _prepare_inputs(
    table: SampleTable, kind: str, config: ScanConfig, embeddings, probs, cache_dir, workers, progress
) -> PreparedInputs:
    """The scan's :class:`~labelaudit.train.inputs.PreparedInputs`: pixels at the size the network
    needs (a pretrained backbone's own when fine-tuning), a backbone's embeddings, or the user's file."""
    image_size, channels = config.image_size, None
    if kind == "images":
        image_size, channels = decode_settings(config.train, config.image_size)
    return prepare_inputs(
        table,
        kind,
        config.train,
        image_size=image_size,
        channels=channels,
        file=embeddings if embeddings is not None else probs,
        cache_dir=cache_dir,
        workers=workers,
        progress=progress,
    )


@dataclass
class _Fitted:
    """What a scan's method learnt (or the user's probabilities, when nothing is trained) and the audit
    of its soft labels."""

    trainer: Optional[Trainer]  # None: nothing was trained (--probs)
    soft_labels: np.ndarray  # (N, K)
    anchor_probs: np.ndarray  # (N, K) what the anchor estimator of T reads
    config: ScanConfig  # with the schedule actually used
    penultimate: Optional[np.ndarray] = None  # (N, D) the final network's penultimate activations
    flags: Optional[np.ndarray] = None  # None: the threshold or the learned boundary flags

    flag_rule: Optional[dict] = None
    audit: Optional[Audit] = None


def _fit_and_audit(inputs: PreparedInputs, config: ScanConfig, progress) -> _Fitted:
    """Train the scan's method on its inputs (or take the user's probabilities as they are) and
    audit the soft labels: flag, rank and suggest (:func:`~labelaudit.audit.flags.audit_from_soft_labels`).

    Out-of-sample probabilities (the user's, cv-ce's out-of-fold ones) are flagged by cv-ce's rule
    unless a threshold is set."""
    if inputs.probs is not None:
        fitted = _Fitted(None, inputs.probs, inputs.probs, config)
    else:
        data = inputs.training_data(config.train)
        try:
            fitted = _train(data, config, progress)
        except TrainingError as exc:  # scan has no --lr: say what the user can change
            advice = _DIVERGED_ADVICE.get(inputs.kind, _DIVERGED_ADVICE["images"])
            raise TrainingError(exc.what, advice) from None
    if config.threshold is None and (inputs.probs is not None or config.method == "cv-ce"):
        given = inputs.table.samples["given_label"].to_numpy()
        fitted.flags, fitted.flag_rule = cv_flags(fitted.soft_labels, given, config.baseline.flagger)
    fitted.audit = audit_from_soft_labels(
        inputs.table,
        fitted.soft_labels,
        threshold=config.threshold,
        flags=fitted.flags,
        flag_rule=fitted.flag_rule,
    )
    return fitted


def _search_similarity(audit: Audit, inputs: PreparedInputs, penultimate, config: ScanConfig):
    """``(audit, issues, skipped)``: the audit joined with the near-duplicates and outliers found,
    or unchanged with None and why they were not searched."""
    skipped = _similarity_skipped(config, inputs.kind, len(inputs.table))
    if skipped is not None:
        return audit, None, skipped
    images = inputs.kind == "images"
    issues = find_similarity_issues(
        _StoreRows(inputs.store) if inputs.store is not None else None,
        inputs.table.samples["given_label"].to_numpy(),
        # Penultimate activations of a network trained on the pixels; a head's input is the embeddings
        # themselves.
        features=penultimate if images else None,
        embeddings=inputs.features if not images else None,
        duplicate_threshold=config.duplicate_threshold,
    )
    return with_similarity(audit, inputs.table, issues), issues, None


def _seconds(started: float, prepared: float, searched: Optional[float], fitted: _Fitted, inputs) -> dict:
    """summary.json ``seconds``: decoding (embedding included), each training phase, the similarity
    search (which began at ``searched``; None: not searched) and the total, until now."""
    seconds = {
        "load_and_decode": prepared - started,
        **(fitted.trainer.phase_seconds if fitted.trainer is not None else {}),
    }
    if searched is not None:
        seconds["similarity"] = time.perf_counter() - searched
    if inputs.info.get("seconds") is not None:
        seconds["embed"] = inputs.info["seconds"]  # part of load_and_decode
    seconds["total"] = time.perf_counter() - started
    return seconds


def _truth_metrics(audit: Audit, table: SampleTable, true_labels: np.ndarray, anchor_t: np.ndarray) -> dict:
    """The audit against the true labels (:func:`~labelaudit.audit.metrics.audit_truth_metrics`),
    with the error of the anchor estimate of T."""
    metrics = audit_truth_metrics(audit, table.samples["given_label"].to_numpy(), true_labels)
    true_t = np.array(metrics["true_transition_matrix"])
    metrics["transition_matrix_mae_anchor"] = float(np.abs(anchor_t - true_t).mean())
    return metrics


def _resolved_config(config: ScanConfig, inputs: PreparedInputs, trainer: Optional[Trainer]) -> ScanConfig:
    """The settings the scan ran with (config.json): the backbone ``auto`` picked, ``--train``
    as full or head, and the image size the pixels were decoded at."""
    kind, train = inputs.kind, config.train
    if kind == "images":
        train = replace(train, backbone=trainer.backbone)
    if kind != "probs-file":  # a --probs scan trained nothing: its settings stay as given (retrain uses them)
        train = replace(train, train="full" if kind == "images" else "head")
    return replace(config, image_size=inputs.store.image_size if kind == "images" else None, train=train)


#: Above this many samples the exact neighbour search (quadratic in N) is skipped unless asked for.
SIMILARITY_MAX_SAMPLES = 200_000


def _similarity_skipped(config: ScanConfig, kind: str, n: int) -> Optional[str]:
    """Why near-duplicates and outliers are not searched in this scan, or None when they are."""
    if config.similarity is False:
        return "turned off (--no-similarity)"
    if kind == "probs-file":
        return "a --probs scan has no images or features to compare"
    if n < 2:
        return "fewer than 2 samples"
    if not distributed.is_primary():
        return "searched by the first process only"
    if n > SIMILARITY_MAX_SAMPLES and config.similarity is None:
        return (
            f"{n:,} samples is above {SIMILARITY_MAX_SAMPLES:,}: the exact search grows with N squared "
            "(docs/benchmarks.md); run `labelaudit scan --similarity` to search anyway"
        )
    return None


class _StoreRows:
    """An image store read as an ``(N, S, S, C)`` array in slices (not all in memory at once)."""

    def __init__(self, store: ImageStore) -> None:
        self.store = store

    def __len__(self) -> int:
        return len(self.store)

    def __getitem__(self, index) -> np.ndarray:
        return self.store.images(index)


#: What to do when a scan's training diverges, by input kind (its learning rates are the method's own).
_DIVERGED_ADVICE = {
    "embeddings-file": "the embeddings file probably holds extreme values: check how it was written, or "
    "standardise each dimension",
    "images": "run again with another --seed or --method; if it diverges again, please report it with the "
    "command",
}


#: Methods trained on one Trainer: the ScanConfig field holding their settings and how to run
#: them (``run(trainer, method, settings)``); cv-ce trains one Trainer per fold (_train).
_TRAINED_METHODS = {
    "nlnl": ("nlnl", lambda trainer, method, settings: run_nlnl(trainer, settings)),
    "pmnar": ("pmnar", lambda trainer, method, settings: run_pmnar(trainer, settings)),
    "baseline": ("baseline", run_baseline),  # ce, gce, truncated-gce
}


def _train(data: TensorData, config: ScanConfig, progress) -> _Fitted:
    """Run the scan's method on ``data``: the trainer, the soft labels ``(N, K)``, the anchor
    estimator's probabilities ``(N, K)``, the config with the schedule actually used and the
    final network's penultimate activations ``(N, D)`` (numpy)."""
    if config.method == "cv-ce":
        baseline = config.baseline.scaled(config.epochs_scale)
        # Out-of-fold CE probabilities are both the soft labels and the anchor estimator's input.
        soft_labels, trainer = cross_validated_probs(data, baseline, config.train, progress)
        # The last fold's network on every sample (its own training data is a subset).
        penultimate = trainer.predict(flip_average=False, images=data.images, features=True)[1].numpy()
        return _Fitted(trainer, soft_labels, soft_labels, replace(config, baseline=baseline), penultimate)
    field, run_method = _TRAINED_METHODS.get(config.method, _TRAINED_METHODS["baseline"])
    settings = getattr(config, field).scaled(config.epochs_scale)
    trainer = Trainer(data, config.train, progress, networks=getattr(settings, "networks", 1))
    run_method(trainer, config.method, settings)
    config = replace(config, **{field: settings})
    anchor_probs, penultimate = trainer.predict(flip_average=False, features=True)
    return _Fitted(trainer, trainer.history.mean().numpy(), anchor_probs.numpy(), config, penultimate.numpy())


def summary(result: ScanResult) -> dict:
    """The run's ``summary.json`` content."""
    audit, table, issues = result.audit, result.table, result.similarity
    names = list(table.class_names)
    out = {
        "kind": "scan",
        "format_version": RUN_FORMAT_VERSION,
        "source": str(table.source),
        "method": result.config.method,
        "num_samples": len(table),
        "num_classes": len(names),
        "class_names": names,
        "class_counts": {n: int(c) for n, c in table.class_counts().items()},
        "data_fingerprint": fingerprint(table),
        "run_id": result.run_id,
        "num_flagged": int(audit.report["suspected_noisy"].sum()),
        "num_skipped": int(len(table.skipped)),
        **_noise_rate_summary(result),
        # Near-duplicates and images of no class (audit.issue_types); outliers are left out of the
        # noise-rate estimates and T. Null counts: not searched (see similarity.skipped).
        **issue_summary(issues),
        "similarity": similarity_summary(issues, result.similarity_skipped),
        "class_overlap": class_overlap(audit, table, issues),
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
    """The estimated noise rate, the model's second estimate, the interval and the flag rule."""
    audit = result.audit
    return {
        "estimated_noise_rate": audit.noise_rate,
        # A second estimate apart from the flags (estimators.model_noise_rate); NaN-free: null when undefined.
        "model_estimated_noise_rate": _nan_to_none(audit.model_noise_rate),
        "noise_rate_interval_95": {
            "low": result.noise_rate_interval[0],
            "high": result.noise_rate_interval[1],
            "method": "percentile bootstrap of the flagged share, 1000 resamples (sampling error only)",
        },
        "flag_rule": audit.flag_rule,
    }


def _per_class_summary(result: ScanResult) -> dict:
    """Each class's flagged share and its bootstrap interval (null: no samples)."""
    audit, names = result.audit, list(result.table.class_names)
    class_intervals = per_class_bootstrap_intervals(
        audit.report["suspected_noisy"].to_numpy(),
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
    # A class no sample was cleaned to has no row of T to estimate (the identity fills it): null.
    estimated_row = np.bincount(audit.cleaned_labels, minlength=len(names)) > 0
    convention = "T[i][j] = P(given = j | true = i); rows are true classes and sum to 1"
    return {
        "transition_matrix": {
            "file": MATRIX_FILES["cleaned"],
            "convention": convention,
            "estimator": "cleaned label (suggested where flagged, else given) vs given label",
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


def fingerprint(table: SampleTable) -> str:
    """:func:`labelaudit.runs.directory.data_fingerprint` of a table's sample ids and given class names."""
    names = np.asarray(table.class_names, dtype=object)
    return data_fingerprint(
        table.samples["sample_id"].tolist(), names[table.samples["given_label"].to_numpy()].tolist()
    )


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
    if isinstance(out_dir, RunDirectory):
        run = out_dir
    else:
        run = RunDirectory(
            out_dir,
            "scan",
            inputs=scan_inputs(
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
    soft = pd.DataFrame(audit.soft_labels.astype(np.float32), columns=[f"p_{name}" for name in names])
    full = pd.concat([audit.report.reset_index(drop=True), soft], axis=1)  # one concat: no per-column inserts
    if (
        "manifest_row" in table.samples
    ):  # lets retrain find a sample's row of a --embeddings .npy in manifest order
        full["manifest_row"] = table.samples["manifest_row"].to_numpy()
    with atomic_path(out / "report.parquet") as tmp:
        full.to_parquet(tmp, index=False)
    write_csv(out / "report.csv", audit.report)
    write_csv(out / "flagged.csv", audit.report[review_mask(audit.report)].sort_values("rank", kind="stable"))
    corner = matrix_corner(fingerprint(table))  # the T files carry the data fingerprint too
    write_matrix_csv(out / MATRIX_FILES["cleaned"], audit.transition_matrix, names, corner)
    write_matrix_csv(out / MATRIX_FILES["anchor"], result.anchor_transition_matrix, names, corner)
    if result.truth is not None:
        write_matrix_csv(
            out / MATRIX_FILES["truth"], np.asarray(result.truth["true_transition_matrix"]), names, corner
        )
    write_skipped_csv(out / "skipped.csv", table.skipped)
    write_json(out / "config.json", result.config.to_dict())
    info = summary(result)
    write_json(out / "summary.json", info)
    from ..runs.plots import PLOTS_DIR, PlotData, write_plots  # matplotlib loads only here, not for --help

    write_plots(PlotData.from_summary(info, audit.report, audit.transition_matrix), out / PLOTS_DIR)
    if result.trainer is None:  # --probs: nothing was trained, so there is no model to save
        return
    extra = {"data_fingerprint": fingerprint(table), "run_id": result.run_id}
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
