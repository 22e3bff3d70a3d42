"""Issue 11 ("never lose the user's data"), data layer: awkward names, unreadable folders, a
damaged or unusable cache, killed decoding runs. Real files, the real command, no mocks."""

from __future__ import annotations

import io
import json
import os
import shutil
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
from PIL import Image

from labelaudit import ConfigError, DatasetError, ManifestError, load_images, load_source
from labelaudit.data.sources import FEW_SAMPLES_THRESHOLD, SKIP_REASONS

PYTHON = sys.executable
SETPRIV = shutil.which("setpriv")
REPO = Path(__file__).resolve().parents[1]


def png_bytes(seed: int, size=(12, 12)) -> bytes:
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size[1], size[0]), dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def write_bytes_path(folder: Path, name: bytes, data: bytes) -> None:
    """Write ``data`` to ``folder/name`` where ``name`` is raw bytes (maybe not UTF-8)."""
    path = os.fsencode(folder) + b"/" + name
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as fh:
        fh.write(data)


# --- names that are not UTF-8 ------------------------------------------------------------------


def non_utf8_dataset(root: Path) -> Path:
    """cat/ and dog/ with 4 good images each, plus a file, a sub-folder and a whole class
    folder whose names are Latin-1 bytes (not UTF-8)."""
    make_folder_dataset(root, per_class=4)
    write_bytes_path(root, b"cat/caf\xe9.png", png_bytes(101))
    write_bytes_path(root, b"dog/d\xe9j\xe0/x.png", png_bytes(102))
    write_bytes_path(root, b"ois\xe9au/y.png", png_bytes(103))
    return root


EXPECTED_NON_UTF8 = {"cat/caf\\xe9.png", "dog/d\\xe9j\\xe0/x.png", "ois\\xe9au/y.png"}


def test_inspect_skips_non_utf8_names_and_lists_them(tmp_path, capsys):
    # Before: pyarrow's UnicodeEncodeError traceback while caching the headers.
    root = non_utf8_dataset(tmp_path / "data")
    code, out, err = run(["inspect", str(root), "--out", str(tmp_path / "run"), "--quiet"], capsys)
    assert code == 0, err
    assert "8 images, 2 classes, 3 skipped" in out
    skipped = pd.read_csv(tmp_path / "run" / "skipped.csv")
    assert set(skipped["reason"]) == {"non_utf8_name"}
    shown = {str(Path(p).relative_to(root)) for p in skipped["path"]}
    assert shown == EXPECTED_NON_UTF8

    code, out, err = run(["inspect", str(root), "--json"], capsys)
    assert code == 0, err
    report = json.loads(out)
    assert report["class_counts"] == {"cat": 4, "dog": 4}
    assert report["skipped_by_reason"] == {"non_utf8_name": 3}
    assert json.loads((tmp_path / "run" / "inspect.json").read_text())["num_skipped"] == 3
    assert "non_utf8_name" in SKIP_REASONS


def test_scan_and_predict_skip_non_utf8_names(tmp_path, capsys):
    from labelaudit.pipeline.scan import ScanConfig, scan, write_run
    from labelaudit.train.trainer import TrainConfig

    root = non_utf8_dataset(tmp_path / "data")
    result = scan(root, ScanConfig(epochs_scale=0.05, train=TrainConfig(width=4)))
    run_dir = write_run(result, tmp_path / "run")
    assert len(pd.read_parquet(run_dir / "report.parquet")) == 8
    assert set(pd.read_csv(run_dir / "skipped.csv")["reason"]) == {"non_utf8_name"}

    new = tmp_path / "new"
    for i in range(3):
        save_image(new / f"{i}.png", seed=200 + i)
    write_bytes_path(new, b"caf\xe9.png", png_bytes(104))
    write_bytes_path(new, b"sub\xff/z.png", png_bytes(105))
    out_file = tmp_path / "preds.csv"
    code, out, err = run(["predict", str(run_dir), str(new), "--out", str(out_file), "--quiet"], capsys)
    assert code == 0, err
    assert sorted(pd.read_csv(out_file)["sample_id"]) == ["0.png", "1.png", "2.png"]
    skipped = pd.read_csv(tmp_path / "preds-skipped.csv")
    assert skipped["reason"].tolist() == ["non_utf8_name", "non_utf8_name"]
    assert sorted(Path(p).name for p in skipped["path"]) == ["caf\\xe9.png", "z.png"]


def test_non_utf8_source_path_is_a_one_line_error(tmp_path, capsys):
    # Before: every file under it failed the same pyarrow way, with a traceback.
    source = os.fsencode(tmp_path) + b"/donn\xe9es"
    make_folder_dataset(Path(os.fsdecode(source)))
    code, out, err = run(["inspect", os.fsdecode(source), "--quiet"], capsys)
    assert code == 2
    assert err.count("\n") == 1
    assert err.startswith("labelaudit: error: source path '")
    assert "donn\\xe9es' is not valid UTF-8 text" in err and "rename the folder" in err


def test_only_non_utf8_class_folders_is_explained(tmp_path):
    root = tmp_path / "data"
    write_bytes_path(root, b"ch\xe8vre/a.png", png_bytes(1))
    write_bytes_path(root, b"\xe9l\xe9phant/b.png", png_bytes(2))
    with pytest.raises(
        DatasetError, match=r"no class subfolders \(2 folder names are not valid UTF-8: rename them\)"
    ):
        load_source(root)


# --- the image cache ---------------------------------------------------------------------------


def test_cache_dir_that_is_a_file_is_a_one_line_error(tmp_path, capsys):
    # Before: FileExistsError/NotADirectoryError traceback from mkdir.
    root = make_folder_dataset(tmp_path / "data")
    not_a_folder = tmp_path / "cache-file"
    not_a_folder.write_text("I am a file")
    code, _, err = run(["inspect", str(root), "--cache-dir", str(not_a_folder), "--quiet"], capsys)
    assert code == 2
    assert err == (
        f"labelaudit: error: cache directory {str(not_a_folder)!r} is a file, not a folder; pass another "
        "--cache-dir or set LABELAUDIT_CACHE_DIR to a writable folder\n"
    )
    with pytest.raises(ConfigError, match=r"cannot be written: Not a directory"):
        load_images(load_source(root), cache_dir=not_a_folder / "below")
    assert not_a_folder.read_text() == "I am a file"


def without_root_powers() -> list[str]:
    """Prefix that runs a command as root minus the capabilities that ignore file permissions."""
    if os.geteuid() != 0:
        return []
    if SETPRIV is None:
        pytest.skip("running as root without setpriv: cannot make a folder unreadable to the test")
    caps = "-dac_override,-dac_read_search"
    return [SETPRIV, f"--inh-caps={caps}", f"--bounding-set={caps}"]


def run_cli_process(
    args: list[str], *, limited: bool = False, timeout: float = 120
) -> subprocess.CompletedProcess:
    prefix = without_root_powers() if limited else []
    return subprocess.run(
        [*prefix, PYTHON, "-m", "labelaudit", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


def test_read_only_cache_dir_is_a_one_line_error(tmp_path):
    root = make_folder_dataset(tmp_path / "data")
    cache = tmp_path / "readonly-cache"
    cache.mkdir()
    cache.chmod(0o555)
    try:
        done = run_cli_process(["inspect", str(root), "--cache-dir", str(cache), "--quiet"], limited=True)
    finally:
        cache.chmod(0o755)
    assert done.returncode == 2, done.stderr
    assert done.stderr == (
        f"labelaudit: error: cache directory {str(cache)!r} cannot be written: Permission denied; pass "
        "another --cache-dir or set LABELAUDIT_CACHE_DIR to a writable folder\n"
    )


def damage_truncate_pixels(entry: Path) -> None:
    (pixels,) = entry.glob("pixels-*.npy")
    os.truncate(pixels, pixels.stat().st_size // 2)


def damage_garbage_pixels(entry: Path) -> None:
    (pixels,) = entry.glob("pixels-*.npy")
    pixels.write_bytes(b"\x00garbage" * 50)


def damage_wrong_shape_pixels(entry: Path) -> None:
    (pixels,) = entry.glob("pixels-*.npy")
    np.save(pixels, np.zeros((3, 8, 8, 1), np.uint8))


def damage_decode_status(entry: Path) -> None:
    (status,) = entry.glob("decode-*.parquet")
    os.truncate(status, status.stat().st_size - 9)


def damage_headers(entry: Path) -> None:
    (headers,) = entry.glob("files-*.parquet")
    headers.write_bytes(b"PAR1 not really")


@pytest.mark.parametrize(
    "damage",
    [
        damage_truncate_pixels,
        damage_garbage_pixels,
        damage_wrong_shape_pixels,
        damage_decode_status,
        damage_headers,
    ],
)
def test_damaged_cache_entry_is_dropped_and_decoded_again(tmp_path, damage):
    # Before: ValueError/ArrowInvalid tracebacks, or "inconsistent; delete it" for a wrong shape.
    root = make_folder_dataset(tmp_path / "data", per_class=4)
    (root / "cat" / "bad.png").write_text("not an image")
    table = load_source(root)
    first = load_images(table, image_size=8)
    expected, entry = first.images().copy(), first.cache_dir
    del first  # drop the memory map before damaging its file
    damage(entry)

    again = load_images(table, image_size=8)
    np.testing.assert_array_equal(again.images(), expected)
    assert dict(zip(again.table.skipped["sample_id"], again.table.skipped["reason"])) == {
        "cat/bad.png": "not_an_image"
    }
    assert not again.reused or damage is damage_headers  # new headers, same pixel file: reuse is right
    assert load_images(table, image_size=8).reused  # repaired for good
    assert not list(again.cache_dir.glob(".*tmp*"))


def test_stale_temporaries_of_dead_processes_are_removed_live_ones_kept(tmp_path, isolated_cache):
    root = make_folder_dataset(tmp_path / "data")
    table = load_source(root)
    entry = load_images(table, image_size=8).cache_dir
    other_entry = isolated_cache / ("0" * 24)  # an entry of another dataset
    other_entry.mkdir()
    finished = subprocess.run([PYTHON, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = int(finished.stdout)
    stale = [
        entry / f".pixels-s8-c1.npy.{dead}-0123456789abcdef.tmp.npy",
        other_entry / f".files-maxpx1.parquet.{dead}-0123456789abcdef.tmp",
    ]
    live = entry / f".pixels-s8-c1.npy.{os.getpid()}-fedcba9876543210.tmp.npy"  # a run in progress
    for path in [*stale, live]:
        path.write_bytes(b"partial")
    load_images(table, image_size=8)
    assert not any(p.exists() for p in stale)
    assert live.exists()


def _children(pid: int) -> list[int]:
    """Process ids whose parent is ``pid``, from /proc."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        if int(text[text.rindex(")") + 2 :].split()[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _running(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie (a dead orphan waiting to be reaped)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return text[text.rindex(")") + 2] not in "ZX"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc to find the workers")
def test_killed_decoding_run_leaves_no_workers_and_next_run_cleans_up(tmp_path, isolated_cache):
    # Before: the pool workers stayed blocked on their queue forever after the parent's SIGKILL,
    # and the half-written .pixels-...tmp.npy stayed in the cache entry.
    buffer = io.BytesIO()
    Image.new("L", (700, 700), 128).save(buffer, format="PNG")  # small file, ~ms to decode
    root = tmp_path / "data"
    for name in ("a", "b"):
        (root / name).mkdir(parents=True)
        for i in range(300):  # 600 files: above the pool threshold (512)
            (root / name / f"{i}.png").write_bytes(buffer.getvalue())
    parent = subprocess.Popen(
        [PYTHON, "-m", "labelaudit", "inspect", str(root), "--workers", "2", "--quiet"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 60
        while not list(isolated_cache.glob("*/.pixels-*.tmp.npy")):  # decoding is under way
            assert parent.poll() is None, f"inspect ended before decoding: {parent.stderr.read()}"
            assert time.monotonic() < deadline, "decoding never started"
            time.sleep(0.005)
        while len(workers) < 2:  # both workers, so that the finally below can end them all
            workers = [pid for pid in _children(parent.pid) if _running(pid)]
            assert parent.poll() is None and time.monotonic() < deadline, f"decoding workers seen: {workers}"
            time.sleep(0.002)
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=10)
        deadline = time.monotonic() + 10
        while any(_running(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(_running(pid) for pid in workers), f"workers {workers} outlived their parent"
        assert list(isolated_cache.glob("*/.*.tmp*")), "the killed run left its temporary (the scenario)"

        again = run_cli_process(["inspect", str(root), "--workers", "2", "--quiet"])
        assert again.returncode == 0, again.stderr
        assert "600 images, 2 classes, 0 skipped" in again.stdout
        assert not list(isolated_cache.rglob("*.tmp*")), "stale temporaries were not removed"
    finally:
        for pid in [parent.pid, *workers]:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        parent.wait(timeout=10)


def test_a_worker_whose_parent_is_gone_exits_before_its_next_file(tmp_path):
    """The portable half of "workers die with their parent" (the kernel does it on Linux): a
    worker started for a parent that is not its parent any more exits at once, with status 1."""
    image = save_image(tmp_path / "a.png")
    code = (
        "import sys\nfrom labelaudit.data import _decode\n"
        "print(len(_decode.header_chunk([sys.argv[1]], 10**6)), flush=True)\n"
        "_decode._parent_pid = 1  # as if our parent had died and init had adopted us\n"
        "print(len(_decode.header_chunk([sys.argv[1]], 10**6)), flush=True)\n"
    )
    done = subprocess.run(
        [PYTHON, "-c", code, str(image)], capture_output=True, text=True, timeout=60, cwd=REPO
    )
    assert (done.returncode, done.stdout) == (1, "1\n"), done.stderr
    done = subprocess.run(
        [PYTHON, "-c", "from labelaudit.data import _decode; _decode.init_worker(1); print('alive')"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert (done.returncode, done.stdout) == (1, ""), done.stderr


# --- unreadable folders --------------------------------------------------------------------------


def test_unreadable_class_folder_is_named_not_called_empty(tmp_path):
    # Before: "class folder '.../dog' contains no images; add images to it or remove it".
    root = make_folder_dataset(tmp_path / "data")
    (root / "dog").chmod(0)
    try:
        done = run_cli_process(["inspect", str(root), "--quiet"], limited=True)
    finally:
        (root / "dog").chmod(0o755)
    assert done.returncode == 2, done.stderr
    assert done.stderr == (
        f"labelaudit: error: class folder {str(root / 'dog')!r} cannot be read: Permission denied; "
        f"make it readable (e.g. chmod -R u+rX {str(root / 'dog')!r}) or remove it\n"
    )


def test_unreadable_source_folder_is_a_one_line_error(tmp_path):
    # Before: a PermissionError traceback from os.scandir. (The CLI's argument parser already
    # refuses an unreadable source path; the library call is what is tested here.)
    root = make_folder_dataset(tmp_path / "data")
    code = (
        "import sys\nfrom labelaudit import DatasetError\nfrom labelaudit.data.sources import load_source, "
        "load_unlabeled\n"
        "for load in (load_source, load_unlabeled):\n"
        "    try:\n        load(sys.argv[1])\n    except DatasetError as exc:\n        print(exc)\n"
    )
    root.chmod(0o311)  # can enter, cannot list
    try:
        done = subprocess.run(
            [*without_root_powers(), PYTHON, "-c", code, str(root)],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=REPO,
        )
    finally:
        root.chmod(0o755)
    assert done.returncode == 0, done.stderr
    expected = (
        f"folder {str(root)!r} cannot be read: Permission denied; make it readable (e.g. chmod -R u+rX) "
        "or pass another source\n"
    )
    assert done.stdout == 2 * expected


def test_unreadable_sub_folder_is_listed_as_skipped(tmp_path):
    # Before: its images vanished from the count with "0 skipped".
    root = make_folder_dataset(tmp_path / "data")
    locked = root / "dog" / "2021"
    save_image(locked / "a.png", seed=50)
    save_image(locked / "b.png", seed=51)
    locked.chmod(0)
    try:
        done = run_cli_process(
            ["inspect", str(root), "--out", str(tmp_path / "run"), "--quiet"], limited=True
        )
    finally:
        locked.chmod(0o755)
    assert done.returncode == 0, done.stderr
    assert "6 images, 2 classes, 1 skipped" in done.stdout
    skipped = pd.read_csv(tmp_path / "run" / "skipped.csv")
    assert skipped.values.tolist() == [
        [str(locked), "unreadable", "folder cannot be listed: Permission denied"]
    ]


def test_class_folder_whose_only_images_are_unreadable_says_so(tmp_path):
    root = make_folder_dataset(tmp_path / "data")
    save_image(root / "bird" / "2021" / "a.png")
    (root / "bird" / "2021").chmod(0)
    try:
        done = run_cli_process(["inspect", str(root), "--quiet"], limited=True)
    finally:
        (root / "bird" / "2021").chmod(0o755)
    assert done.returncode == 2
    assert (
        "class folder" in done.stderr
        and "bird' contains no images it can use (1 skipped: 1 unreadable)" in done.stderr
    )


# --- manifest positions and small classes ----------------------------------------------------


def test_blank_cell_is_located_by_csv_line_and_parquet_row(tmp_path):
    # Before: "first at row 1" (a 0-based index) for what is line 3 of the CSV / row 2 of the parquet.
    for i in range(3):
        save_image(tmp_path / "imgs" / f"{i}.png", seed=i)
    csv_file = tmp_path / "m.csv"
    csv_file.write_text('path,label\nimgs/0.png,a\n\n"imgs/1.png",\nimgs/2.png,b\n')
    with pytest.raises(
        ManifestError, match=r"1 rows with no label in column 'label' \(first on line 4\); fill"
    ):
        load_source(csv_file)
    parquet_file = tmp_path / "m.parquet"
    pd.DataFrame({"path": ["imgs/0.png", "imgs/1.png", "imgs/2.png"], "label": ["a", None, "b"]}).to_parquet(
        parquet_file
    )
    with pytest.raises(ManifestError, match=r"\(first at row 2, counting from 1\); fill"):
        load_source(parquet_file)


def test_few_sample_classes(tmp_path):
    root = tmp_path / "data"
    for i in range(FEW_SAMPLES_THRESHOLD):
        save_image(root / "big" / f"{i}.png", seed=i)
    for i in range(3):
        save_image(root / "small" / f"{i}.png", seed=100 + i)
    table = load_source(root)
    assert table.few_sample_classes() == ["small"]
    assert table.few_sample_classes(threshold=11) == ["big", "small"]
