"""Follow-ups to the reliability review: benchmark's scan options and resume identity, truth files
read as text, child scans that die with their benchmark, class names with surrounding whitespace,
and the budget's upper bound. Real commands on real files; kills are real signals to real processes."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import make_folder_dataset, save_image
from conftest import run_cli as run

from labelaudit.audit.metrics import load_truth, ranking_metrics
from labelaudit.cli import main
from labelaudit.data.sources import load_source, match_classes
from labelaudit.errors import ConfigError
from labelaudit.pipeline.benchmark import BenchmarkConfig, BenchmarkLock, parse_noise
from labelaudit.runs.directory import FolderLock
from labelaudit.train.trainer import check_budget

FAST = ["--budget", "0.05", "--width", "8", "--quiet"]
BENCH_FAST = [
    "--noise",
    "symm-exc:0.3",
    "--methods",
    "ce",
    "--budget",
    "0.05",
    "--scan-option=--width=8",
    "--quiet",
]


def one_line_error(err: str, fragment: str) -> str:
    errors = [line for line in err.strip().splitlines() if not line.startswith("labelaudit: warning: ")]
    assert len(errors) == 1 and errors[0].startswith("labelaudit: error: ") and fragment in errors[0], err
    assert "Traceback" not in err
    return errors[0]


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (relative name -> bytes)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# 1. --scan-option may not set what benchmark sets itself ------------------------------------------


@pytest.mark.parametrize(
    "args, word, owned",
    [
        (["--out=elsewhere"], "--out=elsewhere", "--out"),
        (["--out", "elsewhere"], "--out", "--out"),
        (["-o", "elsewhere"], "-o", "-o"),
        (["-oelsewhere"], "-oelsewhere", "-o"),
        (["--truth=t.csv"], "--truth=t.csv", "--truth"),
        (["--overwrite"], "--overwrite", "--overwrite"),
        (["--json"], "--json", "--json"),
        (["--seed=3"], "--seed=3", "--seed"),
        (["--method", "ce"], "--method", "--method"),
        (["--budget=2"], "--budget=2", "--budget"),
        (["--epochs", "2"], "--epochs", "--epochs"),
        (["--quiet"], "--quiet", "--quiet"),
        (["-q"], "-q", "-q"),
        (["--width=8", "--seed", "1"], "--seed", "--seed"),
    ],
)
def test_benchmark_config_refuses_scan_options_it_sets_itself(args, word, owned):
    config = BenchmarkConfig(
        settings=tuple(parse_noise("symm-exc:0.2")), methods=("ce",), scan_args=tuple(args)
    )
    with pytest.raises(
        ConfigError, match=re.escape(f"--scan-option {word!r} sets {owned}, which benchmark sets itself")
    ):
        config.validate()


def test_benchmark_config_keeps_scan_options_it_does_not_set():
    args = (
        "--width=8",
        "--depth",
        "8",
        "--threshold",
        "-0.5",
        "--workers=1",
        "--outlier-free",
        "--weights",
        "x.pth",
    )
    BenchmarkConfig(settings=tuple(parse_noise("symm-exc:0.2")), methods=("ce",), scan_args=args).validate()


def test_benchmark_scan_option_out_leaves_an_unrelated_run_alone(tmp_path, capsys):
    root = make_folder_dataset(tmp_path / "clean", per_class=4)
    code, _, err = run(["scan", root, "--out", tmp_path / "mine", *FAST], capsys)
    assert code == 0, err
    before = snapshot(tmp_path / "mine")
    for option in (
        [f"--scan-option=--out={tmp_path / 'mine'}"],
        ["--scan-option=--out", f"--scan-option={tmp_path / 'mine'}"],
    ):
        code, _, err = run(
            ["benchmark", root, "--out", tmp_path / "bench", "--methods", "ce", *option], capsys
        )
        assert code == 2
        one_line_error(err, "sets --out, which benchmark sets itself")
        assert snapshot(tmp_path / "mine") == before
        assert not (tmp_path / "bench").exists()


# 2. and 5. What a benchmark folder may be resumed from ---------------------------------------------


def test_benchmark_refuses_to_resume_after_images_moved_between_classes(tmp_path, capsys):
    root = make_folder_dataset(tmp_path / "clean", classes=("a", "b"), per_class=10)
    bench = tmp_path / "bench"
    code, _, err = run(["benchmark", root, "--out", bench, *BENCH_FAST], capsys)
    assert code == 0, err
    results = (bench / "results.csv").read_bytes()
    code, _, err = run(["benchmark", root, "--out", bench, *BENCH_FAST], capsys)
    assert code == 0, err  # the same data resumes (every run reused)
    for i in range(5):  # swap five images each way: same ids count, other labels
        (root / "a" / f"a_{i}.png").rename(root / "b" / f"a_{i}.png")
        (root / "b" / f"b_{i}.png").rename(root / "a" / f"b_{i}.png")
    code, _, err = run(["benchmark", root, "--out", bench, *BENCH_FAST], capsys)
    assert code == 2
    one_line_error(err, "holds a benchmark with other data_fingerprint; its runs cannot be reused")
    assert (bench / "results.csv").read_bytes() == results


@pytest.mark.parametrize("content", [b"[1, 2]", b"{not json", b"\xff\xfe\x00", b"null"])
def test_a_benchmark_json_that_is_not_settings_is_a_one_line_error(tmp_path, capsys, content):
    root = make_folder_dataset(tmp_path / "clean", per_class=4)
    bench = tmp_path / "bench"
    with BenchmarkLock(bench):  # a benchmark folder, as the benchmark itself makes it
        pass
    (bench / "benchmark.json").write_bytes(content)
    before = snapshot(bench)
    code, _, err = run(["benchmark", root, "--out", bench, "--methods", "ce", "--quiet"], capsys)
    assert code == 2
    one_line_error(err, "holds a benchmark.json that is not a benchmark's settings")
    assert snapshot(bench) == before


# 3. truth.csv is read as text -----------------------------------------------------------------------

NA_LIKE = ["NA", "null", "None", "NaN", "nan", "N/A", "NULL", "#N/A", "n/a", "<NA>", "-nan", "1.#QNAN"]


def test_benchmark_metrics_keep_sample_ids_that_look_missing(tmp_path, capsys):
    folder = tmp_path / "d"
    ids = NA_LIKE + [f"img{i}" for i in range(20 - len(NA_LIKE))]
    for i in range(len(ids)):
        save_image(folder / "imgs" / f"{i}.png", seed=i)
    clean = pd.DataFrame(
        {
            "sample_id": ids,
            "path": [f"imgs/{i}.png" for i in range(len(ids))],
            "label": ["a", "b"] * (len(ids) // 2),
        }
    )
    clean.to_parquet(folder / "manifest.parquet", index=False)
    bench = tmp_path / "bench"
    code, _, err = run(["benchmark", folder / "manifest.parquet", "--out", bench, *BENCH_FAST], capsys)
    assert code == 0, err
    # The truth, independently of truth.csv: the injected manifest's labels against the clean ones.
    noisy = pd.read_parquet(bench / "data" / "symm-exc-0.3-seed0" / "manifest.parquet")
    report = pd.read_parquet(bench / "runs" / "symm-exc-0.3-seed0" / "ce" / "report.parquet")
    given = dict(zip(noisy["sample_id"], noisy["label"]))
    true = dict(zip(clean["sample_id"], clean["label"]))
    is_noisy = np.array([given[s] != true[s] for s in report["sample_id"]])
    assert is_noisy.sum() == 6 and sorted(report["sample_id"]) == sorted(ids)
    expected = ranking_metrics(-report["label_quality"].to_numpy(), is_noisy)
    row = pd.read_csv(bench / "results.csv").iloc[0]
    assert row["auroc"] == pytest.approx(expected["auroc"]) and row["auprc"] == pytest.approx(
        expected["auprc"]
    )


# 4. A killed benchmark takes its child scan with it -------------------------------------------------


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting for its new parent to reap it has ended)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's")
def test_a_killed_benchmark_takes_its_child_scan_with_it(tmp_path):
    root = make_folder_dataset(tmp_path / "clean", classes=("a", "b"), per_class=10)
    bench = tmp_path / "bench"
    parent = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "labelaudit",
            "benchmark",
            str(root),
            "--out",
            str(bench),
            "--methods",
            "ce",
            "--budget",
            "100",
            "--scan-option=--width=8",
            "--quiet",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    scan = None
    try:
        deadline = time.time() + 60
        while scan is None:  # wait for the child scan to be running (exec'd, holding its run's lock)
            assert parent.poll() is None and time.time() < deadline, parent.communicate()
            for pid in _children(parent.pid):
                try:
                    if b"scan" in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0"):
                        scan = pid
                except OSError:
                    pass
            time.sleep(0.05)
        time.sleep(0.5)
        parent.send_signal(signal.SIGKILL)
        parent.communicate(timeout=30)
        deadline = time.time() + 5
        while _alive(scan) and time.time() < deadline:
            time.sleep(0.05)
        assert not _alive(scan), "the child scan outlived its benchmark"
    finally:
        parent.kill()
        parent.communicate()
        if scan is not None and _alive(scan):
            os.kill(scan, signal.SIGKILL)
    lock = FolderLock(bench / "runs" / "symm-exc-0.2-seed0" / "ce", "--out")
    lock.acquire()  # the run's lock died with the scan
    lock.release()


# 6. Class names with surrounding whitespace ---------------------------------------------------------


@pytest.fixture(scope="module")
def spaced(tmp_path_factory):
    """A folder dataset whose class folder is ``"cat "`` (trailing space), its inject-noise output
    and a scan of the noisy manifest with its truth."""
    base = tmp_path_factory.mktemp("spaced")
    root = make_folder_dataset(base / "sp", classes=("cat ", "dog"), per_class=10)
    cache = base / "cache"
    for argv in (
        ["inject-noise", root, "--rate", "0.2", "--out", base / "n"],
        [
            "scan",
            base / "n" / "manifest.parquet",
            "--truth",
            base / "n" / "truth.csv",
            "--out",
            base / "run",
            "--cache-dir",
            cache,
            *FAST,
        ],
    ):
        with pytest.raises(SystemExit) as done:
            main([str(a) for a in argv])
        assert done.value.code == 0
    return {"base": base, "root": root, "noisy": base / "n", "run": base / "run", "cache": cache}


def test_a_manifest_keeps_a_class_name_with_a_trailing_space(spaced):
    summary = json.loads((spaced["run"] / "summary.json").read_text())
    assert summary["class_names"] == ["cat ", "dog"]  # not renamed "cat"
    assert summary["truth"]["true_noise_rate"] == pytest.approx(0.2)


def test_a_folder_scan_accepts_the_truth_csv_of_its_own_injected_noise(spaced, tmp_path, capsys):
    code, _, err = run(
        [
            "scan",
            spaced["root"],
            "--truth",
            spaced["noisy"] / "truth.csv",
            "--out",
            tmp_path / "r",
            "--cache-dir",
            spaced["cache"],
            *FAST,
        ],
        capsys,
    )
    assert code == 0, err  # was: "uses label 'cat' that is not a class"
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    # the clean labels
    assert summary["class_names"] == ["cat ", "dog"] and summary["truth"]["true_noise_rate"] == 0


def test_evaluate_and_retrain_test_match_folders_and_manifests(spaced, tmp_path, capsys):
    # The run's classes come from a parquet manifest, the test set from the folder "cat ".
    code, out, err = run(
        ["evaluate", spaced["run"], spaced["root"], "--cache-dir", spaced["cache"], "--json"], capsys
    )
    assert code == 0, err
    assert json.loads(out)["per_class"]["cat "]["samples"] == 10
    # --mode forward: the 1-epoch fixture scan may flag a whole class, which pseudo mode refuses to learn
    # from.
    code, _, err = run(
        [
            "retrain",
            spaced["run"],
            "--test",
            spaced["root"],
            "--epochs",
            "1",
            "--out",
            tmp_path / "r",
            "--mode",
            "forward",
            "--cache-dir",
            spaced["cache"],
            "--quiet",
        ],
        capsys,
    )
    assert code == 0, err
    # A hand-written CSV whose cells lost the trailing space still names the class "cat ".
    pd.DataFrame(
        {
            "path": [str(p) for p in sorted(spaced["root"].rglob("*.png"))],
            "label": ["cat"] * 10 + ["dog"] * 10,
        }
    ).to_csv(tmp_path / "test.csv", index=False)
    code, out, err = run(
        ["evaluate", spaced["run"], tmp_path / "test.csv", "--cache-dir", spaced["cache"], "--json"], capsys
    )
    assert code == 0, err
    assert json.loads(out)["per_class"]["cat "]["samples"] == 10


def test_labels_match_a_class_only_through_unambiguous_surrounding_whitespace(tmp_path):
    assert match_classes(["cat", " dog", "cat ", "bird"], ["cat ", "dog"]) == {
        "cat": "cat ",
        " dog": "dog",
        "cat ": "cat ",
        "bird": None,
    }
    assert match_classes(["cat", " cat"], ["cat", "cat "]) == {
        "cat": "cat",
        " cat": None,
    }  # exact wins; else ambiguous
    root = make_folder_dataset(tmp_path / "sp", classes=("cat ", "cat"), per_class=2)
    table = load_source(root, require_all_classes=False)
    truth = pd.DataFrame(
        {"sample_id": table.samples["sample_id"], "true_label": ["cat", "cat", "cat ", "cat "]}
    )
    truth.to_parquet(tmp_path / "truth.parquet", index=False)  # parquet keeps the space: both classes exist
    assert table.class_names == ("cat", "cat ")
    assert load_truth(tmp_path / "truth.parquet", table).tolist() == [0, 0, 1, 1]
    truth.to_csv(tmp_path / "truth.csv", index=False)  # a CSV cell is stripped: "cat" exactly
    assert load_truth(tmp_path / "truth.csv", table).tolist() == [0, 0, 0, 0]


# 7. The budget has an upper bound -------------------------------------------------------------------


@pytest.mark.parametrize("command", ["scan", "benchmark"])
def test_a_huge_budget_is_refused_with_the_range(tmp_path, capsys, command):
    root = make_folder_dataset(tmp_path / "data")
    code, _, err = run([command, root, "--budget", "1e300", "--out", tmp_path / "out", "--quiet"], capsys)
    assert code == 2
    one_line_error(
        err,
        "--budget must be in the range (0, 1000] (1 = the default schedule, 1000 = 1000 times as many "
        "epochs); got 1e+300",
    )
    assert not (tmp_path / "out").exists()
    assert check_budget(1000) == 1000
    with pytest.raises(ConfigError, match=r"in the range \(0, 1000\] .*; got 1000.5$"):
        check_budget(1000.5)
