"""Loading image folders and manifests into a SampleTable, and the errors for bad sources."""

from __future__ import annotations

import pandas as pd
import pytest
from conftest import make_folder_dataset, save_image

from labelaudit import DatasetError, ManifestError, SourceNotFoundError, load_source


def test_folder_nested_extensions_hidden_and_strays(tmp_path):
    root = tmp_path / "data"
    save_image(root / "cat" / "a.PNG")
    save_image(root / "cat" / "nested" / "deeper" / "b.jpeg", mode="RGB")
    save_image(root / "dog" / "c.Tif")
    save_image(root / "dog" / ".hidden.png")  # ignored
    save_image(root / ".thumbs" / "x.png")  # hidden folder: not a class
    (root / "dog" / "notes.txt").write_text("not an image")
    save_image(root / "stray.png")  # not inside a class folder
    table = load_source(root)
    assert table.kind == "folder"
    assert table.class_names == ("cat", "dog")
    assert table.samples["sample_id"].tolist() == ["cat/a.PNG", "cat/nested/deeper/b.jpeg", "dog/c.Tif"]
    assert table.samples["given_label"].tolist() == [0, 0, 1]
    reasons = dict(zip(table.skipped["sample_id"], table.skipped["reason"]))
    assert reasons == {"dog/notes.txt": "unsupported_extension", "stray.png": "outside_class_folder"}


def test_zero_byte_file_is_skipped_not_fatal(tmp_path):
    root = make_folder_dataset(tmp_path / "data")
    (root / "cat" / "empty.png").write_bytes(b"")
    table = load_source(root)
    assert len(table) == 6
    assert table.skipped.set_index("sample_id").loc["cat/empty.png", "reason"] == "empty"


def test_missing_source(tmp_path):
    with pytest.raises(SourceNotFoundError, match=r"does not exist; pass an image folder"):
        load_source(tmp_path / "nope")


def test_unsupported_source_file(tmp_path):
    target = tmp_path / "list.txt"
    target.write_text("x")
    with pytest.raises(SourceNotFoundError, match=r"neither a folder nor a \.parquet/\.csv manifest"):
        load_source(target)


def test_single_class_folder(tmp_path):
    root = make_folder_dataset(tmp_path / "data", classes=("only",))
    with pytest.raises(DatasetError, match=r"only one class \('only'\).*at least two classes"):
        load_source(root)


def test_empty_class_folder(tmp_path):
    root = make_folder_dataset(tmp_path / "data")
    (root / "bird").mkdir()
    with pytest.raises(
        DatasetError, match=r"class folder .*bird' contains no images; add images to it or remove it"
    ):
        load_source(root)


def test_folder_without_class_subfolders(tmp_path):
    save_image(tmp_path / "data" / "a.png")
    with pytest.raises(DatasetError, match="has no class subfolders"):
        load_source(tmp_path / "data")


def test_folder_with_no_images(tmp_path):
    (tmp_path / "data" / "cat").mkdir(parents=True)
    (tmp_path / "data" / "cat" / "readme.txt").write_text("x")
    with pytest.raises(DatasetError, match="contains no images"):
        load_source(tmp_path / "data")


# --- manifests -------------------------------------------------------------------------------


def _images(tmp_path, n=4):
    return [save_image(tmp_path / "imgs" / f"{i}.png", seed=i) for i in range(n)]


def test_parquet_manifest_relative_and_absolute_paths(tmp_path):
    files = _images(tmp_path)
    manifest = tmp_path / "manifest.parquet"
    pd.DataFrame(
        {"path": ["imgs/0.png", str(files[1]), "imgs/2.png", str(files[3])], "label": ["b", "a", "b", "a"]}
    ).to_parquet(manifest)
    table = load_source(manifest)
    assert table.kind == "parquet"
    assert table.class_names == ("a", "b")
    assert table.samples["path"].tolist() == [str(f) for f in files]
    assert table.samples["given_label"].tolist() == [1, 0, 1, 0]
    assert table.samples["sample_id"].iloc[0] == "imgs/0.png"


def test_csv_manifest_custom_columns_and_ids(tmp_path):
    _images(tmp_path)
    manifest = tmp_path / "labels.csv"
    pd.DataFrame(
        {"key": ["k0", "k1", "k2", "k3"], "img": [f"imgs/{i}.png" for i in range(4)], "y": [10, 2, 2, 10]}
    ).to_csv(manifest, index=False)
    table = load_source(manifest, path_column="img", label_column="y", id_column="key")
    assert table.kind == "csv"
    assert table.class_names == ("2", "10")  # integer labels in numeric order
    assert table.samples["sample_id"].tolist() == ["k0", "k1", "k2", "k3"]


def test_default_column_candidates(tmp_path):
    _images(tmp_path)
    manifest = tmp_path / "m.csv"
    pd.DataFrame({"file_name": [f"imgs/{i}.png" for i in range(4)], "class": list("xyxy")}).to_csv(
        manifest, index=False
    )
    assert load_source(manifest).class_names == ("x", "y")


def test_missing_label_column(tmp_path):
    _images(tmp_path)
    manifest = tmp_path / "m.parquet"
    pd.DataFrame({"path": [f"imgs/{i}.png" for i in range(4)], "category": list("abab")}).to_parquet(manifest)
    with pytest.raises(
        ManifestError,
        match=r"no label column \(looked for .*found \['path', 'category'\]\); name it with --label-column",
    ):
        load_source(manifest)


def test_misnamed_column_option(tmp_path):
    _images(tmp_path)
    manifest = tmp_path / "m.parquet"
    pd.DataFrame({"path": [f"imgs/{i}.png" for i in range(4)], "label": list("abab")}).to_parquet(manifest)
    with pytest.raises(
        ManifestError, match=r"no path column 'filepath' .*pass the right name with --path-column"
    ):
        load_source(manifest, path_column="filepath")


def test_unreadable_manifest(tmp_path):
    manifest = tmp_path / "m.parquet"
    manifest.write_bytes(b"this is not parquet at all")
    with pytest.raises(
        ManifestError, match=r"cannot read manifest .* as parquet: .*check that it is a valid parquet file"
    ):
        load_source(manifest)


def test_manifest_without_rows(tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,label\n")
    with pytest.raises(ManifestError, match="has no rows"):
        load_source(manifest)


def test_blank_labels(tmp_path):
    _images(tmp_path)
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,label\nimgs/0.png,a\nimgs/1.png,\nimgs/2.png,b\n")
    with pytest.raises(ManifestError, match=r"1 rows with no label in column 'label' \(first on line 3\)"):
        load_source(manifest)


def test_unknown_paths_are_skipped(tmp_path):
    _images(tmp_path)
    manifest = tmp_path / "m.csv"
    pd.DataFrame(
        {"path": ["imgs/0.png", "imgs/1.png", "imgs/2.png", "imgs/404.png"], "label": list("abab")}
    ).to_csv(manifest, index=False)
    table = load_source(manifest)
    assert len(table) == 3
    assert table.skipped[["sample_id", "reason"]].values.tolist() == [["imgs/404.png", "missing"]]


def test_duplicate_paths_reported_and_first_kept(tmp_path):
    _images(tmp_path)
    manifest = tmp_path / "m.csv"
    pd.DataFrame(
        {
            "path": ["imgs/0.png", "imgs/1.png", "imgs/0.png", "imgs/1.png", "imgs/2.png"],
            "label": list("abbba"),
        }
    ).to_csv(manifest, index=False)
    table = load_source(manifest)
    assert len(table) == 3
    assert table.samples["label"].tolist() == ["a", "b", "a"]
    assert len(table.duplicate_rows) == 2
    assert table.duplicate_rows["conflicting"].tolist() == [True, False]


def test_duplicate_ids_rejected(tmp_path):
    _images(tmp_path)
    manifest = tmp_path / "m.csv"
    pd.DataFrame(
        {"id": [1, 1, 2, 3], "path": [f"imgs/{i}.png" for i in range(4)], "label": list("abab")}
    ).to_csv(manifest, index=False)
    with pytest.raises(ManifestError, match=r"repeats the id '1'"):
        load_source(manifest)


def test_unknown_label_against_given_classes(tmp_path):
    _images(tmp_path)
    manifest = tmp_path / "m.csv"
    pd.DataFrame({"path": [f"imgs/{i}.png" for i in range(4)], "label": ["a", "b", "a", "zebra"]}).to_csv(
        manifest, index=False
    )
    with pytest.raises(DatasetError, match=r"label 'zebra' is not one of the given classes \['a', 'b'\]"):
        load_source(manifest, classes=["a", "b"])


def test_manifest_one_class(tmp_path):
    _images(tmp_path)
    manifest = tmp_path / "m.csv"
    pd.DataFrame({"path": [f"imgs/{i}.png" for i in range(4)], "label": ["a"] * 4}).to_csv(
        manifest, index=False
    )
    with pytest.raises(DatasetError, match="only one class"):
        load_source(manifest)
