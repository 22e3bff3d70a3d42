"""``labelaudit retrain``: a model trained on the labels a scan cleaned."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from ..reports import json_text
from ._common import CacheDirOpt, JsonOpt, OverwriteOpt, QuietOpt, WorkersOpt, progress_bars, stdout


def retrain_command(
    run_dir: Annotated[
        Path,
        typer.Argument(
            help="The run directory a scan wrote (its --out).", show_default=False, readable=False
        ),
    ],
    out: Annotated[
        Optional[str],
        typer.Option(
            "--out",
            "-o",
            metavar="DIR",
            help="New run directory [default: <run dir>-retrain-<mode> beside it].",
        ),
    ] = None,
    mode: Annotated[
        Optional[str],
        typer.Option(
            "--mode",
            help="pseudo: network on kept samples relabels the flagged ones, a fresh network learns the soft "
            "labels; drop: kept samples only; forward: every label with forward loss correction by the "
            "audit's T. [default: pseudo; with --labels: labels, one network on the file's labels]",
        ),
    ] = None,
    labels: Annotated[
        Optional[Path],
        typer.Option(
            "--labels",
            readable=False,
            help="Train one network on the labels of this parquet/CSV (sample_id, label: the cleaned.parquet "
            "of labelaudit apply) instead of the scan's flags; samples it does not list are not trained "
            "on. Not with --mode.",
        ),
    ] = None,
    relabel: Annotated[
        str,
        typer.Option(
            "--relabel", help="pseudo only: give the soft label to the flagged samples, or to all samples."
        ),
    ] = "flagged",
    epochs: Annotated[
        int, typer.Option("--epochs", min=1, help="Epochs per network (pseudo trains two).")
    ] = 30,
    lr: Annotated[
        float,
        typer.Option("--lr", min=1e-6, help="Learning rate, divided by 10 at 40% and 80% of the epochs."),
    ] = 0.1,
    test: Annotated[
        Optional[Path],
        typer.Option(
            "--test",
            help="Held-out labelled folder or manifest: report test accuracy, per class and the confusion "
            "matrix.",
            readable=False,
        ),
    ] = None,
    test_path_column: Annotated[
        Optional[str], typer.Option("--test-path-column", help="Path column of a --test manifest.")
    ] = None,
    test_label_column: Annotated[
        Optional[str], typer.Option("--test-label-column", help="Label column of a --test manifest.")
    ] = None,
    seed: Annotated[
        Optional[int], typer.Option("--seed", min=0, max=2**63 - 1, help="[default: the scan's seed]")
    ] = None,
    device: Annotated[
        Optional[str], typer.Option("--device", help="auto, cpu or cuda [default: the scan's setting].")
    ] = None,
    threads: Annotated[
        Optional[int], typer.Option("--threads", min=1, help="CPU threads [default: the scan's setting].")
    ] = None,
    weights: Annotated[
        Optional[str],
        typer.Option(
            "--weights",
            metavar="FILE",
            help="Head-mode scans: the backbone's weights file, when it moved since the scan (it must hold "
            "the same weights).",
        ),
    ] = None,
    cache_dir: CacheDirOpt = None,
    workers: WorkersOpt = None,
    overwrite: OverwriteOpt = False,
    json_output: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Train a model on the cleaned labels of a scan (pseudo-labelling, NLNL paper section 3.5).

    Writes model.pt, cleaned_labels.csv/.parquet, summary.json (training curves; test accuracy
    with --test) and config.json into a new run directory. The network is the scan's.

    With --labels (e.g. the reviewed labels of labelaudit apply), one network learns exactly the
    labels in that file; the scan's flags and suggestions are not used.

    Example: labelaudit retrain runs/audit1 --test ./test-images
    """
    from ..pipeline.retrain import (
        RetrainConfig,
        default_retrain_dir,
        retrain,
        retrain_inputs,
        summary,
        write_retrain,
    )
    from ..runs.directory import RunDirectory
    from ..runs.scan_run import load_run

    mode = mode if mode is not None else "labels" if labels is not None else "pseudo"
    config = RetrainConfig(
        mode=mode,
        relabel=relabel,
        epochs=epochs,
        lr=lr,
        seed=seed,
        device=device,
        threads=threads,
        labels=None if labels is None else str(labels),
    ).validate()
    run = load_run(run_dir)
    # Checked, locked and created before training: a bad --out costs nothing.
    with RunDirectory(
        out if out is not None else default_retrain_dir(run_dir, mode),
        "retrain",
        inputs=retrain_inputs(run, test=test, cache_dir=cache_dir, labels=labels),
        overwrite=overwrite,
    ) as output:
        with progress_bars(not (quiet or json_output)) as progress:
            result = retrain(
                run,
                config,
                test=test,
                test_path_column=test_path_column,
                test_label_column=test_label_column,
                cache_dir=cache_dir,
                workers=workers,
                progress=progress,
                weights=weights,
            )
        written = write_retrain(result, output)
    if json_output:
        typer.echo(json_text({"run_dir": str(written), **summary(result)}))
        return
    cleaned = result.cleaned
    stdout.print(
        f"Retrained ({result.config.mode}) on {len(cleaned)} images in {result.seconds['total']:.0f} s: "
        f"{int(cleaned['in_training'].sum())} used, {int(cleaned['changed'].sum())} with a changed label."
    )
    if result.test is not None:
        stdout.print(
            f"Test accuracy on {result.test['num_samples']} images: [bold]{result.test['accuracy']:.2%}[/]"
        )
        print_class_table(result.test)
    stdout.print(f"Run directory: {written}")


def print_class_table(metrics: dict) -> None:
    """Per-class accuracy and each class's most frequent wrong prediction (the full confusion
    matrix is in the JSON output: it does not fit a terminal for many classes)."""
    names = metrics["class_names"]
    table = Table(title="Per class", title_justify="left")
    table.add_column("class")
    table.add_column("images", justify="right")
    table.add_column("accuracy", justify="right")
    table.add_column("most often mistaken for", justify="left")
    for i, name in enumerate(names):
        row = metrics["per_class"][name]
        if not row["samples"]:
            continue
        acc = f"{row['accuracy']:.1%}"
        wrong = [(count, j) for j, count in enumerate(metrics["confusion_matrix"][i]) if j != i and count]
        mistaken = f"{escape(names[max(wrong)[1]])} ({max(wrong)[0]})" if wrong else "-"
        table.add_row(escape(name), str(row["samples"]), acc, mistaken)
    stdout.print(table)
