"""Issue types as plug-ins (issue 26): one IssueType in audit/issue_types.py is all the report's
reason column, the summary counts, the review page's views and the exports need to know of it."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from labelaudit.audit import issue_types
from labelaudit.audit.flags import reason_column, review_mask
from labelaudit.audit.issue_types import ISSUE_TYPES, IssueType, issue_summary, page_issue_types, tags


@pytest.fixture
def blurry(monkeypatch):
    """A fourth issue type, registered the way a new one would be."""
    kind = IssueType(
        reason="blurry",
        flag_column="is_blurry",
        title="blurry image",
        view_title="blurry images",
        tag="blurry",
        columns=("blur_score", "is_blurry"),
        summary_keys=("n_blurry",),
    )
    monkeypatch.setitem(ISSUE_TYPES, "blurry", kind)
    return kind


def _report(**extra) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "suspected_noisy": [True, False, False, True],
            "duplicate_conflict": [False, True, False, False],
            "is_outlier": [False, False, False, True],
            **extra,
        }
    )


def test_the_reason_column_lists_every_registered_type_in_order(blurry):
    report = _report(is_blurry=[True, False, True, False])
    assert reason_column(report).tolist() == ["label;blurry", "duplicate_conflict", "blurry", "label;outlier"]
    assert review_mask(report.assign(reason=reason_column(report))).tolist() == [True, True, True, True]


def test_a_type_whose_column_is_missing_lists_nothing(blurry):
    assert reason_column(_report()).tolist() == ["label", "duplicate_conflict", "", "label;outlier"]
    bare = pd.DataFrame({"suspected_noisy": [True, False]})  # a scan that searched no similarity
    assert reason_column(bare).tolist() == ["label", ""]


def test_summary_page_and_export_words_come_from_the_registry(blurry):
    found = SimpleNamespace(n_duplicate_groups=3, n_duplicate_conflicts=2, n_outliers=1, n_blurry=np.int64(4))
    assert issue_summary(found) == {
        "n_duplicate_groups": 3,
        "n_duplicate_conflicts": 2,
        "n_outliers": 1,
        "n_blurry": 4,
    }
    assert issue_summary(None) == dict.fromkeys(
        ["n_duplicate_groups", "n_duplicate_conflicts", "n_outliers", "n_blurry"]
    )
    views = page_issue_types()
    assert [v["reason"] for v in views] == ["label", "ambiguous", "duplicate_conflict", "outlier", "blurry"]
    assert views[-1] == {"reason": "blurry", "title": "blurry image", "view": "blurry images"}
    assert tags("label;blurry") == ["suspected_noisy", "blurry"]
    assert tags("") == ["suspected_noisy"]  # an older scan's row: listed for its label


def test_the_similarity_columns_are_the_registered_types_columns_then_reason():
    assert issue_types.SIMILARITY_COLUMNS == (
        "duplicate_group",
        "duplicate_of",
        "duplicate_similarity",
        "duplicate_conflict",
        "outlier_score",
        "is_outlier",
        "reason",
    )
    for kind in ISSUE_TYPES.values():
        if kind.reason in ("label", "ambiguous"):  # the audit's own: every report has their columns
            continue
        assert kind.flag_column in kind.columns
        assert set(kind.export_columns) <= set(kind.columns)
