"""Issue 11: outputs never land on inputs, run directories appear whole or not at all, CSVs are
safe in a spreadsheet. Real commands on real files; kills are real signals to real processes."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import make_noisy_pattern_dataset, save_image
from conftest import run_cli as run

from labelaudit.cli import main

FAST = ["--budget", "0.05", "--width", "8", "--quiet"]
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (relative name -> bytes)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def one_line_error(err: str, fragment: str) -> None:
    errors = [line for line in err.strip().splitlines() if not line.startswith("labelaudit: warning: ")]
    assert len(errors) == 1 and errors[0].startswith("labelaudit: error: ") and fragment in errors[0], err
    assert "Traceback" not in err


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """A 4-class pattern image folder, its truth file, and one finished scan of it."""
    base = tmp_path_factory.mktemp("reliability")
    root = base / "data"
    make_noisy_pattern_dataset(root, per_class=20, noise_rate=0.2, seed=5)
    cache = base / "cache"
    with pytest.raises(SystemExit) as done:
        main(["scan", str(root), "--out", str(base / "run"), "--cache-dir", str(cache), *FAST])
    assert done.value.code == 0
    return {"base": base, "root": root, "truth": base / "data_truth.csv", "cache": cache, "run": base / "run"}


def manifest_beside_images(folder: Path, name: str, n: int = 8) -> Path:
    """``folder/<name>`` listing ``n`` real images in ``folder/imgs`` with two labels."""
    for i in range(n):
        save_image(folder / "imgs" / f"{i}.png", seed=i)
    frame = pd.DataFrame({"path": [f"imgs/{i}.png" for i in range(n)], "label": ["a", "b"] * (n // 2)})
    target = folder / name
    frame.to_parquet(target, index=False) if target.suffix == ".parquet" else frame.to_csv(
        target, index=False
    )
    return target


# 1. Inputs are never written --------------------------------------------------------------------


def test_inject_noise_refuses_an_out_folder_that_holds_its_manifest(tmp_path, capsys):
    manifest = manifest_beside_images(tmp_path / "d", "manifest.parquet")
    before = snapshot(tmp_path / "d")
    code, _, err = run(["inject-noise", manifest, "--rate", "0.5", "--out", tmp_path / "d"], capsys)
    assert code == 2
    one_line_error(err, "holds the input")
    assert snapshot(tmp_path / "d") == before


def test_scan_refuses_an_out_folder_that_holds_its_manifest_before_decoding(tmp_path, capsys, isolated_cache):
    manifest = manifest_beside_images(tmp_path / "d", "report.csv")
    before = snapshot(tmp_path / "d")
    code, _, err = run(["scan", manifest, "--out", tmp_path / "d", "--overwrite", *FAST], capsys)
    assert code == 2
    one_line_error(err, "holds the input")
    assert snapshot(tmp_path / "d") == before
    assert list(isolated_cache.iterdir()) == []  # refused before a single image was decoded


def test_predict_refuses_to_write_over_its_manifest(dataset, tmp_path, capsys):
    manifest = manifest_beside_images(tmp_path / "d", "images.csv")
    before = snapshot(tmp_path / "d")
    for extra in ([], ["--overwrite"]):
        code, _, err = run(["predict", dataset["run"], manifest, "--out", manifest, *extra], capsys)
        assert code == 2
        one_line_error(err, "is one of the inputs")
    assert snapshot(tmp_path / "d") == before


def test_predict_refuses_to_write_over_the_model(dataset, tmp_path, capsys):
    copy = tmp_path / "run"
    shutil.copytree(dataset["run"], copy)
    (copy / "model.csv").symlink_to(copy / "model.pt")  # a symlink is resolved before comparing
    code, _, err = run(
        ["predict", copy / "model.pt", dataset["root"], "--out", copy / "model.csv", "--overwrite"], capsys
    )
    assert code == 2
    one_line_error(err, "is one of the inputs")
    assert (copy / "model.pt").read_bytes() == (dataset["run"] / "model.pt").read_bytes()


def test_an_out_reached_through_a_symlink_into_the_images_is_refused(dataset, tmp_path, capsys):
    link = tmp_path / "link"
    link.symlink_to(dataset["root"] / "blob", target_is_directory=True)
    code, _, err = run(["scan", dataset["root"], "--out", link / "run", *FAST], capsys)
    assert code == 2
    one_line_error(err, "inside the input folder")
    assert not (dataset["root"] / "blob" / "run").exists()
    assert not [p for p in (dataset["root"] / "blob").iterdir() if p.name.startswith(".")]


# 2. Existing --out folders ----------------------------------------------------------------------


def test_a_foreign_non_empty_out_folder_is_never_replaced(dataset, tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("my notes")
    for extra in ([], ["--overwrite"]):
        code, _, err = run(
            ["scan", dataset["root"], "--out", out, "--cache-dir", dataset["cache"], *FAST, *extra], capsys
        )
        assert code == 2
        one_line_error(err, "files that labelaudit did not write")
    code, _, err = run(["benchmark", dataset["root"], "--methods", "ce", "--out", out], capsys)
    assert code == 2  # a benchmark resumes only an earlier benchmark's folder
    one_line_error(err, "files that labelaudit did not write")
    assert snapshot(out) == {"notes.txt": b"my notes"}
    code, _, err = run(
        ["retrain", dataset["run"], "--out", dataset["run"].parent / "data", "--overwrite"], capsys
    )
    assert code == 2  # the image folder, of course, is refused too


def test_an_empty_out_is_an_error_not_the_current_folder(dataset, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for command in (
        ["scan", dataset["root"], *FAST],
        ["retrain", dataset["run"]],
        ["inspect", dataset["root"]],
        ["inject-noise", dataset["root"], "--rate", "0.1"],
        ["predict", dataset["run"], dataset["root"]],
    ):
        code, _, err = run([*command, "--out", ""], capsys)
        assert code == 2, command
        one_line_error(err, "--out is empty")
    assert list(tmp_path.iterdir()) == []


def test_an_earlier_output_is_replaced_only_with_overwrite_and_then_whole(dataset, tmp_path, capsys):
    out = tmp_path / "run"
    base = ["scan", dataset["root"], "--out", out, "--cache-dir", dataset["cache"], *FAST]
    assert run(base, capsys)[0] == 0
    before = snapshot(out)
    code, _, err = run([*base, "--seed", "1"], capsys)
    assert code == 2
    one_line_error(err, "holds an earlier scan output; pass --overwrite")
    assert snapshot(out) == before
    code, _, err = run([*base, "--truth", dataset["truth"], "--seed", "1", "--overwrite"], capsys)
    assert code == 0, err
    assert (out / "true_transition_matrix.csv").exists()
    code, _, err = run([*base, "--seed", "2", "--overwrite"], capsys)
    assert code == 0, err
    assert not (
        out / "true_transition_matrix.csv"
    ).exists()  # the whole folder was replaced, not file by file
    assert json.loads((out / "config.json").read_text())["train"]["seed"] == 2
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary, no lock left


def test_overwrite_never_deletes_files_the_user_put_in_a_run(dataset, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(dataset["run"], out)
    (out / "flagged_reviewed.xlsx").write_text("a reviewer's afternoon")
    code, _, err = run(
        ["scan", dataset["root"], "--out", out, "--overwrite", "--cache-dir", dataset["cache"], *FAST], capsys
    )
    assert code == 2
    one_line_error(err, "files labelaudit did not write there (flagged_reviewed.xlsx)")
    assert (out / "flagged_reviewed.xlsx").read_text() == "a reviewer's afternoon"


def test_a_folder_is_ours_only_by_our_marker_not_by_a_file_name(dataset, tmp_path, capsys):
    project = tmp_path / "project"
    project.mkdir()
    (project / "noise.json").write_text('{"sigma": 0.1}')
    (project / "summary.json").write_text('{"kind": "scan"}')
    (project / "thesis.tex").write_text("chapter 1")
    for command in (
        ["inject-noise", dataset["root"], "--rate", "0.1"],
        ["inspect", dataset["root"]],
        ["scan", dataset["root"], "--cache-dir", dataset["cache"], *FAST],
    ):
        code, _, err = run([*command, "--out", project, "--overwrite"], capsys)
        assert code == 2, command
        one_line_error(err, "files that labelaudit did not write")
    assert sorted(p.name for p in project.iterdir()) == ["noise.json", "summary.json", "thesis.tex"]


def test_each_command_refuses_another_commands_output(dataset, tmp_path, capsys):
    noisy = tmp_path / "noisy"
    assert run(["inject-noise", dataset["root"], "--rate", "0.1", "--out", noisy], capsys)[0] == 0
    code, _, err = run(["inspect", dataset["root"], "--out", noisy], capsys)
    assert code == 2
    one_line_error(err, "holds the output of labelaudit inject-noise")
    code, _, err = run(
        ["inject-noise", dataset["root"], "--rate", "0.2", "--out", noisy, "--overwrite"], capsys
    )
    assert code == 0, err
    assert json.loads((noisy / "noise.json").read_text())["requested_rate"] == 0.2


# 3. Spreadsheet formula injection ---------------------------------------------------------------

FORMULA_CLASSES = ("=cmd|' -C calc'!A0", "@SUM(1+1)", "+plus", "-minus")


def csv_cells(path: Path) -> list[str]:
    with open(path, newline="", encoding="utf-8") as fh:
        return [cell for row in csv.reader(fh) for cell in row]


def is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def formula_dataset(tmp_path: Path, noise_rate: float, seed: int) -> Path:
    """Pattern images in class folders named like spreadsheet formulas (FORMULA_CLASSES)."""
    patterns = tmp_path / "data"
    make_noisy_pattern_dataset(patterns, per_class=12, noise_rate=noise_rate, seed=seed)
    root = tmp_path / "formula"
    for pattern, name in zip(sorted(p.name for p in patterns.iterdir()), FORMULA_CLASSES):
        shutil.copytree(patterns / pattern, root / name)
    return root


def test_no_csv_cell_is_a_live_formula_and_parquet_keeps_raw_values(tmp_path, capsys):
    root = formula_dataset(tmp_path, noise_rate=0.25, seed=2)
    first = next((root / FORMULA_CLASSES[0]).iterdir())
    first.rename(first.with_name('=HYPERLINK("evil")x.png'))
    out = tmp_path / "run"
    code, _, err = run(["scan", root, "--out", out, "--threshold", "0.99", *FAST], capsys)
    assert code == 0, err
    code, _, err = run(["predict", out, root, "--out", tmp_path / "pred.csv"], capsys)
    assert code == 0, err
    written = [
        out / "report.csv",
        out / "flagged.csv",
        out / "transition_matrix.csv",
        out / "transition_matrix_anchor.csv",
        out / "skipped.csv",
        tmp_path / "pred.csv",
    ]
    for path in written:
        live = [c for c in csv_cells(path) if c.startswith(FORMULA_START) and not is_number(c)]
        assert live == [], (path.name, live[:3])
    assert len(pd.read_csv(out / "flagged.csv")) > 0
    flagged = csv_cells(out / "flagged.csv")
    assert "'=cmd|' -C calc'!A0" in flagged or "'@SUM(1+1)" in flagged  # escaped, not dropped
    assert f"'{FORMULA_CLASSES[0]}" in csv_cells(out / "transition_matrix.csv")
    report = pd.read_parquet(out / "report.parquet")
    assert set(report["given_label"]) == set(FORMULA_CLASSES)  # parquet: raw values
    assert any(s.startswith(f"{FORMULA_CLASSES[0]}/=HYPERLINK") for s in report["sample_id"])


def test_escaped_csvs_read_back_exactly(tmp_path, capsys):
    """inject-noise's truth.csv (escaped) drives scan --truth on the same formula-named classes."""
    root = formula_dataset(tmp_path, noise_rate=0.0, seed=3)
    noisy = tmp_path / "noisy"
    assert run(["inject-noise", root, "--rate", "0.25", "--out", noisy], capsys)[0] == 0
    assert "'-minus" in csv_cells(noisy / "truth.csv")
    code, out, err = run(
        [
            "scan",
            noisy / "manifest.parquet",
            "--truth",
            noisy / "truth.csv",
            "--out",
            tmp_path / "run",
            "--json",
            *FAST,
        ],
        capsys,
    )
    assert code == 0, err
    assert json.loads(out)["truth"]["true_noise_rate"] == pytest.approx(0.25)


# 5. All-or-nothing run directories, locks and fingerprints ---------------------------------------

# Runs the real CLI in a child that stops itself (a real signal) when the scan has written every
# file but model.pt into its temporary folder: a kill at a controlled point of the write.
STOP_BEFORE_MODEL = """
import os, signal, sys
import labelaudit.pipeline.scan_outputs as scanner
scanner.save_model = lambda *a, **k: os.kill(os.getpid(), getattr(signal, sys.argv[1]))
from labelaudit.cli import main
main(sys.argv[2:])
"""


def child_scan(signal_name: str, args: list, cache: Path) -> subprocess.Popen:
    env = {**os.environ, "LABELAUDIT_CACHE_DIR": str(cache)}
    return subprocess.Popen(
        [sys.executable, "-c", STOP_BEFORE_MODEL, signal_name, "scan", *map(str, args)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def temporaries(folder: Path, name: str) -> list[Path]:
    return [p for p in folder.iterdir() if p.name.startswith(f".{name}.") and p.name.endswith(".tmp")]


def test_a_scan_killed_while_writing_leaves_the_earlier_run_whole(dataset, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(dataset["run"], out)
    before = snapshot(out)
    child = child_scan(
        "SIGKILL", [dataset["root"], "--out", out, "--overwrite", "--seed", "3", *FAST], dataset["cache"]
    )
    child.communicate(timeout=300)
    assert child.returncode == -signal.SIGKILL
    assert snapshot(out) == before  # not one new file beside the old model
    (partial,) = temporaries(tmp_path, "run")  # the killed run's half-written folder, hidden
    assert (partial / "report.parquet").exists() and not (partial / "model.pt").exists()
    code, out_text, err = run(["predict", out, dataset["root"], "--out", tmp_path / "p.csv"], capsys)
    assert code == 0, err  # the earlier run still works as a whole
    code, _, err = run(
        ["scan", dataset["root"], "--out", out, "--overwrite", "--cache-dir", dataset["cache"], *FAST], capsys
    )
    assert code == 0, err
    assert temporaries(tmp_path, "run") == []  # the next run cleaned up after the killed one


def test_a_second_scan_into_the_same_out_fails_while_the_first_writes(dataset, tmp_path, capsys):
    out = tmp_path / "run"
    child = child_scan("SIGSTOP", [dataset["root"], "--out", out, *FAST], dataset["cache"])
    try:
        deadline = time.time() + 120
        while _state(child.pid) != "T":  # stopped inside its write, holding the lock
            assert child.poll() is None and time.time() < deadline, child.communicate()
            time.sleep(0.05)
        code, _, err = run(
            ["scan", dataset["root"], "--out", out, "--overwrite", "--cache-dir", dataset["cache"], *FAST],
            capsys,
        )
        assert code == 2
        one_line_error(err, "another labelaudit process is writing")
        assert not out.exists()
    finally:
        child.kill()
        child.communicate()
    code, _, err = run(
        ["scan", dataset["root"], "--out", out, "--cache-dir", dataset["cache"], *FAST], capsys
    )
    assert code == 0, err  # the lock died with its holder


def _state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as fh:
        return fh.read().rsplit(")", 1)[1].split()[0]


@pytest.fixture(scope="module")
def other_run(dataset):
    """A scan of another dataset (other images and labels)."""
    base = dataset["base"]
    make_noisy_pattern_dataset(base / "other", per_class=15, noise_rate=0.2, seed=9)
    with pytest.raises(SystemExit) as done:
        main(
            [
                "scan",
                str(base / "other"),
                "--out",
                str(base / "other-run"),
                "--cache-dir",
                str(dataset["cache"]),
                *FAST,
            ]
        )
    assert done.value.code == 0
    return base / "other-run"


def test_retrain_refuses_a_summary_from_another_dataset(dataset, other_run, tmp_path, capsys):
    mixed = tmp_path / "mixed"
    shutil.copytree(dataset["run"], mixed)
    shutil.copy(other_run / "summary.json", mixed / "summary.json")
    code, _, err = run(["retrain", mixed, "--out", tmp_path / "r"], capsys)
    assert code == 2
    one_line_error(err, "do not belong to the same scan")
    assert not (tmp_path / "r").exists()


def test_predict_refuses_a_model_from_another_run(dataset, other_run, tmp_path, capsys):
    mixed = tmp_path / "mixed"
    shutil.copytree(dataset["run"], mixed)
    shutil.copy(other_run / "model.pt", mixed / "model.pt")
    for command in (
        ["predict", mixed, dataset["root"], "--out", tmp_path / "p.csv"],
        ["evaluate", mixed, dataset["root"]],
    ):
        code, _, err = run(command, capsys)
        assert code == 2
        one_line_error(err, "does not belong to the run in its folder")
    assert not (tmp_path / "p.csv").exists()


# 6. Bad --out fails before any work -------------------------------------------------------------


def test_an_out_that_is_a_file_fails_before_any_work(dataset, tmp_path, capsys, isolated_cache):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    commands = [
        ["scan", dataset["root"], *FAST],
        ["retrain", dataset["run"], "--cache-dir", isolated_cache],
        ["inspect", dataset["root"]],
        ["inject-noise", dataset["root"], "--rate", "0.1"],
        ["benchmark", dataset["root"], "--methods", "ce"],
    ]
    for command in commands:
        code, _, err = run([*command, "--out", blocker], capsys)
        assert code == 2, command
        one_line_error(err, "is a file")
    code, _, err = run(["predict", dataset["run"], dataset["root"], "--out", tmp_path], capsys)
    assert code == 2
    one_line_error(err, "must end in .csv or .parquet")
    assert blocker.read_text() == "x"
    assert list(isolated_cache.iterdir()) == []  # nothing decoded, nothing trained


SETPRIV = shutil.which("setpriv")


@pytest.mark.skipif(
    os.geteuid() == 0 and SETPRIV is None, reason="root ignores permissions and setpriv is missing"
)
def test_an_unwritable_out_fails_before_any_work(dataset, tmp_path):
    locked = tmp_path / "readonly"
    locked.mkdir()
    locked.chmod(0o555)
    cache = tmp_path / "cache"
    # As root, drop the capabilities that bypass file permissions so that 0o555 really holds.
    prefix = (
        [
            SETPRIV,
            "--inh-caps=-dac_override,-dac_read_search",
            "--bounding-set=-dac_override,-dac_read_search",
        ]
        if os.geteuid() == 0
        else []
    )
    commands = [
        ["scan", dataset["root"], *FAST],
        ["inspect", dataset["root"]],
        ["inject-noise", dataset["root"], "--rate", "0.1"],
        ["retrain", dataset["run"]],
        ["benchmark", dataset["root"], "--methods", "ce"],
    ]
    try:
        for command in commands:
            result = subprocess.run(
                [
                    *prefix,
                    sys.executable,
                    "-m",
                    "labelaudit",
                    *map(str, command),
                    "--out",
                    str(locked / "run"),
                ],
                capture_output=True,
                text=True,
                timeout=300,
                env={**os.environ, "LABELAUDIT_CACHE_DIR": str(cache)},
            )
            assert result.returncode == 2, (command, result.stderr)
            one_line_error(result.stderr, "cannot write --out")
        result = subprocess.run(
            [
                *prefix,
                sys.executable,
                "-m",
                "labelaudit",
                "predict",
                str(dataset["run"]),
                str(dataset["root"]),
                "--out",
                str(locked / "p.csv"),
            ],
            capture_output=True,
            text=True,
            timeout=300,
            env={**os.environ, "LABELAUDIT_CACHE_DIR": str(cache)},
        )
        assert result.returncode == 2 and "cannot write --out" in result.stderr, result.stderr
    finally:
        locked.chmod(0o755)
    assert list(locked.iterdir()) == []
    assert not cache.exists() or list(cache.iterdir()) == []  # failed before decoding


# 10. Many classes: no warning flood, a small summary ---------------------------------------------


def test_a_thousand_class_scan_writes_a_small_summary_without_warnings(tmp_path, capsys):
    import warnings

    import numpy as np

    rng = np.random.default_rng(0)
    root = tmp_path / "many"
    for k in range(1000):
        for i in range(2):
            save_image(root / f"class{k:04d}" / f"{i}.png", rng.integers(0, 256, (8, 8), dtype=np.uint8))
    out = tmp_path / "run"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code, _, err = run(
            [
                "scan",
                root,
                "--out",
                out,
                "--budget",
                "0.02",
                "--width",
                "4",
                "--batch-size",
                "512",
                "--quiet",
            ],
            capsys,
        )
    assert code == 0, err
    performance = [w for w in caught if w.category.__name__ == "PerformanceWarning"]
    assert performance == [], str(performance[0].message)
    assert "PerformanceWarning" not in err
    assert (out / "summary.json").stat().st_size < 1_000_000  # K x K tables are in their own files
    assert pd.read_csv(out / "transition_matrix.csv", index_col=0).shape == (1000, 1000)


# 7. A diverged model saved by an older version is refused ----------------------------------------


def test_a_model_with_non_finite_weights_is_refused(dataset, tmp_path, capsys):
    import torch

    broken = tmp_path / "run"
    shutil.copytree(dataset["run"], broken)
    checkpoint = torch.load(broken / "model.pt", weights_only=True)
    name = next(k for k, v in checkpoint["state_dict"].items() if v.is_floating_point())
    checkpoint["state_dict"][name] = torch.full_like(checkpoint["state_dict"][name], float("nan"))
    torch.save(checkpoint, broken / "model.pt")
    for command in (
        ["predict", broken, dataset["root"], "--out", tmp_path / "p.csv"],
        ["evaluate", broken, dataset["root"]],
    ):
        code, _, err = run(command, capsys)
        assert code == 2
        one_line_error(err, "not finite numbers")


def test_ctrl_c_during_a_scan_leaves_nothing_and_says_so(dataset, tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "LABELAUDIT_CACHE_DIR": str(dataset["cache"])}
    child = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "labelaudit",
            "scan",
            str(dataset["root"]),
            "--out",
            str(out),
            "--budget",
            "3",
            "--width",
            "8",
            "--quiet",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.time() + 120
        while not temporaries(tmp_path, "run"):  # training has started inside the temporary folder
            assert child.poll() is None and time.time() < deadline, child.communicate()
            time.sleep(0.05)
        time.sleep(0.5)
        child.send_signal(signal.SIGINT)
        _, err = child.communicate(timeout=60)
    finally:
        child.kill()
    assert child.returncode == 130
    assert "labelaudit: interrupted" in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []  # no run directory, no temporary, no lock file


def test_more_inputs_are_protected(dataset, tmp_path, capsys):
    """A --weights file, a class folder reached through a symlink, and a predictions file in a run."""
    out = tmp_path / "run"
    shutil.copytree(dataset["run"], out)
    (out / "weights.pth").write_bytes(b"weights")
    code, _, err = run(
        [
            "scan",
            dataset["root"],
            "--backbone",
            "resnet18",
            "--weights",
            out / "weights.pth",
            "--out",
            out,
            "--overwrite",
            *FAST,
        ],
        capsys,
    )
    assert code == 2
    one_line_error(err, "holds the input")
    assert (out / "weights.pth").read_bytes() == b"weights"

    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(dataset["root"] / "blob", elsewhere / "blob")
    linked = tmp_path / "linked"
    for name in ("checker", "horizontal", "vertical"):
        shutil.copytree(dataset["root"] / name, linked / name)
    (linked / "blob").symlink_to(elsewhere / "blob", target_is_directory=True)
    code, _, err = run(["scan", linked, "--out", elsewhere / "blob" / "run", *FAST], capsys)
    assert code == 2
    one_line_error(err, "inside the input folder")
    assert sorted(p.name for p in (elsewhere / "blob").iterdir()) == sorted(
        p.name for p in (dataset["root"] / "blob").iterdir()
    )

    code, _, err = run(["predict", dataset["run"], dataset["root"], "--out", out / "predictions.csv"], capsys)
    assert code == 2
    one_line_error(err, "inside the output folder of labelaudit scan")


def test_predict_never_replaces_a_skipped_file_without_overwrite(dataset, tmp_path, capsys):
    (tmp_path / "preds-skipped.csv").write_text("precious")
    code, _, err = run(["predict", dataset["run"], dataset["root"], "--out", tmp_path / "preds.csv"], capsys)
    assert code == 2
    one_line_error(err, "preds-skipped.csv' exists; pass --overwrite")
    assert (tmp_path / "preds-skipped.csv").read_text() == "precious" and not (
        tmp_path / "preds.csv"
    ).exists()


def test_a_model_from_another_run_of_the_same_data_is_refused(dataset, tmp_path, capsys):
    twin = tmp_path / "twin"
    assert (
        run(["scan", dataset["root"], "--out", twin, "--cache-dir", dataset["cache"], *FAST], capsys)[0] == 0
    )
    mixed = tmp_path / "mixed"
    shutil.copytree(dataset["run"], mixed)
    shutil.copy(twin / "model.pt", mixed / "model.pt")  # same data fingerprint, another run
    code, _, err = run(["evaluate", mixed, dataset["root"]], capsys)
    assert code == 2
    one_line_error(err, "does not belong to the run in its folder")


def test_files_put_into_a_new_out_during_the_run_keep_the_finished_run(dataset, tmp_path):
    out = tmp_path / "run"
    child = child_scan("SIGSTOP", [dataset["root"], "--out", out, *FAST], dataset["cache"])
    try:
        deadline = time.time() + 120
        while _state(child.pid) != "T":
            assert child.poll() is None and time.time() < deadline, child.communicate()
            time.sleep(0.05)
        out.mkdir()
        (out / "notes.txt").write_text("mine")  # someone uses the folder while the scan runs
        os.kill(child.pid, signal.SIGCONT)  # save_model returns at once (it was replaced): the run commits
        err = child.communicate(timeout=120)[1].decode()
    finally:
        child.kill()
    assert child.returncode == 2, err
    assert "the finished scan output was kept in" in err and "Traceback" not in err
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    (kept,) = [p for p in tmp_path.iterdir() if p.name.startswith("run-")]
    assert (kept / "summary.json").exists() and (kept / "report.parquet").exists()


@pytest.mark.skipif(not os.path.ismount("/dev/shm"), reason="needs /dev/shm as a mount point")
def test_a_mount_point_out_and_a_non_utf8_out_fail_before_any_work(dataset, capsys, isolated_cache, tmp_path):
    code, _, err = run(["scan", dataset["root"], "--out", "/dev/shm", "--overwrite", *FAST], capsys)
    assert code == 2
    one_line_error(err, "is a mount point")
    bad = os.fsdecode(os.fsencode(str(tmp_path)) + b"/caf\xe9")
    code, _, err = run(["scan", dataset["root"], "--out", bad, *FAST], capsys)
    assert code == 2
    one_line_error(err, "is not valid UTF-8")
    assert list(isolated_cache.iterdir()) == []


def test_a_run_of_an_earlier_version_is_replaced_only_when_it_holds_nothing_else(dataset, tmp_path, capsys):
    """Runs written before the marker: a scan folder holding only a scan's files may be replaced."""
    out = tmp_path / "old-run"
    shutil.copytree(dataset["run"], out)
    (out / ".labelaudit-output.json").unlink()
    (out / "notes.txt").write_text("mine")
    base = ["scan", dataset["root"], "--out", out, "--overwrite", "--cache-dir", dataset["cache"], *FAST]
    code, _, err = run(base, capsys)
    assert code == 2
    one_line_error(err, "files that labelaudit did not write")
    (out / "notes.txt").unlink()
    code, _, err = run(base, capsys)
    assert code == 0, err
    assert (out / ".labelaudit-output.json").exists()
