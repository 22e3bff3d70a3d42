"""Several reviewers' decisions on one scan: agreement, conflicts and one decision per sample.

``apply RUN a.csv b.csv ...`` takes one decisions file per reviewer (:func:`merge_reviews`). A
reviewer is named by the file's ``reviewer`` column, else by the file's stem (``alice.csv`` ->
``alice``); two files may not name the same reviewer.

What each reviewer's decision *means* for a sample is compared, not its spelling: ``accept``
(the suggested label), ``keep`` (the given label) and ``relabel`` to a class are the label they
give the sample, ``remove`` drops it. ``accept`` and ``relabel`` to the suggested class agree.
``unsure`` is no vote: a sample that one reviewer decided and another marked ``unsure`` takes the
decision; a sample only marked ``unsure`` stays ``unsure`` (unreviewed).

A sample whose votes differ is a **conflict**, never settled silently. The rule
(:data:`CONFLICT_RULES`):

- ``skip`` (the default): no decision; the sample keeps its given label (whatever
  ``accept_unreviewed`` says) and is listed in ``conflicts.csv``;
- ``majority``: the most common meaning wins; a tie is skipped;
- ``latest``: the vote of the reviewer whose file came last wins.

Agreement between two reviewers is the share of the samples both voted on (``unsure`` is no
vote) where their votes mean the same.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..errors import ConfigError, ManifestError
from .decisions import DECISION_COLUMNS, SOURCE_COLUMNS, Decisions

CONFLICT_RULES = ("skip", "majority", "latest")
#: Columns of ``conflicts.csv``: per reviewer (in the order of the files, ``;``-separated) the
#: decision and its new label, then what the rule made of it (``resolution``: ``skip``, or the
#: rule that chose ``decision``/``new_label``).
CONFLICT_COLUMNS = [
    "sample_id",
    "given_label",
    "suggested_label",
    "reviewers",
    "decisions",
    "new_labels",
    "resolution",
    "decision",
    "new_label",
]
_REMOVE = "\x00remove"  # the meaning of remove (no class can be named NUL)


@dataclass
class Reviews:
    """Several reviewers' decisions merged into one decision per sample.

    Attributes
    ----------
    decisions : Decisions
        The merged decisions (:data:`~labelaudit.review.decisions.DECISION_COLUMNS`), one row per
        sample with a decision; skipped conflicts have none.
    reviewers : list of str
        The reviewers, in the order of their files.
    sources : list of Decisions
        Each reviewer's decisions, as read.
    rule : {"skip", "majority", "latest"}
    conflicts : pandas.DataFrame
        :data:`CONFLICT_COLUMNS`, one row per sample the reviewers disagree on, in run order.
    skipped : list of str
        The sample ids of the conflicts left undecided (they keep their given label).
    agreement : dict
        Per reviewer: ``num_voted`` (decisions other than unsure) and, per other reviewer,
        ``both_voted``, ``agreed`` and ``rate`` (``agreed / both_voted``, None when 0); ``rate``
        over all the others.
    """

    decisions: Decisions
    reviewers: list[str]
    sources: list[Decisions]
    rule: str
    conflicts: pd.DataFrame
    skipped: list[str] = field(default_factory=list)
    agreement: dict = field(default_factory=dict)


def merge_reviews(sources: list[Decisions], run, *, conflicts: str = "skip") -> Reviews:
    """One decision per sample from several reviewers' decisions (see the module's docstring).

    Parameters
    ----------
    sources : list of Decisions
        One per reviewer, in the order given (``latest`` takes the last).
    run : labelaudit.runs.scan_run.ScanRun
        The scan the decisions are about (its given and suggested labels give them meaning).
    conflicts : {"skip", "majority", "latest"}, default="skip"

    Returns
    -------
    Reviews

    Raises
    ------
    ConfigError
        An unknown ``conflicts`` rule.
    ManifestError
        Two files name the same reviewer.
    """
    if conflicts not in CONFLICT_RULES:
        raise ConfigError(f"--conflicts must be one of {', '.join(CONFLICT_RULES)}; got {conflicts!r}")
    names = [d.reviewer_name for d in sources]
    seen: dict[str, Decisions] = {}
    for name, d in zip(names, sources):
        if name in seen:
            raise ManifestError(
                f"decisions files {seen[name].path.name!r} and {d.path.name!r} are both reviewer {name!r} "
                "(their reviewer column or file name); give each reviewer's file its own name"
            )
        seen[name] = d
    return _merge(sources, names, run, conflicts)


def _merge(sources: list[Decisions], names: list[str], run, rule: str) -> Reviews:
    """:func:`merge_reviews` on checked input."""
    report = run.report
    ids = report["sample_id"].astype(str).tolist()
    given = dict(zip(ids, report["given_label"].astype(str)))
    suggested = dict(zip(ids, report["suggested_label"].astype(str)))
    # rows[sample] = [(reviewer position, decision, new_label, note), ...] in file order
    rows: dict[str, list[tuple[int, str, str, str]]] = {}
    for r, d in enumerate(sources):
        f = d.frame
        for sample, decision, new_label, note in zip(
            f["sample_id"], f["decision"], f["new_label"], f["note"]
        ):
            rows.setdefault(str(sample), []).append((r, decision, new_label, note))

    def meaning(sample: str, decision: str, new_label: str) -> str | None:
        if decision == "accept":
            return suggested[sample]
        if decision == "keep":
            return given[sample]
        if decision == "relabel":
            return new_label
        return _REMOVE if decision == "remove" else None  # unsure: no vote

    merged, conflict_rows, skipped = [], [], []
    # How each reviewer's decision was made (SOURCE_COLUMNS), for files that say it.
    how: dict[tuple[int, str], tuple[str, str, str]] = {}
    for r, d in enumerate(sources):
        if d.with_source:
            f = d.frame
            for row in zip(f["sample_id"], *(f[c] for c in SOURCE_COLUMNS)):
                how[(r, str(row[0]))] = tuple(str(v) for v in row[1:])
    merged_how = []
    votes_of: dict[str, dict[int, str]] = {}
    for sample in [i for i in ids if i in rows]:  # run order
        entries = rows[sample]
        votes = {r: m for r, dec, lab, _ in entries if (m := meaning(sample, dec, lab)) is not None}
        votes_of[sample] = votes
        note = _notes([(names[r], n) for r, _, _, n in entries])
        if not votes:  # unsure only
            merged.append((sample, "unsure", "", note))
            merged_how.append(("manual", "", ""))
            continue
        kinds = Counter(votes.values())
        chosen: int | None  # the reviewer whose row is applied
        if len(kinds) == 1:
            chosen = next(iter(votes))  # agreement: the first file's spelling
            resolution = None
        elif rule == "latest":
            chosen, resolution = max(votes), "latest"
        elif rule == "majority":
            (top, n), *rest = kinds.most_common()
            tie = bool(rest) and rest[0][1] == n
            chosen = None if tie else next(r for r, m in votes.items() if m == top)
            resolution = "skip" if tie else "majority"
        else:
            chosen, resolution = None, "skip"
        pick = next(e for e in entries if e[0] == chosen) if chosen is not None else None
        if pick is not None:
            merged.append((sample, pick[1], pick[2], note))
            merged_how.append(how.get((pick[0], sample), ("manual", "", "")))
        else:
            skipped.append(sample)
        if resolution is not None:
            conflict_rows.append(
                {
                    "sample_id": sample,
                    "given_label": given[sample],
                    "suggested_label": suggested[sample],
                    "reviewers": ";".join(names[r] for r, *_ in entries),
                    "decisions": ";".join(dec for _, dec, _, _ in entries),
                    "new_labels": ";".join(lab for _, _, lab, _ in entries),
                    "resolution": resolution,
                    "decision": pick[1] if pick else "",
                    "new_label": pick[2] if pick else "",
                }
            )
    frame = pd.DataFrame(merged, columns=DECISION_COLUMNS)
    with_source = any(d.with_source for d in sources)
    if with_source:  # the applied reviewer's source (a bulk decision stays one)
        columns = list(zip(*merged_how)) if merged_how else [(), (), ()]
        frame = frame.assign(**{c: list(v) for c, v in zip(SOURCE_COLUMNS, columns)})
    decisions = Decisions(
        frame,
        sources[0].path,
        "merged",
        num_conflicting=sum(d.num_conflicting for d in sources),
        with_source=with_source,
    )
    return Reviews(
        decisions=decisions,
        reviewers=names,
        sources=list(sources),
        rule=rule,
        conflicts=pd.DataFrame(conflict_rows, columns=CONFLICT_COLUMNS),
        skipped=skipped,
        agreement=_agreement(names, votes_of),
    )


def _notes(notes: list[tuple[str, str]]) -> str:
    """One note from the reviewers' notes on a sample: the note itself when one reviewer wrote one,
    else ``name: note`` joined by `` | ``."""
    written = [(name, n) for name, n in notes if n]
    if len(written) <= 1:
        return written[0][1] if written else ""
    return " | ".join(f"{name}: {n}" for name, n in written)


def _agreement(names: list[str], votes_of: dict[str, dict[int, str]]) -> dict:
    """``Reviews.agreement`` from each sample's votes (reviewer position -> meaning)."""
    k = len(names)
    both = np.zeros((k, k), dtype=int)
    agreed = np.zeros((k, k), dtype=int)
    voted = np.zeros(k, dtype=int)
    for votes in votes_of.values():
        for a, ma in votes.items():
            voted[a] += 1
            for b, mb in votes.items():
                if a != b:
                    both[a, b] += 1
                    agreed[a, b] += ma == mb

    def rate(n: int, m: int) -> float | None:
        return round(m / n, 4) if n else None

    return {
        names[a]: {
            "num_voted": int(voted[a]),
            "rate": rate(int(both[a].sum()), int(agreed[a].sum())),
            "with": {
                names[b]: {
                    "both_voted": int(both[a, b]),
                    "agreed": int(agreed[a, b]),
                    "rate": rate(int(both[a, b]), int(agreed[a, b])),
                }
                for b in range(k)
                if b != a
            },
        }
        for a in range(k)
    }
