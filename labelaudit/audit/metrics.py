"""Truth-aware metrics: how well an audit's flags and estimates match known true labels."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..data.sources import SampleTable, labels_as_text, match_classes, read_table
from ..errors import ManifestError
from .calibration import expected_calibration_error, reliability_bins
from .estimators import per_class_noise_rates, transition_matrix
from .flags import Audit, suggestions

TRUE_LABEL_CANDIDATES = ("true_label", "clean_label", "true", "label")


def detection_metrics(flags: np.ndarray, is_noisy: np.ndarray) -> dict:
    """Precision, recall and F1 of ``flags`` against the truth ``is_noisy`` (both ``(N,)`` bool).

    Precision is 0 when nothing is flagged; recall is 0 when nothing is noisy.
    """
    flags = np.asarray(flags, dtype=bool)
    is_noisy = np.asarray(is_noisy, dtype=bool)
    tp = int((flags & is_noisy).sum())
    precision = tp / flags.sum() if flags.any() else 0.0
    recall = tp / is_noisy.sum() if is_noisy.any() else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return {"precision": float(precision), "recall": float(recall), "f1": float(f1), "true_positives": tp}


def load_truth(path: str | os.PathLike, table: SampleTable) -> np.ndarray:
    """Read a truth file and return the true label index of every sample in ``table``, ``(N,)``.

    The file (CSV or parquet) has a ``sample_id`` or ``path`` column and a true-label column
    (``true_label``, ``clean_label``, ``true`` or ``label``). Paths are matched after resolving
    them relative to the truth file's folder. A label names the class of the same text, or the
    one class it differs from only by surrounding whitespace (see
    :func:`~labelaudit.data.sources.match_classes`); CSV cells are stripped, parquet labels kept exactly.
    """
    path = Path(path).expanduser().resolve()
    if not path.is_file():
        raise ManifestError(
            f"truth file {str(path)!r} does not exist; pass a CSV/parquet with sample_id and true_label "
            "columns"
        )
    frame = read_table(path, "truth file")
    label_col = next((c for c in TRUE_LABEL_CANDIDATES if c in frame.columns), None)
    if label_col is None:
        raise ManifestError(
            f"truth file {path.name!r} has no true-label column (looked for {list(TRUE_LABEL_CANDIDATES)}, "
            f"found {list(frame.columns)}); add a true_label column"
        )
    true_text = labels_as_text(frame[label_col], strip=path.suffix.lower() not in (".parquet", ".pq"))
    if "sample_id" in frame.columns and frame["sample_id"].astype(str).isin(table.samples["sample_id"]).any():
        lookup = dict(zip(frame["sample_id"].astype(str), true_text))
        keys = table.samples["sample_id"]
    elif "path" in frame.columns:
        resolved = frame["path"].map(lambda p: os.path.normpath(os.path.join(path.parent, str(p))))
        lookup = dict(zip(resolved, true_text))
        keys = table.samples["path"]
    else:
        raise ManifestError(
            f"truth file {path.name!r} matches no sample by sample_id or path; check it belongs to this "
            "dataset"
        )
    missing = [k for k in keys if k not in lookup]
    if missing:
        raise ManifestError(
            f"truth file {path.name!r} has no row for {len(missing)} samples (first: {missing[0]!r}); it "
            "must cover every sample"
        )
    index = {name: i for i, name in enumerate(table.class_names)}
    names = match_classes([lookup[k] for k in keys], table.class_names)
    unknown = sorted(label for label, name in names.items() if name is None)
    if unknown:
        raise ManifestError(
            f"truth file {path.name!r} uses label {unknown[0]!r} that is not a class of the dataset "
            f"{list(table.class_names)}"
        )
    return np.array([index[names[lookup[k]]] for k in keys], dtype=np.int64)


def truth_metrics(
    flags: np.ndarray,
    given: np.ndarray,
    true: np.ndarray,
    suggested: np.ndarray,
    estimated_noise_rate: float,
    estimated_t: np.ndarray,
    model_noise_rate: float | None = None,
) -> dict:
    """Compare an audit with the truth: detection P/R/F1, noise rate (the audit's estimate and,
    when given, the model's own), T error (mean and largest cell), relabel accuracy."""
    num_classes = estimated_t.shape[0]
    is_noisy = np.asarray(true) != np.asarray(given)
    true_t = transition_matrix(true, given, num_classes)
    noisy_flagged = flags & is_noisy
    metrics = detection_metrics(flags, is_noisy)
    metrics.update(
        {
            "true_noise_rate": float(is_noisy.mean()),
            "estimated_noise_rate": float(estimated_noise_rate),
            "noise_rate_error": float(abs(estimated_noise_rate - is_noisy.mean())),
            "model_estimated_noise_rate": None if model_noise_rate is None else float(model_noise_rate),
            "model_noise_rate_error": None
            if model_noise_rate is None
            else float(abs(model_noise_rate - is_noisy.mean())),
            "transition_matrix_mae": float(np.abs(estimated_t - true_t).mean()),
            "max_transition_matrix_error": float(np.abs(estimated_t - true_t).max()),
            "true_transition_matrix": true_t.tolist(),
            "relabel_accuracy_on_noisy_flagged": (
                float((suggested[noisy_flagged] == true[noisy_flagged]).mean())
                if noisy_flagged.any()
                else None
            ),
            "num_truly_noisy": int(is_noisy.sum()),
        }
    )
    return metrics


def audit_truth_metrics(audit: Audit, given: np.ndarray, true: np.ndarray) -> dict:
    """:func:`truth_metrics` of an audit: its flags, suggested labels, noise rates and ``T``
    against the true labels ``true`` ``(N,)`` of the samples given ``given`` ``(N,)``, with the
    calibration and ranking of its probabilities (:func:`probability_metrics`)."""
    metrics = truth_metrics(
        audit.report["suspected_noisy"].to_numpy(),
        given,
        true,
        audit.cleaned_labels,
        audit.noise_rate,
        audit.transition_matrix,
        model_noise_rate=audit.model_noise_rate,
    )
    metrics.update(probability_metrics(audit, given, true))
    return metrics


def probability_metrics(audit: Audit, given: np.ndarray, true: np.ndarray) -> dict:
    """How far an audit's probabilities are from the truth.

    - ``average_precision``: of ``p_label_wrong`` as a ranking of the wrong labels;
    - ``ece_p_label_wrong``: expected calibration error (10 equal-width bins) of ``p_label_wrong``
      against "the given label is wrong", over all samples;
    - ``ece_suggested_confidence``: of ``suggested_confidence`` against "the suggestion is the true
      class", over the samples listed as suspect or ambiguous;
    - ``f1_with_ambiguous``: flag F1 counting ambiguous samples as flagged;
    - ``max_class_noise_rate_error``: the largest error of a class's estimated noise rate;
    - ``reliability``: the reliability diagram's bins of each of the two probabilities.
    """
    report = audit.report
    given, true = np.asarray(given), np.asarray(true)
    is_noisy = true != given
    p_wrong = report["p_label_wrong"].to_numpy(dtype=np.float64)
    listed = report["suspected_noisy"].to_numpy(dtype=bool) | report["is_ambiguous"].to_numpy(dtype=bool)
    right_suggestion = suggestions(audit.posterior, given, listed) == true
    confidence = report["suggested_confidence"].to_numpy(dtype=np.float64)
    k = audit.posterior.shape[1]
    rate_error = np.abs(audit.per_class_noise_rates - per_class_noise_rates(is_noisy, given, k))
    return {
        "average_precision": ranking_metrics(p_wrong, is_noisy)["auprc"],
        "ece_p_label_wrong": expected_calibration_error(p_wrong, is_noisy),
        "ece_suggested_confidence": _none_if_nan(
            expected_calibration_error(confidence[listed], right_suggestion[listed])
        ),
        "f1_with_ambiguous": detection_metrics(listed, is_noisy)["f1"],
        "max_class_noise_rate_error": _none_if_nan(float(np.nanmax(rate_error))) if k else None,
        "reliability": {
            "p_label_wrong": reliability_bins(p_wrong, is_noisy),
            "suggested_confidence": reliability_bins(confidence[listed], right_suggestion[listed]),
        },
    }


def _none_if_nan(value: float):
    return None if value is None or np.isnan(value) else float(value)


def classification_metrics(predicted: np.ndarray, true: np.ndarray, class_names) -> dict:
    """Accuracy, per-class accuracy (recall) and confusion matrix of ``predicted`` vs ``true`` indexes.

    ``confusion_matrix[i][j]`` counts samples of true class ``i`` predicted as ``j``. Classes
    without samples have accuracy ``None``.
    """
    predicted, true = np.asarray(predicted), np.asarray(true)
    k = len(class_names)
    confusion = np.zeros((k, k), dtype=np.int64)
    np.add.at(confusion, (true, predicted), 1)
    support = confusion.sum(axis=1)
    per_class = {
        name: {
            "samples": int(support[i]),
            "correct": int(confusion[i, i]),
            "accuracy": float(confusion[i, i] / support[i]) if support[i] else None,
        }
        for i, name in enumerate(class_names)
    }
    return {
        "num_samples": int(len(true)),
        "accuracy": float((predicted == true).mean()) if len(true) else None,
        "per_class": per_class,
        "class_names": list(class_names),
        "confusion_matrix": confusion.tolist(),
    }


def ranking_metrics(scores: np.ndarray, is_noisy: np.ndarray) -> dict:
    """How well ``scores`` (higher = more likely a wrong label) rank the truly noisy samples first.

    ``auroc``: probability that a random noisy sample scores above a random clean one (ties
    count half; Mann-Whitney U). ``auprc``: average precision, ``sum_t (R_t - R_{t-1}) P_t`` over
    the distinct score thresholds from high to low (the step form, no interpolation). Both are
    ``None`` when every sample is noisy or every sample is clean.
    """
    scores = np.asarray(scores, dtype=np.float64)
    is_noisy = np.asarray(is_noisy, dtype=bool)
    positives, negatives = int(is_noisy.sum()), int((~is_noisy).sum())
    if positives == 0 or negatives == 0:
        return {"auroc": None, "auprc": None}
    # Average ranks (1-based) with ties sharing the mean of their positions.
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    ranks = np.empty(len(scores))
    start = 0
    while start < len(scores):
        end = start
        while end + 1 < len(scores) and sorted_scores[end + 1] == sorted_scores[start]:
            end += 1
        ranks[order[start : end + 1]] = (start + end) / 2 + 1
        start = end + 1
    u = ranks[is_noisy].sum() - positives * (positives + 1) / 2
    auroc = u / (positives * negatives)
    # Average precision over distinct thresholds, highest score first.
    desc = np.argsort(-scores, kind="mergesort")
    s, y = scores[desc], is_noisy[desc]
    last_of_tie = np.r_[np.flatnonzero(np.diff(s) != 0), len(s) - 1]
    true_pos = np.cumsum(y)[last_of_tie]
    flagged = last_of_tie + 1
    precision = true_pos / flagged
    recall = true_pos / positives
    auprc = float(np.sum(np.diff(np.r_[0.0, recall]) * precision))
    return {"auroc": float(auroc), "auprc": auprc}
