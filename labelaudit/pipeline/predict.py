"""``predict`` and ``evaluate``: apply a saved ``model.pt`` to images.

Images go through the same decode cache as a scan, at the model's image size and channel count.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from ..audit.metrics import classification_metrics
from ..data.images import ProgressCallback, load_images
from ..data.sources import SampleTable, load_source, load_unlabeled
from ..errors import OutputError
from ..reports import write_csv, write_parquet, write_skipped_csv
from ..runs.directory import input_paths, output_kind, prepare_output_file
from ..train.checkpoint import LoadedModel, load_model


@dataclass
class Predictions:
    """Per-image predictions and the files that could not be used."""

    frame: pd.DataFrame  # sample_id, path, predicted_label, confidence, p_<class>...
    skipped: pd.DataFrame  # sample_id, path, reason, detail
    model: LoadedModel
    table: SampleTable  # the usable images


def _as_model(model: LoadedModel | str | os.PathLike) -> LoadedModel:
    return model if isinstance(model, LoadedModel) else load_model(model)


def _decode_and_predict(model: LoadedModel, table: SampleTable, cache_dir, workers, progress):
    """``(store, probs)``: ``table``'s images decoded at the model's size and channels (the scan's
    cache), and the model's class probabilities ``(N, K)`` for them."""
    store = load_images(
        table,
        image_size=model.image_size_for_cache,
        channels=model.image_channels,
        cache_dir=cache_dir,
        workers=workers,
        progress=progress,
        require_all_classes=False,
    )
    return store, model.predict_store(store, cache_dir=cache_dir, progress=progress)


def predict(
    model: LoadedModel | str | os.PathLike,
    source: str | os.PathLike,
    *,
    path_column: str | None = None,
    id_column: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    workers: int | None = None,
    progress: ProgressCallback | None = None,
    out_file: str | os.PathLike | None = None,
    overwrite: bool = False,
    weights: str | None = None,
) -> Predictions:
    """Predict the class of every image under ``source`` (a folder, searched recursively, or a
    manifest's path column; labels, if any, are ignored).

    Parameters
    ----------
    model : LoadedModel or path-like
        A loaded model, a ``model.pt`` file or a run directory holding one.
    source : path-like
    path_column, id_column : str, optional
        Manifest columns.
    cache_dir, workers, progress :
        As in :func:`labelaudit.load_images`.
    out_file : path-like, optional
        Where :func:`write_predictions` will write; checked before decoding so a bad choice fails
        fast.
    overwrite : bool, default=False
        With ``out_file``: whether an existing file there may be replaced.
    weights : str, optional
        Head models only: where the backbone's weights file is now (see
        :meth:`LoadedModel.use_backbone_weights`).
    """
    model = _as_model(model).use_backbone_weights(weights).check_takes_images()  # before decoding anything
    table = load_unlabeled(source, path_column=path_column, id_column=id_column, cache_dir=cache_dir)
    if out_file is not None:
        check_predictions_file(out_file, table, model, overwrite=overwrite, cache_dir=cache_dir)
    store, probs = _decode_and_predict(model, table, cache_dir, workers, progress)
    names = np.array(model.class_names, dtype=object)
    best = probs.argmax(axis=1)
    frame = pd.DataFrame(
        {
            "sample_id": store.table.samples["sample_id"].to_numpy(),
            "path": store.table.samples["path"].to_numpy(),
            "predicted_label": names[best],
            "confidence": probs[np.arange(len(best)), best].astype(np.float64),
        }
    )
    soft = pd.DataFrame(probs.astype(np.float32), columns=[f"p_{name}" for name in model.class_names])
    frame = pd.concat([frame, soft], axis=1)  # one concat: no per-column inserts for many classes
    return Predictions(frame=frame, skipped=store.table.skipped, model=model, table=store.table)


def check_predictions_file(
    path: str | os.PathLike,
    table: SampleTable,
    model: LoadedModel,
    *,
    overwrite: bool,
    cache_dir: str | os.PathLike | None = None,
) -> Path:
    """Refuse a predictions file that is an input (manifest, model), lies in an image folder, the
    image cache or a labelaudit output folder (a run directory), is a folder, exists without
    ``overwrite``, or cannot be written; the same for its ``-skipped.csv``."""
    from ..data.images import cache_root

    inputs = input_paths(table, [model.path, cache_root(cache_dir)])
    out = prepare_output_file(path, inputs, overwrite=overwrite, suffixes=(".csv", ".parquet"))
    owner = output_kind(out.parent)
    if owner is not None:
        raise OutputError(
            f"--out {str(path)!r} is inside the output folder of labelaudit {owner} {str(out.parent)!r}, "
            "whose files belong to that run; write the predictions elsewhere"
        )
    prepare_output_file(_skipped_file(out), inputs, overwrite=overwrite, option="--out (its -skipped.csv)")
    return out


def _skipped_file(path: Path) -> Path:
    return path.with_name(path.stem + "-skipped.csv")


def write_predictions(
    predictions: Predictions, path: str | os.PathLike, *, overwrite: bool = False
) -> Path | None:
    """Write the predictions (``.csv`` or ``.parquet``) atomically, and the skipped files, if any,
    to ``<stem>-skipped.csv`` beside them. Returns the skipped-files path or None.

    An existing predictions file is replaced only with ``overwrite``; inputs never are.
    """
    path = check_predictions_file(path, predictions.table, predictions.model, overwrite=overwrite)
    if path.suffix.lower() == ".parquet":
        write_parquet(path, predictions.frame)
    else:
        write_csv(path, predictions.frame)
    skipped_file = _skipped_file(path)
    if not len(predictions.skipped):
        if skipped_file.is_file():  # from an earlier run into the same file: it would describe other images
            skipped_file.unlink()
        return None
    write_skipped_csv(skipped_file, predictions.skipped)
    return skipped_file


def evaluate(
    model: LoadedModel | str | os.PathLike,
    source: str | os.PathLike,
    *,
    path_column: str | None = None,
    label_column: str | None = None,
    id_column: str | None = None,
    label_names: Sequence[str] | str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    workers: int | None = None,
    progress: ProgressCallback | None = None,
    weights: str | None = None,
) -> dict:
    """Accuracy, per-class accuracy and confusion matrix of ``model`` on a labelled ``source``.

    The source's labels must be classes of the model; it may cover only some of them. ``weights``
    as in :func:`predict`; ``label_names`` as in :func:`labelaudit.load_source`.
    """
    model = _as_model(model).use_backbone_weights(weights).check_takes_images()  # before decoding anything
    table = load_source(
        source,
        path_column=path_column,
        label_column=label_column,
        id_column=id_column,
        classes=model.class_names,
        require_all_classes=False,
        label_names=label_names,
        cache_dir=cache_dir,
    )
    store, probs = _decode_and_predict(model, table, cache_dir, workers, progress)
    truth = store.table.samples["given_label"].to_numpy()
    return {
        "model": str(model.path),
        "source": str(store.table.source),
        "num_skipped": int(len(store.table.skipped)),
        **classification_metrics(probs.argmax(axis=1), truth, model.class_names),
    }
