"""The options of ``labelaudit scan`` that no other command takes, as ``Annotated`` aliases.

Grouped as ``labelaudit scan --help`` lists them: the run, the method, the network, training,
and the search for near-duplicates and outliers. The options scan shares with other commands
are in :mod:`labelaudit.cli.options`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from .options import out_option

# The run.
ScanOutOpt = Annotated[
    Optional[str], out_option("Run directory [default: ./labelaudit-runs/<source>-<time>].")
]
TruthOpt = Annotated[
    Optional[Path],
    typer.Option(
        "--truth",
        help="CSV/parquet with sample_id (or path) and true_label: adds precision/recall/F1 and estimate "
        "errors.",
        readable=False,
    ),
]

# The method and how it flags.
MethodOpt = Annotated[
    str,
    typer.Option(
        "--method",
        help="Audit method: nlnl (negative learning), pmnar (positive + multi-negative, two networks; "
        "240 epochs, about ten times NLNL's time: 870 s against 91 s on the 5,000-image sample on 2 "
        "CPU cores, for F1 0.886 against 0.856; --budget 0.1 is the former 24-epoch schedule, "
        "docs/methods.md), cv-gce (5-fold cross-fitted linear heads on embeddings, docs/calibration.md), "
        "or the baselines ce, gce, truncated-gce, cv-ce (5-fold cross-validated CE + confident "
        "learning); auto: nlnl when training on the images, cv-gce on embeddings (it measured best "
        "there).",
    ),
]
BudgetOpt = Annotated[
    float,
    typer.Option(
        "--budget",
        help="Training budget as a multiple of the default schedule, in (0, 1000]: 1 = nlnl's "
        "NL/SelNL/SelPL 20/20/20 epochs, pmnar's 240, the baselines' 60; 0.5 = half as many epochs, "
        "2 = twice as many.",
    ),
]
ComplementaryOpt = Annotated[
    str,
    typer.Option(
        "--complementary",
        help="NL complementary labels per sample: 'all' (every class but the given one) or a number of "
        "random draws (1 = the paper).",
    ),
]
VariantOpt = Annotated[
    str,
    typer.Option(
        "--variant",
        help="pmnar only: full (two networks + consistency), pm-ar (one network, adaptive reweighting) "
        "or pm (PM loss only).",
    ),
]
BetaOpt = Annotated[
    Optional[float],
    typer.Option(
        "--beta", min=0.0, help="pmnar only: consistency weight [default: 1 up to 10 classes, 10/K above]."
    ),
]
FlaggerOpt = Annotated[
    str,
    typer.Option(
        "--flagger", help="cv-ce and --probs: confident-learning, or cleanlab (needs the cleanlab extra)."
    ),
]
ThresholdOpt = Annotated[
    Optional[float],
    typer.Option(
        "--threshold",
        min=0.0,
        max=1.0,
        help="Flag samples whose calibrated confidence in their label (1 - p_label_wrong) is below this "
        "fixed value [default: p_label_wrong > 0.5 for nlnl, pmnar and cv-gce, whose probabilities are "
        "out-of-fold; a boundary learned from the data for the baselines; see docs/calibration.md].",
    ),
]

# The network and what it learns from.
BackboneOpt = Annotated[
    str,
    typer.Option(
        "--backbone",
        help="auto (cifar-resnet up to 64 px, resnet18 above), cifar-resnet, or a pretrained network: "
        "resnet18, resnet34, resnet50, efficientnet_b0, convnext_tiny, vit_b_16 (torchvision; with "
        "--weights) or efficientnet_lite0 (weights ship in the 'pretrained' extra). See "
        "docs/pretrained.md.",
    ),
]
WeightsOpt = Annotated[
    Optional[str],
    typer.Option(
        "--weights",
        help="Weights of a torchvision --backbone: DEFAULT or a weight name (e.g. IMAGENET1K_V1; "
        "downloaded once into torch's cache) or a local state_dict file (.pth). Without --weights a "
        "torchvision backbone trains from scratch.",
    ),
]
TrainModeOpt = Annotated[
    str,
    typer.Option(
        "--train",
        help="head: embed every image once with the frozen pretrained backbone (cached) and train a "
        "small head on the embeddings (fast on a CPU); full: train the whole network on the pixels "
        "(fine-tunes a pretrained backbone; the GPU path); auto: head for a pretrained backbone "
        "without a GPU, else full.",
    ),
]
HeadOpt = Annotated[
    str, typer.Option("--head", help="Head mode: linear (a linear probe) or mlp (one hidden layer of 512).")
]
EmbeddingsOpt = Annotated[
    Optional[Path],
    typer.Option(
        "--embeddings",
        metavar="FILE",
        help="Your own per-sample embeddings (.npy in sample order, or parquet/CSV keyed by sample_id): "
        "a head is trained on them; images are not decoded.",
        readable=False,
    ),
]
ProbsOpt = Annotated[
    Optional[Path],
    typer.Option(
        "--probs",
        metavar="FILE",
        help="Out-of-sample predicted probabilities (cleanlab's pred_probs: .npy in sample order, or "
        "parquet/CSV with sample_id and one column per class): nothing is trained; flags by cv-ce's "
        "rule (--flagger) or --threshold. No model.pt is written.",
        readable=False,
    ),
]
DepthOpt = Annotated[int, typer.Option("--depth", help="cifar-resnet depth (6n+2).")]
WidthOpt = Annotated[int, typer.Option("--width", help="cifar-resnet base width.")]

# Training.
BatchSizeOpt = Annotated[int, typer.Option("--batch-size", min=1)]
NoFlipOpt = Annotated[
    bool, typer.Option("--no-flip", help="No horizontal-flip augmentation (e.g. digits, text).")
]
CropPaddingOpt = Annotated[
    int, typer.Option("--crop-padding", min=0, help="Random-crop padding in pixels (0 = off).")
]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")]
PrecisionOpt = Annotated[
    str,
    typer.Option(
        "--precision",
        help="Arithmetic of the network's forward and backward: auto (bfloat16 on a CPU that computes it "
        "in hardware, e.g. Intel AMX or AVX-512 BF16, float16 on CUDA, else float32), fp32 or bf16. "
        "Weights, losses and soft labels stay float32; on a CPU a head over embeddings always "
        "trains in float32.",
    ),
]
ThreadsOpt = Annotated[
    Optional[int],
    typer.Option(
        "--threads",
        min=1,
        help="CPU threads the network computes with [default: torch's default (physical cores), capped "
        "by the CPUs this process may use (affinity, container quota); 1 for a head on embeddings]. "
        "Results depend on the count; runs that together need more threads than there are CPUs take "
        "turns (docs/benchmarks.md).",
    ),
]
MaxMemoryOpt = Annotated[
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
]

# Near-duplicates and outliers.
SimilarityOpt = Annotated[
    Optional[bool],
    typer.Option(
        "--similarity/--no-similarity",
        help="Search near-duplicates (the same picture twice, e.g. under two labels) and outliers "
        "(images of no class): report columns duplicate_of, duplicate_conflict, outlier_score, "
        "is_outlier and reason; exact up to 50,000 samples, an HNSW index of measured recall above; see "
        "docs/methods.md [default: on].",
    ),
]
DuplicateThresholdOpt = Annotated[
    Optional[float],
    typer.Option(
        "--duplicate-threshold",
        min=0.0,
        max=1.0,
        help="Pixel similarity (1 - aligned grey-level difference / 255) from which two images are "
        "near-duplicates [default: read from the data, summary.json similarity.duplicate_threshold].",
    ),
]
