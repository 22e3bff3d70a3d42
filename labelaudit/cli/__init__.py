"""The ``labelaudit`` command line: a thin layer over the library.

The root only registers commands; each command lives in its own module. Library errors
(:class:`labelaudit.errors.LabelAuditError`) become one line on stderr and exit status 2; set
``LABELAUDIT_DEBUG=1`` to see the traceback.
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import sys
import threading

import typer

from .. import _interrupt
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
        raise ConfigError(
            f"only 'labelaudit scan' runs under torchrun (several processes); run 'labelaudit {command}' "
            "as one process, without torchrun"
        )


def main(argv: list[str] | None = None) -> None:
    """Run one command and raise SystemExit with its status (the CLI run in-process, as the tests
    do; the console script is :func:`run`)."""
    _route_library_warnings()
    owner = threading.current_thread() is threading.main_thread() and not _interrupt.installed()
    if owner:
        _interrupt.install()
    try:
        _refuse_torchrun_except_scan(sys.argv[1:] if argv is None else argv)
        app(args=argv, prog_name="labelaudit")
    except LabelAuditError as exc:
        if os.environ.get("LABELAUDIT_DEBUG"):
            raise
        if _interrupt.pending():  # an error raised while a Ctrl-C was pending: the Ctrl-C is the answer
            _exit_interrupted()
        print(f"labelaudit: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        _exit_interrupted()
    except SystemExit as exc:
        if exc.code == 130 or _interrupt.pending():  # Typer turns Ctrl-C into a silent exit 130
            _exit_interrupted()
        raise
    finally:
        if owner:
            _interrupt.uninstall()


def run() -> None:
    """Entry point of the console script and ``python -m labelaudit``: :func:`main`, then leave at
    once, without the interpreter's teardown: a Ctrl-C in it, after Python has reset its signal
    handlers, would kill the process by the signal without a word (docs/reliability.md)."""
    _interrupt.install()
    try:
        if _interrupt.pending():  # pressed while the imports ran
            _exit_interrupted()
        main()
        status = 0
    except SystemExit as exc:
        status = exc.code
    except KeyboardInterrupt:  # pressed after main's own handling ended
        _exit_interrupted()
    signal.signal(signal.SIGINT, lambda *_: _exit_interrupted())  # the command ended: say what it left
    if isinstance(status, str):  # SystemExit("message"), as Python itself would print it
        print(status, file=sys.stderr)
        status = 1
    atexit._run_exitfuncs()  # what Python runs at exit (log handlers, multiprocessing), without the teardown
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status or 0)


def _exit_interrupted() -> None:
    """Say what a Ctrl-C left behind, and exit with status 130 now.

    An output moved into place before the Ctrl-C is complete (:data:`labelaudit._interrupt.committed`);
    an unfinished one was removed on the way up. Leaving with ``os._exit``: a KeyboardInterrupt
    that escaped code run through CPython's C API (an import, a finaliser) can make the interpreter
    kill itself by SIGINT at exit although handled (docs/reliability.md)."""
    done = [str(p) for p in _interrupt.committed]
    if done:
        print(
            f"labelaudit: interrupted after the output was written in full: {', '.join(done)} is complete",
            file=sys.stderr,
        )
    else:
        print("labelaudit: interrupted (an unfinished run directory is not kept)", file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(130)
