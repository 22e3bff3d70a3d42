"""``retrain``: a scan's run directory -> a model trained on the cleaned labels.

The modes (``pseudo``, ``drop``, ``forward``, ``labels``) and their settings,
:class:`RetrainConfig`, are in :mod:`labelaudit.pipeline.retrain_modes`; :func:`retrain` reads the
scan's run and inputs again and trains in one of them; :func:`write_retrain` writes the new run
directory.
"""

from __future__ import annotations

import os
import platform
import time
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd
import torch

from .. import __version__
from ..audit.metrics import classification_metrics
from ..data.images import ImageStore, ProgressCallback
from ..data.sources import SampleTable, load_source
from ..errors import ConfigError
from ..reports import write_csv, write_json, write_parquet
from ..runs.directory import RunDirectory, as_run_directory, check_not_input, data_fingerprint, input_paths
from ..runs.format import RUN_FORMAT_VERSION
from ..runs.scan_run import ScanRun, load_run, read_labels
from ..train.checkpoint import save_model
from ..train.compute import holding_cpus
from ..train.inputs import PreparedInputs, absolute_weights, prepare_inputs
from ..train.tensors import TensorData
from ..train.trainer import TrainConfig, Trainer

# The `name as name` imports keep names importable from here, where they were defined before the split.
from .retrain_modes import MODES as MODES
from .retrain_modes import RELABEL as RELABEL
from .retrain_modes import TRAIN_BY_MODE, RetrainConfig, Retrained, RetrainJob


@dataclass
class RetrainResult:
    """The retrained model and how it was made."""

    run: ScanRun
    store: Optional[ImageStore]  # None: the scan's own --embeddings file
    config: RetrainConfig
    trainer: Trainer  # holds the final model
    cleaned: pd.DataFrame  # cleaned_labels.csv
    curves: dict[str, list[dict]]  # per network
    seconds: dict[str, float]
    test: Optional[dict] = None
    train_settings: TrainConfig = field(default_factory=TrainConfig)
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex)  # in summary.json and model.pt


def _retrain_train_config(call: dict) -> TrainConfig:
    """The network settings a :func:`retrain` call will train with (for :func:`holding_cpus`); loads
    its scan run once and passes it on."""
    call["config"].validate()  # a bad setting fails before the run is read
    if not isinstance(call["run_dir"], ScanRun):
        call["run_dir"] = load_run(call["run_dir"])
    return _train_settings(call["run_dir"], call["config"])


@holding_cpus(_retrain_train_config)
def retrain(
    run_dir: str | os.PathLike | ScanRun,
    config: RetrainConfig = RetrainConfig(),
    *,
    test: str | os.PathLike | None = None,
    test_path_column: str | None = None,
    test_label_column: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    workers: int | None = None,
    out_dir: str | os.PathLike | None = None,
    progress: ProgressCallback | None = None,
    weights: str | None = None,
) -> RetrainResult:
    """Train a model on the labels a scan cleaned.

    Parameters
    ----------
    run_dir : path-like or ScanRun
        The scan's run directory, or what :func:`load_run` read from it.
    config : RetrainConfig
    test : path-like, optional
        A held-out labelled image folder or manifest (labels must be classes of the scan): adds
        test accuracy, per-class accuracy and the confusion matrix.
    test_path_column, test_label_column : str, optional
        Manifest columns of ``test``.
    cache_dir, workers :
        As in :func:`labelaudit.load_images`; the scan's cache entry is reused.
    out_dir : path-like, optional
        Checked before training so that a bad choice fails at once.
    progress : callable, optional
        ``progress(phase, done, total, extra="")``.
    weights : str, optional
        Head-mode scans: where the backbone's weights file is now, when it moved since the scan
        (it must hold the same weights: checked by ``weights_id``).

    Runs that together would need more CPU threads than the machine has take turns
    (:func:`labelaudit.train.compute.cpu_share`).
    """
    config.validate()
    started = time.perf_counter()
    run = _with_moved_weights(run_dir if isinstance(run_dir, ScanRun) else load_run(run_dir), weights)
    if out_dir is not None:
        check_retrain_out(run, out_dir, labels=config.labels)
    # Read before decoding: a bad labels file or test set fails at once.
    reviewed = _reviewed_labels(run, config.labels) if config.mode == "labels" else None
    test_table = (
        None if test is None else _test_table(run, test, test_path_column, test_label_column, cache_dir)
    )
    train = _train_settings(run, config)
    inputs = _training_inputs(run, train, cache_dir, workers, progress)
    test_inputs = None
    if test_table is not None:
        test_inputs = _test_inputs(run, test_table, train, inputs, cache_dir, workers, progress)
    prepared = time.perf_counter()
    data = inputs.training_data(train)
    trained = TRAIN_BY_MODE[config.mode](RetrainJob(run, config, train, data, reviewed, progress))
    seconds = {"load_and_decode": prepared - started}
    for trainer in trained.trainers:
        seconds.update(trainer.phase_seconds)
    test_metrics = None if test_inputs is None else _test_metrics(run, trained.final, test_inputs)
    seconds["total"] = time.perf_counter() - started
    return RetrainResult(
        run=run,
        store=inputs.store,
        config=config,
        trainer=trained.final,
        cleaned=_cleaned_labels(run, data, trained),
        # one phase each
        curves={phase: trainer.curves for trainer in trained.trainers for phase in trainer.phase_seconds},
        seconds=seconds,
        test=test_metrics,
        train_settings=train,
    )


def _with_moved_weights(run: ScanRun, weights: str | None) -> ScanRun:
    """``run`` with its backbone's weights file where it is now, when ``weights`` says (head-mode
    scans only; the file must hold the same weights, which :func:`prepare_inputs` checks)."""
    if weights is None:
        return run
    if run.input_kind != "embeddings":
        raise ConfigError(
            "--weights applies to a scan that trained a head on a pretrained backbone's embeddings; "
            f"{str(run.path)!r} did not: drop --weights"
        )
    return replace(run, train=replace(run.train, weights=absolute_weights(weights)))


def _reviewed_labels(run: ScanRun, labels: str) -> np.ndarray:
    """``(N,)`` class index of each sample of ``run`` in the --labels file, -1 where it is not listed;
    every class must have a listed sample."""
    reviewed = read_labels(labels, run)
    listed_counts = np.bincount(reviewed[reviewed >= 0], minlength=len(run.class_names))
    if (listed_counts == 0).any():
        empty = run.class_names[int(np.flatnonzero(listed_counts == 0)[0])]
        raise ConfigError(
            f"no sample of --labels {str(labels)!r} has the class {empty!r}, so the network has "
            "nothing to learn it from; label some samples with it, or scan the cleaned manifest instead"
        )
    return reviewed


def _test_table(
    run: ScanRun, test, path_column: str | None, label_column: str | None, cache_dir=None
) -> SampleTable:
    """The held-out ``test`` source's samples; its labels must be classes of the scan. A Hugging
    Face test set's images are extracted to ``cache_dir``."""
    if run.input_kind == "embeddings-file":
        raise ConfigError(
            "this scan trained a head on embeddings you passed with --embeddings, which labelaudit cannot "
            "compute for --test images; drop --test, or scan with --backbone instead"
        )
    return load_source(
        test,
        path_column=path_column,
        label_column=label_column,
        classes=run.class_names,
        require_all_classes=False,
        cache_dir=cache_dir,
    )


def _train_settings(run: ScanRun, config: RetrainConfig) -> TrainConfig:
    """The scan's network settings with the retrain's seed, device and threads, where given."""
    return replace(
        run.train,
        seed=run.train.seed if config.seed is None else config.seed,
        device=run.train.device if config.device is None else config.device,
        threads=run.train.threads if config.threads is None else config.threads,
    )


def _training_inputs(run: ScanRun, train: TrainConfig, cache_dir, workers, progress) -> PreparedInputs:
    """What the scan's network learnt from, again: its own --embeddings file, or its images (from
    the cache, at the scan's size and channels for a network on the pixels), embedded by the same
    backbone and weights for a head. Every image must still decode."""
    if run.input_kind == "embeddings-file":
        return PreparedInputs(run.input_kind, run.table, features=_scan_embeddings_file(run))
    cache = (run.summary.get("image_cache") or {}) if run.input_kind == "images" else {}
    return _decoded_inputs(
        run, run.table, train, cache.get("image_size"), cache.get("channels"), cache_dir, workers, progress
    )


def _test_inputs(
    run: ScanRun,
    table: SampleTable,
    train: TrainConfig,
    training: PreparedInputs,
    cache_dir,
    workers,
    progress,
) -> PreparedInputs:
    """The test set's inputs, prepared as the training set's were (pixels at their size and channels)."""
    store = training.store if run.input_kind == "images" else None
    size, channels = (store.image_size, store.channels) if store is not None else (None, None)
    return _decoded_inputs(run, table, train, size, channels, cache_dir, workers, progress, test=True)


def _decoded_inputs(
    run: ScanRun, table: SampleTable, train, image_size, channels, cache_dir, workers, progress, *, test=False
) -> PreparedInputs:
    """``table``'s images decoded (and embedded, for a head) as the scan's network saw them. A network
    retrained after a --probs scan (which trained nothing) learns from the images."""
    return prepare_inputs(
        table,
        "embeddings" if run.input_kind == "embeddings" else "images",
        train,
        image_size=image_size,
        channels=channels,
        cache_dir=cache_dir,
        workers=workers,
        progress=progress,
        expect_weights_id=(run.summary.get("input") or {}).get("weights_id"),
        require_all_classes=not test,
        every_image=not test,
    )


def _cleaned_labels(run: ScanRun, data: TensorData, trained: Retrained) -> pd.DataFrame:
    """cleaned_labels.csv: each sample's given and cleaned label, the confidence in the cleaned one,
    and whether the final network learnt it."""
    names = np.array(run.class_names, dtype=object)
    given, cleaned = data.labels.numpy(), trained.cleaned
    return pd.DataFrame(
        {
            "sample_id": run.report["sample_id"].to_numpy(),
            "path": run.report["path"].to_numpy(),
            "given_label": names[given],
            "cleaned_label": names[cleaned],
            "changed": cleaned != given,
            "confidence": trained.confidence_source[np.arange(len(data)), cleaned].astype(np.float64),
            "in_training": trained.in_training,
        }
    )


def _test_metrics(run: ScanRun, final: Trainer, test: PreparedInputs) -> dict:
    """Accuracy, per-class accuracy and confusion matrix of the final network on the test set."""
    probs = final.predict(images=test.network_inputs()).numpy()
    truth = test.table.samples["given_label"].to_numpy()
    return {
        "source": str(test.table.source),
        "num_skipped": int(len(test.table.skipped)),
        **classification_metrics(probs.argmax(axis=1), truth, run.class_names),
    }


def default_retrain_dir(run_dir: str | os.PathLike, mode: str) -> Path:
    """``<scan run dir>-retrain-<mode>`` beside the scan's run directory."""
    path = Path(run_dir).expanduser().resolve()
    return path.parent / f"{path.name}-retrain-{mode}"


def summary(result: RetrainResult) -> dict:
    """The retrain run's ``summary.json``."""
    cleaned = result.cleaned
    out = {
        "kind": "retrain",
        "format_version": RUN_FORMAT_VERSION,
        "scan_run_dir": str(result.run.path),
        "source": str(result.run.table.source),
        "mode": result.config.mode,
        "relabel": result.config.relabel if result.config.mode == "pseudo" else None,
        "labels_file": str(Path(result.config.labels).expanduser().resolve())
        if result.config.labels
        else None,
        "num_samples": int(len(cleaned)),
        "num_flagged_by_scan": int(result.run.flagged.sum()),
        "num_in_training": int(cleaned["in_training"].sum()),
        "num_changed": int(cleaned["changed"].sum()),
        "class_names": list(result.run.class_names),
        # Of the labels the final network learnt (cleaned_label); model.pt carries the same.
        "data_fingerprint": data_fingerprint(
            cleaned["sample_id"].tolist(), cleaned["cleaned_label"].tolist()
        ),
        "run_id": result.run_id,
        "settings": {"retrain": result.config.to_dict(), "train": result.train_settings.to_dict()},
        "training_curves": result.curves,
        "seconds": {k: round(v, 3) for k, v in result.seconds.items()},
        "device": str(result.trainer.device),
        "precision": result.trainer.precision,
        "threads": result.trainer.threads,
        "input": {
            "kind": result.run.input_kind,
            **({k: v for k, v in _embedding_spec(result.run).items() if k != "kind"}),
        },
        "versions": {
            "labelaudit": __version__,
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
    }
    if result.test is not None:
        out["test"] = result.test
    return out


def _scan_embeddings_file(run: ScanRun) -> np.ndarray:
    """``(N, D)`` rows of the scan's own ``--embeddings`` file for the run's samples, in report order.

    A ``.npy`` in manifest order (one row per manifest row, skipped rows included) is indexed by the
    report's ``manifest_row``; every other layout is read as the scan read it.
    """
    from ..data.user_files import read_embeddings

    path = Path(run.summary["input"]["file"])
    if path.suffix.lower() == ".npy" and "manifest_row" in run.report:
        try:
            rows = np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise ConfigError(
                f"cannot read the scan's embeddings file {str(path)!r} ({exc}); put it back, or scan again"
            ) from None
        if rows.ndim == 2 and len(rows) != len(run.table):  # manifest order
            index = run.report["manifest_row"].to_numpy()
            if index.max(initial=-1) >= len(rows):
                raise ConfigError(
                    f"the scan's embeddings file {str(path)!r} has {len(rows)} rows, fewer than the manifest "
                    "had when it was scanned: it changed since; scan again"
                )
            features = np.asarray(rows[index], dtype=np.float32)
            if not np.isfinite(features).all():
                raise ConfigError(
                    f"the scan's embeddings file {str(path)!r} now holds NaN or infinite values: it changed "
                    "since the scan; scan again"
                )
            return features
    return read_embeddings(path, run.table)


def _embedding_spec(run: ScanRun) -> dict:
    """What a head trained on the scan's embeddings needs to see them again (model.pt ``embedding``)."""
    if run.input_kind == "images":
        return {}
    return {
        k: v
        for k, v in (run.summary.get("input") or {}).items()
        if k not in ("cache_file", "seconds", "reused", "images_per_second")
    }


def retrain_inputs(run: ScanRun, *, test=None, cache_dir=None, labels=None) -> list[Path]:
    """Everything a retrain reads: the scan's run directory, its images, the test set, the cache,
    the ``--labels`` file."""
    from ..data.images import cache_root

    own_embeddings = (run.summary.get("input") or {}).get("file")  # scan --embeddings/--probs
    return input_paths(run.table, [run.path, test, cache_root(cache_dir), labels, own_embeddings])


def check_retrain_out(run: ScanRun, out_dir: str | os.PathLike, *, labels=None) -> None:
    """Refuse an output folder that is, holds or lies inside an input (the scan's run, the images,
    the labels file)."""
    check_not_input(out_dir, retrain_inputs(run, labels=labels))


def write_retrain(
    result: RetrainResult, out_dir: str | os.PathLike | RunDirectory, *, overwrite: bool = False
) -> Path:
    """Write model.pt, cleaned_labels.csv/.parquet, summary.json and config.json, all or nothing.

    ``out_dir`` is a path or an opened :class:`~labelaudit.runs.directory.RunDirectory`; ``overwrite``
    replaces an earlier retrain's folder (nothing else that is not empty is ever replaced).
    """
    run = as_run_directory(
        out_dir,
        "retrain",
        inputs=lambda: retrain_inputs(result.run, labels=result.config.labels),
        overwrite=overwrite,
    )
    with run.writing() as out:
        write_csv(out / "cleaned_labels.csv", result.cleaned)
        write_parquet(out / "cleaned_labels.parquet", result.cleaned)
        write_json(
            out / "config.json",
            {"retrain": result.config.to_dict(), "train": result.train_settings.to_dict()},
        )
        content = summary(result)
        write_json(out / "summary.json", content)
        save_model(
            out / "model.pt",
            result.trainer,
            result.run.class_names,
            depth=result.train_settings.depth,
            width=result.train_settings.width,
            extra={
                "kind": "retrain",
                "data_fingerprint": content["data_fingerprint"],
                "run_id": result.run_id,
                **({"embedding": _embedding_spec(result.run)} if result.run.input_kind != "images" else {}),
            },
        )
    return run.path
