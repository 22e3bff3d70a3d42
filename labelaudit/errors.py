"""Typed exceptions raised by the library.

Every error a user can cause (a wrong path, a misnamed column, a dataset with one class) is a
:class:`LabelAuditError` whose message is one line saying what is wrong and how to fix it. The
CLI prints that line and exits with status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class LabelAuditError(Exception):
    """Base class for user-facing errors: the message names the problem and the fix."""


class SourceNotFoundError(LabelAuditError):
    """The image folder or manifest given as the source does not exist."""


class ManifestError(LabelAuditError):
    """A parquet/CSV manifest cannot be read or lacks the columns it needs."""


class DatasetError(LabelAuditError):
    """The dataset as a whole cannot be audited (no images, one class, empty class...)."""


class ConfigError(LabelAuditError):
    """A setting has a value outside its allowed range."""


class OutputError(ConfigError):
    """An output path cannot be used: it is an input, a foreign folder, locked or not writable."""


class TrainingError(LabelAuditError):
    """Training diverged (the loss or the weights stopped being finite numbers); nothing was saved.

    ``what`` says where it diverged, ``advice`` what to do; a caller that knows better what the
    user can change (scan has no ``--lr``) raises a new one with its own advice.
    """

    def __init__(self, what: str, advice: str) -> None:
        super().__init__(f"{what}; {advice}")
        self.what, self.advice = what, advice


def some(names, limit: int = 8) -> str:
    """The first ``limit`` of ``names`` quoted, and how many there are in all when more: keeps a
    message about 2,000 classes one readable line (``'a', 'b', ... 2000 in all``)."""
    names = list(names)
    shown = ", ".join(repr(n) for n in names[:limit])
    return shown + (f", ... {len(names)} in all" if len(names) > limit else "")
