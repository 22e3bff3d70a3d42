"""Calibrated probabilities without the truth: the chance that each given label is wrong.

A method's soft labels estimate ``P(given label | image)``, the *noisy* label's distribution. A
reviewer needs ``P(true class | image, given label)``: how likely the label in hand is wrong and
how likely a suggestion is right. Which of two models turns one into the other depends on the
kind of noise, and the data tell which (measured in docs/calibration.md):

- **Instance-dependent (human-like) noise**: wrong labels sit on images that really resemble the
  other class, so an out-of-sample model's own uncertainty already carries the noise and
  ``q = p`` (``plain``) is calibrated.
- **Class-conditional noise** (a class's labels flipped at random, whatever the image): even on
  the easiest images ``p(given)`` levels off at ``1 - rho``; ``plain`` would charge every right
  label with ``rho``. The posterior *through T* removes that charge:
  ``q(i | x, given=j) ∝ softmax(log p(x) / tau)_i · T[i, j]`` (``through-T``), with T started from
  the confident joint (Northcutt et al. 2021), the temperature ``tau`` fitted by the likelihood
  of the given labels, and T re-estimated from the posteriors for a few EM rounds.

The switch (:func:`easy_disagreement_ratio`): within each predicted class, take the most
confident 30% of samples and count how often their given label disagrees with the prediction.
Class-conditional noise reaches easy images as often as hard ones (ratio near 1); human-like
noise hardly does (ratio well below 1).

Conventions: ``T[i, j] = P(given = j | true = i)`` (labelaudit.audit.estimators).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Floor for probabilities before logs and divisions (numpy here: the review side never loads torch).
EPS = 1e-12

#: Easy-region disagreement ratio at and above which the noise is treated as class-conditional.
#: Measured on three Fashion-MNIST settings (0.49 human-like, 0.64 asymmetric, 0.82 symmetric) and
#: checked on the others in docs/calibration.md.
CLASS_CONDITIONAL_RATIO = 0.57
#: EM rounds re-estimating T from the posteriors (three reach a fixed point on every benchmark).
EM_ROUNDS = 3
CALIBRATIONS = ("auto", "plain", "through-T")


@dataclass(frozen=True)
class Calibration:
    """Calibrated posteriors of the true class.

    Attributes
    ----------
    posterior : numpy.ndarray
        ``(N, K)`` ``q(i | x, given)``: the probability that class ``i`` is the sample's true class.
    p_label_wrong : numpy.ndarray
        ``(N,)`` ``1 - q(given | x, given)``.
    transition_matrix : numpy.ndarray
        ``(K, K)`` the expected ``T`` under the posteriors: ``T[i, j] ∝ sum_n q_n(i) [given_n = j]``.
    kind : str
        ``plain``, ``through-T``, or ``through-T, forward-corrected`` (:func:`calibrate_clean`).
    temperature : float
        ``tau`` of ``through-T`` (1.0 for ``plain``).
    easy_disagreement_ratio : float
        The switch's statistic (:func:`easy_disagreement_ratio`); NaN when too few samples.
    """

    posterior: np.ndarray
    p_label_wrong: np.ndarray
    transition_matrix: np.ndarray
    kind: str
    temperature: float
    easy_disagreement_ratio: float

    def summary(self) -> dict:
        """``summary.json``'s ``calibration``: how the probabilities were calibrated."""
        ratio = self.easy_disagreement_ratio
        return {
            "kind": self.kind,
            "temperature": self.temperature,
            "easy_disagreement_ratio": None if np.isnan(ratio) else ratio,
            "class_conditional_ratio": CLASS_CONDITIONAL_RATIO,
        }


def calibrate(
    probs: np.ndarray, given: np.ndarray, *, kind: str = "auto", em_rounds: int = EM_ROUNDS
) -> Calibration:
    """Calibrate a method's ``(N, K)`` soft labels into posteriors of the true class.

    Parameters
    ----------
    probs : array of shape ``(N, K)``
        Estimates of ``P(given label | image)``; out-of-sample ones (cross-fitted, or the user's
        ``--probs``) calibrate best.
    given : array of shape ``(N,)``
        The given labels (indexes).
    kind : {"auto", "plain", "through-T"}
        ``auto`` chooses by :func:`easy_disagreement_ratio` against :data:`CLASS_CONDITIONAL_RATIO`.
    em_rounds : int
        EM rounds of ``through-T``.

    Returns
    -------
    Calibration
    """
    if kind not in CALIBRATIONS:
        raise ValueError(f"kind must be one of {list(CALIBRATIONS)}; got {kind!r}")
    p = _probabilities(probs)
    given = np.asarray(given, dtype=np.int64)
    ratio = easy_disagreement_ratio(p, given)
    if kind == "auto":
        kind = "through-T" if ratio >= CLASS_CONDITIONAL_RATIO else "plain"
    tau = 1.0
    if kind == "plain":
        q = p
    else:
        q, tau = posterior_through_transition(p, given, em_rounds=em_rounds)
    return _calibration(q, given, kind, tau, ratio)


def calibrate_clean(clean_probs: np.ndarray, given: np.ndarray, t: np.ndarray, ratio: float) -> Calibration:
    """``through-T`` from a model of the *clean* class: ``q ∝ softmax(log p_clean / tau)_i · T[i, given]``
    with ``tau`` fitted by the likelihood of the given labels through ``t`` (no EM: T is the one the
    clean model was trained through). ``ratio`` is the switch's statistic, kept for the summary."""
    given = np.asarray(given, dtype=np.int64)
    log_p = np.log(_probabilities(clean_probs))
    tau = fit_temperature(log_p, given, t)
    q = _bayes(_softmax(log_p / tau), given, t)
    return _calibration(q, given, "through-T, forward-corrected", tau, ratio)


def _probabilities(probs: np.ndarray) -> np.ndarray:
    """``probs`` as float64 rows summing to 1, none below :data:`EPS` (logs stay finite)."""
    p = np.clip(np.asarray(probs, dtype=np.float64), EPS, None)
    return p / p.sum(axis=1, keepdims=True)


def _calibration(q: np.ndarray, given: np.ndarray, kind: str, tau: float, ratio: float) -> Calibration:
    """The :class:`Calibration` of posteriors ``q``: ``p_label_wrong`` and the expected T from them."""
    return Calibration(
        posterior=q,
        p_label_wrong=1.0 - q[np.arange(len(given)), given],
        transition_matrix=expected_transition_matrix(q, given),
        kind=kind,
        temperature=tau,
        easy_disagreement_ratio=ratio,
    )


def easy_disagreement_ratio(probs: np.ndarray, given: np.ndarray, *, top: float = 0.3) -> float:
    """How much of the given labels' disagreement with the model reaches its easiest samples.

    Within each predicted class with at least 20 samples, the share of its ``top`` most confident
    samples whose given label is another class; the class-size-weighted mean of those shares over
    the share of all samples whose given label differs from the prediction. NaN when no sample
    disagrees or no class is large enough.
    """
    predicted, confidence = probs.argmax(axis=1), probs.max(axis=1)
    disagree = predicted != given
    weighted, counted = 0.0, 0
    for c in range(probs.shape[1]):
        members = predicted == c
        if members.sum() < 20:
            continue
        easy = members & (confidence >= np.quantile(confidence[members], 1 - top))
        weighted += disagree[easy].mean() * members.sum()
        counted += members.sum()
    if counted == 0 or not disagree.any():
        return float("nan")
    return float(weighted / counted / disagree.mean())


def confident_joint_transition(probs: np.ndarray, given: np.ndarray) -> np.ndarray:
    """``(K, K)`` T from the calibrated confident joint (Northcutt et al. 2021, cleanlab's count).

    A sample given ``j`` is counted as truly ``i`` when ``p_i`` reaches class ``i``'s threshold
    (the mean ``p_i`` of the samples given ``i``), the largest such class when several do; each
    given label's counts are scaled to its size; rows of true classes are normalised.
    """
    n, k = probs.shape
    given_sizes = np.bincount(given, minlength=k).astype(np.float64)
    thresholds = np.array([probs[given == j, j].mean() if given_sizes[j] else 1.0 for j in range(k)])
    above = probs >= thresholds
    guess = np.where(above, probs, -1.0).argmax(axis=1)
    counted = above.any(axis=1)
    joint = np.zeros((k, k))  # joint[given, true]
    np.add.at(joint, (given[counted], guess[counted]), 1)
    joint = joint / np.maximum(joint.sum(axis=1, keepdims=True), 1) * given_sizes[:, None]
    t = joint.T
    return _normalised_rows(t)


def posterior_through_transition(
    probs: np.ndarray, given: np.ndarray, *, em_rounds: int = EM_ROUNDS
) -> tuple[np.ndarray, float]:
    """``(q, tau)``: the posterior of the true class through T, with T from the confident joint
    refined by ``em_rounds`` EM rounds (T from the posteriors, then the temperature again)."""
    k = probs.shape[1]
    log_p = np.log(probs)
    t = 0.999 * confident_joint_transition(probs, given) + 0.001 / k  # never 0: Bayes stays finite
    tau = fit_temperature(log_p, given, t)
    for _ in range(em_rounds):
        q = _bayes(_softmax(log_p / tau), given, t)
        t = _normalised_rows(_given_sums(q, given) + 1e-3)
        tau = fit_temperature(log_p, given, t)
    return _bayes(_softmax(log_p / tau), given, t), tau


def fit_temperature(log_p: np.ndarray, given: np.ndarray, t: np.ndarray) -> float:
    """The ``tau`` maximising the likelihood of the given labels through ``t``:
    ``sum_n log (softmax(log_p_n / tau) @ t)[given_n]``; a log-spaced grid on [0.01, 10], then a
    golden-section search between the best point's neighbours."""
    rows = np.arange(len(given))

    def log_likelihood(log_tau: float) -> float:
        noisy = _softmax(log_p / np.exp(log_tau)) @ t
        return float(np.log(np.clip(noisy[rows, given], EPS, 1.0)).sum())

    grid = np.linspace(np.log(0.01), np.log(10.0), 61)
    best = int(np.argmax([log_likelihood(g) for g in grid]))
    low, high = grid[max(best - 1, 0)], grid[min(best + 1, len(grid) - 1)]
    golden = (np.sqrt(5) - 1) / 2
    for _ in range(30):
        a, b = high - golden * (high - low), low + golden * (high - low)
        if log_likelihood(a) > log_likelihood(b):
            high = b
        else:
            low = a
    return float(np.exp((low + high) / 2))


#: A true class whose posteriors sum to less than this many samples has no row of T to estimate.
MIN_CLASS_MASS = 0.5


def estimated_rows(posterior: np.ndarray) -> np.ndarray:
    """``(K,)`` bool: the true classes with at least :data:`MIN_CLASS_MASS` samples' worth of
    posterior mass, whose row of the expected T is estimated (the others are identity rows)."""
    return np.asarray(posterior).sum(axis=0) >= MIN_CLASS_MASS


def expected_transition_matrix(posterior: np.ndarray, given: np.ndarray) -> np.ndarray:
    """``(K, K)`` ``T[i, j] ∝ sum_n q_n(i) [given_n = j]``, rows normalised; a true class with less
    than :data:`MIN_CLASS_MASS` of mass (:func:`estimated_rows`) is the identity row (nothing
    observed, nothing assumed flipped)."""
    sums = _given_sums(posterior, given)
    rows = sums.sum(axis=1, keepdims=True)
    keep = estimated_rows(posterior)[:, None]
    return np.where(keep, sums / np.maximum(rows, EPS), np.eye(len(sums)))


def expected_calibration_error(confidence: np.ndarray, outcome: np.ndarray, bins: int = 10) -> float:
    """ECE over ``bins`` equal-width bins of ``confidence``: the sample-weighted mean gap between
    the mean confidence and the share of ``outcome`` in each bin. NaN for no samples."""
    confidence = np.asarray(confidence, dtype=np.float64)
    outcome = np.asarray(outcome, dtype=np.float64)
    if len(confidence) == 0:
        return float("nan")
    which = np.minimum((confidence * bins).astype(np.int64), bins - 1)
    count = np.bincount(which, minlength=bins)
    gap = np.abs(np.bincount(which, confidence, bins) - np.bincount(which, outcome, bins))
    return float(gap[count > 0].sum() / len(confidence))


def reliability_bins(confidence: np.ndarray, outcome: np.ndarray, bins: int = 10) -> list[dict]:
    """Per equal-width bin: ``low, high, count, mean_confidence, share_true`` (the reliability
    diagram's points; empty bins have null means)."""
    confidence = np.asarray(confidence, dtype=np.float64)
    outcome = np.asarray(outcome, dtype=np.float64)
    which = np.minimum((confidence * bins).astype(np.int64), bins - 1)
    out = []
    for b in range(bins):
        members = which == b
        n = int(members.sum())
        out.append(
            {
                "low": b / bins,
                "high": (b + 1) / bins,
                "count": n,
                "mean_confidence": float(confidence[members].mean()) if n else None,
                "share_true": float(outcome[members].mean()) if n else None,
            }
        )
    return out


def _bayes(clean: np.ndarray, given: np.ndarray, t: np.ndarray) -> np.ndarray:
    q = clean * t[:, given].T
    return q / np.maximum(q.sum(axis=1, keepdims=True), EPS)


def _given_sums(q: np.ndarray, given: np.ndarray) -> np.ndarray:
    """``(K, K)`` ``[i, j] = sum over samples given j of q(i)``."""
    k = q.shape[1]
    sums = np.zeros((k, k))
    for j in range(k):
        sums[:, j] = q[given == j].sum(axis=0)
    return sums


def _normalised_rows(m: np.ndarray) -> np.ndarray:
    rows = m.sum(axis=1, keepdims=True)
    return np.where(rows > 0, m / np.maximum(rows, EPS), np.eye(len(m)))


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)
