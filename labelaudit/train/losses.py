"""Loss correction with a noise transition matrix (Patrini et al. 2017, seed 003).

``T[i, j] = P(given = j | true = i)``. Both losses take logits of a network that should learn the
*clean* class posterior from noisy labels.
"""

from __future__ import annotations

import numpy as np
import torch

#: Floor of a probability before its log (every loss and method uses this one).
EPS = 1e-7


def forward_corrected_loss(
    logits: torch.Tensor, labels: torch.Tensor, transition: torch.Tensor
) -> torch.Tensor:
    """``-log((T^T p)_y)`` per sample, ``(B,)``: the prediction pushed through the noise, then CE.

    ``p`` is clipped to ``[1e-7, 1]`` before the product. With ``T = I`` this is cross-entropy.
    """
    p = torch.softmax(logits, dim=1).clamp(EPS, 1.0)
    noisy = p @ transition.to(p.dtype)  # (B, K): (T^T p)_j = sum_i T_ij p_i
    return -torch.log(noisy.gather(1, labels[:, None]).squeeze(1).clamp_min(EPS))


def backward_corrected_loss(
    logits: torch.Tensor, labels: torch.Tensor, transition_inverse: torch.Tensor
) -> torch.Tensor:
    """``(T^{-1} l)_y`` per sample, ``(B,)``, with ``l_k = -log p_k`` and ``p`` clipped to
    ``[1e-7, 1 - 1e-7]`` (``T^{-1}`` has negative entries: unclipped the loss is unbounded below).

    Pass ``transition_inverse`` from :func:`invert_transition`.
    """
    p = torch.softmax(logits, dim=1).clamp(EPS, 1 - EPS)
    losses = -torch.log(p)  # (B, K)
    corrected = losses @ transition_inverse.to(p.dtype).T  # (B, K): (T^{-1} l)_y for every y
    return corrected.gather(1, labels[:, None]).squeeze(1)


def invert_transition(transition: np.ndarray, *, max_condition: float = 1e4) -> np.ndarray:
    """``T^{-1}``, mixing ``T`` with the identity first while it is badly conditioned.

    ``T' = (1 - a) T + a I`` for the smallest ``a`` in ``0, 0.05, 0.1, ...`` whose condition
    number is at most ``max_condition``.
    """
    transition = np.asarray(transition, dtype=np.float64)
    identity = np.eye(len(transition))
    for mix in np.arange(0.0, 1.0001, 0.05):
        candidate = (1 - mix) * transition + mix * identity
        if np.linalg.cond(candidate) <= max_condition:
            return np.linalg.inv(candidate)
    return identity


def masked_mean(per_sample: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``sum(w * loss) / max(sum(w), eps)`` and the number of samples with ``w > 0``.

    Never NaN, also when every sample of the batch is masked out (``ignore_index`` would be).
    """
    total = weights.sum()
    return (per_sample * weights).sum() / total.clamp_min(1e-12), (weights > 0).sum()
