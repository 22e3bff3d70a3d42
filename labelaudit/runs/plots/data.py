"""What the pictures show, as plain arrays: :class:`PlotData`, built from a scan's summary or read
from a finished run directory."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd

from ...audit.estimators import per_class_bootstrap_intervals
from ...errors import ConfigError
from ...reports import read_json, read_matrix_csv
from ..fingerprints import check_matrix_fingerprint
from .canvas import number_or_nan


@dataclass(frozen=True)
class PlotData:
    """Everything the pictures show, as plain arrays; built from a scan or a run directory.

    Attributes
    ----------
    class_names : tuple of str
        The ``K`` class names, in index order.
    transition_matrix : numpy.ndarray
        ``(K, K)`` ``T[i, j] = P(given = j | true = i)``; rows are true classes and sum to 1.
    noise_rates : numpy.ndarray
        ``(K,)`` share of the samples given each label that are flagged; NaN for a class without samples.
    noise_rate_intervals : numpy.ndarray
        ``(K, 2)`` ``[low, high]`` 95% percentile bootstrap interval of each rate; NaN where undefined.
    class_counts : numpy.ndarray
        ``(K,)`` number of samples given each label.
    noise_rate : float
        The estimated noise rate of the whole dataset (share flagged).
    label_quality : numpy.ndarray
        ``(N,)`` ``p_given / (p_given + p_best_other)`` per sample.
    suspected_noisy : numpy.ndarray
        ``(N,)`` bool, the flags.
    flag_rule : dict
        How the flags were decided (``summary.json``'s ``flag_rule``).
    training_curves : list of dict
        One row per epoch: ``phase, epoch, lr, loss, train_accuracy, used_fraction, seconds``.
    method : str
        The scan's method (``nlnl``, ``pmnar``, ``cv-ce``...).
    warmup_epochs : int
        PMNAR's warm-up epochs (0 for other methods), marked on the training curves.
    """

    class_names: tuple[str, ...]
    transition_matrix: np.ndarray
    noise_rates: np.ndarray
    noise_rate_intervals: np.ndarray
    class_counts: np.ndarray
    noise_rate: float
    label_quality: np.ndarray
    suspected_noisy: np.ndarray
    flag_rule: dict = field(default_factory=dict)
    training_curves: list = field(default_factory=list)
    method: str = ""
    warmup_epochs: int = 0
    reliability: dict = field(default_factory=dict)  # summary's truth.reliability (scans with --truth)
    calibration_errors: dict = field(default_factory=dict)  # {p_label_wrong, suggested_confidence: ECE}

    @classmethod
    def from_summary(
        cls, summary: Mapping, report: pd.DataFrame, transition_matrix: np.ndarray
    ) -> "PlotData":
        """Build from a scan's ``summary.json`` content, its report and its ``T``.

        Parameters
        ----------
        summary : mapping
            :func:`labelaudit.pipeline.scan.summary`'s dict, or ``summary.json`` read back (NaN or null
            for missing numbers). A summary written before ``per_class_noise_rate_intervals_95``
            existed gets the intervals computed from ``report`` with the scan's seed.
        report : pandas.DataFrame
            ``N`` rows with ``given_label`` (class names), ``suspected_noisy`` and ``label_quality``.
        transition_matrix : array of shape ``(K, K)``
            ``T[i, j] = P(given = j | true = i)``.

        Returns
        -------
        PlotData
        """
        names = tuple(str(n) for n in summary["class_names"])
        k = len(names)
        matrix = np.asarray(transition_matrix, dtype=np.float64)
        if matrix.shape != (k, k):
            raise ValueError(f"transition_matrix must have shape (K, K) = ({k}, {k}); got {matrix.shape}")
        flags = report["suspected_noisy"].to_numpy(dtype=bool)
        index = {name: i for i, name in enumerate(names)}
        given = report["given_label"].astype(str).map(index)
        if given.isna().any():
            raise ValueError(
                f"report has given labels that are not classes of the summary, e.g. "
                f"{report['given_label'][given.isna()].iloc[0]!r}"
            )
        given = given.to_numpy(dtype=np.int64)
        counts = np.bincount(given, minlength=k)
        rates_by_name = summary.get("per_class_noise_rates") or {}
        rates = np.array([number_or_nan(rates_by_name.get(n)) for n in names])
        stored = summary.get("per_class_noise_rate_intervals_95")
        if isinstance(stored, Mapping) and all(isinstance(stored.get(n), Mapping) for n in names):
            intervals = np.array(
                [[number_or_nan(stored[n].get("low")), number_or_nan(stored[n].get("high"))] for n in names]
            )
        else:  # a run from before the per-class intervals: the same computation the scan does now
            seed = ((summary.get("settings") or {}).get("train") or {}).get("seed", 0)
            intervals = per_class_bootstrap_intervals(flags, given, k, seed=int(seed or 0))
        settings = summary.get("settings") or {}
        method = str(summary.get("method", ""))
        warmup = int(((settings.get("pmnar") or {}).get("warmup") or 0)) if method == "pmnar" else 0
        return cls(
            class_names=names,
            transition_matrix=matrix,
            noise_rates=rates,
            noise_rate_intervals=intervals.reshape(k, 2),
            class_counts=counts,
            noise_rate=number_or_nan(
                summary.get("estimated_noise_rate", flags.mean() if len(flags) else None)
            ),
            label_quality=report["label_quality"].to_numpy(dtype=np.float64),
            suspected_noisy=flags,
            flag_rule=dict(summary.get("flag_rule") or {}),
            training_curves=list(summary.get("training_curves") or []),
            method=method,
            warmup_epochs=warmup,
            reliability=dict((summary.get("truth") or {}).get("reliability") or {}),
            calibration_errors={
                "p_label_wrong": (summary.get("truth") or {}).get("ece_p_label_wrong"),
                "suggested_confidence": (summary.get("truth") or {}).get("ece_suggested_confidence"),
            },
        )

    @classmethod
    def from_run_dir(cls, run_dir: str | os.PathLike) -> "PlotData":
        """Read a finished scan's ``summary.json``, ``report.parquet`` and ``transition_matrix.csv``.

        Raises
        ------
        ConfigError
            ``run_dir`` is not a scan's run directory, or one of the three files is missing or unreadable.
        """
        path = Path(run_dir).expanduser()
        if not path.is_dir():
            raise ConfigError(
                f"run directory {str(run_dir)!r} does not exist; pass the --out folder of a labelaudit scan"
            )
        missing = [
            n for n in ("summary.json", "report.parquet", "transition_matrix.csv") if not (path / n).is_file()
        ]
        if missing:
            raise ConfigError(
                f"{str(path)!r} is not a complete scan run directory (missing "
                f"{', '.join(missing)}); "
                "pass the --out folder of a finished labelaudit scan"
            )
        try:
            summary = read_json(path / "summary.json")
        except (OSError, ValueError) as exc:
            raise ConfigError(
                f"cannot read summary.json in {str(path)!r} ({exc}); scan the dataset again"
            ) from None
        if (
            not isinstance(summary, dict)
            or summary.get("kind") != "scan"
            or not isinstance(summary.get("class_names"), list)
        ):
            raise ConfigError(
                f"summary.json in {str(path)!r} is not a labelaudit scan's summary; pass the "
                "--out "
                "folder of a labelaudit scan"
            )
        columns = ["given_label", "suspected_noisy", "label_quality"]
        try:
            report = pd.read_parquet(path / "report.parquet", columns=columns)
        except (OSError, ValueError, KeyError) as exc:  # pyarrow's errors subclass these
            raise ConfigError(
                f"cannot read {columns} from report.parquet in {str(path)!r} ({exc}); scan the dataset again"
            ) from None
        check_matrix_fingerprint(path / "transition_matrix.csv", summary.get("data_fingerprint"))
        try:
            matrix = read_matrix_csv(path / "transition_matrix.csv", len(summary["class_names"]))
        except (OSError, ValueError) as exc:
            raise ConfigError(
                f"cannot read transition_matrix.csv in {str(path)!r} ({exc}); scan the dataset again"
            ) from None
        try:
            return cls.from_summary(summary, report, matrix)
        except (ValueError, TypeError, AttributeError) as exc:
            raise ConfigError(
                f"the files in {str(path)!r} do not fit together ({exc}); scan the dataset again"
            ) from None
