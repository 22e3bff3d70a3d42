"""``labelaudit inject-noise`` and ``labelaudit benchmark``: measure an auditor on known noise."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, List, Optional

import typer
from rich.markup import escape

from ..errors import ConfigError
from .console import progress_bars, stdout
from .options import (
    CacheDirOpt,
    LabelColumnOpt,
    LabelNamesOpt,
    OverwriteOpt,
    PathColumnOpt,
    QuietOpt,
    RenamedEpochsOpt,
    SeedOpt,
    SourceArg,
    out_option,
    refuse_renamed_epochs,
)

MapOpt = Annotated[
    Optional[str],
    typer.Option(
        "--map",
        help="asymm only: cifar10, fashion-mnist, mnist, or a CSV with from,to columns (inject-noise also "
        "takes a full KxK T: class names as header and first column, no --rate).",
    ),
]

# inject-noise
NoisyDatasetOutOpt = Annotated[
    str,
    out_option(
        "Folder for manifest.parquet, truth.csv and noise.json (new or empty, or an earlier inject-noise "
        "output with --overwrite)."
    ),
]
KindOpt = Annotated[
    Optional[str],
    typer.Option(
        "--kind",
        help="symm-inc (redraw over all classes), symm-exc (move to another class; the default), asymm "
        "(flip by --map) or confusable (human-like: an image moves to the class it most resembles, "
        "ambiguous images more often; see docs/benchmarks.md).",
    ),
]
RateOpt = Annotated[
    Optional[float],
    typer.Option(
        "--rate",
        min=0.0,
        max=1.0,
        help="Share of each class chosen for flipping (confusable: of the whole dataset; not with a full "
        "T or --flips).",
    ),
]
FlipsOpt = Annotated[
    Optional[str],
    typer.Option(
        "--flips",
        metavar="FILE",
        help="Your own noise: a CSV/parquet with sample_id (or path) and label columns, the label to "
        "give each listed sample (instead of --kind).",
    ),
]

# benchmark
BenchmarkOutOpt = Annotated[
    str,
    out_option(
        "Benchmark folder: results.csv, summary.csv/.md/.json, data/, runs/ (new or empty, or an earlier "
        "benchmark's to resume)."
    ),
]
NoiseSettingsOpt = Annotated[
    str,
    typer.Option(
        "--noise",
        help="Comma-separated KIND:RATE settings, e.g. symm-exc:0.2,asymm:0.4,confusable:0.3 (kinds as "
        "inject-noise --kind).",
    ),
]
MethodsOpt = Annotated[
    str,
    typer.Option(
        "--methods",
        help="Comma-separated: nlnl, pmnar, ce, gce, truncated-gce, cv-ce, cleanlab (cleanlab's "
        "find_label_issues on cv-ce's out-of-fold probabilities; needs the cleanlab extra).",
    ),
]
SeedsOpt = Annotated[
    int, typer.Option("--seeds", min=1, help="Noise draws and training seeds 0..N-1; tables show mean ± std.")
]
BenchmarkBudgetOpt = Annotated[
    float,
    typer.Option(
        "--budget",
        help="Training budget of every method as a multiple of its default schedule (as scan --budget): "
        "1 = the default, 0.5 = half as many epochs.",
    ),
]
ScanOptionOpt = Annotated[
    Optional[List[str]],
    typer.Option(
        "--scan-option", help="Extra scan option for every method, repeatable, e.g. --scan-option=--width=16."
    ),
]


def inject_noise_command(
    source: SourceArg,
    out: NoisyDatasetOutOpt,
    kind: KindOpt = None,
    rate: RateOpt = None,
    noise_map: MapOpt = None,
    flips: FlipsOpt = None,
    seed: SeedOpt = 0,
    path_column: PathColumnOpt = None,
    label_column: LabelColumnOpt = None,
    label_names: LabelNamesOpt = None,
    cache_dir: CacheDirOpt = None,
    overwrite: OverwriteOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Write a copy of a dataset's labels with known noise: a manifest of the same images with the
    new labels, and a truth file to score audits with (scan --truth).

    The labels of SOURCE are taken as clean; images are neither copied nor changed.

    Example: labelaudit inject-noise ./clean-images --kind symm-exc --rate 0.4 --out ./noisy40
    """
    from ..data.images import cache_root
    from ..data.sources import load_source
    from ..pipeline.noise import read_flip_table, write_noisy_dataset
    from ..runs.directory import RunDirectory, input_paths

    kind = _noise_kind(kind, rate, noise_map, flips)
    table = load_source(
        source,
        path_column=path_column,
        label_column=label_column,
        label_names=label_names,
        cache_dir=cache_dir,
    )
    map_file = noise_map if noise_map is not None and Path(noise_map).exists() else None  # an input too
    inputs = [f for f in (map_file, flips) if f] + (
        [cache_root(cache_dir)] if kind == "confusable" and flips is None else []
    )
    # The output folder is checked and locked before the (possibly long) decode and fit.
    run = RunDirectory(out, "inject-noise", inputs=input_paths(table, inputs), overwrite=overwrite).open()
    try:
        if flips is not None:
            noisy = read_flip_table(flips, table)
        else:
            noisy = _draw_noise(table, kind, rate, noise_map, seed=seed, cache_dir=cache_dir, quiet=quiet)
    except BaseException:
        run.abort()
        raise
    info = write_noisy_dataset(table, noisy, run)
    _render_noise(info, kind, rate, Path(out))


def _noise_kind(
    kind: Optional[str], rate: Optional[float], noise_map: Optional[str], flips: Optional[str]
) -> str:
    """The --kind of noise to inject (symm-exc unless given), once the options are known not to
    contradict each other."""
    from ..pipeline.noise import KINDS

    if flips is not None and (kind is not None or rate is not None or noise_map is not None):
        raise ConfigError("--flips gives every new label itself; leave out --kind, --rate and --map")
    kind = kind or "symm-exc"
    if noise_map is not None and kind != "asymm":
        raise ConfigError(f"--map applies to --kind asymm only; got --kind {kind}")
    if flips is None and kind not in KINDS:
        raise ConfigError(f"--kind must be one of {list(KINDS)}; got {kind!r}")
    if kind == "confusable" and rate is None:
        raise ConfigError("--kind confusable needs --rate, the share of the whole dataset to flip (e.g. 0.3)")
    return kind


def _draw_noise(table, kind: str, rate, noise_map, *, seed: int, cache_dir, quiet: bool):
    """New labels for ``table`` by a kind of noise: confusable fits a classifier to the images (with
    progress bars), the others draw from the labels alone."""
    from ..pipeline.noise import confusable_noise, inject_noise

    if kind == "confusable":
        with progress_bars(not quiet) as progress:
            return confusable_noise(table, rate, seed=seed, cache_dir=cache_dir, progress=progress)
    labels = table.samples["given_label"].to_numpy()
    return inject_noise(labels, table.class_names, kind, rate, noise_map=noise_map, seed=seed)


def _render_noise(info: dict, kind: str, rate: Optional[float], out: Path) -> None:
    """How many labels were flipped, how, and the scan command that audits the result."""
    scope = "mapped class" if kind == "asymm" else "the whole dataset" if kind == "confusable" else "class"
    requested = (
        "" if rate is None else f" (requested {rate:.1%} {'of' if kind == 'confusable' else 'per'} {scope})"
    )
    stdout.print(
        f"Flipped {info['num_flipped']} of {info['num_samples']} labels: real noise rate "
        f"[bold]{info['real_rate']:.2%}[/]{requested}."
    )
    if info.get("recipe"):
        stdout.print(
            f"Confusion classifier: {info['recipe']['classifier']}, out-of-fold accuracy "
            f"{info['recipe']['out_of_fold_accuracy']:.1%} on the given labels."
        )
    if info["mapping"]:
        stdout.print("Map: " + ", ".join(f"{escape(a)} -> {escape(b)}" for a, b in info["mapping"].items()))
    stdout.print(
        f"Wrote {out / 'manifest.parquet'} and {out / 'truth.csv'}; scan with: labelaudit scan "
        f"{out / 'manifest.parquet'} --truth {out / 'truth.csv'}"
    )


def benchmark_command(
    source: SourceArg,
    out: BenchmarkOutOpt,
    noise: NoiseSettingsOpt = "symm-exc:0.2",
    methods: MethodsOpt = "nlnl,pmnar,ce,gce,cv-ce",
    seeds: SeedsOpt = 1,
    noise_map: MapOpt = None,
    budget: BenchmarkBudgetOpt = 1.0,
    epochs: RenamedEpochsOpt = None,
    scan_option: ScanOptionOpt = None,
    path_column: PathColumnOpt = None,
    label_column: LabelColumnOpt = None,
    label_names: LabelNamesOpt = None,
    cache_dir: CacheDirOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Measure audit methods side by side: inject known noise into a dataset assumed clean, scan
    it with each method (same network, same data), and tabulate precision/recall/F1, AUROC/AUPRC,
    noise-rate and T errors, relabel accuracy, wall time and peak memory.

    Interrupted? Run the same command again: finished runs are reused.

    Example: labelaudit benchmark ./clean-images --noise symm-exc:0.2,symm-exc:0.4 --seeds 2 --out bench
    """
    from ..pipeline.benchmark import BenchmarkConfig, parse_methods, parse_noise, run_benchmark
    from ..train.schedule import check_budget

    refuse_renamed_epochs("benchmark", epochs)
    config = BenchmarkConfig(
        settings=tuple(parse_noise(noise)),
        methods=tuple(parse_methods(methods)),
        seeds=seeds,
        noise_map=noise_map,
        epochs_scale=check_budget(budget),
        scan_args=tuple(scan_option or ()),
    )
    with progress_bars(not quiet) as progress:
        results = run_benchmark(
            source,
            config,
            out,
            path_column=path_column,
            label_column=label_column,
            label_names=label_names,
            cache_dir=cache_dir,
            progress=progress,
        )
    _render_benchmark(_failed_runs(results), Path(out))


def _failed_runs(results):
    """The rows of the runs that failed; an error when every run failed (nothing was measured)."""
    failed = results[results["error"].fillna("") != ""] if "error" in results else results.iloc[0:0]
    if len(results) and len(failed) == len(results):  # nothing measured: not a success
        raise ConfigError(
            f"all {len(results)} benchmark runs failed; first ({failed['method'].iloc[0]}, "
            f"{failed['noise'].iloc[0]}, seed {failed['seed'].iloc[0]}): {failed['error'].iloc[0]}; "
            "see runs/*/<method>.log in the benchmark folder"
        )
    return failed


def _render_benchmark(failed, out: Path) -> None:
    """The summary table, the failed runs if any, and where the tables are."""
    stdout.print((out / "summary.md").read_text())
    if len(failed):
        stdout.print(
            f"[bold]{len(failed)} runs failed[/]: see runs/*/<method>.log; first: "
            f"{escape(str(failed['error'].iloc[0]))}"
        )
    stdout.print(f"Tables: {out / 'summary.md'}, {out / 'summary.csv'}, {out / 'results.csv'}")
