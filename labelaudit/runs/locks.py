"""One writer per output: an exclusive lock beside the folder a command writes."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import OutputError

try:  # POSIX; on other systems runs are not locked (the rename still makes them whole)
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None


class FolderLock:
    """An exclusive ``flock`` on ``.<name>.lock`` beside ``target``; fails at once when held."""

    def __init__(self, target: Path, option: str) -> None:
        self.target = target
        self.path = target.with_name(f".{target.name}.lock")
        self.fd: int | None = None
        self.option = option

    def acquire(self) -> None:
        """Take the lock, or raise :class:`OutputError` at once when another process holds it."""
        if fcntl is None:  # pragma: no cover
            return
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise OutputError(
                    f"another labelaudit process is writing {self.option} "
                    f"{str(self.target)!r}; "
                    f"wait for it to finish or pass another {self.option}"
                ) from None
            # The previous holder may have deleted the file between our open and flock: retry on the new one.
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                self.fd = fd
                return
            os.close(fd)

    def release(self) -> None:
        """Delete the lock file and let the lock go (nothing when it is not held)."""
        if self.fd is None:
            return
        try:
            os.unlink(self.path)
        except OSError:
            pass
        os.close(self.fd)
        self.fd = None
