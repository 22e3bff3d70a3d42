"""Turn per-sample soft labels into the audit: flags, confidences, suggestions, estimates.

Every method ends in an ``(N, K)`` array of soft labels (averaged softmax); this module is the
one place that decides what is flagged and what is estimated from them.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from ..data.sources import SampleTable
from ..errors import ConfigError
from .estimators import confident_learning_flags, model_noise_rate, per_class_noise_rates, transition_matrix
from .issue_types import ISSUE_TYPES, REASONS  # noqa: F401  (REASONS: importable here as before)


@dataclass(frozen=True)
class Audit:
    """Per-sample audit and dataset-level estimates.

    Attributes
    ----------
    report : pandas.DataFrame
        One row per sample, in sample-table order: ``sample_id, path, given_label,
        suspected_noisy, confidence, suggested_label, suggested_confidence, label_quality, rank``
        (labels as class names; ``rank`` 1 = least likely correct).
    soft_labels : numpy.ndarray
        ``(N, K)`` averaged soft labels, rows sum to 1.
    cleaned_labels : numpy.ndarray
        ``(N,)`` the suggested label where flagged, else the given label (indexes).
    noise_rate : float
        Estimated share of wrong labels: the share flagged.
    model_noise_rate : float
        The share of wrong labels the soft labels imply apart from the flags
        (:func:`labelaudit.audit.estimators.model_noise_rate`).
    per_class_noise_rates : numpy.ndarray
        ``(K,)`` share flagged among the samples given each label.
    transition_matrix : numpy.ndarray
        ``(K, K)`` ``T[i, j] = P(given = j | true = i)`` with the cleaned label standing in for the true one.
    flag_rule : dict
        How ``suspected_noisy`` was decided (rule name and its fitted or given threshold).
    """

    report: pd.DataFrame
    soft_labels: np.ndarray
    cleaned_labels: np.ndarray
    noise_rate: float
    per_class_noise_rates: np.ndarray
    transition_matrix: np.ndarray
    flag_rule: dict
    model_noise_rate: float = float("nan")


@dataclass(frozen=True)
class MixtureFit:
    """Two-component 1-D Gaussian mixture: component 0 = wrong labels, 1 = right labels."""

    means: tuple[float, float]
    stds: tuple[float, float]
    weights: tuple[float, float]
    boundary: float  # score from which the right-label component is the more likely (see _crossing)


def fit_two_gaussians(scores: np.ndarray, *, min_std: float = 1.0, iterations: int = 300) -> MixtureFit:
    """Fit a two-component Gaussian mixture to 1-D ``scores`` by expectation-maximisation.

    Deterministic: starts from the 10th and 90th percentiles. ``min_std`` keeps a component from
    collapsing onto a pile of identical scores (e.g. probabilities saturated at 1).
    """
    z = np.asarray(scores, dtype=np.float64)
    means = np.quantile(z, [0.1, 0.9])
    stds = np.full(2, max(z.std(), min_std))
    weights = np.array([0.5, 0.5])
    for _ in range(iterations):
        log_p = -0.5 * ((z[:, None] - means) / stds) ** 2 - np.log(stds) + np.log(weights)
        resp = np.exp(log_p - log_p.max(axis=1, keepdims=True))
        resp /= resp.sum(axis=1, keepdims=True)
        mass = resp.sum(axis=0) + 1e-12
        weights = mass / len(z)
        means = (resp * z[:, None]).sum(axis=0) / mass
        stds = np.maximum(np.sqrt((resp * (z[:, None] - means) ** 2).sum(axis=0) / mass), min_std)
    low, high = sorted(range(2), key=lambda i: means[i])
    means, stds, weights = means[[low, high]], stds[[low, high]], weights[[low, high]]
    return MixtureFit(tuple(means), tuple(stds), tuple(weights), _crossing(means, stds, weights, z.min()))


def _crossing(means, stds, weights, lowest: float) -> float:
    """The score nearest the wrong-label mean from which the right-label component is more likely.

    Normally between the two means. When the right-label component already wins at the low mean
    (a heavy wrong-label component), the crossing lies below it: walk down towards ``lowest``.
    A far-left second crossing, where a wider right-label Gaussian wins again in the tail, is
    ignored.
    """

    def right_wins(grid):
        log_p = -0.5 * ((grid[:, None] - means) / stds) ** 2 - np.log(stds) + np.log(weights)
        return log_p[:, 1] >= log_p[:, 0]

    up = np.linspace(means[0], means[1], 4001)
    wins = right_wins(up)
    if not wins.any():
        return float(means[1])
    if not wins[0]:
        return float(up[np.argmax(wins)])
    down = np.linspace(means[0], min(lowest, means[0]), 4001)  # from the low mean downwards
    loses = ~right_wins(down)
    return float(down[np.argmax(loses) - 1]) if loses.any() else float(down[-1])


def mixture_boundary(fit: MixtureFit) -> float:
    """The margin below which a label is flagged, from a mixture fitted to the margins.

    The crossing of the two components where it is below 0. Above 0 it would flag samples whose
    given label is the most likely class, which is right only when the low component is made of
    labels the network disputes, i.e. sits below 0; a low component at or above 0 is made of
    hard but right labels (on clean data there is nothing else). So a crossing above 0 is kept
    in proportion to how far the low component's mean lies below 0, reaching the full crossing
    at a mean of -1 (odds of e to 1 against the given label) and 0 at a mean of 0, without a
    jump in between. With human-like (instance-dependent) noise the network partly learns the
    wrong labels, which end just above 0: this raised flag F1 on every confusable-noise scan
    measured and changed no symmetric or asymmetric one (docs/benchmarks.md).
    """
    if fit.boundary <= 0:
        return fit.boundary
    trust = float(np.clip(-fit.means[0], 0.0, 1.0))
    return fit.boundary * trust


def label_margin(soft_labels: np.ndarray, given: np.ndarray) -> np.ndarray:
    """``(N,)`` ``log p_given - log max_{k != given} p_k``: < 0 when another class is preferred."""
    n = np.arange(len(given))
    p_given = np.clip(soft_labels[n, given], 1e-6, 1.0)
    others = soft_labels.copy()
    others[n, given] = -np.inf
    return np.log(p_given) - np.log(np.clip(others.max(axis=1), 1e-6, 1.0))


def _flag_by_rule(margin: np.ndarray, confidence: np.ndarray, threshold: float | None):
    """``(flags, rule)``: the learned mixture boundary on ``margin`` (``threshold`` None), or
    ``confidence < threshold``; ``rule`` is the ``flag_rule`` recorded in the summary."""
    if threshold is not None:
        return confidence < threshold, {"rule": "fixed", "confidence_threshold": threshold}
    fit = fit_two_gaussians(margin)
    boundary = mixture_boundary(fit)
    return margin < boundary, {
        "rule": "mixture",
        "margin_boundary": boundary,
        "label_quality_threshold": float(1 / (1 + np.exp(-boundary))),
        "mixture": {"means": fit.means, "stds": fit.stds, "weights": fit.weights},
    }


def _suggestions(soft: np.ndarray, given: np.ndarray, flags: np.ndarray) -> np.ndarray:
    """``(N,)`` the most likely class of each sample, except that a flagged label is never
    "corrected" to itself: a fixed threshold, or a mixture boundary above 0, can flag a sample
    whose given label is the most likely one; it is suggested the strongest other class."""
    rows = np.arange(len(given))
    suggested = soft.argmax(axis=1)
    others = soft.copy()
    others[rows, given] = -np.inf
    return np.where(flags & (suggested == given), others.argmax(axis=1), suggested)


def worst_first_rank(label_quality: np.ndarray) -> np.ndarray:
    """``(N,)`` 1-based rank, worst first: lowest label quality; ties broken by sample order."""
    n = len(label_quality)
    order = np.lexsort((np.arange(n), label_quality))
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(1, n + 1)
    return rank


def audit_from_soft_labels(
    table: SampleTable,
    soft_labels: np.ndarray,
    *,
    threshold: float | None = None,
    flags: np.ndarray | None = None,
    flag_rule: dict | None = None,
) -> Audit:
    """Flag suspect labels from soft labels.

    ``label_quality = p_given / (p_given + p_best_other)``: 0.5 when the given label ties with the
    strongest other class. By default (``threshold=None``) the flag threshold is learned from the
    data: a two-component Gaussian mixture on the log-ratio ``log(p_given / p_best_other)``
    separates wrong labels (given class far below another) from right but hard ones; samples on
    the wrong-label side of the boundary where both components are equally likely are flagged
    (see :func:`mixture_boundary` for when that may include a sample whose given label is
    still the most likely class). A fixed ``threshold`` flags
    ``confidence < threshold`` instead (the NLNL paper's rule with 0.5).

    Parameters
    ----------
    table : SampleTable
        The ``N`` audited samples.
    soft_labels : array of shape ``(N, K)``
        Per-sample class probabilities (rows are renormalised to sum to 1).
    threshold : float, optional
        Fixed threshold on the confidence in the given label; None = learned boundary.
    flags : array of shape ``(N,)``, optional
        Flags decided elsewhere (e.g. the confident-learning rule); ``flag_rule`` describes them.

    Returns
    -------
    Audit
    """
    soft = np.asarray(soft_labels, dtype=np.float64)
    n, k = len(table), table.num_classes
    if soft.shape != (n, k):
        raise ValueError(f"soft_labels must have shape (N, K) = ({n}, {k}); got {soft.shape}")
    if threshold is not None and not 0 < threshold < 1:
        raise ValueError(f"threshold must be in (0, 1); got {threshold!r}")
    soft = soft / soft.sum(axis=1, keepdims=True)
    given = table.samples["given_label"].to_numpy()
    confidence = soft[np.arange(n), given]
    margin = label_margin(soft, given)
    label_quality = 1.0 / (1.0 + np.exp(-margin))
    if flags is not None:
        flags, rule = np.asarray(flags, dtype=bool), flag_rule or {"rule": "given"}
    else:
        flags, rule = _flag_by_rule(margin, confidence, threshold)
    suggested = _suggestions(soft, given, flags)
    cleaned = np.where(flags, suggested, given)
    rank = worst_first_rank(label_quality)
    names = np.array(table.class_names, dtype=object)
    report = pd.DataFrame(
        {
            "sample_id": table.samples["sample_id"].to_numpy(),
            "path": table.samples["path"].to_numpy(),
            "given_label": names[given],
            "suspected_noisy": flags,
            "confidence": confidence,
            "suggested_label": names[suggested],
            "suggested_confidence": soft[np.arange(n), suggested],
            "label_quality": label_quality,
            "rank": rank,
        }
    )
    return Audit(
        report=report,
        soft_labels=soft,
        cleaned_labels=cleaned,
        noise_rate=float(flags.mean()),
        per_class_noise_rates=per_class_noise_rates(flags, given, k),
        transition_matrix=transition_matrix(cleaned, given, k),
        flag_rule=rule,
        model_noise_rate=model_noise_rate(soft, given),
    )


def with_similarity(audit: Audit, table: SampleTable, issues) -> Audit:
    """``audit`` with the near-duplicate and outlier columns of ``issues``
    (:class:`labelaudit.audit.similarity.SimilarityIssues`) and a ``reason`` column, and with outliers
    left out of the noise-rate estimates and T: an image of no class has no true class to be
    wrong about, and counting its label as a flip would add a row of T that does not exist.

    The columns are those of each issue type (:data:`labelaudit.audit.issue_types.ISSUE_TYPES`);
    ``reason`` lists the issue types a sample is listed for (:func:`reason_column`).
    """
    report = audit.report.copy()
    ids = report["sample_id"].to_numpy()
    for issue_type in ISSUE_TYPES.values():
        if issue_type.report_columns is not None:
            for column, values in issue_type.report_columns(issues, ids).items():
                report[column] = values
    report["reason"] = reason_column(report)
    keep = ~np.asarray(issues.is_outlier, dtype=bool)
    given = table.samples["given_label"].to_numpy()
    flags = report["suspected_noisy"].to_numpy(dtype=bool)
    k = table.num_classes
    if not keep.any():  # every sample an outlier: nothing left to estimate from, keep the estimates
        return replace(audit, report=report)
    return replace(
        audit,
        report=report,
        noise_rate=float(flags[keep].mean()),
        per_class_noise_rates=per_class_noise_rates(flags[keep], given[keep], k),
        transition_matrix=transition_matrix(audit.cleaned_labels[keep], given[keep], k),
        model_noise_rate=model_noise_rate(audit.soft_labels[keep], given[keep]),
    )


def review_mask(report: pd.DataFrame) -> np.ndarray:
    """``(N,)`` bool: the rows of a report to review, those with a ``reason`` (suspect labels and,
    when the scan searched them, near-duplicates of another label and outliers); a report of a
    scan without the search has no ``reason`` column: its suspect labels."""
    if "reason" in report:
        return (report["reason"].fillna("").astype(str) != "").to_numpy()
    return report["suspected_noisy"].to_numpy(dtype=bool)


def reason_column(report: pd.DataFrame) -> np.ndarray:
    """``(N,)`` str: the issue types each row of a report is listed for, ``;``-separated in the
    order of :data:`REASONS` (empty when none); an issue type whose column the report lacks (not
    searched) lists no row."""
    no = np.zeros(len(report), dtype=bool)
    listed = [
        report[t.flag_column].to_numpy(dtype=bool) if t.flag_column in report else no
        for t in ISSUE_TYPES.values()
    ]
    reasons = list(ISSUE_TYPES)
    return np.array([";".join(r for r, on in zip(reasons, row) if on) for row in zip(*listed)], dtype=object)


def require_cleanlab():
    """``cleanlab.filter.find_label_issues``, or ConfigError when the optional cleanlab package
    does not import. Called before any training by everything that will use cleanlab."""
    try:
        from cleanlab.filter import find_label_issues
    except ImportError as exc:
        raise ConfigError(
            f"cleanlab (--flagger cleanlab, benchmark method cleanlab) is not installed or does not "
            f"import ({exc}); install it with: pip install 'labelaudit[cleanlab]'"
        ) from None
    return find_label_issues


def cv_flags(probs: np.ndarray, given: np.ndarray, flagger: str) -> tuple[np.ndarray, dict]:
    """Flags from out-of-fold probabilities by the confident-learning rule or by cleanlab."""
    if flagger == "cleanlab":
        find_label_issues = require_cleanlab()
        return find_label_issues(labels=given, pred_probs=probs), {
            "rule": "cleanlab.filter.find_label_issues"
        }
    return confident_learning_flags(probs, given), {
        "rule": "confident-learning (per-class mean self-confidence)"
    }
