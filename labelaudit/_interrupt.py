"""Ctrl-C that always ends the same way: exit 130, one line, and every output whole or absent.

Python raises KeyboardInterrupt wherever the main thread happens to be. Raised inside a
``__del__``, a weakref callback or a generator's cleanup it is printed as "Exception ignored"
and lost, and the command runs on to the end; raised between an output's rename and the
bookkeeping after it, the CLI would call a finished output unfinished; and during the
interpreter's teardown, after the handlers are reset, the process dies by the signal.

The CLI calls :func:`install`. A SIGINT then records that an interrupt is pending and raises
KeyboardInterrupt, unless a :func:`deferred` block (moving a finished output into place) is
running, where it waits for the block's end. :func:`check` raises an interrupt that was lost;
:class:`labelaudit.runs.directory.RunDirectory` calls it before it commits, so an interrupted run never
appears, and records each output it moved into place in :data:`committed`.

Without :func:`install` (a program that imports labelaudit), nothing here changes how Ctrl-C
behaves: :func:`check` finds nothing pending, and :func:`deferred` only defers when installed.
"""

from __future__ import annotations

import signal
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

_state = {"installed": False, "pending": False, "deferring": 0}

#: Outputs moved into place (whole) since :func:`install`: an interrupt after one of these left it complete.
committed: list[Path] = []


def _on_sigint(signum, frame) -> None:
    _state["pending"] = True
    if not _state["deferring"]:
        raise KeyboardInterrupt


def _quiet_lost_interrupts(unraisable) -> None:
    """A KeyboardInterrupt raised where Python cannot pass it on is pending: not printed, raised
    again by :func:`check`. Everything else is reported as usual."""
    if not isinstance(unraisable.exc_value, KeyboardInterrupt):
        sys.__unraisablehook__(unraisable)


def _record_only(signum, frame) -> None:
    _state["pending"] = True


def hold_while_importing() -> None:
    """Record a Ctrl-C without raising until :func:`install`: the console script calls this
    first, so a Ctrl-C during its imports (a third of a second) no longer ends the process by
    the signal with a traceback; :func:`install` keeps it pending and the CLI exits 130."""
    signal.signal(signal.SIGINT, _record_only)


def install() -> None:
    """Handle SIGINT as described above, from now on in this process (main thread only). A
    Ctrl-C recorded by :func:`hold_while_importing` stays pending."""
    before = signal.getsignal(signal.SIGINT)
    held = before is _record_only and _state["pending"]
    _state.update(installed=True, pending=held, deferring=0, previous=(before, sys.unraisablehook))
    committed.clear()
    signal.signal(signal.SIGINT, _on_sigint)
    sys.unraisablehook = _quiet_lost_interrupts


def uninstall() -> None:
    """The Ctrl-C handling from before :func:`install` again (the CLI run in-process, as the tests do)."""
    if _state["installed"]:
        handler, hook = _state["previous"]
        signal.signal(
            signal.SIGINT, signal.default_int_handler if handler in (None, _record_only) else handler
        )
        sys.unraisablehook = hook
        _state.update(installed=False, pending=False, deferring=0)


def installed() -> bool:
    """True between :func:`install` and :func:`uninstall`."""
    return _state["installed"]


def pending() -> bool:
    """True once a Ctrl-C arrived (since :func:`install`)."""
    return _state["pending"]


def check() -> None:
    """Raise KeyboardInterrupt when a Ctrl-C arrived and was lost on the way."""
    if _state["pending"]:
        raise KeyboardInterrupt


@contextmanager
def deferred() -> Iterator[None]:
    """Run the block to its end even if Ctrl-C is pressed meanwhile; then raise it."""
    _state["deferring"] += 1
    try:
        yield
    finally:
        _state["deferring"] -= 1
    if not _state["deferring"]:
        check()
