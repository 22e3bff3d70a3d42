"""The run directory's pictures (labelaudit.runs.plots) on real scans of small real images."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from conftest import make_noisy_pattern_dataset
from PIL import Image

from labelaudit.audit.estimators import per_class_bootstrap_intervals
from labelaudit.errors import ConfigError, OutputError
from labelaudit.pipeline.scan import ScanConfig, scan, write_run
from labelaudit.runs.plots import (
    PLOT_FILES,
    PLOTS_DIR,
    PlotData,
    label_quality_boundary,
    plot_class_noise_rates,
    plot_transition_matrix,
    write_plots,
    write_plots_for_run,
)
from labelaudit.train.methods.baselines import BaselineConfig
from labelaudit.train.methods.nlnl import NLNLConfig
from labelaudit.train.methods.pmnar import PMNARConfig
from labelaudit.train.trainer import TrainConfig

# As in test_scan.py: 240 images of 16x16 in 4 classes, ResNet-8 of width 8, 4+4+4 epochs.
SMALL = ScanConfig(train=TrainConfig(width=8, seed=0), nlnl=NLNLConfig(epochs=(4, 4, 4)))
# Pixel sizes for a 4-class run (labelaudit.runs.plots.plot_sizes(4)), written out: a change is a decision.
SIZES_4_CLASSES = {
    "transition_matrix.png": (700, 600),
    "class_noise_rates.png": (800, 400),
    "label_quality.png": (800, 500),
    "training_curves.png": (1000, 450),
}


@pytest.fixture(scope="module")
def patterns(tmp_path_factory):
    root = tmp_path_factory.mktemp("patterns") / "data"
    make_noisy_pattern_dataset(root, per_class=60, noise_rate=0.2, seed=0)
    return root


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """One image cache for the module's scans: the images are decoded once."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def run_dir(patterns, cache, tmp_path_factory):
    """A real NLNL scan's run directory."""
    result = scan(patterns, SMALL, cache_dir=cache)
    return write_run(result, tmp_path_factory.mktemp("runs") / "run")


def pixels(path) -> np.ndarray:
    with Image.open(path) as image:
        image.load()
        assert image.format == "PNG"
        return np.asarray(image.convert("RGB"))


def assert_pictures(folder, sizes):
    assert {p.name for p in folder.iterdir()} == set(PLOT_FILES.values())
    for name, size in sizes.items():
        with Image.open(folder / name) as image:
            assert image.size == size, name
        grey = pixels(folder / name).mean(axis=2)
        assert grey.std() > 10, f"{name} looks blank"  # a white canvas has 0


def test_scan_writes_four_pictures_of_the_expected_size(run_dir):
    assert_pictures(run_dir / PLOTS_DIR, SIZES_4_CLASSES)
    assert not [p for p in (run_dir / PLOTS_DIR).iterdir() if p.name.startswith(".")]  # no temporaries


def test_per_class_intervals_are_in_the_summary_and_contain_the_rates(run_dir):
    summary = json.loads((run_dir / "summary.json").read_text())
    intervals = summary["per_class_noise_rate_intervals_95"]
    assert list(intervals) == summary["class_names"]
    for name, rate in summary["per_class_noise_rates"].items():
        assert intervals[name]["low"] <= rate <= intervals[name]["high"]
        assert intervals[name]["low"] < intervals[name]["high"]  # 50-70 images per class: a real interval


def test_per_class_bootstrap_intervals_are_seeded_and_undefined_for_empty_classes():
    rng = np.random.default_rng(1)
    given = rng.integers(0, 3, 500)  # class 3 never given
    flags = rng.random(500) < np.array([0.05, 0.3, 0.6])[given]
    first = per_class_bootstrap_intervals(flags, given, 4, seed=7)
    np.testing.assert_array_equal(first, per_class_bootstrap_intervals(flags, given, 4, seed=7))
    assert first.shape == (4, 2) and np.isnan(first[3]).all()
    rates = np.array([flags[given == k].mean() for k in range(3)])
    assert ((first[:3, 0] <= rates) & (rates <= first[:3, 1])).all()
    # The binomial draw is the bootstrap of 0/1 flags: its width matches the normal approximation.
    n = np.bincount(given)
    expected = 2 * 1.96 * np.sqrt(rates * (1 - rates) / n)
    np.testing.assert_allclose(first[:3, 1] - first[:3, 0], expected, rtol=0.2)
    with pytest.raises(ValueError, match="same shape"):
        per_class_bootstrap_intervals(flags[:10], given, 4)


def test_the_drawn_boundary_separates_flagged_from_kept(patterns, cache, tmp_path):
    # A baseline keeps the learned mixture boundary (NLNL's cross-fitted audit flags p_label_wrong > 0.5).
    run_dir = write_run(scan(patterns, replace(SMALL, method="gce"), cache_dir=cache), tmp_path / "run")
    summary = json.loads((run_dir / "summary.json").read_text())
    report = pd.read_parquet(run_dir / "report.parquet")
    boundary = label_quality_boundary(summary["flag_rule"])
    assert summary["flag_rule"]["rule"] == "mixture"
    assert np.isclose(boundary, 1 / (1 + np.exp(-summary["flag_rule"]["margin_boundary"])))
    flagged = report["suspected_noisy"].to_numpy()
    assert flagged.any() and (~flagged).any()
    assert (report["label_quality"][flagged] < boundary).all()
    assert (report["label_quality"][~flagged] >= boundary).all()
    assert label_quality_boundary({"rule": "fixed", "confidence_threshold": 0.5}) is None
    assert label_quality_boundary({"rule": "confident-learning (per-class mean self-confidence)"}) is None


def test_rebuilding_from_the_run_directory_gives_the_same_pictures(run_dir, tmp_path):
    old = tmp_path / "old-run"
    shutil.copytree(run_dir, old)
    shutil.rmtree(old / PLOTS_DIR)
    summary = json.loads((old / "summary.json").read_text())
    del summary["per_class_noise_rate_intervals_95"]  # a run from before the intervals existed
    (old / "summary.json").write_text(json.dumps(summary))

    plots = write_plots_for_run(old)
    assert plots == old / PLOTS_DIR
    assert_pictures(plots, SIZES_4_CLASSES)
    for name in PLOT_FILES.values():  # the same seed gives the same intervals: the same pixels
        np.testing.assert_array_equal(pixels(plots / name), pixels(run_dir / PLOTS_DIR / name), err_msg=name)
    # no temporary left
    assert not [p for p in old.iterdir() if p.name.startswith(".") and p.name != ".labelaudit-output.json"]


def test_rebuilding_refuses_existing_plots_without_overwrite_and_replaces_them_whole_with_it(
    run_dir, tmp_path
):
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    with pytest.raises(OutputError, match="exists; pass overwrite=True"):
        write_plots_for_run(run)
    (run / PLOTS_DIR / "stray.txt").write_text("left by someone")
    write_plots_for_run(run, overwrite=True)
    assert {p.name for p in (run / PLOTS_DIR).iterdir()} == set(PLOT_FILES.values())
    assert not [p for p in run.iterdir() if p.name.startswith(".") and p.name != ".labelaudit-output.json"]


def test_rebuilding_from_a_folder_that_is_not_a_run_is_one_line(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        write_plots_for_run(tmp_path / "nothing")
    (tmp_path / "summary.json").write_text("{}")
    with pytest.raises(ConfigError, match=r"missing report\.parquet, transition_matrix\.csv"):
        write_plots_for_run(tmp_path)
    assert not (tmp_path / PLOTS_DIR).exists()


def test_many_classes_keep_the_pictures_bounded(tmp_path):
    k = 1000
    rng = np.random.default_rng(0)
    names = [f"class-{i:04d}-with-a-rather-long-name" for i in range(k)]
    matrix = np.eye(k) * 0.9 + rng.random((k, k)) * 0.1 / k
    matrix /= matrix.sum(axis=1, keepdims=True)
    plot_transition_matrix(matrix, names, tmp_path / "t.png")
    with Image.open(tmp_path / "t.png") as image:
        assert image.size == (1600, 1500)
    rates = rng.random(k) * 0.3
    intervals = np.stack([rates * 0.8, rates * 1.2], axis=1)
    plot_class_noise_rates(rates, intervals, names, tmp_path / "r.png", counts=np.full(k, 50), overall=0.15)
    with Image.open(tmp_path / "r.png") as image:
        assert image.size == (800, 1280)  # the 40 highest shares, not 1,000 bars
    for name in ("t.png", "r.png"):
        assert pixels(tmp_path / name).mean(axis=2).std() > 10


def test_class_names_with_dollars_and_other_scripts_draw(run_dir, tmp_path):
    data = PlotData.from_run_dir(run_dir)
    odd = ("$5 bill", "=cmd|' -C calc'!A0", "\u732b", "x" * 80)
    renamed = PlotData(**{**data.__dict__, "class_names": odd})
    paths = write_plots(renamed, tmp_path / "plots")
    assert_pictures(tmp_path / "plots", SIZES_4_CLASSES)
    assert set(paths) == set(PLOT_FILES)


def test_cv_ce_and_fixed_threshold_runs_draw_without_a_boundary(patterns, cache, tmp_path):
    config = ScanConfig(
        method="cv-ce", train=TrainConfig(width=8, seed=0), baseline=BaselineConfig(folds=2, fold_epochs=2)
    )
    run = write_run(scan(patterns, config, cache_dir=cache), tmp_path / "cv")
    summary = json.loads((run / "summary.json").read_text())
    assert label_quality_boundary(summary["flag_rule"]) is None
    assert_pictures(run / PLOTS_DIR, SIZES_4_CLASSES)
    data = PlotData.from_run_dir(run)
    assert data.training_curves and data.training_curves[0]["phase"] == "CV fold 1/2"
    fixed = PlotData(
        **{**data.__dict__, "flag_rule": {"rule": "fixed", "confidence_threshold": 0.5}, "method": "nlnl"}
    )
    write_plots(fixed, tmp_path / "fixed")
    assert_pictures(tmp_path / "fixed", SIZES_4_CLASSES)


def test_pmnar_warmup_is_read_for_the_curves(run_dir, tmp_path):
    # A PMNAR scan's summary names its method and warm-up; a real one takes ~10 s: edit the NLNL one.
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    summary = json.loads((run / "summary.json").read_text())
    summary["method"] = "pmnar"
    summary["settings"]["pmnar"] = {**PMNARConfig().to_dict(), "warmup": 2}
    (run / "summary.json").write_text(json.dumps(summary))
    data = PlotData.from_run_dir(run)
    assert data.method == "pmnar" and data.warmup_epochs == 2
    write_plots_for_run(run, overwrite=True)
    assert_pictures(run / PLOTS_DIR, SIZES_4_CLASSES)


def test_importing_labelaudit_and_its_cli_does_not_load_matplotlib():
    code = (
        "import sys, labelaudit, labelaudit.cli, labelaudit.pipeline.scan, labelaudit.runs.plots; "
        "print('matplotlib' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_a_scan_with_the_truth_adds_the_reliability_diagram_and_leaves_its_inputs_alone(
    patterns, cache, tmp_path
):
    from labelaudit.runs.plots.folder import RELIABILITY_FILE
    from labelaudit.runs.plots.reliability import RELIABILITY_SIZE

    truth = patterns.parent / f"{patterns.name}_truth.csv"
    before = {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in [truth, *patterns.rglob("*")]}
    result = scan(patterns, SMALL, cache_dir=cache, truth=truth)
    run = write_run(result, tmp_path / "run")
    summary = json.loads((run / "summary.json").read_text())
    bins = summary["truth"]["reliability"]["p_label_wrong"]
    assert sum(b["count"] for b in bins) == summary["num_samples"]
    plots = run / PLOTS_DIR
    assert {p.name for p in plots.iterdir()} == {*PLOT_FILES.values(), RELIABILITY_FILE}
    with Image.open(plots / RELIABILITY_FILE) as image:
        assert image.size == RELIABILITY_SIZE
    assert pixels(plots / RELIABILITY_FILE).mean(axis=2).std() > 10  # not a blank canvas
    assert {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in before} == before  # inputs untouched
