"""Writers for everything labelaudit puts on disk; every write is atomic."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd

from ._atomic import atomic_path, write_text


def write_json(path: str | os.PathLike, data: dict) -> None:
    """Write ``data`` as indented JSON, atomically."""
    write_text(path, json.dumps(data, indent=2, default=_json_default) + "\n")


def write_csv(path: str | os.PathLike, frame: pd.DataFrame) -> None:
    """Write ``frame`` as CSV without the index, atomically."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


def write_skipped_csv(path: str | os.PathLike, skipped: pd.DataFrame) -> None:
    """Write the skipped files (``path, reason, detail``) as CSV, atomically."""
    write_csv(path, skipped[["path", "reason", "detail"]])


def _json_default(value):
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot serialise {type(value).__name__} to JSON")
