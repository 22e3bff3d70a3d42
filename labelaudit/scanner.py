"""``scan``: source -> sample table -> image cache -> method -> audit -> run directory.

:func:`scan` does the work and returns a :class:`ScanResult`; :func:`write_run` writes the run
directory (the product's contract, see docs/run-directory.md). The CLI calls exactly these two.
"""

from __future__ import annotations

import os
import platform
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd
import torch

from . import __version__
from ._atomic import atomic_path
from .audit import Audit, audit_from_soft_labels
from .errors import ConfigError
from .images import ImageStore, ProgressCallback, load_images
from .methods.baselines import BASELINES, BaselineConfig, cross_validated_probs, cv_flags, run_baseline
from .methods.nlnl import NLNLConfig, run_nlnl
from .methods.pmnar import PMNARConfig, run_pmnar
from .estimators import anchor_transition_matrix, bootstrap_interval
from .metrics import load_truth, truth_metrics
from .model_io import save_model
from .reports import write_csv, write_json, write_skipped_csv
from .sources import load_source
from .training import TensorData, TrainConfig, Trainer

RUN_FORMAT_VERSION = 1
METHODS = ("nlnl", "pmnar", *BASELINES, "cv-ce")


@dataclass(frozen=True)
class ScanConfig:
    """Everything that decides a scan's result; saved as the run's ``config.json``."""

    method: str = "nlnl"
    image_size: Optional[int] = None  # None: median shorter side clamped to 16..64
    epochs_scale: float = 1.0  # multiplies every phase's epochs
    threshold: Optional[float] = None  # None: learned boundary (docs/methods.md); else flag p(given) < threshold
    train: TrainConfig = field(default_factory=TrainConfig)
    nlnl: NLNLConfig = field(default_factory=NLNLConfig)
    pmnar: PMNARConfig = field(default_factory=PMNARConfig)
    baseline: BaselineConfig = field(default_factory=BaselineConfig)

    def validate(self) -> "ScanConfig":
        if self.method not in METHODS:
            raise ConfigError(f"method must be one of {list(METHODS)}; got {self.method!r}")
        if not self.epochs_scale > 0:
            raise ConfigError(f"epochs scale must be > 0; got {self.epochs_scale!r}")
        if self.threshold is not None and not 0 < self.threshold < 1:
            raise ConfigError(f"threshold must be in (0, 1); got {self.threshold!r}")
        self.train.validate()
        self.pmnar.validate()
        self.baseline.validate()
        return self

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class ScanResult:
    """What a scan produced: the data, the trained model, the audit and its timings."""

    store: ImageStore
    config: ScanConfig
    trainer: Trainer
    audit: Audit
    seconds: dict[str, float]
    truth: Optional[dict] = None
    anchor_transition_matrix: Optional[np.ndarray] = None  # (K, K) from the final model, no augmentation
    noise_rate_interval: tuple[float, float] = (float("nan"), float("nan"))


def scan(
    source: str | os.PathLike,
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
) -> ScanResult:
    """Audit the labels of the dataset at ``source``.

    Parameters
    ----------
    source : path-like
        Image folder or parquet/CSV manifest (see :func:`labelaudit.load_source`).
    config : ScanConfig
        Method, schedule, network and flagging settings.
    path_column, label_column, id_column : str, optional
        Manifest columns.
    cache_dir, workers :
        Passed to :func:`labelaudit.load_images`.
    truth : path-like, optional
        A file with each sample's true label; adds precision/recall/F1 and estimate errors.
    out_dir : path-like, optional
        Where :func:`write_run` will write; checked before training so a bad choice fails fast.
    progress : callable, optional
        ``progress(phase, done, total, extra="")``.

    Returns
    -------
    ScanResult
    """
    config.validate()
    started = time.perf_counter()
    table = load_source(source, path_column=path_column, label_column=label_column, id_column=id_column)
    if out_dir is not None:  # before decoding and training, so a bad choice fails at once
        table.check_outside_input(out_dir, "output folder", "--out")
    store = load_images(table, image_size=config.image_size, cache_dir=cache_dir, workers=workers, progress=progress)
    true_labels = load_truth(truth, store.table) if truth is not None else None
    prepared = time.perf_counter()

    data = TensorData.from_store(store)
    nlnl, pmnar, baseline = config.nlnl, config.pmnar, config.baseline
    flags = rule = None  # None: audit_from_soft_labels applies the threshold or learned boundary
    if config.method == "cv-ce":
        baseline = baseline.scaled(config.epochs_scale)
        # Out-of-fold CE probabilities are both the soft labels and the anchor estimator's input.
        soft_labels, trainer = cross_validated_probs(data, baseline, config.train, progress)
        anchor_probs = soft_labels
        if config.threshold is None:
            flags, rule = cv_flags(soft_labels, store.table.samples["given_label"].to_numpy(), baseline.flagger)
    else:
        if config.method == "nlnl":
            nlnl = nlnl.scaled(config.epochs_scale)
            trainer = Trainer(data, config.train, progress)
            run_nlnl(trainer, nlnl)
        elif config.method == "pmnar":
            pmnar = pmnar.scaled(config.epochs_scale)
            trainer = Trainer(data, config.train, progress, networks=pmnar.networks)
            run_pmnar(trainer, pmnar)
        else:
            baseline = baseline.scaled(config.epochs_scale)
            trainer = Trainer(data, config.train, progress)
            run_baseline(trainer, config.method, baseline)
        soft_labels = trainer.history.mean().numpy()
        anchor_probs = trainer.predict(flip_average=False).numpy()
    audit = audit_from_soft_labels(store.table, soft_labels, threshold=config.threshold, flags=flags, flag_rule=rule)
    anchor_t = anchor_transition_matrix(anchor_probs)
    interval = bootstrap_interval(audit.report["suspected_noisy"].to_numpy(), seed=config.train.seed)

    seconds = {"load_and_decode": prepared - started, **trainer.phase_seconds}
    seconds["total"] = time.perf_counter() - started
    metrics = None
    if true_labels is not None:
        given = store.table.samples["given_label"].to_numpy()
        # The labels the report suggests for flagged samples (never the given label itself).
        metrics = truth_metrics(
            audit.report["suspected_noisy"].to_numpy(), given, true_labels, audit.cleaned_labels, audit.noise_rate,
            audit.transition_matrix,
        )
        metrics["transition_matrix_mae_anchor"] = float(np.abs(anchor_t - np.array(metrics["true_transition_matrix"])).mean())
    resolved = replace(config, image_size=store.image_size, nlnl=nlnl, pmnar=pmnar, baseline=baseline,
                       train=replace(config.train, backbone=trainer.backbone))
    return ScanResult(store=store, config=resolved, trainer=trainer, audit=audit, seconds=seconds, truth=metrics,
                      anchor_transition_matrix=anchor_t, noise_rate_interval=interval)


def summary(result: ScanResult) -> dict:
    """The run's ``summary.json`` content."""
    audit, table = result.audit, result.store.table
    names = list(table.class_names)
    flagged = int(audit.report["suspected_noisy"].sum())
    out = {
        "kind": "scan",
        "format_version": RUN_FORMAT_VERSION,
        "source": str(table.source),
        "method": result.config.method,
        "num_samples": len(table),
        "num_classes": len(names),
        "class_names": names,
        "class_counts": {n: int(c) for n, c in table.class_counts().items()},
        "num_flagged": flagged,
        "num_skipped": int(len(table.skipped)),
        "estimated_noise_rate": audit.noise_rate,
        "noise_rate_interval_95": {"low": result.noise_rate_interval[0], "high": result.noise_rate_interval[1],
                                   "method": "percentile bootstrap of the flagged share, 1000 resamples (sampling error only)"},
        "flag_rule": audit.flag_rule,
        "per_class_noise_rates": {n: _nan_to_none(r) for n, r in zip(names, audit.per_class_noise_rates)},
        "transition_matrix": {
            "convention": "T[i][j] = P(given = j | true = i); rows are true classes and sum to 1",
            "estimator": "cleaned label (suggested where flagged, else given) vs given label",
            "class_names": names,
            "matrix": audit.transition_matrix.tolist(),
            "per_class_noise_rates": {n: float(1 - audit.transition_matrix[i, i]) for i, n in enumerate(names)},
        },
        "transition_matrix_anchor": {
            "convention": "T[i][j] = P(given = j | true = i); rows are true classes and sum to 1",
            "estimator": "anchor points (Patrini et al. 2017): per class the sample at the 97th percentile of "
                         "p_i under the final model without augmentation, row-normalised",
            "class_names": names,
            "matrix": result.anchor_transition_matrix.tolist(),
            "per_class_noise_rates": {n: float(1 - result.anchor_transition_matrix[i, i]) for i, n in enumerate(names)},
        },
        "settings": result.config.to_dict(),
        "image_cache": {"dir": str(result.store.cache_dir), "image_size": result.store.image_size,
                        "channels": result.store.channels, "reused": result.store.reused},
        "seconds": {k: round(v, 3) for k, v in result.seconds.items()},
        "device": str(result.trainer.device),
        "training_curves": result.trainer.curves,
        "versions": {"labelaudit": __version__, "torch": torch.__version__, "python": platform.python_version(),
                     "numpy": np.__version__, "pandas": pd.__version__},
    }
    if result.truth is not None:
        out["truth"] = result.truth
    return out


def _nan_to_none(value: float):
    return None if np.isnan(value) else float(value)


def default_run_dir(source: str | os.PathLike) -> Path:
    """``./labelaudit-runs/<source name>-<YYYYmmdd-HHMMSS>`` in the current directory."""
    name = Path(source).expanduser().resolve().stem or "dataset"
    return Path("labelaudit-runs") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"


def write_run(result: ScanResult, out_dir: str | os.PathLike) -> Path:
    """Write the run directory; every file is written atomically. Returns the directory."""
    out = Path(out_dir).expanduser().resolve()
    result.store.table.check_outside_input(out, "output folder", "--out")
    out.mkdir(parents=True, exist_ok=True)
    audit, names = result.audit, list(result.store.table.class_names)

    full = audit.report.copy()
    for k, name in enumerate(names):
        full[f"p_{name}"] = audit.soft_labels[:, k].astype(np.float32)
    with atomic_path(out / "report.parquet") as tmp:
        full.to_parquet(tmp, index=False)
    write_csv(out / "report.csv", audit.report)
    flagged = audit.report[audit.report["suspected_noisy"]].sort_values("rank")
    write_csv(out / "flagged.csv", flagged)
    t = pd.DataFrame(audit.transition_matrix, index=pd.Index(names, name="true \\ given"), columns=names)
    with atomic_path(out / "transition_matrix.csv") as tmp:
        t.to_csv(tmp)
    write_skipped_csv(out / "skipped.csv", result.store.table.skipped)
    write_json(out / "config.json", result.config.to_dict())
    write_json(out / "summary.json", summary(result))
    save_model(out / "model.pt", result.trainer, names, depth=result.config.train.depth, width=result.config.train.width)
    return out
