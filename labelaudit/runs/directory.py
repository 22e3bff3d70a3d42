"""Where a command may write, and output folders that appear whole or not at all.

Every command that writes follows the same rules (docs/reliability.md):

- **Inputs are never written.** An output may not be one of the command's inputs (manifest,
  truth file, model, map file), lie inside an input folder (the image folders), or be a folder
  that holds an input: replacing it would delete the input. Paths are compared after resolving
  symlinks.
- **Foreign folders are never replaced.** An existing non-empty ``--out`` folder is used only
  when it is a labelaudit output of the same command, and only with ``overwrite=True``
  (``--overwrite``), which replaces the whole folder. An output is recognised by the marker
  :data:`MARKER` that labelaudit writes into it, listing every entry it wrote; a folder whose
  marker is missing, or that holds anything the marker does not list (a reviewer's notes, a
  spreadsheet saved there) is never replaced. ``review/`` and ``plots/``, which labelaudit adds
  to a finished scan later, count as its own.
- **All or nothing.** A run is written into a hidden temporary sibling
  (``.<name>.<pid>-<hex>.tmp``) and renamed into place at the end, so a reader sees the old
  folder or the new one, never a mix; a killed run leaves only the temporary, which the next
  run of the same ``--out`` deletes.
- **One writer.** A lock (``fcntl.flock`` on ``.<name>.lock`` beside the folder) is held from
  the first check to the final rename; a second run into the same ``--out`` fails at once.
- **Fail before working.** All of this is checked, and the temporary created, before any
  decoding or training, so a bad ``--out`` costs nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import shutil
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

from .. import _interrupt
from .._atomic import remove_stale_temporaries, temporary_sibling
from ..errors import OutputError
from .fingerprints import check_matrix_fingerprint, data_fingerprint
from .locks import FolderLock
from .markers import (
    KINDS,
    LATER_ENTRIES,
    LEGACY_ENTRIES,
    MARKER,
    MARKER_FORMAT_VERSION,
    foreign_entries,
    output_kind,
    read_marker,
    write_marker,
)

#: The names importable from here: this module's own, and those of the marker, the lock and the
#: fingerprints, which moved to their own modules.
__all__ = [
    "KINDS",
    "LATER_ENTRIES",
    "LEGACY_ENTRIES",
    "MARKER",
    "MARKER_FORMAT_VERSION",
    "FolderLock",
    "RunDirectory",
    "as_run_directory",
    "check_matrix_fingerprint",
    "check_not_input",
    "check_output_folder",
    "data_fingerprint",
    "foreign_entries",
    "input_paths",
    "output_kind",
    "output_path",
    "prepare_output_file",
    "read_marker",
    "replace_folder",
    "write_marker",
]


def output_path(text: str | os.PathLike | None, option: str = "--out") -> Path | None:
    """``--out`` text as a path; an empty string is an error (it would mean the current folder),
    and so is a name that is not UTF-8 text (the run's own files could not record it)."""
    if text is None:
        return None
    if not str(text).strip():
        raise OutputError(f"{option} is empty; pass the folder or file to write, e.g. {option} runs/audit1")
    try:
        str(text).encode("utf-8")
    except UnicodeEncodeError:
        shown = os.fsencode(str(text)).decode("utf-8", "backslashreplace")
        raise OutputError(f"{option} {shown!r} is not valid UTF-8 text; pass a name in UTF-8") from None
    return Path(text).expanduser()


def input_paths(table=None, extra: Iterable[str | os.PathLike | None] = ()) -> list[Path]:
    """The resolved paths a command reads: ``table``'s source and every folder holding one of its
    images, resolved (a class folder that is a symlink leads elsewhere), plus ``extra`` files or
    folders (None entries are ignored)."""
    paths = [Path(p).expanduser().resolve() for p in extra if p is not None and str(p) != ""]
    if table is not None:
        source = Path(table.source).resolve()
        paths.append(source)
        from ..data.sources import parent_folders

        folders = parent_folders(table.samples["path"]) | parent_folders(table.skipped["path"])
        for folder in sorted(f for f in folders if f):
            real = Path(os.path.realpath(folder))
            if table.kind != "folder" or (real != source and source not in real.parents):
                paths.append(real)
    return list(dict.fromkeys(paths))


def check_not_input(
    target: str | os.PathLike, inputs: Sequence[Path], *, option: str = "--out", holds_files: bool = True
) -> Path:
    """Raise :class:`OutputError` unless writing ``target`` leaves every input untouched.

    ``target`` may not be an input, lie inside an input folder, or (``holds_files=True``, an
    output folder) contain an input. Returns ``target`` resolved.
    """
    out = Path(target).expanduser().resolve()
    for path in inputs:
        if out == path:
            raise OutputError(
                f"{option} {str(target)!r} is one of the inputs ({str(path)!r}); labelaudit "
                "never "
                f"writes over its inputs: pass {option} elsewhere"
            )
        if path.is_dir() and path in out.parents:
            raise OutputError(
                f"{option} {str(target)!r} is inside the input folder {str(path)!r}; "
                "labelaudit never "
                f"writes into its inputs: pass {option} elsewhere"
            )
        if holds_files and out in path.parents:
            raise OutputError(
                f"{option} {str(target)!r} holds the input {str(path)!r}, which writing there "
                "could "
                f"replace; pass {option} elsewhere"
            )
    return out


def check_output_folder(out: Path, kind: str, *, overwrite: bool, option: str = "--out") -> bool:
    """Raise :class:`OutputError` unless ``out`` may receive a ``kind`` output; True when it exists
    and will be replaced. A file, a mount point, a foreign non-empty folder, an output holding
    files labelaudit did not write, or an earlier output of the same command without
    ``overwrite`` are refused."""
    try:
        exists, is_dir = out.exists(), out.is_dir()
        empty = not exists or not is_dir or not any(out.iterdir())
    except OSError as exc:  # e.g. a name too long for the file system
        raise OutputError(
            f"cannot use {option} {str(out)!r} ({exc.strerror or exc}); pass another path"
        ) from None
    if exists and not is_dir:
        raise OutputError(f"{option} {str(out)!r} is a file, not a folder; pass a folder path")
    if exists and os.path.ismount(out):
        raise OutputError(
            f"{option} {str(out)!r} is a mount point, which cannot be replaced by renaming; "
            "labelaudit "
            f"writes the run beside {option} and renames it into place: pass a folder inside "
            "it, "
            f"e.g. {option} {str(out / 'run1')!r}"
        )
    if empty:
        return exists
    found = output_kind(out)
    if found != kind:
        what = f"the output of labelaudit {found}" if found else "files that labelaudit did not write"
        raise OutputError(
            f"{option} {str(out)!r} is not empty (it holds {what}); pass a new or empty folder "
            f"(labelaudit replaces only an earlier {kind} output, with --overwrite)"
        )
    extra = foreign_entries(out)
    if extra:
        shown = ", ".join(extra[:3]) + (f" and {len(extra) - 3} more" if len(extra) > 3 else "")
        raise OutputError(
            f"{option} {str(out)!r} holds an earlier {kind} output and files labelaudit did "
            "not write "
            f"there ({shown}), which replacing it would delete; move them out or pass another "
            f"{option}"
        )
    if not overwrite:
        raise OutputError(
            f"{option} {str(out)!r} holds an earlier {kind} output; pass --overwrite to "
            "replace it "
            f"or another {option}"
        )
    return True


class RunDirectory:
    """An output folder written all or nothing.

    >>> with RunDirectory("runs/a", "scan", inputs=input_paths(table)) as run:  # doctest: +SKIP
    ...     (run.tmp / "summary.json").write_text("{}")
    ... # renamed to runs/a here; on an exception nothing appears and the temporary is deleted

    A writer given the opened directory (e.g. :func:`labelaudit.write_run`) may commit it
    itself; leaving the ``with`` block then only returns.

    Opening checks the rules in the module docstring, takes the lock, removes what killed runs
    left behind and creates the temporary folder :attr:`tmp` (so an unwritable place fails now).
    :meth:`commit` renames it into place (exchanging it atomically with an earlier output under
    ``overwrite``, where the OS allows) and releases the lock.
    """

    def __init__(
        self,
        out: str | os.PathLike,
        kind: str,
        *,
        inputs: Sequence[Path] = (),
        overwrite: bool = False,
        option: str = "--out",
    ) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown output kind {kind!r}")
        self.kind, self.overwrite, self.option = kind, overwrite, option
        self.inputs = list(inputs)
        self.path = check_not_input(output_path(out, option), self.inputs, option=option)
        self.tmp: Path | None = None
        self.committed = False
        self._lock = FolderLock(self.path, option)

    def open(self) -> "RunDirectory":
        check_output_folder(self.path, self.kind, overwrite=self.overwrite, option=self.option)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._lock.acquire()
        except OSError as exc:
            raise self._unwritable(exc) from None
        try:
            remove_stale_temporaries(self.path.parent)
            check_output_folder(
                self.path, self.kind, overwrite=self.overwrite, option=self.option
            )  # under the lock
            self.tmp = temporary_sibling(self.path)
            self.tmp.mkdir()
        except OSError as exc:
            self._lock.release()
            raise self._unwritable(exc) from None
        except BaseException:
            self._lock.release()
            raise
        return self

    def _unwritable(self, exc: OSError) -> OutputError:
        return OutputError(
            f"cannot write {self.option} {str(self.path)!r}: labelaudit creates the run beside it, in "
            f"{str(self.path.parent)!r}, and renames it into place, and that failed ({exc.strerror or exc}); "
            "pass "
            f"{self.option} in a folder you can write to"
        )

    def commit(self) -> Path:
        """Move the finished output into place and release the lock; returns the folder.

        Calling it again (e.g. from ``__exit__`` after a writer committed) returns the folder. If
        ``--out`` changed meanwhile so that it may no longer be replaced (someone put files
        there), the finished output is kept beside it under a new name, given in the error.
        """
        if self.committed:
            return self.path
        if self.tmp is None:
            raise RuntimeError("RunDirectory.commit() before open()")
        try:
            write_marker(self.tmp, self.kind)
            try:
                replacing = check_output_folder(
                    self.path, self.kind, overwrite=self.overwrite, option=self.option
                )
            except OutputError as exc:
                kept = self.path.with_name(f"{self.path.name}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}")
                os.rename(self.tmp, kept)
                self.tmp = None
                raise OutputError(
                    f"{exc}; the finished {self.kind} output was kept in {str(kept)!r}"
                ) from None
            if replacing and not any(self.path.iterdir()):
                self.path.rmdir()  # empty: nothing to keep aside
            _interrupt.check()  # a Ctrl-C lost on the way: the unfinished output must not appear
            with _interrupt.deferred():  # a Ctrl-C now waits until the output is in place and recorded
                replace_folder(self.tmp, self.path)
                self.tmp = None
                self.committed = True
                _interrupt.committed.append(self.path)
            return self.path
        finally:
            self.abort()

    def abort(self) -> None:
        """Delete the temporary folder (if any) and release the lock."""
        if self.tmp is not None and self.tmp.exists():
            shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp = None
        self._lock.release()

    @contextmanager
    def writing(self) -> Iterator[Path]:
        """The temporary folder (opened first if need be) for the block to write into: moved into
        place when the block ends (:meth:`commit`), deleted if it raises (:meth:`abort`)."""
        if self.tmp is None and not self.committed:
            self.open()
        try:
            yield self.tmp
        except BaseException:
            self.abort()
            raise
        self.commit()

    def __enter__(self) -> "RunDirectory":
        return self.open()

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()


def as_run_directory(
    out: str | os.PathLike | RunDirectory,
    kind: str,
    *,
    inputs: Callable[[], Sequence[Path]],
    overwrite: bool = False,
) -> RunDirectory:
    """The output folder of a ``write_*`` function that takes a path or an opened directory.

    ``out`` itself when it is a :class:`RunDirectory` (a command opened it before its long work, so
    a bad ``--out`` failed first), else a new ``kind`` :class:`RunDirectory` at the path ``out``
    that may not be, hold or lie inside any of ``inputs()``. ``inputs`` is called only for a path:
    an opened directory was checked against its inputs when it was made.
    """
    if isinstance(out, RunDirectory):
        return out
    return RunDirectory(out, kind, inputs=inputs(), overwrite=overwrite)


def replace_folder(tmp: Path, target: Path) -> None:
    """Rename the finished folder ``tmp`` to ``target``, replacing an existing ``target``.

    The earlier ``target`` is swapped out atomically where the OS allows (``renameat2``
    exchange), else moved aside first and put back if the rename fails; it is then deleted, best
    effort (what stays behind is a stale temporary that a later run removes).
    """
    if not target.exists():
        os.rename(tmp, target)
        return
    if _exchange(tmp, target):
        shutil.rmtree(tmp, ignore_errors=True)  # now holds the earlier folder
        return
    aside = temporary_sibling(target)
    os.rename(target, aside)
    try:
        os.rename(tmp, target)
    except BaseException:
        os.rename(aside, target)
        raise
    shutil.rmtree(aside, ignore_errors=True)


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths with Linux ``renameat2(RENAME_EXCHANGE)``; False where unsupported."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    result = renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange)
    return result == 0


def prepare_output_file(
    target: str | os.PathLike,
    inputs: Sequence[Path],
    *,
    overwrite: bool,
    option: str = "--out",
    suffixes: Sequence[str] = (),
) -> Path:
    """Check a single output file before any work: not an input nor inside an input folder, not a
    folder, an existing file only with ``overwrite``, and its folder writable. Returns it resolved."""
    out = check_not_input(output_path(target, option), inputs, option=option, holds_files=False)
    if suffixes and out.suffix.lower() not in suffixes:
        raise OutputError(f"{option} {str(target)!r} must end in {' or '.join(suffixes)}")
    if out.is_dir():
        raise OutputError(
            f"{option} {str(target)!r} is a folder; pass a file name ending in "
            f"{' or '.join(suffixes) or 'a suffix'}"
        )
    if out.exists() and not overwrite:
        raise OutputError(
            f"{option} {str(target)!r} exists; pass --overwrite to replace it or another {option}"
        )
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        probe = temporary_sibling(out)
        probe.touch()
        probe.unlink()
    except OSError as exc:
        raise OutputError(
            f"cannot write {option} {str(target)!r} ({exc.strerror or exc}); pass a path you can write to"
        ) from None
    return out
