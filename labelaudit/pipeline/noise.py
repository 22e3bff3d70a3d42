"""Synthetic label noise for benchmarks: take labels assumed clean, flip a known share.

Kinds (docs/glossary.md "Noise kinds", docs/benchmarks.md):

- ``symm-inc``: a chosen sample's label is redrawn uniformly over all K classes (it may stay,
  so the real rate is about ``rate * (K - 1) / K``).
- ``symm-exc``: a chosen sample's label moves uniformly to one of the other K - 1 classes.
- ``asymm``: a chosen sample of a mapped class moves to its mapped class; other classes never
  flip, so the overall rate is below ``rate``.
- a full transition matrix ``T`` (``T[i, j] = P(given = j | true = i)``) read from a CSV file.
- ``confusable``: instance-dependent noise, the kind a person makes: an image is mislabelled as
  the class it resembles, and ambiguous images are mislabelled more often
  (:mod:`labelaudit.pipeline.confusable`, :func:`confusable_noise`).
- a flip table: the given label of each listed sample, from the user (:func:`read_flip_table`,
  in :mod:`labelaudit.pipeline.noisy_dataset` with :class:`NoisyLabels` and
  :func:`write_noisy_dataset`).

Exactly ``round(rate * n_c)`` samples of each class ``c`` are chosen (a full ``T`` is realised
per row by largest remainders; ``confusable`` chooses ``round(rate * N)`` over the whole
dataset), so the realised rates match the request up to rounding, and the same seed gives the
same noise. The real rate is always reported.
"""

from __future__ import annotations

import os
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from ..data.images import load_images
from ..data.sources import SampleTable, read_table
from ..errors import ConfigError
from .confusable import confusable_flips, confusion_probabilities, pixel_features

# The `name as name` imports keep names importable from here, where they were defined before the split.
from .confusable import inclusion_probabilities as inclusion_probabilities
from .confusable import systematic_sample as systematic_sample
from .noisy_dataset import NoisyLabels
from .noisy_dataset import read_flip_table as read_flip_table
from .noisy_dataset import write_noisy_dataset as write_noisy_dataset

KINDS = ("symm-inc", "symm-exc", "asymm", "confusable")

# Asymmetric maps of the papers: (from, to) pairs by canonical class index, with the names each
# index may carry in a dataset (compared lower-case, letters and digits only).
NAMED_MAPS: dict[str, dict] = {
    "cifar10": {
        "pairs": [
            (9, 1),
            (2, 0),
            (4, 7),
            (3, 5),
            (5, 3),
        ],  # truck->automobile, bird->airplane, deer->horse, cat<->dog
        "names": {
            0: ["airplane", "plane"],
            1: ["automobile", "car"],
            2: ["bird"],
            3: ["cat"],
            4: ["deer"],
            5: ["dog"],
            7: ["horse"],
            9: ["truck"],
        },
    },
    "fashion-mnist": {
        "pairs": [
            (9, 7),
            (7, 5),
            (2, 6),
            (4, 3),
            (3, 4),
        ],  # boot->sneaker, sneaker->sandal, pullover->shirt, coat<->dress
        "names": {
            2: ["pullover"],
            3: ["dress"],
            4: ["coat"],
            5: ["sandal"],
            6: ["shirt"],
            7: ["sneaker"],
            9: ["ankleboot", "boot"],
        },
    },
    "mnist": {
        "pairs": [(2, 7), (3, 8), (7, 1), (5, 6), (6, 5)],
        "names": {d: [str(d)] for d in range(10)},
    },
}


def _norm(name: str) -> str:
    return re.sub(r"[^0-9a-z]", "", str(name).lower())


def resolve_named_map(name: str, class_names: tuple[str, ...]) -> list[tuple[int, int]]:
    """``(from, to)`` class-index pairs of a named map for this dataset's classes.

    Classes are matched by name (case and punctuation ignored); a dataset whose classes are the
    integers 0..9 is matched by index.
    """
    if name not in NAMED_MAPS:
        raise ConfigError(f"unknown noise map {name!r}; use one of {sorted(NAMED_MAPS)} or a CSV file")
    spec = NAMED_MAPS[name]
    by_name = {_norm(c): i for i, c in enumerate(class_names)}
    numeric = [str(i) for i in range(len(class_names))] == [str(c) for c in class_names]
    position: dict[int, int] = {}
    for canonical, aliases in spec["names"].items():
        found = next((by_name[_norm(a)] for a in aliases if _norm(a) in by_name), None)
        if found is None and numeric and canonical < len(class_names):
            found = canonical
        if found is not None:
            position[canonical] = found
    needed = sorted({c for pair in spec["pairs"] for c in pair})
    missing = [spec["names"][c][0] for c in needed if c not in position]
    if missing:
        raise ConfigError(
            f"noise map {name!r} names classes this dataset does not have ({', '.join(missing)}; classes: "
            f"{list(class_names)}); pass --map FILE with from,to columns instead"
        )
    return [(position[a], position[b]) for a, b in spec["pairs"]]


def read_map_file(
    path: str | os.PathLike, class_names: tuple[str, ...]
) -> tuple[list[tuple[int, int]] | None, np.ndarray | None]:
    """A CSV/parquet noise file: either ``from,to`` columns (a map) or a K x K matrix whose first
    column and header are class names (a full ``T``, rows summing to 1). Returns ``(pairs, None)``
    or ``(None, T)``."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(
            f"noise map {str(path)!r} does not exist; pass cifar10, fashion-mnist, mnist or a CSV file"
        )
    frame = read_table(path, "noise map")
    index = {str(c): i for i, c in enumerate(class_names)}
    if {"from", "to"} <= set(frame.columns):
        unknown = sorted({str(v) for v in pd.concat([frame["from"], frame["to"]])} - set(index))
        if unknown:
            raise ConfigError(
                f"noise map {path.name!r} names class {unknown[0]!r} that is not in the dataset "
                f"{list(class_names)}"
            )
        pairs = [(index[str(a)], index[str(b)]) for a, b in zip(frame["from"], frame["to"])]
        sources = [a for a, _ in pairs]
        if len(set(sources)) != len(sources):
            raise ConfigError(
                f"noise map {path.name!r} maps a class twice; give each 'from' class one 'to' class"
            )
        return pairs, None
    frame = frame.set_index(frame.columns[0])
    rows, cols = [str(r) for r in frame.index], [str(c) for c in frame.columns]
    if sorted(rows) != sorted(class_names) or sorted(cols) != sorted(class_names):
        raise ConfigError(
            f"noise file {path.name!r} is neither a from,to map nor a {len(class_names)}x{len(class_names)} "
            "matrix "
            f"with the dataset's classes as row and column names {list(class_names)}"
        )
    frame.index, frame.columns = rows, cols
    try:
        t = frame.loc[list(class_names), list(class_names)].to_numpy(dtype=np.float64)
    except ValueError:
        raise ConfigError(
            f"noise matrix {path.name!r} has a cell that is not a number; every T[i, j] must be a probability"
        ) from None
    if (t < 0).any() or not np.allclose(t.sum(axis=1), 1.0, atol=1e-6):
        raise ConfigError(
            f"noise matrix {path.name!r} must have non-negative rows summing to 1 (T[i, j] = P(given j | "
            "true i))"
        )
    return None, t


def inject_noise(
    labels: np.ndarray,
    class_names: tuple[str, ...],
    kind: str,
    rate: float | None = None,
    *,
    noise_map: str | os.PathLike | None = None,
    confusion: np.ndarray | None = None,
    seed: int = 0,
) -> NoisyLabels:
    """Flip labels on purpose.

    Parameters
    ----------
    labels : (N,) int array
        Labels assumed clean (indexes into ``class_names``).
    kind : {"symm-inc", "symm-exc", "asymm", "confusable"}
    rate : float in [0, 1]
        Share of each class chosen for flipping (``asymm``: of each mapped class; ``confusable``:
        of the whole dataset). Not used with a full transition matrix.
    noise_map : str or path, optional
        ``asymm`` only: a named map (``cifar10``, ``fashion-mnist``, ``mnist``) or a CSV file
        (see :func:`read_map_file`).
    confusion : array of shape ``(N, K)``, optional
        ``confusable`` only (and required): how much each image resembles each class, e.g.
        :func:`confusion_probabilities`. Sample ``n`` can only move to its most probable other
        class ``o_n``; it is flipped with probability ``min(1, s * confusion[n, o_n])``, with ``s``
        set so that these probabilities sum to ``round(rate * N)``, and exactly that many samples
        are drawn (systematic sampling in random order, which keeps each sample's probability).
    seed : int
    """
    labels = np.asarray(labels, dtype=np.int64)
    k = len(class_names)
    if kind not in KINDS:
        raise ConfigError(f"noise kind must be one of {list(KINDS)}; got {kind!r}")
    if kind != "asymm" and noise_map is not None:
        raise ConfigError(f"--map applies to --kind asymm only; got --kind {kind}")
    if (kind == "confusable") != (confusion is not None):
        raise ConfigError("confusion probabilities go with --kind confusable, and it needs them")
    pairs = t = None
    if kind == "asymm":
        if noise_map is None:
            raise ConfigError("--kind asymm needs --map: cifar10, fashion-mnist, mnist or a CSV file")
        if str(noise_map) in NAMED_MAPS:
            pairs = resolve_named_map(str(noise_map), class_names)
        else:
            pairs, t = read_map_file(noise_map, class_names)
    if t is None and (rate is None or not 0 <= rate <= 1):
        raise ConfigError(f"--rate must be in [0, 1]; got {rate!r}")
    if t is not None and rate is not None:
        raise ConfigError("a full noise matrix sets every rate itself; leave out --rate")

    rng = np.random.default_rng(seed)
    if kind == "confusable":
        return confusable_flips(labels, tuple(class_names), rate, confusion, rng)
    noisy = labels.copy()
    for c in range(k):
        members = np.flatnonzero(labels == c)
        if t is not None:
            counts = _largest_remainder(t[c] * len(members))
            noisy[rng.permutation(members)] = np.repeat(np.arange(k), counts)
            continue
        chosen = rng.choice(members, size=int(round(rate * len(members))), replace=False)
        if kind == "symm-inc":
            noisy[chosen] = rng.integers(0, k, size=len(chosen))
        elif kind == "symm-exc":
            noisy[chosen] = (c + rng.integers(1, k, size=len(chosen))) % k
        else:
            target = dict(pairs).get(c)
            if target is not None:
                noisy[chosen] = target
    mapping = {class_names[a]: class_names[b] for a, b in pairs} if pairs else None
    return NoisyLabels(labels, noisy, kind if t is None else "matrix", rate, mapping, tuple(class_names))


def confusable_noise(
    table: SampleTable,
    rate: float,
    *,
    seed: int = 0,
    cache_dir=None,
    workers: int | None = None,
    progress=None,
) -> NoisyLabels:
    """``confusable`` noise for a whole sample table: decode its images (through the image
    cache), score them with :func:`confusion_probabilities` and draw with :func:`inject_noise`.

    The classifier is the same for every ``seed`` (its folds use seed 0): the seed changes only
    which samples are drawn. An image that cannot be decoded keeps its label (weight 0).
    """
    store = load_images(
        table, cache_dir=cache_dir, workers=workers, progress=progress, require_all_classes=False
    )
    if progress:
        progress("confusion classifier", 0, 1, "logistic regression on pixels")
    usable = store.table.samples
    probs, recipe = confusion_probabilities(
        pixel_features(store), usable["given_label"].to_numpy(), table.num_classes
    )
    if progress:
        progress("confusion classifier", 1, 1, f"accuracy {recipe['out_of_fold_accuracy']:.1%}")
    labels = table.samples["given_label"].to_numpy().astype(np.int64)
    confusion = np.eye(table.num_classes)[labels]  # undecodable images: no other class, never flipped
    row = pd.Series(np.arange(len(table)), index=table.samples["sample_id"].to_numpy())
    confusion[row.loc[usable["sample_id"].to_numpy()].to_numpy()] = probs
    recipe["skipped_images"] = int(len(table) - len(usable))
    noisy = inject_noise(labels, table.class_names, "confusable", rate, confusion=confusion, seed=seed)
    return replace(noisy, recipe=recipe)


def _largest_remainder(expected: np.ndarray) -> np.ndarray:
    """Integer counts summing to ``round(sum(expected))`` closest to ``expected``."""
    floor = np.floor(expected).astype(np.int64)
    short = int(round(expected.sum())) - int(floor.sum())
    order = np.argsort(-(expected - floor), kind="stable")
    floor[order[:short]] += 1
    return floor
