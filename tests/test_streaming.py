"""Bounded memory: images read batch by batch from the decode cache, float16 per-sample state."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import make_noisy_pattern_dataset, run_cli

from labelaudit import load_images, load_source
from labelaudit.errors import ConfigError
from labelaudit.train.compute import parse_memory_size
from labelaudit.train.methods.baselines import BaselineConfig, cross_validated_probs
from labelaudit.train.methods.nlnl import NLNLConfig, run_nlnl
from labelaudit.train.methods.pmnar import PMNARConfig, run_pmnar
from labelaudit.train.tensors import MappedImages, TensorData
from labelaudit.train.trainer import History, TrainConfig, Trainer

TINY = TrainConfig(width=8, batch_size=32)


@pytest.fixture
def store(tmp_path):
    make_noisy_pattern_dataset(tmp_path / "images", per_class=30)
    return load_images(load_source(tmp_path / "images"))


def test_streamed_images_train_exactly_like_resident_ones(store):
    resident, streamed = TensorData.from_store(store), TensorData.from_store(store, max_memory=1)
    assert not resident.streamed and isinstance(streamed.images, MappedImages)
    assert torch.equal(resident.images[torch.tensor([5, 0, 7])], streamed.images[torch.tensor([5, 0, 7])])
    results = []
    for data in (resident, streamed):
        trainer = Trainer(data, TINY)
        run_nlnl(trainer, NLNLConfig(epochs=(2, 1, 1)))
        assert trainer.memory["images"] == ("streamed" if data.streamed else "resident")
        results.append((trainer.history.mean(), trainer.predict()))
    assert torch.equal(results[0][0], results[1][0]) and torch.equal(results[0][1], results[1][1])


def test_image_statistics_are_computed_in_chunks_without_a_float_copy(store):
    data = TensorData.from_store(store, max_memory=1)
    pixels = store.images().astype(np.float64) / 255
    assert data.mean.item() == pytest.approx(pixels.mean(), abs=1e-6)
    assert data.std.item() == pytest.approx(pixels.std(ddof=1), abs=1e-6)


def test_image_statistics_are_exact_for_large_colour_images_in_small_chunks():
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(7, 40, 40, 3), dtype=np.uint8)
    mapped = MappedImages(pixels, np.array([6, 0, 3, 3, 5]))
    assert sum(len(chunk) for chunk in mapped.chunks(max_bytes=1)) == 5  # one image per chunk at least
    values = pixels[[6, 0, 3, 3, 5]].reshape(-1, 3).astype(np.float64) / 255
    mean, std = mapped.statistics()
    assert np.allclose(mean.numpy(), values.mean(axis=0), atol=1e-7)
    assert np.allclose(std.numpy(), values.std(axis=0, ddof=1), atol=1e-7)
    assert torch.equal(mapped.load(), torch.from_numpy(pixels[[6, 0, 3, 3, 5]]).permute(0, 3, 1, 2))


def test_cross_validation_folds_read_streamed_images(store):
    data = TensorData.from_store(store, max_memory=1)
    probs, trainer = cross_validated_probs(data, BaselineConfig(folds=2, fold_epochs=1), TINY)
    assert probs.shape == (len(data), 4) and np.allclose(probs.sum(axis=1), 1, atol=1e-5)
    assert trainer.memory["images"] == "streamed"


@pytest.mark.parametrize("method", ["nlnl", "pmnar"])
def test_float16_state_when_it_would_not_fit_and_results_stay_close(store, method):
    data = TensorData.from_store(store)
    soft = {}
    for budget in (None, 1):
        trainer = Trainer(
            data,
            TrainConfig(width=8, batch_size=32, max_memory=budget),
            networks=2 if method == "pmnar" else 1,
        )
        if method == "nlnl":
            run_nlnl(trainer, NLNLConfig(epochs=(3, 2, 2)))
        else:
            run_pmnar(trainer, PMNARConfig(epochs=4, warmup=1))
        assert trainer.history.buffer.dtype == (torch.float16 if budget else torch.float32)
        assert trainer.memory["state_dtype"] == ("float16" if budget else "float32")
        soft[budget] = trainer.history.mean()
    assert soft[1].dtype == torch.float32 and torch.isfinite(soft[1]).all()
    assert torch.allclose(soft[1].sum(1), torch.ones(len(data)), atol=1e-2)
    # Different rounding from the first step on, the same task learnt: most argmaxes agree.
    assert (soft[1].argmax(1) == soft[None].argmax(1)).float().mean() >= 0.8


def test_float16_history_means_match_float32():
    probs = torch.softmax(torch.randn(6, 50, 5, generator=torch.Generator().manual_seed(0)), dim=-1)
    labels = torch.arange(50) % 5
    histories = [History(50, 5, 4, dtype) for dtype in (torch.float32, torch.float16)]
    for epoch in probs:
        for history in histories:
            history.push(epoch)
    full, half = histories
    assert half.buffer.dtype == torch.float16 and half.mean().dtype == torch.float32
    assert torch.allclose(full.mean(), half.mean(), atol=1e-3)
    assert torch.allclose(full.mean_given(labels), half.mean_given(labels), atol=1e-3)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("auto", None),
        ("8GB", 8 * 2**30),
        ("512m", 512 * 2**20),
        ("1.5 G", int(1.5 * 2**30)),
        ("1000000", 1000000),
        ("64KiB", 65536),
    ],
)
def test_memory_sizes_parse(text, expected):
    assert parse_memory_size(text) == expected


@pytest.mark.parametrize("text", ["lots", "-1GB", "0", "5PB", "nanGB", ""])
def test_bad_memory_sizes_are_refused(text):
    with pytest.raises(ConfigError, match="--max-memory must be 'auto' or a size"):
        parse_memory_size(text)


def test_scan_with_a_small_memory_budget_streams_and_records_it(tmp_path, capsys):
    truth = make_noisy_pattern_dataset(tmp_path / "images", per_class=30)
    before = {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted((tmp_path / "images").rglob("*"))}
    code, _, err = run_cli(
        [
            "scan",
            tmp_path / "images",
            "--out",
            tmp_path / "run",
            "--budget",
            "0.05",
            "--width",
            "8",
            "--max-memory",
            "16KB",
            "--quiet",
        ],
        capsys,
    )
    assert code == 0, err
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["memory"]["images"] == "streamed" and summary["memory"]["state_dtype"] == "float16"
    assert summary["memory"]["budget_bytes"] == 16 * 1024
    assert (summary["world_size"], summary["distributed_backend"]) == (1, None)
    assert json.loads((tmp_path / "run" / "config.json").read_text())["train"]["max_memory"] == 16 * 1024
    assert before == {
        p: (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted((tmp_path / "images").rglob("*"))
    }
    assert len(truth) == len(__import__("pandas").read_csv(tmp_path / "run" / "report.csv"))


def test_scan_refuses_a_bad_memory_size_in_one_line(tmp_path, capsys):
    make_noisy_pattern_dataset(tmp_path / "images", per_class=5)
    code, _, err = run_cli(
        ["scan", tmp_path / "images", "--out", tmp_path / "run", "--max-memory", "lots"], capsys
    )
    assert code == 2 and "--max-memory must be 'auto' or a size" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()
