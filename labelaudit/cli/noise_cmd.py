"""``labelaudit inject-noise`` and ``labelaudit benchmark``: measure an auditor on known noise."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, List, Optional

import typer
from rich.markup import escape

from ._common import (
    CacheDirOpt,
    LabelColumnOpt,
    OverwriteOpt,
    PathColumnOpt,
    QuietOpt,
    SourceArg,
    progress_bars,
    stdout,
)

MapOpt = Annotated[
    Optional[str],
    typer.Option(
        "--map",
        help="asymm only: cifar10, fashion-mnist, mnist, or a CSV with from,to columns (inject-noise also "
        "takes a full KxK T: class names as header and first column, no --rate).",
    ),
]


def inject_noise_command(
    source: SourceArg,
    out: Annotated[
        str,
        typer.Option(
            "--out",
            "-o",
            metavar="DIR",
            help="Folder for manifest.parquet, truth.csv and noise.json (new or empty, or an earlier "
            "inject-noise output with --overwrite).",
        ),
    ],
    kind: Annotated[
        Optional[str],
        typer.Option(
            "--kind",
            help="symm-inc (redraw over all classes), symm-exc (move to another class; the default), asymm "
            "(flip by --map) or confusable (human-like: an image moves to the class it most resembles, "
            "ambiguous images more often; see docs/benchmarks.md).",
        ),
    ] = None,
    rate: Annotated[
        Optional[float],
        typer.Option(
            "--rate",
            min=0.0,
            max=1.0,
            help="Share of each class chosen for flipping (confusable: of the whole dataset; not with a full "
            "T or --flips).",
        ),
    ] = None,
    noise_map: MapOpt = None,
    flips: Annotated[
        Optional[str],
        typer.Option(
            "--flips",
            metavar="FILE",
            help="Your own noise: a CSV/parquet with sample_id (or path) and label columns, the label to "
            "give each listed sample (instead of --kind).",
        ),
    ] = None,
    seed: Annotated[int, typer.Option("--seed", min=0, max=2**63 - 1)] = 0,
    path_column: PathColumnOpt = None,
    label_column: LabelColumnOpt = None,
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
    from ..errors import ConfigError
    from ..pipeline.noise import KINDS, confusable_noise, inject_noise, read_flip_table, write_noisy_dataset
    from ..runs.directory import RunDirectory, input_paths

    if flips is not None and (kind is not None or rate is not None or noise_map is not None):
        raise ConfigError("--flips gives every new label itself; leave out --kind, --rate and --map")
    kind = kind or "symm-exc"
    if noise_map is not None and kind != "asymm":
        raise ConfigError(f"--map applies to --kind asymm only; got --kind {kind}")
    if flips is None and kind not in KINDS:
        raise ConfigError(f"--kind must be one of {list(KINDS)}; got {kind!r}")
    if kind == "confusable" and rate is None:
        raise ConfigError("--kind confusable needs --rate, the share of the whole dataset to flip (e.g. 0.3)")
    table = load_source(source, path_column=path_column, label_column=label_column)
    map_file = noise_map if noise_map is not None and Path(noise_map).exists() else None  # an input too
    inputs = [f for f in (map_file, flips) if f] + (
        [cache_root(cache_dir)] if kind == "confusable" and flips is None else []
    )
    # The output folder is checked and locked before the (possibly long) decode and fit.
    run = RunDirectory(out, "inject-noise", inputs=input_paths(table, inputs), overwrite=overwrite).open()
    try:
        if flips is not None:
            noisy = read_flip_table(flips, table)
        elif kind == "confusable":
            with progress_bars(not quiet) as progress:
                noisy = confusable_noise(table, rate, seed=seed, cache_dir=cache_dir, progress=progress)
        else:
            noisy = inject_noise(
                table.samples["given_label"].to_numpy(),
                table.class_names,
                kind,
                rate,
                noise_map=noise_map,
                seed=seed,
            )
    except BaseException:
        run.abort()
        raise
    info = write_noisy_dataset(table, noisy, run)
    out = Path(out)
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
    out: Annotated[
        str,
        typer.Option(
            "--out",
            "-o",
            metavar="DIR",
            help="Benchmark folder: results.csv, summary.csv/.md/.json, data/, runs/ (new or empty, or an "
            "earlier benchmark's to resume).",
        ),
    ],
    noise: Annotated[
        str,
        typer.Option(
            "--noise",
            help="Comma-separated KIND:RATE settings, e.g. symm-exc:0.2,asymm:0.4,confusable:0.3 (kinds as "
            "inject-noise --kind).",
        ),
    ] = "symm-exc:0.2",
    methods: Annotated[
        str,
        typer.Option(
            "--methods",
            help="Comma-separated: nlnl, pmnar, ce, gce, truncated-gce, cv-ce, cleanlab (cleanlab's "
            "find_label_issues on cv-ce's out-of-fold probabilities; needs the cleanlab extra).",
        ),
    ] = "nlnl,pmnar,ce,gce,cv-ce",
    seeds: Annotated[
        int,
        typer.Option("--seeds", min=1, help="Noise draws and training seeds 0..N-1; tables show mean ± std."),
    ] = 1,
    noise_map: MapOpt = None,
    budget: Annotated[
        float,
        typer.Option(
            "--budget",
            help="Training budget of every method as a multiple of its default schedule (as scan --budget): "
            "1 = the default, 0.5 = half as many epochs.",
        ),
    ] = 1.0,
    epochs: Annotated[Optional[str], typer.Option("--epochs", hidden=True, help="Renamed --budget.")] = None,
    scan_option: Annotated[
        Optional[List[str]],
        typer.Option(
            "--scan-option",
            help="Extra scan option for every method, repeatable, e.g. --scan-option=--width=16.",
        ),
    ] = None,
    path_column: PathColumnOpt = None,
    label_column: LabelColumnOpt = None,
    cache_dir: CacheDirOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Measure audit methods side by side: inject known noise into a dataset assumed clean, scan
    it with each method (same network, same data), and tabulate precision/recall/F1, AUROC/AUPRC,
    noise-rate and T errors, relabel accuracy, wall time and peak memory.

    Interrupted? Run the same command again: finished runs are reused.

    Example: labelaudit benchmark ./clean-images --noise symm-exc:0.2,symm-exc:0.4 --seeds 2 --out bench
    """
    from ..errors import ConfigError
    from ..pipeline.benchmark import BenchmarkConfig, parse_methods, parse_noise, run_benchmark
    from ..train.trainer import check_budget

    if epochs is not None:
        raise ConfigError(
            f"benchmark --epochs was renamed --budget (a multiple of the default schedule, e.g. 0.5 = "
            f"half the epochs); got --epochs {epochs!r}: pass --budget {epochs} instead"
        )
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
            cache_dir=cache_dir,
            progress=progress,
        )
    failed = results[results["error"].fillna("") != ""] if "error" in results else results.iloc[0:0]
    if len(results) and len(failed) == len(results):  # nothing measured: not a success
        raise ConfigError(
            f"all {len(results)} benchmark runs failed; first ({failed['method'].iloc[0]}, "
            f"{failed['noise'].iloc[0]}, seed {failed['seed'].iloc[0]}): {failed['error'].iloc[0]}; "
            "see runs/*/<method>.log in the benchmark folder"
        )
    out = Path(out)
    stdout.print((out / "summary.md").read_text())
    if len(failed):
        stdout.print(
            f"[bold]{len(failed)} runs failed[/]: see runs/*/<method>.log; first: "
            f"{escape(str(failed['error'].iloc[0]))}"
        )
    stdout.print(f"Tables: {out / 'summary.md'}, {out / 'summary.csv'}, {out / 'results.csv'}")
