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
from .calibration import Calibration, calibrate, expected_transition_matrix
from .estimators import confident_learning_flags, model_noise_rate, per_class_noise_rates
from .issue_types import ISSUE_TYPES, REASONS  # noqa: F401  (REASONS: importable here as before)


@dataclass(frozen=True)
class Audit:
    """Per-sample audit and dataset-level estimates.

    Attributes
    ----------
    report : pandas.DataFrame
        One row per sample, in sample-table order: ``sample_id, path, given_label,
        suspected_noisy, confidence, p_label_wrong, suggested_label, suggested_confidence,
        label_quality, rank, is_ambiguous, ambiguous_with, reason`` (labels as class names;
        ``rank`` 1 = most likely wrong).
    soft_labels : numpy.ndarray
        ``(N, K)`` the method's soft labels, rows sum to 1.
    cleaned_labels : numpy.ndarray
        ``(N,)`` the suggested label where suspected noisy, else the given label (indexes).
    noise_rate : float
        Estimated share of wrong labels: the mean of ``p_label_wrong``.
    per_class_noise_rates : numpy.ndarray
        ``(K,)`` mean ``p_label_wrong`` among the samples given each label.
    transition_matrix : numpy.ndarray
        ``(K, K)`` ``T[i, j] = P(given = j | true = i)``, expected under the calibrated posteriors.
    flag_rule : dict
        How ``suspected_noisy`` was decided (rule name and its fitted or given threshold).
    model_noise_rate : float
        ``1 - mean(p_given)`` of the raw soft labels, before calibration
        (:func:`labelaudit.audit.estimators.model_noise_rate`).
    posterior : numpy.ndarray
        ``(N, K)`` calibrated posterior of each sample's true class
        (:func:`labelaudit.audit.calibration.calibrate`).
    calibration : dict
        How the posteriors were calibrated (:meth:`~labelaudit.audit.calibration.Calibration.summary`).
    """

    report: pd.DataFrame
    soft_labels: np.ndarray
    cleaned_labels: np.ndarray
    noise_rate: float
    per_class_noise_rates: np.ndarray
    transition_matrix: np.ndarray
    flag_rule: dict
    model_noise_rate: float = float("nan")
    posterior: np.ndarray | None = None
    calibration: dict | None = None

    @property
    def p_label_wrong(self) -> np.ndarray:
        """``(N,)`` the report's ``p_label_wrong``."""
        return self.report["p_label_wrong"].to_numpy(dtype=np.float64)


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


def suggestions(soft: np.ndarray, given: np.ndarray, flags: np.ndarray) -> np.ndarray:
    """``(N,)`` the most likely class of each sample, except that a flagged label is never
    "corrected" to itself: a fixed threshold, or a mixture boundary above 0, can flag a sample
    whose given label is the most likely one; it is suggested the strongest other class."""
    suggested = soft.argmax(axis=1)
    return np.where(flags & (suggested == given), _strongest_other(soft, given), suggested)


def worst_first_rank(p_label_wrong: np.ndarray, label_quality: np.ndarray | None = None) -> np.ndarray:
    """``(N,)`` 1-based rank, worst first: highest ``p_label_wrong``, ties broken by the lower
    ``label_quality`` (when given), then by sample order."""
    n = len(p_label_wrong)
    keys = [np.arange(n)]
    if label_quality is not None:
        keys.append(np.asarray(label_quality, dtype=np.float64))
    keys.append(-np.asarray(p_label_wrong, dtype=np.float64))
    order = np.lexsort(keys)
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(1, n + 1)
    return rank


#: A flagged label whose given class and strongest rival both keep at least this calibrated
#: probability is ``ambiguous``, not a confident error (docs/calibration.md: on human-like noise
#: such samples are wrong about half the time).
AMBIGUITY_FLOOR = 0.35
#: The default flag rule on calibrated probabilities: more likely wrong than right.
P_WRONG_THRESHOLD = 0.5


def audit_from_soft_labels(
    table: SampleTable,
    soft_labels: np.ndarray,
    *,
    threshold: float | None = None,
    flags: np.ndarray | None = None,
    flag_rule: dict | None = None,
    rule: str = "mixture",
    calibration: str = "auto",
    calibrated: Calibration | None = None,
) -> Audit:
    """Flag suspect labels from soft labels, with calibrated probabilities and estimates.

    The soft labels are first calibrated without the truth
    (:func:`labelaudit.audit.calibration.calibrate`) into ``q``, each sample's posterior of its true
    class. ``p_label_wrong = 1 - q[given]``, ``confidence = q[given]``; the suggestion is the most
    likely class under ``q`` and ``suggested_confidence`` its ``q``. The noise rate is the expected
    share of wrong labels (the mean of ``p_label_wrong``), per class likewise, and T is the expected
    one under ``q``. ``rank`` orders by ``p_label_wrong``, worst first.

    Which samples are flagged (``suspected_noisy``):

    - ``flags`` given: those (e.g. the confident-learning rule); ``flag_rule`` describes them;
    - ``threshold`` given: ``confidence < threshold``;
    - ``rule="calibrated"``: ``p_label_wrong > 0.5`` (for out-of-sample soft labels);
    - ``rule="mixture"`` (default): a two-component Gaussian mixture on the log-ratio
      ``log(p_given / p_best_other)`` of the raw soft labels separates wrong labels from right but
      hard ones; samples on the wrong-label side of the boundary are flagged (see
      :func:`mixture_boundary`).

    A flagged sample whose given class and strongest other class both keep calibrated probability
    :data:`AMBIGUITY_FLOOR` or more is ``is_ambiguous`` (``ambiguous_with`` names the other class)
    instead of ``suspected_noisy``: the evidence cannot place it. Its cleaned label is its given
    label (retrain and ``apply --accept-unreviewed suggested`` keep it too); the estimates, which
    sum probabilities, do not depend on the split.

    Parameters
    ----------
    table : SampleTable
        The ``N`` audited samples.
    soft_labels : array of shape ``(N, K)``
        Per-sample class probabilities (rows are renormalised to sum to 1).
    threshold : float, optional
        Fixed threshold on the calibrated confidence in the given label.
    flags : array of shape ``(N,)``, optional
        Flags decided elsewhere; ``flag_rule`` describes them.
    rule : {"mixture", "calibrated"}
        The default flag rule when neither ``flags`` nor ``threshold`` is given.
    calibration : {"auto", "plain", "through-T"}
        :func:`labelaudit.audit.calibration.calibrate`'s ``kind``.
    calibrated : Calibration, optional
        Posteriors calibrated elsewhere (e.g. from forward-corrected heads); ``calibration`` is then
        not used.

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
    if rule not in ("mixture", "calibrated"):
        raise ValueError(f"rule must be 'mixture' or 'calibrated'; got {rule!r}")
    soft = soft / soft.sum(axis=1, keepdims=True)
    given = table.samples["given_label"].to_numpy()
    rows = np.arange(n)
    if calibrated is None:
        calibrated = calibrate(soft, given, kind=calibration)
    q, p_wrong = calibrated.posterior, calibrated.p_label_wrong
    confidence = q[rows, given]
    # The raw soft labels' margin, the axis the mixture boundary is fitted on (and the plot's).
    label_quality = 1.0 / (1.0 + np.exp(-label_margin(soft, given)))
    if flags is not None:
        listed, rule_info = np.asarray(flags, dtype=bool), flag_rule or {"rule": "given"}
    elif threshold is not None:
        listed, rule_info = confidence < threshold, {"rule": "fixed", "confidence_threshold": threshold}
    elif rule == "calibrated":
        listed = p_wrong > P_WRONG_THRESHOLD
        rule_info = {"rule": "calibrated", "p_label_wrong_threshold": P_WRONG_THRESHOLD}
    else:
        margin = label_margin(soft, given)
        listed, rule_info = _flag_by_rule(margin, soft[rows, given], None)
    rival = _strongest_other(q, given)
    ambiguous = listed & (confidence >= AMBIGUITY_FLOOR) & (q[rows, rival] >= AMBIGUITY_FLOOR)
    suspect = listed & ~ambiguous
    rule_info = {**rule_info, "ambiguity_floor": AMBIGUITY_FLOOR}
    suggested = suggestions(q, given, listed)
    cleaned = np.where(suspect, suggested, given)  # an ambiguous label is not a confident error: kept
    names = np.array(table.class_names, dtype=object)
    report = pd.DataFrame(
        {
            "sample_id": table.samples["sample_id"].to_numpy(),
            "path": table.samples["path"].to_numpy(),
            "given_label": names[given],
            "suspected_noisy": suspect,
            "confidence": confidence,
            "p_label_wrong": p_wrong,
            "suggested_label": names[suggested],
            "suggested_confidence": q[rows, suggested],
            "label_quality": label_quality,
            "rank": worst_first_rank(p_wrong, label_quality),
            "is_ambiguous": ambiguous,
            "ambiguous_with": np.where(ambiguous, names[rival], ""),
        }
    )
    report["reason"] = reason_column(report)
    return Audit(
        report=report,
        soft_labels=soft,
        cleaned_labels=cleaned,
        flag_rule=rule_info,
        posterior=q,
        calibration=calibrated.summary(),
        **_estimates(p_wrong, q, given, soft, k),
    )


def _strongest_other(q: np.ndarray, given: np.ndarray) -> np.ndarray:
    """``(N,)`` the most likely class other than the given one."""
    others = q.copy()
    others[np.arange(len(given)), given] = -np.inf
    return others.argmax(axis=1)


def _estimates(p_wrong: np.ndarray, q: np.ndarray, given: np.ndarray, soft: np.ndarray, k: int) -> dict:
    """The Audit's dataset-level estimates from calibrated probabilities: the expected noise rate,
    per class, and the expected T (:func:`~labelaudit.audit.calibration.expected_transition_matrix`)."""
    return {
        "noise_rate": float(p_wrong.mean()) if len(p_wrong) else float("nan"),
        "per_class_noise_rates": per_class_noise_rates(p_wrong, given, k),
        "transition_matrix": expected_transition_matrix(q, given),
        "model_noise_rate": model_noise_rate(soft, given),
    }


def with_similarity(audit: Audit, table: SampleTable, issues) -> Audit:
    """``audit`` with the near-duplicate and outlier columns of ``issues``
    (:class:`labelaudit.audit.similarity.SimilarityIssues`) and a ``reason`` column, and with outliers
    left out of the noise-rate estimates and T: an image of no class has no true class to be
    wrong about, and counting its label as a flip would add a row of T that does not exist.

    The columns are those of each issue type (:data:`labelaudit.audit.issue_types.ISSUE_TYPES`);
    ``reason`` lists the issue types a sample is listed for (:func:`reason_column`).
    """
    report = audit.report.drop(columns="reason", errors="ignore")  # re-made last, over every issue type
    ids = report["sample_id"].to_numpy()
    for issue_type in ISSUE_TYPES.values():
        if issue_type.report_columns is not None:
            for column, values in issue_type.report_columns(issues, ids).items():
                report[column] = values
    report["reason"] = reason_column(report)
    keep = ~np.asarray(issues.is_outlier, dtype=bool)
    given = table.samples["given_label"].to_numpy()
    if not keep.any():  # every sample an outlier: nothing left to estimate from, keep the estimates
        return replace(audit, report=report)
    p_wrong, posterior, soft = audit.p_label_wrong[keep], audit.posterior[keep], audit.soft_labels[keep]
    estimates = _estimates(p_wrong, posterior, given[keep], soft, table.num_classes)
    return replace(audit, report=report, **estimates)


def review_mask(report: pd.DataFrame) -> np.ndarray:
    """``(N,)`` bool: the rows of a report to review, those with a ``reason`` (suspect and ambiguous
    labels and, when the scan searched them, near-duplicates of another label and outliers); a
    report of an older scan without a ``reason`` column: its suspect labels."""
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
