"""Reading user-supplied embeddings and predicted probabilities (labelaudit.data.user_files), aligned with a
real SampleTable: every format on real files, shuffled and skipped rows, every error message,
and cleanlab's own pred_probs."""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import make_folder_dataset, save_image

from labelaudit import load_source
from labelaudit.data.user_files import MANIFEST_ROW_COLUMN, read_embeddings, read_probs
from labelaudit.errors import ConfigError
from labelaudit.reports import write_csv

CLASSES = ("cat", "dog", "owl")


@pytest.fixture
def table(tmp_path):
    """A folder source: 3 classes x 2 images, ids ``cat/cat_0.png`` ... ``owl/owl_1.png``."""
    return load_source(make_folder_dataset(tmp_path / "data", classes=CLASSES, per_class=2))


def _vectors(n: int, d: int = 4, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, d))


def _probs(n: int, k: int = 3, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).uniform(0.05, 1.0, size=(n, k))
    return x / x.sum(axis=1, keepdims=True)


def _ids(table) -> list[str]:
    return table.samples["sample_id"].tolist()


@pytest.fixture
def manifest(tmp_path):
    """A CSV manifest of 6 data rows: row 2's image is missing, row 4 repeats row 1's path.

    The table keeps manifest rows 0, 1, 3, 5 (images 0..3)."""
    for i in range(4):
        save_image(tmp_path / "imgs" / f"{i}.png", seed=i)
    path = tmp_path / "m.csv"
    pd.DataFrame(
        {
            "path": [
                "imgs/0.png",
                "imgs/1.png",
                "imgs/missing.png",
                "imgs/2.png",
                "imgs/1.png",
                "imgs/3.png",
            ],
            "label": ["a", "b", "a", "a", "b", "b"],
        }
    ).to_csv(path, index=False)
    return path


def _with_manifest_rows(table, rows):
    """``table`` as sources.py gives it once it records each sample's manifest row (a proposed
    one-column change); the real table, checked, when it already does."""
    if MANIFEST_ROW_COLUMN in table.samples.columns:
        assert table.samples[MANIFEST_ROW_COLUMN].tolist() == rows
        return table
    return replace(table, samples=table.samples.assign(**{MANIFEST_ROW_COLUMN: rows}))


# --- embeddings round trips ----------------------------------------------------------------------


def test_npy_embeddings_in_folder_order(tmp_path, table):
    vectors = _vectors(len(table))  # float64 on disk, float32 out
    np.save(tmp_path / "e.npy", vectors)
    out = read_embeddings(tmp_path / "e.npy", table)
    assert out.dtype == np.float32 and out.shape == (6, 4)
    np.testing.assert_array_equal(out, vectors.astype(np.float32))


def test_folder_order_is_the_documented_walk_order(tmp_path):
    # Class folders by name ("B" < "a"), a folder's own files before its subfolders.
    root = tmp_path / "data"
    for rel in ["a/z.png", "a/sub/b.png", "a/c.png", "B/x.png", "B/.hidden.png"]:
        save_image(root / rel)
    (root / "B" / "notes.txt").write_text("no row")
    table = load_source(root)
    assert _ids(table) == ["B/x.png", "a/c.png", "a/z.png", "a/sub/b.png"]


def test_parquet_list_column_shuffled_and_extra_rows_ignored(tmp_path, table, caplog):
    vectors = _vectors(len(table), d=5).astype(np.float32)
    frame = pd.DataFrame({"sample_id": _ids(table), "label": "ignored", "embedding": list(vectors)})
    frame = pd.concat(
        [
            frame,
            pd.DataFrame(
                {"sample_id": ["other/x.png"], "label": [""], "embedding": [np.zeros(5, np.float32)]}
            ),
        ]
    )
    frame.sample(frac=1, random_state=3).to_parquet(tmp_path / "e.parquet")  # shuffled, index saved too
    with caplog.at_level(logging.WARNING, logger="labelaudit.data.user_files"):
        out = read_embeddings(tmp_path / "e.parquet", table)
    np.testing.assert_array_equal(out, vectors)
    assert (
        "ignored 1 rows (0 for images the dataset skipped, 1 for samples not in the dataset)" in caplog.text
    )


def test_parquet_fixed_size_list_and_lone_list_column(tmp_path, table):
    vectors = _vectors(len(table), d=3).astype(np.float32)
    order = np.array([5, 2, 0, 4, 1, 3])
    column = pa.FixedSizeListArray.from_arrays(pa.array(vectors[order].ravel()), 3)
    pq.write_table(
        pa.table({"sample_id": np.array(_ids(table))[order], "vec": column}), tmp_path / "e.parquet"
    )
    np.testing.assert_array_equal(read_embeddings(tmp_path / "e.parquet", table), vectors)


def test_parquet_numeric_columns_in_file_order(tmp_path, table):
    vectors = _vectors(len(table), d=3)
    frame = pd.DataFrame(
        {"f2": vectors[:, 0], "sample_id": _ids(table), "f0": vectors[:, 1], "f1": vectors[:, 2]}
    )
    frame.iloc[::-1].to_parquet(tmp_path / "e.parquet")  # the reversed index is stored: not a feature
    out = read_embeddings(tmp_path / "e.parquet", table)
    np.testing.assert_allclose(out, vectors.astype(np.float32))


def test_csv_keyed_by_relative_path(tmp_path, table):
    vectors = _vectors(len(table), d=2)
    elsewhere = tmp_path / "features"
    elsewhere.mkdir()
    rel = ["../data/" + s for s in _ids(table)]
    frame = pd.DataFrame({"path": rel, "a": vectors[:, 0], "b": vectors[:, 1]}).iloc[[3, 1, 0, 5, 4, 2]]
    frame.to_csv(elsewhere / "e.csv", index=False)
    np.testing.assert_allclose(
        read_embeddings(elsewhere / "e.csv", table), vectors.astype(np.float32), rtol=1e-6
    )


def test_npy_manifest_order_with_skipped_and_repeated_rows(tmp_path, manifest, caplog):
    table = _with_manifest_rows(load_source(manifest), [0, 1, 3, 5])
    assert len(table) == 4 and len(table.skipped) == 1 and len(table.duplicate_rows) == 1
    vectors = _vectors(6)  # one row per manifest data row
    np.save(tmp_path / "e.npy", vectors)
    with caplog.at_level(logging.WARNING, logger="labelaudit.data.user_files"):
        out = read_embeddings(tmp_path / "e.npy", table)
    np.testing.assert_array_equal(out, vectors[[0, 1, 3, 5]].astype(np.float32))
    assert "ignored 2 rows" in caplog.text
    # An array in the table's own order (one row per usable image) is accepted as well.
    np.save(tmp_path / "t.npy", vectors[:4])
    np.testing.assert_array_equal(read_embeddings(tmp_path / "t.npy", table), vectors[:4].astype(np.float32))


def test_npy_manifest_order_refused_when_rows_cannot_be_matched(tmp_path, manifest):
    table = load_source(manifest)
    table = replace(table, samples=table.samples.drop(columns=MANIFEST_ROW_COLUMN, errors="ignore"))
    np.save(tmp_path / "e.npy", _vectors(6))
    with pytest.raises(
        ConfigError,
        match=r"has 6 rows, one per row of manifest 'm.csv', but only 4 .*drop the rows of the skipped",
    ):
        read_embeddings(tmp_path / "e.npy", table)


# --- probabilities round trips -------------------------------------------------------------------


def test_npy_probs(tmp_path, table):
    probs = _probs(len(table))
    np.save(tmp_path / "p.npy", probs)
    out = read_probs(tmp_path / "p.npy", table)
    assert out.dtype == np.float64 and out.shape == (6, 3)
    np.testing.assert_allclose(out, probs, rtol=0, atol=1e-15)


def test_probs_parquet_like_a_labelaudit_report(tmp_path, table):
    # report.parquet: sample_id, path, other numeric columns, soft label as float32 p_<class>.
    probs = _probs(len(table)).astype(np.float32)
    report = pd.DataFrame(
        {
            "sample_id": _ids(table),
            "path": table.samples["path"],
            "given_label": table.samples["label"],
            "confidence": 0.5,
            "rank": np.arange(6),
        }
    )
    soft = pd.DataFrame(probs, columns=[f"p_{c}" for c in CLASSES])
    pd.concat([report, soft], axis=1).iloc[[4, 0, 2, 5, 1, 3]].to_parquet(
        tmp_path / "report.parquet", index=False
    )
    out = read_probs(tmp_path / "report.parquet", table)
    np.testing.assert_allclose(out, probs, atol=1e-6)
    np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=0, atol=1e-12)  # rescaled exactly


def test_probs_csv_exact_class_names_any_order_escaped(tmp_path):
    root = tmp_path / "data"
    make_folder_dataset(root, classes=("-neg", "pos"), per_class=2)  # "-neg" is escaped in our CSV header
    table = load_source(root)
    probs = _probs(len(table), k=2)
    frame = pd.DataFrame({"pos": probs[:, 1], "sample_id": _ids(table), "note": "x", "-neg": probs[:, 0]})
    write_csv(tmp_path / "p.csv", frame.iloc[::-1])
    assert (tmp_path / "p.csv").read_text().splitlines()[0].endswith(",'-neg")
    np.testing.assert_allclose(read_probs(tmp_path / "p.csv", table), probs, atol=1e-12)


def test_probs_rows_within_tolerance_are_rescaled(tmp_path, table):
    probs = _probs(len(table)) * 1.0009
    np.save(tmp_path / "p.npy", probs)
    out = read_probs(tmp_path / "p.npy", table)
    np.testing.assert_allclose(out, probs / probs.sum(axis=1, keepdims=True), rtol=1e-12)
    np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=0, atol=1e-12)


def test_cleanlab_pred_probs_read_back_unchanged(tmp_path):
    cleanlab = pytest.importorskip(
        "cleanlab", reason="cleanlab is not installed (pip install 'labelaudit[cleanlab]')"
    )
    from cleanlab.count import estimate_cv_predicted_probabilities
    from cleanlab.filter import find_label_issues
    from sklearn.linear_model import LogisticRegression

    # Images filed under their given label; features carry the true class; 4 given labels wrong.
    rng = np.random.default_rng(0)
    true = np.repeat([0, 1, 2], 15)
    given = true.copy()
    given[[0, 16, 31, 44]] = [1, 2, 0, 0]
    root = tmp_path / "data"
    for i, g in enumerate(given):
        save_image(root / CLASSES[g] / f"img_{i:02d}.png", seed=i)
    table = load_source(root)
    assert table.class_names == CLASSES
    order = [int(s.split("_")[1][:2]) for s in table.samples["sample_id"]]  # dataset order of the files
    labels = table.samples["given_label"].to_numpy()
    np.testing.assert_array_equal(labels, given[order])
    features = rng.normal(size=(len(true), 4)) + 3.0 * np.eye(3, 4)[true]
    # cleanlab's documented way to get out-of-sample pred_probs: rows = samples, columns = labels 0..K-1.
    pred_probs = estimate_cv_predicted_probabilities(
        features[order], labels, clf=LogisticRegression(), cv_n_folds=3, seed=0
    )
    np.save(tmp_path / "pred_probs.npy", pred_probs)

    out = read_probs(tmp_path / "pred_probs.npy", table)
    np.testing.assert_allclose(out, pred_probs, rtol=0, atol=1e-12)
    issues = find_label_issues(labels, out, n_jobs=1)
    np.testing.assert_array_equal(issues, find_label_issues(labels, pred_probs, n_jobs=1))
    assert issues.shape == (45,) and issues.any()
    assert cleanlab.__version__


# --- errors --------------------------------------------------------------------------------------


@pytest.mark.parametrize("reader", [read_embeddings, read_probs])
def test_file_errors(tmp_path, table, reader):
    with pytest.raises(
        ConfigError, match=r"file '.*nope.npy' does not exist; pass a .npy, .parquet or .csv file"
    ):
        reader(tmp_path / "nope.npy", table)
    with pytest.raises(ConfigError, match=r"is a folder, not a file"):
        reader(tmp_path, table)
    (tmp_path / "model.pt").write_bytes(b"\x80\x04")
    with pytest.raises(
        ConfigError, match=r"is not a .npy, .parquet or .csv file \(labelaudit never unpickles"
    ):
        reader(tmp_path / "model.pt", table)
    (tmp_path / "text.npy").write_text("hello")
    with pytest.raises(ConfigError, match=r"cannot be read as .npy: .*save a numeric array with numpy.save"):
        reader(tmp_path / "text.npy", table)
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}] * 6, dtype=object), allow_pickle=True)
    with pytest.raises(ConfigError, match=r"cannot be read as .npy: .*objects"):
        reader(tmp_path / "obj.npy", table)
    np.save(tmp_path / "str.npy", np.array([["a"]] * 6))
    with pytest.raises(ConfigError, match=r"holds <U1 values, expected numbers"):
        reader(tmp_path / "str.npy", table)
    (tmp_path / "bad.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(
        ConfigError, match=r"cannot be read as parquet: .*check that it is a valid parquet file"
    ):
        reader(tmp_path / "bad.parquet", table)
    (tmp_path / "empty.csv").write_bytes(b"")
    with pytest.raises(ConfigError, match=r"cannot be read as csv"):
        reader(tmp_path / "empty.csv", table)


@pytest.mark.parametrize("reader", [read_embeddings, read_probs])
def test_keyed_file_errors(tmp_path, table, reader):
    ids, probs = _ids(table), _probs(len(table))
    columns = {f"p_{c}": probs[:, j] for j, c in enumerate(CLASSES)}
    pd.DataFrame({"key": ids, **columns}).to_parquet(tmp_path / "nokey.parquet")
    with pytest.raises(ConfigError, match=r"has no sample_id or path column \(columns: 'key', 'p_cat'"):
        reader(tmp_path / "nokey.parquet", table)
    pd.DataFrame({"sample_id": ids[1:5], **{k: v[1:5] for k, v in columns.items()}}).to_parquet(
        tmp_path / "few.parquet"
    )
    with pytest.raises(
        ConfigError,
        match=r"has no row for 2 of the dataset's 6 samples \(first: sample_id 'cat/cat_0.png'; "
        r"its sample_ids look like 'cat/cat_1.png'\)",
    ):
        reader(tmp_path / "few.parquet", table)
    pd.DataFrame({"sample_id": ids + ids[2:4], **{k: np.r_[v, v[2:4]] for k, v in columns.items()}}).to_csv(
        tmp_path / "dup.csv", index=False
    )
    with pytest.raises(
        ConfigError,
        match=r"repeats the sample_id 'dog/dog_0.png' \(2 repeated rows\); keep one row per sample",
    ):
        reader(tmp_path / "dup.csv", table)
    blank = pd.DataFrame({"sample_id": ids, **columns})
    blank.loc[3, "sample_id"] = ""
    blank.to_csv(tmp_path / "blank.csv", index=False)
    with pytest.raises(ConfigError, match=r"has 1 rows with no sample_id \(first on line 5\)"):
        reader(tmp_path / "blank.csv", table)
    text = pd.DataFrame({"sample_id": ids, **columns})
    text["p_dog"] = text["p_dog"].astype(str)
    text.loc[4, "p_dog"] = "0.2x"
    text.to_csv(tmp_path / "text.csv", index=False)
    with pytest.raises(
        ConfigError, match=r"column 'p_dog' holds the text '0.2x' on line 6, expected numbers"
    ):
        reader(tmp_path / "text.csv", table)
    text.to_parquet(tmp_path / "text.parquet")
    with pytest.raises(ConfigError, match=r"column 'p_dog' holds text values, expected numbers"):
        reader(tmp_path / "text.parquet", table)
    nan = pd.DataFrame({"sample_id": ids, **columns}).iloc[::-1]
    nan.iloc[1, 2] = np.nan  # file row 2 (owl/owl_0.png), the first in file order
    nan.iloc[4, 1] = np.inf
    nan.to_parquet(tmp_path / "nan.parquet")
    with pytest.raises(
        ConfigError,
        match=r"has NaN or infinite values.* in 2 rows \(first at row 2, counting from 1, "
        r"sample 'owl/owl_0.png'\)",
    ):
        reader(tmp_path / "nan.parquet", table)


@pytest.mark.parametrize("reader", [read_embeddings, read_probs])
def test_npy_row_count_errors(tmp_path, table, manifest, reader):
    np.save(tmp_path / "e.npy", _probs(5))
    np.save(tmp_path / "m.npy", _probs(5, k=2))
    with pytest.raises(
        ConfigError,
        match=r"has 5 rows but the image folder '.*data' has 6 usable images; save one row per "
        r"image in labelaudit's folder order",
    ):
        reader(tmp_path / "e.npy", table)
    with pytest.raises(
        ConfigError,
        match=r"has 5 rows, but manifest 'm.csv' has 6 data rows \(4 usable images\); save "
        r"one row per manifest row",
    ):
        reader(tmp_path / "m.npy", _with_manifest_rows(load_source(manifest), [0, 1, 3, 5]))


def test_embedding_shape_errors(tmp_path, table):
    for name, array in {"flat": np.zeros(6), "cube": np.zeros((6, 2, 2)), "none": np.zeros((6, 0))}.items():
        np.save(tmp_path / f"{name}.npy", array)
        with pytest.raises(
            ConfigError,
            match=rf"holds an array of shape \({array.shape[0]},.*expected 2-D .*at least one feature",
        ):
            read_embeddings(tmp_path / f"{name}.npy", table)
    vectors = _vectors(6, d=3)
    vectors[4, 1] = np.nan
    np.save(tmp_path / "nan.npy", vectors)
    with pytest.raises(
        ConfigError,
        match=r"NaN or infinite values or too large for float32 in 1 rows \(first at row 4, counting from 0, "
        r"sample 'owl/owl_0.png'\)",
    ):
        read_embeddings(tmp_path / "nan.npy", table)
    np.save(tmp_path / "big.npy", np.full((6, 2), 1e300))
    with pytest.raises(ConfigError, match=r"too large for float32 in 6 rows"):
        read_embeddings(tmp_path / "big.npy", table)


def test_embedding_table_errors(tmp_path, table):
    ids = _ids(table)
    pd.DataFrame({"sample_id": ids}).to_parquet(tmp_path / "bare.parquet")
    with pytest.raises(ConfigError, match=r"has no embedding columns besides 'sample_id'"):
        read_embeddings(tmp_path / "bare.parquet", table)
    pd.DataFrame({"sample_id": ids, "x": 1.0, "label": "cat"}).to_parquet(tmp_path / "label.parquet")
    with pytest.raises(
        ConfigError, match=r"column 'label' holds text values, expected numbers; fix or drop that column"
    ):
        read_embeddings(tmp_path / "label.parquet", table)
    lists = [np.ones(3)] * 6
    pd.DataFrame({"sample_id": ids, "a": lists, "b": lists}).to_parquet(tmp_path / "two.parquet")
    with pytest.raises(
        ConfigError, match=r"has list column 'a' among 2 value columns; name the embedding column 'embedding'"
    ):
        read_embeddings(tmp_path / "two.parquet", table)
    uneven = [np.ones(3)] * 2 + [np.ones(2)] + [np.ones(3)] * 3
    pd.DataFrame({"sample_id": ids, "embedding": uneven}).to_parquet(tmp_path / "uneven.parquet")
    with pytest.raises(
        ConfigError,
        match=r"column 'embedding' holds 2 values at row 3, counting from 1 but 3 in the first row",
    ):
        read_embeddings(tmp_path / "uneven.parquet", table)
    pd.DataFrame({"sample_id": ids, "embedding": lists[:5] + [None]}).to_parquet(tmp_path / "null.parquet")
    with pytest.raises(
        ConfigError, match=r"column 'embedding' has empty \(null\) rows \(first at row 6, counting from 1\)"
    ):
        read_embeddings(tmp_path / "null.parquet", table)
    pd.DataFrame({"sample_id": ids, "embedding": [["a"]] * 6}).to_parquet(tmp_path / "strs.parquet")
    with pytest.raises(ConfigError, match=r"column 'embedding' holds lists of text values"):
        read_embeddings(tmp_path / "strs.parquet", table)


def test_probs_value_errors(tmp_path, table):
    probs = _probs(len(table))
    np.save(tmp_path / "cols.npy", probs[:, :2])
    with pytest.raises(
        ConfigError,
        match=r"has 2 columns, expected a 2-D array with one column per class \(3: 'cat', 'dog', 'owl'\)",
    ):
        read_probs(tmp_path / "cols.npy", table)
    np.save(tmp_path / "flat.npy", probs[:, 0])
    with pytest.raises(ConfigError, match=r"has shape \(6,\), expected a 2-D array"):
        read_probs(tmp_path / "flat.npy", table)
    logits = np.log(probs)
    np.save(tmp_path / "logits.npy", logits)
    with pytest.raises(
        ConfigError,
        match=r"has negative values in 6 rows \(first at row 0, counting from 0, sample 'cat/cat_0.png': "
        r".*\); pass probabilities \(softmax outputs\), not logits",
    ):
        read_probs(tmp_path / "logits.npy", table)
    off = probs.copy()
    off[3] *= 1.01
    np.save(tmp_path / "off.npy", off)
    with pytest.raises(
        ConfigError,
        match=r"has 1 rows that do not sum to 1 \(first at row 3, counting from 0, sample 'dog/dog_1.png': "
        r"sum 1.01, tolerance 0.001\); pass softmax outputs, not logits: labelaudit does not renormalise",
    ):
        read_probs(tmp_path / "off.npy", table)
    pd.DataFrame(
        {"sample_id": _ids(table), "p_cat": probs[:, 0], "p_dog": probs[:, 1], "owl": probs[:, 2]}
    ).to_parquet(tmp_path / "cls.parquet")
    with pytest.raises(
        ConfigError,
        match=r"has no column for class 'owl' \(1 of 3 classes missing\); add one column per class "
        r"named 'p_owl' \(or 'owl'\)",
    ):
        read_probs(tmp_path / "cls.parquet", table)
