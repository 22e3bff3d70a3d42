"""Atomic file writes: write to a temporary name beside the target, then rename over it.

A reader never sees a half-written file, and an interrupted run leaves at most a hidden
temporary file, never a truncated output. Temporary names carry the writer's process id
(``.<name>.<pid>-<random>.tmp``), so a later run can tell the leftovers of a killed process
from the work in progress of a live one and delete only the former
(:func:`remove_stale_temporaries`).
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

_TEMP_PATTERN = re.compile(r"^\..+\.(\d+)-[0-9a-f]{8,32}\.tmp(\.[A-Za-z0-9]+)?$")


def temporary_sibling(target: str | os.PathLike, suffix: str = "") -> Path:
    """A new hidden name beside ``target`` tagged with this process's id:
    ``.<name>.<pid>-<hex>.tmp<suffix>``."""
    target = Path(target)
    return target.with_name(f".{target.name}.{os.getpid()}-{uuid.uuid4().hex[:16]}.tmp{suffix}")


def writer_pid(name: str) -> int | None:
    """The process id in a temporary name made by :func:`temporary_sibling`, else None."""
    match = _TEMP_PATTERN.match(name)
    return int(match.group(1)) if match else None


def pid_alive(pid: int) -> bool:
    """True when a process with this id exists (it may belong to another user)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):  # another user's, or not a real pid: leave it alone
        return True
    return True


def remove_stale_temporaries(folder: str | os.PathLike) -> int:
    """Delete the temporary files and folders in ``folder`` whose writing process no longer runs.

    Only names made by :func:`temporary_sibling` are considered; a temporary of a live process
    (another run in progress) is left alone. Returns how many were removed.
    """
    folder = Path(folder)
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return 0
    removed = 0
    for entry in entries:
        pid = writer_pid(entry.name)
        if pid is None or pid_alive(pid):
            continue
        try:
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
            removed += 1
        except OSError:
            pass  # gone already, or not ours to delete
    return removed


@contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path; on success rename it to ``target``, on error delete it."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_sibling(target)
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text(target: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``target`` atomically (UTF-8)."""
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")
