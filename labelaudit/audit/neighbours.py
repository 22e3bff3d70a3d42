"""Nearest neighbours by cosine similarity: exact for small sets, an HNSW index above.

Near-duplicate candidates and outlier distances both need each sample's ``k`` most similar
samples. The exact search compares every pair (``N^2 D`` multiply-adds, in blocks so memory
stays ``block_size x N`` floats): about a minute for 60,000 samples on one core, hours at a
million. Above :data:`EXACT_MAX_SAMPLES` the search goes through an HNSW graph (faiss's
``IndexHNSWFlat``, inner product on unit rows), and its quality is measured rather than assumed:

1. the graph is built with one thread (faiss adds vertices in parallel otherwise, and the graph,
   hence the neighbours, could change from run to run);
2. :data:`RECALL_QUERIES` samples drawn with ``seed`` are searched exactly, and the smallest
   ``efSearch`` of :data:`EF_SEARCH` whose recall@k against them reaches :data:`RECALL_TARGET`
   is kept (the largest, with ``recall_target_met`` false, when none does);
3. every sample is searched at that ``efSearch``.

What was searched and how well is returned in :attr:`Neighbours.search` and written to
``summary.json`` (``similarity.features.neighbour_searches``). Measured: docs/scale.md.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

#: Up to this many samples the search is exact (below it exact is fast, and as fast as building a graph).
EXACT_MAX_SAMPLES = 50_000
#: recall@k against the exact search that the approximate search must reach.
RECALL_TARGET = 0.95
#: Samples searched exactly to measure the recall.
RECALL_QUERIES = 1_000
#: The HNSW graph: links per vertex and the candidate list while building (faiss's defaults are 32, 40).
HNSW_LINKS = 32
EF_CONSTRUCTION = 64
#: Candidate list sizes tried at search time, smallest first.
EF_SEARCH = (32, 64, 128, 256, 512)


@dataclass(frozen=True)
class Neighbours:
    """The ``k`` nearest neighbours of every sample, itself excluded.

    Attributes
    ----------
    indices : numpy.ndarray
        ``(N, k)`` int64, most similar first.
    similarities : numpy.ndarray
        ``(N, k)`` float32 cosine similarities, in the same order.
    search : dict
        How they were found: ``method`` (``exact`` or ``hnsw``), ``n``, ``k``, ``seconds``; for
        ``hnsw`` also ``links``, ``ef_construction``, ``ef_search``, ``recall_at_k`` (measured on
        ``recall_queries`` samples), ``recall_target`` and ``recall_target_met``; for an exact
        search above :data:`EXACT_MAX_SAMPLES`, ``reason``.
    """

    indices: np.ndarray
    similarities: np.ndarray
    search: dict


def normalise_rows(features) -> torch.Tensor:
    """``(N, D)`` float32 rows scaled to unit length (a zero row stays zero)."""
    x = torch.tensor(np.asarray(features, dtype=np.float32))  # a copy: the caller's array may be read-only
    if x.ndim != 2:
        raise ValueError(f"features must be a 2-D array (N, D); got shape {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise ValueError("features hold NaN or infinite values")
    return x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)


def search_neighbours(
    features,
    k: int,
    *,
    block_size: int = 1024,
    exact_max: int = EXACT_MAX_SAMPLES,
    seed: int = 0,
) -> Neighbours:
    """The ``k`` nearest neighbours of every row of ``features`` ``(N, D)`` by cosine similarity.

    Exact when ``N <= exact_max`` (or when faiss is not installed), else through an HNSW index
    whose search breadth is chosen by measured recall (see the module's docstring). ``k`` is
    capped at ``N - 1``. Deterministic for a given ``seed``.
    """
    started = time.perf_counter()
    x = normalise_rows(features)
    n = len(x)
    if n < 2:
        raise ValueError("nearest neighbours need at least 2 samples")
    k = int(min(k, n - 1))
    if k < 1:
        raise ValueError(f"k must be >= 1; got {k}")
    info: dict = {"n": n, "k": k}
    faiss = _faiss() if n > exact_max else None
    if faiss is None:
        indices, similarities = _exact(x, np.arange(n), k, block_size)
        info["method"] = "exact"
        if n > exact_max:
            info["reason"] = "faiss-cpu is not installed (pip install faiss-cpu)"
    else:
        indices, similarities, found = _approximate(faiss, x, k, seed, block_size)
        info.update(found)
    info["seconds"] = time.perf_counter() - started
    return Neighbours(indices, similarities, info)


def nearest_neighbours(
    features, k: int, *, block_size: int = 1024, **options
) -> tuple[np.ndarray, np.ndarray]:
    """``(indices, similarities)`` of :func:`search_neighbours` (the same options)."""
    found = search_neighbours(features, k, block_size=block_size, **options)
    return found.indices, found.similarities


def _exact(x: torch.Tensor, rows: np.ndarray, k: int, block_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact neighbours of the samples ``rows`` among all of ``x`` (unit rows), themselves excluded."""
    indices = np.empty((len(rows), k), dtype=np.int64)
    similarities = np.empty((len(rows), k), dtype=np.float32)
    for start in range(0, len(rows), block_size):
        chunk = torch.from_numpy(rows[start : start + block_size])
        block = x[chunk] @ x.T  # (b, N)
        block[torch.arange(len(chunk)), chunk] = -float("inf")  # not its own neighbour
        top = block.topk(k, dim=1)  # sorted, most similar first
        indices[start : start + len(chunk)] = top.indices.numpy()
        similarities[start : start + len(chunk)] = top.values.numpy()
    return indices, similarities


def _approximate(faiss, x: torch.Tensor, k: int, seed: int, block_size: int):
    """``(indices, similarities, info)`` through an HNSW graph (the module's docstring)."""
    data = np.ascontiguousarray(x.numpy())
    n, d = data.shape
    threads = torch.get_num_threads()
    index = faiss.IndexHNSWFlat(d, HNSW_LINKS, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = EF_CONSTRUCTION
    faiss.omp_set_num_threads(1)  # one thread: the same graph every run
    try:
        index.add(data)
    finally:
        faiss.omp_set_num_threads(threads)  # a search is the same whatever the threads
    queries = np.sort(np.random.default_rng(seed).choice(n, min(RECALL_QUERIES, n), replace=False))
    truth, _ = _exact(x, queries, k, block_size)
    recall = 0.0
    for ef in EF_SEARCH:
        index.hnsw.efSearch = max(ef, k + 1)
        found, _ = _search(index, data, queries, k, x, block_size)
        recall = float(np.mean([np.isin(found[i], truth[i]).mean() for i in range(len(queries))]))
        if recall >= RECALL_TARGET:
            break
    indices = np.empty((n, k), dtype=np.int64)
    similarities = np.empty((n, k), dtype=np.float32)
    for start in range(0, n, 16 * block_size):
        rows = np.arange(start, min(start + 16 * block_size, n))
        indices[rows], similarities[rows] = _search(index, data, rows, k, x, block_size)
    info = {
        "method": "hnsw",
        "library": f"faiss {faiss.__version__}",
        "links": HNSW_LINKS,
        "ef_construction": EF_CONSTRUCTION,
        "ef_search": int(index.hnsw.efSearch),
        "recall_at_k": recall,
        "recall_queries": len(queries),
        "recall_target": RECALL_TARGET,
        "recall_target_met": recall >= RECALL_TARGET,
    }
    return indices, similarities, info


def _search(index, data: np.ndarray, rows: np.ndarray, k: int, x: torch.Tensor, block_size: int):
    """``(indices, similarities)`` ``(len(rows), k)`` of ``rows`` from ``index``, each sample itself
    left out (searched for ``k + 1``: usually itself first, but an exact copy may come before it).
    A row the graph returned too few others for is searched exactly."""
    similarities, indices = index.search(data[rows], k + 1)
    own = indices == rows[:, None]
    has_own = own.any(axis=1)
    own[~has_own, -1] = True  # itself not found: drop the weakest of the k + 1 instead
    keep = ~own
    out_i = indices[keep].reshape(len(rows), k).astype(np.int64)
    out_s = similarities[keep].reshape(len(rows), k).astype(np.float32)
    short = (out_i < 0).any(axis=1)
    if short.any():
        out_i[short], out_s[short] = _exact(x, rows[short], k, block_size)
    return out_i, out_s


def _faiss():
    """The faiss module, or None when it is not installed."""
    try:
        import faiss
    except ImportError:
        return None
    return faiss
