"""Nearest neighbours above the exact-search size: an HNSW graph of measured recall (audit.neighbours)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from conftest import run_cli
from PIL import Image

from labelaudit.audit.neighbours import RECALL_TARGET, search_neighbours
from labelaudit.audit.similarity import find_similarity_issues


def _clusters(n: int, d: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(features, labels)``: 8 classes, each a cloud around a low-dimensional subspace (as
    embeddings of real images are), plus a little isotropic noise."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 8, n)
    centres = 2 * rng.standard_normal((8, d))
    bases = rng.standard_normal((8, 6, d)) / np.sqrt(6)
    spread = np.einsum("nk,nkd->nd", rng.standard_normal((n, 6)), bases[labels])
    return (centres[labels] + spread + 0.2 * rng.standard_normal((n, d))).astype(np.float32), labels


def _exact_top(x: np.ndarray, k: int) -> np.ndarray:
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    full = unit @ unit.T
    np.fill_diagonal(full, -np.inf)
    return np.argsort(-full, axis=1, kind="stable")[:, :k]


def test_hnsw_search_reaches_the_recall_it_reports_and_is_deterministic():
    pytest.importorskip("faiss")
    x, _ = _clusters(4000)
    found = search_neighbours(x, 10, exact_max=1000, seed=3)
    assert found.search["method"] == "hnsw"
    assert found.search["recall_target_met"] is True
    assert found.search["recall_at_k"] >= RECALL_TARGET
    assert found.search["ef_search"] >= 11 and found.search["recall_queries"] == 1000
    exact = _exact_top(x, 10)
    recall = np.mean([np.isin(found.indices[i], exact[i]).mean() for i in range(len(x))])
    assert recall >= RECALL_TARGET  # over every sample, not only the measured ones
    assert not (found.indices == np.arange(len(x))[:, None]).any()  # never its own neighbour
    assert (np.diff(found.similarities, axis=1) <= 1e-6).all()  # most similar first
    again = search_neighbours(x, 10, exact_max=1000, seed=3)
    np.testing.assert_array_equal(found.indices, again.indices)
    np.testing.assert_array_equal(found.similarities, again.similarities)


def test_exact_copies_are_each_others_neighbours_in_the_graph():
    pytest.importorskip("faiss")
    x, _ = _clusters(3000, seed=1)
    x[2000:2010] = x[:10]  # ten exact copies
    found = search_neighbours(x, 5, exact_max=100)
    assert found.search["method"] == "hnsw"
    for i in range(10):
        assert 2000 + i in found.indices[i][np.isclose(found.similarities[i], 1.0, atol=1e-5)]
        assert i in found.indices[2000 + i][np.isclose(found.similarities[2000 + i], 1.0, atol=1e-5)]


def test_small_sets_stay_exact():
    x, _ = _clusters(500)
    found = search_neighbours(x, 7)
    assert found.search["method"] == "exact" and "reason" not in found.search
    np.testing.assert_array_equal(found.indices, _exact_top(x, 7))


def test_similarity_issues_find_the_same_duplicates_and_outliers_through_the_graph():
    pytest.importorskip("faiss")
    x, labels = _clusters(3000, seed=2)
    x[2990:] = np.random.default_rng(5).standard_normal((10, x.shape[1])) * 6  # ten far from every class
    exact = find_similarity_issues(None, labels, embeddings=x)
    approximate = find_similarity_issues(None, labels, embeddings=x, exact_max=500)
    [search] = approximate.features["neighbour_searches"]
    assert search["space"] == "embeddings" and search["method"] == "hnsw"
    assert exact.features["neighbour_searches"][0]["method"] == "exact"
    top = set(np.argsort(-approximate.outlier_score)[:10])
    assert top == set(range(2990, 3000)) == set(np.argsort(-exact.outlier_score)[:10])
    agree = np.mean(exact.is_outlier == approximate.is_outlier)
    assert agree >= 0.99


def test_a_scan_records_its_neighbour_search_in_the_summary(tmp_path, capsys):
    x, labels = _clusters(400, seed=4)
    names = [f"c{v}" for v in labels]
    manifest = tmp_path / "data" / "manifest.csv"
    manifest.parent.mkdir()
    embeddings = tmp_path / "data" / "embeddings.npy"
    images = tmp_path / "data" / "img"
    images.mkdir()
    paths = []
    for i in range(len(x)):
        path = images / f"{i}.png"
        Image.fromarray(np.full((8, 8), i % 250, dtype=np.uint8)).save(path)
        paths.append(str(path))
    pd.DataFrame({"path": paths, "label": names}).to_csv(manifest, index=False)
    np.save(embeddings, x)
    before = {p.name: p.stat().st_mtime_ns for p in manifest.parent.iterdir()}
    out = tmp_path / "run"
    code, stdout, stderr = run_cli(["scan", manifest, "--embeddings", embeddings, "--out", out, "-q"], capsys)
    assert code == 0, stderr
    summary = json.loads((out / "summary.json").read_text())
    searches = summary["similarity"]["features"]["neighbour_searches"]
    assert searches and searches[0]["method"] == "exact" and searches[0]["n"] <= 400
    assert {p.name: p.stat().st_mtime_ns for p in manifest.parent.iterdir()} == before
