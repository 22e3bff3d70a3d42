"""Issue 12, item 1: ``labelaudit review RUN`` and the review page it writes.

The page is tested as a reviewer uses it: opened from disk (``file://``) in Debian's headless
Chromium driven by selenium, on the review of a real scan of a tiny image folder whose class
names include ``<img src=x onerror=alert(1)>`` and ``=SUM(1,2)``. Browser tests skip, naming
what is missing, where chromium, chromedriver or selenium are not installed (``make test-tools``
installs the browser; selenium comes with the ``test`` extra). The other tests need no browser.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import make_noisy_pattern_dataset
from conftest import run_cli as run
from PIL import Image

from labelaudit.cli import main
from labelaudit.data.sources import read_table
from labelaudit.reports import escape_cell
from labelaudit.review.decisions import SOURCE_COLUMNS
from labelaudit.review.page import HISTOGRAM_BINS, PAGE_SIZE, ReviewData, page_data
from labelaudit.review.page_data import p_wrong_edges, read_review_data, slider_edges, slider_histogram
from labelaudit.runs.directory import FolderLock

XSS = "<img src=x onerror=alert(1)>"
FORMULA = "=SUM(1,2)"
SCAN = ["--method", "ce", "--budget", "0.3", "--width", "8", "--quiet"]
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")


def one_line_error(err: str, fragment: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("labelaudit: error: ") and fragment in lines[0], err


def snapshot(folder: Path, skip: str | None = None) -> dict[str, bytes]:
    """Every file under ``folder`` (relative name -> bytes), leaving out the subfolder ``skip``."""
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not (skip and p.relative_to(folder).parts[0] == skip)
    }


@pytest.fixture(scope="module")
def scanned(tmp_path_factory):
    """A real scan of 120 pattern images in 4 classes, two of them named like markup and a formula."""
    base = tmp_path_factory.mktemp("review")
    root = base / "data"
    make_noisy_pattern_dataset(root, per_class=30, noise_rate=0.25, seed=3)
    os.rename(root / "horizontal", root / XSS)
    os.rename(root / "vertical", root / FORMULA)
    with pytest.raises(SystemExit) as done:
        main(["scan", str(root), "--out", str(base / "run"), "--cache-dir", str(base / "cache"), *SCAN])
    assert done.value.code == 0
    report = pd.read_parquet(base / "run" / "report.parquet")
    assert report["suspected_noisy"].sum() >= 10, "the fixture scan should flag some samples"
    return {"base": base, "root": root, "run": base / "run", "report": report}


@pytest.fixture
def run_copy(scanned, tmp_path):
    """A copy of the scanned run directory that a test may change."""
    copy = tmp_path / "run"
    shutil.copytree(scanned["run"], copy)
    return copy


def load_page_data(review: Path) -> dict:
    text = (review / "data.js").read_text(encoding="utf-8")
    prefix = "window.LABELAUDIT_REVIEW = "
    assert text.startswith(prefix) and text.rstrip().endswith(";")
    return json.loads(text[len(prefix) :].rstrip().rstrip(";"))  # strict JSON inside


# ---- the folder, without a browser ------------------------------------------------------------


def test_review_writes_a_self_contained_folder(scanned, run_copy, capsys):
    images_before = snapshot(scanned["root"])
    run_before = snapshot(run_copy)
    code, out, err = run(["review", run_copy, "--thumb-size", "64"], capsys)
    assert code == 0, err
    review = run_copy / "review"
    assert f"Open in a browser: {review / 'index.html'}" in out
    report = scanned["report"]
    flagged = report[report["suspected_noisy"] | report["is_ambiguous"]].sort_values("rank")  # listed
    data = load_page_data(review)
    assert data["samples"]["id"] == flagged["sample_id"].tolist()  # worst first
    assert data["classes"][0] == XSS and data["num_flagged"] == len(flagged) == len(data["samples"]["id"])
    thumbs = sorted(review.glob("thumbs/*.jpg"))
    assert len(thumbs) == len(flagged) and all(data["samples"]["thumb"])
    with Image.open(thumbs[0]) as img:
        assert img.format == "JPEG" and max(img.size) <= 64
    # The slider acts on p_label_wrong: its histogram counts every sample (flagged or not) above
    # each step of its logit scale, which has the scan's rule (p > 0.5) as its middle step.
    p_wrong = report["p_label_wrong"].to_numpy()
    assert data["slider_column"] == "p_label_wrong" and data["slider_flags"] == "above"
    edges = np.array(data["slider_edges"])
    assert len(edges) == len(data["histogram"]) == HISTOGRAM_BINS + 1
    assert edges[0] == 0 and edges[-1] == 1 and (np.diff(edges) > 0).all()
    assert edges[HISTOGRAM_BINS // 2] == 0.5
    for step in (0, 1, 250, HISTOGRAM_BINS // 2, 900, HISTOGRAM_BINS):
        assert data["histogram"][step] == int((p_wrong > edges[step]).sum())
    logit = np.log(edges[1:-1] / (1 - edges[1:-1]))
    assert np.allclose(np.diff(logit), np.diff(logit)[0], rtol=1e-3)  # evenly spaced in logit(p)
    odds = np.abs(np.log10(p_wrong / (1 - p_wrong)))
    assert edges[1] <= p_wrong.min() and np.log10(edges[-2] / (1 - edges[-2])) - 1 < odds.max()
    # It starts at the scan's rule, p_label_wrong > 0.5, keeping every listed suspect label.
    # This scan flagged by the mixture rule on label quality: the slider starts at the step just
    # below the least p_label_wrong of a listed suspect label (test_slider_start_... has the other rule).
    suspect = [p for p, r in zip(data["samples"]["p_label_wrong"], data["samples"]["reason"]) if r == "label"]
    assert edges[data["threshold"]] < min(suspect) <= edges[data["threshold"] + 1]
    assert data["samples"]["p_label_wrong"] == flagged["p_label_wrong"].tolist()
    assert data["samples"]["label_quality"] is None  # only a scan without p_label_wrong needs it
    # No network: nothing refers to another host, and the page forbids it.
    for name in ("index.html", "review.js", "review.css"):
        text = (review / name).read_text(encoding="utf-8")
        assert "http://" not in text and "https://" not in text and "//cdn" not in text, name
    script = (review / "review.js").read_text(encoding="utf-8")
    assert not re.search(r"\.(innerHTML|outerHTML)\s*=|insertAdjacentHTML|document\.write", script)
    assert "default-src 'none'" in (review / "index.html").read_text(encoding="utf-8")
    # Only review/ was added; the images were not touched; no temporary or lock left behind.
    assert snapshot(run_copy, skip="review") == run_before
    assert snapshot(scanned["root"]) == images_before
    assert sorted(p.name for p in run_copy.parent.iterdir()) == ["run"]
    assert not [
        p for p in run_copy.iterdir() if p.name.startswith(".") and p.name != ".labelaudit-output.json"
    ]


def test_an_unreadable_image_gets_a_placeholder_not_an_error(run_copy, tmp_path, capsys):
    report = pd.read_parquet(run_copy / "report.parquet")
    # labels, duplicates, outliers
    flagged = report[report["reason"] != ""].sort_values("rank", kind="stable")
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"not an image at all")
    report.loc[flagged.index[0], "path"] = str(garbage)
    # the fingerprint covers ids and labels only
    report.loc[flagged.index[1], "path"] = str(tmp_path / "gone.png")
    report.to_parquet(run_copy / "report.parquet", index=False)
    code, out, err = run(["review", run_copy], capsys)
    assert code == 0, err
    assert "2 images could not be read" in out
    review = run_copy / "review"
    data = load_page_data(review)
    assert data["samples"]["thumb"][:3] == [0, 0, 1] and data["num_unreadable"] == 2
    listed = read_table(review / "unreadable.csv", "unreadable list")
    assert listed["sample_id"].tolist() == flagged["sample_id"].tolist()[:2]
    assert listed["reason"].tolist() == ["not_an_image", "missing"]
    assert not (review / "thumbs" / "0.jpg").exists() and (review / "thumbs" / "2.jpg").exists()


def test_an_earlier_review_is_replaced_only_with_overwrite_and_never_with_foreign_files(run_copy, capsys):
    assert run(["review", run_copy], capsys)[0] == 0
    first = snapshot(run_copy / "review")
    code, _, err = run(["review", run_copy], capsys)
    assert code == 2
    one_line_error(err, "pass --overwrite")
    assert snapshot(run_copy / "review") == first
    (run_copy / "review" / "thumbs" / "stale.jpg").write_bytes(b"x")
    code, _, err = run(["review", run_copy, "--overwrite", "--limit", "3"], capsys)
    assert code == 0, err
    assert sorted(p.name for p in (run_copy / "review" / "thumbs").iterdir()) == ["0.jpg", "1.jpg", "2.jpg"]
    (run_copy / "review" / "decisions.csv").write_text("sample_id,decision,new_label,note\n")
    code, _, err = run(["review", run_copy, "--overwrite"], capsys)
    assert code == 2
    one_line_error(err, "holds files a review does not write (decisions.csv)")
    assert (run_copy / "review" / "decisions.csv").exists()


@pytest.mark.parametrize("case", ["missing", "empty", "no report", "not a scan", "mixed"])
def test_a_missing_or_incomplete_run_directory_is_a_one_line_error(run_copy, tmp_path, capsys, case):
    target = run_copy
    if case == "missing":
        target, fragment = tmp_path / "nothing", "does not exist"
    elif case == "empty":
        target, fragment = tmp_path / "empty", "not a complete scan run directory"
        target.mkdir()
    elif case == "no report":
        (run_copy / "report.parquet").unlink()
        fragment = "missing report.parquet"
    elif case == "not a scan":
        summary = json.loads((run_copy / "summary.json").read_text())
        (run_copy / "summary.json").write_text(json.dumps({**summary, "kind": "retrain"}))
        fragment = "not of a scan"
    else:
        summary = json.loads((run_copy / "summary.json").read_text())
        (run_copy / "summary.json").write_text(json.dumps({**summary, "data_fingerprint": "sha256:0"}))
        fragment = "do not belong to the same scan"
    code, _, err = run(["review", target], capsys)
    assert code == 2
    one_line_error(err, fragment)
    assert not (target / "review").exists()


def test_a_locked_run_directory_fails_at_once(run_copy, capsys):
    lock = FolderLock(run_copy.resolve(), "--out")
    lock.acquire()
    try:
        code, _, err = run(["review", run_copy], capsys)
    finally:
        lock.release()
    assert code == 2
    one_line_error(err, "another labelaudit process is writing")
    assert not (run_copy / "review").exists()


def test_a_review_killed_before_the_rename_leaves_the_earlier_review_whole(run_copy, capsys):
    assert run(["review", run_copy, "--limit", "2"], capsys)[0] == 0
    before = snapshot(run_copy / "review")
    # A real SIGKILL, sent by the review process to itself after the thumbnails are written.
    script = (
        "import os, signal, sys\n"
        "import labelaudit.review.page as review\n"
        "def killed(*args, **kwargs):\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        "review.page_data = killed\n"
        "review.write_review(sys.argv[1], overwrite=True)\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(run_copy)], capture_output=True, timeout=120)
    assert done.returncode == -signal.SIGKILL
    assert snapshot(run_copy / "review") == before
    leftovers = [p for p in run_copy.iterdir() if p.name.startswith(".review.")]
    assert len(leftovers) == 1 and (leftovers[0] / "thumbs").is_dir()
    assert run(["review", run_copy, "--overwrite"], capsys)[0] == 0
    assert not [
        p for p in run_copy.iterdir() if p.name.startswith(".") and p.name != ".labelaudit-output.json"
    ]


def test_review_constants_match_the_scanner():
    from labelaudit.pipeline import scan_outputs as scanner  # the writer of a scan run
    from labelaudit.review import page as review

    assert review.RUN_FORMAT_VERSION == scanner.RUN_FORMAT_VERSION  # one source now: labelaudit.runs.format
    assert review.MATRIX_FILES["cleaned"] == scanner.MATRIX_FILES["cleaned"] == "transition_matrix.csv"


# ---- the page in a real browser ---------------------------------------------------------------


def _browser_missing() -> str | None:
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[test]')"
    for program, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not program.exists():
            return f"{program} is missing (Debian package {package}; `make test-tools` installs it as root)"
    return None


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """Headless Debian Chromium via chromedriver, a fresh profile, downloads into ``browser.downloads``."""
    missing = _browser_missing()
    if missing:
        pytest.skip(f"review page browser tests need a browser: {missing}")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tmp_path_factory.mktemp("chromium-profile")
    downloads = tmp_path_factory.mktemp("downloads")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
        "--window-size=1400,1000",
    ):
        options.add_argument(flag)
    options.add_experimental_option(
        "prefs", {"download.default_directory": str(downloads), "download.prompt_for_download": False}
    )
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    driver.execute_cdp_cmd(
        "Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)}
    )
    driver.downloads = downloads
    yield driver
    driver.quit()


def open_page(driver, index: Path) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(index.resolve().as_uri())
    WebDriverWait(driver, 30).until(
        lambda d: d.execute_script("return document.body.getAttribute('data-ready')") == "1"
    )


def severe_logs(driver) -> list[dict]:
    return [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def cards(driver) -> list:
    return driver.find_elements("css selector", "#grid .card")


def card_ids(driver) -> list[str]:
    """The sample ids on every page of the grid, in order (pages through and back to the first)."""
    ids = []
    while True:
        ids += [card.get_attribute("data-sample-id") for card in cards(driver)]
        following = driver.find_element("css selector", ".next-page")
        if not following.is_enabled():
            break
        following.click()
    while driver.find_element("css selector", ".prev-page").is_enabled():
        driver.find_element("css selector", ".prev-page").click()
    return ids


def card_for(driver, sample_id: str):
    return next(c for c in cards(driver) if c.get_attribute("data-sample-id") == sample_id)


def expected_csv(rows: list[list[str]]) -> str:
    """decisions.csv as the contract says: escaped formula cells, minimal CSV quoting, "\\n" line ends;
    a row of 4 cells is a manual decision (source manual, no spot-check)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["sample_id", "decision", "new_label", "note", *SOURCE_COLUMNS])
    for row in rows:
        writer.writerow(
            [escape_cell(str(value)) for value in (row + ["manual", "", ""] if len(row) == 4 else row)]
        )
    return buffer.getvalue()


def test_review_page_in_a_real_browser(scanned, run_copy, browser, capsys):
    from selenium.common.exceptions import NoAlertPresentException
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select, WebDriverWait

    assert run(["review", run_copy], capsys)[0] == 0
    index = run_copy / "review" / "index.html"
    open_page(browser, index)
    assert severe_logs(browser) == []
    report = scanned["report"]
    # labels, duplicates, outliers
    flagged = report[report["reason"] != ""].sort_values("rank", kind="stable")
    classes = json.loads((run_copy / "summary.json").read_text())["class_names"]
    assert card_ids(browser) == flagged["sample_id"].tolist()  # worst first, over all pages

    # The markup-like class name is text everywhere: in the lists, the matrix and the cards.
    assert XSS in [o.text for o in Select(browser.find_element("id", "filter-given")).options]
    assert XSS in [
        th.get_attribute("textContent") for th in browser.find_elements("css selector", "table.matrix th")
    ]
    if (flagged["given_label"] == XSS).any() or (flagged["suggested_label"] == XSS).any():
        assert XSS in [e.text for e in browser.find_elements("css selector", ".card .label")]
    sources = browser.execute_script("return Array.from(document.images, i => i.getAttribute('src'))")
    assert sources and all(s.startswith(("thumbs/", "plots/")) for s in sources), sources
    assert browser.execute_script("return document.querySelectorAll('[onerror]').length") == 0
    with pytest.raises(NoAlertPresentException):
        browser.switch_to.alert.text

    # A cell of T (true i, given j) lists exactly the flagged samples given j with suggestion i.
    off = flagged[flagged["given_label"] != flagged["suggested_label"]]
    pairs = off.groupby(["suggested_label", "given_label"]).size().sort_values(ascending=False, kind="stable")
    (true_name, given_name), count = pairs.index[0], int(pairs.iloc[0])
    assert count >= 3, f"the fixture scan should confuse one pair at least 3 times; got {pairs.to_dict()}"
    cell = browser.find_element(
        "css selector",
        "table.matrix "
        f"button[data-true='{classes.index(true_name)}'][data-given='{classes.index(given_name)}']",
    )
    cell.click()
    matching = flagged[(flagged["given_label"] == given_name) & (flagged["suggested_label"] == true_name)]
    assert card_ids(browser) == matching["sample_id"].tolist()
    assert Select(browser.find_element("id", "filter-given")).first_selected_option.text == given_name
    assert "selected" in cell.get_attribute("class")

    # Three decisions: by key (j selects the first card, a accepts and moves on), by click, and
    # another class from the card's list, with a note typed after the key n.
    first, second, third = matching["sample_id"].tolist()[:3]
    other = next(name for name in [FORMULA, *classes] if name not in (given_name, true_name))
    note = '=1+1, "looks like a <b>boot</b>"'
    ActionChains(browser).send_keys("j").send_keys("a").perform()
    assert "current" in card_for(browser, second).get_attribute("class")  # moved on after the decision
    card_for(browser, second).find_element("css selector", "button[data-decision='remove']").click()
    card_for(browser, third).find_element("css selector", "button.pick").click()
    card_for(browser, third).find_element(
        "css selector", f".picker button[data-class='{classes.index(other)}']"
    ).click()
    card_for(browser, third).find_element("css selector", ".meta").click()
    ActionChains(browser).send_keys("n").send_keys(note).send_keys(Keys.ENTER).perform()
    assert (
        card_for(browser, first).find_element("css selector", ".state").text == f"accepted \u2192 {true_name}"
    )
    assert card_for(browser, second).find_element("css selector", ".state").text == "remove from dataset"
    assert (
        card_for(browser, third).find_element("css selector", ".state").text == f"relabelled \u2192 {other}"
    )
    total = len(flagged)
    assert browser.find_element("id", "decided-count").text == f"3 decided \u00b7 {total - 3} undecided"

    # Decisions persist in the browser: reload, they are still there.
    browser.refresh()
    WebDriverWait(browser, 30).until(
        lambda d: d.execute_script("return document.body.getAttribute('data-ready')") == "1"
    )
    assert browser.find_element("id", "decided-count").text == f"3 decided \u00b7 {total - 3} undecided"
    Select(browser.find_element("id", "filter-state")).select_by_value("decided")
    assert sorted(card_ids(browser)) == sorted([first, second, third])
    assert card_for(browser, third).find_element("css selector", "input.note").get_attribute("value") == note
    assert "on" in card_for(browser, second).find_element(
        "css selector", "button[data-decision='remove']"
    ).get_attribute("class")

    # Export: the downloaded decisions.csv, byte for byte, and read back as labelaudit reads it.
    browser.find_element("id", "export").click()
    target = browser.downloads / "decisions.csv"
    deadline = time.time() + 30
    while not target.exists() and time.time() < deadline:
        time.sleep(0.1)
    assert target.exists(), list(browser.downloads.iterdir())
    rows = {
        first: [first, "accept", true_name, ""],
        second: [second, "remove", "", ""],
        third: [third, "relabel", other, note],
    }
    ordered = [rows[i] for i in flagged["sample_id"] if i in rows]  # the export follows the rank
    assert target.read_text(encoding="utf-8") == expected_csv(ordered)
    back = read_table(target, "decisions")
    assert back.fillna("").values.tolist() == [row + ["manual", "", ""] for row in ordered]
    assert severe_logs(browser) == []

    # The loop closes: apply takes the page's file as it is.
    cleaned_dir = run_copy.parent / "cleaned"
    code, _, err = run(["apply", run_copy, target, "--out", cleaned_dir], capsys)
    assert code == 0, err
    cleaned = pd.read_parquet(cleaned_dir / "cleaned.parquet").set_index("sample_id")
    assert cleaned.loc[first, "label"] == true_name and cleaned.loc[first, "label_source"] == "reviewed"
    assert cleaned.loc[third, "label"] == other and second not in cleaned.index
    # CSVs escape "="
    assert read_table(cleaned_dir / "removed.csv", "removed")["sample_id"].tolist() == [second]
    browser.save_screenshot(str(scanned["base"] / "review.png"))  # kept with the test's files for a look


def stored(driver) -> dict:
    """The review page's localStorage entry (decisions and undo history), as JSON."""
    return driver.execute_script(
        "const k = Object.keys(localStorage).find(k => k.startsWith('labelaudit-review:'));"
        "return k ? JSON.parse(localStorage.getItem(k)) : null;"
    )


def fresh_review(driver, run_dir: Path, capsys) -> Path:
    """Write the run's review page and open it with no decisions left from another test."""
    if not (run_dir / "review").exists():
        assert run(["review", run_dir], capsys)[0] == 0
    index = run_dir / "review" / "index.html"
    open_page(driver, index)
    driver.execute_script("localStorage.clear()")
    open_page(driver, index)
    return index


def state_of(driver, sample_id: str) -> str:
    return card_for(driver, sample_id).find_element("css selector", ".state").text


def test_class_picker_keeps_the_image_in_view_and_records_the_chosen_class(
    scanned, run_copy, browser, capsys
):
    """Issue 28 A: c opens a list inside the card under the image; Down/Enter on the suggested
    class records relabel to it (not accept); Enter with nothing highlighted records nothing."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    fresh_review(browser, run_copy, capsys)
    report = scanned["report"]
    flagged = report[report["reason"] != ""].sort_values("rank", kind="stable")
    classes = json.loads((run_copy / "summary.json").read_text())["class_names"]
    first, second = flagged["sample_id"].iloc[:2]
    given, suggested = flagged["given_label"].iloc[0], flagged["suggested_label"].iloc[0]
    ActionChains(browser).send_keys("j").send_keys("c").perform()
    card = card_for(browser, first)
    picker = card.find_element("css selector", ".picker")
    assert picker.is_displayed()
    assert browser.switch_to.active_element == picker.find_element("css selector", "input.picker-filter")
    # The thumbnail stays visible: nothing covers its centre, and the list lies below it.
    covered = browser.execute_script(
        "const img = arguments[0].querySelector('.thumb-box img'); const r = img.getBoundingClientRect();"
        "const top = document.elementFromPoint(r.left + r.width / 2, r.top + r.height / 2);"
        "return [top === img, arguments[1].getBoundingClientRect().top >= r.bottom];",
        card,
        picker,
    )
    assert covered == [True, True]
    entries = [b.text for b in picker.find_elements("css selector", "button.pick-class")]
    assert len(entries) == len(classes)
    assert entries[classes.index(suggested)] == f"{classes.index(suggested) + 1} {suggested} (suggested)"
    ActionChains(browser).send_keys(Keys.ENTER).perform()  # nothing highlighted: no decision
    assert state_of(browser, first) == "undecided" and picker.is_displayed()
    ActionChains(browser).send_keys(*[Keys.ARROW_DOWN] * (classes.index(suggested) + 1)).perform()
    ActionChains(browser).send_keys(Keys.ENTER).perform()
    assert not picker.is_displayed()
    assert state_of(browser, first) == f"relabelled \u2192 {suggested}"
    assert stored(browser)["decisions"][first] == ["relabel", suggested, "", ""]
    assert "current" in card_for(browser, second).get_attribute("class")  # moved on, as other keys do
    # Typing narrows the list; one match is highlighted and Enter takes it; Esc closes without a decision.
    ActionChains(browser).send_keys("c").perform()
    ActionChains(browser).send_keys(Keys.ESCAPE).perform()
    assert state_of(browser, second) == "undecided"
    assert not card_for(browser, second).find_element("css selector", ".picker").is_displayed()
    card.find_element("css selector", "button.pick").click()  # opened by its button, then another card's by c
    assert picker.is_displayed()
    card_for(browser, second).find_element("css selector", ".meta").click()
    ActionChains(browser).send_keys("c").perform()
    assert not picker.is_displayed()  # one list open at a time
    ActionChains(browser).send_keys(given[:-1] if given == FORMULA else given).perform()
    visible = card_for(browser, second).find_elements("css selector", ".picker button.pick-class")
    assert [b.get_attribute("data-class") for b in visible] == [str(classes.index(given))]
    ActionChains(browser).send_keys(Keys.ENTER).perform()
    assert state_of(browser, second) == f"relabelled \u2192 {given}"
    # A digit key records relabel too, even to the given class.
    third = flagged["sample_id"].iloc[2]
    third_given = flagged["given_label"].iloc[2]
    ActionChains(browser).send_keys(str(classes.index(third_given) + 1)).perform()
    assert stored(browser)["decisions"][third] == ["relabel", third_given, "", ""]
    assert severe_logs(browser) == []


def test_undo_restores_the_previous_decision_several_steps_deep(scanned, run_copy, browser, capsys):
    """Issue 28 A: Backspace and Ctrl+Z restore the previous decision of the last changed card, step
    by step, also after a reload (the stack is stored with the decisions)."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    index = fresh_review(browser, run_copy, capsys)
    flagged = scanned["report"][scanned["report"]["reason"] != ""].sort_values("rank", kind="stable")
    first, second = flagged["sample_id"].iloc[:2]
    suggested = flagged["suggested_label"].iloc[0]
    given2 = flagged["given_label"].iloc[1]
    # first: accept; second: keep, then remove, then unsure (three changes of one card).
    ActionChains(browser).send_keys("j", "a", "g", "k", "r", "k", "u").perform()
    assert (
        state_of(browser, first) == f"accepted \u2192 {suggested}" and state_of(browser, second) == "unsure"
    )
    assert len(stored(browser)["history"]) == 4
    browser.refresh()  # the undo history survives a reload, as the decisions do
    open_page(browser, index)
    ActionChains(browser).send_keys(Keys.BACKSPACE).perform()
    assert state_of(browser, second) == "remove from dataset"
    assert stored(browser)["decisions"][second] == ["remove", None, "", ""]
    assert "current" in card_for(browser, second).get_attribute("class")
    ActionChains(browser).key_down(Keys.CONTROL).send_keys("z").key_up(Keys.CONTROL).perform()
    assert state_of(browser, second) == f"kept \u2192 {given2}"
    assert stored(browser)["decisions"][second] == ["keep", None, "", ""]
    ActionChains(browser).send_keys(Keys.BACKSPACE).perform()
    assert state_of(browser, second) == "undecided" and second not in stored(browser)["decisions"]
    assert state_of(browser, first) == f"accepted \u2192 {suggested}"
    ActionChains(browser).send_keys(Keys.BACKSPACE).perform()
    assert state_of(browser, first) == "undecided" and stored(browser)["decisions"] == {}
    ActionChains(browser).send_keys(Keys.BACKSPACE).perform()
    assert browser.find_element("id", "status").text == "Nothing to undo."
    assert browser.find_element("id", "decided-count").text.startswith("0 decided")
    # Ctrl+Z inside a note is the text field's own undo, not a decision's.
    ActionChains(browser).send_keys("g", "k", "n", "abc").perform()
    ActionChains(browser).key_down(Keys.CONTROL).send_keys("z").key_up(Keys.CONTROL).perform()
    assert state_of(browser, first) == f"kept \u2192 {flagged['given_label'].iloc[0]}"
    # An undo step whose card changed elsewhere (another tab) is refused and the stack cleared.
    ActionChains(browser).send_keys(Keys.ENTER, "r").perform()
    browser.execute_script(
        "const k = Object.keys(localStorage).find(k => k.startsWith('labelaudit-review:'));"
        "const v = JSON.parse(localStorage.getItem(k)); v.decisions[arguments[0]] = ['unsure', null, ''];"
        "localStorage.setItem(k, JSON.stringify(v));",
        first,
    )
    open_page(browser, index)
    assert state_of(browser, first) == "unsure"
    ActionChains(browser).send_keys(Keys.BACKSPACE).perform()
    assert state_of(browser, first) == "unsure" and stored(browser)["history"] == []
    assert browser.find_element("id", "status").text.startswith("Not undone")
    assert severe_logs(browser) == []


def test_importing_a_decisions_csv_resumes_a_review(scanned, run_copy, browser, capsys, tmp_path):
    """Issue 28 D: the page imports a decisions.csv (escaped cells, quoted notes) into its state, as one
    undo step; a file with an unknown sample id imports nothing and says why."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    fresh_review(browser, run_copy, capsys)
    flagged = scanned["report"][scanned["report"]["reason"] != ""].sort_values("rank", kind="stable")
    first, second, third = flagged["sample_id"].iloc[:3]
    suggested = flagged["suggested_label"].iloc[0]
    note = 'a, "quoted"\nsecond line'
    good = tmp_path / "alice.csv"
    rows = [[first, "accept", suggested, ""], [second, "relabel", FORMULA, note], [third, "remove", "", ""]]
    good.write_text(expected_csv(rows), encoding="utf-8")  # as the page and labelaudit write it
    assert "'=SUM" in good.read_text()
    ActionChains(browser).send_keys("j", "g").perform()  # a decision the import replaces
    browser.find_element("id", "import").send_keys(str(good))
    WebDriverWait(browser, 10).until(lambda d: d.find_element("id", "status").text.startswith("Imported"))
    assert browser.find_element("id", "status").text == (
        "Imported 3 decisions from alice.csv (3 changed on this page; Backspace undoes the import)."
    )
    assert state_of(browser, first) == f"accepted \u2192 {suggested}"
    assert state_of(browser, second) == f"relabelled \u2192 {FORMULA}"
    assert state_of(browser, third) == "remove from dataset"
    assert stored(browser)["decisions"][second] == ["relabel", FORMULA, note, ""]  # the line break kept
    shown = card_for(browser, second).find_element("css selector", "input.note").get_attribute("value")
    assert shown == note.replace("\n", "")  # a one-line field shows it without the break
    total = len(flagged)
    assert browser.find_element("id", "decided-count").text == f"3 decided \u00b7 {total - 3} undecided"
    # One undo step takes the whole import back (the earlier keep of the first card returns).
    ActionChains(browser).send_keys(Keys.BACKSPACE).perform()
    assert state_of(browser, first) == f"kept \u2192 {flagged['given_label'].iloc[0]}"
    assert state_of(browser, second) == state_of(browser, third) == "undecided"
    # A file with a problem imports nothing, and the message names it and its line.
    bad = tmp_path / "bad.csv"
    bad.write_text(
        expected_csv([[second, "remove", "", ""], ["nope/1.png", "keep", "", ""]]), encoding="utf-8"
    )
    browser.find_element("id", "import").send_keys(str(bad))
    WebDriverWait(browser, 10).until(lambda d: d.find_element("id", "status").text.startswith("Nothing"))
    assert browser.find_element("id", "status").text == (
        "Nothing imported from bad.csv: the sample_id \u201cnope/1.png\u201d on line 3 "
        "is not listed on this page."
    )
    assert state_of(browser, second) == "undecided"
    unknown = tmp_path / "unknown.csv"
    unknown.write_text(expected_csv([[second, "relabel", "zebra", ""]]), encoding="utf-8")
    browser.find_element("id", "import").send_keys(str(unknown))
    WebDriverWait(browser, 10).until(lambda d: "zebra" in d.find_element("id", "status").text)
    assert "is not a class of the scan" in browser.find_element("id", "status").text
    assert severe_logs(browser) == []


def test_neutral_labels_clear_empty_views_and_an_export_confirmation(scanned, run_copy, browser, capsys):
    """Issue 28 B: given and suggested labels in one neutral colour; an empty grid says whether nothing
    was found or filters hide it; exporting says how many decisions it wrote."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.support.ui import Select

    fresh_review(browser, run_copy, capsys)
    total = len(scanned["report"][scanned["report"]["reason"] != ""])
    colours = browser.execute_script(
        "return ['.label.given', '.label.suggested']"
        ".map(s => getComputedStyle(document.querySelector('#grid ' + s)).color)"
    )
    for colour in colours:
        rgb = [int(v) for v in re.findall(r"\d+", colour)[:3]]
        assert max(rgb) - min(rgb) <= 24, colours  # grey, not red or green
    assert colours[0] == colours[1]
    empty = browser.find_element("id", "empty")
    assert not empty.is_displayed()
    Select(browser.find_element("id", "filter-state")).select_by_value("decided")
    assert cards(browser) == [] and empty.text == (
        f"No sample matches these filters: the {total} samples listed are hidden by show decided. "
        "\u201cClear filters\u201d shows them again."
    )
    browser.find_element("id", "clear-filters").click()
    views = Select(browser.find_element("id", "filter-view"))
    none = next(o for o in views.options if o.text.endswith("(0)"))  # the fixture has no near-duplicates
    views.select_by_value(none.get_attribute("value"))
    assert empty.text == f"None found: the scan found no {none.text[: -len(' (0)')]}."
    browser.find_element("id", "clear-filters").click()
    browser.find_element("id", "export").click()
    assert browser.find_element("id", "status").text == (
        "Exported decisions.csv without decisions: nothing is decided yet."
    )
    ActionChains(browser).send_keys("j", "a", "r").perform()
    browser.find_element("id", "export").click()
    assert re.fullmatch(
        r"Exported 2 decisions to decisions\.csv \(in the browser's downloads\), at \d\d:\d\d:\d\d\.",
        browser.find_element("id", "status").text,
    )
    assert severe_logs(browser) == []


def test_slider_edges_give_small_label_qualities_most_steps():
    """Issue 28 C: with most flagged samples below 0.003 (as on a real scan), the log-scale slider
    gives that range hundreds of its steps where the linear one gave 3."""
    rng = np.random.default_rng(0)
    quality = np.concatenate([10 ** rng.uniform(-5, np.log10(0.003), 1000), rng.uniform(0.5, 1, 4000)])
    edges = slider_edges(quality)
    assert edges[1] == 1e-5 and edges[-1] == 1.0
    assert int((edges < 0.003).sum()) >= 400
    assert slider_edges(np.zeros(3))[1] == 1e-3 and slider_edges(np.array([1e-30]))[1] == 1e-8


def test_p_wrong_edges_spread_the_listed_samples_near_1():
    """Issue 28: half the listed samples of a real scan have p_label_wrong above 0.99; the logit-scale
    slider gives p > 0.99 hundreds of steps (a linear one gave it 10), with 0.5 an exact step."""
    rng = np.random.default_rng(0)
    listed = 1 - 10 ** rng.uniform(-9, np.log10(0.5), 1000)
    p_wrong = np.concatenate([listed, 10 ** rng.uniform(-8, -1, 4000), [0.0, 1.0]])
    edges = p_wrong_edges(p_wrong)
    assert edges[0] == 0 and edges[-1] == 1 and edges[HISTOGRAM_BINS // 2] == 0.5
    assert (np.diff(edges) > 0).all() and edges[1] == pytest.approx(1e-9, rel=1e-6)
    assert int((edges > 0.99).sum()) >= 350 and int((edges > 0.5).sum()) == HISTOGRAM_BINS // 2
    assert p_wrong_edges(np.full(3, 0.6))[1] == pytest.approx(0.01 / 1.01)  # at least 2 decades of odds
    assert p_wrong_edges(np.array([1e-30, 0.5]))[1] == pytest.approx(1e-10)  # at most 10


def test_slider_starts_at_the_scans_rule_p_label_wrong_above_one_half(run_copy):
    """A scan that flagged by p_label_wrong > 0.5 (its flag_rule says so): the slider starts at 0.5."""
    summary = json.loads((run_copy / "summary.json").read_text())
    rule = {"rule": "calibrated", "p_label_wrong_threshold": 0.5, "ambiguity_floor": 0.35}
    (run_copy / "summary.json").write_text(json.dumps({**summary, "flag_rule": rule}))
    data = read_review_data(run_copy)
    page = page_data(data, [True] * len(data.flagged), pd.DataFrame(), [], 96)
    assert page["threshold"] == HISTOGRAM_BINS // 2 and page["slider_edges"][page["threshold"]] == 0.5
    report = pd.read_parquet(run_copy / "report.parquet")
    assert page["histogram"][page["threshold"]] == int((report["p_label_wrong"] > 0.5).sum())
    # Were a listed suspect label at or below 0.5, the start would move below it.
    low = data.flagged.copy()
    low.loc[low.index[low["reason"] == "label"][0], "p_label_wrong"] = 0.3
    moved = page_data(replace(data, flagged=low), [True] * len(low), pd.DataFrame(), [], 96)
    assert page["slider_edges"][moved["threshold"]] < 0.3 <= page["slider_edges"][moved["threshold"] + 1]


def test_a_scan_without_p_label_wrong_gets_the_label_quality_slider(run_copy, capsys):
    """A scan from before calibrated probabilities: the slider falls back to label quality, flagging
    below its threshold on the log scale."""
    report = pd.read_parquet(run_copy / "report.parquet").drop(columns=["p_label_wrong"])
    report.to_parquet(run_copy / "report.parquet", index=False)
    summary = json.loads((run_copy / "summary.json").read_text())
    rule = {"rule": "label_quality", "label_quality_threshold": 0.2}
    (run_copy / "summary.json").write_text(json.dumps({**summary, "flag_rule": rule}))
    data = read_review_data(run_copy)
    assert data.slider_column == "label_quality"
    code, _, err = run(["review", run_copy], capsys)
    assert code == 0, err
    page = load_page_data(run_copy / "review")
    quality = report["label_quality"].to_numpy()
    edges = np.array(page["slider_edges"])
    assert page["slider_column"] == "label_quality" and page["slider_flags"] == "below"
    assert page["samples"]["p_label_wrong"] is None and len(page["samples"]["label_quality"]) == len(
        page["samples"]["id"]
    )
    assert edges[1] <= quality[quality > 0].min() < 10 * edges[1]
    assert page["histogram"][700] == int((quality < edges[700]).sum())
    suspect = [q for q, r in zip(page["samples"]["label_quality"], page["samples"]["reason"]) if r == "label"]
    assert max(suspect) < edges[page["threshold"]] and edges[page["threshold"] - 1] <= max(0.2, max(suspect))


def set_slider(driver, position: int) -> None:
    driver.execute_script(
        "const s = document.getElementById('threshold'); s.value = String(arguments[0]);"
        "s.dispatchEvent(new Event('input', {bubbles: true}));",
        position,
    )
    time.sleep(0.05)  # the grid follows on the next animation frame


def test_threshold_histogram_and_counts_that_follow_filters_and_decisions(scanned, run_copy, browser, capsys):
    """Issue 28 C: the slider on p_label_wrong (logit scale) shows its value, how many it flags and how
    many listed samples it keeps, over a histogram; T's counts and the mixed-up pairs follow the
    filters and decisions, and a pair filters the grid."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.support.ui import Select

    fresh_review(browser, run_copy, capsys)
    data = load_page_data(run_copy / "review")
    edges, histogram = data["slider_edges"], data["histogram"]
    report = scanned["report"]
    flagged = report[report["reason"] != ""].sort_values("rank", kind="stable")
    classes = data["classes"]
    suspect = flagged[flagged["reason"] == "label"]
    # The histogram: 50 bars holding every sample, and the listed ones.
    bars = browser.find_elements("css selector", "#threshold-hist .bar")
    assert len(bars) == 50
    assert sum(int(b.get_attribute("data-count")) for b in bars) == int((report["p_label_wrong"] > 0).sum())
    assert sum(int(b.get_attribute("data-listed")) for b in bars) == len(flagged)
    assert browser.find_element("id", "threshold-name").text == (
        "Flag threshold on P(label wrong) (logit scale), flagged above"
    )
    assert browser.find_element("id", "threshold-value").text == f"{edges[data['threshold']]:.3f}"
    # A position above the start: the value, the count flagged and the suspect labels the grid keeps.
    position = data["threshold"] + 300
    set_slider(browser, position)
    limit = edges[position]
    kept = suspect[suspect["p_label_wrong"] > limit]
    shown = browser.find_element("id", "threshold-value").text
    # Readable near 1: 2 significant digits of 1 - p (0.9988)
    assert 1 - float(shown) == pytest.approx(1 - limit, rel=0.1) and len(shown) <= 8
    assert browser.find_element("id", "threshold-count").text.startswith(
        f"P(label wrong) > {shown}: {histogram[position]:,} of {len(report):,} samples"
    )
    assert (
        f"The grid keeps {len(kept)} of the {len(suspect)} listed suspect labels."
        in browser.find_element("id", "threshold-count").text
    )
    ids = card_ids(browser)
    assert set(kept["sample_id"]) <= set(ids) and not set(suspect["sample_id"]) - set(
        kept["sample_id"]
    ) & set(ids)
    marked = [b for b in bars if "flagged" in b.get_attribute("class")]
    assert len(marked) == 50 - position // 20  # the bars above the threshold
    # Each card's P(label wrong) is readable near 1: as many digits as 1 - p needs (0.9988).
    shown_p = re.search(r"P\(label wrong\) (\S+)", card_for(browser, ids[0]).text).group(1)
    p_first = float(flagged.set_index("sample_id").loc[ids[0], "p_label_wrong"])
    assert 1 - float(shown_p) == pytest.approx(1 - p_first, rel=0.1, abs=1e-3), shown_p
    # Below the start: more would be flagged than the grid can show.
    set_slider(browser, data["threshold"] - 100)
    count_text = browser.find_element("id", "threshold-count").text
    assert "The grid lists the scan's flagged samples only." in count_text
    browser.find_element("id", "clear-filters").click()

    # T's counts follow decisions and filters.
    off = flagged[flagged["given_label"] != flagged["suggested_label"]]
    pairs = off.groupby(["suggested_label", "given_label"]).size().sort_values(ascending=False, kind="stable")
    (true_name, given_name), count = pairs.index[0], int(pairs.iloc[0])
    selector = "table.matrix button[data-true='{}'][data-given='{}']".format(
        classes.index(true_name), classes.index(given_name)
    )

    def cell_count() -> str:
        return browser.find_element("css selector", selector + " .count").text

    assert cell_count() == f"({count})"
    browser.find_element("css selector", selector).click()
    ActionChains(browser).send_keys("j", "a").perform()
    assert cell_count() == f"({count - 1}/{count})"
    Select(browser.find_element("id", "filter-state")).select_by_value("undecided")
    assert cell_count() == f"({count - 1})"
    set_slider(browser, HISTOGRAM_BINS)  # nothing above 1: only near-duplicates and outliers would stay
    assert cell_count() == ""
    browser.find_element("id", "clear-filters").click()

    # The mixed-up pairs: counted under the filters, each a button that filters the grid to the pair.
    between = {}
    for g, t in zip(off["given_label"], off["suggested_label"]):
        key = tuple(sorted((classes.index(g), classes.index(t))))
        between[key] = between.get(key, 0) + 1
    top = max(between.items(), key=lambda kv: (kv[1], [-x for x in kv[0]]))
    first = browser.find_element("css selector", "#overlap li")
    a, b = (classes[i] for i in top[0])
    assert first.text.startswith(f"{a} \u2194 {b} {top[1]} samples between them")
    first.find_element("css selector", "button.pair").click()
    pair = off[off["given_label"].isin([a, b]) & off["suggested_label"].isin([a, b])]
    assert card_ids(browser) == pair["sample_id"].tolist()
    assert browser.find_element("id", "pair-filter").is_displayed()
    assert "selected" in browser.find_element("css selector", "#overlap button.pair").get_attribute("class")
    Select(browser.find_element("id", "filter-state")).select_by_value("decided")
    decided = [i for i in pair["sample_id"] if stored(browser)["decisions"].get(i)]
    assert card_ids(browser) == decided
    browser.find_element("id", "clear-filters").click()
    assert not browser.find_element("id", "pair-filter").is_displayed() and len(card_ids(browser)) == len(
        flagged
    )
    assert severe_logs(browser) == []


def test_review_page_with_50000_flagged_samples_stays_responsive(browser, tmp_path):
    """A synthetic 50,000-sample page (no thumbnails): renders 100 cards a page, pages, filters.

    Timings are printed (run with -s), not asserted: see docs/review.md for the measured figures.
    """
    from selenium.webdriver.support.ui import Select

    n, k = 50_000, 10
    rng = np.random.default_rng(0)
    names = tuple(f"class {i}" for i in range(k))
    given, suggested = rng.integers(0, k, n), rng.integers(0, k, n)
    quality = np.sort(rng.uniform(0, 0.45, n))
    flagged = pd.DataFrame(
        {
            "sample_id": [f"{names[g]}/img_{i:06d}.png" for i, g in enumerate(given)],
            "path": [f"/data/{names[g]}/img_{i:06d}.png" for i, g in enumerate(given)],
            "given_label": [names[g] for g in given],
            "suggested_label": [names[s] for s in suggested],
            "confidence": quality / 2,
            "suggested_confidence": 1 - quality,
            "label_quality": quality,
            "rank": np.arange(1, n + 1),
        }
    )
    all_quality = np.concatenate([quality, rng.uniform(0.5, 1, 4 * n)])
    edges = np.arange(HISTOGRAM_BINS + 1) / HISTOGRAM_BINS
    data = ReviewData(
        run_dir=tmp_path / "big",
        summary={
            "data_fingerprint": "sha256:big",
            "method": "nlnl",
            "estimated_noise_rate": 0.2,
            "source": "/data",
        },
        class_names=names,
        flagged=flagged,
        num_samples=5 * n,
        num_flagged=n,
        transition_matrix=np.full((k, k), 1 / k),
        histogram=np.searchsorted(np.sort(all_quality), edges, side="left"),
        review_key="big",
    )
    review = tmp_path / "review"
    review.mkdir()
    from importlib import resources

    for name in ("index.html", "review.css", "review.js"):
        (review / name).write_bytes(resources.files("labelaudit.review.assets").joinpath(name).read_bytes())
    payload = page_data(
        data, np.zeros(n, dtype=bool), pd.DataFrame(columns=["sample_id", "path", "reason", "detail"]), [], 96
    )
    from labelaudit.reports import json_text

    (review / "data.js").write_text(
        f"window.LABELAUDIT_REVIEW = {json_text(payload, indent=None)};\n", encoding="utf-8"
    )

    started = time.perf_counter()
    open_page(browser, review / "index.html")
    loaded = time.perf_counter() - started
    assert severe_logs(browser) == []
    assert len(cards(browser)) == PAGE_SIZE
    info = browser.find_element("css selector", ".page-info")
    assert info.text == f"Samples 1\u2013100 of 50,000 \u00b7 page 1 of {n // PAGE_SIZE}"
    timing = browser.execute_script("return window.LABELAUDIT_TIMING")
    clicked = time.perf_counter()
    browser.find_element("css selector", ".next-page").click()
    assert info.text.startswith("Samples 101\u2013200 of 50,000")
    page_seconds = time.perf_counter() - clicked
    page_render = browser.execute_script("return window.LABELAUDIT_TIMING.lastRenderMs")
    Select(browser.find_element("id", "filter-given")).select_by_visible_text("class 3")
    filter_ms = browser.execute_script(
        "return window.LABELAUDIT_TIMING.lastFilterMs + window.LABELAUDIT_TIMING.lastRenderMs"
    )
    assert info.text.endswith(
        f"of {int((given == 3).sum()):,} \u00b7 page 1 of {-(-int((given == 3).sum()) // PAGE_SIZE)}"
    )
    browser.find_element("css selector", "table.matrix button[data-true='2'][data-given='3']").click()
    expected = int(((given == 3) & (suggested == 2)).sum())
    assert f"of {expected:,} " in info.text and len(cards(browser)) == min(PAGE_SIZE, expected)
    # Keys on the big page: j picks the first card, 3 relabels it to the third class (relabel even
    # when that is its given or suggested class), Backspace undoes it, ] turns the page.
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    ActionChains(browser).send_keys("j").send_keys("3").perform()
    first = cards(browser)[0]
    assert first.find_element("css selector", ".state").text == "relabelled \u2192 class 2"
    ActionChains(browser).send_keys("k").send_keys(Keys.BACKSPACE).perform()
    assert first.find_element("css selector", ".state").text == "undecided"
    ActionChains(browser).send_keys("]").perform()
    assert (
        info.text.startswith(f"Samples 101\u2013{min(200, expected)} of {expected:,}")
        or expected <= PAGE_SIZE
    )
    # An import of 2,500 decisions is one undo step, too big to store: undoable until a reload only.
    from selenium.webdriver.support.ui import WebDriverWait

    big = tmp_path / "big.csv"
    big.write_text(
        expected_csv([[i, "remove", "", ""] for i in flagged["sample_id"][:2500]]), encoding="utf-8"
    )
    browser.find_element("id", "import").send_keys(str(big))
    WebDriverWait(browser, 30).until(
        lambda d: d.find_element("id", "status").text.startswith("Imported 2,500")
    )
    assert browser.find_element("id", "decided-count").text.startswith("2,500 decided")
    assert stored(browser)["history"] == [] and len(stored(browser)["decisions"]) == 2500
    ActionChains(browser).send_keys(Keys.BACKSPACE).perform()
    assert browser.find_element("id", "decided-count").text.startswith("0 decided")
    data_mb = (review / "data.js").stat().st_size / 1e6
    print(
        f"\n50,000 flagged samples: data.js {data_mb:.1f} MB; page ready {loaded:.2f} s after navigation "
        f"(script set-up {timing['setUpMs']:.0f} ms, first grid {timing['lastRenderMs']:.0f} ms); next page "
        f"{page_seconds * 1000:.0f} ms round trip ({page_render:.0f} ms render); a filter {filter_ms:.0f} ms"
    )


def test_apply_keeps_and_counts_how_decisions_were_made(scanned, run_copy, tmp_path, capsys):
    """Issue 28: a decisions.csv with the page's source columns (manual, check:<id>, bulk:<id>):
    apply keeps them in its decisions.csv and counts the bulk-decided in apply.json; a bad source
    is a one-line error naming its line."""
    flagged = scanned["report"][scanned["report"]["reason"] != ""].sort_values("rank", kind="stable")
    ids = flagged["sample_id"].tolist()
    sources = ["manual", "check:ab12", "check:ab12", "bulk:ab12", "bulk:ab12", ""]

    def write(path: Path, rows: list[list]) -> Path:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["sample_id", "decision", "new_label", "note", *SOURCE_COLUMNS])
        writer.writerows([[escape_cell(str(v)) for v in row] for row in rows])
        path.write_text(buffer.getvalue(), encoding="utf-8")
        return path

    good = write(
        tmp_path / "alice.csv",
        [
            [
                i,
                "remove" if not s else "keep" if s == "manual" else "accept",
                "",
                "",
                s,
                *(("2", "0.2") if ":" in s else ("", "")),
            ]
            for i, s in zip(ids, sources)
        ],
    )
    out = tmp_path / "cleaned"
    code, _, err = run(["apply", run_copy, good, "--out", out], capsys)
    assert code == 0, err
    info = json.loads((out / "apply.json").read_text())
    assert info["num_bulk_decided"] == 2 and info["num_spot_checked"] == 2
    assert info["spot_checks"] == {
        "ab12": {"check_size": 2, "check_max_wrong": 0.2, "num_checked": 2, "num_bulk_decided": 2}
    }
    kept = read_table(out / "decisions.csv", "decisions").fillna("")
    assert kept.columns.tolist() == ["sample_id", "decision", "new_label", "note", *SOURCE_COLUMNS]
    assert kept["source"].tolist() == [s or "manual" for s in sources]
    # Applying apply's own decisions.csv again keeps the sources and the counts.
    again = tmp_path / "again"
    assert run(["apply", run_copy, out / "decisions.csv", "--out", again], capsys)[0] == 0
    assert json.loads((again / "apply.json").read_text())["spot_checks"] == info["spot_checks"]
    # Without the columns: nothing bulk-decided, and apply's decisions.csv keeps its four columns.
    plain = tmp_path / "plain.csv"
    plain.write_text(
        expected_csv([[ids[0], "keep", "", ""]])
        .replace(",source,check_size,check_max_wrong", "")
        .replace(",manual,,\n", "\n")
    )
    assert run(["apply", run_copy, plain, "--out", tmp_path / "plain"], capsys)[0] == 0
    assert json.loads((tmp_path / "plain" / "apply.json").read_text())["num_bulk_decided"] == 0
    assert read_table(tmp_path / "plain" / "decisions.csv", "d").columns.tolist() == [
        "sample_id",
        "decision",
        "new_label",
        "note",
    ]
    for bad_row, fragment in (
        ([ids[0], "keep", "", "", "robot", "", ""], "has the source 'robot' on line 2"),
        ([ids[0], "keep", "", "", "bulk:ab12", "", "0.1"], "with check_size '' and check_max_wrong '0.1'"),
    ):
        bad = write(tmp_path / "bad.csv", [bad_row])
        code, _, err = run(["apply", run_copy, bad, "--out", tmp_path / "bad"], capsys)
        assert code != 0
        one_line_error(err, fragment)


def click(driver, element_id: str) -> None:
    """Click a button below the sticky header (scrolled to the middle of the window first)."""
    element = driver.find_element("id", element_id)
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", element)
    element.click()


def start_check(driver, decision: str, rate: str) -> list[str]:
    """Open "Decide all ... with a spot-check", choose the decision and rate, start: the cards drawn."""
    from selenium.webdriver.support.ui import Select

    click(driver, "bulk-open")
    Select(driver.find_element("id", "bulk-decision")).select_by_value(decision)
    Select(driver.find_element("id", "bulk-rate")).select_by_value(rate)
    click(driver, "bulk-start")
    return card_ids(driver)


def downloaded(driver) -> Path:
    target = driver.downloads / "decisions.csv"
    deadline = time.time() + 30
    while not target.exists() and time.time() < deadline:
        time.sleep(0.1)
    time.sleep(0.2)
    return target


def test_a_spot_check_that_agrees_decides_the_rest_in_one_undo_step(scanned, run_copy, browser, capsys):
    """Issue 28: "Decide all N with a spot-check": n = ceil(ln 0.05 / ln(1 - rate)) random undecided
    cards (seeded: the same selection draws the same cards), decided one by one; all agree, so the
    decision goes to the rest, exported with source bulk:<id> (the cards check:<id>) and the check's
    size, read by apply; one Backspace takes the whole bulk decision back."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select, WebDriverWait

    fresh_review(browser, run_copy, capsys)
    flagged = scanned["report"][scanned["report"]["reason"] != ""].sort_values("rank", kind="stable")
    total = len(flagged)
    assert total > 14, "the fixture should list more samples than a 20% spot-check draws"
    assert browser.find_element("id", "bulk-open").text == f"Decide all {total} with a spot-check\u2026"
    click(browser, "bulk-open")
    statement = browser.find_element("id", "bulk-statement")
    for rate, n in (("0.05", 59), ("0.1", 29), ("0.2", 14)):
        Select(browser.find_element("id", "bulk-rate")).select_by_value(rate)
        assert f" {n} " in statement.text
    assert statement.text.startswith(f"The page draws 14 of the {total} undecided at random")
    assert (
        "If all 14 agree with \u201caccept the suggested label\u201d, it is applied to the other "
        f"{total - 14}: then, with 95% confidence, at most 20% of them are wrong" in statement.text
    )
    click(browser, "bulk-cancel")
    drawn = start_check(browser, "accept", "0.2")
    assert len(drawn) == 14 and set(drawn) <= set(flagged["sample_id"])
    assert drawn == [i for i in flagged["sample_id"] if i in drawn]  # in rank order
    assert not browser.find_element("id", "filter-given").is_enabled()  # the grid is the check's
    click(browser, "bulk-stop")
    assert len(card_ids(browser)) == total
    assert start_check(browser, "accept", "0.2") == drawn  # seeded: the same selection, the same draw
    check_id = stored(browser)["check_order"][-1]
    ActionChains(browser).send_keys("j").perform()
    for _ in drawn:
        ActionChains(browser).send_keys("a").perform()
    assert browser.find_element("id", "bulk-progress").text.startswith(
        f"Spot-check {check_id} of everything listed"
    )
    assert "14 of 14 decided, 14 agree." in browser.find_element("id", "bulk-progress").text
    click(browser, "bulk-finish")
    assert browser.find_element("id", "status").text == (
        f"Spot-check {check_id}: 14/14 agreed: \u201caccept the suggested label\u201d applied to the other "
        f"{total - 14} (source bulk:{check_id} in decisions.csv; Backspace undoes the whole bulk decision)."
    )
    assert browser.find_element("id", "decided-count").text == f"{total} decided \u00b7 0 undecided"
    rest = [i for i in flagged["sample_id"] if i not in drawn]
    assert state_of(browser, rest[0]).endswith(f"(bulk, spot-check {check_id})")
    assert "14/14 agreed: applied to" in browser.find_element("id", "checks").text

    # The export says how each decision was made; apply keeps and counts it.
    (browser.downloads / "decisions.csv").unlink(missing_ok=True)
    click(browser, "export")
    target = downloaded(browser)
    exported = read_table(target, "decisions").fillna("").set_index("sample_id")
    assert exported["decision"].eq("accept").all() and len(exported) == total
    assert set(exported.loc[drawn, "source"]) == {f"check:{check_id}"}
    assert set(exported.loc[rest, "source"]) == {f"bulk:{check_id}"}
    assert (
        exported["check_size"].astype(int).eq(14).all()
        and exported["check_max_wrong"].astype(float).eq(0.2).all()
    )
    out = run_copy.parent / "cleaned"
    code, _, err = run(["apply", run_copy, target, "--out", out], capsys)
    assert code == 0, err
    info = json.loads((out / "apply.json").read_text())
    assert info["num_bulk_decided"] == total - 14 and info["num_spot_checked"] == 14
    assert info["spot_checks"][check_id]["num_bulk_decided"] == total - 14
    saved = run_copy.parent / "exported.csv"
    shutil.move(target, saved)

    # One undo step takes the whole bulk decision back; the checked cards keep theirs.
    browser.find_element("css selector", "#grid .card .meta").click()
    ActionChains(browser).send_keys(Keys.BACKSPACE).perform()
    assert browser.find_element("id", "decided-count").text == f"14 decided \u00b7 {total - 14} undecided"
    assert state_of(browser, rest[0]) == "undecided" and state_of(browser, drawn[0]).startswith("accepted")
    assert "(undone)" in browser.find_element("id", "checks").text
    # The exported file imports back with its sources (a review resumed in another browser).
    browser.execute_script("localStorage.clear()")
    open_page(browser, run_copy / "review" / "index.html")
    browser.find_element("id", "import").send_keys(str(saved))
    WebDriverWait(browser, 10).until(lambda d: d.find_element("id", "status").text.startswith("Imported"))
    assert state_of(browser, rest[0]).endswith(f"(bulk, spot-check {check_id})")
    assert state_of(browser, drawn[0]).endswith(f"(card of spot-check {check_id})")
    assert stored(browser)["decisions"][rest[0]][3] == f"bulk:{check_id}"
    assert severe_logs(browser) == []


def test_a_spot_check_with_one_disagreement_applies_nothing(browser, tmp_path):
    """Issue 28: on a T cell, one checked card that disagrees stops the bulk decision: nothing is
    applied to the rest, the checked cards keep their own decisions, and the cell shows 13/14 agreed."""
    from selenium.webdriver.common.action_chains import ActionChains

    review = synthetic_page(tmp_path, n=300, k=3)
    open_page(browser, review / "index.html")
    browser.execute_script("localStorage.clear()")
    open_page(browser, review / "index.html")
    cell = "table.matrix button[data-true='1'][data-given='0']"
    browser.find_element("css selector", cell).click()
    in_cell = len(card_ids(browser))
    assert in_cell > 14
    drawn = start_check(browser, "keep", "0.2")
    assert len(drawn) == 14
    open_page(browser, review / "index.html")  # a reload resumes the running check
    assert card_ids(browser) == drawn and not browser.find_element("id", "filter-view").is_enabled()
    ActionChains(browser).send_keys("j").perform()
    for key in ["g"] * 13 + ["r"]:  # the last card: removed, not kept
        ActionChains(browser).send_keys(key).perform()
    progress = browser.find_element("id", "bulk-progress").text
    assert "14 of 14 decided, 13 agree, 1 do not (the check fails)." in progress
    click(browser, "bulk-finish")
    check_id = stored(browser)["check_order"][-1]
    assert browser.find_element("id", "status").text == (
        f"Spot-check {check_id}: 13/14 agreed, 1 did not: nothing was applied to the other {in_cell - 14}; "
        "the 14 checked cards keep their own decisions."
    )
    assert browser.find_element("id", "decided-count").text.startswith("14 decided")
    assert browser.find_element("css selector", cell + " .check").text == "13/14 agreed"
    assert "13/14 agreed: nothing applied" in browser.find_element("id", "checks").text
    assert len(card_ids(browser)) == in_cell  # the cell's grid again
    assert severe_logs(browser) == []


def synthetic_page(tmp_path: Path, *, n: int, k: int) -> Path:
    """A review folder of ``n`` synthetic listed samples in ``k`` classes (no thumbnails)."""
    from importlib import resources

    from labelaudit.reports import json_text

    rng = np.random.default_rng(1)
    names = tuple(f"class {i}" for i in range(k))
    given = rng.integers(0, k, n)
    suggested = (given + 1 + rng.integers(0, k - 1, n)) % k
    p_wrong = np.sort(rng.uniform(0.5, 1, n))[::-1]
    flagged = pd.DataFrame(
        {
            "sample_id": [f"{names[g]}/img_{i:04d}.png" for i, g in enumerate(given)],
            "path": [f"/data/{names[g]}/img_{i:04d}.png" for i, g in enumerate(given)],
            "given_label": [names[g] for g in given],
            "suggested_label": [names[s] for s in suggested],
            "confidence": 1 - p_wrong,
            "suggested_confidence": p_wrong,
            "label_quality": 1 - p_wrong,
            "p_label_wrong": p_wrong,
            "rank": np.arange(1, n + 1),
        }
    )
    all_p = np.concatenate([p_wrong, rng.uniform(0, 0.5, 4 * n)])
    edges = p_wrong_edges(all_p)
    data = ReviewData(
        run_dir=tmp_path / "synthetic",
        summary={"data_fingerprint": "sha256:synthetic", "method": "nlnl", "source": "/data"},
        class_names=names,
        flagged=flagged,
        num_samples=5 * n,
        num_flagged=n,
        transition_matrix=np.full((k, k), 1 / k),
        histogram=slider_histogram(all_p, edges, "p_label_wrong"),
        review_key=f"synthetic-{n}",
        edges=edges,
        slider_column="p_label_wrong",
    )
    review = tmp_path / "review"
    review.mkdir()
    for name in ("index.html", "review.css", "review.js"):
        (review / name).write_bytes(resources.files("labelaudit.review.assets").joinpath(name).read_bytes())
    payload = page_data(data, np.zeros(n, dtype=bool), pd.DataFrame(), [], 96)
    (review / "data.js").write_text(
        f"window.LABELAUDIT_REVIEW = {json_text(payload, indent=None)};\n", encoding="utf-8"
    )
    return review


def test_several_reviewers_keep_the_source_of_the_decision_applied(scanned, run_copy, tmp_path, capsys):
    """Issue 28: merging one reviewer's bulk decisions with another's plain file keeps, per sample,
    the source of the reviewer whose decision was applied."""
    flagged = scanned["report"][scanned["report"]["reason"] != ""].sort_values("rank", kind="stable")
    first, second = flagged["sample_id"].iloc[:2]
    alice = tmp_path / "alice.csv"
    alice.write_text(
        expected_csv([[first, "accept", "", "", "bulk:ab12", "29", "0.1"], [second, "keep", "", ""]])
    )
    bob = tmp_path / "bob.csv"
    bob.write_text(expected_csv([[second, "keep", "", ""]]))
    out = tmp_path / "merged"
    code, _, err = run(["apply", run_copy, alice, bob, "--out", out], capsys)
    assert code == 0, err
    merged = read_table(out / "decisions.csv", "decisions").fillna("").set_index("sample_id")
    assert merged.loc[first, "source"] == "bulk:ab12" and merged.loc[second, "source"] == "manual"
    assert json.loads((out / "apply.json").read_text())["num_bulk_decided"] == 1
