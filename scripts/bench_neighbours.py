"""The neighbour search behind near-duplicates and outliers: exact against HNSW (docs/scale.md).

For each size, synthetic embeddings like a real backbone's (``--dim`` dimensions, 10 classes,
each a cloud around a 32-dimensional subspace, plus isotropic noise) with 1% planted near-copies
(another sample plus noise of 1% of its norm) and 0.1% planted outliers (far from every class).
Runs :func:`labelaudit.audit.similarity.find_similarity_issues` on the embeddings, through the
HNSW index (``exact_max=0``) and, up to ``--exact-up-to`` samples, exactly, and prints: seconds
of a 20-neighbour search each way, the ``efSearch`` the scan's own search (50 neighbours, for
the outlier distance) chose and the recall it measured on its 1,000 exactly searched samples,
the recall@20 of the 20-neighbour search over every sample against the exact one (where run),
the share of planted copies found among a sample's 20 neighbours (what the duplicate check then
verifies by pixels), the outlier AUROC for the
planted outliers, the agreement of ``is_outlier`` with the exact search, and the process's peak
resident memory so far.

Usage: OMP_NUM_THREADS=2 python scripts/bench_neighbours.py 10000 100000 300000 --exact-up-to 100000
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np

from labelaudit.audit.metrics import ranking_metrics
from labelaudit.audit.similarity import DUPLICATE_NEIGHBOURS, find_similarity_issues, search_neighbours


def synthetic(n: int, dim: int, seed: int = 0):
    """``(embeddings, labels, copies (M, 2) [original, copy], is_outlier)``."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n)
    centres = 2 * rng.standard_normal((10, dim)).astype(np.float32)
    x = centres[labels]
    for c in range(10):  # class by class: the (n, 32, dim) product of all at once would not fit at 1M
        members = np.flatnonzero(labels == c)
        basis = rng.standard_normal((32, dim)).astype(np.float32) / np.sqrt(32)
        x[members] += rng.standard_normal((len(members), 32)).astype(np.float32) @ basis
    x += 0.3 * rng.standard_normal((n, dim)).astype(np.float32)
    copies = rng.choice(n, size=(n // 100, 2), replace=False)
    x[copies[:, 1]] = x[copies[:, 0]] * (
        1 + 0.01 * rng.standard_normal((len(copies), dim)).astype(np.float32)
    )
    outliers = np.setdiff1d(rng.choice(n, n // 1000, replace=False), copies.ravel())
    x[outliers] = 8 * rng.standard_normal((len(outliers), dim)).astype(np.float32)
    is_outlier = np.zeros(n, dtype=bool)
    is_outlier[outliers] = True
    return x, labels, copies, is_outlier


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("sizes", type=int, nargs="+")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--exact-up-to", type=int, default=100_000)
    args = parser.parse_args()
    print(
        "| N | exact s (k = 20) | HNSW s (k = 20) | scan's search (k = 50): efSearch | its measured recall | "
        "recall@20, all samples | copies among neighbours | outlier AUROC | is_outlier agrees | peak RSS GB |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for n in args.sizes:
        x, labels, copies, planted = synthetic(n, args.dim)
        started = time.perf_counter()
        found = search_neighbours(x, DUPLICATE_NEIGHBOURS, exact_max=0)
        hnsw_s = time.perf_counter() - started
        issues = find_similarity_issues(None, labels, embeddings=x, exact_max=0)
        search = issues.features["neighbour_searches"][0]
        near = found.indices
        copy_found = np.mean(
            [(near[a] == b).any() or (near[b] == a).any() for a, b in copies]
        )  # what the pixel check would be given
        auroc = ranking_metrics(issues.outlier_score, planted)["auroc"]
        exact_s = recall_all = agrees = "-"
        if n <= args.exact_up_to:
            started = time.perf_counter()
            exact = search_neighbours(x, DUPLICATE_NEIGHBOURS)
            exact_s = f"{time.perf_counter() - started:.0f}"
            recall_all = f"{np.mean([np.isin(near[i], exact.indices[i]).mean() for i in range(n)]):.3f}"
            exact_issues = find_similarity_issues(None, labels, embeddings=x)
            agrees = f"{np.mean(exact_issues.is_outlier == issues.is_outlier):.4f}"
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
        print(
            f"| {n:,} | {exact_s} | {hnsw_s:.0f} | {search['ef_search']} | {search['recall_at_k']:.3f} | "
            f"{recall_all} | {copy_found:.3f} | {auroc:.3f} | {agrees} | {peak:.1f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
