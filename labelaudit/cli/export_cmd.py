"""``labelaudit export`` and ``labelaudit apply``: flagged samples out to reviewers, decisions back in."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from ..reports import json_text
from .console import stdout
from .options import JsonOpt, OverwriteOpt, RunDirArg, out_option, path_argument


def export_command(
    run_dir: RunDirArg,
    format: Annotated[
        str,
        typer.Option(
            "--format",
            "-f",
            help="label-studio: tasks.json + label_config.xml for a Label Studio project; csv: review.csv to "
            "fill in a spreadsheet (a decisions file for apply); fiftyone: fiftyone.json with the lines "
            "that load it.",
        ),
    ] = "label-studio",
    out: Annotated[
        Optional[str], out_option("New folder for the export [default: <run dir>-export-<format> beside it].")
    ] = None,
    document_root: Annotated[
        Optional[Path],
        typer.Option(
            "--document-root",
            readable=False,
            help="label-studio: the folder Label Studio serves local files from "
            "(LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT); every flagged image must be inside it [default: "
            "the parent of the dataset folder].",
        ),
    ] = None,
    overwrite: OverwriteOpt = False,
    json_output: JsonOpt = False,
) -> None:
    """Write a scan's flagged samples, worst first, for review in Label Studio, a spreadsheet or
    FiftyOne. The folder also holds README.txt with the next steps (for Label Studio: how to serve
    the local images) and export.json.

    Example: labelaudit export runs/audit1 --format label-studio --out runs/audit1-review
    """
    from ..review.export import export_run

    result = export_run(run_dir, out, format=format, document_root=document_root, overwrite=overwrite)
    if json_output:
        typer.echo(
            json_text(
                {
                    "out": str(result.path),
                    "format": result.format,
                    "num_exported": result.num_exported,
                    "files": result.files,
                    "document_root": None if result.document_root is None else str(result.document_root),
                    "storage_folders": [str(f) for f in result.storage_folders],
                }
            )
        )
        return
    stdout.print(
        f"Exported {result.num_exported} flagged samples ({result.format}) to {escape(str(result.path))}: "
        f"{', '.join(result.files)}."
    )
    if not result.num_exported:
        stdout.print("The scan flagged no sample: there is nothing to review.")
    if result.format == "label-studio":
        stdout.print(
            f"Start Label Studio with LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true and "
            f"LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT={escape(str(result.document_root))}; add the Local "
            "files "
            f"storage {escape(', '.join(map(str, result.storage_folders)))} (no Sync). Steps: "
            f"{escape(str(result.path / 'README.txt'))}"
        )
    else:
        stdout.print(f"Next steps: {escape(str(result.path / 'README.txt'))}")


def apply_command(
    run_dir: RunDirArg,
    decisions: Annotated[
        list[Path],
        path_argument(
            "decisions.csv (sample_id, decision, new_label, note; decision: accept, keep, relabel, "
            "remove, unsure) or a Label Studio JSON export of the tasks labelaudit export wrote; several "
            "files: one per reviewer (named by a reviewer column, else the file name)."
        ),
    ],
    out: Annotated[
        Optional[str],
        out_option(
            "New folder for cleaned.parquet/.csv, removed.csv, decisions.csv and apply.json [default: "
            "<run dir>-cleaned beside it]."
        ),
    ] = None,
    accept_unreviewed: Annotated[
        str,
        typer.Option(
            "--accept-unreviewed",
            help="What flagged samples nobody reviewed (or marked unsure) become: given (keep their label), "
            "suggested (take the scan's suggestion) or drop (remove them).",
        ),
    ] = "given",
    conflicts: Annotated[
        str,
        typer.Option(
            "--conflicts",
            help="Several files: what a sample the reviewers disagree on becomes: skip (no decision, it "
            "keeps its given label), majority (the most common decision; a tie skips) or latest (the last "
            "file's). Conflicts are listed in conflicts.csv either way.",
        ),
    ] = "skip",
    overwrite: OverwriteOpt = False,
    json_output: JsonOpt = False,
) -> None:
    """Apply reviewers' decisions to a scan: write a cleaned manifest (path, label, original label,
    label source: given / reviewed / suggested) that scan and retrain read, and the removed samples
    apart. The scan, the decisions file and the images are only read.

    Label Studio: a skipped task is unreviewed; with several annotations the most recently updated
    one wins.

    Several decisions files, one per reviewer: where they agree that is the decision; where they
    disagree --conflicts decides, and conflicts.csv lists them; apply.json holds each reviewer's
    agreement with the others.

    Example: labelaudit apply runs/audit1 decisions.csv --accept-unreviewed given --out runs/audit1-cleaned

    Example: labelaudit apply runs/audit1 alice.csv bob.csv --conflicts majority --out runs/audit1-cleaned
    """
    from ..review.apply import apply_decisions, apply_inputs, apply_summary, default_apply_dir, write_apply
    from ..runs.directory import RunDirectory
    from ..runs.scan_run import load_run

    run = load_run(run_dir)
    # Checked, locked and created before reading the decisions: a bad --out costs nothing.
    with RunDirectory(
        out if out is not None else default_apply_dir(run_dir),
        "apply",
        inputs=apply_inputs(run, decisions),
        overwrite=overwrite,
    ) as output:
        result = apply_decisions(
            run,
            decisions if len(decisions) > 1 else decisions[0],
            accept_unreviewed=accept_unreviewed,
            conflicts=conflicts,
        )
        written = write_apply(result, output)
    if json_output:
        typer.echo(json_text({"out": str(written), **apply_summary(result)}))
        return
    c = result.counts
    d = c["decisions"]
    stdout.print(
        f"Applied {c['num_reviewed']} reviews to {c['num_samples']} samples ({c['num_flagged']} flagged): "
        f"{d['accept']} accepted, {d['keep']} kept, {d['relabel']} relabelled, {d['remove']} removed, "
        f"{c['num_unreviewed_flagged']} flagged unreviewed ({result.accept_unreviewed})."
    )
    stdout.print(
        f"Cleaned manifest: {c['num_kept']} samples, {c['num_changed']} with a new label; {c['num_removed']} "
        f"removed (removed.csv)."
    )
    if result.reviews is not None:
        reviews = result.reviews
        rates = ", ".join(
            f"{escape(name)} " + ("-" if a["rate"] is None else f"{100 * a['rate']:.0f}%")
            for name, a in reviews.agreement.items()
        )
        stdout.print(
            f"{len(reviews.reviewers)} reviewers (agreement with the others: {rates}); "
            f"{len(reviews.conflicts)} conflicts ({reviews.rule}: {len(reviews.skipped)} left undecided, "
            "keeping their given label), listed in conflicts.csv."
        )
    if c["num_conflicting_reviews"]:
        stdout.print(
            f"{c['num_conflicting_reviews']} tasks had annotations that disagree: the latest one was used."
        )
    stdout.print(
        f"Wrote {escape(str(written))}; train on it with: labelaudit retrain {escape(str(run.path))} "
        f"--labels {escape(str(written / 'cleaned.parquet'))}"
    )
