"""Shared fixtures: real image files written to a temporary folder, and an isolated cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory, monkeypatch) -> Path:
    """Every test gets its own empty image cache outside its input folders."""
    cache = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("LABELAUDIT_CACHE_DIR", str(cache))
    return cache


def save_image(path: Path, array: np.ndarray | None = None, mode: str = "L", size=(12, 12), seed: int = 0, **save_kwargs) -> Path:
    """Write a real image file; random pixels unless ``array`` is given."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if array is None:
        rng = np.random.default_rng(seed)
        channels = {"L": None, "RGB": 3, "RGBA": 4}[mode]
        shape = (size[1], size[0]) if channels is None else (size[1], size[0], channels)
        array = rng.integers(0, 256, size=shape, dtype=np.uint8)
    Image.fromarray(array, mode=mode).save(path, **save_kwargs)
    return path


def make_folder_dataset(root: Path, classes=("cat", "dog"), per_class: int = 3, mode: str = "L") -> Path:
    """A small image folder dataset with distinct random images."""
    seed = 0
    for name in classes:
        for i in range(per_class):
            seed += 1
            save_image(root / name / f"{name}_{i}.png", mode=mode, seed=seed)
    return root
