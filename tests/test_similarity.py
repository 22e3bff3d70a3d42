"""Near-duplicates and outliers (labelaudit.audit.similarity) on real images, and in a real scan."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import run_cli
from PIL import Image, ImageDraw, ImageFont
from test_review_page import browser  # noqa: F401  (the real-browser fixture)

from labelaudit.audit.similarity import (
    aligned_differences,
    comparison_images,
    find_similarity_issues,
    nearest_neighbours,
    outlier_scores,
)

SAMPLE = Path(__file__).parent.parent / "sample_data" / "fashion_mnist_noisy" / "images"
CLASSES = ["Bag", "Coat", "Sandal", "Trouser", "Sneaker", "Dress"]
PER_CLASS = 60


def _snapshot(root: Path) -> dict:
    return {
        str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _digit(text: str) -> Image.Image:
    """A white digit on black, 28 px, drawn with PIL's own font."""
    image = Image.new("L", (28, 28), 0)
    ImageDraw.Draw(image).text((14, 14), text, fill=255, font=ImageFont.load_default(size=22), anchor="mm")
    return image


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """360 real Fashion-MNIST images in 6 classes, plus:

    - ``Coat/copy-of-bag.jpg``: a bag shifted by one pixel and saved as JPEG quality 70, filed
      under another class (a near-duplicate conflict);
    - ``Trouser/twin.png``: a byte-identical copy of a trouser (an exact duplicate, same label);
    - three digits and a blank frame filed under clothing classes (images of no class).
    """
    root = tmp_path_factory.mktemp("planted") / "images"
    for name in CLASSES:
        (root / name).mkdir(parents=True)
        for f in sorted((SAMPLE / name).glob("*.png"))[:PER_CLASS]:
            shutil.copy(f, root / name / f.name)
    bag = sorted((root / "Bag").glob("*.png"))[3]
    moved = np.roll(np.array(Image.open(bag).convert("L")), 1, axis=1)
    Image.fromarray(moved).save(root / "Coat" / "copy-of-bag.jpg", quality=70)
    trouser = sorted((root / "Trouser").glob("*.png"))[5]
    shutil.copy(trouser, root / "Trouser" / "twin.png")
    for digit, folder in (("3", "Sandal"), ("7", "Dress"), ("0", "Bag")):
        _digit(digit).save(root / folder / f"digit-{digit}.png")
    Image.new("L", (28, 28), 0).save(root / "Sneaker" / "blank.png")
    return {
        "root": root,
        "bag": f"Bag/{bag.name}",
        "trouser": f"Trouser/{trouser.name}",
        "outliers": ["Sandal/digit-3.png", "Dress/digit-7.png", "Bag/digit-0.png", "Sneaker/blank.png"],
    }


def test_blockwise_neighbours_are_exact_and_exclude_the_sample_itself():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 16))
    indices, sims = nearest_neighbours(x, k=4, block_size=37)  # blocks that do not divide N
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    full = unit @ unit.T
    np.fill_diagonal(full, -np.inf)
    np.testing.assert_array_equal(indices, np.argsort(-full, axis=1, kind="stable")[:, :4])
    np.testing.assert_allclose(sims, np.sort(full, axis=1)[:, ::-1][:, :4], atol=1e-5)
    with pytest.raises(ValueError, match="NaN"):
        nearest_neighbours(np.full((3, 2), np.nan), k=1)


def test_aligned_difference_undoes_a_one_pixel_shift_and_a_brightness_offset():
    rng = np.random.default_rng(1)
    a = rng.integers(0, 200, size=(20, 20), dtype=np.uint8)
    shifted = np.roll(a, -1, axis=0)
    brighter = np.clip(a.astype(int) + 30, 0, 255).astype(np.uint8)
    other = rng.integers(0, 200, size=(20, 20), dtype=np.uint8)
    grey = np.stack([a, shifted, brighter, other])
    d = aligned_differences(grey, np.array([[0, 1], [0, 2], [0, 3]]))
    assert d[0] < 1e-4 and d[1] < 1e-4  # the overlap matches exactly at the right offset
    assert d[2] > 40  # a different picture
    # Larger images are compared at 32 px: an image and itself area-averaged stay identical.
    big = np.repeat(np.repeat(a[None, :, :, None], 4, axis=1), 4, axis=2)  # (1, 80, 80, 1)
    assert comparison_images(big).shape == (1, 32, 32)


def test_outlier_scores_rank_the_isolated_sample_last():
    rng = np.random.default_rng(2)
    x = np.concatenate([rng.normal(size=(100, 8)) + 10, -np.ones((1, 8)) * 10])
    result = outlier_scores(x, np.zeros(101, dtype=int), k=5)
    assert result["outlier_score"][100] == 1.0 and result["is_outlier"][100]
    assert result["is_outlier"].sum() <= 3


def test_planted_duplicates_and_outliers_are_found_from_the_images(planted, tmp_path):
    from labelaudit.data.images import load_images
    from labelaudit.data.sources import load_source

    store = load_images(load_source(planted["root"]), cache_dir=tmp_path / "cache")
    ids = store.table.samples["sample_id"].tolist()
    at = {s: i for i, s in enumerate(ids)}
    issues = find_similarity_issues(store.images(), store.table.samples["given_label"].to_numpy())
    groups = issues.duplicate_group
    copy, bag = at["Coat/copy-of-bag.jpg"], at[planted["bag"]]
    twin, trouser = at["Trouser/twin.png"], at[planted["trouser"]]
    assert groups[copy] >= 0 and groups[copy] == groups[bag]
    assert groups[twin] >= 0 and groups[twin] == groups[trouser]
    # nothing else is a near-copy
    assert sorted(ids[i] for i in np.flatnonzero(groups >= 0)) == sorted(
        [ids[copy], ids[bag], ids[twin], ids[trouser]]
    )
    assert issues.duplicate_of[copy] == bag and issues.duplicate_of[twin] == trouser
    assert issues.duplicate_conflict[copy] and issues.duplicate_conflict[bag]
    assert not issues.duplicate_conflict[twin]  # same label: a duplicate, not a conflict
    assert (
        issues.exact_duplicate[twin] and issues.exact_duplicate[trouser] and not issues.exact_duplicate[copy]
    )
    assert issues.duplicate_similarity[twin] == 1.0 and 0.9 < issues.duplicate_similarity[copy] < 1.0
    assert (issues.n_duplicate_groups, issues.n_duplicate_conflicts) == (2, 1)
    # Outliers from grey thumbnails: the blank frame is the most isolated image, each digit among
    # the 3% least like the rest (about 11 of 365; the thin digits resemble sandal straps).
    assert issues.outlier_score[at["Sneaker/blank.png"]] == 1.0 and issues.is_outlier[at["Sneaker/blank.png"]]
    assert all(issues.outlier_score[at[s]] >= 0.97 for s in planted["outliers"]), {
        s: issues.outlier_score[at[s]] for s in planted["outliers"]
    }


def test_scan_reports_duplicates_and_outliers_and_leaves_the_inputs_alone(planted, tmp_path, capsys):
    before = _snapshot(planted["root"])
    out = tmp_path / "run"
    code, stdout, stderr = run_cli(
        ["scan", planted["root"], "--out", out, "--budget", "0.1", "--json", "--quiet"], capsys
    )
    assert code == 0, stderr
    summary = json.loads(stdout)
    assert _snapshot(planted["root"]) == before
    assert summary["n_duplicate_groups"] == 2 and summary["n_duplicate_conflicts"] == 1
    assert (
        summary["similarity"]["searched"]
        and summary["similarity"]["features"]["duplicate_candidates"] == "penultimate+thumbnails"
    )
    assert 0.9 < summary["similarity"]["duplicate_threshold"] < 1.0
    report = pd.read_csv(out / "report.csv", keep_default_na=False)
    row = report.set_index("sample_id")
    assert row.loc["Coat/copy-of-bag.jpg", "duplicate_of"] == planted["bag"]
    assert row.loc["Coat/copy-of-bag.jpg", "duplicate_conflict"] in (True, "True")
    assert "duplicate_conflict" in row.loc["Coat/copy-of-bag.jpg", "reason"].split(";")
    assert row.loc["Trouser/twin.png", "duplicate_of"] == planted["trouser"]
    assert (report["duplicate_of"] != "").sum() == 4  # the two pairs, each pointing at the other
    outliers = set(report.loc[report["is_outlier"].astype(str) == "True", "sample_id"])
    assert summary["n_outliers"] == len(outliers) >= 1
    assert outliers <= set(planted["outliers"]), outliers  # no piece of clothing is called an outlier
    flagged = pd.read_csv(out / "flagged.csv", keep_default_na=False)
    listed = set(flagged["sample_id"])
    assert {"Coat/copy-of-bag.jpg", planted["bag"]} <= listed and outliers <= listed
    assert set(flagged["reason"]) - {""} and (flagged["reason"] != "").all()
    # Outliers are left out of the noise rate: it is the mean p_label_wrong of the other samples.
    kept = report["is_outlier"].astype(str) != "True"
    assert summary["estimated_noise_rate"] == pytest.approx(
        report.loc[kept, "p_label_wrong"].mean(), rel=1e-6
    )
    # Class overlap names the pair the conflicting copy straddles.
    assert any(
        sorted(o["classes"]) == ["Bag", "Coat"] and o["duplicate_groups_across"] == 1
        for o in summary["class_overlap"]
    )


def test_no_similarity_and_a_fixed_threshold(planted, tmp_path, capsys):
    code, stdout, stderr = run_cli(
        [
            "scan",
            planted["root"],
            "--out",
            tmp_path / "off",
            "--budget",
            "0.05",
            "--no-similarity",
            "--json",
            "--quiet",
        ],
        capsys,
    )
    assert code == 0, stderr
    summary = json.loads(stdout)
    assert summary["similarity"] == {"searched": False, "skipped": "turned off (--no-similarity)"}
    assert summary["n_outliers"] is None
    assert "duplicate_of" not in pd.read_csv(tmp_path / "off" / "report.csv").columns
    # A threshold of 1 (identical grey levels) keeps the exact duplicate and drops the JPEG copy.
    code, stdout, stderr = run_cli(
        [
            "scan",
            planted["root"],
            "--out",
            tmp_path / "exact",
            "--budget",
            "0.05",
            "--duplicate-threshold",
            "1",
            "--json",
            "--quiet",
        ],
        capsys,
    )
    assert code == 0, stderr
    assert json.loads(stdout)["n_duplicate_groups"] == 1


def test_label_studio_export_carries_the_reason(planted, tmp_path, capsys):
    out = tmp_path / "run"
    assert run_cli(["scan", planted["root"], "--out", out, "--budget", "0.05", "--quiet"], capsys)[0] == 0
    code, _, stderr = run_cli(
        [
            "export",
            out,
            "--format",
            "label-studio",
            "--out",
            tmp_path / "ls",
            "--document-root",
            planted["root"].parent,
        ],
        capsys,
    )
    assert code == 0, stderr
    tasks = json.loads((tmp_path / "ls" / "tasks.json").read_text())
    by_id = {t["data"]["sample_id"]: t["data"] for t in tasks}
    copy = by_id["Coat/copy-of-bag.jpg"]
    assert "duplicate_conflict" in copy["reason"].split(";") and copy["duplicate_of"] == planted["bag"]
    assert all(
        set(t["data"]["reason"].split(";")) <= {"label", "ambiguous", "duplicate_conflict", "outlier"}
        for t in tasks
    )


def test_review_page_duplicates_and_outliers_views_in_a_real_browser(planted, tmp_path, capsys, browser):  # noqa: F811 (the fixture)
    """The review page in Chromium: the near-duplicates view shows the conflicting pair side by side
    with both labels; "keep this, remove its copies" decides the whole group; the outliers view
    lists the blank frame first; apply takes the exported decisions."""
    from selenium.webdriver.support.ui import Select
    from test_review_page import card_for, card_ids, open_page, severe_logs

    out = tmp_path / "run"
    assert run_cli(["scan", planted["root"], "--out", out, "--budget", "0.1", "--quiet"], capsys)[0] == 0
    assert run_cli(["review", out], capsys)[0] == 0
    report = pd.read_parquet(out / "report.parquet")
    open_page(browser, out / "review" / "index.html")
    assert severe_logs(browser) == []
    listed = report[report["reason"] != ""].sort_values("rank", kind="stable")
    assert card_ids(browser) == listed["sample_id"].tolist()  # everything listed, worst label first

    view = Select(browser.find_element("id", "filter-view"))
    assert [o.text for o in view.options][3] == "near-duplicates with another label (2)"
    view.select_by_value("duplicate_conflict")
    # the pair, side by side
    assert sorted(card_ids(browser)) == sorted(["Coat/copy-of-bag.jpg", planted["bag"]])
    copy = card_for(browser, "Coat/copy-of-bag.jpg")
    assert copy.find_element("css selector", ".partner-id").text == planted["bag"]
    assert copy.find_element("css selector", ".partner-given").text == "Bag"
    assert copy.find_element("css selector", ".label.given").text == "Coat"
    card_for(browser, planted["bag"]).find_element(
        "css selector", "button[data-group-action='keep-one']"
    ).click()
    assert card_for(browser, planted["bag"]).find_element("css selector", ".state").text == "kept \u2192 Bag"
    assert copy.find_element("css selector", ".state").text == "remove from dataset"
    # The group's decision is one undo step (issue 28): Backspace takes back both cards, then redo it.
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    ActionChains(browser).send_keys(Keys.BACKSPACE).perform()
    assert card_for(browser, planted["bag"]).find_element("css selector", ".state").text == "undecided"
    assert copy.find_element("css selector", ".state").text == "undecided"
    assert browser.find_element("id", "status").text.endswith(
        "and 1 more back to undecided (0 more steps to undo)."
    )
    card_for(browser, planted["bag"]).find_element(
        "css selector", "button[data-group-action='keep-one']"
    ).click()
    assert copy.find_element("css selector", ".state").text == "remove from dataset"

    view.select_by_value("outlier")
    outliers = (
        report[report["is_outlier"]].sort_values("outlier_score", ascending=False)["sample_id"].tolist()
    )
    assert card_ids(browser) == outliers and outliers[0] == "Sneaker/blank.png"
    card_for(browser, "Sneaker/blank.png").find_element(
        "css selector", "button[data-decision='remove']"
    ).click()
    overlap = browser.find_element("id", "overlap").get_attribute("textContent")
    assert "Bag \u2194 Coat" in overlap or "Coat \u2194 Bag" in overlap

    browser.find_element("id", "export").click()
    target = browser.downloads / "decisions.csv"
    deadline = __import__("time").time() + 30
    while not target.exists() and __import__("time").time() < deadline:
        __import__("time").sleep(0.1)
    decisions = pd.read_csv(target, keep_default_na=False).set_index("sample_id")
    assert decisions.loc["Coat/copy-of-bag.jpg", "decision"] == "remove"
    assert decisions.loc[planted["bag"], "decision"] == "keep"
    code, _, err = run_cli(["apply", out, target, "--out", tmp_path / "cleaned"], capsys)
    assert code == 0, err
    cleaned = pd.read_parquet(tmp_path / "cleaned" / "cleaned.parquet").set_index("sample_id")
    assert "Coat/copy-of-bag.jpg" not in cleaned.index and "Sneaker/blank.png" not in cleaned.index
    assert cleaned.loc[planted["bag"], "label"] == "Bag"
    target.unlink()  # the module's browser is shared: leave its download folder empty
