"""Near-duplicates and images of no class.

Two kinds of wrong label that are not lone flips:

- **Near-duplicates**: the same picture twice (re-encoded, resized, shifted or cropped by a
  pixel or two). Candidates are each sample's nearest neighbours by cosine similarity of its
  features (a pretrained backbone's embeddings, the user's own, or the scan network's penultimate
  activations; :mod:`~labelaudit.audit.neighbours`: exact up to 50,000 samples, an HNSW index of
  measured recall above). Features
  of a network put every image of a class close together, so a candidate is only a near-duplicate
  when the two decoded images match pixel for pixel: the root-mean-square difference of their
  grey levels, at the best of the 3 x 3 one-pixel alignments and after removing any overall
  brightness offset, is below a threshold read from the data (:func:`duplicate_threshold`).
  Byte-identical decoded images are always duplicates (a hash of their pixels).
- **Outliers**: an image unlike every class. Its score is the mean cosine distance to its ``k``
  nearest neighbours in the outlier features (a backbone's embeddings when the scan has them,
  otherwise small grey thumbnails of the images: a network trained on the classes maps a foreign
  image onto one of them), divided by the median of that distance over the distinct images.

:func:`find_similarity_issues` runs both and returns a :class:`SimilarityIssues`. Why these
choices, and what they were measured against: docs/methods.md and docs/benchmarks.md.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from .neighbours import EXACT_MAX_SAMPLES, nearest_neighbours, normalise_rows, search_neighbours  # noqa: F401

#: Neighbours per sample searched for near-duplicate candidates.
DUPLICATE_NEIGHBOURS = 20
#: Neighbours of the outlier distance: N / 200, within these bounds (a small dataset needs fewer,
#: or the distance averages over whole classes; docs/methods.md).
OUTLIER_NEIGHBOURS = (5, 50)
#: Fewest samples for which ``is_outlier`` is decided: the robust spread of a few dozen
#: distances is too unsteady (docs/methods.md); below, only the score is given.
MIN_OUTLIER_SAMPLES = 100
#: Side of the grey thumbnails used as outlier features when the scan has no embeddings.
THUMBNAIL_SIZE = 14
#: Largest side at which two images are compared pixel by pixel (larger images are area-averaged
#: down to it: a copy cropped or shifted by a few pixels at full size differs by under one here).
COMPARE_SIZE = 32


def distinct_rows(features, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """``(first, inverse)``: the index of the first sample of each distinct row of ``features``
    ``(N, ...)`` (in order of appearance) and, per sample, the position of its row in ``first``.

    Exact copies of an image have equal rows; counted once, 1,000 copies of one picture neither
    drive the typical neighbour distance to 0 nor fill every neighbour list.
    """
    inverse, _ = pd.factorize(pd.Series(pixel_hashes(features, chunk), dtype=object))
    inverse = inverse.astype(np.int64)
    first = np.full(int(inverse.max(initial=-1)) + 1, len(inverse), dtype=np.int64)
    np.minimum.at(first, inverse, np.arange(len(inverse)))
    return first, inverse


def pixel_hashes(images, chunk: int = 4096) -> list[str]:
    """A hash of each row of ``images`` ``(N, ...)`` (decoded pixels, or any array): equal
    hashes, equal rows."""
    out = []
    for start in range(0, len(images), chunk):
        block = np.ascontiguousarray(images[start : start + chunk])
        out.extend(hashlib.blake2b(image.tobytes(), digest_size=16).hexdigest() for image in block)
    return out


def comparison_images(images, size: int = COMPARE_SIZE, chunk: int = 4096) -> np.ndarray:
    """``(N, s, s)`` uint8 grey versions of ``(N, H, W, C)`` uint8 images, area-averaged down to
    ``s = min(H, size)`` (rounded to whole grey levels); read ``chunk`` images at a time."""
    out = []
    for start in range(0, len(images), chunk):
        x = torch.from_numpy(np.array(images[start : start + chunk])).float().mean(dim=3)  # (B, H, W); a copy
        if x.shape[1] > size:
            x = torch.nn.functional.adaptive_avg_pool2d(x[:, None], size)[:, 0]
        out.append(x.round().clamp(0, 255).to(torch.uint8).numpy())
    return np.concatenate(out) if out else np.zeros((0, size, size), dtype=np.uint8)


def aligned_differences(
    images: np.ndarray, pairs: np.ndarray, *, shift: int = 1, chunk: int = 256
) -> np.ndarray:
    """Root-mean-square grey-level difference of each pair of images, at their best alignment.

    ``images`` ``(N, H, W)`` uint8 (:func:`comparison_images`); ``pairs`` ``(P, 2)`` sample
    indices. Each pair is compared at every offset of up to ``shift`` pixels in each direction (on
    the overlapping part), after subtracting the mean difference (an overall brightness change is
    not a different picture); the smallest of these differences is returned, ``(P,)`` float32 in
    grey levels (0..255). Pairs are compared ``chunk`` at a time (small chunks stay in the CPU's
    cache).
    """
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    out = np.empty(len(pairs), dtype=np.float32)
    height, width = images.shape[1:3]
    pixels = torch.from_numpy(np.ascontiguousarray(images))
    for start in range(0, len(pairs), chunk):
        part = torch.from_numpy(pairs[start : start + chunk])
        a, b = pixels[part[:, 0]].float(), pixels[part[:, 1]].float()  # (P, H, W)
        best = torch.full((len(part),), float("inf"))
        for dy in range(-shift, shift + 1):
            for dx in range(-shift, shift + 1):
                difference = (
                    a[:, max(dy, 0) : height + min(dy, 0), max(dx, 0) : width + min(dx, 0)]
                    - b[:, max(-dy, 0) : height + min(-dy, 0), max(-dx, 0) : width + min(-dx, 0)]
                )
                mean = difference.mean(dim=(1, 2))
                best = torch.minimum(best, difference.square().mean(dim=(1, 2)) - mean.square())  # variance
        out[start : start + len(part)] = best.clamp_min(0).sqrt().numpy()
    return out


def similarity_from_difference(difference) -> np.ndarray:
    """Pixel similarity in [0, 1]: ``1 - difference / 255`` (1 = the same grey levels)."""
    return 1.0 - np.asarray(difference, dtype=np.float64) / 255.0


def duplicate_threshold(
    nearest_difference: np.ndarray, *, ceiling: float = 16.0, ratio: float = 0.35
) -> float:
    """The largest aligned difference (grey levels) at which two images count as near-duplicates.

    ``nearest_difference`` is each sample's smallest aligned difference to its candidates.
    Re-encoding, resizing or shifting a picture changes its grey levels by a few levels; two
    different pictures, even the most alike of a dataset, differ by far more. The threshold is
    ``ratio`` times the median nearest difference (what an ordinary nearest neighbour looks
    like in this dataset), and never above ``ceiling`` (6% of the grey range), so a dataset of
    very similar images cannot raise it into the range of different pictures.
    """
    values = np.asarray(nearest_difference, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return 0.0
    return float(min(ceiling, ratio * np.median(values)))


def _union_groups(n: int, pairs: np.ndarray) -> np.ndarray:
    """``(N,)`` group of each sample (``-1``: alone) from linked ``pairs`` ``(P, 2)``; a chain of
    pairs is one group. Groups are numbered 0, 1, ... by their lowest sample index."""
    parent = np.arange(n)

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a, b in pairs:
        ra, rb = find(int(a)), find(int(b))
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    roots = np.array([find(i) for i in range(n)])
    sizes = np.bincount(roots, minlength=n)
    groups = np.full(n, -1, dtype=np.int64)
    numbering: dict[int, int] = {}
    for i in np.flatnonzero(sizes[roots] > 1):
        groups[i] = numbering.setdefault(int(roots[i]), len(numbering))
    return groups


def thumbnails(grey: np.ndarray, size: int = THUMBNAIL_SIZE, chunk: int = 8192) -> np.ndarray:
    """``(N, size * size)`` float32 thumbnails (area averages) of ``(N, H, W)`` uint8 grey images."""
    out = [
        torch.nn.functional.adaptive_avg_pool2d(
            torch.from_numpy(grey[start : start + chunk]).float()[:, None], size
        )
        .flatten(1)
        .numpy()
        for start in range(0, len(grey), chunk)
    ]
    return np.concatenate(out) if out else np.zeros((0, size * size), dtype=np.float32)


@dataclass
class SimilarityIssues:
    """Per-sample near-duplicate and outlier results, aligned with the sample table.

    Attributes
    ----------
    duplicate_group : ``(N,)`` int64, ``-1`` when the sample has no near-copy
    duplicate_of : ``(N,)`` int64 index of its most similar near-copy, ``-1`` when none
    duplicate_similarity : ``(N,)`` float64 pixel similarity to it (:func:`similarity_from_difference`), NaN
    when none
    duplicate_conflict : ``(N,)`` bool, its group holds more than one given label
    exact_duplicate : ``(N,)`` bool, another sample has the same decoded pixels
    outlier_score : ``(N,)`` float64 in [0, 1], higher = less like the rest of its class
    is_outlier : ``(N,)`` bool
    duplicate_threshold : the largest aligned difference (grey levels) counted as a near-duplicate
    outlier_threshold : the class-normalised distance above which a sample is an outlier
    features : what the duplicate candidates and the outliers were searched in
    pairs : one row per linked pair: ``a, b, difference`` (grey levels)
    """

    duplicate_group: np.ndarray
    duplicate_of: np.ndarray
    duplicate_similarity: np.ndarray
    duplicate_conflict: np.ndarray
    exact_duplicate: np.ndarray
    outlier_score: np.ndarray
    is_outlier: np.ndarray
    duplicate_threshold: float
    outlier_threshold: float
    features: dict = field(default_factory=dict)
    pairs: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=["a", "b", "difference"]))

    @property
    def n_duplicate_groups(self) -> int:
        return int(len(np.unique(self.duplicate_group[self.duplicate_group >= 0])))

    @property
    def n_duplicate_conflicts(self) -> int:
        """Groups whose members carry more than one given label."""
        return int(len(np.unique(self.duplicate_group[self.duplicate_conflict])))

    @property
    def n_outliers(self) -> int:
        return int(self.is_outlier.sum())


def find_duplicates(
    grey: np.ndarray, hashes: list[str], neighbours, labels: np.ndarray, *, threshold: float | None = None
) -> dict:
    """Near-duplicate groups among ``grey`` ``(N, H, W)`` uint8 images (:func:`comparison_images`).

    Candidates are the pairs of each sample and its nearest neighbours in ``neighbours`` (a list
    of ``(N, k)`` index arrays from :func:`nearest_neighbours`, one per feature space), verified
    by :func:`aligned_differences`; samples with equal pixel ``hashes`` are always linked.
    ``threshold``: pixel similarity in (0, 1] from which two images are near-duplicates
    (``1 - difference / 255``); None reads it from the data (:func:`duplicate_threshold`).
    Returns the per-sample arrays of :class:`SimilarityIssues` and the pair table.
    """
    n = len(grey)
    labels = np.asarray(labels)
    found = []
    for indices in neighbours:
        first = np.repeat(np.arange(n), indices.shape[1])
        found.append(np.stack([np.minimum(first, indices.ravel()), np.maximum(first, indices.ravel())], 1))
    candidates = np.unique(np.concatenate(found), axis=0)
    # Equal hashes, equal pixels: each copy is linked to the first sample with its pixels (copies
    # listed image by image, in order of first appearance).
    codes, _ = pd.factorize(pd.Series(hashes, dtype=object))
    first = np.unique(codes, return_index=True)[1]  # (M,) first sample of each distinct image
    copies = np.flatnonzero(first[codes] != np.arange(n))
    copies = copies[np.argsort(codes[copies], kind="stable")]
    exact_pairs = np.stack([first[codes[copies]], copies], axis=1).astype(np.int64)
    difference = aligned_differences(grey, candidates)
    # What an ordinary nearest neighbour looks like: each distinct image once, its exact copies
    # left out (1,000 copies of one picture would put the median, and the threshold, at 0).
    other = codes[candidates[:, 0]] != codes[candidates[:, 1]]
    nearest = np.full(n, np.inf)
    np.minimum.at(nearest, candidates[other, 0], difference[other])
    np.minimum.at(nearest, candidates[other, 1], difference[other])
    limit = duplicate_threshold(nearest[first]) if threshold is None else 255.0 * (1.0 - threshold)
    linked = difference <= limit
    pairs = pd.DataFrame(
        {
            "a": np.concatenate([candidates[linked, 0], exact_pairs[:, 0]]).astype(np.int64),
            "b": np.concatenate([candidates[linked, 1], exact_pairs[:, 1]]).astype(np.int64),
            "difference": np.concatenate([difference[linked], np.zeros(len(exact_pairs))]),
        }
    )
    pairs = pairs.sort_values("difference", kind="stable").drop_duplicates(["a", "b"]).reset_index(drop=True)
    groups = _union_groups(n, pairs[["a", "b"]].to_numpy())
    duplicate_of = np.full(n, -1, dtype=np.int64)
    best = np.full(n, np.inf)
    for a, b, d in pairs.itertuples(
        index=False
    ):  # sorted by difference: each sample's first link is its closest
        for x, y in ((int(a), int(b)), (int(b), int(a))):
            if d < best[x]:
                best[x], duplicate_of[x] = d, y
    conflict = np.zeros(n, dtype=bool)
    in_group = groups >= 0
    if in_group.any():
        label_counts = pd.Series(labels[in_group]).groupby(groups[in_group]).nunique()
        conflict[in_group] = label_counts.reindex(groups[in_group]).to_numpy() > 1
    exact = np.zeros(n, dtype=bool)
    exact[exact_pairs.ravel()] = True
    return {
        "duplicate_group": groups,
        "duplicate_of": duplicate_of,
        "duplicate_similarity": np.where(duplicate_of >= 0, similarity_from_difference(best), np.nan),
        "duplicate_conflict": conflict,
        "exact_duplicate": exact,
        "duplicate_threshold": float(limit),
        "pairs": pairs,
    }


def outlier_neighbours(n: int) -> int:
    """The ``k`` of the outlier distance for ``n`` samples (:data:`OUTLIER_NEIGHBOURS`)."""
    return int(np.clip(n // 200, *OUTLIER_NEIGHBOURS))


def outlier_scores(
    features,
    labels: np.ndarray,
    *,
    k: int | None = None,
    spread: float = 3.0,
    per_class: bool = False,
    similarities: np.ndarray | None = None,
    inverse: np.ndarray | None = None,
) -> dict:
    """Outlier score and flag of every sample from ``features`` ``(N, D)``.

    Each distinct row of ``features`` counts once (:func:`distinct_rows`): exact copies share
    their image's score and do not set the scale. A distinct image's distance is its mean
    cosine distance to its ``k`` nearest other distinct images (default:
    :data:`OUTLIER_NEIGHBOURS` of the number of distinct images), divided by the median distance
    of the distinct images (``per_class``: of the samples given the same label; not the default,
    see docs/methods.md). ``outlier_score`` is the rank of that ratio in [0, 1] (1 = the
    most isolated sample); ``is_outlier``: a ratio above the median plus ``spread`` robust
    standard deviations (1.4826 x MAD) of the distinct images' log ratios, decided only from
    :data:`MIN_OUTLIER_SAMPLES` distinct images on.

    ``similarities``: the sorted neighbour similarities ``(M, >= k)`` of :func:`nearest_neighbours`
    over the distinct rows when already computed, with ``inverse`` ``(N,)`` mapping each sample to
    its row (``features`` is then not searched again; ``inverse`` None: every sample distinct).
    """
    labels = np.asarray(labels)
    n = len(labels)
    if similarities is None:
        first, inverse = distinct_rows(np.asarray(features, dtype=np.float32))
        if k is None:
            k = outlier_neighbours(len(first))
        similarities = nearest_neighbours(np.asarray(features)[first], k)[1] if len(first) > 1 else None
    elif inverse is None:
        inverse = np.arange(n)
    distinct = int(inverse.max(initial=-1)) + 1
    if similarities is None:  # one distinct image: nothing is far from anything
        ratio = np.ones(n)
        threshold = float("inf")
    else:
        if k is None:
            k = outlier_neighbours(distinct)
        distance = np.maximum(1.0 - similarities[:, :k].astype(np.float64).mean(axis=1), 1e-9)  # (M,)
        if per_class:
            by_sample = distance[inverse]
            ratio = by_sample / np.maximum(
                pd.Series(by_sample).groupby(labels).transform("median").to_numpy(), 1e-9
            )
            log_distinct = np.log(pd.Series(ratio).groupby(inverse).first().to_numpy())
        else:
            scaled = distance / max(float(np.median(distance)), 1e-9)
            ratio, log_distinct = scaled[inverse], np.log(scaled)
        median = float(np.median(log_distinct))
        mad = 1.4826 * float(np.median(np.abs(log_distinct - median)))
        threshold = float(np.exp(median + spread * max(mad, 1e-3)))
    score = np.empty(n)
    score[np.argsort(ratio, kind="stable")] = np.arange(n) / max(n - 1, 1)
    flagged = ratio > threshold if distinct >= MIN_OUTLIER_SAMPLES else np.zeros(n, dtype=bool)
    return {
        "outlier_score": score,
        "outlier_ratio": ratio,
        "is_outlier": flagged,
        "outlier_threshold": threshold,
    }


def find_similarity_issues(
    images,
    labels: np.ndarray,
    *,
    features=None,
    embeddings=None,
    duplicate_threshold: float | None = None,
    exact_max: int = EXACT_MAX_SAMPLES,
) -> SimilarityIssues:
    """Near-duplicates and outliers of one dataset.

    Parameters
    ----------
    images : ``(N, H, W, C)`` uint8 decoded images (an array or memory map, read in chunks), or
        None when the scan read none (an ``--embeddings`` file): then duplicates are not
        searched, having no pixels to verify them with
    labels : ``(N,)`` given label indexes
    features : ``(N, D)`` the scan network's penultimate activations, searched for duplicate
        candidates (with the thumbnails); None: ``embeddings`` instead
    embeddings : ``(N, D)`` a pretrained backbone's or the user's embeddings when the scan has
        them: the outlier features and, without ``features``, the candidates' too
    duplicate_threshold : pixel similarity in (0, 1]; None reads it from the data
    exact_max : the neighbour searches are exact up to this many rows, approximate above
        (:func:`~labelaudit.audit.neighbours.search_neighbours`); each search's method and
        measured recall go to ``features["neighbour_searches"]``
    """
    labels = np.asarray(labels)
    n = len(labels)
    if n < 2:
        raise ValueError("similarity issues need at least 2 samples")
    grey = comparison_images(images) if images is not None else None
    thumbs = thumbnails(grey) if grey is not None else None
    outlier_features = embeddings if embeddings is not None else thumbs
    if outlier_features is None:
        raise ValueError("similarity issues need the images or embeddings")
    learned = features if features is not None else embeddings
    used = {
        "outliers": "embeddings" if embeddings is not None else "thumbnails",
        "duplicate_candidates": None
        if grey is None
        else ("penultimate" if features is not None else "embeddings" if embeddings is not None else None),
    }
    # Exact copies count once: searched among the distinct images, each copy takes its image's
    # neighbours and score. One search of the outlier features serves the outliers (k_out) and,
    # when they are also a candidate space, the duplicate candidates.
    first, inverse = distinct_rows(outlier_features)
    k_out = outlier_neighbours(len(first))
    searches: list[dict] = []
    used["neighbour_searches"] = searches
    if len(first) > 1:
        found = search_neighbours(
            np.asarray(outlier_features)[first], max(k_out, DUPLICATE_NEIGHBOURS), exact_max=exact_max
        )
        searches.append({"space": used["outliers"], **found.search})
        near, similarities = found.indices, found.similarities
        near = first[near][inverse]  # (N, k) sample indices: each sample's image's neighbours
    else:  # every sample the same image: its copies are linked by their pixel hashes
        near, similarities = np.zeros((n, 0), dtype=np.int64), None
    outliers = outlier_scores(outlier_features, labels, k=k_out, similarities=similarities, inverse=inverse)

    def candidates(space, name: str) -> np.ndarray:
        if space is outlier_features:
            return near[:, :DUPLICATE_NEIGHBOURS]
        found = search_neighbours(space, DUPLICATE_NEIGHBOURS, exact_max=exact_max)
        searches.append({"space": name, **found.search})
        return found.indices

    if grey is not None:
        spaces = (
            (learned, "penultimate" if features is not None else "embeddings"),
            (thumbs, "thumbnails"),
        )
        lists = [candidates(space, name) for space, name in spaces if space is not None]
        used["duplicate_candidates"] = "+".join(filter(None, [used["duplicate_candidates"], "thumbnails"]))
        dup = find_duplicates(grey, pixel_hashes(images), lists, labels, threshold=duplicate_threshold)
    else:
        dup = _not_searched(n)
    return SimilarityIssues(
        duplicate_group=dup["duplicate_group"],
        duplicate_of=dup["duplicate_of"],
        duplicate_similarity=dup["duplicate_similarity"],
        duplicate_conflict=dup["duplicate_conflict"],
        exact_duplicate=dup["exact_duplicate"],
        outlier_score=outliers["outlier_score"],
        is_outlier=outliers["is_outlier"],
        duplicate_threshold=dup["duplicate_threshold"],
        outlier_threshold=outliers["outlier_threshold"],
        features=used,
        pairs=dup["pairs"],
    )


def _not_searched(n: int) -> dict:
    """The near-duplicate results of :func:`find_duplicates` for ``n`` samples whose pixels were not
    read: no groups, no pairs, thresholds NaN."""
    return {
        "duplicate_group": np.full(n, -1, dtype=np.int64),
        "duplicate_of": np.full(n, -1, dtype=np.int64),
        "duplicate_similarity": np.full(n, np.nan),
        "duplicate_conflict": np.zeros(n, dtype=bool),
        "exact_duplicate": np.zeros(n, dtype=bool),
        "duplicate_threshold": float("nan"),
        "pairs": pd.DataFrame({"a": [], "b": [], "difference": []}),
    }
