"""``labelaudit retrain``: a model trained on the labels a scan cleaned."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..reports import json_text
from .console import print_class_table, progress_bars, stdout
from .options import (
    SEED_MAX,
    CacheDirOpt,
    JsonOpt,
    OverwriteOpt,
    QuietOpt,
    RunDirArg,
    WorkersOpt,
    backbone_weights_option,
    out_option,
)

RetrainOutOpt = Annotated[
    Optional[str], out_option("New run directory [default: <run dir>-retrain-<mode> beside it].")
]
ModeOpt = Annotated[
    Optional[str],
    typer.Option(
        "--mode",
        help="pseudo: network on kept samples relabels the flagged ones, a fresh network learns the soft "
        "labels; drop: kept samples only; forward: every label with forward loss correction by the "
        "audit's T. [default: pseudo; with --labels: labels, one network on the file's labels]",
    ),
]
LabelsOpt = Annotated[
    Optional[Path],
    typer.Option(
        "--labels",
        readable=False,
        help="Train one network on the labels of this parquet/CSV (sample_id, label: the cleaned.parquet "
        "of labelaudit apply) instead of the scan's flags; samples it does not list are not trained "
        "on. Not with --mode.",
    ),
]
RelabelOpt = Annotated[
    str,
    typer.Option(
        "--relabel", help="pseudo only: give the soft label to the flagged samples, or to all samples."
    ),
]
EpochsOpt = Annotated[int, typer.Option("--epochs", min=1, help="Epochs per network (pseudo trains two).")]
LearningRateOpt = Annotated[
    float, typer.Option("--lr", min=1e-6, help="Learning rate, divided by 10 at 40% and 80% of the epochs.")
]
TestOpt = Annotated[
    Optional[Path],
    typer.Option(
        "--test",
        help="Held-out labelled folder or manifest: report test accuracy, per class and the confusion "
        "matrix.",
        readable=False,
    ),
]
TestPathColumnOpt = Annotated[
    Optional[str], typer.Option("--test-path-column", help="Path column of a --test manifest.")
]
TestLabelColumnOpt = Annotated[
    Optional[str], typer.Option("--test-label-column", help="Label column of a --test manifest.")
]
# Settings that default to the scan's.
ScanSeedOpt = Annotated[
    Optional[int], typer.Option("--seed", min=0, max=SEED_MAX, help="[default: the scan's seed]")
]
ScanDeviceOpt = Annotated[
    Optional[str], typer.Option("--device", help="auto, cpu or cuda [default: the scan's setting].")
]
ScanThreadsOpt = Annotated[
    Optional[int], typer.Option("--threads", min=1, help="CPU threads [default: the scan's setting].")
]


def retrain_command(
    run_dir: RunDirArg,
    out: RetrainOutOpt = None,
    mode: ModeOpt = None,
    labels: LabelsOpt = None,
    relabel: RelabelOpt = "flagged",
    epochs: EpochsOpt = 30,
    lr: LearningRateOpt = 0.1,
    test: TestOpt = None,
    test_path_column: TestPathColumnOpt = None,
    test_label_column: TestLabelColumnOpt = None,
    seed: ScanSeedOpt = None,
    device: ScanDeviceOpt = None,
    threads: ScanThreadsOpt = None,
    weights: Annotated[Optional[str], backbone_weights_option("scans")] = None,
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
    else:
        _render(result, written)


def _render(result, written: Path) -> None:
    """What was retrained on what, the test accuracy with --test, and where the run is."""
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
