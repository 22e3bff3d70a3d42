"""Head mode on human-like noise: how far candidate detectors get past cv-gce (docs/calibration.md).

Embeds SOURCE with efficientnet_lite0 once (or reads the embedding cache), then scores, against
the truth, each candidate's calibrated ``p_label_wrong``: flag F1 at ``p_label_wrong > 0.5``, the
best F1 any threshold on the same ranking reaches (an oracle: it reads the truth), average
precision, the estimated noise rate, and the calibration errors of ``p_label_wrong`` and of the
suggestion (10 equal-width bins). The candidates:

- ``cv-gce heads``: the head-mode method's out-of-fold GCE linear heads with auto calibration (the
  scan itself then adds forward-corrected heads where the noise looks class-conditional, which
  this script leaves out; on human-like noise the two are the same);
- ``cv-gce, expected-F1 threshold``: the same probabilities flagged at the threshold that
  maximises the F1 expected under them (truth-free; Lipton et al. 2014);
- ``knn-10`` and ``mean(knn-10, cv-gce)``: a 10-nearest-neighbour vote (cosine) and its average
  with the heads;
- ``mlp``: out-of-fold two-layer heads (256 hidden units, GCE, 20 epochs of AdamW);
- ``round 2, <how>``: heads refitted out of fold on labels cleaned by the first round's
  posteriors (soft targets; relabel the flagged; drop the flagged; weight by ``1 - p_label_wrong``),
  then scored again;
- ``ceiling``: heads trained on the TRUE labels (flag where their prediction differs from the
  given label): what these features allow, not a detector.

Usage: python scripts/head_mode_candidates.py NOISY/manifest.parquet NOISY/truth.csv
"""

from __future__ import annotations

import sys
import time

import numpy as np
import torch

from labelaudit.audit.calibration import calibrate, expected_calibration_error
from labelaudit.audit.metrics import load_truth, ranking_metrics
from labelaudit.data.images import load_images
from labelaudit.data.sources import load_source
from labelaudit.train.config import TrainConfig
from labelaudit.train.inputs import backbone_embeddings
from labelaudit.train.methods.cross_fit import CrossFitConfig, cross_fitted_probs, fold_plan


def main(source: str, truth: str) -> None:
    torch.manual_seed(0)
    store = load_images(load_source(source))
    given = np.array(store.table.samples["given_label"].to_numpy(), dtype=np.int64)
    true = load_truth(truth, store.table)
    features = backbone_embeddings(
        store, TrainConfig(backbone="efficientnet_lite0", weights="DEFAULT")
    ).features
    x = np.asarray(features, dtype=np.float32)
    x = torch.from_numpy((x - x.mean(0)) / (x.std(0) + 1e-6))
    y = torch.from_numpy(given).long()
    k = store.table.num_classes
    folds, _ = fold_plan(given, 5, 0)
    print(f"{len(given)} samples, true noise rate {(true != given).mean():.3f}\n")
    print(
        "| candidate | F1 (p > 0.5) | best F1 (oracle) | AP | noise rate | ECE p_label_wrong "
        "| ECE suggestion | s |"
    )
    print("|---|---|---|---|---|---|---|---|")

    started = time.perf_counter()
    first = cross_fitted_probs(x, y, k, CrossFitConfig(), "gce", 0)
    cal = calibrate(first.probs, given)
    row("cv-gce heads", cal.posterior, given, true, started)
    row(
        "cv-gce, expected-F1 threshold",
        cal.posterior,
        given,
        true,
        started,
        expected_f1_threshold(cal.p_label_wrong),
    )

    started = time.perf_counter()
    knn = neighbour_votes(x, given, k, 10)
    row("knn-10", calibrate(knn, given, kind="plain").posterior, given, true, started)
    row("mean(knn-10, cv-gce)", calibrate(0.5 * (knn + first.probs), given).posterior, given, true, started)

    started = time.perf_counter()
    mlp = out_of_fold(x, torch.eye(k)[y], folds, mlp_fit, first.weight_decay)
    row("mlp (2 layers, GCE)", calibrate(mlp, given).posterior, given, true, started)

    onehot = torch.eye(k)[y]
    p_wrong = torch.from_numpy(cal.p_label_wrong).float()
    rounds = {
        "soft targets": (torch.from_numpy(cal.posterior).float(), None),
        "relabel the flagged": (torch.eye(k)[torch.from_numpy(cal.posterior.argmax(1))], None),
        "drop the flagged": (onehot, (p_wrong <= 0.5).float()),
        "weight 1 - p_label_wrong": (onehot, 1 - p_wrong),
    }
    for how, (targets, weights) in rounds.items():
        started = time.perf_counter()
        second = out_of_fold(x, targets, folds, linear_fit, first.weight_decay, weights)
        row(f"round 2, {how}", calibrate(second, given).posterior, given, true, started)

    started = time.perf_counter()
    ceiling = out_of_fold(
        x, torch.eye(k)[torch.from_numpy(true).long()], folds, linear_fit, first.weight_decay
    )
    flags = ceiling.argmax(1) != given
    f1 = f1_score(flags, true != given)
    print(f"| ceiling: heads on the TRUE labels | {f1:.3f} | | | | | | {time.perf_counter() - started:.0f} |")


def row(name, posterior, given, true, started, threshold=0.5) -> None:
    n = len(given)
    wrong = true != given
    p_wrong = 1 - posterior[np.arange(n), given]
    flags = p_wrong > threshold
    others = posterior.copy()
    others[np.arange(n), given] = -1
    suggestion, suggestion_p = others.argmax(1), others.max(1)
    order = np.argsort(-p_wrong, kind="stable")
    hits = np.cumsum(wrong[order])
    best = float((2 * hits / (np.arange(1, n + 1) + wrong.sum())).max())
    ece_s = expected_calibration_error(suggestion_p[flags], (suggestion == true)[flags])
    print(
        f"| {name}{'' if threshold == 0.5 else f' ({threshold:.2f})'} | {f1_score(flags, wrong):.3f} "
        f"| {best:.3f} | {ranking_metrics(p_wrong, wrong)['auprc']:.3f} | {p_wrong.mean():.3f} | "
        f"{expected_calibration_error(p_wrong, wrong):.3f} | {ece_s:.3f} "
        f"| {time.perf_counter() - started:.0f} |",
        flush=True,
    )


def f1_score(flags: np.ndarray, wrong: np.ndarray) -> float:
    hit = (flags & wrong).sum()
    return float(2 * hit / max(flags.sum() + wrong.sum(), 1))


def expected_f1_threshold(p_wrong: np.ndarray) -> float:
    """The threshold on calibrated ``p_wrong`` maximising the F1 expected under it."""
    ordered = np.sort(p_wrong)[::-1]
    hits = np.cumsum(ordered)
    expected = 2 * hits / (np.arange(1, len(ordered) + 1) + p_wrong.sum())
    return float(ordered[int(np.argmax(expected))] - 1e-12)


def neighbour_votes(x: torch.Tensor, given: np.ndarray, k: int, neighbours: int) -> np.ndarray:
    """``(N, K)`` smoothed shares of each class among a sample's nearest neighbours (cosine),
    the sample itself excluded."""
    unit = torch.nn.functional.normalize(x, dim=1)
    labels = torch.from_numpy(given)
    votes = np.zeros((len(given), k))
    for rows in torch.arange(len(given)).split(2048):
        similarity = unit[rows] @ unit.T
        similarity[torch.arange(len(rows)), rows] = -2
        nearest = labels[similarity.topk(neighbours, dim=1).indices]
        counts = torch.nn.functional.one_hot(nearest, k).sum(1).double()
        votes[rows] = ((counts + 0.1) / (neighbours + 0.1 * k)).numpy()
    return votes


def out_of_fold(x, targets, folds, fitter, weight_decay, weights=None) -> np.ndarray:
    """``(N, K)`` probabilities of each fold from a model fitted on the others' ``targets``."""
    probs = np.zeros(tuple(targets.shape))
    for f in range(int(folds.max()) + 1):
        train, held = np.flatnonzero(folds != f), np.flatnonzero(folds == f)
        predict = fitter(
            x[train], targets[train], weight_decay, None if weights is None else weights[train], f
        )
        probs[held] = torch.softmax(predict(x[held]), 1).double().numpy()
    return probs


def linear_fit(x, targets, weight_decay, weights, fold):
    """Multinomial logistic regression on soft ``targets`` by L-BFGS (50 iterations)."""
    w = torch.zeros(x.shape[1], targets.shape[1], requires_grad=True)
    b = torch.zeros(targets.shape[1], requires_grad=True)
    weights = torch.ones(len(x)) if weights is None else weights
    optimizer = torch.optim.LBFGS([w, b], lr=1, max_iter=50, history_size=20, line_search_fn="strong_wolfe")

    def objective():
        optimizer.zero_grad()
        loss = -(targets * torch.log_softmax(x @ w + b, 1)).sum(1)
        value = (loss * weights).sum() / weights.sum() + 0.5 * weight_decay * (w * w).sum()
        value.backward()
        return value

    optimizer.step(objective)
    return lambda rows: rows @ w.detach() + b.detach()


def mlp_fit(x, targets, weight_decay, weights, fold, hidden=256, epochs=20, q=0.7):
    """A two-layer head trained with GCE on the hard ``targets`` by AdamW (batches of 256)."""
    torch.manual_seed(fold)
    net = torch.nn.Sequential(
        torch.nn.Linear(x.shape[1], hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, targets.shape[1])
    )
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=1e-2)
    labels = targets.argmax(1)
    order = torch.Generator().manual_seed(fold)
    for _ in range(epochs):
        for batch in torch.randperm(len(x), generator=order).split(256):
            p = torch.softmax(net(x[batch]), 1).gather(1, labels[batch, None]).squeeze(1).clamp_min(1e-7)
            optimizer.zero_grad()
            ((1 - p**q) / q).mean().backward()
            optimizer.step()
    net.eval()
    return lambda rows: net(rows).detach()


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    main(sys.argv[1], sys.argv[2])
