"""``labelaudit inspect``: classes, sizes, skipped files and duplicates of a dataset."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from ..data.images import cache_root, load_images
from ..data.inspect import MAX_SKIPPED_IN_JSON, DatasetReport, inspect_store
from ..data.sources import SKIP_REASONS, load_source
from ..reports import json_text, write_json, write_skipped_csv
from ..runs.directory import RunDirectory, input_paths
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
    SourceArg,
    WorkersOpt,
)

_LIST_LIMIT = 10


def inspect(
    source: SourceArg,
    path_column: PathColumnOpt = None,
    label_column: LabelColumnOpt = None,
    id_column: IdColumnOpt = None,
    label_names: LabelNamesOpt = None,
    image_size: ImageSizeOpt = None,
    cache_dir: CacheDirOpt = None,
    workers: WorkersOpt = None,
    out: Annotated[
        Optional[str],
        typer.Option(
            "--out",
            metavar="DIR",
            help="Also write inspect.json and skipped.csv (every skipped file; the JSON lists the first "
            f"{MAX_SKIPPED_IN_JSON:,}) into this folder (new or empty, or an earlier inspect output "
            "with --overwrite).",
        ),
    ] = None,
    overwrite: OverwriteOpt = False,
    json_output: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Describe a dataset: classes and counts, image sizes and modes, skipped files, duplicates.

    Decodes every image once into the cache, so a later scan starts at once.

    Example: labelaudit inspect ./images --out ./inspect-run
    """
    bars = not (quiet or json_output)
    with progress_bars(bars) as progress:  # a million-row manifest's file check takes seconds
        table = load_source(
            source,
            path_column=path_column,
            label_column=label_column,
            id_column=id_column,
            label_names=label_names,
            cache_dir=cache_dir,
            progress=progress,
        )
    output = None
    if out is not None:  # checked, locked and created before decoding
        inputs = input_paths(table, [cache_root(cache_dir)])
        output = RunDirectory(out, "inspect", inputs=inputs, overwrite=overwrite).open()
    with output.writing() if output is not None else nullcontext() as tmp, progress_bars(bars) as progress:
        store = load_images(
            table, image_size=image_size, cache_dir=cache_dir, workers=workers, progress=progress
        )
        report = inspect_store(store)
        as_dict = report.to_dict() if output is not None or json_output else None
        if output is not None:  # a million skipped files take a second or two to list
            progress("write output", 0, 2)
            write_json(tmp / "inspect.json", as_dict)
            progress("write output", 1, 2)
            write_skipped_csv(tmp / "skipped.csv", store.table.skipped)
            progress("write output", 2, 2)
    if output is not None:
        out = output.path
    if json_output:
        typer.echo(json_text(as_dict))
    else:
        _render(report, out)


def _render(report: DatasetReport, out: Optional[Path]) -> None:
    cache = "reused" if report.cache_reused else "built"
    shape = f"{report.cache_image_size}x{report.cache_image_size}x{report.cache_channels}"
    stdout.print(
        f"[bold]{escape(report.source)}[/] ({report.kind}): {report.num_samples} images, "
        f"{len(report.class_counts)} classes, {len(report.skipped)} skipped; cache {shape} {cache}"
    )

    classes = Table(title="Classes", title_justify="left")
    classes.add_column("class")
    classes.add_column("images", justify="right")
    classes.add_column("share", justify="right")
    classes.add_column("note")
    for name, count in report.class_counts.items():
        note = "few samples" if name in report.few_sample_classes else ""
        classes.add_row(escape(name), str(count), f"{count / max(report.num_samples, 1):.1%}", note)
    stdout.print(classes)

    sizes = Table(title="Image sizes (most common)", title_justify="left")
    sizes.add_column("width x height")
    sizes.add_column("images", justify="right")
    for width, height, count in report.image_sizes:
        sizes.add_row(f"{width} x {height}", str(count))
    stdout.print(sizes)
    stdout.print(
        "Modes: "
        + ", ".join(f"{m} {n}" for m, n in report.modes.items())
        + "; formats: "
        + ", ".join(f"{f} {n}" for f, n in report.formats.items())
    )

    if len(report.skipped):
        skipped = Table(title=f"Skipped files ({len(report.skipped)})", title_justify="left")
        skipped.add_column("reason")
        skipped.add_column("files", justify="right")
        skipped.add_column("meaning")
        for reason, count in report.skipped_by_reason.items():
            skipped.add_row(reason, str(count), SKIP_REASONS.get(reason, ""))
        stdout.print(skipped)
        for row in report.skipped.head(_LIST_LIMIT).itertuples(index=False):
            stdout.print(f"  {row.reason:<22} {row.path}", markup=False)
        if len(report.skipped) > _LIST_LIMIT:
            where = f"see {out / 'skipped.csv'}" if out else "pass --out DIR for the full list"
            stdout.print(f"  ... and {len(report.skipped) - _LIST_LIMIT} more ({where})")

    groups = report.duplicate_groups
    conflicting = report.conflicting_duplicate_groups
    stdout.print(
        f"Exact duplicate files: {len(groups)} groups ({sum(len(g['sample_ids']) for g in groups)} files); "
        f"[bold]{len(conflicting)} with conflicting labels[/]"
    )
    if conflicting:
        dup = Table(
            title="Identical files with different labels (at most one label is right)", title_justify="left"
        )
        dup.add_column("labels")
        dup.add_column("files")
        for group in conflicting[:_LIST_LIMIT]:
            dup.add_row(escape(", ".join(group["labels"])), escape("\n".join(group["sample_ids"])))
        stdout.print(dup)
    if report.duplicate_manifest_rows:
        stdout.print(
            f"Manifest rows repeating an earlier path: {report.duplicate_manifest_rows} "
            f"({report.conflicting_manifest_rows} with a different label); the first row of each path is used"
        )
