"""``labelaudit review``: a review page for the samples a scan flagged."""

from __future__ import annotations

from typing import Annotated, Optional

import typer
from rich.markup import escape

from ..reports import json_text
from .console import progress_bars, stdout
from .options import JsonOpt, QuietOpt, RunDirArg


def review_command(
    run_dir: RunDirArg,
    overwrite: Annotated[
        bool,
        typer.Option(
            "--overwrite",
            help="Replace an earlier review/ folder of this run (decisions kept in the browser are not "
            "lost).",
        ),
    ] = False,
    thumb_size: Annotated[
        int, typer.Option("--thumb-size", min=16, max=512, help="Longest side of the thumbnails in pixels.")
    ] = 96,
    limit: Annotated[
        Optional[int],
        typer.Option("--limit", min=1, help="List only the N most suspect flagged samples [default: all]."),
    ] = None,
    workers: Annotated[
        Optional[int],
        typer.Option("--workers", min=1, help="Threads making thumbnails [default: all cores]."),
    ] = None,
    json_output: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Write a review page of the flagged samples into RUN_DIR/review/ (open index.html in a browser).

    The page needs no server and no network. Decide per sample (accept the suggestion, keep the
    given label, another class, remove, unsure) by click or key; the decisions stay in the
    browser and are exported as decisions.csv with a button.

    Example: labelaudit review runs/audit1
    """
    from ..review.page import write_review

    with progress_bars(not (quiet or json_output)) as progress:
        result = write_review(
            run_dir,
            overwrite=overwrite,
            thumb_size=thumb_size,
            limit=limit,
            workers=workers,
            progress=progress,
        )
    unreadable = len(result.unreadable)
    if json_output:
        typer.echo(
            json_text(
                {
                    "review": str(result.index),
                    "num_samples": result.num_samples,
                    "num_flagged": result.num_flagged,
                    "num_shown": result.num_shown,
                    "num_unreadable": unreadable,
                    "plots": result.plots,
                    "seconds": {k: round(v, 3) for k, v in result.seconds.items()},
                }
            )
        )
        return
    shown = (
        f"{result.num_shown} of {result.num_flagged} flagged samples (the most suspect)"
        if result.num_shown < result.num_flagged
        else f"{result.num_flagged} flagged samples"
    )
    stdout.print(f"Review page of {shown} out of {result.num_samples}, in {result.seconds['total']:.1f} s.")
    if unreadable:
        first = result.unreadable.iloc[0]
        stdout.print(
            f"{unreadable} images could not be read (first: {escape(str(first['path']))}, "
            f"{first['reason']}); "
            "their cards show a placeholder, all are listed in "
            f"{escape(str(result.folder / 'unreadable.csv'))}."
        )
    stdout.print(f"Open in a browser: {escape(str(result.index))}")
