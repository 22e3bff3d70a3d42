"""labelaudit: audit image classification datasets for wrong labels.

Library entry points (the CLI calls exactly these):

- :func:`load_source`: image folder or parquet/CSV manifest -> :class:`SampleTable`
- :func:`load_images`: decode once into a memory-mapped cache -> :class:`ImageStore`
- :func:`inspect_store`: classes, sizes, skipped files and duplicates -> :class:`DatasetReport`
- :func:`scan`: train an audit method and flag suspect labels -> :class:`ScanResult`;
  :func:`write_run` writes its run directory
"""

__version__ = "0.1.0"  # before the imports: submodules read it

from .dataset_report import DatasetReport, inspect_store
from .errors import ConfigError, DatasetError, LabelAuditError, ManifestError, SourceNotFoundError
from .images import ImageStore, load_images
from .sources import SampleTable, load_source


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
    "inspect_store",
    "load_images",
    "load_source",
    "scan",
    "write_run",
]

_LAZY = {"ScanConfig", "ScanResult", "scan", "write_run"}  # import torch only when used


def __getattr__(name: str):
    if name in _LAZY:
        from . import scanner

        return getattr(scanner, name)
    raise AttributeError(f"module 'labelaudit' has no attribute {name!r}")
