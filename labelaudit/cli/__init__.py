"""The ``labelaudit`` command line: a thin layer over the library.

The root only registers commands; each command lives in its own module. Library errors
(:class:`labelaudit.errors.LabelAuditError`) become one line on stderr and exit status 2; set
``LABELAUDIT_DEBUG=1`` to see the traceback.
"""

from __future__ import annotations

import logging
import os
import sys

import typer

from ..errors import ConfigError, LabelAuditError
from . import export_cmd, inspect_cmd, model_cmd, noise_cmd, retrain_cmd, review_cmd, scan_cmd

app = typer.Typer(
    name="labelaudit",
    help="Audit image classification datasets for wrong labels.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Plain help, not rich markup: rich read every "[default: ...]" in our help texts as a markup
    # tag and dropped it, and at 80 columns its table cut long values short with "…". Plain help
    # wraps instead, and usage errors are one "Error: ..." line, not a box (benchmark logs read them).
    rich_markup_mode=None,
)
app.command("inspect")(inspect_cmd.inspect)
app.command("scan")(scan_cmd.scan_command)
app.command("retrain")(retrain_cmd.retrain_command)
app.command("predict")(model_cmd.predict_command)
app.command("evaluate")(model_cmd.evaluate_command)
app.command("inject-noise")(noise_cmd.inject_noise_command)
app.command("benchmark")(noise_cmd.benchmark_command)
app.command("export")(export_cmd.export_command)
app.command("apply")(export_cmd.apply_command)
app.command("review")(review_cmd.review_command)


@app.callback()
def _root() -> None:
    """Audit image classification datasets for wrong labels.

    Point a command at an image folder (one subfolder per class) or a parquet/CSV manifest.
    """


class _WarningLine(logging.Handler):
    """The library's log warnings as ``labelaudit: warning: ...`` lines on stderr (the one format
    the CLI's own warnings use), whatever ``sys.stderr`` is at the time (tests capture it)."""

    def emit(self, record: logging.LogRecord) -> None:
        print(f"labelaudit: warning: {record.getMessage()}", file=sys.stderr)


def _route_library_warnings() -> None:
    logger = logging.getLogger("labelaudit")
    if not any(isinstance(h, _WarningLine) for h in logger.handlers):
        handler = _WarningLine(level=logging.WARNING)
        logger.addHandler(handler)
        logger.propagate = False  # not again through Python's last-resort handler


def _refuse_torchrun_except_scan(args: list[str]) -> None:
    """Only ``scan`` trains data-parallel: under ``torchrun`` any other command would run once per
    process, every copy writing the same output."""
    command = next((a for a in args if not a.startswith("-")), None)
    if os.environ.get("WORLD_SIZE", "1") not in ("", "0", "1") and command not in (None, "scan"):
        raise ConfigError(f"only 'labelaudit scan' runs under torchrun (several processes); run 'labelaudit {command}' "
                          "as one process, without torchrun")


def main(argv: list[str] | None = None) -> None:
    """Entry point of the console script and ``python -m labelaudit``."""
    _route_library_warnings()
    try:
        _refuse_torchrun_except_scan(sys.argv[1:] if argv is None else argv)
        app(args=argv, prog_name="labelaudit")
    except LabelAuditError as exc:
        if os.environ.get("LABELAUDIT_DEBUG"):
            raise
        print(f"labelaudit: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        print("labelaudit: interrupted", file=sys.stderr)
        _exit_interrupted()
    except SystemExit as exc:
        if exc.code == 130:  # Typer turns Ctrl-C into a silent exit 130: say what happened
            print("labelaudit: interrupted (an unfinished run directory is not kept)", file=sys.stderr)
            _exit_interrupted()
        raise


def _exit_interrupted() -> None:
    """Exit with status 130 now (the unfinished output was already removed on the way up).

    A Ctrl-C that landed while the scan was still importing its modules (torch among them)
    sometimes ended the process with SIGINT at exit (status -2) although the interrupt had been
    handled: 4 of 8 interrupted scans in a test; after this change 11 of 12 exited 130 and one
    ran to the end (the signal was lost during the imports). CPython marks
    a KeyboardInterrupt as unhandled when it escapes code run through its C API and then kills
    itself at exit; which import did that was not pinned down. Leaving at once keeps the
    documented status."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(130)
