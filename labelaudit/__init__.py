"""labelaudit: audit image classification datasets for wrong labels.

Library entry points (the CLI calls exactly these):

- :func:`load_source`: image folder or parquet/CSV manifest -> :class:`SampleTable`
- :func:`load_images`: decode once into a memory-mapped cache -> :class:`ImageStore`
- :func:`inspect_store`: classes, sizes, skipped files and duplicates -> :class:`DatasetReport`
- :func:`scan`: train an audit method and flag suspect labels -> :class:`ScanResult`;
  :func:`write_run` writes its run directory
- :func:`write_review`: the review page of a run; :func:`export_run`: its flagged samples for
  Label Studio, a spreadsheet or FiftyOne; :func:`apply_decisions` + :func:`write_apply`:
  reviewers' decisions -> a cleaned manifest
- :func:`retrain` + :func:`write_retrain`: a model trained on the cleaned (or reviewed) labels
"""

__version__ = "0.1.0"  # before the imports: submodules read it

import sys as _sys

if _sys.argv and _sys.argv[0].replace("\\", "/").rsplit("/", 1)[-1] in ("labelaudit", "labelaudit.exe", "-m"):
    # The console script or `python -m labelaudit` is starting: hold a Ctrl-C until the CLI can
    # answer it (labelaudit._interrupt); a program importing labelaudit is left alone.
    from . import _interrupt

    _interrupt.hold_while_importing()

from .data.images import ImageStore, load_images
from .data.inspect import DatasetReport, inspect_store
from .data.sources import SampleTable, load_source
from .errors import ConfigError, DatasetError, LabelAuditError, ManifestError, SourceNotFoundError

__all__ = [
    "ConfigError",
    "DatasetError",
    "DatasetReport",
    "ImageStore",
    "LabelAuditError",
    "ManifestError",
    "SampleTable",
    "ScanConfig",
    "ScanResult",
    "SourceNotFoundError",
    "apply_decisions",
    "export_run",
    "find_similarity_issues",
    "inspect_store",
    "load_images",
    "load_source",
    "retrain",
    "scan",
    "write_apply",
    "write_retrain",
    "write_review",
    "write_run",
]

# Imported on first use: most of these load torch.
_LAZY = {
    "ScanConfig": "pipeline.scan",
    "ScanResult": "pipeline.scan",
    "scan": "pipeline.scan",
    "write_run": "pipeline.scan",
    "retrain": "pipeline.retrain",
    "write_retrain": "pipeline.retrain",
    "write_review": "review.page",
    "export_run": "review.export",
    "apply_decisions": "review.apply",
    "write_apply": "review.apply",
    "find_similarity_issues": "audit.similarity",
}


def __getattr__(name: str):
    if name in _LAZY:
        from importlib import import_module

        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'labelaudit' has no attribute {name!r}")
