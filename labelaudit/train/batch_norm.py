"""Batch-norm running statistics: forwards that leave them untouched, and recomputing them exactly
from the data after training."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterable

import torch
from torch import nn


def batch_norms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """Every batch-norm layer of ``model``."""
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@contextmanager
def batch_norm_momentum(model: nn.Module, momentum: float | None):
    """Run the block with every batch-norm layer's ``momentum`` set to ``momentum``, then restore
    each layer's own (0.0 leaves the running statistics untouched, None averages cumulatively)."""
    norms = batch_norms(model)
    saved = [m.momentum for m in norms]
    for m in norms:
        m.momentum = momentum
    try:
        yield
    finally:
        for m, value in zip(norms, saved):
            m.momentum = value


@torch.no_grad()
def recompute_running_statistics(
    model: nn.Module, inputs: Iterable, forward: Callable[[object], object]
) -> None:
    """Replace every batch-norm layer's running statistics of ``model`` by their exact average over
    the batches of ``inputs``: ``forward(batch)`` runs ``model`` in train mode on each (the caller
    prepares the batch: device, normalisation, precision). Nothing when ``model`` has no batch norm."""
    norms = batch_norms(model)
    if not norms:
        return
    for m in norms:
        m.reset_running_stats()
    model.train()
    with batch_norm_momentum(model, None):  # momentum None: a cumulative average over the batches
        for batch in inputs:
            forward(batch)
