"""Synthetic label noise for benchmarks: take labels assumed clean, flip a known share.

Kinds (../shared/METHODS.md "Noise kinds for benchmarks"):

- ``symm-inc``: a chosen sample's label is redrawn uniformly over all K classes (it may stay,
  so the real rate is about ``rate * (K - 1) / K``).
- ``symm-exc``: a chosen sample's label moves uniformly to one of the other K - 1 classes.
- ``asymm``: a chosen sample of a mapped class moves to its mapped class; other classes never
  flip, so the overall rate is below ``rate``.
- a full transition matrix ``T`` (``T[i, j] = P(given = j | true = i)``) read from a CSV file.
- ``confusable``: instance-dependent noise, the kind a person makes: an image is mislabelled as
  the class it resembles, and ambiguous images are mislabelled more often
  (:func:`confusion_probabilities`, :func:`inject_noise`).
- a flip table: the given label of each listed sample, from the user (:func:`read_flip_table`).

Exactly ``round(rate * n_c)`` samples of each class ``c`` are chosen (a full ``T`` is realised
per row by largest remainders; ``confusable`` chooses ``round(rate * N)`` over the whole
dataset), so the realised rates match the request up to rounding, and the same seed gives the
same noise. The real rate is always reported.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from ..audit.estimators import transition_matrix
from ..data.sources import SampleTable, read_table
from ..errors import ConfigError

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


@dataclass(frozen=True)
class NoisyLabels:
    """The result of an injection: new given labels and what was done."""

    true_labels: np.ndarray  # (N,) int64, the input labels
    noisy_labels: np.ndarray  # (N,) int64
    kind: str
    requested_rate: float | None
    mapping: dict[str, str] | None  # asymm: class -> class it flips to
    class_names: tuple[str, ...]
    #: confusable: ``(N,)`` each sample's probability of having been flipped (its inclusion probability)
    flip_probability: np.ndarray | None = None
    #: confusable: how the confusion classifier was fitted and how well it did (noise.json ``recipe``)
    recipe: dict | None = None

    @property
    def is_noisy(self) -> np.ndarray:
        return self.noisy_labels != self.true_labels

    @property
    def real_rate(self) -> float:
        return float(self.is_noisy.mean())

    def transition_matrix(self) -> np.ndarray:
        return transition_matrix(self.true_labels, self.noisy_labels, len(self.class_names))


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
        return _confusable(labels, tuple(class_names), rate, confusion, rng)
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


def _confusable(
    labels: np.ndarray,
    class_names: tuple[str, ...],
    rate: float,
    confusion: np.ndarray,
    rng: np.random.Generator,
) -> NoisyLabels:
    n, k = len(labels), len(class_names)
    confusion = np.asarray(confusion, dtype=np.float64)
    if confusion.shape != (n, k) or not np.isfinite(confusion).all() or (confusion < 0).any():
        raise ConfigError(
            f"confusion probabilities must be a finite non-negative ({n}, {k}) array; got {confusion.shape}"
        )
    others = confusion.copy()
    others[np.arange(n), labels] = -np.inf
    target = others.argmax(axis=1)
    weight = others[np.arange(n), target]
    wanted = int(round(rate * n))
    if wanted > int((weight > 0).sum()):
        raise ConfigError(
            f"--rate {rate:g} asks for {wanted} flips but only {int((weight > 0).sum())} images resemble "
            "another class at all; lower --rate"
        )
    probability = inclusion_probabilities(weight, wanted)
    chosen = systematic_sample(probability, rng)
    noisy = labels.copy()
    noisy[chosen] = target[chosen]
    emptied = [c for c in np.unique(labels) if not (noisy == c).any()]
    if emptied:  # a class nobody is given any more vanishes from the manifest (its truth rows then fail)
        c = int(emptied[0])
        raise ConfigError(
            f"confusable noise at --rate {rate:g} moves every image of class {class_names[c]!r} "
            f"({int((labels == c).sum())}) elsewhere and none into it; lower --rate or try another --seed"
        )
    return NoisyLabels(labels, noisy, "confusable", rate, None, class_names, flip_probability=probability)


def inclusion_probabilities(weight: np.ndarray, count: int) -> np.ndarray:
    """``min(1, s * weight)`` with the scale ``s`` found by bisection so they sum to ``count``."""
    weight = np.asarray(weight, dtype=np.float64)
    if count <= 0:
        return np.zeros_like(weight)
    low, high = 0.0, 1.0
    while np.minimum(1.0, high * weight).sum() < count:
        high *= 2
        if high > 1e300:
            raise ConfigError(
                f"cannot choose {count} samples from {int((weight > 0).sum())} with a non-zero weight"
            )
    for _ in range(200):
        middle = (low + high) / 2
        if np.minimum(1.0, middle * weight).sum() < count:
            low = middle
        else:
            high = middle
    probability = np.minimum(1.0, high * weight)
    # exact sum; rounding moves no value above 1 by more than 1e-12
    return probability * (count / probability.sum())


def systematic_sample(probability: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Indexes of a sample of exactly ``round(sum(probability))`` items in which item ``i`` is
    included with probability ``probability[i]``: systematic sampling over a random order."""
    order = rng.permutation(len(probability))
    edges = np.concatenate([[0.0], np.cumsum(np.clip(probability[order], 0.0, 1.0))])
    start = rng.uniform()
    # item j is taken when an integer + start falls in [edges[j], edges[j+1])
    hits = np.floor(edges[1:] - start) - np.floor(edges[:-1] - start)
    return np.sort(order[hits > 0])


def confusion_probabilities(
    features: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    *,
    folds: int = 5,
    weight_decay: float = 1e-2,
    iterations: int = 100,
    seed: int = 0,
) -> tuple[np.ndarray, dict]:
    """Out-of-fold class probabilities of a multinomial logistic regression: how much each image
    resembles each class, to a simple reader of its pixels.

    The features are standardised (per dimension, over all samples); each of ``folds`` seeded
    folds is predicted by a model fitted with L-BFGS (``iterations`` steps from zero weights,
    L2 penalty ``weight_decay / 2 * |W|^2`` on the mean cross-entropy) on the other folds, so no
    image scores itself. Returns ``(N, K)`` probabilities and a description of the recipe with
    the classifier's out-of-fold accuracy on the (clean) labels.
    """
    import torch

    x = torch.as_tensor(np.asarray(features, dtype=np.float64).reshape(len(features), -1))
    x = (x - x.mean(0)) / x.std(0).clamp_min(1e-3)
    y = torch.as_tensor(np.array(labels, dtype=np.int64))
    n = len(y)
    fold_of = np.random.default_rng(seed).permutation(n) % folds
    probs = torch.zeros(n, num_classes, dtype=torch.float64)
    from ..train.compute import torch_threads

    with torch_threads(
        1
    ):  # float sums depend on the thread count: one thread gives the same noise on every machine
        _fit_folds(x, y, fold_of, folds, num_classes, weight_decay, iterations, probs)
    result = probs.numpy()
    recipe = {
        "classifier": "multinomial logistic regression (L-BFGS, float64, one thread) on standardised pixels",
        "folds": folds,
        "weight_decay": weight_decay,
        "iterations": iterations,
        "features": int(x.shape[1]),
        "out_of_fold_accuracy": float((result.argmax(1) == y.numpy()).mean()),
    }
    return result, recipe


def _fit_folds(
    x, y, fold_of: np.ndarray, folds: int, num_classes: int, weight_decay: float, iterations: int, probs
) -> None:
    """Fill ``probs`` (``(N, K)`` float64) fold by fold from zero-started L-BFGS fits on the other folds."""
    import torch

    for fold in range(folds):  # zero start, full batches: nothing random but the folds
        held = torch.from_numpy(fold_of == fold)
        w = torch.zeros(x.shape[1], num_classes, dtype=torch.float64, requires_grad=True)
        b = torch.zeros(num_classes, dtype=torch.float64, requires_grad=True)
        optimizer = torch.optim.LBFGS(
            [w, b], lr=1, max_iter=iterations, history_size=20, line_search_fn="strong_wolfe"
        )
        x_fit, y_fit = x[~held], y[~held]

        def closure():
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(x_fit @ w + b, y_fit) + weight_decay / 2 * (w * w).sum()
            loss.backward()
            return loss

        optimizer.step(closure)
        with torch.no_grad():
            probs[held] = torch.softmax(x[held] @ w + b, dim=1)


def pixel_features(store, max_side: int = 28) -> np.ndarray:
    """``(N, D)`` float32 pixels of an :class:`~labelaudit.data.images.ImageStore` in ``[0, 1]``,
    area-averaged
    down to at most ``max_side`` pixels a side (a logistic regression gains nothing from more)."""
    import torch

    chunks = []
    for start in range(0, len(store), 4096):
        batch = (
            torch.from_numpy(store.images(slice(start, start + 4096))).permute(0, 3, 1, 2).float().div_(255)
        )
        if batch.shape[-1] > max_side:
            batch = torch.nn.functional.adaptive_avg_pool2d(batch, max_side)
        chunks.append(batch.reshape(len(batch), -1))
    return torch.cat(chunks).numpy()


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
    from ..data.images import load_images

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


def read_flip_table(path: str | os.PathLike, table: SampleTable) -> NoisyLabels:
    """Noise given sample by sample: a CSV/parquet file with ``sample_id`` (or ``path``) and
    ``label`` (the label to give; ``noisy_label`` and ``to`` are accepted too). Samples not listed
    keep their label."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(
            f"flip table {str(path)!r} does not exist; pass a CSV or parquet file with sample_id,label "
            "columns"
        )
    frame = read_table(path, "flip table")
    columns = {str(c).lower(): c for c in frame.columns}
    key = next((columns[c] for c in ("sample_id", "path") if c in columns), None)
    target = next((columns[c] for c in ("label", "noisy_label", "to") if c in columns), None)
    if key is None or target is None:
        raise ConfigError(
            f"flip table {path.name!r} needs a sample_id (or path) column and a label column; "
            f"it has {[str(c) for c in frame.columns]}"
        )
    by_path = key != columns.get("sample_id")
    ids = table.samples["path" if by_path else "sample_id"].astype(str).to_numpy()
    position = pd.Series(np.arange(len(ids)), index=ids)
    if not position.index.is_unique:
        raise ConfigError(
            f"flip table {path.name!r} names samples by {key!r}, which is not unique in the dataset; use "
            "sample_id"
        )
    if frame[target].isna().any():
        raise ConfigError(
            f"flip table {path.name!r} has an empty {target!r} cell; give every listed sample a label"
        )
    keys = frame[key].astype(str).str.strip().to_numpy()
    values = frame[target].astype(str).to_numpy()
    if by_path:  # as in a manifest or truth file: relative to the flip table's folder
        folder = path.resolve().parent
        keys = np.array([os.path.normpath(os.path.join(folder, k)) for k in keys])
    unknown = [v for v in keys if v not in position.index]
    if unknown:
        raise ConfigError(
            f"flip table {path.name!r} names {len(unknown)} samples that are not in the dataset "
            f"(first: {unknown[0]!r}); list samples by the dataset's {key}"
        )
    if len(set(keys)) != len(keys):
        raise ConfigError(f"flip table {path.name!r} lists a sample twice; give each sample one row")
    from ..data.sources import match_classes

    index = {str(c): i for i, c in enumerate(table.class_names)}
    named = match_classes(list(values), [str(c) for c in table.class_names])  # "cat" names a folder "cat "
    bad = [v for v in values if named[v] is None]
    if bad:
        raise ConfigError(
            f"flip table {path.name!r} gives label {bad[0]!r}, which is not a class of the dataset "
            f"{list(table.class_names)}"
        )
    labels = table.samples["given_label"].to_numpy().astype(np.int64)
    noisy = labels.copy()
    noisy[position.loc[keys].to_numpy()] = [index[named[v]] for v in values]
    return NoisyLabels(labels, noisy, "table", None, None, tuple(table.class_names))


def _largest_remainder(expected: np.ndarray) -> np.ndarray:
    """Integer counts summing to ``round(sum(expected))`` closest to ``expected``."""
    floor = np.floor(expected).astype(np.int64)
    short = int(round(expected.sum())) - int(floor.sum())
    order = np.argsort(-(expected - floor), kind="stable")
    floor[order[:short]] += 1
    return floor


def write_noisy_dataset(
    table: SampleTable,
    noisy: NoisyLabels,
    out_dir,
    *,
    overwrite: bool = False,
    inputs: Sequence[os.PathLike] = (),
) -> dict:
    """Write ``manifest.parquet`` (sample_id, path, label: the noisy label), ``truth.csv``
    (sample_id, path, given_label, true_label, is_noisy) and ``noise.json`` into ``out_dir``,
    all or nothing.

    Paths are absolute: the images stay where they are and are never copied or changed.
    ``out_dir`` is a path or an opened :class:`~labelaudit.runs.directory.RunDirectory`; it may not be,
    hold or lie inside the source or ``inputs`` (e.g. the map file); ``overwrite`` replaces an
    earlier inject-noise output.
    """
    from ..runs.directory import RunDirectory, input_paths

    if isinstance(out_dir, RunDirectory):
        run = out_dir
    else:
        run = RunDirectory(out_dir, "inject-noise", inputs=input_paths(table, inputs), overwrite=overwrite)
    with run.writing() as tmp:
        info = _write_noisy_files(table, noisy, tmp)
    return info


def _write_noisy_files(table: SampleTable, noisy: NoisyLabels, out: Path) -> dict:
    from .._atomic import atomic_path
    from ..reports import write_csv, write_json

    names = np.array(noisy.class_names, dtype=object)
    samples = table.samples
    truth = pd.DataFrame(
        {
            "sample_id": samples["sample_id"].to_numpy(),
            "path": samples["path"].to_numpy(),
            "given_label": names[noisy.noisy_labels],
            "true_label": names[noisy.true_labels],
            "is_noisy": noisy.is_noisy,
        }
    )
    if noisy.flip_probability is not None:
        truth["flip_probability"] = noisy.flip_probability
    with atomic_path(out / "manifest.parquet") as tmp:
        truth[["sample_id", "path", "given_label"]].rename(columns={"given_label": "label"}).to_parquet(
            tmp, index=False
        )
    write_csv(out / "truth.csv", truth)
    t = noisy.transition_matrix()
    info = {
        "source": str(table.source),
        "kind": noisy.kind,
        "requested_rate": noisy.requested_rate,
        "real_rate": noisy.real_rate,
        "num_samples": int(len(truth)),
        "num_flipped": int(noisy.is_noisy.sum()),
        "mapping": noisy.mapping,
        "recipe": noisy.recipe,
        "class_names": list(noisy.class_names),
        "per_class_real_rate": {n: float(1 - t[i, i]) for i, n in enumerate(noisy.class_names)},
        "transition_matrix": {"convention": "T[i][j] = P(given = j | true = i)", "matrix": t.tolist()},
    }
    write_json(out / "noise.json", info)
    return info
