"""Hugging Face datasets as a source: files and folders written by the real ``datasets`` library
(``to_parquet``, ``save_to_disk``, the Arrow file inside), and ``datasets.Dataset`` objects, read
by load_source and scanned end to end by the CLI and the Python API.

The images are real PNGs of four patterns (conftest.pattern_image) embedded as bytes; one row's
bytes are not an image, so every scan must skip it and name its row.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import PATTERN_CLASSES, pattern_image, run_cli
from PIL import Image
from test_review_page import (
    browser,  # noqa: F401  (the headless Chromium fixture)
    card_ids,
    open_page,
    severe_logs,
)

import labelaudit
from labelaudit.data.images import load_images
from labelaudit.data.sources import load_source
from labelaudit.errors import ConfigError, ManifestError

datasets = pytest.importorskip("datasets")

PER_CLASS = 12
CORRUPT_ROW = 5
FAST = ["--budget", "0.15", "--width", "8", "--quiet"]


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _rows(per_class: int = PER_CLASS, seed: int = 0) -> tuple[list[dict], list[int]]:
    """Image structs (PNG bytes and a unique path text) and ClassLabel indexes; row CORRUPT_ROW's
    bytes are not an image."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for i in range(per_class * len(PATTERN_CLASSES)):
        k = i % len(PATTERN_CLASSES)
        images.append({"bytes": _png(pattern_image(PATTERN_CLASSES[k], rng)), "path": f"img_{i:03d}.png"})
        labels.append(k)
    images[CORRUPT_ROW] = {"bytes": b"these bytes are not a PNG", "path": f"img_{CORRUPT_ROW:03d}.png"}
    return images, labels


def _dataset(images, labels, names=PATTERN_CLASSES):
    ds = datasets.Dataset.from_dict({"image": images, "label": labels}).cast_column("image", datasets.Image())
    if names is not None:
        ds = ds.cast_column("label", datasets.ClassLabel(names=list(names)))
    return ds


def _digest(*paths) -> str:
    digest = hashlib.sha256()
    for root in paths:
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for path in files:
            digest.update(str(path).encode() + path.read_bytes())
    return digest.hexdigest()


@pytest.fixture(scope="module")
def hf(tmp_path_factory):
    """One dataset in every shape: a parquet file, a save_to_disk folder, its Arrow file, the object."""
    root = tmp_path_factory.mktemp("hf")
    ds = _dataset(*_rows())
    ds.to_parquet(str(root / "train.parquet"))
    ds.save_to_disk(str(root / "saved"))
    arrow = sorted((root / "saved").glob("*.arrow"))
    assert len(arrow) == 1
    return {
        "root": root,
        "dataset": ds,
        "parquet": root / "train.parquet",
        "saved": root / "saved",
        "arrow": arrow[0],
    }


@pytest.fixture(scope="module")
def parquet_run(hf, tmp_path_factory):
    """A CLI scan of the parquet file (its own cache), checked below by several tests."""
    cache = tmp_path_factory.mktemp("hf-cache")
    run = tmp_path_factory.mktemp("hf-runs") / "run"
    before = _digest(hf["parquet"])
    from labelaudit.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["scan", str(hf["parquet"]), "--out", str(run), "--cache-dir", str(cache), *FAST])
    assert exit_info.value.code == 0
    return {"run": run, "cache": cache, "before": before}


# --- the schema as datasets writes it -------------------------------------------------------------


def test_the_files_are_what_datasets_writes(hf):
    schema = pq.read_schema(hf["parquet"])
    assert str(schema.field("image").type) == "struct<bytes: binary, path: string>"
    features = json.loads(schema.metadata[b"huggingface"])["info"]["features"]
    assert features["label"] == {"names": list(PATTERN_CLASSES), "_type": "ClassLabel"}
    assert {p.name for p in hf["saved"].iterdir()} >= {"state.json", "dataset_info.json", hf["arrow"].name}


# --- reading every shape ---------------------------------------------------------------------------


@pytest.mark.parametrize("shape", ["parquet", "saved", "arrow", "dataset"])
def test_every_shape_reads_the_same_samples(hf, shape, isolated_cache):
    table = load_source(hf[shape])
    assert table.kind == "huggingface"
    assert table.class_names == PATTERN_CLASSES  # the ClassLabel order, not sorted text
    assert len(table) == PER_CLASS * 4  # the corrupt row is found when decoding
    assert table.samples["sample_id"].tolist()[:2] == ["img_000.png", "img_001.png"]  # unique struct paths
    assert table.samples["given_label"].tolist()[:4] == [0, 1, 2, 3]
    assert table.samples["manifest_row"].tolist() == list(range(PER_CLASS * 4))
    files = table.samples["path"].map(Path)
    assert all(f.is_file() and isolated_cache in f.parents for f in files)  # extracted to the cache
    first = files.iloc[0].read_bytes()
    assert first == hf["dataset"].with_format("arrow")[0:1]["image"][0]["bytes"].as_py()

    store = load_images(table)
    assert len(store) == PER_CLASS * 4 - 1 and store.channels == 1
    (skip,) = store.table.skipped.to_dict("records")
    assert skip["sample_id"] == f"img_{CORRUPT_ROW:03d}.png" and skip["reason"] == "not_an_image"
    assert skip["detail"].startswith(f"row {CORRUPT_ROW}: ")
    expected = np.asarray(
        Image.open(io.BytesIO(hf["dataset"].with_format("arrow")[0:1]["image"][0]["bytes"].as_py()))
    )
    assert store.images([0])[0, :, :, 0].shape == expected.shape  # 16x16 stays 16x16


def test_a_second_load_reuses_the_extracted_files_and_the_decoded_pixels(hf):
    first = load_images(load_source(hf["parquet"]))
    mtimes = first.table.samples["mtime_ns"].tolist()
    again = load_source(hf["saved"])  # the same images in another shape: the same content-keyed files
    assert again.samples["path"].tolist()[:3] == first.table.samples["path"].tolist()[:3]
    second = load_images(again)
    assert second.reused and not first.reused
    assert second.table.samples["mtime_ns"].tolist() == mtimes
    assert np.array_equal(second.images(), first.images())


def test_ids_fall_back_to_rows_or_come_from_an_id_column(tmp_path):
    images, labels = _rows(per_class=3)
    for image in images:
        image["path"] = "same.png"  # not unique: no use as an id
    ds = _dataset(images, labels).add_column("key", [f"k{i}" for i in range(len(labels))])
    ds.to_parquet(str(tmp_path / "d.parquet"))
    table = load_source(tmp_path / "d.parquet")
    assert table.samples["sample_id"].tolist()[:2] == ["row-000000", "row-000001"]
    assert table.check_outside_input(tmp_path / "run", "--out", "--out") is None  # beside the file is fine
    keyed = load_source(tmp_path / "d.parquet", id_column="key")
    assert keyed.samples["sample_id"].tolist()[:2] == ["k0", "k1"]
    with pytest.raises(ManifestError, match=r"no id column 'nope'.*--id-column"):
        load_source(tmp_path / "d.parquet", id_column="nope")


def test_text_labels_and_label_names_for_bare_integers(tmp_path):
    images, labels = _rows(per_class=3)
    texts = [PATTERN_CLASSES[k] for k in labels]
    datasets.Dataset.from_dict({"image": images, "label": texts}).cast_column(
        "image", datasets.Image()
    ).to_parquet(str(tmp_path / "text.parquet"))
    assert load_source(tmp_path / "text.parquet").class_names == tuple(sorted(PATTERN_CLASSES))

    _dataset(images, labels, names=None).to_parquet(str(tmp_path / "bare.parquet"))
    with pytest.raises(
        ManifestError, match=r"integer labels but the dataset has no class names.*--label-names FILE"
    ):
        load_source(tmp_path / "bare.parquet")
    names = tmp_path / "names.txt"
    names.write_text("\n".join(PATTERN_CLASSES) + "\n\n")
    table = load_source(tmp_path / "bare.parquet", label_names=names)
    assert table.class_names == PATTERN_CLASSES and table.samples["label"].iloc[1] == PATTERN_CLASSES[1]
    assert load_source(tmp_path / "bare.parquet", label_names=list("abcd")).class_names == tuple("abcd")


# --- bad rows are skipped, bad columns are one-line errors ------------------------------------------


def test_null_empty_and_corrupt_images_are_skipped_with_their_row(tmp_path):
    images, labels = _rows(per_class=4)
    images[1] = None
    images[2] = {"bytes": b"", "path": "empty.png"}
    images[3] = {"bytes": None, "path": "nowhere/gone.png"}
    ds = datasets.Dataset.from_dict({"image": images, "label": labels}).cast_column(
        "label", datasets.ClassLabel(names=list(PATTERN_CLASSES))
    )
    ds = ds.cast_column("image", datasets.Image())
    pq.write_table(ds.with_format("arrow")[:], tmp_path / "bad.parquet")  # to_parquet would read gone.png
    store = load_images(load_source(tmp_path / "bad.parquet"))
    skipped = store.table.skipped.set_index("reason")
    assert set(skipped.index) == {"no_image", "empty", "missing", "not_an_image"}
    assert skipped.loc["no_image", "detail"].startswith("row 1: ")
    assert skipped.loc["empty", "detail"].startswith("row 2: ")
    assert (
        skipped.loc["missing", "detail"].startswith("row 3: ")
        and "gone.png" in skipped.loc["missing", "detail"]
    )
    assert skipped.loc["not_an_image", "detail"].startswith(f"row {CORRUPT_ROW}: ")
    assert len(store) == len(labels) - 4


def _write(tmp_path, name, columns: dict, metadata: dict | None = None):
    table = pa.table(columns)
    if metadata is not None:
        table = table.replace_schema_metadata({"huggingface": json.dumps({"info": {"features": metadata}})})
    pq.write_table(table, tmp_path / name)
    return tmp_path / name


def test_wrong_columns_are_one_line_errors_naming_the_column(tmp_path, capsys):
    images, labels = _rows(per_class=2)
    struct = pa.array(images, type=pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
    cases = {
        "no_image": (
            _write(tmp_path, "a.parquet", {"label": labels}, {"image": {"_type": "Image"}}),
            r"has no image column .*--path-column",
        ),
        "float_label": (
            _write(tmp_path, "b.parquet", {"image": struct, "label": [float(x) + 0.5 for x in labels]}),
            r"label column 'label' holds double values.*--label-column",
        ),
        "no_label": (
            _write(tmp_path, "c.parquet", {"image": struct}),
            r"has no label column.*--label-column",
        ),
        "not_images": (
            _write(tmp_path, "d.parquet", {"image": struct, "pic": ["x"] * len(labels), "label": labels}),
            None,
        ),
        "out_of_range": (
            _write(
                tmp_path,
                "e.parquet",
                {"image": struct, "label": [k + 2 for k in labels]},
                {"label": {"names": list(PATTERN_CLASSES), "_type": "ClassLabel"}},
            ),
            r"has label 4 at row 2 .*only 4 class names",
        ),
        "minus_one": (
            _write(
                tmp_path,
                "f.parquet",
                {"image": struct, "label": [-1] + labels[1:]},
                {"label": {"names": list(PATTERN_CLASSES), "_type": "ClassLabel"}},
            ),
            r"1 rows with no label in column 'label' .*first at row 0",
        ),
    }
    for name, (path, message) in cases.items():
        if message is None:
            with pytest.raises(ManifestError, match=r"column 'pic' holds string, not images.*cast_column"):
                load_source(path, path_column="pic", label_names=list(PATTERN_CLASSES))
            continue
        with pytest.raises(ManifestError, match=message):
            load_source(path, label_names=list(PATTERN_CLASSES) if name != "out_of_range" else None)
        code, _, err = run_cli(["inspect", path, "--quiet"], capsys)
        assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) <= 3, (name, err)
        assert path.name in err, (name, err)


def test_bad_label_names_and_dataset_dicts_are_refused(hf, tmp_path, capsys):
    with pytest.raises(ConfigError, match=r"--label-names file .* does not exist"):
        load_source(hf["parquet"], label_names=tmp_path / "none.txt")
    (tmp_path / "dup.txt").write_text("a\nb\na\n")
    with pytest.raises(ConfigError, match="repeats the class name 'a'"):
        load_source(hf["parquet"], label_names=tmp_path / "dup.txt")
    folder = tmp_path / "plain"
    (folder / "cat").mkdir(parents=True)
    with pytest.raises(ConfigError, match="not one; drop --label-names"):
        load_source(folder, label_names=tmp_path / "dup.txt")
    datasets.DatasetDict({"train": hf["dataset"].select(range(8))}).save_to_disk(str(tmp_path / "dd"))
    with pytest.raises(ManifestError, match=r"DatasetDict .*splits: 'train'.*dd/train"):
        load_source(tmp_path / "dd")
    with pytest.raises(ManifestError, match=r"pass one split, e.g. dataset\['train'\]"):
        load_source(datasets.DatasetDict({"train": hf["dataset"]}))
    code, _, err = run_cli(["scan", tmp_path / "dd", "--quiet"], capsys)
    assert code == 2 and "save_to_disk" in err and "Traceback" not in err


def test_a_cache_inside_the_dataset_folder_is_refused(hf, tmp_path):
    import shutil

    copy = tmp_path / "saved"
    shutil.copytree(hf["saved"], copy)
    before = _digest(copy)
    with pytest.raises(ConfigError, match="inside the dataset folder"):
        load_source(copy, cache_dir=copy / "cache")
    assert _digest(copy) == before


# --- end to end ------------------------------------------------------------------------------------


def test_cli_scan_of_a_parquet_file(hf, parquet_run):
    run = parquet_run["run"]
    assert _digest(hf["parquet"]) == parquet_run["before"]  # the dataset is only read
    summary = json.loads((run / "summary.json").read_text())
    assert summary["source_kind"] == "huggingface" and summary["source"] == str(hf["parquet"])
    assert summary["class_names"] == list(PATTERN_CLASSES) and summary["num_samples"] == PER_CLASS * 4 - 1
    skipped = pd.read_csv(run / "skipped.csv")
    assert skipped["reason"].tolist() == ["not_an_image"]
    assert skipped["detail"].iloc[0].startswith(f"row {CORRUPT_ROW}: ")
    report = pd.read_csv(run / "report.csv")
    assert report["sample_id"].tolist()[:2] == ["img_000.png", "img_001.png"]
    # path: the image extracted to the cache, a PNG a person (and the review page) can open
    for path in report["path"]:
        assert path.startswith(str(parquet_run["cache"])) and path.endswith(".png")
        Image.open(path).verify()
    assert not any(p.name.startswith("run") for p in hf["root"].iterdir())  # nothing written beside


def test_cli_scan_of_a_save_to_disk_folder_and_the_inspect_command(hf, tmp_path, capsys):
    before = _digest(hf["saved"])
    code, _, err = run_cli(["scan", hf["saved"], "--out", tmp_path / "run", *FAST], capsys)
    assert code == 0, err
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["num_samples"] == PER_CLASS * 4 - 1 and summary["num_skipped"] == 1
    code, out, err = run_cli(["inspect", hf["arrow"], "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["num_samples"] == PER_CLASS * 4 - 1
    assert _digest(hf["saved"]) == before


def test_python_scan_of_a_dataset_object(hf, tmp_path):
    from labelaudit.train.config import TrainConfig

    config = labelaudit.ScanConfig(train=TrainConfig(width=8, seed=0), epochs_scale=0.15)
    result = labelaudit.scan(hf["dataset"], config, out_dir=tmp_path / "run")
    assert len(result.table) == PER_CLASS * 4 - 1 and result.table.class_names == PATTERN_CLASSES
    assert result.table.skipped["detail"].iloc[0].startswith(f"row {CORRUPT_ROW}: ")


def test_review_predict_evaluate_on_a_hugging_face_scan(hf, parquet_run, tmp_path, capsys):
    run, cache = parquet_run["run"], parquet_run["cache"]
    code, _, err = run_cli(["review", run, "--quiet"], capsys)
    assert code == 0, err
    thumbs = list((run / "review").rglob("*.jpg"))
    flagged = len(pd.read_csv(run / "flagged.csv"))
    assert (run / "review" / "index.html").is_file() and flagged > 0
    assert len(thumbs) == flagged  # every flagged image shown from its extracted file

    code, out, err = run_cli(
        [
            "predict",
            run / "model.pt",
            hf["saved"],
            "--out",
            tmp_path / "p.csv",
            "--quiet",
            "--cache-dir",
            cache,
        ],
        capsys,
    )
    assert code == 0, err
    predictions = pd.read_csv(tmp_path / "p.csv")
    assert len(predictions) == PER_CLASS * 4 - 1 and predictions["sample_id"].iloc[0] == "img_000.png"
    code, out, err = run_cli(["evaluate", run, hf["parquet"], "--json", "--cache-dir", cache], capsys)
    assert code == 0, err
    assert 0 <= json.loads(out)["accuracy"] <= 1


def test_inject_noise_and_benchmark_take_a_hugging_face_dataset(hf, tmp_path, capsys):
    code, _, err = run_cli(
        [
            "inject-noise",
            hf["parquet"],
            "--kind",
            "symm-exc",
            "--rate",
            "0.25",
            "--out",
            tmp_path / "noisy",
            "-q",
        ],
        capsys,
    )
    assert code == 0, err
    truth = pd.read_csv(tmp_path / "noisy" / "truth.csv")
    assert len(truth) == PER_CLASS * 4 and truth["is_noisy"].mean() == pytest.approx(0.25, abs=0.03)

    from labelaudit.pipeline.benchmark import BenchmarkConfig, parse_noise, run_benchmark

    config = BenchmarkConfig(
        settings=tuple(parse_noise("symm-exc:0.2")),
        methods=("ce",),
        epochs_scale=0.1,
        scan_args=("--width", "8"),
    )
    results = run_benchmark(hf["parquet"], config, tmp_path / "bench")
    assert (results["error"] == "").all(), results["error"].tolist()


def test_export_and_retrain_read_the_extracted_images(hf, parquet_run, tmp_path, capsys):
    run, cache = parquet_run["run"], parquet_run["cache"]
    code, _, err = run_cli(["export", run, "--format", "label-studio", "--out", tmp_path / "ls"], capsys)
    assert code == 0, err
    tasks = json.loads((tmp_path / "ls" / "tasks.json").read_text())
    flagged = pd.read_csv(run / "flagged.csv")
    assert len(tasks) == len(flagged) and "embedded-images" in json.dumps(tasks)

    code, out, err = run_cli(
        [
            "retrain",
            run,
            "--epochs",
            "2",
            "--out",
            tmp_path / "re",
            "--cache-dir",
            cache,
            "--json",
            "-q",
            "--test",
            hf["saved"],
        ],
        capsys,
    )
    assert code == 0, err
    result = json.loads(out)
    assert result["run_dir"] == str(tmp_path / "re") and 0 <= result["test"]["accuracy"] <= 1


def test_shards_selections_and_repeated_images(hf, tmp_path):
    ds = hf["dataset"]
    ds.save_to_disk(str(tmp_path / "sharded"), num_shards=3)
    assert len(list((tmp_path / "sharded").glob("*.arrow"))) == 3
    sharded = load_source(tmp_path / "sharded")
    assert sharded.samples["sample_id"].tolist() == load_source(hf["parquet"]).samples["sample_id"].tolist()

    picked = ds.select([9, 8, 7, 6, 4, 3, 2, 1])  # an indices mapping over the same Arrow table
    table = load_source(picked)
    assert table.samples["sample_id"].tolist() == [f"img_{i:03d}.png" for i in (9, 8, 7, 6, 4, 3, 2, 1)]
    assert table.samples["given_label"].tolist() == [i % 4 for i in (9, 8, 7, 6, 4, 3, 2, 1)]
    assert load_source(datasets.load_from_disk(str(hf["saved"]))).source == hf["saved"].resolve()

    images, labels = _rows(per_class=4)
    images[7] = dict(images[0], path="copy_of_0.png")  # the same bytes in two rows, another label
    store = load_images(load_source(_dataset(images, labels)))
    rows = store.table.samples.set_index("sample_id")
    assert rows.loc["img_000.png", "path"] == rows.loc["copy_of_0.png", "path"]  # one extracted file
    assert rows.loc["img_000.png", "label"] != rows.loc["copy_of_0.png", "label"]  # two samples
    assert np.array_equal(
        store.images([0]), store.images([int(np.flatnonzero(rows.index == "copy_of_0.png")[0])])
    )


def test_the_review_page_shows_the_embedded_images_in_a_real_browser(
    parquet_run,
    browser,  # noqa: F811  (the fixture imported above)
    tmp_path,
    capsys,
):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(parquet_run["run"], run, ignore=shutil.ignore_patterns("review"))  # another test's page
    code, _, err = run_cli(["review", run, "--quiet"], capsys)
    assert code == 0, err
    open_page(browser, run / "review" / "index.html")
    assert severe_logs(browser) == []
    flagged = pd.read_csv(run / "flagged.csv")
    assert card_ids(browser) == flagged["sample_id"].tolist()
    shown = browser.execute_script(
        "return Array.from(document.querySelectorAll('#grid .card img'), i => [i.complete, i.naturalWidth])"
    )
    assert len(shown) == len(flagged) and all(done and width > 0 for done, width in shown), shown
