"""Where the commands print: the stdout and stderr consoles, progress bars, and the tables more
than one command prints."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from .. import _interrupt

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
