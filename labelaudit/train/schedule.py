"""How long and how fast a method trains: the learning rate of each epoch of a phase, and the
``--budget`` that scales every phase's epochs (no torch import: the CLI checks a budget without it)."""

from __future__ import annotations

import math

from ..errors import ConfigError

#: The largest training budget: a thousand times the default schedule (``--budget 1e300`` would
#: be accepted as finite and train for ever).
MAX_BUDGET = 1000


def learning_rate(base: float, epoch: int, epochs: int, schedule: str) -> float:
    """Learning rate of ``epoch`` (0-based) in a phase of ``epochs``.

    ``constant``: ``base`` throughout. ``cosine``: half a cosine from ``base`` down to ``base / 20``
    at the last epoch. ``step``: ``base``, divided by 10 at 40% and again at 80% of the phase (the
    shape of the PMNAR paper's 120/240-of-300 schedule).
    """
    if schedule == "constant":
        return base
    if schedule == "step":
        return base * (0.1 ** ((epoch >= 0.4 * epochs) + (epoch >= 0.8 * epochs)))
    if schedule == "cosine":
        progress = epoch / max(epochs - 1, 1)
        floor = base / 20
        return floor + (base - floor) * 0.5 * (1 + math.cos(math.pi * progress))
    raise ConfigError(f"schedule must be 'constant', 'cosine' or 'step'; got {schedule!r}")


def check_budget(budget: float, option: str = "--budget") -> float:
    """``budget`` (a multiple of the default schedule) when it is a number in ``(0, MAX_BUDGET]``,
    else ConfigError."""
    if not (isinstance(budget, (int, float)) and math.isfinite(budget) and budget > 0):
        raise ConfigError(
            f"{option} must be a finite number > 0 (1 = the default schedule, 0.5 = half of it); "
            f"got {budget!r}"
        )
    if budget > MAX_BUDGET:
        raise ConfigError(
            f"{option} must be in the range (0, {MAX_BUDGET}] (1 = the default schedule, {MAX_BUDGET} = "
            f"{MAX_BUDGET} times as many epochs); got {budget!r}"
        )
    return budget


def scaled_epochs(epochs: tuple[int, ...], scale: float) -> tuple[int, ...]:
    """Multiply a phase schedule by ``scale``, keeping at least one epoch in each non-empty phase."""
    check_budget(scale)
    return tuple(max(1, math.ceil(e * scale - 1e-9)) if e > 0 else 0 for e in epochs)
