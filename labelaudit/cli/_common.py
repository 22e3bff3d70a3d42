"""Options and helpers shared by the commands: source options, progress bars, consoles."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Iterator, Optional

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from .. import _interrupt

SourceArg = Annotated[
    Path,
    typer.Argument(
        help="Image folder (one subfolder per class) or a .parquet/.csv manifest.",
        show_default=False,
        readable=False,
    ),  # our own check names the problem in one line
]
PathColumnOpt = Annotated[
    Optional[str],
    typer.Option(
        "--path-column", help="Manifest column with image paths [default: path, image, file_name, ...]."
    ),
]
LabelColumnOpt = Annotated[
    Optional[str],
    typer.Option("--label-column", help="Manifest column with labels [default: label, class, target, ...]."),
]
IdColumnOpt = Annotated[
    Optional[str],
    typer.Option(
        "--id-column",
        help="Manifest column with unique sample ids [default: sample_id or id if present, else the path].",
    ),
]
ImageSizeOpt = Annotated[
    Optional[int],
    typer.Option(
        "--image-size",
        min=4,
        max=1024,
        help="Side of the square images the network sees [default: median shorter side, clamped to 16..64].",
    ),
]
CacheDirOpt = Annotated[
    Optional[str],  # text, not Path: Path("") would turn an empty value into the current folder
    typer.Option(
        "--cache-dir",
        help="Where decoded images are cached [default: $LABELAUDIT_CACHE_DIR or ~/.cache/labelaudit].",
    ),
]
WorkersOpt = Annotated[
    Optional[int], typer.Option("--workers", min=1, help="Decoding processes [default: all cores].")
]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")]
OverwriteOpt = Annotated[
    bool,
    typer.Option(
        "--overwrite",
        help="Replace an earlier output of this command at --out (a folder holding anything else is never "
        "replaced).",
    ),
]
JsonOpt = Annotated[
    bool, typer.Option("--json", help="Print the result as JSON on stdout (no tables, no bars).")
]

stdout = Console(highlight=False, soft_wrap=True)
stderr = Console(stderr=True, highlight=False)


@contextmanager
def progress_bars(enabled: bool) -> Iterator:
    """Yield a ``progress(phase, done, total)`` callback drawing one rich bar per phase on stderr.

    Bars are drawn only when ``enabled`` and stderr is a terminal; the callback is always safe to call.
    """
    show = enabled and stderr.is_terminal
    bars = Progress(
        TextColumn("{task.description:<14}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[extra]}"),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=stderr,
        disable=not show,
        transient=False,
    )
    tasks: dict[str, int] = {}

    def update(phase: str, done: int, total: int, extra: str = "") -> None:
        _interrupt.check()  # a Ctrl-C that Python lost (raised in a finaliser) stops the work here
        if phase not in tasks:
            tasks[phase] = bars.add_task(phase, total=total, extra=extra)
        bars.update(tasks[phase], completed=done, total=total, extra=extra)

    with bars:
        yield update
