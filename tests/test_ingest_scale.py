"""Ingesting a large manifest (issue 15): a 20,000-row manifest whose rows mostly point at
missing files, read by the real ``inspect`` command and by :func:`labelaudit.load_source`.

No timings here: ``scripts/bench_ingest.py`` measures time and memory at 100k and 1M rows.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import run_cli as run
from conftest import save_image

from labelaudit.data.sources import (
    CHECK_FILES_PHASE,
    READ_MANIFEST_PHASE,
    load_source,
    read_table,
    table_columns,
)
from labelaudit.errors import DatasetError

ROWS = 20_000
REAL_EVERY = 100  # every 100th row points at a file that exists: 200 images
CLASSES = ("cat", "dog")


@pytest.fixture(scope="module")
def big_manifest(tmp_path_factory) -> Path:
    """``manifest.parquet`` of :data:`ROWS` rows; rows ``0, 100, 200, ...`` point at hard links
    to four real PNGs (distinct paths), the others at files that do not exist."""
    root = tmp_path_factory.mktemp("big")
    originals = [save_image(root / "originals" / f"{i}.png", seed=i) for i in range(4)]
    paths, labels = [], []
    for row in range(ROWS):
        if row % REAL_EVERY == 0:
            link = root / "real" / f"{row:05d}.png"
            link.parent.mkdir(exist_ok=True)
            os.link(originals[(row // REAL_EVERY) % len(originals)], link)
            paths.append(f"real/{row:05d}.png")
        else:
            paths.append(f"gone/{row:05d}.png")
        labels.append(CLASSES[(row // REAL_EVERY) % 2])
    manifest = root / "manifest.parquet"
    pd.DataFrame({"path": paths, "label": labels, "caption": [f"row {r}" for r in range(ROWS)]}).to_parquet(
        manifest
    )
    return manifest


def snapshot(path: Path) -> tuple[bytes, int]:
    return path.read_bytes(), path.stat().st_mtime_ns


def test_inspect_reads_a_large_manifest_and_lists_every_missing_file(big_manifest, tmp_path, capsys):
    before = snapshot(big_manifest)
    out_dir = tmp_path / "inspect-run"
    code, out, err = run(["inspect", big_manifest, "--json", "--out", out_dir], capsys)
    assert code == 0, err
    real = ROWS // REAL_EVERY
    report = json.loads(out)
    assert report["num_samples"] == real
    assert report["class_counts"] == {"cat": real // 2, "dog": real // 2}
    assert report["num_skipped"] == ROWS - real and report["skipped_by_reason"] == {"missing": ROWS - real}
    # The JSON summary lists the first skipped files; skipped.csv lists them all.
    assert report["skipped_truncated"] and 0 < len(report["skipped"]) < report["num_skipped"]
    skipped = read_table(out_dir / "skipped.csv", "skipped list")
    expected = [
        str(big_manifest.parent / "gone" / f"{row:05d}.png") for row in range(ROWS) if row % REAL_EVERY
    ]
    assert skipped["path"].tolist() == expected
    assert set(skipped["reason"]) == {"missing"}
    assert json.loads((out_dir / "inspect.json").read_text()) == report
    # The user's manifest is untouched, and nothing half-written is left beside the output.
    assert snapshot(big_manifest) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["inspect-run"]
    assert sorted(p.name for p in out_dir.iterdir()) == [
        ".labelaudit-output.json",
        "inspect.json",
        "skipped.csv",
    ]


def test_human_output_names_the_missing_files_without_listing_all(big_manifest, capsys):
    code, out, _ = run(["inspect", big_manifest, "--quiet"], capsys)
    assert code == 0
    assert f"{ROWS // REAL_EVERY} images, 2 classes, {ROWS - ROWS // REAL_EVERY} skipped" in out
    assert str(big_manifest.parent / "gone" / "00001.png") in out
    assert f"and {ROWS - ROWS // REAL_EVERY - 10} more (pass --out DIR for the full list)" in out


def test_the_file_check_reports_progress_over_the_distinct_paths(big_manifest, tmp_path):
    # A copy whose last 500 rows repeat earlier paths: repeats are not stat-ed twice.
    frame = pd.read_parquet(big_manifest)
    repeated = pd.concat([frame, frame.iloc[:500]], ignore_index=True)
    manifest = big_manifest.parent / "with-repeats.parquet"
    repeated.to_parquet(manifest)
    reported = []
    table = load_source(
        manifest, progress=lambda phase, done, total, extra="": reported.append((phase, done, total))
    )
    phases = [phase for phase, _, _ in reported]
    # read, then check
    assert phases.index(CHECK_FILES_PHASE) > len(phases) - 1 - phases[::-1].index(READ_MANIFEST_PHASE)
    reading = [(done, total) for phase, done, total in reported if phase == READ_MANIFEST_PHASE]
    assert reading[0][0] == 0 and reading[-1][0] == reading[-1][1]
    checks = [(done, total) for phase, done, total in reported if phase == CHECK_FILES_PHASE]
    assert checks[0] == (0, ROWS) and checks[-1] == (ROWS, ROWS)  # the distinct paths, not the rows
    done = [d for d, _ in checks]
    assert done == sorted(done) and len(checks) > 2  # advances in steps, never backwards
    assert {phase for phase, _, _ in reported} == {READ_MANIFEST_PHASE, CHECK_FILES_PHASE}
    assert len(table) == ROWS // REAL_EVERY and len(table.duplicate_rows) == 500
    assert table.samples["manifest_row"].tolist() == list(range(0, ROWS, REAL_EVERY))


def test_a_manifest_of_only_missing_files_is_one_clear_error(tmp_path, capsys):
    manifest = tmp_path / "m.csv"
    pd.DataFrame({"path": [f"elsewhere/{i}.png" for i in range(3000)], "label": ["a", "b"] * 1500}).to_csv(
        manifest, index=False
    )
    before = snapshot(manifest)
    code, _, err = run(["inspect", manifest, "--out", tmp_path / "run"], capsys)
    assert code != 0
    line = err.strip()
    assert "\n" not in line and "Traceback" not in line
    assert "(3000 files skipped: 3000 missing)" in line
    assert f"relative paths are read from the manifest's folder {str(tmp_path)!r}" in line
    assert str(tmp_path / "elsewhere" / "0.png") in line
    assert snapshot(manifest) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.csv"]  # no output folder, no temporaries


def test_path_cells_are_joined_and_normalised_like_os_path(tmp_path):
    # The usual cells are joined by concatenation; these unusual ones take the os.path route.
    save_image(tmp_path / "imgs" / "a.png", seed=1)
    save_image(tmp_path / "imgs" / "b.png", seed=2)
    save_image(tmp_path / "c.png", seed=3)
    cells = [
        "imgs/a.png",
        "./imgs/b.png",
        "imgs//../c.png",
        f"{tmp_path}/imgs/./a.png",
        " imgs/b.png ",
        "imgs/x/",
    ]
    manifest = tmp_path / "m.csv"
    pd.DataFrame({"path": cells, "label": ["p", "q", "p", "q", "p", "q"]}).to_csv(manifest, index=False)
    table = load_source(manifest)
    joined = [os.path.normpath(os.path.join(tmp_path, c.strip())) for c in cells]
    assert table.samples["path"].tolist() == [joined[0], joined[1], joined[2]]
    assert table.samples["sample_id"].tolist() == ["imgs/a.png", "imgs/b.png", "imgs/../c.png"]
    assert table.duplicate_rows["path"].tolist() == [joined[3], joined[4]]  # same files as rows 0 and 1
    assert table.skipped[["sample_id", "reason"]].values.tolist() == [["imgs/x", "missing"]]


@pytest.mark.parametrize(
    "text",
    [
        # BOM, a quoted line break, class names that look like missing values, empty cells, a blank line
        '\ufeffpath,label,note\n"a\nb.png",NA,x\n\nc.png,None,\n,cat,y\n',
        # a header cell escaped against spreadsheet formulas, and unused columns after it
        "path,'=label,extra,more\na.png,=1,1,2\nb.png,'+2,3,\n",
        # a repeated column name and a short row: pandas' reader takes over
        "path,label,label\na.png,x,y\nb.png\n",
    ],
)
def test_reading_only_some_csv_columns_gives_what_reading_all_gives(tmp_path, text):
    manifest = tmp_path / "m.csv"
    manifest.write_text(text, encoding="utf-8")
    columns, has_rows = table_columns(manifest, "manifest")
    everything = read_table(manifest, "manifest")
    assert columns == everything.columns.tolist() and has_rows
    wanted = columns[:2]
    some = read_table(manifest, "manifest", columns=wanted)
    pd.testing.assert_frame_equal(some[wanted], everything[wanted])


def test_a_missing_file_skip_is_not_fatal_and_keeps_manifest_rows(tmp_path):
    for i in range(4):
        save_image(tmp_path / f"{i}.png", seed=i)
    manifest = tmp_path / "m.parquet"
    pd.DataFrame(
        {"path": ["0.png", "gone.png", "1.png", "2.png", "3.png"], "label": np.array([0, 1, 0, 1, 1])}
    ).to_parquet(manifest)
    table = load_source(manifest)
    assert table.class_names == ("0", "1")
    assert table.samples["manifest_row"].tolist() == [0, 2, 3, 4]
    assert table.samples["given_label"].tolist() == [0, 0, 1, 1]
    assert table.skipped["sample_id"].tolist() == ["gone.png"]
    only_missing = tmp_path / "only-missing.parquet"
    pd.DataFrame({"path": ["x.png", "y.png"], "label": ["a", "b"]}).to_parquet(only_missing)
    with pytest.raises(
        DatasetError, match=r"no usable images .*relative paths are read from the manifest's folder"
    ):
        load_source(only_missing)
