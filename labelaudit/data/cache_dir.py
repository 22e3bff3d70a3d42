"""The image cache's folder: where it is, and the entries in it (one per set of files).

:func:`cache_root` is the folder a run uses (``--cache-dir``, ``$LABELAUDIT_CACHE_DIR``, ...);
each entry below it is a folder named by a 24-hex-digit key (:mod:`labelaudit.data.images` keys
the decoded images by their files, :mod:`labelaudit.nets.embeddings` adds its own files beside).
"""

from __future__ import annotations

import os
from pathlib import Path

from .._atomic import remove_stale_temporaries, temporary_sibling
from ..errors import ConfigError


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """The cache folder to use: ``cache_dir`` (user-expanded), else :func:`default_cache_dir`.

    An empty ``cache_dir`` is an error, not the current folder (``Path("")`` is ``.``).
    """
    if cache_dir is None:
        return default_cache_dir()
    if not str(cache_dir).strip():
        raise ConfigError(
            "--cache-dir is empty; pass a folder for the image cache, e.g. --cache-dir "
            "~/.cache/labelaudit, or leave it out for the default"
        )
    return Path(cache_dir).expanduser()


def default_cache_dir() -> Path:
    """``$LABELAUDIT_CACHE_DIR``, else ``$XDG_CACHE_HOME/labelaudit``, else ``~/.cache/labelaudit``."""
    if os.environ.get("LABELAUDIT_CACHE_DIR"):
        return Path(os.environ["LABELAUDIT_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "labelaudit"


def open_cache_entry(root: Path, key: str) -> Path:
    """Create (or reuse) the cache entry ``root/key`` after checking that ``root`` is a writable
    folder; delete the temporaries that killed runs left in any entry under ``root``."""
    fix = "pass another --cache-dir or set LABELAUDIT_CACHE_DIR to a writable folder"
    try:
        if root.exists() and not root.is_dir():
            raise ConfigError(f"cache directory {str(root)!r} is a file, not a folder; {fix}")
        entry = root / key
        entry.mkdir(parents=True, exist_ok=True)
        probe = temporary_sibling(entry / "write-test")
        probe.open("xb").close()
        probe.unlink()
    except OSError as exc:
        raise ConfigError(
            f"cache directory {str(root)!r} cannot be written: {exc.strerror or exc}; {fix}"
        ) from exc
    for folder in entry_folders(root):
        remove_stale_temporaries(folder)
    return entry


def is_cache_key(name: str) -> bool:
    """A cache key: 24 lowercase hex digits."""
    return len(name) == 24 and all(c in "0123456789abcdef" for c in name)


def entry_folders(root: Path) -> list[Path]:
    """The cache entries under ``root``: folders named by 24 hex digits, nothing else."""
    try:
        entries = list(os.scandir(root))
    except OSError:
        return []
    return [Path(e.path) for e in entries if is_cache_key(e.name) and e.is_dir(follow_symlinks=False)]
