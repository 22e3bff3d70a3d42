"""Shared fixtures: real image files written to a temporary folder, and an isolated cache."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


@pytest.fixture(autouse=True, scope="session")
def own_cpu_slots(tmp_path_factory):
    """The suite's runs take turns on the CPUs among themselves only (labelaudit.resources): a scan
    elsewhere on the machine would otherwise make a test's scan wait and print a warning."""
    previous = os.environ.get("LABELAUDIT_CPU_SLOTS")
    os.environ["LABELAUDIT_CPU_SLOTS"] = str(tmp_path_factory.mktemp("cpu-slots"))
    yield
    if previous is None:
        os.environ.pop("LABELAUDIT_CPU_SLOTS", None)
    else:
        os.environ["LABELAUDIT_CPU_SLOTS"] = previous


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory, monkeypatch) -> Path:
    """Every test gets its own empty image cache outside its input folders."""
    cache = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("LABELAUDIT_CACHE_DIR", str(cache))
    return cache


def run_cli(argv, capsys):
    """Run the ``labelaudit`` CLI in-process on ``argv`` (paths allowed); return (exit code, stdout,
    stderr)."""
    from labelaudit.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return exit_info.value.code, out, err


def save_image(
    path: Path, array: np.ndarray | None = None, mode: str = "L", size=(12, 12), seed: int = 0, **save_kwargs
) -> Path:
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


PATTERN_CLASSES = ("horizontal", "vertical", "checker", "blob")


def pattern_image(kind: str, rng: np.random.Generator, size: int = 16) -> np.ndarray:
    """A grayscale ``size x size`` image of a simple pattern with random phase, period and noise.

    The four kinds stay distinct under horizontal flips, so flip augmentation is fair.
    """
    yy, xx = np.mgrid[0:size, 0:size].astype(float)
    period = rng.uniform(3.5, 5.5)
    phase = rng.uniform(0, 2 * np.pi)
    if kind == "horizontal":
        img = np.sin(2 * np.pi * yy / period + phase)
    elif kind == "vertical":
        img = np.sin(2 * np.pi * xx / period + phase)
    elif kind == "checker":
        img = np.sin(2 * np.pi * xx / period + phase) * np.sin(2 * np.pi * yy / period + phase)
    else:
        cy, cx = rng.uniform(size * 0.35, size * 0.65, 2)
        img = 1.5 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * (size / 5) ** 2)) - 0.5
    img = img + rng.normal(0, 0.35, img.shape)
    return np.clip(127.5 + 100 * img, 0, 255).astype(np.uint8)


def make_noisy_pattern_dataset(root: Path, per_class: int = 60, noise_rate: float = 0.2, seed: int = 0):
    """Write a folder dataset of pattern images with a known share filed under a wrong class.

    Returns the truth as a DataFrame (``sample_id, path, given_label, true_label, is_noisy``),
    also written to ``root.parent / (root.name + "_truth.csv")``.
    """
    import pandas as pd

    rng = np.random.default_rng(seed)
    k = len(PATTERN_CLASSES)
    true = np.repeat(np.arange(k), per_class)
    noisy = np.zeros(len(true), dtype=bool)
    noisy[rng.choice(len(true), size=int(round(noise_rate * len(true))), replace=False)] = True
    given = np.where(noisy, (true + rng.integers(1, k, len(true))) % k, true)
    rows = []
    for i, (t, g) in enumerate(zip(true, given)):
        sample_id = f"{PATTERN_CLASSES[g]}/img_{i:04d}.png"
        save_image(root / sample_id, pattern_image(PATTERN_CLASSES[t], rng))
        rows.append(
            {
                "sample_id": sample_id,
                "path": str(root / sample_id),
                "given_label": PATTERN_CLASSES[g],
                "true_label": PATTERN_CLASSES[t],
                "is_noisy": bool(noisy[i]),
            }
        )
    truth = pd.DataFrame(rows)
    truth.to_csv(root.parent / f"{root.name}_truth.csv", index=False)
    return truth


def table_of(given, names=("a", "b", "c")):
    """A SampleTable of ``len(given)`` hand-made samples (no files) given the label indexes
    ``given`` over ``names``: for tests of the audit on hand-made soft labels."""
    import pandas as pd

    from labelaudit.data.sources import SampleTable

    n = len(given)
    samples = pd.DataFrame(
        {
            "sample_id": [f"s{i}" for i in range(n)],
            "path": [f"/data/s{i}.png" for i in range(n)],
            "label": [names[g] for g in given],
            "given_label": np.array(given, dtype=np.int64),
            "file_size": 1,
            "mtime_ns": 1,
        }
    )
    return SampleTable(samples, tuple(names), Path("/data"), "folder")
