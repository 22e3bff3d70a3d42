"""``scan``: source -> sample table -> image cache [-> embeddings] -> method -> audit -> run directory.

:func:`scan` does the work and returns a :class:`ScanResult`; :func:`write_run` writes the run
directory (the product's contract, see docs/run-directory.md). The CLI calls exactly these two.
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass, replace
from typing import Optional, Sequence

import numpy as np
import torch

from ..audit.calibration import Calibration, calibrate, calibrate_clean
from ..audit.estimators import anchor_transition_matrix, per_class_bootstrap_intervals
from ..audit.flags import Audit, audit_from_soft_labels, cv_flags, with_similarity
from ..audit.metrics import audit_truth_metrics, load_truth
from ..audit.similarity import find_similarity_issues
from ..data.images import ImageStore, ProgressCallback
from ..data.sources import SampleTable, load_source
from ..errors import ConfigError, TrainingError
from ..runs.directory import check_not_input
from ..runs.fingerprints import table_fingerprint as fingerprint  # noqa: F401  (importable here)
from ..train import distributed
from ..train.compute import holding_cpus
from ..train.inputs import (
    PreparedInputs,
    absolute_weights,
    decode_settings,
    prepare_inputs,
    resolve_train_mode,
)
from ..train.methods.baselines import cross_validated_probs, run_baseline
from ..train.methods.cross_fit import CrossFit, cross_fitted_probs, forward_corrected_probs, run_cross_fit
from ..train.methods.nlnl import run_nlnl
from ..train.methods.pmnar import run_pmnar
from ..train.tensors import TensorData
from ..train.trainer import Trainer
from .scan_config import AUTO_METHOD, METHODS, ScanConfig, ScanResult  # noqa: F401  (importable here)
from .scan_outputs import (  # noqa: F401  (importable from pipeline.scan as before)
    class_overlap,
    default_run_dir,
    scan_inputs,
    similarity_summary,
    summary,
    write_run,
)


@holding_cpus(lambda call: None if call["probs"] is not None else call["config"].train)
def scan(
    source: str | os.PathLike | SampleTable,
    config: ScanConfig = ScanConfig(),
    *,
    path_column: str | None = None,
    label_column: str | None = None,
    id_column: str | None = None,
    label_names: Sequence[str] | str | os.PathLike | None = None,
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
    source : path-like, datasets.Dataset or SampleTable
        Image folder, parquet/CSV manifest or Hugging Face dataset (see
        :func:`labelaudit.load_source`), or its already loaded sample table.
    config : ScanConfig
        Method, schedule, network and flagging settings.
    path_column, label_column, id_column : str, optional
        Manifest columns (ignored for a SampleTable).
    label_names : sequence of str or path-like, optional
        A Hugging Face dataset's integer label names, as in :func:`labelaudit.load_source`.
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
        table = load_source(
            source,
            path_column=path_column,
            label_column=label_column,
            id_column=id_column,
            label_names=label_names,
            cache_dir=cache_dir,
        )
    if out_dir is not None:  # before decoding and training, so a bad choice fails at once
        _check_out_dir(out_dir, table, config, truth, cache_dir, (embeddings, probs))
    inputs = _prepare_inputs(table, kind, config, embeddings, probs, cache_dir, workers, progress)
    true_labels = load_truth(truth, inputs.table) if truth is not None else None
    prepared = time.perf_counter()
    fitted = _fit_and_audit(inputs, config, progress)
    trained = time.perf_counter()
    audit, similarity, skipped = _search_similarity(fitted.audit, inputs, fitted.penultimate, config)
    anchor_t = anchor_transition_matrix(fitted.anchor_probs)
    interval = expected_share_interval(audit, inputs.table, config.train.seed)
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
        cross_fit=_cross_fit_summary(fitted),
    )


def _cross_fit_summary(fitted: _Fitted) -> Optional[dict]:
    """``summary.json``'s ``cross_fit``: the heads' loss and weight decay, and the forward-corrected
    heads' when the posteriors came from them (null: the soft labels are not cross-fitted)."""
    if fitted.cross_fit is None:
        return None
    return {
        **fitted.cross_fit.summary(),
        # the audit's soft labels: the heads' alone, or averaged with the network's own
        "averaged_with_network": fitted.averaged,
        "forward_corrected": None if fitted.forward is None else fitted.forward.summary(),
    }


def expected_share_interval(audit: Audit, table: SampleTable, seed: int) -> tuple[float, float]:
    """95% interval of the estimated noise rate (the mean ``p_label_wrong`` of the samples that are
    not outliers): the count of wrong labels drawn as ``Binomial(N, rate)``. Sampling uncertainty
    only, not the error of the calibration (docs/calibration.md measures that)."""
    p_wrong = audit.p_label_wrong
    if "is_outlier" in audit.report:
        p_wrong = p_wrong[~audit.report["is_outlier"].to_numpy(dtype=bool)]
    if len(p_wrong) == 0:
        return float("nan"), float("nan")
    low, high = per_class_bootstrap_intervals(p_wrong, np.zeros(len(p_wrong), np.int64), 1, seed=seed)[0]
    return float(low), float(high)


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
    cross_fit: Optional[CrossFit] = None  # the soft labels are cross-fitted heads' out-of-fold probabilities
    forward: Optional[CrossFit] = None  # forward-corrected heads behind the posteriors (_calibrate)
    averaged: bool = False  # the soft labels are the mean of the network's and the heads' (_calibrate)


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
    given = inputs.table.samples["given_label"].to_numpy()
    if config.threshold is None and (inputs.probs is not None or config.method == "cv-ce"):
        fitted.flags, fitted.flag_rule = cv_flags(fitted.soft_labels, given, config.baseline.flagger)
    calibrated = _calibrate(fitted, given, config, progress)
    fitted.audit = audit_from_soft_labels(
        inputs.table,
        fitted.soft_labels,
        threshold=config.threshold,
        flags=fitted.flags,
        flag_rule=fitted.flag_rule,
        # Out-of-fold soft labels (every NLNL/PMNAR scan's after _calibrate): flag p_label_wrong > 0.5.
        rule="calibrated" if fitted.cross_fit is not None else "mixture",
        calibrated=calibrated,
    )
    return fitted


def _calibrate(fitted: _Fitted, given: np.ndarray, config: ScanConfig, progress) -> Calibration:
    """The soft labels calibrated without the truth (:func:`~labelaudit.audit.calibration.calibrate`).

    NLNL and PMNAR first get heads cross-fitted on the final network's penultimate features, and
    the switch reads those. On class-conditional noise the heads replace the training-time soft
    labels (20% symmetric sample data: flag F1 0.856 -> 0.90, largest per-class noise-rate error
    0.34 -> 0.11); on human-like noise the two are averaged (confusable 30%: Fashion-MNIST F1
    0.718 -> 0.731, digits 0.878 -> 0.883, noise-rate error within 2 points on both, where either
    alone missed by 5-6 points; docs/calibration.md).

    Then, on class-conditional noise with cross-fitted heads, a second set is fitted through the
    estimated T (forward correction) and the posteriors come from those: on head-mode embeddings
    this raised flag F1 from 0.751 to 0.819 on asymmetric noise and from 0.910 to 0.920 on
    symmetric noise.
    """
    labels = torch.from_numpy(np.array(given, dtype=np.int64))
    if config.method in CROSS_FITTED_METHODS:
        history = fitted.soft_labels
        fitted.cross_fit = _cross_fit_penultimate(fitted, labels, config, progress)
        calibrated = calibrate(fitted.cross_fit.probs, given)
        if calibrated.kind == "plain":
            fitted.soft_labels = 0.5 * (history + fitted.cross_fit.probs)
            fitted.averaged = True
            averaged = calibrate(fitted.soft_labels, given, kind="plain")
            return dataclasses.replace(averaged, easy_disagreement_ratio=calibrated.easy_disagreement_ratio)
        fitted.soft_labels = fitted.cross_fit.probs
    else:
        calibrated = calibrate(fitted.soft_labels, given)
    fit = fitted.cross_fit
    if calibrated.kind != "through-T" or fit is None or fit.features is None:
        return calibrated
    started = time.perf_counter()
    with fitted.trainer.compute_threads():
        fitted.forward = forward_corrected_probs(
            fit.features,
            labels,
            fitted.soft_labels.shape[1],
            calibrated.transition_matrix,
            fitted.config.cross_fit,
            config.train.seed,
            progress,
        )
    fitted.trainer.phase_seconds["forward-corrected"] = time.perf_counter() - started
    transition = calibrated.transition_matrix
    return calibrate_clean(fitted.forward.probs, given, transition, calibrated.easy_disagreement_ratio)


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
    if config.method == "cv-gce":  # its heads are linear whatever --head says
        train = replace(train, head="linear")
    return replace(config, image_size=inputs.store.image_size if kind == "images" else None, train=train)


def _similarity_skipped(config: ScanConfig, kind: str, n: int) -> Optional[str]:
    """Why near-duplicates and outliers are not searched in this scan, or None when they are."""
    if config.similarity is False:
        return "turned off (--no-similarity)"
    if kind == "probs-file":
        return "a --probs scan has no images or features to compare"
    if n < 2:
        return "fewer than 2 samples"
    if not distributed.is_primary():  # a rank-0 step: its time is in the first process's summary
        return "searched by the first process only"
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
    cross_fit = config.cross_fit.scaled(config.epochs_scale)
    if config.method == "cv-gce":
        fit, trainer = run_cross_fit(data, cross_fit, config.train, progress)
        # Out-of-fold probabilities feed the audit and the anchor estimator alike.
        return _Fitted(trainer, fit.probs, fit.probs, replace(config, cross_fit=cross_fit), cross_fit=fit)
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
    soft_labels = trainer.history.mean().numpy()
    fitted = _Fitted(trainer, soft_labels, anchor_probs.numpy(), config, penultimate.numpy())
    if config.method in CROSS_FITTED_METHODS:
        fitted.config = replace(fitted.config, cross_fit=cross_fit)
    return fitted


#: Noise-robust methods whose audit may read heads cross-fitted on the final network's penultimate
#: features rather than the training-time soft labels (:func:`_calibrate`). The baselines keep
#: their own soft labels, as the papers define them.
CROSS_FITTED_METHODS = ("nlnl", "pmnar")


def _cross_fit_penultimate(fitted: _Fitted, labels: torch.Tensor, config: ScanConfig, progress) -> CrossFit:
    """Out-of-fold probabilities of cross-entropy linear heads on the standardised penultimate
    features (:func:`~labelaudit.train.methods.cross_fit.cross_fitted_probs`)."""
    x = torch.from_numpy(fitted.penultimate).float()
    x = (x - x.mean(dim=0)) / x.std(dim=0).clamp_min(1e-6)
    k = fitted.soft_labels.shape[1]
    started = time.perf_counter()
    with fitted.trainer.compute_threads():
        fit = cross_fitted_probs(x, labels, k, fitted.config.cross_fit, "ce", config.train.seed, progress)
    fitted.trainer.phase_seconds["cross-fit"] = time.perf_counter() - started
    return fit
