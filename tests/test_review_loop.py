"""Issue 12, the review loop: export flagged samples (Label Studio, CSV, FiftyOne-style JSON),
apply reviewers' decisions into a cleaned manifest, retrain on the reviewed labels.

Real commands on real image files and real tiny scans; the Label Studio round trip drives a real
Label Studio server (installed by ``make test-tools`` into .venv-labelstudio; skipped without it).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import PATTERN_CLASSES, make_noisy_pattern_dataset, pattern_image, save_image
from conftest import run_cli as run

from labelaudit.cli import main
from labelaudit.data.sources import read_table
from labelaudit.reports import write_csv
from labelaudit.runs.directory import MARKER

FAST = ["--budget", "0.3", "--width", "8", "--quiet"]  # 0.05 (one epoch a phase) can learn nothing
BARELY_TRAINED = ["--budget", "0.05", "--width", "8", "--quiet"]  # with --threshold 0.9: nearly all flagged
#: Class names a dataset may really have: XML/HTML syntax, quotes, '+', non-ASCII, a formula start.
ODD_CLASSES = ('a&b "q"', "<img src=x onerror=alert(1)>", "café +1", "=plain")
LABEL_STUDIO = Path(__file__).resolve().parent.parent / ".venv-labelstudio" / "bin" / "label-studio"
PREFIX = "/data/local-files/?d="


def ok(argv, capsys) -> str:
    code, out, err = run(argv, capsys)
    assert code == 0, err
    return out


def snapshot(*folders_or_files: Path) -> dict[str, bytes]:
    """Every file under the given folders (and the given files): path -> bytes."""
    found = {}
    for item in folders_or_files:
        files = [item] if item.is_file() else sorted(p for p in item.rglob("*") if p.is_file())
        found.update({str(p): p.read_bytes() for p in files})
    return found


def one_line_error(err: str, *fragments: str) -> str:
    errors = [line for line in err.strip().splitlines() if not line.startswith("labelaudit: warning: ")]
    assert len(errors) == 1 and errors[0].startswith("labelaudit: error: "), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


def leftovers(folder: Path) -> list[str]:
    """Hidden temporaries or locks an output left in ``folder``."""
    return [p.name for p in folder.iterdir() if p.name.startswith(".") and p.name != MARKER]


@pytest.fixture(scope="module")
def loop(tmp_path_factory):
    """A 4-class pattern dataset with 20% wrong labels and a fast scan of it (some samples flagged, some
    not)."""
    base = tmp_path_factory.mktemp("loop")
    root = base / "data"
    make_noisy_pattern_dataset(root, per_class=20, noise_rate=0.2, seed=5)
    with pytest.raises(SystemExit) as done:
        main(["scan", str(root), "--out", str(base / "run"), "--cache-dir", str(base / "cache"), *FAST])
    assert done.value.code == 0
    report = pd.read_parquet(base / "run" / "report.parquet")
    # flagged labels, duplicates, outliers
    flagged = report[report["reason"] != ""].sort_values("rank", kind="stable")
    assert len(flagged) >= 6 and (~report["suspected_noisy"]).sum() >= 1, (
        "the fixture scan needs flagged and kept samples"
    )
    return {
        "base": base,
        "root": root,
        "run": base / "run",
        "cache": base / "cache",
        "report": report,
        "flagged": flagged,
        "classes": sorted(PATTERN_CLASSES),
    }


@pytest.fixture(scope="module")
def odd(tmp_path_factory):
    """A dataset in a folder named with a space, classes named as in ODD_CLASSES, files named with
    '+', spaces, non-ASCII, '&' and '#'; scanned with --threshold 0.9 so that (nearly) all are flagged."""
    base = tmp_path_factory.mktemp("odd")
    root = base / "my data"
    rng = np.random.default_rng(0)
    for kind, name in zip(PATTERN_CLASSES, ODD_CLASSES):
        for i in range(6):
            save_image(root / name / f"img +{i} é&#.png", pattern_image(kind, rng))
    with pytest.raises(SystemExit) as done:
        main(
            [
                "scan",
                str(root),
                "--out",
                str(base / "run"),
                "--cache-dir",
                str(base / "cache"),
                "--threshold",
                "0.9",
                *BARELY_TRAINED,
            ]
        )
    assert done.value.code == 0
    report = pd.read_parquet(base / "run" / "report.parquet")
    # flagged labels, duplicates, outliers
    flagged = report[report["reason"] != ""].sort_values("rank", kind="stable")
    assert len(flagged) >= 8
    return {"base": base, "root": root, "run": base / "run", "report": report, "flagged": flagged}


# export -----------------------------------------------------------------------------------------


def test_label_studio_export_encodes_odd_names_and_escapes_the_config(odd, capsys):
    out = odd["base"] / "ls"
    ok(["export", odd["run"], "--out", out], capsys)
    assert sorted(p.name for p in out.iterdir()) == [
        MARKER,
        "README.txt",
        "export.json",
        "label_config.xml",
        "tasks.json",
    ]
    tasks = json.loads((out / "tasks.json").read_text(encoding="utf-8"))
    flagged = odd["flagged"]
    assert [t["data"]["sample_id"] for t in tasks] == flagged["sample_id"].tolist()  # worst first
    root = odd["base"]  # default document root: the parent of the dataset folder
    for task, row in zip(tasks, flagged.itertuples()):
        data, url = task["data"], task["data"]["image"]
        relative = Path(row.path).relative_to(root).as_posix()  # "my data/<class>/img +3 é&#.png"
        assert url == PREFIX + urllib.parse.quote(relative, safe="/")
        assert urllib.parse.unquote(url[len(PREFIX) :]) == relative
        assert " " not in url and "+" not in url and "&" not in url[len(PREFIX) :] and "#" not in url
        assert url.isascii() and "%2B" in url and "%20" in url and "%C3%A9" in url
        assert data["given_label"] == row.given_label and data["suggested_label"] == row.suggested_label
        assert "label" not in data  # never a key named like the Choices
        (prediction,) = task["predictions"]
        assert (
            prediction["model_version"].startswith("labelaudit-")
            and prediction["score"] == row.suggested_confidence
        )
        assert prediction["result"] == [
            {
                "from_name": "label",
                "to_name": "image",
                "type": "choices",
                "value": {"choices": [row.suggested_label]},
            }
        ]
    xml = (out / "label_config.xml").read_text(encoding="utf-8")
    assert "<img src" not in xml and 'a&b "q"' not in xml  # escaped, not raw
    view = ET.fromstring(xml)
    choices = view.find("Choices")
    assert (
        choices.get("name") == "label"
        and choices.get("toName") == "image"
        and choices.get("choice") == "single"
    )
    assert view.find("Image").get("name") == "image" and view.find("Image").get("value") == "$image"
    assert [c.get("value") for c in choices.findall("Choice")] == sorted(ODD_CLASSES)  # raw after parsing
    info = json.loads((out / "export.json").read_text())
    assert (
        info["kind"] == "export" and info["format"] == "label-studio" and info["num_exported"] == len(flagged)
    )
    assert info["label_studio"]["document_root"] == str(root)
    assert info["label_studio"]["storage_folders"] == [str(odd["root"])]
    readme = (out / "README.txt").read_text(encoding="utf-8")
    assert "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true" in readme and f"DOCUMENT_ROOT={root}" in readme
    assert str(odd["root"]) in readme and "Sync" in readme and "labelaudit apply" in readme


def test_document_root_option(odd, tmp_path, capsys):
    # The dataset folder itself as root: Label Studio refuses the root as a storage, so one per class folder.
    out = tmp_path / "ls"
    ok(["export", odd["run"], "--out", out, "--document-root", odd["root"]], capsys)
    info = json.loads((out / "export.json").read_text())
    class_folders = {
        str(odd["root"] / Path(p).relative_to(odd["root"]).parts[0]) for p in odd["flagged"]["path"]
    }
    assert info["label_studio"]["storage_folders"] == sorted(class_folders)
    task = json.loads((out / "tasks.json").read_text(encoding="utf-8"))[0]
    assert task["data"]["image"] == PREFIX + urllib.parse.quote(task["data"]["sample_id"], safe="/")
    # Images outside the root, a root that is not a folder, a root with another format: one line, nothing
    # written.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for option, fragment in (
        [elsewhere, "is outside --document-root"],
        [tmp_path / "nope", "is not a folder"],
    ):
        code, _, err = run(["export", odd["run"], "--out", tmp_path / "x", "--document-root", option], capsys)
        assert code == 2
        one_line_error(err, fragment)
    code, _, err = run(
        ["export", odd["run"], "--format", "csv", "--out", tmp_path / "x", "--document-root", elsewhere],
        capsys,
    )
    assert code == 2
    one_line_error(err, "--document-root is for --format label-studio only")
    code, _, err = run(["export", odd["run"], "--format", "xml", "--out", tmp_path / "x"], capsys)
    assert code == 2
    one_line_error(err, "--format must be one of label-studio, csv, fiftyone")
    assert not (tmp_path / "x").exists() and leftovers(tmp_path) == []


def test_csv_and_fiftyone_exports(odd, tmp_path, capsys):
    ok(["export", odd["run"], "--format", "csv", "--out", tmp_path / "csv"], capsys)
    ok(["export", odd["run"], "--format", "fiftyone", "--out", tmp_path / "fo"], capsys)
    flagged = odd["flagged"]
    raw = (tmp_path / "csv" / "review.csv").read_text(encoding="utf-8")
    assert ",'=plain," in raw and ",=plain," not in raw  # escaped for spreadsheets
    review = read_table(tmp_path / "csv" / "review.csv", "review")
    assert list(review.columns) == [
        "sample_id",
        "decision",
        "new_label",
        "note",
        "given_label",
        "suggested_label",
        "suggested_confidence",
        "label_quality",
        "rank",
        "reason",
        "path",
    ]
    assert review["sample_id"].tolist() == flagged["sample_id"].tolist()
    assert review["given_label"].tolist() == flagged["given_label"].tolist()  # '=plain' read back raw
    assert review["decision"].isna().all()
    document = json.loads(
        (tmp_path / "fo" / "fiftyone.json").read_text(encoding="utf-8"), parse_constant=pytest.fail
    )
    assert document["format"] == "labelaudit-fiftyone-1" and document["classes"] == sorted(ODD_CLASSES)
    first, row = document["samples"][0], flagged.iloc[0]
    tags = ["suspected_noisy" if r == "label" else r for r in row["reason"].split(";")]
    assert first == {
        "filepath": row["path"],
        "tags": tags,
        "labelaudit_id": row["sample_id"],
        "ground_truth": {"label": row["given_label"]},
        "suggested": {"label": row["suggested_label"], "confidence": row["suggested_confidence"]},
        "label_quality": row["label_quality"],
        "rank": int(row["rank"]),
    }
    assert len(document["samples"]) == len(flagged) and all(
        Path(s["filepath"]).is_file() for s in document["samples"]
    )
    assert "fo.Sample(filepath=s['filepath']" in (tmp_path / "fo" / "README.txt").read_text(encoding="utf-8")


def test_export_output_folder_rules(odd, tmp_path, capsys):
    before = snapshot(odd["root"], odd["run"])
    # Default --out beside the run; a second export there needs --overwrite and then replaces it whole.
    default = odd["base"] / "run-export-csv"
    ok(["export", odd["run"], "--format", "csv"], capsys)
    assert (default / "review.csv").is_file()
    (default / "stray.txt").write_text("x")  # a file of the user's: never deleted, even with --overwrite
    code, _, err = run(["export", odd["run"], "--format", "csv", "--overwrite"], capsys)
    assert code == 2
    one_line_error(err, "files labelaudit did not write there (stray.txt)")
    (default / "stray.txt").unlink()
    code, _, err = run(["export", odd["run"], "--format", "csv"], capsys)
    assert code == 2
    one_line_error(err, "holds an earlier export output; pass --overwrite")
    ok(["export", odd["run"], "--format", "csv", "--overwrite"], capsys)
    shutil.rmtree(default)
    # A user's folder holding a Label Studio export named export.json is not ours: never replaced.
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "export.json").write_text("[]")
    code, _, err = run(["export", odd["run"], "--out", mine, "--overwrite"], capsys)
    assert code == 2
    one_line_error(err, "files that labelaudit did not write")
    assert (mine / "export.json").read_text() == "[]"
    # Never into the images or over the run.
    for target, fragment in (
        [odd["root"] / "out", "inside the input folder"],
        [odd["run"], "is one of the inputs"],
    ):
        code, _, err = run(["export", odd["run"], "--out", target, "--overwrite"], capsys)
        assert code == 2
        one_line_error(err, fragment)
    assert snapshot(odd["root"], odd["run"]) == before


# apply ------------------------------------------------------------------------------------------


def decisions_from_review(loop, tmp_path, capsys) -> tuple[Path, dict]:
    """Fill in ``export --format csv``'s review.csv as a reviewer would: every decision kind, one
    row left empty, one unflagged sample relabelled, a note that looks like a formula."""
    ok(["export", loop["run"], "--format", "csv", "--out", tmp_path / "review"], capsys)
    review = read_table(tmp_path / "review" / "review.csv", "review").fillna("")
    flagged = loop["flagged"]
    ids = flagged["sample_id"].tolist()
    given = dict(zip(loop["report"]["sample_id"], loop["report"]["given_label"]))
    suggested = dict(zip(loop["report"]["sample_id"], loop["report"]["suggested_label"]))
    other = next(c for c in loop["classes"] if c not in (given[ids[2]], suggested[ids[2]]))
    plan = {
        ids[0]: ("accept", ""),
        ids[1]: ("keep", ""),
        ids[2]: ("relabel", other),
        ids[3]: ("remove", ""),
        ids[4]: ("unsure", ""),
    }  # ids[5:] stay empty: unreviewed
    for sample_id, (decision, new_label) in plan.items():
        review.loc[review["sample_id"] == sample_id, ["decision", "new_label"]] = [decision, new_label]
    review.loc[review["sample_id"] == ids[3], "note"] = '=HYPERLINK("http://x")'
    unflagged = loop["report"].loc[~loop["report"]["suspected_noisy"], "sample_id"].iloc[0]
    unflagged_label = next(c for c in loop["classes"] if c != given[unflagged])
    extra = pd.DataFrame([{"sample_id": unflagged, "decision": "relabel", "new_label": unflagged_label}])
    path = tmp_path / "decisions.csv"
    # escaped, as the review page writes
    write_csv(path, pd.concat([review, extra], ignore_index=True).fillna(""))
    assert "'=HYPERLINK" in path.read_text()
    plan[unflagged] = ("relabel", unflagged_label)
    return path, {"plan": plan, "ids": ids, "given": given, "suggested": suggested, "unflagged": unflagged}


@pytest.mark.parametrize("accept_unreviewed", ["given", "suggested", "drop"])
def test_apply_round_trips_a_decisions_csv(loop, tmp_path, capsys, accept_unreviewed):
    decisions, case = decisions_from_review(loop, tmp_path, capsys)
    before = snapshot(loop["root"], loop["run"], decisions)
    out = tmp_path / "cleaned"
    ok(["apply", loop["run"], decisions, "--out", out, "--accept-unreviewed", accept_unreviewed], capsys)
    assert snapshot(loop["root"], loop["run"], decisions) == before  # inputs only read
    assert sorted(p.name for p in out.iterdir()) == [
        MARKER,
        "apply.json",
        "cleaned.csv",
        "cleaned.parquet",
        "decisions.csv",
        "removed.csv",
    ]
    cleaned = pd.read_parquet(out / "cleaned.parquet")
    assert list(cleaned.columns) == ["sample_id", "path", "label", "original_label", "label_source"]
    assert read_table(out / "cleaned.csv", "cleaned").to_dict("list") == cleaned.to_dict("list")
    removed = read_table(out / "removed.csv", "removed").fillna("")
    rows = cleaned.set_index("sample_id")
    plan, ids, given, suggested = case["plan"], case["ids"], case["given"], case["suggested"]
    unreviewed = [i for i in ids[4:]]  # unsure + empty rows
    expect = {
        ids[0]: (suggested[ids[0]], "reviewed"),
        ids[1]: (given[ids[1]], "reviewed"),
        ids[2]: (plan[ids[2]][1], "reviewed"),
        case["unflagged"]: (plan[case["unflagged"]][1], "reviewed"),
    }
    if accept_unreviewed != "drop":
        rule = {"given": given, "suggested": suggested}[accept_unreviewed]
        expect.update({i: (rule[i], accept_unreviewed) for i in unreviewed})
    for sample_id, (label, source) in expect.items():
        assert (rows.loc[sample_id, "label"], rows.loc[sample_id, "label_source"]) == (label, source), (
            sample_id
        )
        assert rows.loc[sample_id, "original_label"] == given[sample_id]
    others = loop["report"].loc[~loop["report"]["sample_id"].isin(list(plan) + ids), "sample_id"]
    assert (rows.loc[others, "label_source"] == "given").all()
    assert (rows.loc[others, "label"] == rows.loc[others, "original_label"]).all()
    dropped = unreviewed if accept_unreviewed == "drop" else []
    assert removed["sample_id"].tolist() == sorted(
        [ids[3], *dropped], key=list(loop["report"]["sample_id"]).index
    )
    assert removed.set_index("sample_id").loc[ids[3], ["reason", "note"]].tolist() == [
        "remove",
        '=HYPERLINK("http://x")',
    ]
    assert (removed.set_index("sample_id").loc[dropped, "reason"] == "unreviewed").all()
    assert len(cleaned) + len(removed) == len(loop["report"])
    info = json.loads((out / "apply.json").read_text())
    assert info["kind"] == "apply" and info["accept_unreviewed"] == accept_unreviewed
    assert info["decisions"] == {"accept": 1, "keep": 1, "relabel": 2, "remove": 1, "unsure": 1}
    assert info["num_unreviewed_flagged"] == len(unreviewed) and info["num_reviewed_unflagged"] == 1
    assert info["num_removed"] == len(removed) and info["num_kept"] == len(cleaned)
    # decisions.csv in the output is itself a decisions file: applying it again gives the same manifest.
    ok(
        [
            "apply",
            loop["run"],
            out / "decisions.csv",
            "--out",
            tmp_path / "again",
            "--accept-unreviewed",
            accept_unreviewed,
        ],
        capsys,
    )
    assert pd.read_parquet(tmp_path / "again" / "cleaned.parquet").equals(cleaned)


def test_relabel_to_the_suggested_or_given_class_is_applied_as_chosen(loop, tmp_path, capsys):
    """Issue 28 A: the review page records a class chosen from its list as relabel, even when it is the
    suggested or the given class; apply gives the sample that class and counts it as a relabel."""
    flagged = loop["flagged"]
    first, second = flagged.iloc[0], flagged.iloc[1]
    decisions = tmp_path / "decisions.csv"
    pd.DataFrame(
        {
            "sample_id": [first["sample_id"], second["sample_id"]],
            "decision": ["relabel", "relabel"],
            "new_label": [first["suggested_label"], second["given_label"]],
        }
    ).to_csv(decisions, index=False)
    ok(["apply", loop["run"], decisions, "--out", tmp_path / "out"], capsys)
    rows = pd.read_parquet(tmp_path / "out" / "cleaned.parquet").set_index("sample_id")
    assert rows.loc[first["sample_id"], ["label", "label_source"]].tolist() == [
        first["suggested_label"],
        "reviewed",
    ]
    assert rows.loc[second["sample_id"], ["label", "label_source"]].tolist() == [
        second["given_label"],
        "reviewed",
    ]
    info = json.loads((tmp_path / "out" / "apply.json").read_text())
    assert info["decisions"]["relabel"] == 2 and info["decisions"]["accept"] == info["decisions"]["keep"] == 0
    assert info["num_changed"] == int(first["suggested_label"] != first["given_label"])


def reviewer_files(loop, folder: Path) -> tuple[list[Path], dict]:
    """Three reviewers' decisions files on six flagged samples whose suggestion differs from the given
    label: alice.csv (named by its stem), b.csv (a reviewer column naming "Bob") and carol.csv."""
    flagged = loop["flagged"][loop["flagged"]["given_label"] != loop["flagged"]["suggested_label"]]
    assert len(flagged) >= 6, "the fixture scan should flag six samples with another suggestion"
    ids = flagged["sample_id"].tolist()[:6]
    given = dict(zip(flagged["sample_id"], flagged["given_label"]))
    suggested = dict(zip(flagged["sample_id"], flagged["suggested_label"]))
    other = {i: next(c for c in loop["classes"] if c not in (given[i], suggested[i])) for i in ids}
    folder.mkdir(parents=True, exist_ok=True)
    rows = {
        "alice.csv": [
            (ids[0], "accept", ""),
            (ids[1], "keep", ""),
            (ids[2], "relabel", other[ids[2]]),
            (ids[3], "remove", ""),
            (ids[4], "unsure", ""),
            (ids[5], "accept", ""),
        ],
        "b.csv": [
            (ids[0], "relabel", suggested[ids[0]]),  # means the same as alice's accept
            (ids[1], "remove", ""),
            (ids[2], "relabel", other[ids[2]]),
            (ids[4], "keep", ""),  # alice unsure: no vote, so Bob's keep stands
            (ids[5], "keep", ""),
        ],
        "carol.csv": [(ids[1], "remove", ""), (ids[5], "relabel", other[ids[5]])],
    }
    files = []
    for name, content in rows.items():
        frame = pd.DataFrame(content, columns=["sample_id", "decision", "new_label"])
        if name == "b.csv":
            frame["reviewer"] = "Bob"
        write_csv(folder / name, frame)
        files.append(folder / name)
    return files, {"ids": ids, "given": given, "suggested": suggested, "other": other}


def test_apply_merges_several_reviewers_and_lists_their_conflicts(loop, tmp_path, capsys):
    """Issue 28 D: apply RUN a.csv b.csv c.csv: agreement applies, conflicts follow --conflicts and are
    listed in conflicts.csv, apply.json holds each reviewer's pairwise agreement."""
    files, case = reviewer_files(loop, tmp_path / "reviews")
    ids, given, suggested, other = case["ids"], case["given"], case["suggested"], case["other"]
    before = snapshot(loop["root"], loop["run"], *files)
    outcomes = {}
    for rule in ("skip", "majority", "latest"):
        out = tmp_path / rule
        text = ok(
            ["apply", loop["run"], *files, "--out", out, "--conflicts", rule, "--accept-unreviewed", "drop"],
            capsys,
        )
        assert "3 reviewers" in text and "2 conflicts" in text and "conflicts.csv" in text
        assert sorted(p.name for p in out.iterdir()) == sorted(
            [
                MARKER,
                "apply.json",
                "cleaned.csv",
                "cleaned.parquet",
                "conflicts.csv",
                "decisions.csv",
                "removed.csv",
            ]
        )
        cleaned = pd.read_parquet(out / "cleaned.parquet").set_index("sample_id")
        removed = read_table(out / "removed.csv", "removed").fillna("").set_index("sample_id")
        outcomes[rule] = {
            i: ("removed", removed.loc[i, "reason"])
            if i in removed.index
            else (cleaned.loc[i, "label"], cleaned.loc[i, "label_source"])
            for i in ids
        }
        conflicts = read_table(out / "conflicts.csv", "conflicts").fillna("")
        assert conflicts["sample_id"].tolist() == [ids[1], ids[5]]  # run order
        assert conflicts["reviewers"].tolist() == ["alice;Bob;carol"] * 2
        assert conflicts["decisions"].tolist() == ["keep;remove;remove", "accept;keep;relabel"]
        assert conflicts.loc[1, "new_labels"] == f";;{other[ids[5]]}"
        info = json.loads((out / "apply.json").read_text())
        assert info["conflicts"] == rule and info["num_conflicts"] == 2
        assert info["decisions_file"] is None
        assert [r["name"] for r in info["reviewers"]] == ["alice", "Bob", "carol"]
        assert [r["num_decisions"] for r in info["reviewers"]] == [6, 5, 2]
        agreement = info["agreement"]
        assert agreement["alice"]["with"]["Bob"] == {"both_voted": 4, "agreed": 2, "rate": 0.5}
        assert agreement["alice"]["with"]["carol"] == {"both_voted": 2, "agreed": 0, "rate": 0.0}
        assert agreement["Bob"]["with"]["carol"] == {"both_voted": 2, "agreed": 1, "rate": 0.5}
        assert agreement["carol"]["rate"] == 0.25 and agreement["alice"]["num_voted"] == 5
        resolutions = conflicts["resolution"].tolist()
        assert (
            resolutions
            == {"skip": ["skip", "skip"], "majority": ["majority", "skip"], "latest": ["latest"] * 2}[rule]
        )
        assert info["num_conflicts_skipped"] == resolutions.count("skip")
    agreed = {
        ids[0]: (suggested[ids[0]], "reviewed"),
        ids[2]: (other[ids[2]], "reviewed"),
        ids[3]: ("removed", "remove"),
        ids[4]: (given[ids[4]], "reviewed"),
    }
    # skip: a conflict keeps its given label, even under --accept-unreviewed drop.
    assert outcomes["skip"] == {**agreed, ids[1]: (given[ids[1]], "given"), ids[5]: (given[ids[5]], "given")}
    assert outcomes["majority"] == {**agreed, ids[1]: ("removed", "remove"), ids[5]: (given[ids[5]], "given")}
    assert outcomes["latest"] == {
        **agreed,
        ids[1]: ("removed", "remove"),
        ids[5]: (other[ids[5]], "reviewed"),
    }
    assert snapshot(loop["root"], loop["run"], *files) == before  # the inputs were only read


def test_several_reviewers_errors_are_one_line(loop, tmp_path, capsys):
    files, case = reviewer_files(loop, tmp_path / "reviews")
    ids = case["ids"]
    twice = tmp_path / "again" / "alice.csv"  # another alice
    twice.parent.mkdir()
    shutil.copy(files[0], twice)
    two_names = tmp_path / "team.csv"
    write_csv(
        two_names, pd.DataFrame({"sample_id": ids[:2], "decision": ["keep"] * 2, "reviewer": ["x", "y"]})
    )
    unknown = tmp_path / "dave.csv"
    write_csv(unknown, pd.DataFrame({"sample_id": [ids[0], "nope.png"], "decision": ["keep", "keep"]}))
    for extra, fragments in (
        [[files[0], twice], ["'alice.csv' and 'alice.csv' are both reviewer 'alice'"]],
        [[files[0], two_names], ["'team.csv' names 2 reviewers", "one file per reviewer"]],
        [[files[0], unknown], ["'dave.csv'", "'nope.png'", "not in the scan"]],
        [[*files, "--conflicts", "vote"], ["--conflicts must be one of skip, majority, latest; got 'vote'"]],
    ):
        code, _, err = run(["apply", loop["run"], *extra, "--out", tmp_path / "out"], capsys)
        assert code == 2, extra
        one_line_error(err, *fragments)
    assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []


def test_apply_errors_are_one_line_and_write_nothing(loop, tmp_path, capsys):
    ids = loop["flagged"]["sample_id"].tolist()
    suggested = loop["flagged"]["suggested_label"].tolist()
    other = next(c for c in sorted(set(loop["flagged"]["given_label"])) if c != suggested[1])
    before = snapshot(loop["run"])
    cases = [
        (
            {"sample_id": [ids[0], "nope/1.png", "nope/2.png"], "decision": ["keep", "keep", "keep"]},
            ["'nope/1.png'", "not in the scan", "on line 3", "(2 unknown ids)"],
        ),
        (
            {
                "sample_id": ids[:3],
                "decision": ["keep", "relabel", "relabel"],
                "new_label": ["", "zebra", "okapi"],
            },
            ["relabels to 'zebra'", "on line 3", "not a class of the scan"],
        ),
        (
            {"sample_id": ids[:2], "decision": ["keep", "maybe"]},
            ["decision 'maybe'", "on line 3", "accept, keep"],
        ),
        (
            {"sample_id": ids[:2], "decision": ["keep", "relabel"], "new_label": ["", ""]},
            ["empty new_label", "line 3"],
        ),
        (
            {"sample_id": ids[:2], "decision": ["keep", "accept"], "new_label": ["", other]},
            [f"new_label {other!r}", "means the suggested label"],
        ),
        (
            {"sample_id": ids[:2], "decision": ["keep", "remove"], "new_label": ["", other]},
            ["means no label"],
        ),
        (
            {"sample_id": [ids[0], ids[0]], "decision": ["keep", "accept"]},
            ["repeats the sample_id", "line 3"],
        ),
        ({"sample_id": ids[:1], "verdict": ["keep"]}, ["lacks the column(s) ['decision']"]),
    ]
    for number, (columns, fragments) in enumerate(cases):
        decisions = tmp_path / f"d{number}.csv"
        pd.DataFrame(columns).to_csv(decisions, index=False)
        code, _, err = run(["apply", loop["run"], decisions, "--out", tmp_path / "out"], capsys)
        assert code == 2, columns
        one_line_error(err, *fragments)
    (tmp_path / "d0.txt").write_text("x")
    for bad, fragment in (
        [tmp_path / "missing.csv", "does not exist"],
        [tmp_path / "d0.txt", "must be a .csv"],
    ):
        code, _, err = run(["apply", loop["run"], bad, "--out", tmp_path / "out"], capsys)
        assert code == 2
        one_line_error(err, fragment)
    code, _, err = run(
        [
            "apply",
            loop["run"],
            tmp_path / "d0.csv",
            "--accept-unreviewed",
            "maybe",
            "--out",
            tmp_path / "out",
        ],
        capsys,
    )
    assert code == 2
    one_line_error(err, "--accept-unreviewed must be one of given, suggested, drop")
    assert not (tmp_path / "out").exists() and not [n for n in leftovers(tmp_path)]
    assert snapshot(loop["run"]) == before


def test_apply_output_is_all_or_nothing_and_never_over_an_input(loop, tmp_path, capsys):
    decisions = tmp_path / "in" / "decisions.csv"
    decisions.parent.mkdir()
    pd.DataFrame({"sample_id": loop["flagged"]["sample_id"].iloc[:1], "decision": ["accept"]}).to_csv(
        decisions, index=False
    )
    before = snapshot(loop["root"], loop["run"], decisions)
    for target, fragment in (
        [decisions.parent, "holds the input"],
        [loop["root"] / "x", "inside the input folder"],
        [loop["run"], "is one of the inputs"],
        [decisions, "is one of the inputs"],
    ):
        code, _, err = run(["apply", loop["run"], decisions, "--out", target, "--overwrite"], capsys)
        assert code == 2
        one_line_error(err, fragment)
    out = tmp_path / "cleaned"
    ok(["apply", loop["run"], decisions, "--out", out], capsys)
    (out / "stray.txt").write_text("x")
    code, _, err = run(["apply", loop["run"], decisions, "--out", out, "--overwrite"], capsys)
    assert code == 2
    one_line_error(err, "files labelaudit did not write there (stray.txt)")
    (out / "stray.txt").unlink()
    code, _, err = run(["apply", loop["run"], decisions, "--out", out], capsys)
    assert code == 2
    one_line_error(err, "holds an earlier apply output; pass --overwrite")
    # A failing apply into an earlier output leaves it exactly as it was.
    earlier = snapshot(out)
    bad = tmp_path / "bad.csv"
    pd.DataFrame({"sample_id": ["nope"], "decision": ["keep"]}).to_csv(bad, index=False)
    code, _, err = run(["apply", loop["run"], bad, "--out", out, "--overwrite"], capsys)
    assert code == 2
    assert snapshot(out) == earlier and leftovers(tmp_path) == []
    ok(["apply", loop["run"], decisions, "--out", out, "--overwrite", "--accept-unreviewed", "drop"], capsys)
    assert json.loads((out / "apply.json").read_text())["accept_unreviewed"] == "drop"
    assert snapshot(loop["root"], loop["run"], decisions) == before


def test_cleaned_manifest_scans_and_retrain_learns_the_reviewed_labels(loop, tmp_path, capsys):
    decisions, case = decisions_from_review(loop, tmp_path, capsys)
    out = tmp_path / "cleaned"
    ok(["apply", loop["run"], decisions, "--out", out], capsys)
    cleaned = pd.read_parquet(out / "cleaned.parquet")
    # The cleaned manifest is a source as it is.
    ok(
        ["scan", out / "cleaned.parquet", "--out", tmp_path / "rescan", "--cache-dir", loop["cache"], *FAST],
        capsys,
    )
    rescan = pd.read_parquet(tmp_path / "rescan" / "report.parquet")
    assert sorted(rescan["sample_id"]) == sorted(cleaned["sample_id"])
    assert dict(zip(rescan["sample_id"], rescan["given_label"])) == dict(
        zip(cleaned["sample_id"], cleaned["label"])
    )
    # retrain --labels: one network on exactly those labels; the removed sample is not trained on.
    before = snapshot(out)
    ok(
        [
            "retrain",
            loop["run"],
            "--labels",
            out / "cleaned.parquet",
            "--epochs",
            "2",
            "--out",
            tmp_path / "re",
            "--cache-dir",
            loop["cache"],
            "--quiet",
        ],
        capsys,
    )
    assert snapshot(out) == before
    summary = json.loads((tmp_path / "re" / "summary.json").read_text())
    assert summary["mode"] == "labels" and summary["labels_file"] == str((out / "cleaned.parquet").resolve())
    assert list(summary["training_curves"]) == ["reviewed labels"] and summary["num_in_training"] == len(
        cleaned
    )
    learnt = pd.read_parquet(tmp_path / "re" / "cleaned_labels.parquet").set_index("sample_id")
    assert (learnt.loc[cleaned["sample_id"], "cleaned_label"].to_numpy() == cleaned["label"].to_numpy()).all()
    assert learnt.loc[cleaned["sample_id"], "in_training"].all()
    removed_id = case["ids"][3]
    assert not learnt.loc[removed_id, "in_training"]
    assert learnt.loc[case["ids"][2], "cleaned_label"] == case["plan"][case["ids"][2]][1]
    # The labels file is an input; labels must be the run's classes; --labels takes no --mode.
    code, _, err = run(
        ["retrain", loop["run"], "--labels", out / "cleaned.parquet", "--out", out, "--overwrite"], capsys
    )
    assert code == 2
    one_line_error(err, "holds the input")
    odd_labels = tmp_path / "odd.csv"
    pd.DataFrame(
        {"sample_id": cleaned["sample_id"], "label": ["zebra"] + cleaned["label"].tolist()[1:]}
    ).to_csv(odd_labels, index=False)
    code, _, err = run(["retrain", loop["run"], "--labels", odd_labels, "--out", tmp_path / "re2"], capsys)
    assert code == 2
    one_line_error(err, "label 'zebra'", "on line 2", "not a class of the scan")
    code, _, err = run(
        [
            "retrain",
            loop["run"],
            "--labels",
            out / "cleaned.parquet",
            "--mode",
            "drop",
            "--out",
            tmp_path / "re2",
        ],
        capsys,
    )
    assert code == 2
    one_line_error(err, "takes no --mode")
    code, _, err = run(["retrain", loop["run"], "--mode", "labels", "--out", tmp_path / "re2"], capsys)
    assert code == 2
    one_line_error(err, "pass --labels FILE")
    one_class = tmp_path / "one-class.parquet"
    cleaned[cleaned["label"] == "blob"].to_parquet(one_class, index=False)
    code, _, err = run(["retrain", loop["run"], "--labels", one_class, "--out", tmp_path / "re2"], capsys)
    assert code == 2
    one_line_error(err, "has the class 'checker'", "nothing to learn it from")
    assert not (tmp_path / "re2").exists()


# Label Studio, for real ------------------------------------------------------------------------


class LabelStudio:
    """A Label Studio server started for the tests, spoken to through its REST API."""

    def __init__(self, document_root: Path, data_dir: Path) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.base = f"http://127.0.0.1:{self.port}"
        self.token = secrets.token_hex(20)
        self.log = data_dir / "server.log"
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(data_dir),
            "LANG": "C.UTF-8",
            "PYTHONUNBUFFERED": "1",
            "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
            "LABEL_STUDIO_USERNAME": "reviewer@example.com",
            "LABEL_STUDIO_PASSWORD": secrets.token_hex(8),
            "LABEL_STUDIO_USER_TOKEN": self.token,
            "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED": "true",
            "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": str(document_root),
            "SENTRY_DSN": "",
            "COLLECT_ANALYTICS": "false",
            "LATEST_VERSION_CHECK": "false",
        }
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                [
                    str(LABEL_STUDIO),
                    "start",
                    "--no-browser",
                    "--internal-host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--data-dir",
                    str(data_dir / "data"),
                ],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def wait_until_up(self, timeout: float = 420) -> float:
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if self.process.poll() is not None:
                pytest.fail(f"label-studio exited with {self.process.returncode}: {self.log_tail()}")
            try:
                with urllib.request.urlopen(self.base + "/health", timeout=5) as response:
                    if response.status == 200:
                        self.call("GET", "/api/projects")  # our token: our server, not another on the port
                        return time.monotonic() - started
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(1)
        pytest.fail(f"label-studio did not answer /health within {timeout:.0f} s: {self.log_tail()}")

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-2000:]

    def call(self, method: str, path: str, body=None, raw: bool = False):
        request = urllib.request.Request(
            self.base + path,
            method=method,
            data=None if body is None else json.dumps(body).encode("utf-8"),
            headers={"Authorization": f"Token {self.token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                payload = response.read()
                return (
                    (response.status, response.headers.get("Content-Type"), payload)
                    if raw
                    else json.loads(payload)
                )
        except urllib.error.HTTPError as exc:
            pytest.fail(f"{method} {path} -> HTTP {exc.code}: {exc.read()[:500]!r}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=20)


@pytest.fixture(scope="module")
def label_studio(odd, tmp_path_factory):
    """A real Label Studio serving local files from the parent of the odd dataset's folder."""
    if not LABEL_STUDIO.exists():
        pytest.skip(f"Label Studio is not installed at {LABEL_STUDIO}: run `make test-tools`")
    server = LabelStudio(odd["base"], tmp_path_factory.mktemp("label-studio"))
    try:
        server.startup_seconds = server.wait_until_up()
        yield server
    finally:
        server.stop()


def choice(name: str) -> list[dict]:
    return [{"from_name": "label", "to_name": "image", "type": "choices", "value": {"choices": [name]}}]


def test_apply_round_trips_a_label_studio_export_of_our_tasks(odd, label_studio, tmp_path, capsys):
    ls = label_studio
    export = tmp_path / "tasks"
    ok(["export", odd["run"], "--out", export], capsys)
    info = json.loads((export / "export.json").read_text())["label_studio"]
    tasks_file = json.loads((export / "tasks.json").read_text(encoding="utf-8"))
    project = ls.call(
        "POST",
        "/api/projects",
        {
            "title": "labelaudit review",
            "label_config": (export / "label_config.xml").read_text(encoding="utf-8"),
        },
    )
    assert ls.call("GET", f"/api/projects/{project['id']}")["parsed_label_config"]["label"][
        "labels"
    ] == sorted(ODD_CLASSES)
    (storage,) = info["storage_folders"]
    # no sync: only our tasks
    ls.call(
        "POST",
        "/api/storages/localfiles",
        {"project": project["id"], "path": storage, "title": "images", "use_blob_urls": False},
    )
    imported = ls.call("POST", f"/api/projects/{project['id']}/import", tasks_file)
    assert imported["task_count"] == len(tasks_file) and imported["prediction_count"] == len(tasks_file)
    listed = ls.call("GET", f"/api/tasks?project={project['id']}&page_size=1000")
    tasks = {t["data"]["sample_id"]: t for t in (listed["tasks"] if isinstance(listed, dict) else listed)}
    assert len(tasks) == len(tasks_file)

    # The image reference is served: '+', spaces, 'é', '&' and '#' in its path survive.
    first = odd["flagged"].iloc[0]
    status, content_type, body = ls.call("GET", tasks[first["sample_id"]]["data"]["image"], raw=True)
    assert status == 200 and content_type.startswith("image/") and body == Path(first["path"]).read_bytes()

    # Review: a relabel, an accept, a skip, and two reviewers disagreeing (the later one wins).
    flagged_ids = odd["flagged"]["sample_id"].tolist()
    report = odd["report"].set_index("sample_id")
    given, suggested = report["given_label"], report["suggested_label"]
    differ = [i for i in flagged_ids if suggested[i] != given[i]]  # accept and keep must be told apart
    assert len(differ) >= 2
    accepted, disputed = differ[:2]
    relabelled, skipped = [i for i in flagged_ids if i not in differ[:2]][:2]
    other = next(c for c in ODD_CLASSES if c not in (given[relabelled], suggested[relabelled]))
    annotate = lambda sample_id, result, cancelled=False: ls.call(  # noqa: E731
        "POST",
        f"/api/tasks/{tasks[sample_id]['id']}/annotations",
        {"result": result, "was_cancelled": cancelled},
    )
    annotate(relabelled, choice(other))
    annotate(accepted, choice(suggested[accepted]))
    annotate(skipped, [], cancelled=True)
    annotate(disputed, choice(next(c for c in ODD_CLASSES if c != given[disputed])))
    annotate(disputed, choice(given[disputed]))  # later: wins
    status, _, payload = ls.call("GET", f"/api/projects/{project['id']}/export?exportType=JSON", raw=True)
    exported = tmp_path / "label-studio-export.json"
    exported.write_bytes(payload)
    reviewed = [relabelled, accepted, skipped, disputed]
    # annotated tasks only
    assert sorted(t["data"]["sample_id"] for t in json.loads(payload)) == sorted(reviewed)

    before = snapshot(exported, odd["run"], odd["root"])
    out = tmp_path / "cleaned"
    ok(["apply", odd["run"], exported, "--out", out, "--accept-unreviewed", "drop"], capsys)
    assert snapshot(exported, odd["run"], odd["root"]) == before
    cleaned = pd.read_parquet(out / "cleaned.parquet").set_index("sample_id")
    assert cleaned.loc[relabelled, ["label", "label_source"]].tolist() == [other, "reviewed"]
    assert cleaned.loc[accepted, ["label", "label_source"]].tolist() == [suggested[accepted], "reviewed"]
    assert cleaned.loc[disputed, ["label", "label_source"]].tolist() == [given[disputed], "reviewed"]
    assert len(cleaned) == 3 + (~(report["suspected_noisy"] | report["is_ambiguous"])).sum()
    removed = read_table(out / "removed.csv", "removed").set_index("sample_id")
    assert removed.loc[skipped, "reason"] == "unreviewed"  # a skipped task is unreviewed (dropped here)
    assert set(removed.index) == set(flagged_ids) - {relabelled, accepted, disputed}
    summary = json.loads((out / "apply.json").read_text())
    assert summary["decisions_format"] == "label-studio" and summary["num_conflicting_reviews"] == 1
    assert summary["decisions"] == {"accept": 1, "keep": 1, "relabel": 1, "remove": 0, "unsure": 0}
    assert read_table(out / "cleaned.csv", "cleaned").set_index("sample_id").loc[relabelled, "label"] == other
    print(f"label-studio started in {ls.startup_seconds:.0f} s")
