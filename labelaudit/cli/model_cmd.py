"""``labelaudit predict`` and ``labelaudit evaluate``: use a saved model.pt."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from ..reports import json_text
from .console import print_class_table, progress_bars, stdout
from .options import (
    CacheDirOpt,
    IdColumnOpt,
    JsonOpt,
    LabelColumnOpt,
    LabelNamesOpt,
    ModelArg,
    PathColumnOpt,
    QuietOpt,
    WorkersOpt,
    backbone_weights_option,
    out_option,
    path_argument,
)

ModelWeightsOpt = Annotated[Optional[str], backbone_weights_option("models")]


def predict_command(
    model: ModelArg,
    source: Annotated[
        Path,
        path_argument(
            "Image folder (searched recursively; subfolders need not be classes), a .parquet/.csv "
            "manifest with a path column, or a Hugging Face dataset (.parquet/.arrow, save_to_disk folder)."
        ),
    ],
    out: Annotated[
        Optional[str],
        out_option(
            "Predictions file, .csv or .parquet [default: ./predictions-<source name>.csv].", metavar="FILE"
        ),
    ] = None,
    path_column: PathColumnOpt = None,
    id_column: IdColumnOpt = None,
    cache_dir: CacheDirOpt = None,
    workers: WorkersOpt = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an existing predictions file at --out.")
    ] = False,
    weights: ModelWeightsOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Predict the class of new images: predicted_label, confidence and the soft label per image.

    Unreadable images are skipped and listed in <out>-skipped.csv.

    Example: labelaudit predict runs/audit1-retrain-pseudo ./new-images --out predictions.csv
    """
    from ..pipeline.predict import predict, write_predictions

    out = (
        out if out is not None else f"predictions-{Path(source).expanduser().resolve().stem or 'images'}.csv"
    )
    with progress_bars(not quiet) as progress:
        result = predict(
            model,
            source,
            path_column=path_column,
            id_column=id_column,
            cache_dir=cache_dir,
            workers=workers,
            progress=progress,
            out_file=out,
            overwrite=overwrite,
            weights=weights,
        )
    skipped_file = write_predictions(result, out, overwrite=overwrite)
    skipped_note = (
        f" {len(result.skipped)} files skipped (listed in {escape(str(skipped_file))})."
        if skipped_file
        else ""
    )
    counts = result.frame["predicted_label"].value_counts()
    stdout.print(
        f"Predicted {len(result.frame)} images.{skipped_note} Most predicted: "
        + ", ".join(f"{escape(str(k))} {v}" for k, v in counts.head(5).items())
    )
    stdout.print(f"Predictions: {out}")


def evaluate_command(
    model: ModelArg,
    source: Annotated[
        Path,
        path_argument(
            "Labelled image folder (one subfolder per class), .parquet/.csv manifest or Hugging Face "
            "dataset; labels must be "
            "classes of the model."
        ),
    ],
    path_column: PathColumnOpt = None,
    label_column: LabelColumnOpt = None,
    id_column: IdColumnOpt = None,
    label_names: LabelNamesOpt = None,
    cache_dir: CacheDirOpt = None,
    workers: WorkersOpt = None,
    json_output: JsonOpt = False,
    weights: ModelWeightsOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Accuracy of a model on labelled images: overall, per class, and the confusion matrix.

    Example: labelaudit evaluate runs/audit1-retrain-pseudo ./test-images
    """
    from ..pipeline.predict import evaluate

    with progress_bars(not (quiet or json_output)) as progress:
        metrics = evaluate(
            model,
            source,
            path_column=path_column,
            label_column=label_column,
            id_column=id_column,
            label_names=label_names,
            cache_dir=cache_dir,
            workers=workers,
            progress=progress,
            weights=weights,
        )
    if json_output:
        typer.echo(json_text(metrics))
        return
    stdout.print(
        f"Accuracy on {metrics['num_samples']} images: [bold]{metrics['accuracy']:.2%}[/]"
        + (f" ({metrics['num_skipped']} files skipped)" if metrics["num_skipped"] else "")
    )
    print_class_table(metrics)
