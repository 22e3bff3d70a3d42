"""Issue 25, the second hostile pass: the last tracebacks, silent wrong results, misleading messages,
Ctrl-C races and runs sharing the CPUs. Real commands on real files; signals are real signals to
real processes."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import make_folder_dataset, make_noisy_pattern_dataset
from conftest import run_cli as run
from PIL import Image

from labelaudit.audit.similarity import find_similarity_issues
from labelaudit.errors import ConfigError
from labelaudit.resources import cgroup_cpu_limit, cpu_slots

FAST = ["--budget", "0.05", "--width", "8", "--quiet"]
SAMPLE = Path(__file__).resolve().parent.parent / "sample_data" / "fashion_mnist_noisy"


def one_line_error(err: str, fragment: str) -> str:
    lines = [line for line in err.strip().splitlines() if not line.startswith("labelaudit: warning: ")]
    assert len(lines) == 1 and lines[0].startswith("labelaudit: error: ") and fragment in lines[0], err
    assert "Traceback" not in err
    return lines[0]


def cli(args, cwd: Path, **kwargs) -> subprocess.CompletedProcess:
    """``python -m labelaudit ARGS`` as a real process (what a user's shell runs)."""
    return subprocess.run(
        [sys.executable, "-m", "labelaudit", *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        **kwargs,
    )


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A 4-class pattern folder and two finished scans of it (seeds 0 and 1)."""
    base = tmp_path_factory.mktemp("round2")
    for seed in (0, 1):
        make_noisy_pattern_dataset(base / f"images{seed}", per_class=25, noise_rate=0.2, seed=seed)
        code = subprocess.run(
            [
                sys.executable,
                "-m",
                "labelaudit",
                "scan",
                str(base / f"images{seed}"),
                "--out",
                str(base / f"run{seed}"),
                "--no-similarity",
                *FAST,
            ],
            capture_output=True,
            text=True,
            env={**os.environ, "LABELAUDIT_CACHE_DIR": str(base / "cache")},
        ).returncode
        assert code == 0
    return {"root": base / "images0", "run0": base / "run0", "run1": base / "run1", "base": base}


# 1. Deeply nested JSON ------------------------------------------------------------------------------

DEEP = "[" * 200_000 + "]" * 200_000


def test_deeply_nested_json_is_a_one_line_error_everywhere(runs, tmp_path, capsys):
    export = tmp_path / "export.json"
    export.write_text(DEEP)
    code, _, err = run(["apply", runs["run0"], export, "--out", tmp_path / "applied"], capsys)
    assert code == 2
    one_line_error(err, "nested too deeply")
    deep_run = tmp_path / "deep-run"
    shutil.copytree(runs["run0"], deep_run)
    (deep_run / "summary.json").write_text(DEEP)
    for command in (
        ["retrain", deep_run, "--out", tmp_path / "retrained"],
        ["review", deep_run],
        ["export", deep_run, "--out", tmp_path / "exported"],
    ):
        code, _, err = run(command, capsys)
        assert code == 2, command
        one_line_error(err, "")
        assert "RecursionError" not in err and "recursion" not in err
    assert not (tmp_path / "applied").exists() and not (tmp_path / "retrained").exists()


# 2. An empty --cache-dir ----------------------------------------------------------------------------


def test_an_empty_cache_dir_is_an_error_not_the_current_folder(runs, tmp_path):
    root = runs["root"]
    work = tmp_path / "work"
    work.mkdir()
    for command in (
        ["scan", root, "--out", work / "run", "--cache-dir", "", *FAST],
        ["inspect", root, "--cache-dir", ""],
        ["predict", runs["run0"], root, "--out", work / "p.csv", "--cache-dir", ""],
        ["retrain", runs["run0"], "--out", work / "re", "--cache-dir", ""],
    ):
        done = cli(command, work)
        assert done.returncode == 2, command
        one_line_error(done.stderr, "--cache-dir is empty")
    assert list(work.iterdir()) == []
    from labelaudit import load_images, load_source

    with pytest.raises(ConfigError, match="--cache-dir is empty"):
        load_images(load_source(root), cache_dir="")


# 3. Exact copies do not make ordinary images outliers ------------------------------------------------


def _fashion_images(count: int) -> np.ndarray:
    files = sorted((SAMPLE / "images").rglob("*.png"))
    pick = np.random.default_rng(0).choice(len(files), count, replace=False)
    return np.stack([np.array(Image.open(files[i]).convert("L")) for i in pick])[..., None]


@pytest.mark.parametrize("ordinary", [20, 150])
def test_exact_copies_do_not_make_ordinary_images_outliers(ordinary):
    images = _fashion_images(ordinary + 1)
    copies = np.repeat(images[-1:], 1000, axis=0)
    # a near-duplicate of the first ordinary image, shifted one pixel
    near = np.roll(images[0], 1, axis=1)[None]
    x = np.concatenate([images[:ordinary], copies, near])
    labels = np.zeros(len(x), dtype=np.int64)
    labels[-1] = 1
    found = find_similarity_issues(x, labels)
    # Was: 1,000 copies drove the typical neighbour distance to 0, and 19 of 20 ordinary images were outliers.
    assert not found.is_outlier.any()
    assert (found.duplicate_group[ordinary : ordinary + 1000] == found.duplicate_group[ordinary]).all()
    # The threshold is read from distinct images: the shifted copy is still found (a 0 threshold missed it).
    assert found.duplicate_threshold > 0
    assert found.duplicate_of[-1] == 0 and found.duplicate_conflict[-1]


def test_exact_copies_change_no_other_image_s_outlier_flag():
    images = _fashion_images(200)
    black = np.zeros((1, *images.shape[1:]), dtype=np.uint8)
    alone = find_similarity_issues(np.concatenate([images, black]), np.zeros(201, dtype=np.int64))
    x = np.concatenate([images, black, np.repeat(images[:1], 500, axis=0)])
    found = find_similarity_issues(x, np.zeros(len(x), dtype=np.int64))
    assert found.is_outlier[200] and alone.is_outlier[200]
    assert (found.is_outlier[:201] == alone.is_outlier).all()
    assert found.outlier_threshold == pytest.approx(alone.outlier_threshold)
    assert (found.is_outlier[201:] == alone.is_outlier[0]).all()  # the copies share their image's flag


# 4. Transition matrices of another run ----------------------------------------------------------------


def test_a_transition_matrix_from_another_dataset_is_refused(runs, tmp_path, capsys):
    from labelaudit.reports import matrix_fingerprint

    summary = json.loads((runs["run0"] / "summary.json").read_text())
    for name in (
        "transition_matrix.csv",
        "transition_matrix_anchor.csv",
    ):  # the T files carry the fingerprint
        assert matrix_fingerprint(runs["run0"] / name) == summary["data_fingerprint"]
    mixed = tmp_path / "mixed"
    shutil.copytree(runs["run0"], mixed)
    # same classes, other data
    shutil.copy(runs["run1"] / "transition_matrix.csv", mixed / "transition_matrix.csv")
    code, _, err = run(
        ["retrain", mixed, "--mode", "forward", "--epochs", "1", "--out", tmp_path / "fwd"], capsys
    )
    assert code == 2  # was: trained with the other dataset's T without a word
    one_line_error(err, "transition_matrix.csv")
    assert "belongs to another dataset" in err
    code, _, err = run(["review", mixed], capsys)
    assert code == 2
    one_line_error(err, "transition_matrix.csv")
    assert not (tmp_path / "fwd").exists() and not (mixed / "review").exists()
    # A T edited by hand keeps its header, and so its fingerprint: still used.
    edited = tmp_path / "edited"
    shutil.copytree(runs["run0"], edited)
    matrix = pd.read_csv(edited / "transition_matrix.csv", index_col=0)
    pd.DataFrame(np.eye(len(matrix)), index=matrix.index, columns=matrix.columns).to_csv(
        edited / "transition_matrix.csv"
    )
    code, _, err = run(
        ["retrain", edited, "--mode", "forward", "--epochs", "1", "--out", tmp_path / "fwd2", "--quiet"],
        capsys,
    )
    assert code == 0, err


# 5. URLs -----------------------------------------------------------------------------------------------


def test_urls_in_a_manifest_are_named_as_urls(tmp_path, capsys):
    root = make_folder_dataset(tmp_path / "data", per_class=3)
    rows = [{"path": str(p), "label": p.parent.name} for p in sorted(root.rglob("*.png"))]
    rows += [
        {"path": "s3://bucket/cat/a.png", "label": "cat"},
        {"path": "https://example.org/b.png", "label": "dog"},
    ]
    manifest = tmp_path / "manifest.csv"
    pd.DataFrame(rows).to_csv(manifest, index=False)
    for command in (
        ["scan", manifest, "--out", tmp_path / "run", *FAST],
        ["inspect", manifest],
        ["predict", tmp_path / "missing-run", manifest],
    ):
        code, _, err = run(command, capsys)
        assert code == 2
        if command[0] != "predict":
            line = one_line_error(err, "holds 2 URLs")
            assert "'s3://bucket/cat/a.png'" in line and "on line 8" in line and "s3:/bucket" not in line
    done = cli(["scan", "s3://bucket/data/manifest.parquet", "--out", tmp_path / "run"], tmp_path)
    assert done.returncode == 2
    one_line_error(done.stderr, "'s3://bucket/data/manifest.parquet' is a URL")


# 6, 7. --weights that are a plain pickle, or a folder ------------------------------------------------


def test_weights_that_are_a_pickle_or_a_folder_get_one_clean_line(tmp_path):
    root = make_folder_dataset(tmp_path / "data", per_class=4)
    pickled = tmp_path / "weights.pkl"
    with open(pickled, "wb") as fh:
        pickle.dump({"conv.weight": [1.0, 2.0]}, fh, protocol=4)  # protocol 4: torch warned before its error
    done = cli(
        ["scan", root, "--out", tmp_path / "run", "--backbone", "resnet18", "--weights", pickled], tmp_path
    )
    assert done.returncode == 2
    one_line_error(done.stderr, "is not a file written by torch.save")
    assert "Warning" not in done.stderr
    done = cli(
        ["scan", root, "--out", tmp_path / "run", "--backbone", "resnet18", "--weights", root], tmp_path
    )
    assert done.returncode == 2
    one_line_error(done.stderr, "is a folder")


# 8. --probs with a column for a class the dataset lacks -------------------------------------------------


def test_probs_column_for_an_unknown_class_is_named(tmp_path, capsys):
    root = make_folder_dataset(tmp_path / "data", per_class=6)
    ids = [str(p.relative_to(root)) for p in sorted(root.rglob("*.png"))]
    probs = pd.DataFrame({"sample_id": ids, "p_cat": 0.5, "p_dog": 0.3, "p_zebra": 0.2})
    probs.to_csv(tmp_path / "probs.csv", index=False)
    code, _, err = run(
        ["scan", root, "--probs", tmp_path / "probs.csv", "--out", tmp_path / "run", "--quiet"], capsys
    )
    assert code == 2
    line = one_line_error(err, "'p_zebra'")
    assert "does not have" in line and "sum to 1" not in line


# 9. --embeddings with absurd values ---------------------------------------------------------------------


def test_absurd_embeddings_blame_the_input_not_the_learning_rate(tmp_path, capsys):
    root = make_folder_dataset(tmp_path / "data", per_class=6)
    n = 12
    for name, values, fragment in (
        ("same", np.full((n, 8), 1e38, np.float32), "same vector for every sample"),
        ("huge", (np.random.default_rng(0).standard_normal((n, 8)) * 1e37).astype(np.float32), "too large"),
    ):
        np.save(tmp_path / f"{name}.npy", values)
        code, _, err = run(
            ["scan", root, "--embeddings", tmp_path / f"{name}.npy", "--out", tmp_path / name, "--quiet"],
            capsys,
        )
        assert code == 2
        line = one_line_error(err, fragment)
        assert "--lr" not in line and "learning rate" not in line
        assert not (tmp_path / name).exists()


def test_a_diverged_scan_gives_scan_advice():
    from labelaudit.errors import TrainingError
    from labelaudit.pipeline.scan import _DIVERGED_ADVICE

    error = TrainingError(
        "training diverged in phase 'x' at epoch 1 of 2: the loss became nan; no model was saved",
        _DIVERGED_ADVICE["embeddings-file"],
    )
    assert "--lr" not in str(error) and "embeddings file" in str(error) and str(error).startswith(error.what)


# 10. Sizes in units that show the numbers ---------------------------------------------------------------


def test_a_tiny_memory_budget_is_reported_in_readable_units(tmp_path, capsys):
    from labelaudit.train.compute import format_size

    assert [format_size(v) for v in (1, 1024, 1536, 10 * 2**20, 3 * 2**30)] == [
        "1 B",
        "1.0 KB",
        "1.5 KB",
        "10 MB",
        "3.0 GB",
    ]
    root = make_folder_dataset(tmp_path / "data", per_class=30)  # 60 samples' state: 2.8 KB in float16
    code, _, err = run(
        ["scan", root, "--max-memory", "1KB", "--out", tmp_path / "run", "--no-similarity", *FAST], capsys
    )
    assert code == 0, err
    warning = [line for line in err.splitlines() if "memory budget" in line]
    assert len(warning) == 1 and "budget of 1.0 KB" in warning[0] and "0.0 GB" not in warning[0], err


# 12. Thousands of small classes: one short warning ----------------------------------------------------


def test_many_small_classes_are_counted_not_all_named(tmp_path, capsys):
    rows = []
    image = tmp_path / "img.png"
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(image)
    for c in range(2000):
        for i in range(2):
            path = tmp_path / "images" / f"{c}-{i}.png"
            path.parent.mkdir(exist_ok=True)
            os.link(image, path)
            rows.append({"path": str(path), "label": f"class-{c:04d}"})
    pd.DataFrame(rows).to_csv(tmp_path / "manifest.csv", index=False)
    (tmp_path / "taken").write_text("a file")
    code, _, err = run(["scan", tmp_path / "manifest.csv", "--out", tmp_path / "taken", "--quiet"], capsys)
    assert code == 2  # --out is a file: the scan stops right after the warning
    warning = [line for line in err.splitlines() if line.startswith("labelaudit: warning: fewer than")]
    assert len(warning) == 1 and len(warning[0]) < 400, warning
    assert "2000 classes" in warning[0] and "and 1992 more" in warning[0] and "'class-0000' (2)" in warning[0]


# 13. Ctrl-C always gives the same answer ----------------------------------------------------------------


def _scan_in_child(tmp_path: Path, root: Path, patch: str) -> subprocess.CompletedProcess:
    """A real ``labelaudit scan`` process (``labelaudit.cli.run``, as the console script) with ``patch``
    run first: it puts a real SIGINT at a chosen moment."""
    script = textwrap.dedent(patch) + textwrap.dedent(f"""
        import sys
        from labelaudit.cli import run
        sys.argv = ["labelaudit", "scan", {str(root)!r}, "--out", {str(tmp_path / "run")!r},
                    "--budget", "0.05", "--width", "8", "--quiet"]
        run()
    """)
    return subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ},
    )


def test_ctrl_c_while_the_run_is_moved_into_place_leaves_it_complete_and_says_so(tmp_path):
    root = tmp_path / "images"
    make_noisy_pattern_dataset(root, per_class=10, noise_rate=0.0, seed=0)
    done = _scan_in_child(
        tmp_path,
        root,
        """
        import os, signal
        import labelaudit.runs.directory as rundir
        original = rundir.replace_folder
        def replace_then_ctrl_c(tmp, target):
            original(tmp, target)
            os.kill(os.getpid(), signal.SIGINT)  # lands right after the rename
        rundir.replace_folder = replace_then_ctrl_c
    """,
    )
    assert done.returncode == 130, done.stderr
    assert (
        "is complete" in done.stderr
        and str(tmp_path / "run") in done.stderr
        and "Traceback" not in done.stderr
    )
    assert (tmp_path / "run" / "summary.json").is_file() and (tmp_path / "run" / "report.parquet").is_file()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_a_ctrl_c_lost_in_a_finaliser_still_stops_the_scan(tmp_path):
    root = tmp_path / "images"
    make_noisy_pattern_dataset(root, per_class=10, noise_rate=0.0, seed=0)
    done = _scan_in_child(
        tmp_path,
        root,
        """
        import gc, os, signal, time
        import labelaudit.pipeline.scan as scanner
        class Finaliser:
            def __del__(self):
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.2)  # the KeyboardInterrupt is raised here, inside __del__, where Python drops it
        original = scanner.find_similarity_issues
        def search_then_lose_a_ctrl_c(*args, **kwargs):
            Finaliser()
            gc.collect()
            return original(*args, **kwargs)
        scanner.find_similarity_issues = search_then_lose_a_ctrl_c
    """,
    )
    # Was: "Exception ignored in ... KeyboardInterrupt", then the scan finished and exited 0.
    assert done.returncode == 130, done.stderr
    assert "labelaudit: interrupted" in done.stderr and "Exception ignored" not in done.stderr
    assert not (tmp_path / "run").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


# 14. Sharing the CPUs -------------------------------------------------------------------------------------


def test_cgroup_cpu_quota_is_read_in_v1_and_v2_layouts(tmp_path):
    v2 = tmp_path / "v2"
    (v2 / "job").mkdir(parents=True)
    (v2 / "job" / "cpu.max").write_text("150000 100000\n")
    (tmp_path / "self-v2").write_text("0::/job\n")
    assert cgroup_cpu_limit(v2, tmp_path / "self-v2") == pytest.approx(1.5)
    (v2 / "job" / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_limit(v2, tmp_path / "self-v2") is None
    v1 = tmp_path / "v1"
    (v1 / "cpu,cpuacct" / "docker" / "abc").mkdir(parents=True)
    (v1 / "cpu,cpuacct" / "docker" / "abc" / "cpu.cfs_quota_us").write_text("200000\n")
    (v1 / "cpu,cpuacct" / "docker" / "abc" / "cpu.cfs_period_us").write_text("100000\n")
    (tmp_path / "self-v1").write_text("4:memory:/docker/abc\n3:cpu,cpuacct:/docker/abc\n")
    assert cgroup_cpu_limit(v1, tmp_path / "self-v1") == pytest.approx(2.0)
    (v1 / "cpu,cpuacct" / "docker" / "abc" / "cpu.cfs_quota_us").write_text("-1\n")
    assert cgroup_cpu_limit(v1, tmp_path / "self-v1") is None


def test_runs_that_need_more_cpus_than_there_are_take_turns(tmp_path):
    folder = tmp_path / "slots"
    released = tmp_path / "released"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
        import time
        from pathlib import Path
        from labelaudit.resources import cpu_slots
        with cpu_slots(2, slots=2, folder=Path({str(folder)!r})) as held:
            assert held == 2
            Path({str(tmp_path / "holding")!r}).write_text("yes")
            time.sleep(1.5)
            Path({str(released)!r}).write_text("yes")
    """),
        ]
    )
    try:
        deadline = time.time() + 60
        while not (tmp_path / "holding").exists():
            assert holder.poll() is None and time.time() < deadline
            time.sleep(0.02)
        phases = []
        with cpu_slots(
            1, slots=2, folder=folder, progress=lambda phase, done, total, extra="": phases.append(phase)
        ) as held:
            assert held == 1
            assert released.exists()  # it waited for the other run to give the CPUs back
        assert "waiting for CPUs" in phases
        with cpu_slots(2, slots=2, folder=folder) as held:  # free again: at once
            assert held == 2
    finally:
        holder.wait(timeout=60)
    assert holder.returncode == 0


def test_threads_are_recorded_and_a_different_count_is_an_explicit_choice(runs, tmp_path, capsys):
    summary = json.loads((runs["run0"] / "summary.json").read_text())
    import torch

    from labelaudit.resources import usable_cpus

    assert 1 <= summary["threads"] <= usable_cpus() and summary["threads"] <= max(torch.get_num_threads(), 1)
    code, _, err = run(
        ["scan", runs["root"], "--threads", "1", "--out", tmp_path / "one", "--no-similarity", *FAST], capsys
    )
    assert code == 0, err
    assert json.loads((tmp_path / "one" / "summary.json").read_text())["threads"] == 1
    assert json.loads((tmp_path / "one" / "config.json").read_text())["train"]["threads"] == 1
