"""The real ``labelaudit`` command on real files: output, JSON, written files, error lines."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pandas as pd
import pytest
from conftest import make_folder_dataset, save_image
from conftest import run_cli as run

from labelaudit.cli import app


def test_inspect_prints_tables_and_conflicting_duplicates(tmp_path, capsys):
    root = make_folder_dataset(tmp_path / "data", per_class=4)
    shutil.copy(root / "cat" / "cat_0.png", root / "dog" / "copy_of_cat.png")  # same bytes, other label
    (root / "dog" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    code, out, _ = run(["inspect", str(root), "--quiet"], capsys)
    assert code == 0
    assert "9 images, 2 classes, 1 skipped" in out
    assert "cat" in out and "dog" in out and "12 x 12" in out
    assert "1 groups (2 files); 1 with conflicting labels" in out
    assert "dog/copy_of_cat.png" in out
    assert "corrupt" in out or "not_an_image" in out


def test_inspect_json_and_out_files(tmp_path, capsys):
    root = make_folder_dataset(tmp_path / "data")
    (root / "cat" / "zero.png").write_bytes(b"")
    code, out, _ = run(["inspect", str(root), "--json", "--out", str(tmp_path / "run")], capsys)
    assert code == 0
    report = json.loads(out)
    assert report["num_samples"] == 6 and report["class_counts"] == {"cat": 3, "dog": 3}
    assert report["skipped_by_reason"] == {"empty": 1}
    skipped = pd.read_csv(tmp_path / "run" / "skipped.csv")
    assert skipped.columns.tolist() == ["path", "reason", "detail"]
    assert skipped["reason"].tolist() == ["empty"] and skipped["path"].iloc[0].endswith("zero.png")
    assert json.loads((tmp_path / "run" / "inspect.json").read_text()) == report


def test_manifest_options_reach_the_library(tmp_path, capsys):
    for i in range(4):
        save_image(tmp_path / "imgs" / f"{i}.png", seed=i)
    manifest = tmp_path / "m.csv"
    pd.DataFrame({"img": [f"imgs/{i}.png" for i in range(4)], "y": list("abab")}).to_csv(
        manifest, index=False
    )
    code, out, _ = run(
        ["inspect", str(manifest), "--path-column", "img", "--label-column", "y", "--json"], capsys
    )
    assert code == 0 and json.loads(out)["class_counts"] == {"a": 2, "b": 2}


@pytest.mark.parametrize(
    "make_args, message",
    [
        (lambda tmp: [str(tmp / "missing")], "does not exist"),
        (lambda tmp: [str(make_folder_dataset(tmp / "one", classes=("solo",)))], "only one class"),
        (lambda tmp: [str(tmp / "m.csv"), "--label-column", "nope"], "no label column 'nope'"),
    ],
)
def test_user_errors_are_one_line_with_exit_code_2(tmp_path, capsys, make_args, message):
    for i in range(2):
        save_image(tmp_path / f"{i}.png", seed=i)
    pd.DataFrame({"path": ["0.png", "1.png"], "label": ["a", "b"]}).to_csv(tmp_path / "m.csv", index=False)
    code, out, err = run(["inspect", *make_args(tmp_path)], capsys)
    assert code == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("labelaudit: error: ") and message in lines[0]
    assert "Traceback" not in err


def test_console_script_entry_point_runs(tmp_path):
    root = make_folder_dataset(tmp_path / "data")
    result = subprocess.run(
        [sys.executable, "-m", "labelaudit", "inspect", str(root), "--json"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["num_samples"] == 6
    missing = subprocess.run(
        [sys.executable, "-m", "labelaudit", "inspect", str(tmp_path / "x")], capture_output=True, text=True
    )
    assert missing.returncode == 2 and "Traceback" not in missing.stderr


def test_every_command_help_has_an_example(capsys):
    for command in app.registered_commands:
        code, out, _ = run([command.name, "--help"], capsys)
        assert code == 0 and "Example:" in out, command.name


def test_scan_command_writes_run_and_prints_truth_figures(tmp_path, capsys):
    from conftest import make_noisy_pattern_dataset

    root = tmp_path / "data"
    make_noisy_pattern_dataset(root, per_class=30, noise_rate=0.2, seed=1)
    args = [
        "scan",
        str(root),
        "--truth",
        str(tmp_path / "data_truth.csv"),
        "--budget",
        "0.15",
        "--width",
        "8",
        "--out",
        str(tmp_path / "run"),
        "--quiet",
    ]
    code, out, err = run(args, capsys)
    assert code == 0, err
    assert "Flagged" in out and "estimated noise rate" in out and "precision" in out and "F1" in out
    assert (tmp_path / "run" / "flagged.csv").exists()
    code, out, _ = run([*args[:-3], "--out", str(tmp_path / "run2"), "--json"], capsys)
    summary = json.loads(out)
    assert code == 0 and summary["run_dir"] == str(tmp_path / "run2") and "f1" in summary["truth"]


def test_scan_bad_truth_file_is_a_clean_error(tmp_path, capsys):
    root = make_folder_dataset(tmp_path / "data")
    code, _, err = run(["scan", str(root), "--truth", str(tmp_path / "none.csv"), "--quiet"], capsys)
    assert code == 2 and "truth file" in err and "Traceback" not in err


def test_markup_like_names_are_printed_verbatim(tmp_path, capsys):
    root = tmp_path / "data"
    save_image(root / "cat[/old]" / "a [copy].png", seed=1)
    save_image(root / "dog" / "b.png", seed=2)
    shutil.copy(root / "cat[/old]" / "a [copy].png", root / "dog" / "a [copy].png")
    code, out, err = run(["inspect", str(root), "--quiet"], capsys)
    assert code == 0, err
    assert "cat[/old]" in out and "a [copy].png" in out


def test_inspect_out_inside_input_is_refused(tmp_path, capsys):
    root = make_folder_dataset(tmp_path / "data")
    code, _, err = run(["inspect", str(root), "--out", str(root / "report")], capsys)
    assert code == 2 and "is inside the input folder" in err
