"""labelaudit: audit image classification datasets for wrong labels.

Library entry points (the CLI calls exactly these):

- :func:`load_source`: image folder or parquet/CSV manifest -> :class:`SampleTable`
- :func:`load_images`: decode once into a memory-mapped cache -> :class:`ImageStore`
- :func:`inspect_store`: classes, sizes, skipped files and duplicates -> :class:`DatasetReport`
"""

from .dataset_report import DatasetReport, inspect_store
from .errors import ConfigError, DatasetError, LabelAuditError, ManifestError, SourceNotFoundError
from .images import ImageStore, load_images
from .sources import SampleTable, load_source

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "DatasetError",
    "DatasetReport",
    "ImageStore",
    "LabelAuditError",
    "ManifestError",
    "SampleTable",
    "SourceNotFoundError",
    "inspect_store",
    "load_images",
    "load_source",
]
