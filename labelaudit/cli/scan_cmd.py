"""``labelaudit scan``: train a noise-robust network and write the per-sample audit."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Optional

import numpy as np
import typer
from rich.markup import escape
from rich.table import Table

from ..audit.calibration import estimated_rows
from ..data.sources import FEW_SAMPLES_THRESHOLD, SampleTable, load_source
from ..reports import json_text
from ..train.config import TrainConfig
from .console import progress_bars, stdout
from .options import (
    CacheDirOpt,
    IdColumnOpt,
    ImageSizeOpt,
    JsonOpt,
    LabelColumnOpt,
    LabelNamesOpt,
    OverwriteOpt,
    PathColumnOpt,
    QuietOpt,
    RenamedEpochsOpt,
    SeedOpt,
    SourceArg,
    WorkersOpt,
    refuse_renamed_epochs,
)
from .scan_options import (
    BackboneOpt,
    BatchSizeOpt,
    BetaOpt,
    BudgetOpt,
    ComplementaryOpt,
    CropPaddingOpt,
    DepthOpt,
    DeviceOpt,
    DuplicateThresholdOpt,
    EmbeddingsOpt,
    FlaggerOpt,
    HeadOpt,
    MaxMemoryOpt,
    MethodOpt,
    NoFlipOpt,
    PrecisionOpt,
    ProbsOpt,
    ScanOutOpt,
    SimilarityOpt,
    ThreadsOpt,
    ThresholdOpt,
    TrainModeOpt,
    TruthOpt,
    VariantOpt,
    WeightsOpt,
    WidthOpt,
)

if TYPE_CHECKING:  # for the annotations only: importing pipeline.scan loads torch
    from ..pipeline.scan import ScanConfig, ScanResult

_SHOW_FLAGGED = 10
#: Classes named in the warning about classes with few images; a 2,000-class dataset would
#: otherwise print every class on one line.
_FEW_SAMPLE_CLASSES_NAMED = 8


def scan_command(
    source: SourceArg,
    out: ScanOutOpt = None,
    truth: TruthOpt = None,
    method: MethodOpt = "auto",
    budget: BudgetOpt = 1.0,
    epochs: RenamedEpochsOpt = None,
    complementary: ComplementaryOpt = "all",
    variant: VariantOpt = "full",
    beta: BetaOpt = None,
    flagger: FlaggerOpt = "confident-learning",
    threshold: ThresholdOpt = None,
    backbone: BackboneOpt = "auto",
    weights: WeightsOpt = None,
    train: TrainModeOpt = "auto",
    head: HeadOpt = "linear",
    embeddings: EmbeddingsOpt = None,
    probs: ProbsOpt = None,
    depth: DepthOpt = 8,
    width: WidthOpt = 16,
    batch_size: BatchSizeOpt = 128,
    no_flip: NoFlipOpt = False,
    crop_padding: CropPaddingOpt = 2,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "auto",
    seed: SeedOpt = 0,
    threads: ThreadsOpt = None,
    max_memory: MaxMemoryOpt = "auto",
    similarity: SimilarityOpt = None,
    duplicate_threshold: DuplicateThresholdOpt = None,
    image_size: ImageSizeOpt = None,
    path_column: PathColumnOpt = None,
    label_column: LabelColumnOpt = None,
    id_column: IdColumnOpt = None,
    label_names: LabelNamesOpt = None,
    cache_dir: CacheDirOpt = None,
    workers: WorkersOpt = None,
    overwrite: OverwriteOpt = False,
    json_output: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Audit the labels of a dataset: flag suspect labels, suggest fixes, estimate the noise.

    Writes report.parquet/.csv, flagged.csv (worst first), summary.json, transition_matrix.csv
    (and _anchor), skipped.csv, config.json, model.pt and plots/*.png into the run directory,
    all at once at the end (a new or empty --out, or an earlier scan's with --overwrite).

    Example: labelaudit scan ./images --out runs/audit1
    """
    # Every option by its name, for the helpers below that each read a group of them.
    options = SimpleNamespace(**locals())
    refuse_renamed_epochs("scan", epochs)
    config = _scan_config(options)
    shown = not (quiet or json_output) and os.environ.get("RANK", "0") == "0"  # under torchrun: rank 0 only
    with progress_bars(shown) as progress:  # a million-row manifest's file check takes seconds
        table = _load_source(options, progress)
    written = _scan_in_this_process(table, config, options)
    if written is None:  # under torchrun, not rank 0: this process trained its share
        return
    result, run_dir = written
    if json_output:
        from ..pipeline.scan import summary

        typer.echo(json_text({"run_dir": str(run_dir), **summary(result)}))
    else:
        _render(result, run_dir)


def _scan_config(options: SimpleNamespace) -> ScanConfig:
    """The :class:`~labelaudit.pipeline.scan.ScanConfig` the options ask for, validated; options
    that contradict each other (--train, --embeddings, --probs) fail here, before any data is read."""
    # Imported here so that `labelaudit --help` and `inspect` start without loading torch.
    from ..pipeline.scan import ScanConfig
    from ..train.inputs import resolve_train_mode
    from ..train.methods.baselines import BaselineConfig
    from ..train.methods.nlnl import NLNLConfig
    from ..train.methods.pmnar import PMNARConfig

    complementary = options.complementary
    config = ScanConfig(
        method=options.method,
        image_size=options.image_size,
        epochs_scale=options.budget,
        threshold=options.threshold,
        similarity=options.similarity,
        duplicate_threshold=options.duplicate_threshold,
        train=_train_config(options),
        nlnl=NLNLConfig(
            complementary=complementary if complementary == "all" else _positive_int(complementary)
        ),
        pmnar=PMNARConfig(variant=options.variant, beta=options.beta),
        baseline=BaselineConfig(flagger=options.flagger),
    )
    config.validate()
    resolve_train_mode(config.train, embeddings_file=options.embeddings, probs_file=options.probs)
    return config


def _train_config(options: SimpleNamespace) -> TrainConfig:
    """The network and training options as a :class:`~labelaudit.train.config.TrainConfig`."""
    from ..train.compute import parse_memory_size

    return TrainConfig(
        backbone=options.backbone,
        depth=options.depth,
        width=options.width,
        weights=options.weights,
        batch_size=options.batch_size,
        flip=not options.no_flip,
        crop_padding=options.crop_padding,
        device=options.device,
        seed=options.seed,
        train=options.train,
        head=options.head,
        precision=options.precision,
        max_memory=parse_memory_size(options.max_memory),
        threads=options.threads,
    )


def _positive_int(text: str) -> int:
    if text.isdigit() and int(text) >= 1:
        return int(text)
    raise typer.BadParameter(
        f"must be 'all' or a positive integer; got {text!r}", param_hint="--complementary"
    )


def _load_source(options: SimpleNamespace, progress) -> SampleTable:
    """The dataset the source argument and the manifest column options name."""
    return load_source(
        options.source,
        path_column=options.path_column,
        label_column=options.label_column,
        id_column=options.id_column,
        label_names=options.label_names,
        cache_dir=options.cache_dir,
        progress=progress,
    )


def _scan_in_this_process(
    table: SampleTable, config: ScanConfig, options: SimpleNamespace
) -> Optional[tuple[ScanResult, Path]]:
    """Scan ``table`` and return ``(result, run directory)``. Under torchrun (several processes)
    rank 0 does that, and the other processes train their share and return None."""
    from ..pipeline.scan import scan
    from ..train import distributed

    distributed.setup(options.device)
    try:
        if not distributed.is_primary():
            scan(table, config, **_scan_inputs(options))
            return None
        _warn_few_samples(table)
        return _scan_into_run_directory(table, config, options)
    finally:
        distributed.shutdown()


def _scan_inputs(options: SimpleNamespace) -> dict:
    """The keyword arguments of :func:`~labelaudit.pipeline.scan.scan` that the options give."""
    return {
        "cache_dir": options.cache_dir,
        "workers": options.workers,
        "truth": options.truth,
        "embeddings": options.embeddings,
        "probs": options.probs,
    }


def _scan_into_run_directory(
    table: SampleTable, config: ScanConfig, options: SimpleNamespace
) -> tuple[ScanResult, Path]:
    """Scan with progress bars and write the run directory whole; return ``(result, its path)``."""
    from ..pipeline.scan import default_run_dir, scan, scan_inputs, write_run
    from ..runs.directory import RunDirectory

    out = options.out if options.out is not None else default_run_dir(options.source)
    inputs = scan_inputs(
        table,
        truth=options.truth,
        cache_dir=options.cache_dir,
        weights=options.weights,
        files=(options.embeddings, options.probs),
    )
    # Checked, locked and created before decoding and training: a bad --out costs nothing.
    with RunDirectory(out, "scan", inputs=inputs, overwrite=options.overwrite) as output:
        with progress_bars(not (options.quiet or options.json_output)) as progress:
            result = scan(table, config, progress=progress, **_scan_inputs(options))
        return result, write_run(result, output)


def _warn_few_samples(table: SampleTable) -> None:
    """One warning line on stderr naming the classes too small to audit reliably."""
    few = table.few_sample_classes()
    if few:
        counts = table.class_counts()
        shown = _FEW_SAMPLE_CLASSES_NAMED
        listed = ", ".join(f"{name!r} ({int(counts[name])})" for name in few[:shown])
        if len(few) > shown:
            listed = f"{len(few)} classes ({listed} and {len(few) - shown} more)"
        else:
            listed = f"class{'es' if len(few) > 1 else ''} {listed}"
        print(
            f"labelaudit: warning: fewer than {FEW_SAMPLES_THRESHOLD} images in {listed}; their flags and "
            "noise "
            "rates rest on too few samples to trust",
            file=sys.stderr,
        )


def _how(result: ScanResult) -> str:
    """What the scan trained, in a few words: 'nlnl', 'nlnl on efficientnet_lite0 embeddings (cached)'."""
    inputs = result.inputs
    if inputs["kind"] == "probs-file":
        return "the given probabilities (no training)"
    if inputs["kind"] == "embeddings-file":
        return f"{result.config.method} on the given embeddings"
    if inputs["kind"] == "embeddings":
        how = "cached" if inputs.get("reused") else f"{inputs.get('images_per_second') or 0:.0f} images/s"
        return f"{result.config.method} on {inputs['backbone']} embeddings ({how})"
    return result.config.method


def _render(result: ScanResult, run_dir: Path) -> None:
    """The scan's summary on stdout: what was flagged, the most suspect labels, the per-class
    estimates, near-duplicates and outliers, the scores against a truth, and where the run is."""
    report = result.audit.report
    flagged = report[report["suspected_noisy"]].sort_values("rank")
    _print_headline(result, flagged)
    if len(flagged):
        stdout.print(_suspects_table(flagged))
    stdout.print(_class_estimates_table(result))
    if result.similarity is not None:
        issues = result.similarity
        stdout.print(
            f"Near-duplicates: [bold]{issues.n_duplicate_groups}[/] groups, "
            f"[bold]{issues.n_duplicate_conflicts}[/] "
            f"with more than one label; outliers (images unlike any class): [bold]{issues.n_outliers}[/], "
            "left out of the noise rate and T. All listed in flagged.csv (column reason)."
        )
    elif result.similarity_skipped:
        stdout.print(f"Near-duplicates and outliers not searched: {result.similarity_skipped}.")
    if result.truth:
        stdout.print(_truth_line(result.truth))
    stdout.print(f"Run directory: {run_dir}")


def _print_headline(result: ScanResult, flagged) -> None:
    """What was scanned with what, how much was flagged, and the noise rate it implies."""
    audit, table = result.audit, result.table
    stdout.print(
        f"Scanned {len(table)} images in {len(table.class_names)} classes with {_how(result)} "
        f"in {result.seconds['total']:.0f} s ({len(table.skipped)} files skipped)."
    )
    low, high = result.noise_rate_interval
    ambiguous = int(audit.report["is_ambiguous"].sum())
    stdout.print(
        f"Flagged [bold]{len(flagged)}[/] labels as suspect"
        + (f" and [bold]{ambiguous}[/] as ambiguous between two classes" if ambiguous else "")
        + f": estimated noise rate [bold]{audit.noise_rate:.1%}[/] "
        f"(the expected share of wrong labels; 95% interval {low:.1%}-{high:.1%})."
    )


def _suspects_table(flagged) -> Table:
    """The most suspect flagged labels, worst first."""
    top = Table(title=f"Most suspect labels (of {len(flagged)}; all in flagged.csv)", title_justify="left")
    for col in ("rank", "sample_id", "given", "P(wrong)", "suggested", "P(suggested)"):
        top.add_column(
            col,
            justify="right" if col in ("rank", "P(wrong)", "P(suggested)") else "left",
            overflow="fold",
        )
    for row in flagged.head(_SHOW_FLAGGED).itertuples():
        top.add_row(
            str(row.rank),
            escape(row.sample_id),
            escape(row.given_label),
            f"{row.p_label_wrong:.2f}",
            escape(row.suggested_label),
            f"{row.suggested_confidence:.2f}",
        )
    return top


def _class_estimates_table(result: ScanResult) -> Table:
    """Per class: its images, the expected share of wrong labels, and the estimated chance a label
    stays itself."""
    audit, names = result.audit, result.table.class_names
    report = audit.report
    rates = Table(title="Per-class estimates", title_justify="left")
    rates.add_column("class")
    rates.add_column("images", justify="right")
    rates.add_column("est. wrong", justify="right")
    rates.add_column("T\\[i,i] (kept as itself)", justify="right")
    # A class with no probability mass has no row of T to estimate: expected_transition_matrix
    # fills it with the identity, shown here as "-", not 1.00.
    estimated = estimated_rows(audit.posterior)
    for i, name in enumerate(names):
        share = audit.per_class_noise_rates[i]
        kept = f"{audit.transition_matrix[i, i]:.2f}" if estimated[i] else "-"
        rates.add_row(
            escape(name),
            str(int((report["given_label"] == name).sum())),
            "-" if np.isnan(share) else f"{share:.1%}",
            kept,
        )
    if not estimated.all():
        rates.caption = "T\\[i,i] -: no image is likely to belong to this class"
        rates.caption_justify = "left"
    return rates


def _truth_line(t: dict) -> str:
    """The audit scored against the true labels (scan --truth)."""
    return (
        f"Against the truth: precision [bold]{t['precision']:.3f}[/], recall [bold]{t['recall']:.3f}[/], "
        f"F1 [bold]{t['f1']:.3f}[/] (with the ambiguous ones {t['f1_with_ambiguous']:.3f})"
        + (
            f", average precision of P(wrong) {t['average_precision']:.3f}"
            if t.get("average_precision") is not None  # undefined when no label is wrong
            else ""
        )
        + f"; noise rate true {t['true_noise_rate']:.1%} vs estimated {t['estimated_noise_rate']:.1%} "
        f"(error {t['noise_rate_error'] * 100:.1f} points); "
        f"calibration error of P(wrong) {t['ece_p_label_wrong']:.3f}"
        + (
            f", of P(suggested) {t['ece_suggested_confidence']:.3f}"
            if t.get("ece_suggested_confidence") is not None
            else ""
        )
        + f"; T mean absolute error {t['transition_matrix_mae']:.4f}"
        + (
            f"; suggested label right on {t['relabel_accuracy_on_noisy_flagged']:.1%} of truly wrong "
            "flagged labels"
            if t["relabel_accuracy_on_noisy_flagged"] is not None
            else ""
        )
        + "."
    )
