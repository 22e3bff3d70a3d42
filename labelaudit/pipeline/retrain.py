"""``retrain``: a scan's run directory -> a model trained on the cleaned labels.

Modes (docs/methods.md "Retrain"):

- ``pseudo`` (NLNL paper section 3.5): a fresh network learns the samples the audit kept (class
  weights from the kept subset); its 10-epoch mean softmax relabels the flagged samples (or all,
  ``relabel="all"``); a second fresh network learns every sample from those soft labels with
  cross-entropy, weighted by the class of each soft label's argmax.
- ``drop``: the first network of ``pseudo`` alone (kept samples only).
- ``forward``: one network on every given label with the forward-corrected loss
  ``-log (T^T p)_y``, ``T`` being the audit's transition-matrix estimate.
- ``labels`` (``RetrainConfig(labels=FILE)``, ``retrain --labels FILE``): one network on the labels
  of a file matched by ``sample_id`` (``apply``'s ``cleaned.parquet``: the reviewed labels), with
  class weights as in ``drop``; the scan's flags are not used, samples absent from the file are
  not trained on.

:func:`retrain` does the work; :func:`write_retrain` writes the new run directory.
"""

from __future__ import annotations

import math
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
from ..audit.metrics import classification_metrics
from ..data.images import ImageStore, ProgressCallback, load_images
from ..data.sources import load_source
from ..errors import ConfigError, DatasetError
from ..reports import write_csv, write_json
from ..runs.directory import RunDirectory, as_run_directory, check_not_input, data_fingerprint, input_paths
from ..runs.format import RUN_FORMAT_VERSION
from ..runs.scan_run import ScanRun, load_run, read_labels
from ..train.checkpoint import save_model
from ..train.compute import holding_cpus
from ..train.inputs import absolute_weights, backbone_embeddings, pretrained_image_settings, uses_pretrained
from ..train.losses import forward_corrected_loss
from ..train.methods.nlnl import class_weights
from ..train.tensors import TensorData
from ..train.trainer import TrainConfig, Trainer, masked_mean

MODES = ("pseudo", "drop", "forward", "labels")
RELABEL = ("flagged", "all")


@dataclass(frozen=True)
class RetrainConfig:
    """How to retrain. ``epochs`` is per network (``pseudo`` trains two)."""

    mode: str = "pseudo"
    relabel: str = "flagged"  # pseudo only: which samples take the first network's soft label
    epochs: int = 30
    lr: float = 0.1
    schedule: str = "step"  # lr / 10 at 40% and 80% of each network's epochs
    seed: Optional[int] = None  # None: the scan's seed
    device: Optional[str] = None  # None: the scan's device setting
    threads: Optional[int] = None  # None: the scan's setting (training.cpu_threads)
    labels: Optional[str] = (
        None  # mode "labels": a parquet/CSV with sample_id and label (apply's cleaned.parquet)
    )

    def validate(self) -> "RetrainConfig":
        if self.mode not in MODES:
            raise ConfigError(f"mode must be one of {list(MODES)}; got {self.mode!r}")
        if self.mode == "labels" and self.labels is None:
            raise ConfigError(
                "mode 'labels' trains on the labels of a file: pass --labels FILE (e.g. the cleaned.parquet "
                "of labelaudit apply)"
            )
        if self.labels is not None and self.mode != "labels":
            raise ConfigError(
                f"--labels trains one network on the file's labels and takes no --mode; got --mode "
                f"{self.mode!r}: drop --mode (or --labels)"
            )
        if self.relabel not in RELABEL:
            raise ConfigError(f"relabel must be one of {list(RELABEL)}; got {self.relabel!r}")
        if self.threads is not None and not (isinstance(self.threads, int) and self.threads >= 1):
            raise ConfigError(f"threads must be a positive integer; got {self.threads!r}")
        if self.epochs < 1 or not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(
                f"retrain needs --epochs >= 1 and a finite --lr > 0; got {self.epochs!r}, {self.lr!r}"
            )
        return self

    def to_dict(self) -> dict:
        return asdict(self)


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
    config, train = call["config"], call["run_dir"].train
    return replace(
        train,
        threads=train.threads if config.threads is None else config.threads,
        device=train.device if config.device is None else config.device,
    )


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
    run = run_dir if isinstance(run_dir, ScanRun) else load_run(run_dir)
    if weights is not None:
        if run.input_kind != "embeddings":
            raise ConfigError(
                "--weights applies to a scan that trained a head on a pretrained backbone's embeddings; "
                f"{str(run.path)!r} did not: drop --weights"
            )
        run = replace(run, train=replace(run.train, weights=absolute_weights(weights)))
    if out_dir is not None:
        check_retrain_out(run, out_dir, labels=config.labels)
    targets = None
    if config.mode == "labels":  # read before decoding: a bad labels file fails at once
        targets = read_labels(config.labels, run)  # (N,) class index, -1: not listed
        listed_counts = np.bincount(targets[targets >= 0], minlength=len(run.class_names))
        if (listed_counts == 0).any():
            empty = run.class_names[int(np.flatnonzero(listed_counts == 0)[0])]
            raise ConfigError(
                f"no sample of --labels {str(config.labels)!r} has the class {empty!r}, so the network has "
                "nothing to learn it from; label some samples with it, or scan the cleaned manifest instead"
            )
    kind = run.input_kind
    if kind == "embeddings-file" and test is not None:
        raise ConfigError(
            "this scan trained a head on embeddings you passed with --embeddings, which labelaudit cannot "
            "compute for --test images; drop --test, or scan with --backbone instead"
        )
    store = None
    if kind == "embeddings-file":
        features = _scan_embeddings_file(run)
    else:
        cache = run.summary.get("image_cache") or {}
        size, channels = (
            (cache.get("image_size"), cache.get("channels")) if kind == "images" else (None, None)
        )
        store = load_images(
            run.table,
            image_size=size,
            channels=channels,
            cache_dir=cache_dir,
            workers=workers,
            progress=progress,
        )
    if store is not None and len(store.table) != len(run.table):
        first = store.table.skipped.iloc[0]
        raise DatasetError(
            f"{len(run.table) - len(store.table)} images of the run can no longer be decoded (first: "
            f"{first['path']!r}, "
            f"{first['reason']}); fix them or scan the dataset again"
        )
    test_store = None
    if test is not None:  # read before training: a bad test set fails at once
        test_table = load_source(
            test,
            path_column=test_path_column,
            label_column=test_label_column,
            classes=run.class_names,
            require_all_classes=False,
        )
        test_store = load_images(
            test_table,
            image_size=store.image_size if kind == "images" else None,
            channels=store.channels if kind == "images" else None,
            cache_dir=cache_dir,
            workers=workers,
            progress=progress,
            require_all_classes=False,
        )
    train = replace(
        run.train,
        seed=run.train.seed if config.seed is None else config.seed,
        device=run.train.device if config.device is None else config.device,
        threads=run.train.threads if config.threads is None else config.threads,
    )
    test_inputs = None
    if kind == "embeddings":  # the same backbone and weights as the scan, embeddings from the cache
        weights_id = run.summary["input"].get("weights_id")
        features = backbone_embeddings(
            store, train, cache_dir=cache_dir, progress=progress, expect_weights_id=weights_id
        ).features
        if test_store is not None:
            test_inputs = torch.from_numpy(
                np.array(
                    backbone_embeddings(
                        test_store,
                        train,
                        cache_dir=cache_dir,
                        progress=progress,
                        expect_weights_id=weights_id,
                    ).features
                )
            )
    elif test_store is not None:
        test_inputs = torch.from_numpy(test_store.images()).permute(0, 3, 1, 2)
    prepared = time.perf_counter()

    given_labels = run.table.samples["given_label"].to_numpy()
    if kind in ("embeddings", "embeddings-file"):
        data = TensorData.from_features(features, given_labels, len(run.class_names))
    else:
        data = TensorData.from_store(store, train.max_memory)
        if uses_pretrained(train):  # fine-tuning: the weights' own normalisation
            _, mean, std = pretrained_image_settings(train)
            data = replace(data, mean=torch.tensor(mean), std=torch.tensor(std))
    k, given = data.num_classes, data.labels
    kept = torch.from_numpy(~run.flagged if targets is None else targets >= 0)

    if config.mode == "labels":
        learnt = torch.from_numpy(np.where(targets >= 0, targets, given.numpy()))
        final = Trainer(replace(data, labels=learnt), train, progress)
        trainers = [final]
        final.run_phase(
            "reviewed labels",
            config.epochs,
            config.lr,
            _weighted_ce(class_weights(learnt[kept], k)),
            lambda _: kept.float(),
            lambda _: f"listed {kept.float().mean().item():.0%}",
            config.schedule,
        )
        cleaned = learnt.numpy()
        confidence_source = run.soft_labels()
    elif config.mode in ("pseudo", "drop"):
        kept_counts = np.bincount(given[kept].numpy(), minlength=k)
        if (kept_counts == 0).any():
            empty = run.class_names[int(np.flatnonzero(kept_counts == 0)[0])]
            raise ConfigError(
                f"the scan flagged every sample given class {empty!r}, so --mode {config.mode} has nothing "
                "to learn it "
                "from; use --mode forward, or review the flags (flagged.csv) first"
            )
        first = Trainer(data, train, progress)
        trainers = [first]
        weights = class_weights(given[kept], k)
        first.run_phase(
            "kept samples",
            config.epochs,
            config.lr,
            _weighted_ce(weights),
            lambda _: kept.float(),
            lambda _: f"kept {kept.float().mean().item():.0%}",
            config.schedule,
        )
        final = first
        if config.mode == "drop":
            cleaned = np.where(run.flagged, run.suggested_labels(), given.numpy())
            confidence_source = run.soft_labels()
        else:
            soft = first.history.mean()  # (N, K) the first network's 10-epoch mean softmax
            relabel = torch.ones(len(data), dtype=torch.bool) if config.relabel == "all" else ~kept
            targets = torch.nn.functional.one_hot(given, k).float()
            targets[relabel] = soft[relabel]
            hard = targets.argmax(dim=1)
            second = Trainer(replace(data, labels=hard), replace(train, seed=train.seed + 1), progress)
            second.run_phase(
                "soft labels",
                config.epochs,
                config.lr,
                _soft_ce(targets, class_weights(hard, k)),
                lambda _: targets,
                lambda _: f"relabelled {relabel.float().mean().item():.0%}",
                config.schedule,
            )
            trainers.append(second)
            final = second
            cleaned = hard.numpy()
            confidence_source = soft.numpy()
    else:
        transition = torch.from_numpy(run.transition_matrix).float()
        final = Trainer(data, train, progress)
        trainers = [final]
        final.run_phase(
            "forward correction", config.epochs, config.lr, _forward(transition), None, None, config.schedule
        )
        cleaned = given.numpy()
        confidence_source = run.soft_labels()

    in_training = kept.numpy() if config.mode in ("drop", "labels") else np.ones(len(data), dtype=bool)
    curves = {
        phase: trainer.curves for trainer in trainers for phase in trainer.phase_seconds
    }  # one phase each
    names = np.array(run.class_names, dtype=object)
    n = len(data)
    cleaned_frame = pd.DataFrame(
        {
            "sample_id": run.report["sample_id"].to_numpy(),
            "path": run.report["path"].to_numpy(),
            "given_label": names[given.numpy()],
            "cleaned_label": names[cleaned],
            "changed": cleaned != given.numpy(),
            "confidence": confidence_source[np.arange(n), cleaned].astype(np.float64),
            "in_training": in_training,
        }
    )
    seconds = {"load_and_decode": prepared - started}
    for trainer in trainers:
        seconds.update(trainer.phase_seconds)
    test_metrics = None
    if test_store is not None:
        probs = final.predict(images=test_inputs).numpy()
        truth = test_store.table.samples["given_label"].to_numpy()
        test_metrics = {
            "source": str(test_store.table.source),
            "num_skipped": int(len(test_store.table.skipped)),
            **classification_metrics(probs.argmax(axis=1), truth, run.class_names),
        }
    seconds["total"] = time.perf_counter() - started
    return RetrainResult(
        run=run,
        store=store,
        config=config,
        trainer=final,
        cleaned=cleaned_frame,
        curves=curves,
        seconds=seconds,
        test=test_metrics,
        train_settings=train,
    )


def _weighted_ce(weights: torch.Tensor):
    """Class-weighted CE on the samples whose mask entry is 1 (context: ``(N,)`` float mask)."""

    def loss(logits, labels, index, mask):
        per_sample = torch.nn.functional.cross_entropy(logits, labels, reduction="none")
        return masked_mean(per_sample, weights.to(logits.device)[labels] * mask[index])

    return loss


def _soft_ce(targets: torch.Tensor, weights: torch.Tensor):
    """``-sum_k t_k log p_k`` weighted by the class of ``argmax t`` (context: ``(N, K)`` targets)."""

    def loss(logits, labels, index, soft):
        per_sample = -(soft[index] * torch.log_softmax(logits, dim=1)).sum(dim=1)
        return masked_mean(per_sample, weights.to(logits.device)[labels])

    return loss


def _forward(transition: torch.Tensor):
    def loss(logits, labels, index, _):
        per_sample = forward_corrected_loss(logits, labels, transition.to(logits.device))
        return per_sample.mean(), torch.tensor(len(index))

    return loss


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
        with atomic_path(out / "cleaned_labels.parquet") as tmp:
            result.cleaned.to_parquet(tmp, index=False)
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
