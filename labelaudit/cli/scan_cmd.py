"""``labelaudit scan``: train a noise-robust network and write the per-sample audit."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import numpy as np
import typer
from rich.markup import escape
from rich.table import Table

from ..errors import ConfigError
from ..reports import json_text
from ._common import (
    CacheDirOpt,
    IdColumnOpt,
    ImageSizeOpt,
    JsonOpt,
    LabelColumnOpt,
    OverwriteOpt,
    PathColumnOpt,
    QuietOpt,
    SourceArg,
    WorkersOpt,
    progress_bars,
    stdout,
)

_SHOW_FLAGGED = 10


def scan_command(
    source: SourceArg,
    out: Annotated[
        Optional[str],
        typer.Option(
            "--out", "-o", metavar="DIR", help="Run directory [default: ./labelaudit-runs/<source>-<time>]."
        ),
    ] = None,
    truth: Annotated[
        Optional[Path],
        typer.Option(
            "--truth",
            help="CSV/parquet with sample_id (or path) and true_label: adds precision/recall/F1 and estimate "
            "errors.",
            readable=False,
        ),
    ] = None,
    method: Annotated[
        str,
        typer.Option(
            "--method",
            help="Audit method: nlnl (negative learning), pmnar (positive + multi-negative, two networks; "
            "240 epochs, about ten times NLNL's time: 870 s against 91 s on the 5,000-image sample on 2 "
            "CPU cores, for F1 0.886 against 0.856; --budget 0.1 is the former 24-epoch schedule, "
            "docs/methods.md), or the baselines ce, gce, truncated-gce, cv-ce (5-fold cross-validated "
            "CE + confident learning); auto: nlnl when training on the images, truncated-gce for a head "
            "on embeddings (it measured best there).",
        ),
    ] = "auto",
    budget: Annotated[
        float,
        typer.Option(
            "--budget",
            help="Training budget as a multiple of the default schedule, in (0, 1000]: 1 = nlnl's "
            "NL/SelNL/SelPL 20/20/20 epochs, pmnar's 240, the baselines' 60; 0.5 = half as many epochs, "
            "2 = twice as many.",
        ),
    ] = 1.0,
    epochs: Annotated[Optional[str], typer.Option("--epochs", hidden=True, help="Renamed --budget.")] = None,
    complementary: Annotated[
        str,
        typer.Option(
            "--complementary",
            help="NL complementary labels per sample: 'all' (every class but the given one) or a number of "
            "random draws (1 = the paper).",
        ),
    ] = "all",
    variant: Annotated[
        str,
        typer.Option(
            "--variant",
            help="pmnar only: full (two networks + consistency), pm-ar (one network, adaptive reweighting) "
            "or pm (PM loss only).",
        ),
    ] = "full",
    beta: Annotated[
        Optional[float],
        typer.Option(
            "--beta",
            min=0.0,
            help="pmnar only: consistency weight [default: 1 up to 10 classes, 10/K above].",
        ),
    ] = None,
    flagger: Annotated[
        str,
        typer.Option(
            "--flagger", help="cv-ce and --probs: confident-learning, or cleanlab (needs the cleanlab extra)."
        ),
    ] = "confident-learning",
    threshold: Annotated[
        Optional[float],
        typer.Option(
            "--threshold",
            min=0.0,
            max=1.0,
            help="Flag samples whose confidence in their label is below this fixed value (the NLNL paper "
            "uses 0.5) [default: a boundary learned from the data, see docs/methods.md].",
        ),
    ] = None,
    backbone: Annotated[
        str,
        typer.Option(
            "--backbone",
            help="auto (cifar-resnet up to 64 px, resnet18 above), cifar-resnet, or a pretrained network: "
            "resnet18, resnet34, resnet50, efficientnet_b0, convnext_tiny, vit_b_16 (torchvision; with "
            "--weights) or efficientnet_lite0 (weights ship in the 'pretrained' extra). See "
            "docs/pretrained.md.",
        ),
    ] = "auto",
    weights: Annotated[
        Optional[str],
        typer.Option(
            "--weights",
            help="Weights of a torchvision --backbone: DEFAULT or a weight name (e.g. IMAGENET1K_V1; "
            "downloaded once into torch's cache) or a local state_dict file (.pth). Without --weights a "
            "torchvision backbone trains from scratch.",
        ),
    ] = None,
    train: Annotated[
        str,
        typer.Option(
            "--train",
            help="head: embed every image once with the frozen pretrained backbone (cached) and train a "
            "small head on the embeddings (fast on a CPU); full: train the whole network on the pixels "
            "(fine-tunes a pretrained backbone; the GPU path); auto: head for a pretrained backbone "
            "without a GPU, else full.",
        ),
    ] = "auto",
    head: Annotated[
        str,
        typer.Option("--head", help="Head mode: linear (a linear probe) or mlp (one hidden layer of 512)."),
    ] = "linear",
    embeddings: Annotated[
        Optional[Path],
        typer.Option(
            "--embeddings",
            metavar="FILE",
            help="Your own per-sample embeddings (.npy in sample order, or parquet/CSV keyed by sample_id): "
            "a head is trained on them; images are not decoded.",
            readable=False,
        ),
    ] = None,
    probs: Annotated[
        Optional[Path],
        typer.Option(
            "--probs",
            metavar="FILE",
            help="Out-of-sample predicted probabilities (cleanlab's pred_probs: .npy in sample order, or "
            "parquet/CSV with sample_id and one column per class): nothing is trained; flags by cv-ce's "
            "rule (--flagger) or --threshold. No model.pt is written.",
            readable=False,
        ),
    ] = None,
    depth: Annotated[int, typer.Option("--depth", help="cifar-resnet depth (6n+2).")] = 8,
    width: Annotated[int, typer.Option("--width", help="cifar-resnet base width.")] = 16,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1)] = 128,
    no_flip: Annotated[
        bool, typer.Option("--no-flip", help="No horizontal-flip augmentation (e.g. digits, text).")
    ] = False,
    crop_padding: Annotated[
        int, typer.Option("--crop-padding", min=0, help="Random-crop padding in pixels (0 = off).")
    ] = 2,
    device: Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")] = "auto",
    precision: Annotated[
        str,
        typer.Option(
            "--precision",
            help="Arithmetic of the network's forward and backward: auto (bfloat16 on a CPU that computes it "
            "in hardware, e.g. Intel AMX or AVX-512 BF16, float16 on CUDA, else float32), fp32 or bf16. "
            "Weights, losses and soft labels stay float32; on a CPU a head over embeddings always "
            "trains in float32.",
        ),
    ] = "auto",
    seed: Annotated[int, typer.Option("--seed", min=0, max=2**63 - 1)] = 0,
    threads: Annotated[
        Optional[int],
        typer.Option(
            "--threads",
            min=1,
            help="CPU threads the network computes with [default: torch's default (physical cores), capped "
            "by the CPUs this process may use (affinity, container quota); 1 for a head on embeddings]. "
            "Results depend on the count; runs that together need more threads than there are CPUs take "
            "turns (docs/benchmarks.md).",
        ),
    ] = None,
    max_memory: Annotated[
        str,
        typer.Option(
            "--max-memory",
            metavar="SIZE",
            help="Memory budget per process for the decoded images and per-sample state, e.g. 8GB or 512MB: "
            "images that do not fit what the state leaves stay in the cache file and are read batch by "
            "batch (same result, prefetched); per-sample state over a quarter of it is kept in float16. "
            "See docs/scale.md [default: auto = half of the machine's RAM, divided among the processes "
            "torchrun starts on it].",
        ),
    ] = "auto",
    similarity: Annotated[
        Optional[bool],
        typer.Option(
            "--similarity/--no-similarity",
            help="Search near-duplicates (the same picture twice, e.g. under two labels) and outliers "
            "(images of no class): report columns duplicate_of, duplicate_conflict, outlier_score, "
            "is_outlier and reason; see docs/methods.md [default: on up to 200,000 samples].",
        ),
    ] = None,
    duplicate_threshold: Annotated[
        Optional[float],
        typer.Option(
            "--duplicate-threshold",
            min=0.0,
            max=1.0,
            help="Pixel similarity (1 - aligned grey-level difference / 255) from which two images are "
            "near-duplicates [default: read from the data, summary.json "
            "similarity.duplicate_threshold].",
        ),
    ] = None,
    image_size: ImageSizeOpt = None,
    path_column: PathColumnOpt = None,
    label_column: LabelColumnOpt = None,
    id_column: IdColumnOpt = None,
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
    # Imported here so that `labelaudit --help` and `inspect` start without loading torch.
    from ..data.sources import load_source
    from ..pipeline.scan import ScanConfig, default_run_dir, scan, scan_inputs, summary, write_run
    from ..runs.directory import RunDirectory
    from ..train import distributed
    from ..train.compute import parse_memory_size
    from ..train.methods.baselines import BaselineConfig
    from ..train.methods.nlnl import NLNLConfig
    from ..train.methods.pmnar import PMNARConfig
    from ..train.trainer import TrainConfig

    if epochs is not None:
        raise ConfigError(
            f"scan --epochs was renamed --budget (a multiple of the default schedule, e.g. 0.5 = half "
            f"the epochs); got --epochs {epochs!r}: pass --budget {epochs} instead"
        )
    config = ScanConfig(
        method=method,
        image_size=image_size,
        epochs_scale=budget,
        threshold=threshold,
        similarity=similarity,
        duplicate_threshold=duplicate_threshold,
        train=TrainConfig(
            backbone=backbone,
            depth=depth,
            width=width,
            weights=weights,
            batch_size=batch_size,
            flip=not no_flip,
            crop_padding=crop_padding,
            device=device,
            seed=seed,
            train=train,
            head=head,
            precision=precision,
            max_memory=parse_memory_size(max_memory),
            threads=threads,
        ),
        nlnl=NLNLConfig(
            complementary=complementary if complementary == "all" else _positive_int(complementary)
        ),
        pmnar=PMNARConfig(variant=variant, beta=beta),
        baseline=BaselineConfig(flagger=flagger),
    )
    config.validate()
    from ..train.inputs import resolve_train_mode

    # contradictions fail first
    resolve_train_mode(config.train, embeddings_file=embeddings, probs_file=probs)
    shown = not (quiet or json_output) and os.environ.get("RANK", "0") == "0"  # under torchrun: rank 0 only
    with progress_bars(shown) as progress:  # a million-row manifest's file check takes seconds
        table = load_source(
            source, path_column=path_column, label_column=label_column, id_column=id_column, progress=progress
        )
    # Under torchrun (several processes): rank 0 prints and writes the run directory; the others
    # train their share and leave.
    distributed.setup(device)
    if not distributed.is_primary():
        try:
            scan(
                table,
                config,
                cache_dir=cache_dir,
                workers=workers,
                truth=truth,
                embeddings=embeddings,
                probs=probs,
            )
        finally:
            distributed.shutdown()
        return
    _warn_few_samples(table)
    try:
        # Checked, locked and created before decoding and training: a bad --out costs nothing.
        with RunDirectory(
            out if out is not None else default_run_dir(source),
            "scan",
            inputs=scan_inputs(
                table, truth=truth, cache_dir=cache_dir, weights=weights, files=(embeddings, probs)
            ),
            overwrite=overwrite,
        ) as output:
            with progress_bars(not (quiet or json_output)) as progress:
                result = scan(
                    table,
                    config,
                    cache_dir=cache_dir,
                    workers=workers,
                    truth=truth,
                    progress=progress,
                    embeddings=embeddings,
                    probs=probs,
                )
            run_dir = write_run(result, output)
    finally:
        distributed.shutdown()
    if json_output:
        typer.echo(json_text({"run_dir": str(run_dir), **summary(result)}))
    else:
        _render(result, run_dir)


def _positive_int(text: str) -> int:
    if text.isdigit() and int(text) >= 1:
        return int(text)
    raise typer.BadParameter(
        f"must be 'all' or a positive integer; got {text!r}", param_hint="--complementary"
    )


def _warn_few_samples(table) -> None:
    """One warning line on stderr naming the classes too small to audit reliably."""
    from ..data.sources import FEW_SAMPLES_THRESHOLD

    few = table.few_sample_classes()
    if few:
        counts = table.class_counts()
        shown = 8  # a 2,000-class dataset would otherwise print every class on one line
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


def _how(result) -> str:
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


def _render(result, run_dir: Path) -> None:
    audit, table = result.audit, result.table
    report = audit.report
    flagged = report[report["suspected_noisy"]].sort_values("rank")
    stdout.print(
        f"Scanned {len(table)} images in {len(table.class_names)} classes with {_how(result)} "
        f"in {result.seconds['total']:.0f} s ({len(table.skipped)} files skipped)."
    )
    low, high = result.noise_rate_interval
    model_rate = (
        ""
        if np.isnan(audit.model_noise_rate)
        else f"; the soft labels alone imply {audit.model_noise_rate:.1%}"
    )
    stdout.print(
        f"Flagged [bold]{len(flagged)}[/] labels as suspect: estimated noise rate "
        f"[bold]{audit.noise_rate:.1%}[/] "
        f"(the share flagged; 95% bootstrap interval {low:.1%}-{high:.1%}){model_rate}."
    )
    if len(flagged):
        top = Table(
            title=f"Most suspect labels (of {len(flagged)}; all in flagged.csv)", title_justify="left"
        )
        for col in ("rank", "sample_id", "given", "confidence", "suggested", "suggested conf."):
            top.add_column(
                col,
                justify="right" if col in ("rank", "confidence", "suggested conf.") else "left",
                overflow="fold",
            )
        for row in flagged.head(_SHOW_FLAGGED).itertuples():
            top.add_row(
                str(row.rank),
                escape(row.sample_id),
                escape(row.given_label),
                f"{row.confidence:.2f}",
                escape(row.suggested_label),
                f"{row.suggested_confidence:.2f}",
            )
        stdout.print(top)
    rates = Table(title="Per-class estimates", title_justify="left")
    rates.add_column("class")
    rates.add_column("images", justify="right")
    rates.add_column("flagged share", justify="right")
    rates.add_column("T\\[i,i] (kept as itself)", justify="right")
    # A class no sample was cleaned to (every image given it flagged and moved elsewhere) has no
    # row of T to estimate: transition_matrix fills it with the identity, shown here as "-", not 1.00.
    cleaned_counts = np.bincount(audit.cleaned_labels, minlength=len(table.class_names))
    for i, name in enumerate(table.class_names):
        share = audit.per_class_noise_rates[i]
        kept = f"{audit.transition_matrix[i, i]:.2f}" if cleaned_counts[i] else "-"
        rates.add_row(
            escape(name),
            str(int((report["given_label"] == name).sum())),
            "-" if np.isnan(share) else f"{share:.1%}",
            kept,
        )
    if not cleaned_counts.all():
        rates.caption = (
            "T\\[i,i] -: no image is left in this class after cleaning (all of its images were flagged)"
        )
        rates.caption_justify = "left"
    stdout.print(rates)
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
        t = result.truth
        stdout.print(
            f"Against the truth: precision [bold]{t['precision']:.3f}[/], recall [bold]{t['recall']:.3f}[/], "
            f"F1 [bold]{t['f1']:.3f}[/]; noise rate true {t['true_noise_rate']:.1%} vs estimated "
            f"{t['estimated_noise_rate']:.1%} (error {t['noise_rate_error'] * 100:.1f} points)"
            + (
                f", soft labels' estimate {t['model_estimated_noise_rate']:.1%} (error "
                f"{t['model_noise_rate_error'] * 100:.1f} points)"
                if t.get("model_noise_rate_error") is not None
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
    stdout.print(f"Run directory: {run_dir}")
