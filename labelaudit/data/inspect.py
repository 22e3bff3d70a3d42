"""Describe a dataset before auditing it: classes, image sizes, skipped files, duplicates.

Exact duplicate files (same bytes) filed under different labels are strong evidence of label
noise on their own: at most one of the labels can be right.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import pandas as pd

from .images import ImageStore

#: Skipped files listed in the JSON form (``num_skipped`` counts them all; ``skipped.csv`` lists
#: them all): a manifest of a million missing paths would otherwise make a JSON "summary" of
#: hundreds of megabytes, built in memory several times over.
MAX_SKIPPED_IN_JSON = 1000


@dataclass(frozen=True)
class DatasetReport:
    """What :func:`inspect_store` found. ``to_dict()`` gives the JSON form.

    ``skipped`` is a frame (columns ``path, reason, detail``, one row per skipped file): a
    manifest whose paths are mostly missing skips as many files as it has rows, and a dict per
    file would cost several times the frame.
    """

    source: str
    kind: str
    num_samples: int
    class_counts: dict[str, int]
    few_sample_classes: list[str]
    image_sizes: list[tuple[int, int, int]]
    modes: dict[str, int]
    formats: dict[str, int]
    cache_image_size: int
    cache_channels: int
    cache_reused: bool
    skipped_by_reason: dict[str, int]
    skipped: pd.DataFrame
    duplicate_groups: list[dict]
    conflicting_duplicate_groups: list[dict]
    duplicate_manifest_rows: int
    conflicting_manifest_rows: int

    def to_dict(self, *, max_skipped: int | None = MAX_SKIPPED_IN_JSON) -> dict:
        """The JSON form: counts and lists; ``skipped`` holds the first ``max_skipped`` skipped
        files (all when None), ``skipped_truncated`` says whether some were left out."""
        listed = self.skipped if max_skipped is None else self.skipped.head(max_skipped)
        return {
            "source": self.source,
            "kind": self.kind,
            "num_samples": self.num_samples,
            "num_classes": len(self.class_counts),
            "class_counts": self.class_counts,
            "few_sample_classes": self.few_sample_classes,
            "image_sizes": [{"width": w, "height": h, "count": n} for w, h, n in self.image_sizes],
            "modes": self.modes,
            "formats": self.formats,
            "cache": {
                "image_size": self.cache_image_size,
                "channels": self.cache_channels,
                "reused": self.cache_reused,
            },
            "num_skipped": len(self.skipped),
            "skipped_by_reason": self.skipped_by_reason,
            "skipped": listed.to_dict(orient="records"),
            "skipped_truncated": len(listed) < len(self.skipped),
            "num_duplicate_groups": len(self.duplicate_groups),
            "duplicate_groups": self.duplicate_groups,
            "num_conflicting_duplicate_groups": len(self.conflicting_duplicate_groups),
            "conflicting_duplicate_groups": self.conflicting_duplicate_groups,
            "duplicate_manifest_rows": self.duplicate_manifest_rows,
            "conflicting_manifest_rows": self.conflicting_manifest_rows,
        }


def inspect_store(store: ImageStore, *, max_sizes: int = 10) -> DatasetReport:
    """Summarise a decoded dataset.

    Parameters
    ----------
    store : ImageStore
        From :func:`labelaudit.data.images.load_images`.
    max_sizes : int, default=10
        How many of the most common ``(width, height)`` pairs to list.

    Returns
    -------
    DatasetReport
    """
    table = store.table
    samples = table.samples
    counts = table.class_counts()
    sizes = Counter(zip(store.files["width"], store.files["height"]))
    skipped = table.skipped
    groups = _duplicate_groups(samples, store.files)
    dup_rows = table.duplicate_rows
    return DatasetReport(
        source=str(table.source),
        kind=table.kind,
        num_samples=len(table),
        class_counts={name: int(n) for name, n in counts.items()},
        few_sample_classes=table.few_sample_classes(),
        image_sizes=[(int(w), int(h), n) for (w, h), n in sizes.most_common(max_sizes)],
        modes={k: int(v) for k, v in store.files["mode"].value_counts().items()},
        formats={k: int(v) for k, v in store.files["format"].value_counts().items()},
        cache_image_size=store.image_size,
        cache_channels=store.channels,
        cache_reused=store.reused,
        skipped_by_reason={k: int(v) for k, v in skipped["reason"].value_counts().items()},
        skipped=skipped[["path", "reason", "detail"]].reset_index(drop=True),
        duplicate_groups=groups,
        conflicting_duplicate_groups=[g for g in groups if len(set(g["labels"])) > 1],
        duplicate_manifest_rows=int(len(dup_rows)),
        conflicting_manifest_rows=int(dup_rows["conflicting"].sum()) if len(dup_rows) else 0,
    )


def _duplicate_groups(samples: pd.DataFrame, files: pd.DataFrame) -> list[dict]:
    """Groups of samples whose files have identical bytes, largest first."""
    frame = pd.DataFrame(
        {
            "sha1": files["sha1"].to_numpy(),
            "sample_id": samples["sample_id"].to_numpy(),
            "label": samples["label"].to_numpy(),
        }
    )
    repeated = frame[frame["sha1"].duplicated(keep=False)]
    groups = [
        {"sha1": sha1, "sample_ids": list(group["sample_id"]), "labels": list(group["label"])}
        for sha1, group in repeated.groupby("sha1", sort=True)
    ]
    groups.sort(key=lambda g: (-len(g["sample_ids"]), g["sample_ids"][0]))
    return groups
